"""Prediction-side decoding: plain JPEGs decoded in batches on the GPU (nvjpeg, through
torchvision.io.decode_jpeg), the rest by the kit's Pillow decoder, into one test cache built once per
prediction and read by every weight file and view.

No GPU here: the GPU path's CPU twin (the same decode_jpeg call and resize with device cpu) is held to the
kit's decoder, and the split between the two paths is checked with the GPU call replaced by that twin.
Tolerance, per image on a 0..255 scale: mean absolute difference under 1 level, largest under 16 (the
decoders' IDCTs round alike here; the difference is Pillow's bicubic with its box pre-shrink against torch's
antialiased bicubic, measured at most 0.45 mean and 9 largest on the photos below).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image, ImageCms

from kit.data import gpu_decode, images

SHARED = REPO.parent / "shared" / "data"
MEAN_TOLERANCE, LARGEST_TOLERANCE = 1.0, 16  # levels of 255, per image


@pytest.mark.parametrize(
    ("device_type", "image_format", "mode", "profile", "orientation", "expected"),
    [
        ("cuda", "JPEG", "RGB", False, 1, "gpu"),
        ("cuda", "JPEG", "L", False, 1, "gpu"),  # grey: decoded as RGB, as Pillow's convert does
        ("cuda", "JPEG", "RGB", False, 0, "gpu"),  # no EXIF at all
        ("cpu", "JPEG", "RGB", False, 1, "cpu"),  # no GPU
        ("cuda", "PNG", "RGB", False, 1, "cpu"),  # not a JPEG
        ("cuda", None, "", False, 1, "cpu"),  # unreadable: the CPU decoder says why
        ("cuda", "JPEG", "CMYK", False, 1, "cpu"),
        ("cuda", "JPEG", "RGB", True, 1, "cpu"),  # a colour profile to convert to sRGB
        ("cuda", "JPEG", "RGB", False, 6, "cpu"),  # stored sideways: torchvision turns on the CPU only
    ],
)
def test_the_decoder_is_chosen_by_device_and_file(
    device_type, image_format, mode, profile, orientation, expected
):
    assert gpu_decode.choose_decoder(device_type, image_format, mode, profile, orientation) == expected


def smooth_picture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A photo-like picture: gradients and soft blobs (JPEG's own kind of content), no flat noise."""
    rows, columns = np.mgrid[0:height, 0:width] / max(height, width)
    rng = np.random.default_rng(seed)
    channels = [
        128 + 100 * np.sin(rows * rng.uniform(2, 9) + columns * rng.uniform(2, 9) + rng.uniform(0, 6))
        for _ in range(3)
    ]
    return np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)


def made_jpegs(folder: Path) -> list[Path]:
    """JPEGs written here: colour and grey, wide and tall (cropped by max_aspect), one large."""
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for index, (height, width, mode) in enumerate(
        [(200, 300, "RGB"), (420, 180, "RGB"), (240, 320, "L"), (900, 1200, "RGB")]
    ):
        picture = Image.fromarray(smooth_picture(height, width, index)).convert(mode)
        path = folder / f"made-{index}.jpg"
        picture.save(path, quality=90)
        made.append(path)
    return made


def real_photos(folder: Path) -> list[Path]:
    """A handful of real photos copied from ../shared/data (200x200 cats and dogs; full-size dog breeds,
    where Pillow's box pre-shrink applies); none on a clone without the shared folder."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = [
        *sorted((SHARED / "cats-vs-dogs-dev" / "test").glob("*.jpg"))[:4],
        *sorted((SHARED / "dog-breed-identification-sample" / "test").glob("*.jpg"))[:4],
    ]
    return [
        Path(shutil.copy(source, folder / f"{index}-{source.name}")) for index, source in enumerate(sources)
    ]


@pytest.mark.parametrize(("side", "max_aspect"), [(73, 0.0), (256, 1.5)])
def test_the_gpu_paths_cpu_twin_gives_the_kits_pixels_within_decoder_tolerance(tmp_path, side, max_aspect):
    paths = made_jpegs(tmp_path / "made") + real_photos(tmp_path / "real")
    twin = gpu_decode.decode_batch(paths, side, max_aspect, torch.device("cpu"))
    assert twin.shape == (len(paths), side, side, 3) and twin.dtype == np.uint8
    for path, pixels in zip(paths, twin, strict=True):
        difference = np.abs(pixels.astype(int) - images.decode(path, side, max_aspect).astype(int))
        assert difference.mean() < MEAN_TOLERANCE and difference.max() < LARGEST_TOLERANCE, (
            f"{path.name}: mean {difference.mean():.2f}, largest {difference.max()}"
        )


def test_the_header_sends_turned_and_profiled_jpegs_to_the_cpu(tmp_path):
    picture = Image.fromarray(smooth_picture(60, 80))
    plain, turned, profiled, png = (tmp_path / name for name in ("plain.jpg", "turned.jpg", "p.jpg", "x.png"))
    picture.save(plain)
    exif = Image.Exif()
    exif[gpu_decode.EXIF_ORIENTATION] = 6
    picture.save(turned, exif=exif)
    adobe_like = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    picture.save(profiled, icc_profile=adobe_like)
    picture.save(png)
    assert [gpu_decode.decoder_for(path, "cuda") for path in (plain, turned, profiled, png)] == [
        "gpu",
        "cpu",
        "cpu",
        "cpu",
    ]
    assert gpu_decode.decoder_for(plain, "cpu") == "cpu"


def test_a_gpu_cache_decodes_plain_jpegs_on_the_gpu_and_the_rest_on_the_cpu(tmp_path, monkeypatch):
    """image_cache with decode_device "cuda", the GPU call replaced by its CPU twin: plain JPEGs go to it in
    batches, a PNG and a damaged JPEG to Pillow (the damaged one reported, as the CPU cache reports it),
    pixels within tolerance of the CPU cache, and the cache under a key of its own."""
    paths = made_jpegs(tmp_path / "images")
    png = tmp_path / "images" / "plain.png"
    Image.fromarray(smooth_picture(50, 70, 9)).save(png)
    damaged = tmp_path / "images" / "damaged.jpg"
    whole = paths[0].read_bytes()
    damaged.write_bytes(whole[: len(whole) // 2])  # a header Pillow opens, then half a picture
    paths = [paths[0], png, paths[1], damaged, paths[2], paths[3]]
    batches, decode_batch = [], gpu_decode.decode_batch

    def twin(batch, side, max_aspect, compute):
        assert compute.type == "cuda"
        batches.append([path.name for path in batch])
        return decode_batch(batch, side, max_aspect, torch.device("cpu"))

    monkeypatch.setattr(gpu_decode, "decode_batch", twin)
    monkeypatch.setattr(gpu_decode, "GPU_BATCH", 2)
    on_gpu, gpu_problems = images.image_cache(paths, 48, tmp_path / "cache", "test", 1.5, "cuda")
    on_cpu, cpu_problems = images.image_cache(paths, 48, tmp_path / "cache", "test", 1.5)
    # the damaged file fails its batch (made-2 with it) and both go to Pillow
    assert [name for batch in batches for name in batch] == [
        "made-0.jpg",
        "made-1.jpg",
        "damaged.jpg",
        "made-2.jpg",
        "made-3.jpg",
    ]
    assert list(gpu_problems) == list(cpu_problems) == [str(damaged)]
    difference = np.abs(np.asarray(on_gpu, dtype=int) - np.asarray(on_cpu, dtype=int))
    assert difference.mean() < MEAN_TOLERANCE and difference.max() < LARGEST_TOLERANCE
    assert np.array_equal(on_gpu[1], on_cpu[1]) and np.array_equal(on_gpu[4], on_cpu[4])  # Pillow's, both
    assert len(list((tmp_path / "cache").glob("test-48px-*.npy"))) == 2  # nvjpeg's pixels: a key of its own


def test_test_images_decode_on_the_gpu_where_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert images.prediction_decode_device("test") == "cuda"
    assert images.prediction_decode_device("train") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert images.prediction_decode_device("test") == "cpu"


def test_decoding_threads_are_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.setattr(images.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(images.os, "cpu_count", lambda: 64)
    assert images.usable_cores() == 2


@pytest.mark.slow
def test_a_notebook_run_decodes_each_test_image_once_for_every_weight_file_and_view(
    digits, monkeypatch, tmp_path
):
    """predict_in_notebook (what the Kaggle notebook runs) on a packaged two-fold run with three views:
    every test image decoded exactly once, though two folds' weight files and three views each read it."""
    import json
    import os

    from conftest import TINY, invoke

    from kit.competitions import load_competition
    from kit.data.labels import load_test
    from kit.kaggle import package, rehearsal
    from kit.run import Run

    project = Path(os.environ["KIT_PROJECT_ROOT"])
    overrides = [
        item
        for value in [*TINY, "train.folds=2", "predict.tta=2", "predict.select=false"]
        for item in ("--set", value)
    ]
    assert invoke("train", "digits", "--fold", "all", *overrides).exit_code == 0
    (run_dir,) = (project / "runs" / "digits").iterdir()
    config = load_competition("digits")

    def no_wheel(folder: Path) -> Path:  # the notebook's kit is this one: no wheel is installed here
        (folder / "kit-0-py3-none-any.whl").touch()
        return folder / "kit-0-py3-none-any.whl"

    monkeypatch.setattr(package, "build_wheel", no_wheel)
    dataset = "local/kit-digits"
    folder = rehearsal.lay_out(
        tmp_path / "input", "flat", project / "data" / "raw" / "digits", "digits", dataset
    )
    package.build(config, run_dir, Run(run_dir).summary(), dataset, folder)
    decoded = []
    decode = images.decode
    monkeypatch.setattr(images, "decode", lambda path, *rest: decoded.append(path) or decode(path, *rest))
    package.predict_in_notebook(
        str(tmp_path / "input"), dataset, "digits", str(tmp_path / "working"), str(tmp_path / "scratch")
    )
    timings = json.loads((tmp_path / "working" / package.TIMINGS_FILE).read_text())
    assert timings["weight_files"] >= 2 and timings["views"] == 3  # six or more readers of each image
    test_files = sorted(path.name for path in load_test(config).paths)
    assert sorted(path.name for path in decoded) == test_files  # each once
