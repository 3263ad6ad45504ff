"""A trained run packaged as a Kaggle dataset for a code competition's notebook: written here by
`kit notebook`, and, inside that notebook, unpacked into a project tree and predicted as `kit predict` does.

The dataset is flat (the official client uploads a folder's files, not its sub-folders):

    kit-package.json                what it holds: competition, slug, run, metric, CV, weights, commits
    kit-<version>-py3-none-any.whl  the kit, built from the working tree (`pip wheel --no-deps`)
    onnxruntime-*.whl               CPU notebooks (notebook.onnx): onnxruntime, installed offline likewise
    config.json, metrics.json       the run's resolved config and its summary (classes, folds, CV)
    calibration.json                log-loss runs: the temperature and clip fitted on OOF (never refitted)
    competition.toml, hooks.py      the competition's folder
    weights--fold-0--snapshot-3.pt  exactly the weight files `kit predict` uses (run_weights), renamed flat
    weights--fold-0--snapshot-3.onnx  CPU notebooks: each one's forward pass (kit.predict.onnx_runtime)
    dataset-metadata.json           the dataset's id, title and licence (read by the client, not uploaded)

Inside the notebook, nothing is fitted and nothing is downloaded: the competition's read-only input is
linked in as data/raw/<name>, the weights are linked into runs/<name>/<run>/fold-N/, and
kit.predict.inference.predict_run (the function `kit predict` calls) writes the submission.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from kit import models, paths, tasks
from kit.config import Config
from kit.data.images import photo_cache
from kit.data.labels import load_test, parse_csv
from kit.device import device_name, resolve_precision
from kit.errors import KitError
from kit.files import atomic_path, git_commit, read_json, write_json
from kit.kaggle.budget import default_accelerator
from kit.predict import onnx_runtime, submission
from kit.predict.inference import predict_run, run_weights
from kit.run import Run, Summary
from kit.run_folder import run_config
from kit.train.views import prediction_cache_side

MANIFEST = "kit-package.json"
DATASET_METADATA = "dataset-metadata.json"  # the official client's metadata file for a dataset folder
SUBMISSION_FILE = "submission.csv"  # what a code competition scores, in the notebook's working folder
# Beside it: the prediction's phases in seconds and what they covered, on Kaggle as in a rehearsal.
TIMINGS_FILE = "kit-timings.json"
FORMAT = 1  # kit-package.json's layout version
MEGABYTE = 1024 * 1024


class Package(NamedTuple):
    folder: Path
    manifest: dict
    size_bytes: int


def dataset_slug(name: str) -> str:
    """The dataset's slug, `kit-<name>`: Kaggle wants 6 to 50 characters, letters, digits and dashes."""
    slug = f"kit-{name}".replace("_", "-")[:50]
    return slug if len(slug) >= 6 else f"{slug}-run"


def weight_file_name(relative: Path) -> str:
    """fold-0/snapshot-3.pt -> weights--fold-0--snapshot-3.pt (flat, and reversible)."""
    return "weights--" + "--".join(relative.parts)


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link where the file system allows one (weights are large), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def build_wheel(destination: Path) -> Path:
    """The kit as a wheel, built from the working tree (uncommitted changes included) into destination.

    The sources are copied to a scratch folder first, so that the build leaves no build/ or egg-info in the
    checkout. Without setuptools in this environment pip falls back to an isolated build (which fetches it).
    """
    source = paths.CHECKOUT
    if not (source / "pyproject.toml").is_file():
        raise KitError(
            f"kit notebook builds the kit's wheel from its source checkout, but {source} has no "
            "pyproject.toml: install the kit from a clone (pip install -e .)"
        )
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".wheel-build-", dir=destination.parent) as scratch:
        tree = Path(scratch) / "source"
        tree.mkdir()
        shutil.copy2(source / "pyproject.toml", tree / "pyproject.toml")
        shutil.copytree(source / "kit", tree / "kit", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", *isolation]
        built = Path(scratch) / "wheel"
        result = subprocess.run(
            [*command, "--wheel-dir", str(built), str(tree)], capture_output=True, text=True, check=False
        )
        wheels = sorted(built.glob("kit-*.whl"))
        if result.returncode != 0 or len(wheels) != 1:
            said = (result.stderr or result.stdout).strip().splitlines()
            raise KitError(
                f"`pip wheel --no-deps {source}` failed ({said[-1] if said else 'no wheel'}): "
                "run it by hand to see why"
            )
        target = destination / wheels[0].name
        shutil.move(wheels[0], target)
    return target


def build(
    config: Config,
    run_dir: Path,
    summary: Summary,
    dataset_id: str,
    folder: Path,
    accelerator: str | None = None,
) -> Package:
    """Fill `folder` (emptied first) with the run's package; refuse, before copying, one above the cap.

    `config` is the competition as the command loaded it (its slug); the run's own config.json is what is
    packaged, with the calibration the step after training fitted (calibration.json, never refitted).
    `accelerator`: the Kaggle machine the notebook runs on (default: notebook.accelerator made concrete);
    for a CPU one, the weights are also exported to ONNX with onnxruntime's wheel (notebook.onnx).
    """
    target = accelerator or default_accelerator(config.notebook.accelerator, config.notebook.gpu)
    available = onnx_runtime.installed()
    onnx = onnx_runtime.use_onnx(config.notebook.onnx, target, available)
    if onnx and not available:
        raise KitError(
            f"notebook.onnx = 'on' ({config.path}) needs onnx and onnxruntime here: "
            "pip install -e '.[onnx]', or --set notebook.onnx=off"
        )
    trained = run_config(run_dir)
    weights = run_weights(trained, run_dir, summary)
    missing = [path for path in weights if not path.is_file()]
    if missing:
        raise KitError(
            f"{missing[0]} is missing: run {run_dir.name} cannot predict; pick another run with --run"
        )
    cap = config.notebook.max_package_mb
    weight_bytes = sum(path.stat().st_size for path in weights)
    if weight_bytes > cap * MEGABYTE:
        raise KitError(_too_large(config, run_dir, weight_bytes, len(weights)))
    run = Run(run_dir)
    run.read_calibration()  # a run whose calibration is missing or damaged is refused here, in one line

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    wheel = build_wheel(folder)
    names = {}
    for path in weights:
        relative = path.relative_to(run_dir)
        names[weight_file_name(relative)] = relative.as_posix()
        _link_or_copy(path, folder / weight_file_name(relative))
    runtime_wheels = []
    if onnx:
        names.update(_export_onnx(trained, run_dir, summary, weights, folder))
        runtime_wheels.append(onnx_runtime.runtime_wheel(folder).name)
    copied = [path.name for path in (run.config_file, run.summary_file, run.calibration_file)]
    for name in copied:
        shutil.copy2(run_dir / name, folder / name)
    competition_files = [
        path.name
        for path in sorted(config.directory.iterdir())
        if path.name in ("competition.toml", "hooks.py")
    ]
    for name in competition_files:
        shutil.copy2(config.directory / name, folder / name)
    provenance = Run(run_dir).provenance_file
    manifest = {
        "format": FORMAT,
        "dataset": dataset_id,
        "competition": config.name,
        "kaggle": config.competition.kaggle,
        "run": run_dir.name,
        "metric": summary.metric,
        "cv": summary.cv,
        "wheel": wheel.name,
        "wheels": runtime_wheels,  # installed beside the kit's (onnxruntime, for a CPU notebook)
        "weights": names,
        "run_files": copied,
        "competition_files": competition_files,
        "trained_commit": read_json(provenance).get("commit", "") if provenance.exists() else "",
        "wheel_commit": git_commit(),
    }
    write_json(folder / MANIFEST, manifest)
    slug = dataset_id.split("/")[1]
    write_json(
        folder / DATASET_METADATA,
        {"id": dataset_id, "title": slug, "licenses": [{"name": "CC0-1.0"}]},
    )
    size = sum(path.stat().st_size for path in folder.iterdir() if path.name != DATASET_METADATA)
    if size > cap * MEGABYTE:
        raise KitError(_too_large(config, run_dir, size, len(weights)))
    return Package(folder, manifest, size)


def _export_onnx(
    trained: Config, run_dir: Path, summary: Summary, weights: list[Path], folder: Path
) -> dict[str, str]:
    """Each weight file's forward pass as ONNX in `folder` (flat names, as the weights'), for the notebook
    to link beside its weights; returns {flat name: path in the run}."""
    task, classes = tasks.from_record(summary.task_record), summary.classes
    model = models.create_model(trained.train.model, task.head_size(classes), pretrained=False)
    meta = models.weights_meta(trained, classes)
    exported = {}
    for path in weights:
        relative = path.relative_to(run_dir).with_suffix(onnx_runtime.SUFFIX)
        onnx_runtime.export(
            model, path, meta, folder / weight_file_name(relative), trained.predict_image_size()
        )
        exported[weight_file_name(relative)] = relative.as_posix()
    return exported


def _too_large(config: Config, run_dir: Path, size: int, weight_count: int) -> str:
    return (
        f"the package of run {run_dir.name} is {size / MEGABYTE:.1f} MB ({weight_count} weight files), above "
        f"notebook.max_package_mb = {config.notebook.max_package_mb:g} ({config.path}): predict with fewer "
        "weight files (predict.snapshot_ensemble, predict.weights) or raise the cap with "
        "--set notebook.max_package_mb=N"
    )


# Inside the notebook.


def find_package(data_root: Path, dataset_id: str) -> Path:
    """The packaged run's folder under the notebook's inputs (a dataset mounts one to three levels down)."""
    for depth in range(1, 4):
        for manifest in sorted(data_root.glob("/".join(["*"] * depth) + f"/{MANIFEST}")):
            if read_json(manifest).get("dataset") == dataset_id:
                return manifest.parent
    raise KitError(f"no {MANIFEST} of {dataset_id} under {data_root}: add the dataset as an input")


def find_competition(data_root: Path, slug: str) -> Path:
    """The competition's folder under the notebook's inputs: <root>/<slug>, or a folder so named deeper."""
    for candidate in (data_root / slug, data_root / "competitions" / slug):
        if candidate.is_dir():
            return candidate
    for depth in range(2, 4):
        for candidate in sorted(data_root.glob("/".join(["*"] * (depth - 1)) + f"/{slug}")):
            if candidate.is_dir():
                return candidate
    raise KitError(f"no folder {slug} under {data_root}: add the competition as an input")


def unpack(package: Path, competition_data: Path, scratch: Path) -> tuple[Path, Path]:
    """The project tree a packaged run predicts in, under `scratch`; returns (project root, run folder).

    competitions/<name>/ holds the packaged competition files, data/raw/<name> is a link to the competition's
    (read-only) input, and runs/<name>/<run>/ the run's files with its weights linked into fold-N/.
    """
    manifest = read_json(package / MANIFEST)
    name, root = manifest["competition"], scratch / "kit-project"
    if root.exists():
        shutil.rmtree(root)
    competition_dir = root / "competitions" / name
    competition_dir.mkdir(parents=True)
    for file_name in manifest["competition_files"]:
        shutil.copy2(package / file_name, competition_dir / file_name)
    raw = root / "data" / "raw" / name
    raw.parent.mkdir(parents=True)
    raw.symlink_to(competition_data.resolve(), target_is_directory=True)
    run_dir = root / "runs" / name / manifest["run"]
    run_dir.mkdir(parents=True)
    for file_name in manifest["run_files"]:
        shutil.copy2(package / file_name, run_dir / file_name)
    config_file = Run(run_dir).config_file  # the run's config, pointed at this tree's competition folder
    write_json(config_file, {**read_json(config_file), "path": str(competition_dir / "competition.toml")})
    for file_name, relative in manifest["weights"].items():
        target = run_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to((package / file_name).resolve())
    return root, run_dir


@contextlib.contextmanager
def _project_root(root: Path) -> Iterator[None]:
    """KIT_PROJECT_ROOT pointed at root for the duration (kit.paths reads it at call time)."""
    before = os.environ.get("KIT_PROJECT_ROOT")
    os.environ["KIT_PROJECT_ROOT"] = str(root)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("KIT_PROJECT_ROOT", None)
        else:
            os.environ["KIT_PROJECT_ROOT"] = before


def predict_in_notebook(data_root: str, dataset_id: str, slug: str, work_root: str, scratch: str) -> Path:
    """What the notebook runs: the packaged run predicts the competition's test folder as `kit predict`
    does (the packaged calibration, never refitted), and `<work_root>/submission.csv` is written (clipped
    as `kit submit` uploads it) and checked against the competition's sample submission.

    The test images are decoded once, first, into the cache every weight file and view then reads; each
    phase's seconds are written beside the submission (TIMINGS_FILE: the time budget's measurements)."""
    clock = time.perf_counter()
    seconds = {}

    def phase(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 3)
        clock = now

    data = Path(data_root)
    package = find_package(data, dataset_id)
    root, run_dir = unpack(package, find_competition(data, slug), Path(scratch))
    output = Path(work_root) / SUBMISSION_FILE
    with _project_root(root):
        config = run_config(run_dir)
        summary = Run(run_dir).summary()
        phase("unpack")
        test = load_test(config)
        side = prediction_cache_side(config)
        photo_cache(config, test.paths, side, "test")
        phase("decode")
        predicted = predict_run(config, run_dir, summary)  # reads the cache just made
        label = config.submission.format == "label"
        frame = parse_csv(
            predicted, "predict again", dtype=str if label else {config.submission.id_column: str}
        )
        frame = submission.clip(config, frame)
        output.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(output) as temporary:
            frame.to_csv(temporary, index=False)
        phase("predict")
        check_submission(config, output, summary.classes, summary.task_record)
        phase("check")
        made = read_json(Run(run_dir).submission_record_file)
        write_json(
            Path(work_root) / TIMINGS_FILE,
            {
                "seconds": seconds,
                "images": len(test.ids),
                "weight_files": len(made["weights"]),
                "views": len(made["views"]),
                "image_scale": config.predict.image_scale,
                "forward_passes": made["forward_passes"],
                "device": device_name(),
                "precision": resolve_precision(config.predict.precision),
                "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            },
        )
    return output


def check_submission(config: Config, path: Path, classes: list[str], task: dict) -> None:
    """A submission file checked against the competition's sample (kit.predict.submission.check), for the
    run's task (metrics.json "task")."""
    label = config.submission.format == "label"
    frame = parse_csv(path, "predict again", dtype=str if label else {config.submission.id_column: str})
    sample = submission.read_sample(config)
    submission.check(config, frame, sample, str(path), classes, tasks.from_record(task))
