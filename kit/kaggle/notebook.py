"""The Kaggle notebook that enters a code competition with a packaged run, written with nbformat, and the
kernel folder (`kernel-metadata.json` beside it) that the official client pushes.

The notebook installs the packaged kit wheel with `pip --no-index --no-deps` (Kaggle's image already holds
torch, timm, albumentations, pandas and scikit-learn; the internet is off), then calls
kit.kaggle.package.predict_in_notebook. Its inputs are parameters read from the environment with Kaggle's
paths as defaults, so the very same file runs locally on a simulated /kaggle/input tree.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat import v4

from kit.files import atomic_path, write_json
from kit.kaggle.budget import MACHINE_SHAPES
from kit.kaggle.package import MANIFEST

KERNEL_METADATA = "kernel-metadata.json"  # the official client's metadata file for a kernel folder
NOTEBOOK_FILE = "predict.ipynb"

PARAMETERS = """# Parameters: Kaggle's paths by default; a test points them at a simulated /kaggle/input tree.
import os

DATA_ROOT = os.environ.get("KIT_NOTEBOOK_DATA_ROOT", "/kaggle/input")  # the competition and the package
WORK_ROOT = os.environ.get("KIT_NOTEBOOK_WORK_ROOT", "/kaggle/working")  # submission.csv goes here
SCRATCH = os.environ.get("KIT_NOTEBOOK_SCRATCH", "/tmp/kit")  # the kit, caches, the run's predictions
DATASET = {dataset!r}  # the packaged run (a private Kaggle dataset)
COMPETITION = {slug!r}  # the competition's slug: its files are an input of this notebook"""

INSTALL = f"""# Install the packaged kit (no index, no dependencies: the internet is off, the image has them),
# into its own folder, first on sys.path, so that no other copy of the kit can be imported.
import json
import subprocess
import sys
from pathlib import Path

manifests = [
    path
    for depth in (1, 2, 3)
    for path in sorted(Path(DATA_ROOT).glob("/".join(["*"] * depth) + "/{MANIFEST}"))
    if json.loads(path.read_text()).get("dataset") == DATASET
]
if not manifests:
    raise FileNotFoundError(f"no {MANIFEST} of {{DATASET}} under {{DATA_ROOT}}: add the dataset as an input")
package = manifests[0].parent
manifest = json.loads(manifests[0].read_text())
wheels = [str(package / name) for name in [manifest["wheel"], *manifest.get("wheels", [])]]  # + onnxruntime
target = Path(SCRATCH) / "site"
subprocess.run(
    [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--upgrade",
     "--target", str(target), *wheels],
    check=True,
)
sys.path.insert(0, str(target))
import kit

print("kit from", kit.__file__)"""

PREDICT = """# Predict the test set as `kit predict` does, with the packaged weights and calibration; write
# submission.csv and check it against the competition's sample submission.
from kit.kaggle.package import predict_in_notebook

submission_path = predict_in_notebook(DATA_ROOT, DATASET, COMPETITION, WORK_ROOT, SCRATCH)
print("wrote", submission_path)"""


def kernel_slug(name: str) -> str:
    return f"kit-{name}-predict".replace("_", "-")


def build_notebook(manifest: dict, dataset_id: str, slug: str) -> nbformat.NotebookNode:
    """The notebook: a title, the parameters, the install, the prediction."""
    title = (
        f"# kit: {manifest['competition']}, run {manifest['run']}\n\n"
        f"Predicts the test set of `{slug}` with the run packaged in the dataset `{dataset_id}` "
        f"(CV {manifest['metric']} {manifest['cv']:.4f}; kit commit {manifest['wheel_commit']}). "
        "Written by `kit notebook`; the internet stays off."
    )
    notebook = v4.new_notebook(
        cells=[
            v4.new_markdown_cell(title),
            v4.new_code_cell(
                PARAMETERS.format(dataset=dataset_id, slug=slug), metadata={"tags": ["parameters"]}
            ),
            v4.new_code_cell(INSTALL),
            v4.new_code_cell(PREDICT),
        ],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
    )
    nbformat.validate(notebook)
    return notebook


def write_kernel(
    folder: Path, manifest: dict, owner: str, dataset_id: str, slug: str, gpu: bool, accelerator: str = ""
) -> tuple[Path, dict]:
    """The kernel folder: the notebook and kernel-metadata.json (private, internet off, both sources).

    `accelerator` (kit.kaggle.budget.ACCELERATORS) names the machine: written as `machine_shape`, the field
    the official client sends as the session's accelerator, where it has one ("t4x2"); "cpu" turns the
    GPU off."""
    gpu = gpu and accelerator != "cpu"
    name = kernel_slug(manifest["competition"])
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / NOTEBOOK_FILE) as temporary:
        nbformat.write(build_notebook(manifest, dataset_id, slug), str(temporary))
    metadata = {
        "id": f"{owner}/{name}",
        "title": name.replace("-", " "),
        "code_file": NOTEBOOK_FILE,
        "language": "python",
        "kernel_type": "notebook",
        "is_private": True,
        "enable_gpu": gpu,
        "enable_tpu": False,
        "enable_internet": False,
        "dataset_sources": [dataset_id],
        "competition_sources": [slug],
        "kernel_sources": [],
        "model_sources": [],
    }
    if gpu and MACHINE_SHAPES.get(accelerator):
        metadata["machine_shape"] = MACHINE_SHAPES[accelerator]
    write_json(folder / KERNEL_METADATA, metadata)
    return folder / NOTEBOOK_FILE, metadata
