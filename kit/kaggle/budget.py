"""A code-competition notebook's time on Kaggle, estimated before a push from what the rehearsal measured
(`kit notebook --local`): its phases scaled to the hidden test set's size and to the Kaggle machine.

Pure functions of plain values (no torch): the rehearsal's record, the target machine, the sizes.

The factors are stated and conservative (an estimate that is too high costs a look; one too low costs a
Kaggle run of up to nine hours):
- Every Kaggle notebook has 2 CPU cores; the rehearsal's kernel is held to 2 cores too (KIT_REHEARSAL_CORES),
  so decoding and a CPU's forward passes are scaled by MARGIN only (Kaggle's cores are shared and no faster).
- A T4's forward passes, against a GPU at home: the ratio of their dense fp16/bf16 tensor throughput, rounded
  up (T4_SLOWER_THAN), times MARGIN; an unknown GPU counts as the fastest listed. Against a CPU at home: no
  speed-up claimed (a T4 is faster than any CPU the kit trains on; the estimate is then an upper bound).
- "t4x2" counts as one T4 (GPUS_USED): prediction deals the folds to both GPUs, but a run of one fold, or
  of folds of unequal cost, keeps one busy longer; the estimate stays that of one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

ACCELERATORS = ("t4", "t4x2", "cpu")  # kit.config.Accelerator, less "auto"
# kernel-metadata.json's machine_shape (the official client, kaggle 2.2.5: "'NvidiaTeslaT4' for GPU T4 x2");
# a single T4 is Kaggle's default GPU (enable_gpu with no shape), a CPU notebook has no accelerator.
MACHINE_SHAPES = {"t4": "", "t4x2": "NvidiaTeslaT4", "cpu": ""}
KAGGLE_CORES = 2  # CPU cores of every Kaggle notebook, GPU or not
GPUS_USED = {"t4": 1, "t4x2": 1, "cpu": 0}  # counted for a T4 x2: one (folds split over two; see above)
MARGIN = 1.5  # Kaggle's machines are shared: disks, cores and the GPU no faster than at home, often slower
REFUSE_ABOVE = 0.8  # of notebook.timeout_minutes: a push estimated above this is refused without --force
# How many times slower a T4 (65 TFLOPS fp16 dense) runs the forward passes than these GPUs, by a fragment of
# torch.cuda.get_device_name(): their dense fp16/bf16 tensor throughput over the T4's, rounded up.
T4_SLOWER_THAN = {
    "H200": 16,
    "H100": 16,
    "A100": 5,
    "L40": 3,
    "4090": 3,
    "A10": 2,
    "L4": 2,
    "3090": 2,
    "V100": 2,
    "T4": 1,
}


@dataclass(frozen=True)
class Rehearsal:
    """What `kit notebook --local` measured, in seconds (recorded in runs/.../kaggle/rehearsal.json)."""

    images: int  # test images predicted (the public test folder)
    weight_files: int  # weight files predicting
    views: int  # TTA views per weight file
    image_scale: float  # the views' size over the last stage's (predict.image_scale)
    fixed_seconds: float  # independent of the test set: kernel start, install, unpacking, the model made
    decode_seconds: float  # decoding the test images once into the cache every weight file and view reads
    predict_seconds: float  # the forward passes (weight files x views x images), calibration, the CSV
    device: str  # "cpu", or the GPU's name (torch.cuda.get_device_name)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Budget:
    """An estimate of a notebook's minutes on a Kaggle machine, by phase."""

    accelerator: str
    images: int
    fixed_minutes: float
    decode_minutes: float
    predict_minutes: float

    @property
    def minutes(self) -> float:
        return self.fixed_minutes + self.decode_minutes + self.predict_minutes


def default_accelerator(setting: str, gpu: bool) -> str:
    """notebook.accelerator made concrete: "auto" is t4x2 where the notebook may use a GPU (notebook.gpu,
    --gpu/--no-gpu), else cpu; a GPU accelerator with --no-gpu is cpu."""
    if setting == "auto":
        return "t4x2" if gpu else "cpu"
    return setting if gpu or setting == "cpu" else "cpu"


def forward_factor(home_device: str, accelerator: str) -> float:
    """How many times longer Kaggle's `accelerator` takes for the forward passes than `home_device` did."""
    home_is_gpu = home_device != "cpu"
    if accelerator == "cpu" or GPUS_USED[accelerator] == 0:
        if home_is_gpu:
            # A 2-core CPU against a GPU: no stated ratio holds; rehearse with the CPU target instead.
            return math.inf
        return MARGIN
    if not home_is_gpu:
        return MARGIN  # no speed-up claimed for the T4 over the CPU at home: an upper bound
    slower = next(
        (ratio for fragment, ratio in T4_SLOWER_THAN.items() if fragment.lower() in home_device.lower()),
        max(T4_SLOWER_THAN.values()),
    )
    return slower / GPUS_USED[accelerator] * MARGIN


def estimate(rehearsal: Rehearsal, accelerator: str, hidden_images: int) -> Budget:
    """The notebook's minutes on `accelerator` for `hidden_images` test images (0: the rehearsal's count):
    decoding and forward passes scale with the images, the fixed part does not."""
    images = hidden_images or rehearsal.images
    per_image = images / max(rehearsal.images, 1)
    return Budget(
        accelerator=accelerator,
        images=images,
        fixed_minutes=rehearsal.fixed_seconds * MARGIN / 60,
        decode_minutes=rehearsal.decode_seconds * per_image * MARGIN / 60,
        predict_minutes=rehearsal.predict_seconds
        * per_image
        * forward_factor(rehearsal.device, accelerator)
        / 60,
    )


def over_budget(budget: Budget, timeout_minutes: float) -> bool:
    """Whether the estimate passes REFUSE_ABOVE of the notebook's time limit (infinite: unknown, too)."""
    return not budget.minutes <= REFUSE_ABOVE * timeout_minutes


def biggest_cut(rehearsal: Rehearsal, budget: Budget) -> tuple[str, float]:
    """The knob that cuts the estimate most, in words, and the minutes it saves: half the TTA views, half the
    weight files (both cut the forward passes in proportion), or the views at the training size (forward
    passes scale with the pixels: image_scale squared); decoding is cut by none of them."""
    predict = budget.predict_minutes
    cuts = []
    if rehearsal.views > 1:
        kept = math.ceil(rehearsal.views / 2)
        cuts.append(
            (
                f"{kept} TTA views instead of {rehearsal.views} (predict.tta)",
                predict * (1 - kept / rehearsal.views),
            )
        )
    if rehearsal.weight_files > 1:
        kept = math.ceil(rehearsal.weight_files / 2)
        saved = predict * (1 - kept / rehearsal.weight_files)
        cuts.append(
            (
                f"{kept} weight files instead of {rehearsal.weight_files} (predict.snapshot_ensemble, "
                "fewer folds)",
                saved,
            )
        )
    if rehearsal.image_scale > 1:
        saved = predict * (1 - 1 / rehearsal.image_scale**2)
        cuts.append(
            (f"views at the training size (predict.image_scale = 1, not {rehearsal.image_scale:g})", saved)
        )
    if not cuts:
        smaller = 0.875
        cuts.append(
            (
                f"views {smaller:g} of the training size (predict.image_scale = {smaller:g})",
                predict * (1 - smaller**2),
            )
        )
    return max(cuts, key=lambda cut: cut[1])


def budget_lines(
    rehearsal: Rehearsal, accelerator: str, hidden_images: int, timeout_minutes: float
) -> list[str]:
    """The estimate in words: total against the limit, its phases, the factor used, and the biggest cut."""
    budget = estimate(rehearsal, accelerator, hidden_images)
    share = budget.minutes / timeout_minutes
    source = "notebook.hidden_test_images" if hidden_images else "the public test count"
    lines = [
        f"time budget on Kaggle ({accelerator}): {budget.minutes:.1f} min of notebook.timeout_minutes = "
        f"{timeout_minutes:g} ({share:.0%}; pushes above {REFUSE_ABOVE:.0%} are refused without --force)",
        f"  {budget.images} test images ({source}): fixed {budget.fixed_minutes:.1f} min, decoding "
        f"{budget.decode_minutes:.1f} min ({KAGGLE_CORES} cores), forward passes "
        f"{budget.predict_minutes:.1f} min "
        f"(x{forward_factor(rehearsal.device, accelerator):g} of {rehearsal.device} here)",
    ]
    if math.isinf(budget.minutes):
        lines.append(
            "  a CPU notebook's forward passes cannot be scaled from a GPU: rehearse with "
            "--set notebook.accelerator=cpu (the kernel then runs on this machine's CPU)"
        )
        return lines
    knob, saved = biggest_cut(rehearsal, budget)
    if budget.decode_minutes > budget.predict_minutes:
        lines.append(
            f"  decoding takes longest: only fewer or smaller test images cut it; of the forward passes, "
            f"{knob} saves {saved:.1f} min"
        )
    else:
        lines.append(f"  the biggest cut: {knob} saves {saved:.1f} min")
    return lines
