"""The recipe on real photos: plain fine-tuning, the recipe at an older commit, and today's recipe (full and
quick), trained in one run of this script on the same photos and the same folds, each scored by its CV
and on a local answer key.

    .venv/bin/python scripts/compare_recipe.py --data ../shared/data/cats-vs-dogs-dev
    .venv/bin/python scripts/compare_recipe.py --data ../shared/data/cats-vs-dogs-dev --arms new \
        --set stages.2.n_cycles=1 --set stages.2.cycle_len=4   # a variant of today's recipe
    .venv/bin/python scripts/compare_recipe.py --data ../shared/data/cats-vs-dogs-dev --limit 300 \
        --test-limit 100 --image-size 128          # a subset, for a shared CPU

Arms (--arms):
  plain  today's code, one stage of all layers (train.epochs epochs), no TTA, no LR finder
  old    the recipe as shipped at --old-commit (default 65f01bd), run from a git worktree of that commit
  new    today's default recipe (competitions/<name>/competition.toml as shipped)
  quick  today's quick recipe (train.recipe = "quick": the head stages, with TTA)

--tricks runs issue 16's arms instead (unless --arms is given): the quick recipe without the LR finder,
once plain and once per trick, each one key on top of it (TRICK_ARMS):
  trick-none       the quick recipe as is
  trick-mixup      mixup 0.2 + cutmix 1.0 in the augmented head stage (stage 1; stage 0 is precomputed)
  trick-smoothing  label smoothing 0.1
  trick-ema        the weights' moving average (decay 0.999) validated and predicting
  trick-pseudo     pseudo-labels (threshold 0.95, weight 0.5) joining stage 1, from fold 0's own model
Layer-wise LR decay has no arm: the quick recipe trains the head alone, one layer, so it changes nothing.

    .venv/bin/python scripts/compare_recipe.py --data ../shared/data/cats-vs-dogs-dev --tricks \
        --test-limit 400 --image-size 128       # as measured in the README (about 7 CPU minutes)

The data folder is copied (never written): --limit N keeps the first N/2 training photos of each class,
--test-limit M the first M test photos of sample_submission.csv. Each arm trains fold 0 (or --fold K, or
--fold all) in its own project folder (KIT_PROJECT_ROOT) with the same folds.csv, then predicts the test
set; the wall time counts both.
The answer key (answers.csv: id,label with 1 for the positive class) scores the submission as Kaggle
would: log loss with the upload's clip, and accuracy. Prints a table with the machine and the date, and
writes results.json in --work.
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
MARKER = ".download-complete"  # kit.files.DOWNLOAD_MARKER (the same at the old commit)

ARM_SETTINGS = {
    "plain": ["stages=[]", "train.epochs=3", "predict.tta=0", "train.lr_find=false", "predict.select=false"],
    "old": [],
    "new": [],
    "quick": ["train.recipe=quick"],
}
TRICK_BASE = ["train.recipe=quick", "train.lr_find=false"]  # the finder only prints: not worth its time here
TRICK_ARMS = {
    "trick-none": [],
    "trick-mixup": ["stages.1.mixup=0.2", "stages.1.cutmix=1.0"],
    "trick-smoothing": ["train.label_smoothing=0.1"],
    "trick-ema": ["train.ema_decay=0.999", "predict.weights='ema'"],
    "trick-pseudo": ["stages.1.pseudo_label={threshold=0.95, weight=0.5}"],
}
ARM_SETTINGS.update({arm: [*TRICK_BASE, *settings] for arm, settings in TRICK_ARMS.items()})


def copy_data(source: Path, target: Path, limit: int | None, test_limit: int | None) -> None:
    """The competition's files, a subset when asked, copied into data/raw/<name> (never linked)."""
    (target / "train").mkdir(parents=True)
    (target / "test").mkdir()
    train = sorted(
        (source / "train").iterdir(), key=lambda p: (p.name.split(".")[0], int(p.name.split(".")[1]))
    )
    if limit:
        by_class: dict[str, list[Path]] = {}
        for path in train:
            by_class.setdefault(path.name.split(".")[0], []).append(path)
        train = [path for paths in by_class.values() for path in paths[: limit // len(by_class)]]
    for path in train:
        shutil.copy(path, target / "train" / path.name)
    sample = pd.read_csv(source / "sample_submission.csv", dtype={"id": str})
    if test_limit:
        sample = sample.iloc[:test_limit]
    for identifier in sample["id"]:
        shutil.copy(source / "test" / f"{identifier}.jpg", target / "test" / f"{identifier}.jpg")
    sample.to_csv(target / "sample_submission.csv", index=False)
    (target / MARKER).write_text("copied by scripts/compare_recipe.py\n")


def score_submission(path: Path, answers: pd.DataFrame, clip: float) -> dict:
    frame = pd.read_csv(path, dtype={"id": str}).merge(answers, on="id", suffixes=("", "_true"))
    probability = np.clip(frame["label"].to_numpy(dtype=float), clip, 1 - clip)  # the upload's clip
    truth = frame["label_true"].to_numpy(dtype=int)
    log_loss = float(-np.mean(truth * np.log(probability) + (1 - truth) * np.log(1 - probability)))
    return {
        "log_loss": log_loss,
        "accuracy": float(np.mean((probability > 0.5) == truth)),
        "rows": len(frame),
    }


def run_arm(
    arm: str, tree: Path, root: Path, competition: str, overrides: list[str], log: Path, fold: str = "0"
) -> tuple[float, float, Path]:
    """Train `fold` (a number or "all") and predict with the code in `tree`, in project `root`; (wall s,
    CPU s, run folder)."""
    environment = {**os.environ, "PYTHONPATH": str(tree), "KIT_PROJECT_ROOT": str(root)}
    settings = [item for value in overrides for item in ("--set", value)]
    started, cpu_started = time.time(), child_cpu_seconds()
    with log.open("w") as output:
        for command in (["train", competition, "--fold", fold, *settings], ["predict", competition]):
            subprocess.run(
                [sys.executable, "-m", "kit", *command], cwd=tree, env=environment, check=True, stdout=output,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
    seconds, cpu_seconds = time.time() - started, child_cpu_seconds() - cpu_started
    (run_dir,) = [p for p in (root / "runs" / competition).iterdir() if (p / "metrics.json").exists()]
    return seconds, cpu_seconds, run_dir


@click.command()
@click.option(
    "--data", "data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True
)
@click.option("--competition", default="cats-vs-dogs", show_default=True)
@click.option("--arms", default=None, help="Comma-separated; default plain,old,new,quick or TRICK_ARMS")
@click.option("--tricks", is_flag=True, help="Issue 16: the quick recipe plain and once per trick.")
@click.option("--old-commit", default="65f01bd", show_default=True)
@click.option("--limit", type=int, default=None, help="Training photos kept (half of each class).")
@click.option("--test-limit", type=int, default=None, help="Test photos kept (scored by the answer key).")
@click.option("--image-size", type=int, default=None, help="train.image_size for every arm.")
@click.option("--seed", type=int, default=None, help="train.seed for every arm (folds and training).")
@click.option("--fold", default="0", show_default=True, help="Fold(s) each arm trains: a number or all.")
@click.option("--work", type=click.Path(path_type=Path), default=None, help="Scratch folder (default /tmp).")
@click.option(
    "--set", "settings", multiple=True, help="KEY=VALUE for today's arms (not old): stages.2.cycle_len=4"
)
def main(
    data_dir, competition, arms, tricks, old_commit, limit, test_limit, image_size, seed, fold, work, settings
) -> None:
    import torch  # the machine's description only

    arms = arms or ",".join(TRICK_ARMS if tricks else ["plain", "old", "new", "quick"])
    unknown = sorted(set(arms.split(",")) - set(ARM_SETTINGS))
    if unknown:
        raise click.BadParameter(f"unknown arms {unknown}; choose from {', '.join(ARM_SETTINGS)}")

    work = work or Path(f"/tmp/compare-recipe-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    work.mkdir(parents=True, exist_ok=False)
    answers = pd.read_csv(data_dir / "answers.csv", dtype={"id": str})
    common = [f"train.image_size={image_size}"] if image_size else []
    common += [f"train.seed={seed}"] if seed is not None else []
    trees = {"old": work / "old-tree"}
    if "old" in arms.split(","):
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(trees["old"]), old_commit], check=True
        )
    results, folds = {}, None
    try:
        for arm in arms.split(","):
            tree = trees.get(arm, REPO)
            root = work / arm
            shutil.copytree(
                tree / "competitions", root / "competitions", ignore=shutil.ignore_patterns("__pycache__")
            )
            copy_data(data_dir, root / "data" / "raw" / competition, limit, test_limit)
            if folds is not None:  # every arm on the first arm's folds
                (root / "data" / "interim" / competition).mkdir(parents=True)
                shutil.copy(folds, root / "data" / "interim" / competition / "folds.csv")
            click.echo(f"{arm}: training fold {fold} and predicting ({tree})", err=True)
            overrides = [*common, *ARM_SETTINGS[arm], *(settings if arm != "old" else ())]
            seconds, cpu_seconds, run_dir = run_arm(
                arm, tree, root, competition, overrides, work / f"{arm}.log", fold
            )
            folds = folds or root / "data" / "interim" / competition / "folds.csv"
            summary = json.loads((run_dir / "metrics.json").read_text())
            record = json.loads((run_dir / "submission.json").read_text())
            config = json.loads((run_dir / "config.json").read_text())
            clip = config["submission"]["clip_epsilon"]
            results[arm] = {
                "seconds": round(seconds, 1),
                "cpu_seconds": round(cpu_seconds, 1),
                "cv": summary["cv"],
                "cv_uncalibrated": summary.get("cv_uncalibrated", summary["cv"]),
                **score_submission(root / "submissions" / record["file"], answers, clip),
                "pseudo_labelled": sum(
                    sum(fold.get("pseudo_labels", {}).values()) for fold in summary["folds"].values()
                ),
                "run": run_dir.name,
            }
            click.echo(f"{arm}: {results[arm]}", err=True)
    finally:
        if trees["old"].exists():
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(trees["old"])], check=False
            )
    machine = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    shown_seed = "as shipped" if seed is None else seed
    photos = f"{limit or 'all'} training photos, {test_limit or 'all'} test photos"
    subset = f"{photos}, fold {fold}, seed {shown_seed}"
    click.echo(f"{stamp}; {machine}; {data_dir.name}: {subset}; image size {image_size or 'as shipped'}")
    if settings:
        click.echo(f"today's arms with: {' '.join(settings)}")
    base_name = next((arm for arm in ("old", "trick-none") if arm in results), None)
    base, width = results.get(base_name, {}), max(8, *(len(arm) + 1 for arm in results))
    click.echo(f"ratios (x) against: {base_name or 'no baseline arm'}")
    click.echo(
        f"{'arm':<{width}}{'minutes':>9}{'x':>6}{'CPU min':>9}{'x':>6}"
        f"{'CV':>9}{'CV uncal.':>11}{'key log loss':>14}{'x':>6}{'accuracy':>10}{'pseudo':>8}"
    )
    for arm, result in results.items():
        keys = ("seconds", "cpu_seconds", "log_loss")
        ratios = [f"{result[key] / base[key]:.2f}" if base else "-" for key in keys]
        click.echo(
            f"{arm:<{width}}{result['seconds'] / 60:>9.1f}{ratios[0]:>6}"
            f"{result['cpu_seconds'] / 60:>9.1f}{ratios[1]:>6}"
            f"{result['cv']:>9.4f}{result['cv_uncalibrated']:>11.4f}{result['log_loss']:>14.4f}{ratios[2]:>6}"
            f"{result['accuracy']:>10.3f}{result['pseudo_labelled']:>8}"
        )
    (work / "results.json").write_text(
        json.dumps(
            {
                "date": stamp,
                "machine": machine,
                "subset": subset,
                "image_size": image_size,
                "settings": list(settings),
                "arms": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
