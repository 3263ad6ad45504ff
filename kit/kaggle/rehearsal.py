"""`kit notebook --local`: the code-competition notebook rehearsed here before a push spends Kaggle's quota.

The package is built as for Kaggle and laid out in a folder as Kaggle mounts its inputs (LAYOUTS), the
notebook is executed with nbclient in a fresh kernel whose network is off (sitecustomize.py below: every
internet socket refused, as on Kaggle with the internet off) and which runs on KAGGLE_CORES cores, and each
phase is timed: the kernel's cells (nbclient's timestamps) and, inside the prediction, the phases that
kit.kaggle.package.predict_in_notebook records (unpacking, decoding, forward passes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from datetime import datetime
from pathlib import Path

from kit import paths
from kit.config import Config
from kit.errors import KitError
from kit.files import read_json, write_json
from kit.kaggle import notebook as notebook_writer
from kit.kaggle import package
from kit.kaggle.budget import KAGGLE_CORES
from kit.kaggle.package import DATASET_METADATA, SUBMISSION_FILE, TIMINGS_FILE
from kit.run import Summary

LOCAL_OWNER = "local"  # the dataset's owner in a rehearsal (no Kaggle account is asked for)
REHEARSAL_FILE = "rehearsal.json"  # in runs/<name>/<run>/kaggle/: what the last rehearsal measured
# How Kaggle mounts a notebook's inputs under /kaggle/input: the competition and the dataset side by side
# ("flat", the long-standing one), or under competitions/ and datasets/<owner>/ (the newer one).
LAYOUTS = ("flat", "nested")
CORES_VARIABLE = "KIT_REHEARSAL_CORES"  # read by the kernel's sitecustomize: the cores it may run on

# Imported first by every Python process of the kernel (PYTHONPATH): the network off as on Kaggle, at the
# level of Python's sockets (what pip, requests, urllib and torch.hub use); local (Unix) sockets still work.
SITECUSTOMIZE = '''"""Written by kit notebook --local: this kernel has no network (as on Kaggle with the
internet off) and runs on as many cores as a Kaggle notebook."""
import os
import socket

_MESSAGE = "the network is off in kit notebook --local, as on Kaggle with the internet off"
_INTERNET = (socket.AF_INET, socket.AF_INET6)


def _refuse(*args, **kwargs):
    raise OSError(101, _MESSAGE)


def _connect(self, address, _original=socket.socket.connect):
    if self.family in _INTERNET:
        _refuse()
    return _original(self, address)


def _connect_ex(self, address, _original=socket.socket.connect_ex):
    if self.family in _INTERNET:
        return 101  # ENETUNREACH
    return _original(self, address)


def _sendto(self, *args, _original=socket.socket.sendto):
    if self.family in _INTERNET:
        _refuse()
    return _original(self, *args)


socket.socket.connect = _connect
socket.socket.connect_ex = _connect_ex
socket.socket.sendto = _sendto
socket.getaddrinfo = _refuse
socket.gethostbyname = _refuse
socket.create_connection = _refuse

_cores = os.environ.get("KIT_REHEARSAL_CORES")
if _cores and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: int(_cores)])
'''


def lay_out(inputs: Path, layout: str, competition_raw: Path, slug: str, dataset_id: str) -> Path:
    """`inputs` (a stand-in for /kaggle/input) emptied and laid out as `layout`: the competition's files
    (a link to data/raw/<name>, which nothing writes to) and an empty folder for the package, returned."""
    if inputs.exists():
        shutil.rmtree(inputs)
    owner, dataset = dataset_id.split("/")
    if layout == "flat":
        competition, package = inputs / slug, inputs / dataset
    else:
        competition, package = inputs / "competitions" / slug, inputs / "datasets" / owner / dataset
    competition.parent.mkdir(parents=True, exist_ok=True)
    competition.symlink_to(competition_raw.resolve(), target_is_directory=True)
    package.parent.mkdir(parents=True, exist_ok=True)
    return package


def kernel_environment(base: Path, inputs: Path, working: Path, scratch: Path, gpu: bool) -> dict[str, str]:
    """The kernel's environment: this one without the project root, Kaggle credentials or another
    PYTHONPATH, the notebook's parameters pointed at the rehearsal's folders, the network off
    (sitecustomize.py first on PYTHONPATH), pip without an index, KAGGLE_CORES cores, no GPU unless `gpu`."""
    offline = base / "offline"
    offline.mkdir(parents=True, exist_ok=True)
    (offline / "sitecustomize.py").write_text(SITECUSTOMIZE)
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "KIT_PROJECT_ROOT") and not key.startswith("KAGGLE")
    }
    environment.update(
        KIT_NOTEBOOK_DATA_ROOT=str(inputs),
        KIT_NOTEBOOK_WORK_ROOT=str(working),
        KIT_NOTEBOOK_SCRATCH=str(scratch),
        PYTHONPATH=str(offline),
        PIP_NO_INDEX="1",
        OMP_NUM_THREADS=str(KAGGLE_CORES),  # torch's threads: Kaggle's cores
        **{CORES_VARIABLE: str(KAGGLE_CORES)},
    )
    if not gpu:
        environment["CUDA_VISIBLE_DEVICES"] = ""
    return environment


def execute(notebook_path: Path, environment: dict[str, str], timeout_seconds: float) -> list[dict]:
    """Run the notebook in a fresh kernel with `environment`; the executed notebook is saved beside it
    (executed.ipynb). Returns each code cell's first line and seconds (nbclient's timestamps)."""
    import nbformat  # heavy (jsonschema)

    try:
        from nbclient import NotebookClient  # heavy (jupyter_client, zmq)
    except ImportError as missing:
        fix = "pip install -e '.[rehearsal]'"
        raise KitError(f"kit notebook --local needs nbclient and ipykernel ({missing}): {fix}") from missing
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(str(notebook_path), as_version=4)
    client = NotebookClient(
        notebook,
        timeout=int(timeout_seconds),
        kernel_name="python3",
        resources={"metadata": {"path": str(notebook_path.parent)}},
    )
    started = time.perf_counter()
    try:
        client.execute(env=environment)  # kernel started with `environment`, every cell run, kernel shut down
    except CellExecutionError as error:
        raise KitError(
            f"the notebook failed in the rehearsal: {error.ename}: {error.evalue} (every cell's output in "
            f"{notebook_path.with_name('executed.ipynb')}); nothing was pushed"
        ) from None
    finally:
        nbformat.write(notebook, str(notebook_path.with_name("executed.ipynb")))
    elapsed = time.perf_counter() - started
    cells = []
    for cell in notebook.cells:
        timing = cell.get("metadata", {}).get("execution", {})
        if cell.cell_type != "code" or "iopub.execute_input" not in timing:
            continue
        began = datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
        ended = datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
        first_line = cell.source.splitlines()[0].lstrip("# ") if cell.source else ""
        name = re.split(r"[:(,;]", first_line)[0].strip()  # the comment's first clause names the cell
        cells.append({"cell": name, "seconds": round((ended - began).total_seconds(), 2)})
    cells.insert(
        0, {"cell": "kernel start and stop", "seconds": round(elapsed - sum(c["seconds"] for c in cells), 2)}
    )
    return cells


def record(run_dir: Path, cells: list[dict], working: Path, built_seconds: float, layout: str) -> dict:
    """The rehearsal's record (runs/<name>/<run>/kaggle/rehearsal.json): the cells, the prediction's
    phases, and the split a budget needs (fixed, decoding, forward passes)."""
    phases = read_json(working / TIMINGS_FILE)
    total = sum(cell["seconds"] for cell in cells)
    decode, predict = phases["seconds"]["decode"], phases["seconds"]["predict"]
    rehearsal = {
        "layout": layout,
        "package_seconds": round(built_seconds, 2),
        "cells": cells,
        "phases": phases,
        "submission": str(working / SUBMISSION_FILE),
        "budget": {
            "images": phases["images"],
            "weight_files": phases["weight_files"],
            "views": phases["views"],
            "image_scale": phases["image_scale"],
            "fixed_seconds": round(max(total - decode - predict, 0.0), 2),
            "decode_seconds": decode,
            "predict_seconds": predict,
            "device": phases["device"],
        },
    }
    write_json(run_dir / "kaggle" / REHEARSAL_FILE, rehearsal)
    return rehearsal


def read_rehearsal(run_dir: Path) -> dict | None:
    """The last rehearsal of a run, or None."""
    path = run_dir / "kaggle" / REHEARSAL_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def drop_client_metadata(package_folder: Path) -> None:
    """The client reads dataset-metadata.json and does not upload it: not in the mounted dataset either."""
    (package_folder / DATASET_METADATA).unlink(missing_ok=True)


def rehearse(
    config: Config, run_dir: Path, summary: Summary, slug: str, gpu: bool, layout: str = "nested"
) -> dict:
    """Build the run's package and notebook as `kit notebook` pushes them, lay them out under
    runs/<name>/<run>/kaggle/local/input as Kaggle mounts them (`layout`), execute the notebook offline on
    KAGGLE_CORES cores (no GPU unless `gpu`), and record what each phase took (REHEARSAL_FILE).

    The working and scratch folders start empty, as on Kaggle: the decoded test cache is built in the run."""
    base = run_dir / "kaggle" / "local"
    dataset_id = f"{LOCAL_OWNER}/{package.dataset_slug(config.name)}"
    started = time.perf_counter()
    inputs = base / "input"
    folder = lay_out(inputs, layout, paths.raw_dir(config.name), slug, dataset_id)
    built = package.build(config, run_dir, summary, dataset_id, folder, None if gpu else "cpu")
    drop_client_metadata(folder)
    notebook_path, _ = notebook_writer.write_kernel(
        base / "kernel", built.manifest, LOCAL_OWNER, dataset_id, slug, gpu
    )
    built_seconds = time.perf_counter() - started
    working, scratch = base / "working", base / "tmp"
    for folder_path in (working, scratch):
        if folder_path.exists():
            shutil.rmtree(folder_path)
    environment = kernel_environment(base, inputs, working, scratch, gpu)
    cells = execute(notebook_path, environment, config.notebook.timeout_minutes * 60)
    return {**record(run_dir, cells, working, built_seconds, layout), "package_bytes": built.size_bytes}


def largest_difference(first: Path, second: Path) -> float:
    """The largest absolute difference between two submission files' values (0: identical; infinite where
    their columns, ids or labels differ)."""
    import numpy as np  # heavy
    import pandas as pd  # heavy

    one, other = pd.read_csv(first, dtype=str), pd.read_csv(second, dtype=str)
    if list(one.columns) != list(other.columns) or list(one.iloc[:, 0]) != list(other.iloc[:, 0]):
        return float("inf")
    values = one.columns[1:]
    try:
        left = one[values].astype(float).to_numpy()
        right = other[values].astype(float).to_numpy()
    except ValueError:  # labels: equal or not
        return 0.0 if one.equals(other) else float("inf")
    return float(np.abs(left - right).max()) if left.size else 0.0
