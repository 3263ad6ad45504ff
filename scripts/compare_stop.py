"""The recipe that stops the stages that do not pay (train.stop_when_worse, issue 31), measured on real
photos: the full recipe with and without the stop, and the quick recipe, each trained on fold 0 of the
same folds and scored by CV and, where the data folder holds answers.csv, on that answer key.

    nice .venv/bin/python scripts/compare_stop.py --data /work/shared/data/cats-vs-dogs-dev \
        --competition cats-vs-dogs --limit 600 --test-limit 200 --image-size 128
    nice .venv/bin/python scripts/compare_stop.py --data /work/shared/data/dog-breed-identification-sample \
        --competition dog-breeds --breeds 40 --test-limit 100 --image-size 128
    # today's code for the baseline arms: a copy of another commit's tree (git archive) given as --tree
    nice .venv/bin/python scripts/compare_stop.py ... --tree /tmp/base --arms full,quick --label today

Arms (--arms): full (every stage, train.stop_when_worse off), stop (the stop on, the tree's own patience),
default (the tree's defaults, no setting), quick (train.recipe = "quick"). Each runs `kit train --fold 0`
then `kit predict` in its own project folder (KIT_PROJECT_ROOT) on a copy of the photos (the data folder
is never written): --limit N keeps the first N/2 photos of each class (cats and dogs), --breeds B the B
breeds with the most photos (their columns only in sample_submission.csv), --test-limit M the first M test
photos. --holdout K (a set whose test photos have no answer key: dog breeds) keeps the last K labelled
photos of each breed out of training and makes them the test set, scored by multi-class log loss as the
answer key. Wall and CPU time count training and prediction; the table prints the machine, the date and
the machine's load.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click
import numpy as np
import pandas as pd
from measuring import child_cpu_seconds

REPO = Path(__file__).resolve().parent.parent
MARKER = ".download-complete"  # kit.files.DOWNLOAD_MARKER
ARM_SETTINGS = {
    "full": ["train.stop_when_worse=false"],
    "stop": ["train.stop_when_worse=true"],
    "default": [],
    "quick": ["train.recipe=quick"],
}
TODAY_SETTINGS = {"full": [], "quick": ["train.recipe=quick"]}  # code without train.stop_when_worse


def copy_photos(
    source: Path,
    target: Path,
    limit: int | None,
    breeds: int | None,
    test_limit: int | None,
    holdout: int | None = None,
) -> pd.DataFrame | None:
    """The competition's files, a subset when asked, copied into data/raw/<name> (never linked). With
    `holdout` (a labels.csv set), the last `holdout` photos of each breed are the test set instead of the
    test folder's: returned as the answer key (id, breed); None otherwise."""
    (target / "train").mkdir(parents=True)
    (target / "test").mkdir()
    sample = pd.read_csv(source / "sample_submission.csv", dtype={"id": str})
    if (source / "labels.csv").exists():  # id,breed
        labels = pd.read_csv(source / "labels.csv", dtype={"id": str})
        if breeds:
            kept = labels.iloc[:, 1].value_counts().index[:breeds]
            labels = labels[labels.iloc[:, 1].isin(kept)]
            sample = sample[["id", *sorted(kept)]]
        held = None
        if holdout:
            held = labels.groupby(labels.columns[1], sort=False).tail(holdout)
            labels = labels.drop(held.index)
            columns = [column for column in sample.columns if column != "id"]
            sample = pd.DataFrame({"id": held["id"].to_numpy()})
            for column in columns:
                sample[column] = 1 / len(columns)
            for identifier in held["id"]:
                shutil.copy(source / "train" / f"{identifier}.jpg", target / "test" / f"{identifier}.jpg")
            sample.to_csv(target / "sample_submission.csv", index=False)
        labels.to_csv(target / "labels.csv", index=False)
        for identifier in labels["id"]:
            shutil.copy(source / "train" / f"{identifier}.jpg", target / "train" / f"{identifier}.jpg")
        if held is not None:
            (target / MARKER).write_text("copied by scripts/compare_stop.py\n")
            return held.rename(columns={held.columns[1]: "breed"}).reset_index(drop=True)
    else:  # labels in the file names: cat.N.jpg, dog.N.jpg
        by_class: dict[str, list[Path]] = {}
        for path in sorted((source / "train").iterdir(), key=lambda p: (p.name.split(".")[0], p.name)):
            by_class.setdefault(path.name.split(".")[0], []).append(path)
        for paths in by_class.values():
            for path in paths[: limit // len(by_class)] if limit else paths:
                shutil.copy(path, target / "train" / path.name)
    if test_limit:
        sample = sample.iloc[:test_limit]
    for identifier in sample["id"]:
        shutil.copy(source / "test" / f"{identifier}.jpg", target / "test" / f"{identifier}.jpg")
    sample.to_csv(target / "sample_submission.csv", index=False)
    (target / MARKER).write_text("copied by scripts/compare_stop.py\n")
    return None


def key_multiclass_log_loss(path: Path, held: pd.DataFrame, clip: float) -> float:
    """The held-out labelled photos (id, breed) scored as Kaggle scores dog breeds: each row's
    probabilities clipped and renormalised, the mean negative log of the true breed's."""
    frame = pd.read_csv(path, dtype={"id": str}).set_index("id").loc[held["id"]]
    probabilities = np.clip(frame.to_numpy(dtype=float), clip, 1 - clip)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    columns = list(frame.columns)
    truth = [columns.index(breed) for breed in held["breed"]]
    return float(-np.mean(np.log(probabilities[np.arange(len(truth)), truth])))


def key_log_loss(path: Path, answers: pd.DataFrame, clip: float) -> float:
    """The binary answer key (id,label with 1 for the positive class) scored as Kaggle would."""
    frame = pd.read_csv(path, dtype={"id": str}).merge(answers, on="id", suffixes=("", "_true"))
    probability = np.clip(frame["label"].to_numpy(dtype=float), clip, 1 - clip)
    truth = frame["label_true"].to_numpy(dtype=int)
    return float(-np.mean(truth * np.log(probability) + (1 - truth) * np.log(1 - probability)))


def key_score(path: Path, answers: pd.DataFrame | None, held: pd.DataFrame | None, clip: float):
    """The submission's log loss on the answer key (answers.csv) or the held-out photos; None without."""
    if held is not None:
        return key_multiclass_log_loss(path, held, clip)
    return None if answers is None else key_log_loss(path, answers, clip)


@click.command()
@click.option("--data", "data_dir", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--competition", required=True)
@click.option("--arms", default="full,stop,quick", show_default=True)
@click.option("--tree", type=click.Path(exists=True, path_type=Path), default=REPO, help="Code to run.")
@click.option("--label", default="", help="Prefix of the arms' names in the table (e.g. today).")
@click.option("--limit", type=int, default=None, help="Training photos kept (half of each class).")
@click.option("--breeds", type=int, default=None, help="Keep the breeds with the most photos.")
@click.option("--test-limit", type=int, default=None)
@click.option("--holdout", type=int, default=None, help="Labelled photos per breed kept out as the test set.")
@click.option("--image-size", type=int, default=None, help="train.image_size for every arm.")
@click.option("--folds-from", type=click.Path(exists=True, path_type=Path), default=None)
@click.option("--work", type=click.Path(path_type=Path), default=None)
@click.option("--set", "settings", multiple=True, help="KEY=VALUE for every arm.")
def main(
    data_dir,
    competition,
    arms,
    tree,
    label,
    limit,
    breeds,
    test_limit,
    holdout,
    image_size,
    folds_from,
    work,
    settings,
) -> None:
    import torch  # the machine's description only

    # a tree whose code has no train.stop_when_worse: its full arm needs no key (an unknown key is an error)
    without_stop = "stop_when_worse" not in (tree / "kit" / "config.py").read_text()
    table = {**ARM_SETTINGS, **TODAY_SETTINGS} if without_stop else ARM_SETTINGS
    work = work or Path(f"/tmp/compare-stop-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    work.mkdir(parents=True, exist_ok=True)
    answers = (
        pd.read_csv(data_dir / "answers.csv", dtype={"id": str})
        if (data_dir / "answers.csv").exists()
        else None
    )
    common = [f"train.image_size={image_size}"] if image_size else []
    folds, results = folds_from, {}
    for arm in arms.split(","):
        name = f"{label}-{arm}" if label else arm
        root = work / name
        shutil.copytree(
            tree / "competitions", root / "competitions", ignore=shutil.ignore_patterns("__pycache__")
        )
        held = copy_photos(data_dir, root / "data" / "raw" / competition, limit, breeds, test_limit, holdout)
        if folds is not None:  # every arm on the same folds
            (root / "data" / "interim" / competition).mkdir(parents=True)
            shutil.copy(folds, root / "data" / "interim" / competition / "folds.csv")
        environment = {**os.environ, "PYTHONPATH": str(tree), "KIT_PROJECT_ROOT": str(root)}
        overrides = [item for value in [*common, *table[arm], *settings] for item in ("--set", value)]
        load_before = os.getloadavg()[0]
        started, cpu_started = time.time(), child_cpu_seconds()
        with (work / f"{name}.log").open("w") as output:
            for command in (["train", competition, "--fold", "0", *overrides], ["predict", competition]):
                subprocess.run(
                    [sys.executable, "-m", "kit", *command], cwd=tree, env=environment, check=True,
                    stdout=output, stderr=subprocess.STDOUT,
                )  # fmt: skip
        seconds, cpu_seconds = time.time() - started, child_cpu_seconds() - cpu_started
        folds = folds or root / "data" / "interim" / competition / "folds.csv"
        (run_dir,) = [p for p in (root / "runs" / competition).iterdir() if (p / "metrics.json").exists()]
        summary = json.loads((run_dir / "metrics.json").read_text())
        record = json.loads((run_dir / "submission.json").read_text())
        config = json.loads((run_dir / "config.json").read_text())
        epochs = sum(len(fold["history"]) for fold in summary["folds"].values())
        results[name] = {
            "seconds": round(seconds, 1),
            "cpu_seconds": round(cpu_seconds, 1),
            "load": round((load_before + os.getloadavg()[0]) / 2, 2),
            "cv": summary["cv"],
            "key": key_score(
                root / "submissions" / record["file"], answers, held, config["submission"]["clip_epsilon"]
            ),
            "epochs": epochs,
            "weights": record["weights"],
            "stages": summary.get("stages"),
            "run": run_dir.name,
        }
        click.echo(f"{name}: {results[name]}", err=True)
    machine = f"CPU {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    click.echo(f"{stamp}; {machine}; {data_dir.name}: limit {limit}, breeds {breeds}, test {test_limit}, "
               f"image size {image_size or 'as shipped'}, fold 0")  # fmt: skip
    click.echo(f"{'arm':<14}{'minutes':>9}{'CPU min':>9}{'load':>6}{'epochs':>8}{'CV':>9}{'key':>9}  weights")
    for name, result in results.items():
        key = "-" if result["key"] is None else f"{result['key']:.4f}"
        click.echo(
            f"{name:<14}{result['seconds'] / 60:>9.1f}{result['cpu_seconds'] / 60:>9.1f}"
            f"{result['load']:>6.1f}"
            f"{result['epochs']:>8}{result['cv']:>9.4f}{key:>9}  {' '.join(result['weights'])}"
        )
    (work / "results.json").write_text(
        json.dumps({"date": stamp, "machine": machine, "arms": results}, indent=1)
    )


if __name__ == "__main__":
    main()
