"""Near-duplicate photos, found before they leak: within train, and between train and test.

Kaggle image sets hold re-encoded, resized, cropped and mirrored copies of one photo. A copy in another
fold than its twin makes CV optimistic; a copy in test is worth knowing about; two copies with different
labels are label noise. Each photo is hashed with imagehash's perceptual hash (a 64-bit DCT hash) from a
small decoded cache (the whole photo squished to HASH_SIDE px, made once under data/interim), with the
hashes of its mirror image and of its centre; two photos are near-duplicates when the Hamming distance
between one's hash and the other's (its mirror's, its centre's) is at most MAX_DISTANCE bits. The
threshold was measured on real photos with planted copies (docs/duplicates.md, scripts/bench_duplicates.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import imagehash
import numpy as np
import pandas as pd
from PIL import Image, ImageOps
from tqdm import tqdm

from kit.config import Config
from kit.data.images import image_cache
from kit.data.labels import LabelTable, TestTable
from kit.files import atomic_path
from kit.paths import interim_dir

HASH_SIDE = 64  # px: the perceptual hash reads a 32x32 grey square, so a larger cache adds nothing
# Bits of 64: on planted copies of real photos 6 and 8 both found every copy (recall 0.999-1.000,
# precision 0.999); on the dog-breed sample 8 also paired two different dogs on grass (train/test, at
# exactly 8 bits), 6 did not (docs/2026-12-02-duplicates.md)
MAX_DISTANCE = 6
CENTRE = 0.8  # the centre hash covers 80% of each side: a copy cropped 10% on every side matches it
ROWS_PER_CHUNK = 512  # rows of the distance matrix computed at once (512 x N bytes of uint8 distances)


def hash_images(images: np.ndarray) -> np.ndarray:
    """(N, 3) uint64 perceptual hashes of (N, S, S, 3) uint8 images: the whole photo, its mirror image and
    its centre (CENTRE of each side), which matches a copy cropped by about (1 - CENTRE) / 2 a side."""
    hashes = np.zeros((len(images), 3), dtype=np.uint64)
    for index in tqdm(range(len(images)), desc="hash", leave=False):
        image = Image.fromarray(np.asarray(images[index]))
        margin = round(image.width * (1 - CENTRE) / 2)
        centre = image.crop((margin, margin, image.width - margin, image.height - margin))
        for column, view in enumerate((image, ImageOps.mirror(image), centre)):
            hashes[index, column] = _as_integer(imagehash.phash(view))
    return hashes


def _as_integer(image_hash: imagehash.ImageHash) -> int:
    bits = image_hash.hash.flatten()
    return int(np.packbits(bits).view(">u8")[0])


WHOLE, MIRROR, CENTRE_VIEW = 0, 1, 2  # hash_images' columns
# Which hashes are compared: a copy against the original, the mirror image or the centre, and a cropped
# copy against a mirrored one (the centre of a mirror image is the mirror image of the centre).
PAIRINGS = (
    (WHOLE, WHOLE), (WHOLE, MIRROR), (WHOLE, CENTRE_VIEW), (CENTRE_VIEW, WHOLE),
    (MIRROR, CENTRE_VIEW), (CENTRE_VIEW, MIRROR),
)  # fmt: skip


def near_pairs(left: np.ndarray, right: np.ndarray, max_distance: int, same: bool) -> np.ndarray:
    """(i, j, distance) rows for every left i and right j (hashes from hash_images) within max_distance
    bits, comparing the hashes PAIRINGS names. `same`: left and right are one
    set, so only i < j is kept."""
    found = [np.zeros((0, 3), dtype=np.int64)]
    for start in range(0, len(left), ROWS_PER_CHUNK):
        chunk = left[start : start + ROWS_PER_CHUNK, None, :]
        distance = np.minimum.reduce(
            [np.bitwise_count(chunk[..., mine] ^ right[None, :, theirs]) for mine, theirs in PAIRINGS]
        )
        rows, columns = np.nonzero(distance <= max_distance)
        keep = rows + start < columns if same else np.ones(len(rows), dtype=bool)
        rows, columns = rows[keep], columns[keep]
        found.append(np.stack([rows + start, columns, distance[rows, columns]], 1).astype(np.int64))
    return np.concatenate(found)


def _hashes(config: Config, paths: list, label: str) -> np.ndarray:
    images, _ = image_cache(paths, HASH_SIDE, interim_dir(config.name), f"{label}-hash", max_aspect=0.0)
    return hash_images(images)  # an unreadable photo is a black square: it pairs only with black squares


def train_pairs(config: Config, labels: LabelTable) -> np.ndarray:
    """(i, j) rows of near-duplicate training images (i < j)."""
    hashes = _hashes(config, labels.paths, "train")
    return near_pairs(hashes, hashes, MAX_DISTANCE, same=True)[:, :2]


@dataclass(frozen=True)
class Duplicates:
    """What `kit duplicates` found: a table of pairs (kind, ids, labels, distance), written to
    data/interim/<name>/duplicates.csv for `kit report`."""

    table: pd.DataFrame
    train_images: int
    test_images: int

    def count(self, kind: str) -> int:
        return int((self.table["kind"] == kind).sum())

    def conflicts(self) -> pd.DataFrame:
        """Training pairs whose labels differ: label noise, or one photo of two classes."""
        train = self.table[self.table["kind"] == "train"]
        return train[train["label"] != train["other_label"]]


def find(config: Config, labels: LabelTable, test: TestTable | None) -> Duplicates:
    """Near-duplicate pairs within train and between train and test, written to duplicates.csv."""
    hashes = _hashes(config, labels.paths, "train")
    names = labels.task.row_labels(labels.targets, labels.classes)
    rows = []
    for left, right, distance in near_pairs(hashes, hashes, MAX_DISTANCE, same=True):
        rows.append(("train", labels.ids[left], names[left], labels.ids[right], names[right], distance))
    if test is not None and test.ids:
        test_hashes = _hashes(config, test.paths, "test")
        for left, right, distance in near_pairs(hashes, test_hashes, MAX_DISTANCE, same=False):
            rows.append(("train-test", labels.ids[left], names[left], test.ids[right], "", distance))
    columns = ["kind", "id", "label", "other_id", "other_label", "distance"]
    table = pd.DataFrame(rows, columns=columns).sort_values(["kind", "distance", "id"], kind="stable")
    path = interim_dir(config.name) / "duplicates.csv"
    with atomic_path(path) as temporary:
        table.to_csv(temporary, index=False)
    return Duplicates(table.reset_index(drop=True), len(labels.ids), len(test.ids) if test else 0)
