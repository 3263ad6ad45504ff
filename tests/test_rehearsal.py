"""Code competitions on Kaggle's hardware: `kit notebook --local` rehearses the notebook here (offline, on
Kaggle's cores, both input layouts), the time budget scales what it measured to the hidden test set and
Kaggle's machine and refuses a push near the limit, and notebook.accelerator reaches kernel-metadata.json."""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY, invoke

from kit.kaggle import budget, rehearsal

SLUG = "some-competition"
DATASET = f"{rehearsal.LOCAL_OWNER}/kit-some"


def measured(**changes) -> budget.Rehearsal:
    values = dict(
        images=1000,
        weight_files=4,
        views=2,
        image_scale=1.0,
        fixed_seconds=60.0,
        decode_seconds=30.0,
        predict_seconds=120.0,
        device="cpu",
    )
    return budget.Rehearsal(**{**values, **changes})


def test_the_budget_scales_decoding_and_forward_passes_to_the_hidden_test_set():
    public = budget.estimate(measured(), "cpu", 0)
    hidden = budget.estimate(measured(), "cpu", 10_000)  # ten times the public count
    assert public.images == 1000 and hidden.images == 10_000
    assert hidden.fixed_minutes == public.fixed_minutes == 60 * budget.MARGIN / 60
    assert hidden.decode_minutes == pytest.approx(10 * public.decode_minutes)
    assert hidden.predict_minutes == pytest.approx(10 * public.predict_minutes)
    assert public.minutes == pytest.approx((60 + 30 + 120) * budget.MARGIN / 60)


def test_the_forward_factor_per_target():
    assert budget.forward_factor("cpu", "cpu") == budget.MARGIN
    assert budget.forward_factor("cpu", "t4") == budget.MARGIN  # no speed-up claimed over a CPU
    assert budget.forward_factor("NVIDIA A100-SXM4-80GB", "t4") == 5 * budget.MARGIN
    assert budget.forward_factor("NVIDIA H200", "t4x2") == 16 * budget.MARGIN  # one GPU of two predicts
    assert budget.forward_factor("Some Future GPU", "t4") == 16 * budget.MARGIN  # unknown: the fastest
    assert budget.forward_factor("NVIDIA H200", "cpu") == float("inf")  # not scalable: rehearse on CPU
    assert budget.over_budget(budget.estimate(measured(device="NVIDIA H200"), "cpu", 0), 540)


def test_the_budget_refuses_above_80_percent_of_the_limit():
    estimate = budget.estimate(measured(), "cpu", 0)  # 5.25 min
    assert not budget.over_budget(estimate, estimate.minutes / budget.REFUSE_ABOVE + 0.01)
    assert budget.over_budget(estimate, estimate.minutes / budget.REFUSE_ABOVE - 0.01)


def test_the_biggest_cut_is_the_knob_that_saves_most():
    many_files = measured(weight_files=10, views=2)  # half the files saves 1/2, half the views 1/2: tie
    knob, saved = budget.biggest_cut(many_files, budget.estimate(many_files, "cpu", 0))
    assert saved == pytest.approx(budget.estimate(many_files, "cpu", 0).predict_minutes / 2)
    many_views = measured(weight_files=3, views=8)  # 3 -> 2 files saves 1/3; 8 -> 4 views saves 1/2
    knob, saved = budget.biggest_cut(many_views, budget.estimate(many_views, "cpu", 0))
    assert knob.startswith("4 TTA views instead of 8")
    large = measured(weight_files=1, views=1, image_scale=1.5)  # 1 - 1/1.5**2 = 0.56 of the forward passes
    knob, saved = budget.biggest_cut(large, budget.estimate(large, "cpu", 0))
    assert "predict.image_scale = 1" in knob
    assert saved == pytest.approx(budget.estimate(large, "cpu", 0).predict_minutes * (1 - 1 / 1.5**2))
    lines = budget.budget_lines(measured(decode_seconds=1000.0), "cpu", 0, 540)
    assert "decoding takes longest" in lines[-1]


def test_accelerator_defaults_to_what_the_competition_allows_and_reaches_the_metadata(tmp_path):
    from kit.kaggle.notebook import write_kernel

    assert budget.default_accelerator("auto", gpu=True) == "t4x2"
    assert budget.default_accelerator("auto", gpu=False) == "cpu"
    assert budget.default_accelerator("t4", gpu=False) == "cpu"  # --no-gpu wins
    assert budget.default_accelerator("t4", gpu=True) == "t4"
    manifest = {"competition": "some", "run": "R", "metric": "log_loss", "cv": 0.5, "wheel_commit": "c"}
    shapes = {}
    for accelerator in ("t4x2", "t4", "cpu"):
        _, metadata = write_kernel(tmp_path / accelerator, manifest, "me", DATASET, SLUG, True, accelerator)
        written = json.loads((tmp_path / accelerator / "kernel-metadata.json").read_text())
        assert written == metadata
        shapes[accelerator] = (written["enable_gpu"], written.get("machine_shape"))
    # The official client (kaggle 2.2.5): machine_shape 'NvidiaTeslaT4' is "GPU T4 x2"; one T4 is the
    # default GPU (no shape); a CPU notebook has the GPU off.
    assert shapes == {"t4x2": (True, "NvidiaTeslaT4"), "t4": (True, None), "cpu": (False, None)}


@pytest.mark.parametrize("layout", rehearsal.LAYOUTS)
def test_both_kaggle_input_layouts_are_found_by_the_notebook(tmp_path, layout):
    """The notebook finds the competition and the package under either of Kaggle's input layouts."""
    from kit.kaggle.package import MANIFEST, find_competition, find_package

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "sample_submission.csv").write_text("id,label\n")
    inputs = tmp_path / "input"
    package = rehearsal.lay_out(inputs, layout, raw, SLUG, DATASET)
    package.mkdir()
    (package / MANIFEST).write_text(json.dumps({"dataset": DATASET}))
    expected = {"flat": inputs / "kit-some", "nested": inputs / "datasets" / "local" / "kit-some"}[layout]
    assert find_package(inputs, DATASET) == package == expected
    competition = find_competition(inputs, SLUG)
    assert (competition / "sample_submission.csv").is_file()
    assert competition.relative_to(inputs).parts[0] == ("competitions" if layout == "nested" else SLUG)


class Listener:
    """A TCP server on 127.0.0.1 that answers every connection with b"hello"."""

    def __enter__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        return self

    def _serve(self):
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            connection.sendall(b"hello")
            connection.close()

    def __exit__(self, *exc):
        self.server.close()


NETWORK_PROBE = """import json, os, socket, subprocess, sys, urllib.request
results = {{}}
try:
    results["socket"] = socket.create_connection(("127.0.0.1", {port}), timeout=5).recv(5).decode()
except OSError as error:
    results["socket"] = "refused: " + str(error)
try:
    results["urllib"] = urllib.request.urlopen("http://127.0.0.1:{port}/", timeout=5).read().decode()
except Exception as error:
    results["urllib"] = "refused: " + str(error)
child = subprocess.run([sys.executable, "-c", "import socket; "
    "print(socket.create_connection(('127.0.0.1', {port}), timeout=5).recv(5).decode())"],
    capture_output=True, text=True)
results["child"] = child.stdout.strip() or "refused"
results["cores"] = len(os.sched_getaffinity(0))
open({out!r}, "w").write(json.dumps(results))"""


@pytest.mark.slow
def test_the_rehearsal_kernel_has_no_network(tmp_path):
    """A local server answers this process; inside the rehearsal's kernel (and its child processes) the
    same connection fails, as every internet connection does on Kaggle with the internet off; without the
    rehearsal's environment the kernel reaches it (the probe can tell)."""
    import nbformat

    def probe(offline: bool) -> dict:
        out = tmp_path / f"probe-{offline}.json"
        notebook = nbformat.v4.new_notebook(
            cells=[nbformat.v4.new_code_cell(NETWORK_PROBE.format(port=port, out=str(out)))]
        )
        path = tmp_path / f"probe-{offline}" / "probe.ipynb"
        path.parent.mkdir()
        nbformat.write(notebook, str(path))
        environment = rehearsal.kernel_environment(path.parent, tmp_path, tmp_path, tmp_path, gpu=False)
        if not offline:
            environment.pop("PYTHONPATH")
        rehearsal.execute(path, environment, 120)
        return json.loads(out.read_text())

    with Listener() as listener:
        port = listener.port
        assert socket.create_connection(("127.0.0.1", port), timeout=5).recv(5) == b"hello"
        online, offline = probe(offline=False), probe(offline=True)
    assert online["socket"] == "hello" and online["child"] == "hello"
    assert offline["socket"].startswith("refused") and "network is off" in offline["socket"]
    assert offline["urllib"].startswith("refused") and offline["child"] == "refused"
    assert offline["cores"] == min(budget.KAGGLE_CORES, len(os.sched_getaffinity(0)))


@pytest.mark.slow
def test_kit_notebook_local_rehearses_offline_and_writes_kit_predicts_submission(digits, monkeypatch):
    """On digits (no Kaggle slug, no credentials): the package built, the notebook executed offline in a
    simulated /kaggle/input, its submission.csv identical to `kit predict`'s, every phase timed, a budget."""
    for key in list(os.environ):
        if key.startswith("KAGGLE"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", "/nonexistent")  # no credentials anywhere
    project = Path(os.environ["KIT_PROJECT_ROOT"])
    overrides = [item for value in [*TINY, "train.folds=2"] for item in ("--set", value)]
    assert invoke("train", "digits", "--fold", "0", *overrides).exit_code == 0
    predicted = invoke("predict", "digits")
    assert predicted.exit_code == 0, predicted.output
    (expected,) = (project / "submissions").glob("digits-*.csv")
    result = invoke("notebook", "digits", "--local", "--set", "notebook.accelerator=cpu")
    assert result.exit_code == 0, result.output
    (run_dir,) = (project / "runs" / "digits").iterdir()
    written = run_dir / "kaggle" / "local" / "working" / "submission.csv"
    assert pd.read_csv(written, dtype=str).equals(pd.read_csv(expected, dtype=str))
    assert f"identical to `kit predict`'s {expected.name}" in result.output
    assert "time budget on Kaggle (cpu)" in result.output
    record = json.loads((run_dir / "kaggle" / rehearsal.REHEARSAL_FILE).read_text())
    assert set(record["phases"]["seconds"]) == {"unpack", "decode", "predict", "check"}
    assert record["phases"]["images"] == len(pd.read_csv(expected)) and record["phases"]["device"] == "cpu"
    assert [cell["cell"] for cell in record["cells"]][1:] == [
        "Parameters",
        "Install the packaged kit",
        "Predict the test set as `kit predict` does",
    ]
    inputs = run_dir / "kaggle" / "local" / "input"
    assert (inputs / "competitions" / "digits").is_symlink() and not (
        inputs / "datasets" / "local" / "kit-digits" / "dataset-metadata.json"
    ).exists()

    # Before a push, the budget is shown; over 80% of the limit the push is refused (nothing is asked of
    # Kaggle: no credentials are needed to refuse).
    refused = invoke(
        "notebook",
        "digits",
        "--set",
        "competition.kaggle=digits",
        "--set",
        "notebook.timeout_minutes=0.01",
        "--set",
        "notebook.accelerator=cpu",
    )
    assert refused.exit_code == 1 and "time budget on Kaggle (cpu)" in refused.output
    assert "above 80% of notebook.timeout_minutes = 0.01" in refused.output and "--force" in refused.output
    forced = invoke(
        "notebook",
        "digits",
        "--set",
        "competition.kaggle=digits",
        "--set",
        "notebook.timeout_minutes=0.01",
        "--force",
    )
    # went on past the budget, to Kaggle's credentials (none here)
    assert forced.exit_code == 1 and "is estimated at" not in forced.output
    assert "no Kaggle credentials" in forced.output
