"""Photo previews: sizes, orientation, modes and the pictures that are refused."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imaging.photo import MAX_PIXELS, PhotoError, preview


def _save(path: Path, image: Image.Image, **options: object) -> Path:
    image.save(path, **options)  # type: ignore[arg-type]
    return path


def _open(data: bytes) -> Image.Image:
    picture = Image.open(io.BytesIO(data))
    assert picture.format == "JPEG"
    return picture


def _rgb(picture: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    r, g, b = np.asarray(picture.convert("RGB"))[y, x]
    return int(r), int(g), int(b)


def _grey(picture: Image.Image, x: int, y: int) -> int:
    return int(np.asarray(picture.convert("L"))[y, x])


def _gradient(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)
    rgb = np.stack([np.tile(x, (height, 1))] * 3, axis=-1)
    rgb[: height // 2, :, 0] = 255  # top half red-tinted: shows which way is up
    return Image.fromarray(rgb, "RGB")


def test_a_big_jpeg_is_fitted_and_turned_upright(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    path = _save(tmp_path / "wound.jpg", _gradient(4000, 3000), format="JPEG", exif=exif)
    picture = _open(preview(path, 800))
    assert picture.size == (600, 800)  # portrait once turned
    red, green, _ = _rgb(picture, 550, 400)  # the right side: the old top
    assert red > 200 and green < 230
    # The default box, and never enlarged.
    assert max(_open(preview(path)).size) == 1600
    small = _save(tmp_path / "small.jpg", _gradient(300, 200), format="JPEG")
    assert _open(preview(small, 800)).size == (300, 200)


def test_tiff_16_bit_cmyk_transparent_and_multi_page(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(1000, 3000, 256, dtype=np.uint16), (64, 1))
    grey16 = _save(tmp_path / "scope.tif", Image.fromarray(ramp), format="TIFF")
    picture = _open(preview(grey16, 256))
    assert picture.mode == "L"
    assert _grey(picture, 0, 10) < 10 and _grey(picture, 255, 10) > 245  # stretched
    cmyk = _save(
        tmp_path / "print.jpg", Image.new("CMYK", (120, 80), (0, 255, 255, 0)), format="JPEG"
    )
    r, g, b = _rgb(_open(preview(cmyk)), 60, 40)
    assert r > 200 and g < 80 and b < 80
    clear = Image.new("RGBA", (50, 50), (0, 0, 0, 0))
    r, g, b = _rgb(_open(preview(_save(tmp_path / "logo.png", clear, format="PNG"))), 5, 5)
    assert min(r, g, b) > 240  # transparent shows as white, not black
    pages = [Image.new("RGB", (64, 64), colour) for colour in ("blue", "yellow")]
    multi = _save(
        tmp_path / "pages.tif", pages[0], format="TIFF", save_all=True, append_images=pages[1:]
    )
    r, g, b = _rgb(_open(preview(multi)), 32, 32)
    assert b > 200 and r < 60  # the first page


def test_what_cannot_be_previewed(tmp_path: Path) -> None:
    garbage = tmp_path / "notes.jpg"
    garbage.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG" * 20)
    with pytest.raises(PhotoError) as caught:
        preview(garbage)
    assert caught.value.code == "unreadable"

    good = _save(tmp_path / "good.jpg", _gradient(640, 480), format="JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(PhotoError) as caught:
        preview(truncated)
    assert caught.value.code == "unreadable"

    side = int(MAX_PIXELS**0.5) + 10  # a whole-slide scan saved as one picture, or a bomb
    huge = _save(tmp_path / "slide.png", Image.new("1", (side, side)), format="PNG")
    with pytest.raises(PhotoError) as caught:
        preview(huge)
    assert caught.value.code == "too-large"

    with pytest.raises(ValueError, match="box must be"):
        preview(good, 10_000)
