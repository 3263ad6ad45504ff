"""Decode once: every whole photo resized to one square size into a uint8 array file under data/interim.

Decoding a JPEG costs more than a small model's forward pass, so training and prediction read these
arrays (memory-mapped) instead of the image files. A cache is keyed by the decoder's version, the size,
the aspect cap and each source file's name, size, modification time and a fingerprint of its bytes
(`fingerprint`): change a file (or the decoder) and the cache is rebuilt. A damaged cache (truncated, an
empty file, a damaged side file) is rebuilt too, said in one line; two commands needing one cache take
turns (the second reads what the first built), and what a killed build left behind is removed.

The cache keeps the whole photo, squished into a square a little larger than the training size
(`cache_side`), so random crops and TTA views can reach every part of it: a 500x375 photo centre-cropped
once would lose a quarter of its width for good. `data.max_aspect` caps how much is squished (longer
sides beyond the cap are centre-cropped); it was measured on real photos (docs/2026-11-27-aspect.md).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import stat
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from kit.config import Config
from kit.data import gpu_decode
from kit.errors import KitError
from kit.files import atomic_path, disk_full_error, exclusive, free_space, human_size, is_disk_full
from kit.paths import interim_dir

# Part of every cache key: bump it whenever decode's pixels change, so no cache made by an older decoder
# is reused. 1: shorter side resized, centre square crop. 2: what a viewer shows (EXIF orientation, 16-bit,
# transparency, colour profiles, first frame). 3: the whole photo (up to max_aspect) squished to a square.
DECODE_VERSION = 3
BACKGROUND = (255, 255, 255)  # behind transparent pixels, as a viewer shows them on a white page
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_SRGB = ImageCms.createProfile("sRGB")


def _to_srgb(image: Image.Image) -> Image.Image:
    """Colours as a viewer shows them: an embedded colour profile (Adobe RGB, Display P3, a printer's
    CMYK) converted to sRGB, which is what the model's ImageNet statistics assume."""
    profile = image.info.get("icc_profile")
    if not profile or image.mode not in ("RGB", "CMYK", "L"):
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        if "srgb" in ImageCms.getProfileDescription(source).lower().replace(" ", ""):
            return image
        return ImageCms.profileToProfile(image, source, _SRGB, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):  # a damaged or mismatched profile: viewers ignore it
        return image


def _to_8_bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit grey as 8-bit grey over the type's range (Image.convert would clip at 255: white)."""
    if image.mode not in (*SIXTEEN_BIT_MODES, "I", "F"):
        return image
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F":  # floats: 0..1 when they fit there, else already on the 0..255 scale
        scale = 255.0 if values.size and np.nanmax(values) <= 1.0 else 1.0
    elif image.mode == "I":  # 32-bit integers: 16-bit data unless every value fits in 8 bits
        scale = 1.0 if values.size and values.max() <= 255 else 255 / 65535
    else:
        scale = 255 / 65535
    return Image.fromarray(np.clip(np.rint(np.nan_to_num(values) * scale), 0, 255).astype(np.uint8), "L")


def to_rgb(image: Image.Image) -> Image.Image:
    """What an image viewer shows, as 8-bit sRGB: the first frame, turned as its EXIF orientation says,
    colour profile applied, 16-bit scaled (not clipped), transparent pixels over a white background."""
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)  # animated GIF/PNG, multi-page TIFF, MPO: the first frame is the picture shown
    try:
        image = ImageOps.exif_transpose(image)  # phone photos are stored sideways with an orientation tag
    except (SyntaxError, ValueError, TypeError, KeyError, OSError):  # damaged EXIF: viewers show it unturned
        pass
    image = _to_8_bit(_to_srgb(image))
    transparent = image.mode in ALPHA_MODES or (
        image.mode in ("P", "L", "RGB", "1") and "transparency" in image.info
    )
    if transparent:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (*BACKGROUND, 255)), rgba)
    return image.convert("RGB")


CACHE_MARGIN = 8 / 7  # cache side / training size: 256 px for 224 px, the classic "resize 256, crop 224"


def cache_side(image_size: int) -> int:
    """The cached square's side for a training size: a little larger, so crops need no upsampling."""
    return math.ceil(image_size * CACHE_MARGIN)


def fit_square(image: Image.Image, side: int, max_aspect: float = 0.0) -> Image.Image:
    """The whole picture resized to side x side (aspect not kept). With max_aspect > 0, a longer side
    beyond max_aspect times the shorter one is centre-cropped first (1.0: the centre square)."""
    width, height = image.size
    if max_aspect > 0:
        keep_width = min(width, round(height * max_aspect))
        keep_height = min(height, round(width * max_aspect))
        left, top = (width - keep_width) // 2, (height - keep_height) // 2
        image = image.crop((left, top, left + keep_width, top + keep_height))
    return image.resize((side, side), Image.Resampling.BICUBIC, reducing_gap=3.0)


def decode(path: Path, image_size: int, max_aspect: float = 0.0) -> np.ndarray:
    """One image as (image_size, image_size, 3) uint8: the whole photo (see fit_square)."""
    with Image.open(path) as image:
        return np.asarray(fit_square(to_rgb(image), image_size, max_aspect), dtype=np.uint8)


FINGERPRINT_BYTES = 64 * 1024  # bytes read from each end of an image file for the cache key


def fingerprint(path: Path) -> str:
    """A cheap digest of a file's bytes: the whole file up to 2 x FINGERPRINT_BYTES (128 KiB: most
    competition images), else its first 128 KiB and last 64 KiB. Beside the size and modification time,
    it notices a file rewritten with the same size and time (a copy with `cp -p`, a tool that restores
    the time) unless only the middle of a large file changed; hashing every byte would read the whole
    data set each time a cache is looked up."""
    with open(path, "rb") as handle:
        head = handle.read(2 * FINGERPRINT_BYTES)
        digest = hashlib.blake2b(head, digest_size=16)
        if len(head) == 2 * FINGERPRINT_BYTES:
            handle.seek(-FINGERPRINT_BYTES, os.SEEK_END)
            digest.update(handle.read())
    return digest.hexdigest()


FINGERPRINTS = "fingerprints.json"  # in a cache folder: {path: [inode, size, mtime, ctime, fingerprint]}


def _file_stamp(path: Path) -> list | str:
    """[inode, size, modification time, change time] of a regular file, else what it is instead."""
    try:
        status = path.stat()
    except OSError:
        return "missing"
    if not stat.S_ISREG(status.st_mode):  # opening a named pipe to read it would wait forever
        return "not a regular file"
    return [status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns]


def _fingerprint_or_missing(path: Path) -> str:
    try:
        return fingerprint(path)
    except OSError:
        return "unreadable"


def cache_key(
    paths: list[Path],
    image_size: int,
    max_aspect: float = 0.0,
    cache_dir: Path | None = None,
    decoder: str = "",
) -> str:
    """The cache's name: the decoder (`decoder`: "" for Pillow, kit.data.gpu_decode.DECODER for nvjpeg,
    whose pixels differ slightly), the size and each file's name, size, time and fingerprint. With
    `cache_dir`, fingerprints are remembered there (FINGERPRINTS) and read again only for files whose
    inode, size or times changed: the change time moves on every write, even when a tool sets the
    modification time back, so an unchanged file costs a stat and a rewritten one a fresh fingerprint."""
    memo_path = cache_dir / FINGERPRINTS if cache_dir is not None else None
    known: dict = {}
    if memo_path is not None and memo_path.is_file():
        try:
            known = json.loads(memo_path.read_text())
        except (ValueError, OSError):  # damaged: every fingerprint is read again
            known = {}
        known = known if isinstance(known, dict) else {}
    stamps = [_file_stamp(path) for path in paths]
    contents: list[str | None] = []
    for path, stamp in zip(paths, stamps, strict=True):
        saved = known.get(str(path)) if isinstance(stamp, list) else None
        contents.append(saved[4] if saved and saved[:4] == stamp else None)
    unread = [
        index for index, stamp in enumerate(stamps) if isinstance(stamp, list) and contents[index] is None
    ]
    if unread:
        with ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:  # file reads release the GIL
            read = pool.map(_fingerprint_or_missing, [paths[index] for index in unread], chunksize=64)
            for index, content in zip(unread, read, strict=True):
                contents[index] = content
    digest = hashlib.sha1(f"decode-v{DECODE_VERSION}{decoder}\0{image_size}\0{max_aspect}".encode())
    for path, stamp, content in zip(paths, stamps, contents, strict=True):
        if isinstance(stamp, list):
            digest.update(f"{path.name}\0{stamp[1]}\0{stamp[2]}\0{content}\n".encode())
        else:
            digest.update(f"{path.name}\0{stamp}\n".encode())
    if memo_path is not None and unread:
        found = {str(paths[index]): [*stamps[index], contents[index]] for index in unread}
        try:
            with atomic_path(memo_path) as temporary:
                temporary.write_text(json.dumps({**known, **found}))
        except KitError:  # a folder we may not write in: the key is right, only slower next time
            pass
    return digest.hexdigest()[:16]


def _read_cache(array_path: Path, report_path: Path, shape: tuple) -> tuple | str | None:
    """The cache and its bad-image report; None when not built; why not, when damaged."""
    if not (array_path.exists() and report_path.exists()):
        return None
    try:
        images = np.load(array_path, mmap_mode="r")
        problems = json.loads(report_path.read_text())
    except (ValueError, OSError, EOFError) as error:  # truncated, empty, not an array, not JSON
        return f"{type(error).__name__}: {error}".replace("\n", " ")[:200]
    if images.shape != shape or images.dtype != np.uint8 or not isinstance(problems, dict):
        return f"holds {images.dtype} {images.shape} and a {type(problems).__name__}, not uint8 {shape}"
    return images, problems


# A temporary file of an image cache's build: .<label>-<side>px-<key>.npy.<random>.tmp (or .bad.json).
BUILD_TEMPORARY = re.compile(r"^\.(?P<array>.+-\d+px-[0-9a-f]{16})\.(?:npy|bad\.json)\..+\.tmp$")


def sweep_interrupted(cache_dir: Path, building: Path) -> None:
    """Remove the temporary files killed cache builds left in `cache_dir` (tens of MB each, hidden): those
    of `building` (whose lock we hold) and those of any cache no process is building now."""
    for temporary in sorted(cache_dir.glob(".*.tmp")):
        match = BUILD_TEMPORARY.match(temporary.name)
        if match is None:
            continue
        array = cache_dir / f"{match['array']}.npy"
        lock = None if array == building else FileLock(cache_dir / f".{array.name}.lock")
        try:
            if lock is not None:
                lock.acquire(timeout=0)
        except TimeoutError:
            continue  # another command is building that cache right now
        try:
            size = temporary.stat().st_size
            temporary.unlink()
            tqdm.write(
                f"{temporary}: left by an interrupted cache build ({human_size(size)}); removed",
                file=sys.stderr,
            )
        except FileNotFoundError:
            pass
        finally:
            if lock is not None:
                lock.release()


def decode_or_none(path: Path, image_size: int, max_aspect: float = 0.0) -> tuple[np.ndarray | None, str]:
    """The image, or why not in a few words ('missing', 'unreadable: ...'): reports list many of these."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # opening a named pipe would wait forever
            return None, "not a regular file (a folder, pipe or device)"
        return decode(path, image_size, max_aspect), ""
    except FileNotFoundError:
        return None, "missing"
    except Image.DecompressionBombError:  # Pillow's guard against images that would exhaust memory
        return None, f"too large: over Pillow's limit of {Image.MAX_IMAGE_PIXELS * 2:,} pixels; shrink it"
    except UnidentifiedImageError:  # its message repeats the path
        return None, "unreadable: empty file" if path.stat().st_size == 0 else "unreadable: not an image file"
    except Exception as error:  # PIL raises many types for corrupt or truncated files
        return None, f"unreadable: {type(error).__name__}: {error}".replace("\n", " ")


def image_cache(
    paths: list[Path],
    image_size: int,
    cache_dir: Path,
    label: str = "images",
    max_aspect: float = 0.0,
    decode_device: str = "cpu",
) -> tuple[np.ndarray, dict[str, str]]:
    """The images as a read-only (N, S, S, 3) uint8 memmap (S = image_size, the cache's side: see
    `cache_side`), plus {path: problem} for bad images.

    Bad images (missing, corrupt, zero-byte) become black squares in the array and are listed, so
    callers decide: skip a few training images, or refuse to predict a test set. `decode_device` "cuda":
    plain JPEGs are decoded on the GPU (kit.data.gpu_decode), into a cache of its own.
    """
    decoder = f"-{gpu_decode.DECODER}" if decode_device == "cuda" else ""
    key = cache_key(paths, image_size, max_aspect, cache_dir, decoder)
    array_path = cache_dir / f"{label}-{image_size}px-{key}.npy"
    report_path = array_path.with_suffix(".bad.json")
    shape = (len(paths), image_size, image_size, 3)
    cached = _read_cache(array_path, report_path, shape)
    if isinstance(cached, tuple):
        return cached
    with exclusive(array_path):  # two commands needing this cache: the second waits, then reads it
        cached = _read_cache(array_path, report_path, shape)
        if isinstance(cached, tuple):
            return cached
        if isinstance(cached, str):
            tqdm.write(f"{array_path}: damaged cache ({cached}); rebuilding it", file=sys.stderr)
        sweep_interrupted(cache_dir, array_path)
        problems = _build(paths, image_size, cache_dir, label, max_aspect, array_path, shape, decode_device)
        with atomic_path(report_path) as temporary:
            temporary.write_text(json.dumps(problems, indent=1))
    return np.load(array_path, mmap_mode="r"), problems


def _build(
    paths: list[Path],
    image_size: int,
    cache_dir: Path,
    label: str,
    max_aspect: float,
    array_path: Path,
    shape: tuple[int, ...],
    decode_device: str = "cpu",
) -> dict[str, str]:
    """Decode every image into `array_path` (atomically); returns {path: problem} for bad images. Plain
    JPEGs go to the GPU in batches where `decode_device` is "cuda" (`_decode_on_gpu`), the rest (and any
    batch the GPU refuses) to Pillow in one thread per usable core."""
    problems: dict[str, str] = {}
    needed = int(np.prod(shape)) + 4096  # the pixels, plus the .npy header
    what = f"caching {len(paths)} {label} images at {image_size}px"
    if free_space(cache_dir) < needed:
        raise disk_full_error(cache_dir, what, needed)
    with atomic_path(array_path) as temporary:
        array = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=shape)
        # Reserve every block now: writing into a memory map on a full disk kills the process (SIGBUS).
        with open(temporary, "r+b") as handle:
            try:
                if hasattr(os, "posix_fallocate"):  # not on macOS
                    os.posix_fallocate(handle.fileno(), 0, os.path.getsize(temporary))
            except OSError as error:  # other errors (a file system without it): written as it goes
                if is_disk_full(error):
                    handle.truncate(0)  # give the space back before the message measures what is free
                    raise disk_full_error(cache_dir, what, needed) from None
        left = list(range(len(paths)))
        if decode_device == "cuda":
            left = _decode_on_gpu(paths, image_size, max_aspect, array)
        with ThreadPoolExecutor(usable_cores()) as pool:  # PIL releases the GIL while decoding and resizing
            decode_one = lambda index: decode_or_none(paths[index], image_size, max_aspect)  # noqa: E731
            results = pool.map(decode_one, left, chunksize=16)
            for index, (image, problem) in zip(
                left,
                tqdm(results, total=len(left), desc=f"cache {label} {image_size}px", leave=False),
                strict=True,
            ):
                if image is None:
                    problems[str(paths[index])] = problem
                    array[index] = 0
                else:
                    array[index] = image
        array.flush()
        del array
    return problems


def usable_cores() -> int:
    """The cores this process may run on (a notebook's 2, a rehearsal held to 2 by its affinity), not the
    machine's count: decoding threads beyond them only take turns."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _decode_on_gpu(paths: list[Path], side: int, max_aspect: float, array: np.ndarray) -> list[int]:
    """The plain JPEGs among `paths` decoded on the GPU into `array`, GPU_BATCH at a time; returns the
    indices left for the CPU: other images, and every image of a batch nvjpeg refused (a damaged file)."""
    import torch  # heavy: only where a GPU decodes (gpu_decode imports it there too)

    with ThreadPoolExecutor(usable_cores()) as pool:  # headers only: file reads release the GIL
        choices = list(pool.map(lambda path: gpu_decode.decoder_for(path, "cuda"), paths, chunksize=64))
    on_gpu = [index for index, choice in enumerate(choices) if choice == "gpu"]
    left = [index for index, choice in enumerate(choices) if choice == "cpu"]
    for start in range(0, len(on_gpu), gpu_decode.GPU_BATCH):
        batch = on_gpu[start : start + gpu_decode.GPU_BATCH]
        try:
            array[batch] = gpu_decode.decode_batch(
                [paths[index] for index in batch], side, max_aspect, torch.device("cuda")
            )
        except (RuntimeError, ValueError):  # a damaged or unsupported JPEG: Pillow decodes it or says why
            left.extend(batch)
    return sorted(left)


def prediction_decode_device(split: str) -> str:
    """Where a cache of `split` is decoded: test images on the GPU where there is one (prediction's decoding
    must not wait on a notebook's two cores), everything else by Pillow on the CPU."""
    if split != "test":
        return "cpu"
    import torch  # already imported by every command that predicts

    return "cuda" if torch.cuda.is_available() else "cpu"


def photo_cache(config: Config, paths: list[Path], side: int, split: str) -> tuple[np.ndarray, dict]:
    """The one builder of a competition's photo caches: `split` ("train" or "test") under
    data/interim/<name>, whole photos as `side` x `side` squares within data.max_aspect. Training, its
    pseudo-labels, test prediction and a notebook's rehearsal all cache through it, so they read one cache
    (test images decoded on the GPU where there is one: `prediction_decode_device`)."""
    return image_cache(
        paths, side, interim_dir(config.name), split, config.data.max_aspect, prediction_decode_device(split)
    )
