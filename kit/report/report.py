"""What a run did, on one page: `kit report` writes runs/<name>/<run>/report.html.

The page is self-contained (plots embedded as base64 PNG), so it can be mailed or opened from a GPU box's
copy. The rows and numbers behind its figures are pure functions in kit.report.figure_data.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from kit.baselines import BASELINES, baseline, describe
from kit.config import Config
from kit.config_sources import changed_settings
from kit.data.images import decode_or_none
from kit.data.labels import LabelTable, load_test
from kit.errors import KitError
from kit.files import atomic_path, read_json
from kit.ledger import correlation_line, cv_and_public, read_ledger
from kit.paths import interim_dir
from kit.predict import fold_average
from kit.report import plots
from kit.report.figure_data import (
    GRID_IMAGES,
    confusion_counts,
    history_positions,
    image_captions,
    image_sizes,
    lr_schedule,
    most_confident_right,
    most_confused_pairs,
    most_uncertain,
    most_wrong,
    predicted_rows,
)
from kit.run import Run, Summary
from kit.run_folder import run_config as saved_run_config


def make_plots(
    config: Config, run_config: Config, run_dir: Path, labels: LabelTable, oof: np.ndarray | None
) -> list[tuple[str, Path, str]]:
    """Every plot the run supports, written as PNGs in the run folder: [(title, path, note)]."""
    run = Run(run_dir)
    summary = run.summary()
    made = []
    for found in run.lr_find_files(".json"):  # the LR finder's record; draw it if it was not drawn
        finder = read_json(found)
        if not found.with_suffix(".png").exists():
            plots.plot_lr_find(
                finder["rates"], finder["losses"], finder["suggestion"], found.with_suffix(".png")
            )
    made += [(f"LR finder ({path.stem})", path, "") for path in run.lr_find_files(".png")]
    histories = {
        fold: history_positions(run_config, result["history"])
        for fold, result in summary.folds.items()
        if result.get("history")
    }
    if histories:
        first_history = next(result["history"] for result in summary.folds.values() if result.get("history"))
        epochs, rates, starts = lr_schedule(run_config, first_history)
        made.append(
            (
                "Loss, metric and learning rate per epoch",
                plots.plot_history(
                    histories, summary.metric, epochs, rates, starts, Run(run_dir).plot("history")
                ),
                "",
            )
        )
    if oof is not None:
        rows = predicted_rows(oof)
        confusion = confusion_counts(labels.targets[rows], oof[rows].argmax(1), len(labels.classes))
        made.append(
            (
                "Confusion matrix (out of fold)",
                plots.plot_confusion(confusion, labels.classes, Run(run_dir).plot("confusion")),
                "",
            )
        )
        image_size = run_config.predict_image_size()  # the size OOF was predicted at
        for name, select in (
            ("most-wrong", most_wrong),
            ("most-uncertain", most_uncertain),
            ("most-confident", most_confident_right),
        ):
            chosen = select(oof, labels.targets, GRID_IMAGES)
            # As the model saw it (the run's aspect cap); one unreadable or too large since training is
            # shown black, not a failed report.
            aspect = run_config.data.max_aspect
            decoded = [decode_or_none(labels.paths[row], image_size, aspect)[0] for row in chosen]
            blank = np.zeros((image_size, image_size, 3), dtype=np.uint8)
            images = [blank if image is None else image for image in decoded]
            title = {
                "most-wrong": "Most wrong (lowest probability of the true label)",
                "most-uncertain": "Most uncertain (smallest margin between the top two classes)",
                "most-confident": "Most confidently right",
            }[name]
            made.append(
                (
                    title,
                    plots.plot_image_grid(
                        images,
                        image_captions(oof, labels.targets, chosen, labels.classes),
                        title,
                        Run(run_dir).plot(name),
                    ),
                    "ids, in grid order: " + ", ".join(labels.ids[row] for row in chosen),
                )
            )
    sizes = {"train": image_sizes(labels.paths)}
    try:
        sizes["test"] = image_sizes(load_test(config).paths)
    except KitError:  # no test images (yet): the training sizes say what to pick
        pass
    made.append(("Raw image sizes", plots.plot_image_sizes(sizes, Run(run_dir).plot("image-sizes")), ""))
    return made


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, border=0, classes="table", float_format=lambda v: f"{v:.4f}")


def _embed(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def fold_table(summary: Summary) -> pd.DataFrame:
    rows = []
    # folds by number; a full-data refit's seeds (full-seed-K) by name
    order = lambda item: (0, int(item[0]), "") if item[0].isdigit() else (1, 0, item[0])  # noqa: E731
    for fold, result in sorted(summary.folds.items(), key=order):
        history = result.get("history") or [{}]
        rows.append(
            {
                "fold": fold,
                summary.metric: result["score"],
                "epochs": len(result.get("history") or []),
                "last valid loss": history[-1].get("valid_loss", np.nan),
                "seconds": int(round(sum(r.get("seconds", 0) for r in result.get("history") or []))),
                **(
                    {"pseudo-labelled test images": sum(result["pseudo_labels"].values())}
                    if result.get("pseudo_labels")
                    else {}
                ),
            }
        )
    return pd.DataFrame(rows)


def submission_rows(run_dir: Path) -> pd.DataFrame:
    """The submission file made from the run and every ledger entry (upload, score) for it."""
    record = Run(run_dir).submission_record_file
    if not record.exists():
        return pd.DataFrame()
    name = read_json(record)["file"]
    ledger = read_ledger()
    entries = ledger[ledger["file"] == name]
    if not len(entries):
        return pd.DataFrame([{"file": name, "status": "written, not submitted"}])
    return entries[["time_utc", "file", "status", "public_score", "message"]]


def fold_average_note(run_dir: Path) -> str:
    """What kit predict said of the file's fold models against the CV (kit.predict.fold_average); '' when
    the run was not predicted or has one fold."""
    record = Run(run_dir).submission_record_file
    averaged = read_json(record).get("fold_average") if record.exists() else None
    return f'<p class="note">{html.escape(fold_average.gain_line(averaged))}</p>' if averaged else ""


def honesty_note(summary: Summary) -> str:
    """The CV's cross-fitting, the in-sample figure named as such, a small fold's bootstrap interval
    (kit.predict.crossfit); '' where the CV was not cross-fitted (a full-data refit reports its fold
    run's)."""
    if summary.cross_fitted_by is None or summary.cv_in_sample is None:
        return ""
    text = (
        f"CV cross-fitted by {summary.cross_fitted_by} (each part scored with what the others chose); "
        f"in sample, fitted and scored on the same rows: {summary.cv_in_sample:.4f}"
    )
    if summary.calibration_pays is False:
        text += "; calibration not applied (it did not pay cross-fitted)"
    if summary.cv_interval is not None:
        low, high = summary.cv_interval
        text += f"; {summary.cv_rows} validation rows: 95% bootstrap interval {low:.4f}-{high:.4f}"
    return f'<p class="note">{html.escape(text)}</p>'


def leaderboard_section(config: Config, run_dir: Path) -> str:
    """Every scored submission of the competition, CV against public score, this run's marked; or ''."""
    ledger = read_ledger()
    rows = ledger[ledger["competition"] == config.name]
    points = cv_and_public(rows)
    if len(points) < 2:
        return ""
    line = correlation_line(points)
    mine = rows.loc[rows["run"] == run_dir.name, "file"]
    marked = next((index for index, file in enumerate(points["file"]) if file in set(mine)), None)
    path = plots.plot_cv_against_public(
        points["cv"].to_numpy(), points["public"].to_numpy(), config.competition.metric, line,
        Run(run_dir).plot("cv-vs-public"), marked,
    )  # fmt: skip
    return _image("CV against the leaderboard", path) + f'<p class="note">{html.escape(line)}</p>'


def duplicates_section(config: Config, shown: int = 30) -> str:
    """`kit duplicates`' findings (data/interim/<name>/duplicates.csv): train/test pairs and training pairs
    whose labels differ; '' when it has not been run."""
    path = interim_dir(config.name) / "duplicates.csv"
    if not path.exists():
        return '<h2>Near-duplicates</h2><p class="note">not searched: <code>kit duplicates</code></p>'
    found = pd.read_csv(path, dtype=str, keep_default_na=False)
    train = found[found["kind"] == "train"]
    conflicts = train[train["label"] != train["other_label"]]
    test = found[found["kind"] == "train-test"]
    text = (
        f"<h2>Near-duplicates</h2><p>{len(train)} pairs within train ({len(conflicts)} with different "
        f"labels), {len(test)} between train and test (data.duplicates = {config.data.duplicates!r})</p>"
    )
    for title, rows in (("Train/test pairs", test), ("Training pairs with different labels", conflicts)):
        if len(rows):
            text += f"<h3>{title}</h3>" + _table(rows.head(shown).drop(columns="kind"))
    return text


def _image(title: str, path: Path) -> str:
    return f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" src="{_embed(path)}">'


def tag_sections(labels: LabelTable, summary: Summary, oof: np.ndarray, run_dir: Path) -> list[str]:
    """Multi-label: per tag, its images, threshold (fitted on OOF) and F2 out of fold; a plot of both."""
    from sklearn.metrics import fbeta_score

    rows = predicted_rows(oof)
    thresholds = (summary.decisions or {}).get("thresholds", [0.5] * len(labels.classes))
    decided = labels.task.decide(oof[rows], summary.decisions)
    truth = labels.targets[rows]
    f2 = [
        float(fbeta_score(truth[:, tag], decided[:, tag], beta=2, zero_division=0.0))
        for tag in range(len(labels.classes))
    ]
    table = pd.DataFrame(
        {"tag": labels.classes, "images": truth.sum(0).astype(int), "threshold": thresholds, "F2": f2}
    )
    path = plots.plot_tag_thresholds(labels.classes, thresholds, f2, Run(run_dir).plot("tag-thresholds"))
    return ["<h2>Per tag (out of fold)</h2>" + _table(table), _image("Per-tag threshold and F2", path)]


def value_sections(labels: LabelTable, summary: Summary, oof: np.ndarray, run_dir: Path) -> list[str]:
    """Regression: predicted against true, out of fold."""
    rows = predicted_rows(oof)
    path = plots.plot_predicted_vs_true(
        labels.targets[rows], oof[rows, 0], Run(run_dir).plot("predicted-vs-true")
    )
    return [_image("Predicted against true (out of fold)", path)]


def grade_sections(labels: LabelTable, summary: Summary, oof: np.ndarray, run_dir: Path) -> list[str]:
    """Ordinal: the confusion of grades (cut by the fitted cut-points), out of fold."""
    rows = predicted_rows(oof)
    grades = labels.task.decide(oof[rows], summary.decisions)[:, 0].astype(np.int64)
    confusion = confusion_counts(labels.targets[rows], grades, len(labels.classes))
    cuts = ", ".join(f"{cut:.2f}" for cut in (summary.decisions or {}).get("cuts", []))
    path = plots.plot_confusion(confusion, labels.classes, Run(run_dir).plot("confusion"))
    return [_image("Confusion of grades (out of fold)", path) + f"<p>cut-points: {cuts or 'rounding'}</p>"]


def baseline_sentence(metric: str, labels: LabelTable) -> str:
    """The trivial baseline to read the CV against, one sentence ('' for a metric without one)."""
    if metric not in BASELINES:
        return ""
    reference = baseline(metric, labels.targets, len(labels.classes))
    return f"The best constant answer on the training labels, for comparison: {describe(reference)}."


# Sections for the kinds whose predictions are not class probabilities (kit.tasks).
TASK_SECTIONS = {"multi_label": tag_sections, "regression": value_sections, "ordinal": grade_sections}


def write_report(config: Config, labels: LabelTable, run_dir: Path, summary: Summary) -> Path:
    """runs/<name>/<run>/report.html: config, CV per fold, plots, confusions, calibration, submission."""
    run = Run(run_dir)
    saved = read_json(run.config_file)
    run_config = saved_run_config(run_dir)
    oof = np.load(run.oof) if run.oof.exists() else None
    if oof is not None and oof.shape != (len(labels.ids), labels.task.head_size(labels.classes)):
        oof = None  # the labels changed since the run: its rows no longer line up
    # Calibration, confusions and image grids read class probabilities; other kinds have their own section.
    class_oof = oof if labels.task.name == "single_label" else None
    classes, metric = labels.classes, summary.metric
    sections = [
        f"<h1>{html.escape(config.name)}: run {html.escape(run_dir.name)}</h1>",
        f"<p>CV {html.escape(metric)} <b>{summary.cv:.4f}</b>"
        + (f" (uncalibrated {summary.cv_uncalibrated:.4f})" if summary.cv_uncalibrated != summary.cv else "")
        + f" (folds {summary.folds_trained}), "
        f"{summary.seconds / 60:.1f} minutes</p>",
        f"<p>{html.escape(baseline_sentence(metric, labels))}</p>",
        honesty_note(summary),
    ]
    sections.append(
        "<h2>Submission</h2>"
        + (
            _table(submission_rows(run_dir)) + fold_average_note(run_dir)
            if run.submission_record_file.exists()
            else "<p>none yet: <code>make predict</code></p>"
        )
    )
    if summary.folds:
        sections.append("<h2>Cross-validation per fold</h2>" + _table(fold_table(summary)))
    if summary.is_ensemble:
        details = summary.ensemble
        frame = pd.DataFrame(
            [
                {"run": name, "weight": weight, **details["single_runs"][name]}
                for name, weight in zip(details["runs"], details["weights"], strict=True)
            ]
        )
        sections.append(
            f"<h2>Ensemble of {len(frame)} runs</h2>"
            + _table(frame)
            + (
                f"<p>blend OOF log loss {details['oof_log_loss']:.4f} on {details['rows']} rows</p>"
                if details.get("oof_log_loss") is not None
                else f"<p>blended on {details['rows']} rows</p>"
            )
        )
    fitted = Run(run_dir).read_calibration()  # as the step after training (or the blend) fitted it
    if fitted.temperatures:  # log loss: a temperature per fold (an ensemble: of its blend), then a clip
        temperature = ", ".join(f"{part}: {value:.3f}" for part, value in fitted.temperatures.items())
        sections.append(
            f"<h2>Calibration (fitted on OOF)</h2><p>OOF log loss before {fitted.before:.4f}, "
            f"after {fitted.after:.4f} (temperature {temperature}, clip epsilon {fitted.epsilon:.0e})</p>"
        )
    elif summary.calibration_pays is False:  # fitted, then dropped: it did not pay on other rows
        sections.append(
            "<h2>Calibration (fitted on OOF)</h2><p>not applied: fitted on other rows it did not lower the "
            f"OOF log loss (cross-fitted {summary.cv_uncalibrated_cross_fitted:.4f} without it)</p>"
        )
    if oof is not None and labels.task.name in TASK_SECTIONS:
        sections += TASK_SECTIONS[labels.task.name](labels, summary, oof, run_dir)
    for title, path, note in make_plots(config, run_config, run_dir, labels, class_oof):
        sections.append(
            f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" src="{_embed(path)}">'
            + (f'<p class="note">{html.escape(note)}</p>' if note else "")
        )
    if class_oof is not None:
        rows = predicted_rows(oof)
        confusion = confusion_counts(labels.targets[rows], oof[rows].argmax(1), len(classes))
        pairs = pd.DataFrame(
            [
                {"true": classes[t], "predicted": classes[p], "images": n}
                for t, p, n in most_confused_pairs(confusion)
            ]
        )
        sections.append(
            "<h2>Most confused pairs</h2>" + (_table(pairs) if len(pairs) else "<p>no confusions</p>")
        )
        totals = confusion.sum(1)
        per_class = pd.DataFrame(
            {
                "class": classes,
                "images": totals,
                "recall": np.divide(
                    np.diag(confusion), totals, out=np.full(len(classes), np.nan), where=totals > 0
                ),
            }
        )
        sections.append("<h2>Per class (out of fold)</h2>" + _table(per_class))
    sections.append(leaderboard_section(config, run_dir))
    sections.append(duplicates_section(config))
    changed = pd.DataFrame(changed_settings(run_config), columns=["setting", "value", "kit default"])
    sections.append(
        "<h2>Recipe options (settings that differ from the kit's defaults)</h2>"
        + _table(changed.astype(str))
        + '<p class="note">tricks such as mixup, EMA, label smoothing, layer-wise LR decay and pseudo-labels '
        "are off by default: each one used shows here</p>"
    )
    sections.append("<h2>Config</h2><pre>" + html.escape(json.dumps(saved, indent=2)) + "</pre>")
    page = (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<title>{html.escape(config.name)} {html.escape(run_dir.name)}</title>"
        f"<style>{STYLE}</style></head><body>" + "\n".join(sections) + "</body></html>\n"
    )
    target = run.report_file
    with atomic_path(target) as temporary:
        temporary.write_text(page, encoding="utf-8")
    return target


STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222} img{max-width:100%}"
    " .table{border-collapse:collapse;font-size:13px}"
    " .table td,.table th{padding:3px 10px;border-bottom:1px solid #ddd}"
    " .note{font-size:12px;color:#555} pre{background:#f6f6f6;padding:1em;font-size:12px;overflow:auto}"
)
