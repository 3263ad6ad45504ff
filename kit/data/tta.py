"""Test-time augmentation: the views of a batch that do not change what the picture shows, by preset.

Each view is a function of a normalised NCHW batch on the device, so TTA costs no extra decoding. Views
see the cached whole photo (a little larger than the model's input) and may return any size: the caller
resizes each to the model's input size. For photos they cover the whole picture: the plain view is all
of it, the others its left, right, top and bottom parts and their mirror images (what a centre crop
would have cut off).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional

View = Callable[[torch.Tensor], torch.Tensor]


def _zoom(batch: torch.Tensor, factor: float = 1.15) -> torch.Tensor:
    """A slightly larger size, centre-cropped back: the lesson's 'zoom in a little' view."""
    size = batch.shape[-1]
    larger = functional.interpolate(batch, scale_factor=factor, mode="bilinear", align_corners=False)
    offset = (larger.shape[-1] - size) // 2
    return larger[..., offset : offset + size, offset : offset + size]


def _shift(batch: torch.Tensor, down: float, right: float) -> torch.Tensor:
    """The picture moved by a fraction of its side, the uncovered border filled with its edge pixels."""
    size = batch.shape[-1]
    pad = max(1, round(size * max(abs(down), abs(right))))
    padded = functional.pad(batch, (pad, pad, pad, pad), mode="replicate")
    top, left = pad - round(size * down), pad - round(size * right)
    return padded[..., top : top + size, left : left + size]


def _hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(3)


def _part(batch: torch.Tensor, side: str, fraction: float = 0.8) -> torch.Tensor:
    """The left, right, top or bottom `fraction` of the picture (the full extent the other way)."""
    height, width = batch.shape[-2:]
    keep_height, keep_width = round(height * fraction), round(width * fraction)
    if side == "left":
        return batch[..., :, :keep_width]
    if side == "right":
        return batch[..., :, width - keep_width :]
    if side == "top":
        return batch[..., :keep_height, :]
    return batch[..., height - keep_height :, :]


# Views that do not change what the picture shows, by augmentation preset. Photos (side_on) may be
# mirrored and cropped; satellite tiles (top_down) turned; "none" (digits, text) only moved a little
# and zoomed a little, as its training augmentation does: a mirrored 2 is not a 2.
TTA_VIEWS: dict[str, list[View]] = {
    "side_on": [
        _hflip,
        lambda x: _part(x, "left"),
        lambda x: _part(x, "right"),
        lambda x: _part(_hflip(x), "left"),  # the mirror image of the right part
        lambda x: _part(_hflip(x), "right"),
        lambda x: _part(x, "top"),
        lambda x: _part(x, "bottom"),
        _zoom,
    ],
    "top_down": [
        _hflip,
        lambda x: x.flip(2),
        lambda x: x.rot90(1, (2, 3)),
        _zoom,
        lambda x: x.rot90(3, (2, 3)),
    ],
    "none": [
        lambda x: _shift(x, 0.05, 0.05),
        lambda x: _shift(x, -0.05, -0.05),
        lambda x: _shift(x, 0.05, -0.05),
        lambda x: _shift(x, -0.05, 0.05),
        lambda x: _zoom(x, 1.06),
    ],
}


# Presets whose first extra view is the mirror image: prediction always averages it with the plain view
# (kit.predict.selection's fewest_views), whatever a small fold's OOF says.
MIRROR_FIRST = ("side_on", "top_down")


VIEW_NAMES: dict[str, list[str]] = {
    "side_on": ["flip", "left", "right", "flip-left", "flip-right", "top", "bottom", "zoom"],
    "top_down": ["flip", "vflip", "rot90", "zoom", "rot270"],
    "none": ["shift-dr", "shift-ul", "shift-dl", "shift-ur", "zoom"],
}


def tta_views(preset: str, count: int) -> list[View]:
    """The plain view plus `count` augmented ones."""
    extra = TTA_VIEWS.get(preset, TTA_VIEWS["none"])
    return [lambda x: x] + [extra[index % len(extra)] for index in range(count)]


def view_names(preset: str, count: int) -> list[str]:
    """Names of `tta_views(preset, count)`, for progress bars and records."""
    extra = VIEW_NAMES.get(preset, VIEW_NAMES["none"])
    return ["plain"] + [extra[index % len(extra)] for index in range(count)]
