"""Decode once: every image resized to one square size into a uint8 array file under data/interim.

Decoding a JPEG costs more than a small model's forward pass, so training and prediction read these
arrays (memory-mapped) instead of the image files. A cache is keyed by the image size and by each
source file's name, size and modification time: change a file and the cache is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from kit.files import atomic_path


def decode(path: Path, image_size: int) -> np.ndarray:
    """One image as (image_size, image_size, 3) uint8: shorter side resized to image_size, centre crop."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        width, height = image.size
        scale = image_size / min(width, height)
        new_width, new_height = max(image_size, round(width * scale)), max(image_size, round(height * scale))
        image = image.resize((new_width, new_height), Image.Resampling.BICUBIC)
        left, top = (new_width - image_size) // 2, (new_height - image_size) // 2
        image = image.crop((left, top, left + image_size, top + image_size))
        return np.asarray(image, dtype=np.uint8)


def cache_key(paths: list[Path], image_size: int) -> str:
    digest = hashlib.sha1(str(image_size).encode())
    for path in paths:
        try:
            stat = path.stat()
            digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path.name}\0missing\n".encode())
    return digest.hexdigest()[:16]


def _decode_or_none(path: Path, image_size: int) -> tuple[np.ndarray | None, str]:
    """The image, or why not in a few words ('missing', 'unreadable: ...'): reports list many of these."""
    try:
        return decode(path, image_size), ""
    except FileNotFoundError:
        return None, "missing"
    except UnidentifiedImageError:  # its message repeats the path
        return None, "unreadable: empty file" if path.stat().st_size == 0 else "unreadable: not an image file"
    except Exception as error:  # PIL raises many types for corrupt or truncated files
        return None, f"unreadable: {type(error).__name__}: {error}".replace("\n", " ")


def image_cache(
    paths: list[Path], image_size: int, cache_dir: Path, label: str = "images"
) -> tuple[np.ndarray, dict[str, str]]:
    """The images as a read-only (N, S, S, 3) uint8 memmap, plus {path: problem} for bad images.

    Bad images (missing, corrupt, zero-byte) become black squares in the array and are listed, so
    callers decide: skip a few training images, or refuse to predict a test set.
    """
    key = cache_key(paths, image_size)
    array_path = cache_dir / f"{label}-{image_size}px-{key}.npy"
    report_path = array_path.with_suffix(".bad.json")
    if array_path.exists() and report_path.exists():
        return np.load(array_path, mmap_mode="r"), json.loads(report_path.read_text())
    cache_dir.mkdir(parents=True, exist_ok=True)
    problems: dict[str, str] = {}
    with atomic_path(array_path) as temporary:
        array = np.lib.format.open_memmap(
            temporary, mode="w+", dtype=np.uint8, shape=(len(paths), image_size, image_size, 3)
        )
        workers = min(32, os.cpu_count() or 1)
        with ThreadPoolExecutor(workers) as pool:  # PIL releases the GIL while decoding and resizing
            results = pool.map(lambda p: _decode_or_none(p, image_size), paths, chunksize=16)
            for index, (image, problem) in enumerate(
                tqdm(results, total=len(paths), desc=f"cache {label} {image_size}px", leave=False)
            ):
                if image is None:
                    problems[str(paths[index])] = problem
                    array[index] = 0
                else:
                    array[index] = image
        array.flush()
        del array
    with atomic_path(report_path) as temporary:
        temporary.write_text(json.dumps(problems, indent=1))
    return np.load(array_path, mmap_mode="r"), problems
