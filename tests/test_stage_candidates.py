"""Which stages' final weights selection may choose: a stage trained at another size than the last one would
predict views out of scale (digits: a 48 px head on 64 px views scored accuracy 0.27 where it validated at
0.78), so only the stages at the last stage's size, and those that join prediction, are candidates."""

from pathlib import Path

from kit.config_build import config_from_dict
from kit.train.views import candidate_weights


def stages_config(joins: bool = False):
    stages = [
        {"name": "head", "cycle_len": 1, "image_size": 48, "joins_prediction": joins},
        {"name": "unfrozen", "cycle_len": 1, "image_size": 64},
        {"name": "larger", "cycle_len": 1, "image_size": 64},
    ]
    return config_from_dict({"train": {"image_size": 48}, "stages": stages}, Path("x/competition.toml"))


def fold_with_every_file(tmp_path: Path) -> Path:
    for name in ("stage-0.pt", "stage-1.pt", "last.pt"):
        (tmp_path / name).write_bytes(b"")
    return tmp_path


def test_a_stage_at_another_size_is_not_a_candidate(tmp_path):
    names = [path.name for path in candidate_weights(stages_config(), fold_with_every_file(tmp_path))]
    assert "stage-0.pt" not in names and "stage-1.pt" in names and names[-1] == "last.pt"


def test_a_stage_that_joins_prediction_stays_a_candidate_at_any_size(tmp_path):
    fold = fold_with_every_file(tmp_path)
    names = [path.name for path in candidate_weights(stages_config(joins=True), fold)]
    assert "stage-0.pt" in names and "stage-1.pt" in names


def test_the_stop_is_off_by_default():
    assert config_from_dict({}, Path("x/competition.toml")).train.stop_when_worse is False
