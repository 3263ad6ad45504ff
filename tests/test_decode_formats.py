"""Decoding shows what a viewer shows: each pixel format Pillow can hand back is cached as the picture a
person sees, compared with that picture saved as a plain 8-bit RGB PNG and cached the same way.

Each case writes one tricky file and the plain file of its expected picture; both go through
kit.data.images.image_cache, so the comparison holds whatever resizing the cache does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kit.data.images import image_cache

SIZE = 32  # cached pixels per side
WHITE = (255, 255, 255)


def quadrants(height: int = 48, width: int = 72) -> np.ndarray:
    """Four flat colours, one per quadrant, and a bar along the top: every turn and mirror looks different."""
    picture = np.zeros((height, width, 3), dtype=np.uint8)
    half_height, half_width = height // 2, width // 2
    picture[:half_height, :half_width] = (220, 30, 30)
    picture[:half_height, half_width:] = (30, 200, 40)
    picture[half_height:, :half_width] = (40, 40, 210)
    picture[half_height:, half_width:] = (230, 220, 40)
    picture[: height // 8, : width // 3] = (250, 250, 250)
    return picture


def cached_pair(folder: Path, tricky: Path, expected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the tricky file's cached pixels, the expected picture's cached pixels)."""
    plain = folder / "expected.png"
    Image.fromarray(expected).save(plain)
    array, problems = image_cache([tricky, plain], SIZE, folder / "cache")
    assert not problems, problems
    return array[0].astype(int), array[1].astype(int)


def assert_same_picture(folder: Path, tricky: Path, expected: np.ndarray, tolerance: float) -> None:
    got, wanted = cached_pair(folder, tricky, expected)
    difference = np.abs(got - wanted).mean()
    assert difference <= tolerance, f"{tricky.name}: mean difference {difference:.1f} > {tolerance}"


# EXIF orientation: what the viewer shows for each tag, computed with numpy from the stored pixels.
ORIENTATIONS = {
    2: lambda stored: stored[:, ::-1],  # mirrored
    3: lambda stored: np.rot90(stored, 2),
    4: lambda stored: stored[::-1],
    5: lambda stored: stored.transpose(1, 0, 2),  # mirrored along the main diagonal
    6: lambda stored: np.rot90(stored, -1),  # the camera turned right: shown turned clockwise
    7: lambda stored: np.rot90(stored, 2).transpose(1, 0, 2),
    8: lambda stored: np.rot90(stored, 1),
}


@pytest.mark.parametrize("file_format", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_is_applied(tmp_path, orientation, file_format):
    stored = quadrants()
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    path = tmp_path / f"photo.{file_format.lower()}"
    Image.fromarray(stored).save(path, file_format, exif=exif, quality=95)
    expected = np.ascontiguousarray(ORIENTATIONS[orientation](stored))
    assert_same_picture(tmp_path, path, expected, tolerance=4)
    # The stored pixels, unturned, would be far off: the test can tell.
    (tmp_path / "unturned").mkdir()
    got, unturned = cached_pair(tmp_path / "unturned", path, stored)
    assert np.abs(got - unturned).mean() > 20


def test_damaged_exif_keeps_the_picture(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(quadrants()).save(path, exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f garbage", quality=95)
    assert_same_picture(tmp_path, path, quadrants(), tolerance=4)


def gradient16(height: int = 40, width: int = 40) -> np.ndarray:
    return np.linspace(0, 65535, height * width).reshape(height, width).round().astype(np.uint16)


def grey(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, axis=2)


@pytest.mark.parametrize("file_format", ["PNG", "TIFF"])
def test_16_bit_grey_is_scaled_not_clipped(tmp_path, file_format):
    values = gradient16()
    path = tmp_path / f"scan.{file_format.lower()}"
    Image.fromarray(values).save(path, file_format)
    assert Image.open(path).mode.startswith("I")
    assert_same_picture(tmp_path, path, grey((values / 257).round().astype(np.uint8)), tolerance=1)


def test_32_bit_integer_grey_holding_16_bit_values(tmp_path):
    values = gradient16().astype(np.int32)
    path = tmp_path / "scan.tiff"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I"
    assert_same_picture(tmp_path, path, grey((values / 257).round().astype(np.uint8)), tolerance=1)


def test_float_grey_from_0_to_1(tmp_path):
    values = np.linspace(0, 1, 1600, dtype=np.float32).reshape(40, 40)
    path = tmp_path / "scan.tiff"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "F"
    assert_same_picture(tmp_path, path, grey((values * 255).round().astype(np.uint8)), tolerance=1)


def over_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Straight alpha over the white background (alpha 0..255)."""
    mixed = colour.astype(float) * alpha[..., None] / 255 + 255 * (1 - alpha[..., None] / 255)
    return mixed.round().astype(np.uint8)


def alpha_ramp(height: int = 40, width: int = 40) -> np.ndarray:
    return np.tile(np.linspace(0, 255, width).round().astype(np.uint8), (height, 1))


@pytest.mark.parametrize("file_format", ["PNG", "WEBP", "TIFF"])
def test_rgba_is_composited_on_white(tmp_path, file_format):
    colour, alpha = quadrants(40, 40), alpha_ramp()
    path = tmp_path / f"logo.{file_format.lower()}"
    Image.fromarray(np.dstack([colour, alpha]), "RGBA").save(path, file_format, lossless=True)
    assert_same_picture(tmp_path, path, over_white(colour, alpha), tolerance=1)


def test_grey_with_alpha_is_composited_on_white(tmp_path):
    values, alpha = (quadrants(40, 40)[..., 0] // 2), alpha_ramp()
    path = tmp_path / "mask.png"
    Image.fromarray(np.dstack([values, alpha]), "LA").save(path)
    assert_same_picture(tmp_path, path, over_white(grey(values), alpha), tolerance=1)


def palette_picture() -> tuple[Image.Image, np.ndarray]:
    """A 4-colour palette image whose index 0 is meant to be transparent, and its colours."""
    indices = np.zeros((40, 40), dtype=np.uint8)
    indices[10:30, 5:20], indices[10:30, 20:35], indices[:5] = 1, 2, 3
    palette = [(0, 0, 0), (200, 20, 20), (20, 20, 200), (20, 160, 20)]
    image = Image.fromarray(indices, "P")
    image.putpalette([value for colour in palette for value in colour])
    return image, np.array(palette, dtype=np.uint8)[indices]


@pytest.mark.parametrize("file_format", ["PNG", "GIF"])
def test_palette_transparency_shows_the_background(tmp_path, file_format):
    image, colours = palette_picture()
    path = tmp_path / f"sprite.{file_format.lower()}"
    image.save(path, file_format, transparency=0)
    expected = colours.copy()
    expected[np.array(image) == 0] = WHITE
    assert_same_picture(tmp_path, path, expected, tolerance=0.5)


def test_palette_with_per_entry_alpha(tmp_path):
    image, colours = palette_picture()
    path = tmp_path / "sprite.png"
    image.save(path, transparency=bytes([0, 255, 128, 255]))  # PNG tRNS: an alpha per palette entry
    alpha = np.array([0, 255, 128, 255], dtype=np.uint8)[np.array(image)]
    assert_same_picture(tmp_path, path, over_white(colours, alpha), tolerance=1)


def test_rgb_with_a_transparent_colour(tmp_path):
    colour = quadrants(40, 40)
    path = tmp_path / "key.png"
    Image.fromarray(colour).save(path, transparency=(40, 40, 210))  # PNG tRNS: that colour is see-through
    expected = colour.copy()
    expected[(colour == (40, 40, 210)).all(axis=2)] = WHITE
    assert_same_picture(tmp_path, path, expected, tolerance=0.5)


@pytest.mark.parametrize("file_format", ["JPEG", "TIFF"])
def test_cmyk(tmp_path, file_format):
    rgb = quadrants()
    path = tmp_path / f"print.{file_format.lower()}"
    Image.fromarray(rgb).convert("CMYK").save(path, file_format, quality=95)
    assert Image.open(path).mode == "CMYK"
    assert_same_picture(tmp_path, path, rgb, tolerance=4)


def test_cielab(tmp_path):
    from PIL import ImageCms

    rgb = quadrants()
    lab = ImageCms.profileToProfile(
        Image.fromarray(rgb), ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), outputMode="LAB"
    )
    path = tmp_path / "scan.tiff"
    lab.save(path)
    assert Image.open(path).mode == "LAB"
    assert_same_picture(tmp_path, path, rgb, tolerance=3)


def icc_profile(primaries: list[tuple[float, float, float]], description: str) -> bytes:
    """A minimal ICC v2 RGB display profile: three primaries (XYZ, D50), gamma 2.2 curves."""
    import struct

    def fixed(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    def xyz(values) -> bytes:
        return b"XYZ \0\0\0\0" + b"".join(fixed(value) for value in values)

    text = description.encode() + b"\0"
    tags = {
        b"desc": b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67),
        b"wtpt": xyz((0.9642, 1.0, 0.8249)),
        b"rXYZ": xyz(primaries[0]),
        b"gXYZ": xyz(primaries[1]),
        b"bXYZ": xyz(primaries[2]),
        **{
            name: b"curv\0\0\0\0" + struct.pack(">IH", 1, 563) + b"\0\0"
            for name in (b"rTRC", b"gTRC", b"bTRC")
        },
    }
    table, body, offset = b"", b"", 128 + 4 + 12 * len(tags)
    for name, data in tags.items():
        data += bytes(-len(data) % 4)
        table += name + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (
        struct.pack(">I", size)
        + b"lcms"
        + bytes([2, 0x10, 0, 0])
        + b"mntrRGB XYZ "
        + bytes(12)
        + b"acsp"
        + bytes(4 * 4 + 8)
        + struct.pack(">I", 0)
        + fixed(0.9642)
        + fixed(1.0)
        + fixed(0.8249)
        + bytes(4 + 16 + 28)
    )
    return header + struct.pack(">I", len(tags)) + table + body


SRGB_PRIMARIES = [(0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)]  # D50


@pytest.mark.parametrize("file_format", ["JPEG", "PNG", "TIFF"])
def test_an_embedded_colour_profile_is_applied(tmp_path, file_format):
    """A profile whose red and green primaries are swapped: stored red is shown green, and vice versa."""
    red, green, blue = SRGB_PRIMARIES
    profile = icc_profile([green, red, blue], "swapped primaries")
    stored = quadrants()
    path = tmp_path / f"photo.{file_format.lower()}"
    Image.fromarray(stored).save(path, file_format, icc_profile=profile, quality=95)
    assert_same_picture(tmp_path, path, np.ascontiguousarray(stored[..., [1, 0, 2]]), tolerance=6)


def test_an_srgb_profile_or_a_damaged_one_changes_nothing(tmp_path):
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for name, profile in [("srgb.png", srgb), ("damaged.png", b"not a profile at all" * 10)]:
        Image.fromarray(quadrants()).save(tmp_path / name, icc_profile=profile)
        (tmp_path / name[:-4]).mkdir()
        assert_same_picture(tmp_path / name[:-4], tmp_path / name, quadrants(), tolerance=0)


def frames() -> list[np.ndarray]:
    first = quadrants(40, 40)
    return [first, np.rot90(first).copy(), 255 - first]


@pytest.mark.parametrize("file_format", ["GIF", "PNG", "TIFF", "WEBP"])
def test_multi_frame_files_show_their_first_frame(tmp_path, file_format):
    pictures = frames()
    path = tmp_path / f"animation.{file_format.lower()}"
    first, *rest = [Image.fromarray(picture) for picture in pictures]
    first.save(path, file_format, save_all=True, append_images=rest, lossless=True)
    assert getattr(Image.open(path), "n_frames", 1) == 3
    assert_same_picture(tmp_path, path, pictures[0], tolerance=2)


def test_a_multi_frame_file_opened_at_a_later_frame_is_shown_from_the_first(tmp_path):
    """to_rgb itself: a caller's image left on frame 2 still gives frame 0."""
    from kit.data.images import to_rgb

    pictures = frames()
    path = tmp_path / "pages.tiff"
    first, *rest = [Image.fromarray(picture) for picture in pictures]
    first.save(path, save_all=True, append_images=rest)
    with Image.open(path) as image:
        image.seek(2)
        assert np.array_equal(np.asarray(to_rgb(image)), pictures[0])


def test_bilevel(tmp_path):
    bits = np.zeros((40, 40), dtype=bool)
    bits[5:20, 10:30] = True
    path = tmp_path / "fax.png"
    Image.fromarray(bits).save(path)
    assert Image.open(path).mode == "1"
    assert_same_picture(tmp_path, path, grey(np.where(bits, 255, 0).astype(np.uint8)), tolerance=0.5)


def test_16_bit_rgb(tmp_path):
    """16-bit colour PNGs: Pillow reads them as 8-bit RGB already (kept here as a guard)."""
    import cv2

    colour = quadrants(40, 40).astype(np.uint16) * 257
    path = tmp_path / "deep.png"
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(colour[..., ::-1]))  # cv2 writes BGR
    path.write_bytes(encoded.tobytes())
    assert ok and path.read_bytes()[24] == 16  # IHDR bit depth: 16 bits per channel
    assert_same_picture(tmp_path, path, quadrants(40, 40), tolerance=0.5)
