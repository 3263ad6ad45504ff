"""Test-time augmentation: the views of a batch that do not change what the picture shows, by preset.

Each view is a function of a normalised NCHW batch on the device, so TTA costs no extra decoding.
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


def _corner(batch: torch.Tensor, corner: int, fraction: float = 0.9) -> torch.Tensor:
    """A crop of `fraction` of the side from one corner, resized back to full size."""
    size = batch.shape[-1]
    crop = round(size * fraction)
    top = 0 if corner in (0, 1) else size - crop
    left = 0 if corner in (0, 2) else size - crop
    part = batch[..., top : top + crop, left : left + crop]
    return functional.interpolate(part, size=(size, size), mode="bilinear", align_corners=False)


def _shift(batch: torch.Tensor, down: float, right: float) -> torch.Tensor:
    """The picture moved by a fraction of its side, the uncovered border filled with its edge pixels."""
    size = batch.shape[-1]
    pad = max(1, round(size * max(abs(down), abs(right))))
    padded = functional.pad(batch, (pad, pad, pad, pad), mode="replicate")
    top, left = pad - round(size * down), pad - round(size * right)
    return padded[..., top : top + size, left : left + size]


def _hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(3)


# Views that do not change what the picture shows, by augmentation preset. Photos (side_on) may be
# mirrored and cropped; satellite tiles (top_down) turned; "none" (digits, text) only moved a little
# and zoomed a little, as its training augmentation does: a mirrored 2 is not a 2.
TTA_VIEWS: dict[str, list[View]] = {
    "side_on": [_hflip, _zoom, lambda x: _zoom(_hflip(x)), lambda x: _corner(x, 0), lambda x: _corner(x, 3)],
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


def tta_views(preset: str, count: int) -> list[View]:
    """The plain view plus `count` augmented ones."""
    extra = TTA_VIEWS.get(preset, TTA_VIEWS["none"])
    return [lambda x: x] + [extra[index % len(extra)] for index in range(count)]
