"""Near-duplicate search measured on real photos with planted copies: precision, recall, time.

From a folder of real photos (default: /work/shared/data/dog-breed-identification-sample/train, only
read), SOURCES photos each get four copies written to a temporary folder: re-encoded at JPEG quality
40, resized to half, mirrored, cropped by 10% on every side (then saved at quality 90); the other photos
are kept as they are (distinct). Every pair among a source and its copies is a true pair (10 per source).
kit.data.duplicates then decodes the set into its small cache, hashes it and searches it; precision and
recall are printed per threshold (in bits of 64) and per kind of copy, with the time of each step per
1,000 photos and the machine's load.

    nice .venv/bin/python scripts/bench_duplicates.py [--photos DIR] [--sources 100]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from kit.data import duplicates
from kit.data.images import image_cache

COPIES = {
    "jpeg-q40": lambda image: (image, 40),
    "half-size": lambda image: (image.resize((max(1, image.width // 2), max(1, image.height // 2))), 90),
    "mirrored": lambda image: (ImageOps.mirror(image), 90),
    "cropped-10%": lambda image: (
        image.crop((image.width // 10, image.height // 10, image.width * 9 // 10, image.height * 9 // 10)),
        90,
    ),
}


def planted_set(photos: list[Path], sources: int, folder: Path, seed: int) -> tuple[list[Path], list, list]:
    """Paths of the set, each path's source index (-1: a distinct photo) and its kind of copy."""
    chosen = set(np.random.default_rng(seed).choice(len(photos), sources, replace=False).tolist())
    paths, source_of, kind_of = [], [], []
    for index, photo in enumerate(photos):
        paths.append(photo)
        source_of.append(index if index in chosen else -1)
        kind_of.append("original")
        if index not in chosen:
            continue
        image = ImageOps.exif_transpose(Image.open(photo)).convert("RGB")
        for kind, make in COPIES.items():
            copy, quality = make(image)
            target = folder / f"{photo.stem}-{kind}.jpg"
            copy.save(target, quality=quality)
            paths.append(target)
            source_of.append(index)
            kind_of.append(kind)
    return paths, source_of, kind_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--photos", type=Path, default=Path("/work/shared/data/dog-breed-identification-sample/train")
    )
    parser.add_argument("--sources", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    photos = sorted(arguments.photos.glob("*.jpg"))
    with tempfile.TemporaryDirectory(prefix="bench-duplicates-") as temporary:
        folder = Path(temporary)
        paths, source_of, kind_of = planted_set(photos, arguments.sources, folder, arguments.seed)
        count = len(paths)
        started = time.perf_counter(), time.process_time()
        images, _ = image_cache(paths, duplicates.HASH_SIDE, folder / "cache", "bench-hash", max_aspect=0.0)
        decoded = time.perf_counter(), time.process_time()
        hashes = duplicates.hash_images(images)
        hashed = time.perf_counter(), time.process_time()
        found = duplicates.near_pairs(hashes, hashes, 32, same=True)
        searched = time.perf_counter(), time.process_time()
    source_of, wrong = np.array(source_of), []
    truth = {
        (left, right)
        for source in set(source_of[source_of >= 0].tolist())
        for left, right in combinations(np.flatnonzero(source_of == source).tolist(), 2)
    }
    print(f"{count} photos ({len(photos)} real from {arguments.photos}, {arguments.sources} with 4 copies)")
    print(
        f"{len(truth)} true pairs; machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    for step, (before, after) in {
        "decode to cache": (started, decoded),
        "hash": (decoded, hashed),
        "search": (hashed, searched),
    }.items():
        wall, cpu = after[0] - before[0], after[1] - before[1]
        per_thousand = f"{1000 * wall / count:6.2f} s wall, {1000 * cpu / count:6.2f} s CPU"
        print(f"  {step:<16} {per_thousand} per 1,000 photos")
    print("threshold  found  precision  recall   " + "  ".join(f"{kind:>11}" for kind in COPIES))
    for threshold in (4, 6, 8, 10, 12, 14, 16, 20):
        pairs = {(int(a), int(b)) for a, b, distance in found if distance <= threshold}
        hits = pairs & truth
        precision = len(hits) / len(pairs) if pairs else 1.0
        recall = len(hits) / len(truth)
        per_kind = []
        for kind in COPIES:  # a copy found paired with its original
            wanted = {pair for pair in truth if {kind_of[pair[0]], kind_of[pair[1]]} == {"original", kind}}
            per_kind.append(f"{len(wanted & pairs) / len(wanted):11.2f}")
        print(f"{threshold:>9}  {len(pairs):>5}  {precision:9.3f}  {recall:6.3f}   " + "  ".join(per_kind))
        if threshold == duplicates.MAX_DISTANCE:
            wrong = sorted(pairs - truth)
    for left, right in wrong:  # found at the kit's threshold, not planted: look at them
        print(f"not planted, found at {duplicates.MAX_DISTANCE} bits: {paths[left].name} {paths[right].name}")


if __name__ == "__main__":
    main()
