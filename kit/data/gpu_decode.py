"""Test images decoded on the GPU: plain JPEGs in batches by nvjpeg (`torchvision.io.decode_jpeg(list,
device="cuda")`) and squished into the cache's squares there; every other image by the CPU decoder
(kit.data.images.decode), which remains the fallback for anything the GPU path refuses.

On Kaggle's notebook machines (two CPU cores beside a T4) decoding and resizing the hidden test set, not the
forward passes, is usually the limit; nvjpeg moves the Huffman and IDCT work and the resize to the GPU.

The two paths' pixels agree within a decoder's tolerance, not bit for bit: libjpeg-turbo (Pillow and
torchvision on a CPU) and nvjpeg round their IDCTs differently, and Pillow's bicubic resize (with its
reducing_gap box pre-shrink) is not torch's antialiased bicubic. tests/test_gpu_decode.py holds the CPU
twin of this path (torchvision's decoder on the CPU, the same resize) to the kit's decoder on real photos:
mean absolute difference under 1 level of 255 per image, largest under 16. Because the pixels are not
identical, a cache made this way has a key of its own (`DECODER`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

# torch and torchvision are imported inside the functions that decode: kit.data.images imports this module,
# and commands that only read a cache (or none) start without them.

# Part of a GPU-decoded cache's key (kit.data.images.cache_key): its pixels are nvjpeg's, not Pillow's.
DECODER = "nvjpeg"
GPU_BATCH = 64  # images per decode_jpeg call: nvjpeg's batched decode amortises its launches over these
PLAIN_MODES = ("RGB", "L")  # what nvjpeg decodes as a viewer shows it (CMYK and YCCK are not)
EXIF_ORIENTATION = 0x0112  # the EXIF tag; 1 (or absent): stored upright


def choose_decoder(
    device_type: str, image_format: str | None, mode: str, colour_profile: bool, orientation: int
) -> str:
    """Where one image is decoded: "gpu" (nvjpeg) where prediction runs on a GPU ("cuda") and the file is
    a JPEG that nvjpeg decodes as a viewer shows it (RGB or grey, no embedded colour profile to convert to
    sRGB, stored upright: torchvision turns by EXIF on the CPU only); else "cpu" (kit.data.images.decode)."""
    plain = image_format == "JPEG" and mode in PLAIN_MODES and not colour_profile and orientation in (0, 1)
    return "gpu" if device_type == "cuda" and plain else "cpu"


def header(path: Path) -> tuple[str | None, str, bool, int]:
    """(format, mode, has a colour profile, EXIF orientation) from the file's header (Pillow reads no
    pixels on open); (None, "", False, 1) for a file Pillow cannot open (the CPU path then says why)."""
    try:
        with Image.open(path) as image:
            orientation = image.getexif().get(EXIF_ORIENTATION, 1) if image.format == "JPEG" else 1
            return image.format, image.mode, bool(image.info.get("icc_profile")), int(orientation)
    except Exception:  # a damaged file of any kind: the CPU decoder names the problem
        return None, "", False, 1


def decoder_for(path: Path, device_type: str) -> str:
    """`choose_decoder` for the file at `path`; without a GPU no header is read."""
    return choose_decoder(device_type, *header(path)) if device_type == "cuda" else "cpu"


def fit_square_tensor(image, side: int, max_aspect: float = 0.0):
    """kit.data.images.fit_square on a decoded (3, H, W) uint8 torch tensor, on its device: the longer side
    centre-cropped beyond `max_aspect` times the shorter (same rounding), then squished to side x side
    (antialiased bicubic, rounded to uint8); returned as (side, side, 3), as the cache holds it."""
    import torch  # heavy: imported where a GPU decodes, not by every command that reads a cache

    _, height, width = image.shape
    if max_aspect > 0:
        keep_width = min(width, round(height * max_aspect))
        keep_height = min(height, round(width * max_aspect))
        left, top = (width - keep_width) // 2, (height - keep_height) // 2
        image = image[:, top : top + keep_height, left : left + keep_width]
    resized = torch.nn.functional.interpolate(
        image.unsqueeze(0).float(), size=(side, side), mode="bicubic", align_corners=False, antialias=True
    )
    return resized[0].round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0)


def decode_batch(paths: list[Path], side: int, max_aspect: float, compute) -> np.ndarray:
    """JPEG files decoded together on `compute`, a torch.device (nvjpeg's batched decode on a GPU;
    libjpeg-turbo on a CPU, the twin the tests run), each fitted to side x side there: (len(paths), side,
    side, 3) uint8 on the host.
    Raises what decode_jpeg raises for a damaged file; the caller decodes that batch on the CPU instead."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its image decoders for TorchCodec, which Kaggle's image lacks; the
        # warning is for new code, and nvjpeg through torchvision is what runs there today
        warnings.simplefilter("ignore", DeprecationWarning)
        data = [read_file(str(path)) for path in paths]
        decoded = decode_jpeg(data, mode=ImageReadMode.RGB, device=compute)
    squares = torch.stack([fit_square_tensor(image, side, max_aspect) for image in decoded])
    return squares.cpu().numpy()
