"""Forking: write a competition.toml that fits a competition's raw download.

`kit.kaggle.raw_layout.inspect(raw_dir)` reads the download's layout; `render` turns it into TOML text
with the kit's standard recipe and the defaults its measurements support (`render_like`: another
competition's recipe). Both only read. `write_new` writes the file once, never over an existing one.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import tomllib

from kit.config import TASK_METRICS
from kit.errors import KitError
from kit.kaggle.raw_layout import DEFAULT_FOLDS, Layout

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")  # at most 100 characters: a folder name in paths
ALREADY_EXISTS = "{target} already exists; choose another NAME or delete it first"


def default_metric(submission_format: str, task: str = "single_label") -> str:
    """The task's first metric (kit.config.TASK_METRICS); single label: log loss is what probability
    submissions are almost always scored by, labels by accuracy."""
    if task != "single_label":
        return TASK_METRICS[task][0]
    return "accuracy" if submission_format == "label" else "log_loss"


@dataclass(frozen=True)
class Measured:
    """A default `kit new` writes because a measurement of the kit supports it, and which one."""

    key: str  # section.key, or stages.N.key
    value: object
    reason: str  # the measurement, written as the key's comment


# The upload's clip for log loss: a hundredth of the uniform guess 1/classes, so one confident mistake costs
# at most -log(clip) instead of up to 34 (Kaggle's own 1e-15) and each right answer at most about the clip.
CLIP_SHARE_OF_UNIFORM = 0.01
COMMENT_WIDTH = 106  # characters of a reason per comment line in the written TOML
CLIP_REASON = (
    "a hundredth of the uniform guess 1/{classes}: one sure mistake costs at most -log({clip:g}), a hedge "
    "against confident mistakes that OOF is too small to show. cats-vs-dogs ships 0.005 for 2 classes; on "
    "300-photo forks of 1,600 Dogs vs. Cats photos (kept outside the repository) it took the answer key "
    "from 0.4247 to 0.4112 (a weak model) and "
    "from 0.1147 to 0.1158 (a stronger one) (docs/2026-12-02-forks.md)"
)
MIRROR_REASON = (
    "the plain view and its mirror: side crops scored worse on OOF in every run on 1,600 Dogs vs. Cats "
    "photos, the mirror helped their answer key in 3 runs of 3 (docs/2026-11-27-cats-vs-dogs-recipe.md)"
)
SCALE_REASON = (
    "views 8/7 of the training size (256 px after 224; FixRes): the same weights scored the answer key of "
    "1,600 Dogs vs. Cats photos better in 7 runs of 8, OOF too (docs/2026-11-27-image-scale.md)"
)
HEAD_JOINS_REASON = (
    "the head trained on frozen ImageNet features predicts beside the fine-tuned network: with "
    "predict.mean = 'logits' it took the OOF and answer key of 1,600 Dogs vs. Cats photos down on 4 seeds "
    "of 4 "
    "(docs/2026-11-27-cats-vs-dogs-recipe.md)"
)
LOGITS_REASON = (
    "views and weight files averaged as logits, the fine-tuned network beside the head (stage 1 below): "
    "better than as probabilities on 4 seeds of 4 (docs/2026-11-27-cats-vs-dogs-recipe.md)"
)
PROBABILITIES_REASON = (
    "views averaged as probabilities: on 1,000 Dog Breed Identification photos (120 classes) the head's "
    "second opinion scored OOF 1.230 "
    "averaged as probabilities, 1.256 as logits (docs/2026-11-27-cats-vs-dogs-recipe.md)"
)


def clip_for(classes: int) -> float:
    """CLIP_SHARE_OF_UNIFORM / classes, to one significant figure: 0.005 for 2 classes, 8e-05 for 120."""
    return float(f"{CLIP_SHARE_OF_UNIFORM / max(classes, 2):.0e}")


def measured_defaults(metric: str, task: str, classes: int, preset: str) -> list[Measured]:
    """The keys whose value the kit's measurements support for this metric, kind and preset, each with the
    measurement as its reason; keys left out keep the kit's default (kit/config.py says why)."""
    chosen = []
    if metric == "log_loss":
        clip = clip_for(classes)
        chosen.append(
            Measured("submission.clip_epsilon", clip, CLIP_REASON.format(classes=classes, clip=clip))
        )
    if preset == "side_on":  # photos: measured on real Dogs vs. Cats photos (the reasons' docs)
        chosen.append(Measured("predict.tta", 1, MIRROR_REASON))
        chosen.append(Measured("predict.image_scale", 1.143, SCALE_REASON))
    if metric == "log_loss" and task == "single_label" and classes == 2:
        chosen.append(Measured("stages.1.joins_prediction", True, HEAD_JOINS_REASON))
        chosen.append(Measured("predict.mean", "logits", LOGITS_REASON))
    elif metric == "log_loss" and task == "single_label":
        chosen.append(Measured("predict.mean", "probabilities", PROBABILITIES_REASON))
    return chosen


RECIPE = """
[augment]
preset = "side_on"          # photos from the side; "top_down" for satellite or microscope images

[train]
model = "efficientnet_lite0"  # lite1, lite2 also load offline (docs/backbones.md)
pretrained = true
image_size = 224            # pixels
batch_size = 64             # images per step
lr = 3e-3                   # peak rate of the head stages (AdamW)
folds = {folds}
# precision = "auto" (the default): bf16 on GPUs of compute capability 8.0+, fp16 on 7.x (Kaggle's T4), fp32
# on a CPU; not measured against fp32 here (no GPU was lent), so left to the kit's rule (kit/config.py)

[predict]
{predict}
snapshot_ensemble = 3
weights = "snapshots"

# The fast.ai 2018 recipe: the head on cached body features, the head on augmented images, then the whole
# network with differential learning rates and SGDR cycles that double in length, saving snapshots.

[[stages]]
name = "head-precomputed"
freeze_to = -1              # head only
precompute = true           # body features computed once
augment = false
n_cycles = 1
cycle_len = 1               # epochs

[[stages]]
name = "head-augmented"
freeze_to = -1
n_cycles = 1
cycle_len = 1
{stage1}
[[stages]]
name = "unfrozen"
freeze_to = 0
lr = [1.1e-4, 3.3e-4, 1e-3]   # lr/9 (early body), lr/3 (late body), lr (head)
n_cycles = 3
cycle_len = 1
cycle_mult = 2              # cycles of 1, 2, 4 epochs
snapshots = true
"""


def _commented(settings: list[Measured], prefix: str) -> str:
    """`key = value` lines of the settings under `prefix` ("predict."), each after its reason as a comment."""
    lines = []
    for setting in settings:
        if setting.key.startswith(prefix):
            lines += [f"# {line}" for line in textwrap.wrap(setting.reason, COMMENT_WIDTH)]
            lines.append(f"{setting.key[len(prefix) :]} = {json.dumps(setting.value)}")
    return "\n".join(lines)


def _table(values: dict) -> str:  # a JSON string is a valid TOML string
    return "\n".join(f"{key} = {json.dumps(value)}" for key, value in values.items())


def _head(slug: str, layout: Layout, metric: str, submission: str, measured: list[Measured]) -> str:
    """The inferred [competition], [data] and [submission] tables (with the measured submission keys)."""
    images = sum(layout.class_counts.values())
    kinds = {
        "single_label": f"{images} training images, {len(layout.class_counts)} classes",
        "multi_label": f"training images with {len(layout.class_counts)} tags",
        "regression": f"{images} training images, a number each",
        "ordinal": f"{images} training images, {len(layout.class_counts)} grades",
    }
    competition = {
        "kaggle": slug,
        "task": layout.task,
        "metric": metric,
        "description": kinds[layout.task],
        "submission": submission,
    }
    if layout.task == "single_label":
        del competition["task"]  # the default: a single-label config reads as before
    measured_submission = _commented(measured, "submission.")
    return (
        f"[competition]\n{_table(competition)}\n\n[data]\n{_table(layout.data)}\n\n"
        f"[submission]\n{_table(layout.submission)}\n"
        + (f"{measured_submission}\n" if measured_submission else "")
    )


def fold_count(layout: Layout) -> int:
    """DEFAULT_FOLDS, fewer when the rarest class has fewer images (never below 2)."""
    rarest = min(layout.class_counts.values())
    return DEFAULT_FOLDS if layout.task == "regression" else max(2, min(DEFAULT_FOLDS, rarest))


def render(name: str, slug: str, layout: Layout, metric: str, submission: str = "csv") -> str:
    """competition.toml text: the inferred tables, then the kit's standard training recipe with the
    defaults its measurements support for this metric and kind (`measured_defaults`), each commented.

    `submission` is "notebook" for a code competition (Kaggle takes notebooks only), else "csv".
    """
    measured = measured_defaults(metric, layout.task, len(layout.class_counts), "side_on")
    predict = _commented(measured, "predict.") or ""
    if not any(setting.key == "predict.tta" for setting in measured):
        predict = "tta = 4                     # augmented views added at prediction time\n" + predict
    stage1 = _commented(measured, "stages.1.")
    recipe = (
        RECIPE.replace("{folds}", str(fold_count(layout)))
        .replace("{predict}", predict.strip("\n"))
        .replace("{stage1}", f"{stage1}\n" if stage1 else "")
    )
    return (
        f"# Written by `kit new {name}` from data/raw/{name}; "
        "check the notes it printed, then edit freely.\n"
        "# Keys after a comment naming a measurement are set from what the kit measured (kit new --help).\n\n"
        + _head(slug, layout, metric, submission, measured)
        + recipe
    )


# Sections of a shipped competition that `kit new --like` copies as text (comments kept): the recipe.
# From [data] and [submission] only these keys come along (the rest is the new download's layout).
LIKE_SECTIONS = ("augment", "train", "predict", "notebook", "stages")
LIKE_DATA_KEYS = ("max_aspect",)
LIKE_SUBMISSION_KEYS = ("clip_epsilon",)


def _carried(section: str, key: str, value: object, text: str, like: str) -> Measured:
    """A [data] or [submission] key of the shipped competition, its own comment as the reason."""
    found = re.search(rf"^\s*{key}\s*=[^#\n]*#\s*(.*)$", text, re.M)
    reason = f"as competitions/{like}" + (f": {found.group(1).strip()}" if found else "")
    return Measured(f"{section}.{key}", value, reason)


def render_like(
    name: str, slug: str, layout: Layout, metric: str, like: str, like_path: Path, submission: str = "csv"
) -> str:
    """competition.toml text that starts from the shipped competition `like`: the inferred [competition],
    [data] and [submission] tables, `like`'s measured data and clip keys, then its recipe as it is written
    ([augment], [train], [predict], [[stages]], comments and all)."""
    text = like_path.read_text(encoding="utf-8")
    shipped = tomllib.loads(text)
    shipped_task = shipped.get("competition", {}).get("task", "single_label")
    if shipped_task != layout.task:
        raise KitError(
            f"--like {like}: {like_path} is a {shipped_task} competition, data/raw/{name} holds "
            f"{layout.task} labels; choose a shipped competition of that kind (`kit list`)"
        )
    carried = [
        _carried("data", key, shipped["data"][key], text, like)
        for key in LIKE_DATA_KEYS
        if key in shipped.get("data", {})
    ]
    carried += [
        _carried("submission", key, shipped["submission"][key], text, like)
        for key in LIKE_SUBMISSION_KEYS
        if key in shipped.get("submission", {}) and metric == "log_loss"
    ]
    headers = [
        match
        for match in re.finditer(r"^\[\[?([a-z_]+)\]?\]\s*$", text, re.M)
        if match.group(1) in LIKE_SECTIONS
    ]
    recipe = text[headers[0].start() :] if headers else ""
    later = re.findall(r"^\[([a-z_]+)\]\s*$", recipe, re.M)
    if any(section not in LIKE_SECTIONS for section in later):
        raise KitError(
            f"--like {like}: {like_path} has [{later[-1]}] after its recipe; kit new copies the recipe "
            "sections (augment, train, predict, notebook, stages) only when they come last"
        )
    folds = fold_count(layout)
    if folds != shipped.get("train", {}).get("folds", DEFAULT_FOLDS):
        rarest = min(layout.class_counts.values())
        line = f"folds = {folds}                   # the rarest class has {rarest} images"
        recipe = (
            re.sub(r"^\[train\]\s*$", f"[train]\n{line}", recipe, count=1, flags=re.M)
            if re.search(r"^\[train\]\s*$", recipe, re.M)
            else f"[train]\n{line}\n\n{recipe}"
        )
    clip = [setting for setting in carried if setting.key.startswith("submission.")]
    head = _head(slug, layout, metric, submission, clip)
    data_lines = _commented(carried, "data.")
    if data_lines:
        head = head.replace("\n\n[submission]", f"\n{data_lines}\n\n[submission]", 1)
    return (
        f"# Written by `kit new {name} --like {like}` from data/raw/{name}: the layout inferred from the "
        f"files, the recipe as\n# competitions/{like} ships it (its comments say what was measured). "
        "Check the notes it printed, then edit freely.\n\n" + head + "\n" + recipe
    )


def check_name(name: str, target: Path) -> None:
    if not NAME_PATTERN.match(name):
        raise KitError(f"competition name {name!r}: use 1 to 100 lowercase letters, digits, '-' and '_'")
    if target.exists():
        raise KitError(ALREADY_EXISTS.format(target=target))


def write_new(target: Path, text: str) -> None:
    """Write target atomically, refusing (even in a race) to replace an existing file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    try:
        os.link(temporary, target)  # fails if target exists, unlike a rename
    except FileExistsError:
        raise KitError(ALREADY_EXISTS.format(target=target)) from None
    finally:
        temporary.unlink()


def submission_note(code_competition: bool | None) -> str:
    """What `kit new` says about how the competition is entered (Kaggle's answer, or none)."""
    if code_competition is None:
        return (
            'check: competition.submission = "csv" (Kaggle was not asked): a code competition, entered by a '
            'notebook, needs "notebook"'
        )
    if code_competition:
        return (
            'submission: a code competition (notebooks only): competition.submission = "notebook"; '
            "`kit notebook` enters it"
        )
    return 'submission: a CSV upload (competition.submission = "csv"); `kit submit` enters it'


def report(layout: Layout, metric: str, target: Path) -> str:
    """What was inferred and what to check, for the terminal."""
    data, submission, classes = layout.data, layout.submission, sorted(layout.class_counts)
    source = {
        "csv": f"{data.get('labels_csv')} ({data.get('id_column')} -> {data.get('label_column')})",
        "folders": f"one folder per class in {data['train_dir']}/",
        "filenames": f"file names in {data['train_dir']}/ ({data.get('filename_pattern')})",
    }[data["labels"]]
    shown = ", ".join(classes[:6]) + (" ..." if len(classes) > 6 else "")
    positive = f", P({submission['positive_class']})" if "positive_class" in submission else ""
    return "\n".join(
        [
            f"wrote {target}",
            f"  labels: {source}; task {layout.task}; {len(classes)} distinct ({shown})",
            f"  groups: {data['group_column']!r} (data.group_column): folds never split a group"
            if data.get("group_column")
            else "  groups: no group column found (photos sharing a patient, animal or scene? set "
            "data.group_column, or define groups() in hooks.py)",
            f"  images: {data['train_dir']}/ and {data['test_dir']}/, *{data['extension']}",
            f"  submission: {data['sample_submission']} -> format {submission['format']}{positive}; "
            f"metric {metric}",
            "check: competition.metric against the competition's Evaluation page, augment.preset, "
            "the recipe's epochs",
            *[f"check: {note}" for note in layout.notes],
        ]
    )
