"""competition.toml: typed frozen dataclasses, one-line errors naming file and key, --set overrides, names."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from kit import commands
from kit.competitions import load_competition, resolve_name
from kit.config_overrides import parse_override
from kit.errors import ConfigError


def write_competition(project: Path, name: str, text: str) -> Path:
    path = project / "competitions" / name / "competition.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def config_error(name: str, overrides=()) -> str:
    """The one-line error of loading a competition as `kit train` does (transforms checked too)."""
    with pytest.raises(ConfigError) as raised:
        commands.load_for_training(name, tuple(overrides))
    message = raised.value.message
    assert "\n" not in message  # one line, shown without a traceback
    return message


BASIC = """
[competition]
kaggle = "dog-breed-identification"
metric = "log_loss"

[data]
labels = "csv"
labels_csv = "labels.csv"
extension = ".jpg"

[train]
model = "test_efficientnet"
pretrained = false
image_size = 64
epochs = 3
lr = 1          # an int where a float is expected is fine
folds = 4
"""


def test_loads_typed_frozen_dataclasses(project):
    path = write_competition(project, "dogs", BASIC)
    config = load_competition("dogs")
    assert config.name == "dogs" and config.path == path
    assert config.competition.kaggle == "dog-breed-identification"
    assert config.train.image_size == 64 and config.train.folds == 4
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)
    assert config.train.pretrained is False
    assert config.train.batch_size == 64  # a default
    # No [[stages]]: one plain stage of train.epochs epochs with every layer trained.
    assert len(config.stages) == 1 and config.stage_epochs(config.stages[0]) == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train.epochs = 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.name = "other"


def test_the_embedded_competition_loads(project):
    config = load_competition("digits")
    assert config.competition.metric == "accuracy" and config.submission.format == "label"
    assert isinstance(config.augment.transforms, tuple) and config.augment.transforms[0]["name"] == "Affine"


def test_stages_are_typed(project):
    write_competition(
        project,
        "staged",
        BASIC
        + """
[[stages]]
name = "head"
freeze_to = -1
precompute = true
augment = false
lr = 0.01

[[stages]]
name = "all"
lr = [1e-4, 1e-3, 1e-2]
n_cycles = 3
cycle_mult = 2
snapshots = true
""",
    )
    head, everything = load_competition("staged").stages
    assert head.name == "head" and head.precompute and head.freeze_to == -1 and head.lr == 0.01
    assert everything.lr == (1e-4, 1e-3, 1e-2) and everything.cycle_mult == 2.0
    assert load_competition("staged").stage_epochs(everything) == 1 + 2 + 4


def test_unknown_key_names_file_key_and_allowed_keys(project):
    path = write_competition(project, "typo", BASIC.replace("epochs = 3", "epoch = 3"))
    message = config_error("typo")
    assert str(path) in message and "'train.epoch'" in message
    assert "allowed keys" in message and "epochs" in message and "batch_size" in message


@pytest.mark.parametrize(
    "line, old", [("tta = 2", "train.tta"), ("predict_weights = 'last'", "train.predict_weights")]
)
def test_a_key_of_an_older_layout_is_an_unknown_key(project, line, old):
    # No shim per moved key: an older competition.toml's key is unknown, with the allowed keys listed.
    path = write_competition(project, "moved", BASIC.replace("epochs = 3", f"epochs = 3\n{line}"))
    message = config_error("moved")
    assert str(path) in message and f"unknown key '{old}'" in message and "allowed keys" in message


def test_unknown_section_and_top_level_keys_are_refused(project):
    path = write_competition(project, "section", BASIC + "\n[trian]\nepochs = 2\n")
    message = config_error("section")
    assert str(path) in message and "'trian'" in message and "train" in message
    # A key written above every section is not silently dropped either.
    write_competition(project, "toplevel", 'name = "dogs"\n' + BASIC)
    assert "'name'" in config_error("toplevel")
    write_competition(project, "stray", "epochs = 3\n" + BASIC)
    assert "'epochs'" in config_error("stray")


@pytest.mark.parametrize(
    "old, new, key",
    [
        ("epochs = 3", 'epochs = "three"', "train.epochs"),
        ("lr = 1 ", 'lr = "x" ', "train.lr"),
        ("pretrained = false", "pretrained = 0", "train.pretrained"),
        ("epochs = 3", "epochs = 2.5", "train.epochs"),
        ('extension = ".jpg"', "extension = 3", "data.extension"),
    ],
)
def test_wrong_type_names_the_key(project, old, new, key):
    assert old in BASIC
    path = write_competition(project, "typed", BASIC.replace(old, new))
    message = config_error("typed")
    assert str(path) in message and f"'{key}'" in message and "should be" in message


def test_malformed_toml_names_file_and_line(project):
    path = write_competition(project, "broken", "[train]\nepochs = 3\nlr = = 2\n")
    message = config_error("broken")
    assert str(path) in message and "malformed TOML" in message and "line 3" in message


def test_overrides_set_section_bare_and_stage_keys(project):
    write_competition(project, "dogs", BASIC + "\n[[stages]]\nfreeze_to = -1\n")
    config = load_competition(
        "dogs", ["train.epochs=5", "lr=3e-3", "data.extension=.png", "stages.0.lr=[1e-4, 1e-3, 1e-2]"]
    )
    assert config.train.epochs == 5 and config.train.lr == 3e-3 and config.data.extension == ".png"
    assert config.stages[0].lr == (1e-4, 1e-3, 1e-2) and config.stages[0].freeze_to == -1
    assert load_competition("dogs").train.epochs == 3  # the file itself is untouched


def test_parse_override_reads_toml_values_else_strings():
    assert parse_override("train.lr=3e-3") == ("train.lr", 0.003)
    assert parse_override("train.pretrained = false") == ("train.pretrained", False)
    assert parse_override("train.model=resnet34") == ("train.model", "resnet34")
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("train.lr")


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.epochs=three", "'train.epochs'"),
        ("train.lr=x", "'train.lr'"),
        ("epochs=three", "'train.epochs'"),
        ("train.epoch=3", "'train.epoch'"),
        ("trian.epochs=3", "trian.epochs"),
        ("nonsense=3", "nonsense"),
        ("stages.0.freeze=1", "'stages[0].freeze'"),
        ("stages.3.lr=0.1", "stages.3.lr"),
        ("stages.0.cycle_mult=0.5", "cycle_mult"),
        ("train.folds=1", "'train.folds'"),
        ("competition.metric=auc_roc", "'competition.metric'"),
    ],
)
def test_overrides_get_the_same_checks(project, override, expected):
    write_competition(project, "dogs", BASIC + "\n[[stages]]\nfreeze_to = -1\n")
    assert expected in config_error("dogs", [override])


def test_bare_key_in_two_sections_asks_for_the_section(project):
    write_competition(project, "dogs", BASIC)
    message = config_error("dogs", ["id_column=image"])
    assert "data.id_column" in message and "submission.id_column" in message


STAGE_PROBLEMS = [
    ("[[stages]]\nprecompute = true\nfreeze_to = 0\n", "precompute"),
    ("[[stages]]\nprecompute = true\nfreeze_to = 1\n", "freeze_to = -1"),
    ("[[stages]]\ncycle_mult = 0.5\n", "cycle_mult"),
    ("[[stages]]\nn_cycles = 0\n", "n_cycles"),
    ("[[stages]]\nfreeze_to = 3\n", "freeze_to"),
    ("[[stages]]\nlr = [1e-3, 1e-2]\n", "lr has 2 values"),
    ('[augment]\npreset = "sideways"\n', "'augment.preset'"),
    ('[augment]\npadding_mode = "mirror"\n', "'augment.padding_mode'"),
    ('[augment]\ntransforms = [{ name = "Blurr", p = 0.2 }]\n', "unknown albumentations transform 'Blurr'"),
    ('[augment]\ntransforms = [{ name = "Compose" }]\n', "unknown albumentations transform 'Compose'"),
    ('[augment]\ntransforms = [{ name = "Blur", blur_limit = "abc" }]\n', "blur_limit"),
    ('[augment]\ntransforms = [{ name = "Blur", blur_limt = 3 }]\n', "'blur_limt'"),
    ("[[stages]]\nimage_size = -32\n", "image_size = -32 must be 1 or more"),
    ("[[stages]]\nbatch_size = 0\n", "batch_size = 0 must be 1 or more"),
    ("[[stages]]\nlr = nan\n", "lr = nan must be a positive number"),
    ("[[stages]]\nlr = [1e-3, -1e-3, 1e-2]\n", "lr = -0.001 must be a positive number"),
    ("[[stages]]\nlr = 0\n", "lr = 0 must be a positive number"),
    ("[[stages]]\ncycle_len = inf\n", "cycle_len > 0"),
    ("[[stages]]\ncycle_mult = nan\n", "cycle_mult = nan"),
    ("[predict]\ntta = -1\n", "'predict.tta' = -1"),
    ("[predict]\nsnapshot_ensemble = 0\n", "'predict.snapshot_ensemble' = 0"),
    ("[submission]\nclip_epsilon = 0.7\n", "'submission.clip_epsilon' = 0.7"),
    ('[submission]\nformat = "binary"\n', "positive_class"),
    ('[submission]\nformat = "csv"\n', "'submission.format'"),
]


@pytest.mark.parametrize("extra, expected", STAGE_PROBLEMS)
def test_impossible_settings_are_one_clear_error_each(project, extra, expected):
    path = write_competition(project, "bad", BASIC + "\n" + extra)
    message = config_error("bad")
    assert str(path) in message and expected in message


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("train.lr=nan", "'train.lr' = nan must be a positive number"),
        ("train.lr=-3e-3", "'train.lr' = -0.003 must be a positive number"),
        ("train.weight_decay=-0.01", "'train.weight_decay' = -0.01 must be 0 or more"),
        ("train.weight_decay=inf", "'train.weight_decay' = inf"),
        ("train.seed=-1", "'train.seed' = -1 must be 0 to 2**32 - 1"),
        ("train.num_workers=-2", "'train.num_workers' = -2"),
        ("data.max_bad_images=-1", "'data.max_bad_images' = -1"),
        ("stages.0.batch_size=-8", "batch_size = -8 must be 1 or more"),
    ],
)
def test_values_out_of_range_are_refused_from_the_file_or_an_override(project, setting, expected):
    path = write_competition(project, "bad", BASIC + "\n[[stages]]\n")
    message = config_error("bad", [setting])
    assert str(path) in message and expected in message, message


def test_stage_errors_name_the_stage(project):
    write_competition(
        project, "bad", BASIC + '\n[[stages]]\nname = "warm"\n\n[[stages]]\nname = "hot"\ncycle_mult = 0.5\n'
    )
    assert "stages[1] (hot)" in config_error("bad")


def test_bad_transform_arguments_name_the_field(project):
    write_competition(
        project, "bad", BASIC + '\n[augment]\ntransforms = [{ name = "Blur", blur_limit = "abc" }]\n'
    )
    message = config_error("bad")
    assert "bad arguments for Blur" in message and "blur_limit" in message
    write_competition(
        project, "typo", BASIC + '\n[augment]\ntransforms = [{ name = "Blur", blur_limt = 3 }]\n'
    )
    message = config_error("typo")
    assert "Blur has no argument 'blur_limt'" in message and "blur_limit" in message


@pytest.mark.parametrize(
    ("transform", "expected"),
    [
        ('{ name = "Normalize" }', "Normalize is not allowed: the kit normalises each batch"),
        ('{ name = "ToTensorV2" }', "ToTensorV2 is not allowed"),
        ('{ name = "ToFloat", max_value = 255 }', "ToFloat is not allowed"),
        (
            '{ name = "Resize", height = 32, width = 32 }',
            "Resize turns a 64x64x3 uint8 image into 32x32x3 uint8",
        ),
        ('{ name = "RandomCrop", height = 48, width = 48, p = 0.1 }', "RandomCrop turns a 64x64x3"),
        ('{ name = "PadIfNeeded", min_height = 80, min_width = 80 }', "into 80x80x3"),
        ('{ name = "ToGray", num_output_channels = 1 }', "into 64x64 uint8"),
    ],
)
def test_transforms_that_break_the_contract_are_refused_listing_the_allowed_kinds(
    project, transform, expected
):
    write_competition(project, "bad", BASIC + f"\n[augment]\ntransforms = [{transform}]\n")
    message = config_error("bad")
    assert "augment.transforms" in message and expected in message, message
    assert "allowed: pixel-level transforms" in message and "train.image_size" in message


def test_a_resize_that_fits_one_stage_but_not_the_next_is_refused(project):
    text = BASIC + '\n[augment]\ntransforms = [{ name = "Resize", height = 64, width = 64 }]\n'
    write_competition(project, "sizes", text + "\n[[stages]]\n\n[[stages]]\nimage_size = 96\n")
    assert "Resize turns a 96x96x3 uint8 image into 64x64x3" in config_error("sizes")


def test_transforms_that_keep_the_contract_are_accepted(project):
    transforms = (
        '[{ name = "Blur", blur_limit = 3, p = 0.2 }, { name = "CoarseDropout" }, '
        '{ name = "RandomResizedCrop", size = [64, 64] }, { name = "HueSaturationValue" }]'
    )
    write_competition(project, "good", BASIC + f"\n[augment]\ntransforms = {transforms}\n")
    assert len(commands.load_for_training("good").augment.transforms) == 4


@pytest.fixture
def named(project):
    """Three competitions alone (the copied real ones removed, so their names cannot interfere)."""
    for folder in (project / "competitions").iterdir():
        shutil.rmtree(folder)
    write_competition(project, "dogs-breeds", '[competition]\nkaggle = "dog-breed-identification"\n')
    write_competition(
        project, "dogs-vs-cats", '[competition]\nkaggle = "dogs-vs-cats-redux-kernels-edition"\n'
    )
    write_competition(
        project, "planet", '[competition]\nkaggle = "planet-understanding-the-amazon-from-space"\n'
    )
    return project


def test_resolve_name(named):
    assert resolve_name("planet") == "planet"  # the folder
    assert resolve_name("dog-breed-identification") == "dogs-breeds"  # the Kaggle slug
    assert resolve_name("dogs-vs-cats") == "dogs-vs-cats"  # exact beats prefix
    assert resolve_name("pla") == "planet"  # unambiguous prefix of a folder
    assert resolve_name("dog-breed") == "dogs-breeds"  # ... or of a slug
    assert resolve_name("dogs-b") == "dogs-breeds"
    assert load_competition("dog-breed").name == "dogs-breeds"


def test_resolve_name_ambiguous_lists_candidates(named):
    with pytest.raises(ConfigError) as raised:
        resolve_name("dogs")
    message = raised.value.message
    assert "ambiguous" in message and "dogs-breeds" in message and "dogs-vs-cats" in message
    assert "planet" not in message


def test_resolve_name_unknown_lists_known(named):
    with pytest.raises(ConfigError) as raised:
        resolve_name("cifar")
    message = raised.value.message
    assert "unknown competition 'cifar'" in message
    assert all(name in message for name in ("dogs-breeds", "dogs-vs-cats", "planet"))


def test_resolve_name_survives_a_broken_neighbour(named):
    write_competition(named, "zzz-broken", "[competition\n")
    assert resolve_name("planet") == "planet"
    assert "malformed TOML" in config_error("zzz-broken")


def test_the_quick_recipe_keeps_the_head_stages_only():
    from kit.competitions import load_competition

    full = load_competition("dog-breeds")
    quick = load_competition("dog-breeds", ["recipe=quick"])  # as `make train SET="recipe=quick"` passes it
    assert [stage.name for stage in full.stages] == ["head-precomputed", "head-augmented", "unfrozen"]
    assert [stage.name for stage in quick.stages] == ["head-precomputed", "head-augmented"]
    assert quick.predict.tta == full.predict.tta > 0  # with TTA: a first submission worth sending
    plain = load_competition("dog-breeds", ["recipe=quick", "stages=[]"])  # no head stage: the first one
    assert len(plain.stages) == 1 and plain.stages[0].freeze_to == 0
