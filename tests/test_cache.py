"""The decoded-image cache: exact pixels, reused, rebuilt when a source changes, bad files reported."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kit.data import images as image_cache_module


def random_pixels(seed: int, height: int = 32, width: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def images(tmp_path) -> tuple[list[Path], list[np.ndarray]]:
    pixels = [random_pixels(seed) for seed in range(5)]
    paths = [write_png(tmp_path / "train" / f"{index}.png", image) for index, image in enumerate(pixels)]
    return paths, pixels


@pytest.fixture
def decode_count(monkeypatch) -> list[Path]:
    """The paths kit.data.images decodes, in a list that grows with every decode."""
    decoded: list[Path] = []
    original = image_cache_module.decode

    def counting(path, *arguments):
        decoded.append(path)
        return original(path, *arguments)

    monkeypatch.setattr(image_cache_module, "decode", counting)
    return decoded


def test_cache_round_trips_pixels_exactly(tmp_path, images):
    paths, pixels = images
    array, problems = image_cache_module.image_cache(paths, 32, tmp_path / "interim", "train")
    assert problems == {}
    assert array.shape == (5, 32, 32, 3) and array.dtype == np.uint8
    for index, image in enumerate(pixels):
        assert np.array_equal(array[index], image)
    assert not array.flags.writeable  # a read-only memory map: nobody edits the cache by accident


def test_decode_keeps_the_whole_photo(tmp_path):
    # Issue 13, defect 2: the cache resized the shorter side and centre-cropped, so a 4:3 photo lost a
    # quarter of its width for good. The whole photo is kept now (squished into the square).
    wide = np.full((32, 64, 3), 128, dtype=np.uint8)
    wide[:, :12] = (0, 255, 0)  # a green band at the far left: outside any centre square
    decoded = image_cache_module.decode(write_png(tmp_path / "wide.png", wide), 16)
    assert decoded.shape == (16, 16, 3) and decoded.dtype == np.uint8
    assert decoded[:, 0, 1].min() > 200 and decoded[:, 0, 0].max() < 50  # the left edge is green
    assert np.abs(decoded[:, -1].astype(int) - 128).max() <= 2  # the right edge is the grey
    # max_aspect caps the squish: 1.0 keeps the centre square (the old cache), 2.0 the whole of this one.
    square = image_cache_module.decode(tmp_path / "wide.png", 16, max_aspect=1.0)
    assert square[:, :, 1].max() < 140  # no green: cut off
    assert np.array_equal(image_cache_module.decode(tmp_path / "wide.png", 16, max_aspect=2.0), decoded)
    gray = Image.fromarray(np.full((10, 10), 77, dtype=np.uint8))  # one channel in, three out
    gray.save(tmp_path / "gray.png")
    assert np.array_equal(
        image_cache_module.decode(tmp_path / "gray.png", 10), np.full((10, 10, 3), 77, dtype=np.uint8)
    )


def test_a_new_decoder_version_never_reuses_old_arrays(tmp_path, images, decode_count, monkeypatch):
    paths, _ = images
    image_cache_module.image_cache(paths, 32, tmp_path / "interim", "train")
    monkeypatch.setattr(image_cache_module, "DECODE_VERSION", image_cache_module.DECODE_VERSION + 1)
    decode_count.clear()
    image_cache_module.image_cache(paths, 32, tmp_path / "interim", "train")
    assert len(decode_count) == 5  # decoded again: the key holds the decoder's version
    assert len(list((tmp_path / "interim").glob("*.npy"))) == 2


def test_the_cache_is_a_little_larger_than_the_training_size():
    assert image_cache_module.cache_side(224) == 256
    assert all(image_cache_module.cache_side(size) > size for size in (32, 48, 64, 128, 299))


def test_cache_is_reused(tmp_path, images, decode_count):
    paths, pixels = images
    first, _ = image_cache_module.image_cache(paths, 32, tmp_path / "interim", "train")
    assert len(decode_count) == 5
    second, problems = image_cache_module.image_cache(paths, 32, tmp_path / "interim", "train")
    assert len(decode_count) == 5  # nothing decoded again
    assert problems == {} and np.array_equal(first, second)
    assert len(list((tmp_path / "interim").glob("*.npy"))) == 1

    image_cache_module.image_cache(paths, 16, tmp_path / "interim", "train")  # another size is another cache
    assert len(decode_count) == 10


def test_cache_is_rebuilt_when_a_source_image_changes(tmp_path, images, decode_count):
    paths, pixels = images
    image_cache_module.image_cache(paths, 32, tmp_path / "interim", "train")
    changed = random_pixels(99)
    write_png(paths[2], changed)
    later = paths[2].stat().st_mtime + 10  # seconds; a coarse file-system clock could miss the rewrite
    os.utime(paths[2], (later, later))
    decode_count.clear()
    array, problems = image_cache_module.image_cache(paths, 32, tmp_path / "interim", "train")
    assert len(decode_count) == 5 and problems == {}
    assert np.array_equal(array[2], changed) and np.array_equal(array[1], pixels[1])


def test_bad_files_are_reported_not_fatal(tmp_path, images, decode_count):
    paths, pixels = images
    zero_byte = tmp_path / "train" / "empty.png"
    zero_byte.write_bytes(b"")
    corrupt = tmp_path / "train" / "corrupt.png"
    corrupt.write_bytes(b"this is not a PNG file at all")
    truncated = tmp_path / "train" / "truncated.png"
    truncated.write_bytes(paths[0].read_bytes()[:200])
    missing = tmp_path / "train" / "missing.png"
    listed = [paths[0], zero_byte, corrupt, truncated, missing, paths[1]]

    array, problems = image_cache_module.image_cache(listed, 32, tmp_path / "interim", "train")
    assert set(problems) == {str(zero_byte), str(corrupt), str(truncated), str(missing)}
    assert problems[str(missing)] == "missing"
    assert all(problems[str(path)].startswith("unreadable") for path in (zero_byte, corrupt, truncated))
    assert all("\n" not in problem for problem in problems.values())
    assert np.array_equal(array[0], pixels[0]) and np.array_equal(array[5], pixels[1])
    assert not array[1:5].any()  # bad images are black squares

    decode_count.clear()  # the report is kept with the cache and comes back with it
    again, problems_again = image_cache_module.image_cache(listed, 32, tmp_path / "interim", "train")
    assert decode_count == [] and problems_again == problems and np.array_equal(again, array)


def test_random_resized_crops_never_upsample_the_cache():
    # Issue 13, defect 2: a crop of a third of the photo's area from a cache at the training size was
    # upsampled 1.7x. Crops now come from the larger whole-photo cache and are never smaller than the output.
    import albumentations

    from kit.competitions import load_competition
    from kit.data import augment

    config = load_competition("dog-breeds")
    for size in (32, 224):
        side = image_cache_module.cache_side(size)
        transform = augment.train_transform(config, size)
        (crop,) = [t for t in transform.transforms if isinstance(t, albumentations.RandomResizedCrop)]
        assert crop.scale[0] * side**2 >= size**2  # the smallest region is at least the output's area
        image = random_pixels(size, side, side)
        assert transform(image=image)["image"].shape == (size, size, 3)


def test_tta_views_reach_every_part_of_the_photo():
    import torch

    from kit.data.tta import tta_views, view_names

    batch = torch.zeros(1, 3, 40, 40)
    batch[..., :, :2] = 1.0  # the far left columns
    batch[..., :, -2:] = 2.0  # the far right columns
    views = dict(zip(view_names("side_on", 4), tta_views("side_on", 4), strict=True))
    assert list(views) == ["plain", "flip", "left", "right", "flip-left"]
    assert views["plain"](batch).amax() == 2 and views["plain"](batch)[..., 0].amin() == 1
    assert (views["left"](batch) == 1).any() and not (views["left"](batch) == 2).any()
    assert (views["right"](batch) == 2).any() and not (views["right"](batch) == 1).any()
    assert views["flip-left"](batch)[..., 0].amin() == 2  # the mirror image of the right part
