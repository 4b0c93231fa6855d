"""Rendered and thumbnail images, decoded back with Pillow and checked value by value."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut
from pydicom.sequence import Sequence

from imaging.frames import FrameError
from imaging.render import (
    MAX_VIEWPORT,
    RenderError,
    RenderOptions,
    parse_quality,
    parse_query,
    parse_viewport,
    parse_window,
    render,
    thumbnail,
)
from tests.imaging.dicomfiles import bundled
from tests.imaging.pixelfiles import image_dataset, write_native

RAW = np.array([[0, 30, 60, 99, 130, 170, 198, 260, 1000]], dtype=np.uint16)


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _pixels(data: bytes) -> np.ndarray[Any, Any]:
    return np.asarray(_open(data))


def _expected(x: float, center: float, width: float, function: str) -> int:
    """PS3.3 C.11.2.1.2 (LINEAR, LINEAR_EXACT) and C.11.2.1.3.1 (SIGMOID) to 0..255."""
    if function == "LINEAR":
        if x <= center - 0.5 - (width - 1) / 2:
            y = 0.0
        elif x > center - 0.5 + (width - 1) / 2:
            y = 255.0
        else:
            y = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255
    elif function == "LINEAR_EXACT":
        if x <= center - width / 2:
            y = 0.0
        elif x > center + width / 2:
            y = 255.0
        else:
            y = ((x - center) / width + 0.5) * 255
    else:
        y = 255 / (1 + math.exp(-4 * (x - center) / width))
    return math.floor(y + 0.5)


def _synthetic(tmp_path: Path, name: str = "raw.dcm", **values: Any) -> Path:
    ds = image_dataset(RAW.shape[0], RAW.shape[1], **values)
    return write_native(tmp_path / name, ds, RAW)


# -- greyscale ----------------------------------------------------------------------------------


def test_png_of_a_16_bit_ct_is_8_bit_greyscale() -> None:
    ct = bundled("CT_small.dcm")
    assert dcmread(ct).BitsAllocated == 16
    image = _open(render(ct, 1, media_type="image/png"))
    assert (image.format, image.mode, image.size) == ("PNG", "L", (128, 128))
    pixels = np.asarray(image)
    assert pixels.min() == 0 and pixels.max() == 255  # no window in the file: min..max


def test_jpeg_is_the_default() -> None:
    image = _open(render(bundled("CT_small.dcm"), 1))
    assert (image.format, image.mode, image.size) == ("JPEG", "L", (128, 128))


@pytest.mark.parametrize(
    ("center", "width", "function"),
    [(100, 201, "LINEAR"), (100, 200, "LINEAR_EXACT"), (100, 80, "SIGMOID"), (60, 1, "LINEAR")],
)
def test_window_functions_value_by_value(
    tmp_path: Path, center: float, width: float, function: str
) -> None:
    path = _synthetic(tmp_path)
    got = _pixels(render(path, 1, media_type="image/png", window=(center, width, function)))
    want = [_expected(float(x), center, width, function) for x in RAW[0]]
    assert got[0].tolist() == want


def test_rescale_slope_and_intercept_come_first(tmp_path: Path) -> None:
    path = _synthetic(tmp_path, RescaleSlope=2, RescaleIntercept=-100)
    got = _pixels(render(path, 1, media_type="image/png", window=(100, 201, "LINEAR")))
    want = [_expected(2.0 * x - 100, 100, 201, "LINEAR") for x in RAW[0]]
    assert got[0].tolist() == want


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    window = (100.0, 201.0, "LINEAR")
    mono2 = _pixels(
        render(_synthetic(tmp_path, "m2.dcm"), 1, media_type="image/png", window=window)
    )
    mono1_path = _synthetic(tmp_path, "m1.dcm", photometric="MONOCHROME1")
    mono1 = _pixels(render(mono1_path, 1, media_type="image/png", window=window))
    assert mono1.tolist() == (255 - mono2).tolist()
    assert mono1[0, -1] == 0  # the highest value is black


def test_the_files_first_window_and_function_are_used(tmp_path: Path) -> None:
    path = _synthetic(
        tmp_path, WindowCenter=[100, 5000], WindowWidth=[80, 10], VOILUTFunction="SIGMOID"
    )
    got = _pixels(render(path, 1, media_type="image/png"))
    assert got[0].tolist() == [_expected(float(x), 100, 80, "SIGMOID") for x in RAW[0]]
    mr = bundled("MR_small.dcm")
    assert (dcmread(mr).WindowCenter, dcmread(mr).WindowWidth) == (600, 1600)
    default = _pixels(render(mr, 1, media_type="image/png"))
    explicit = _pixels(render(mr, 1, media_type="image/png", window=(600, 1600, "LINEAR")))
    other = _pixels(render(mr, 1, media_type="image/png", window=(300, 800, "LINEAR")))
    assert np.array_equal(default, explicit)
    assert not np.array_equal(default, other)


def test_min_max_without_any_window(tmp_path: Path) -> None:
    got = _pixels(render(_synthetic(tmp_path), 1, media_type="image/png"))[0]
    assert got[0] == 0 and got[-1] == 255
    assert got.tolist() == sorted(got.tolist())
    assert got[4] == math.floor(130 / 1000 * 255 + 0.5)


def test_window_changes_move_the_pixels_the_expected_way() -> None:
    ct = bundled("CT_small.dcm")

    def mean_and_spread(center: float, width: float) -> tuple[float, float]:
        pixels = _pixels(render(ct, 1, media_type="image/png", window=(center, width, "linear")))
        return float(pixels.mean()), float(pixels.std())

    soft = mean_and_spread(40, 400)
    higher = mean_and_spread(400, 400)
    narrow = mean_and_spread(40, 100)
    assert higher[0] < soft[0]  # a higher centre darkens
    assert narrow[1] > soft[1]  # a narrower window raises contrast


def test_per_frame_functional_groups(tmp_path: Path) -> None:
    """Enhanced multi-frame: rescale shared, a window of its own for each frame."""

    def group(**values: Any) -> Dataset:
        item = Dataset()
        for keyword, value in values.items():
            setattr(item, keyword, value)
        return item

    ds = image_dataset(2, 2, frames=2)
    shared = group(
        PixelValueTransformationSequence=Sequence(
            [group(RescaleSlope=1, RescaleIntercept=-1000, RescaleType="HU")]
        )
    )
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PerFrameFunctionalGroupsSequence = Sequence(
        [
            group(FrameVOILUTSequence=Sequence([group(WindowCenter=500, WindowWidth=1001)])),
            group(FrameVOILUTSequence=Sequence([group(WindowCenter=0, WindowWidth=100)])),
        ]
    )
    path = write_native(tmp_path / "enhanced.dcm", ds, np.full((2, 2, 2), 1500, np.uint16))
    first = _pixels(render(path, 1, media_type="image/png"))
    second = _pixels(render(path, 2, media_type="image/png"))
    assert first.tolist() == [[_expected(500, 500, 1001, "LINEAR")] * 2] * 2
    assert second.tolist() == [[255, 255], [255, 255]]


# -- colour -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "SC_rgb_small_odd.dcm",  # native RGB
        "SC_ybr_full_422_uncompressed.dcm",  # native YBR_FULL_422
        "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline in YBR_FULL
        "SC_rgb_rle.dcm",
        "examples_ybr_color.dcm",
    ],
)
def test_colour_is_rgb_as_pydicom_converts_it(name: str) -> None:
    path = bundled(name)
    ds = dcmread(path)
    reference = ds.pixel_array if int(ds.get("NumberOfFrames", 1)) == 1 else ds.pixel_array[0]
    image = _open(render(path, 1, media_type="image/png"))
    assert image.mode == "RGB"
    assert np.array_equal(np.asarray(image), reference)


def test_sixteen_bit_colour_keeps_the_high_byte() -> None:
    path = bundled("SC_rgb_rle_16bit.dcm")
    reference = (dcmread(path).pixel_array >> 8).astype(np.uint8)
    assert np.array_equal(_pixels(render(path, 1, media_type="image/png")), reference)


def test_colour_bars_survive_jpeg() -> None:
    image = _pixels(render(bundled("SC_rgb_jpeg_dcmtk.dcm"), 1))
    red = image[3, 50].astype(int)
    assert red[0] > 200 and red[1] < 50 and red[2] < 50


def test_palette_colour() -> None:
    path = bundled("examples_palette.dcm")
    ds = dcmread(path)
    rgb = apply_color_lut(ds.pixel_array, ds)
    reference = (rgb >> 8).astype(np.uint8) if rgb.dtype.itemsize > 1 else rgb
    image = _open(render(path, 1, media_type="image/png"))
    assert image.mode == "RGB"
    assert np.array_equal(np.asarray(image), reference)


# -- size, quality, thumbnails ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "viewport", "size"),
    [
        ("CT_small.dcm", (256, 100), (100, 100)),
        ("JPEG2000.dcm", (256, 256), (64, 256)),  # 256 wide, 1024 high
        ("MR_small.dcm", (200, 300), (200, 200)),  # enlarged to fit
        ("examples_palette.dcm", (400, 400), (400, 175)),
    ],
)
def test_viewport_keeps_the_aspect_ratio(
    name: str, viewport: tuple[int, int], size: tuple[int, int]
) -> None:
    assert _open(render(bundled(name), 1, viewport=viewport)).size == size


def test_quality_trades_size() -> None:
    ct = bundled("CT_small.dcm")
    small = render(ct, 1, quality=10)
    large = render(ct, 1, quality=95)
    assert len(small) < len(large)
    assert _open(small).size == _open(large).size


@pytest.mark.parametrize(
    ("name", "size"),
    [("CT_small.dcm", (128, 128)), ("JPEG2000.dcm", (32, 128)), ("MR_small.dcm", (64, 64))],
)
def test_thumbnail_fits_and_is_never_enlarged(name: str, size: tuple[int, int]) -> None:
    image = _open(thumbnail(bundled(name)))
    assert (image.format, image.size) == ("JPEG", size)


def test_thumbnail_shows_the_middle_frame(tmp_path: Path) -> None:
    ds = image_dataset(16, 16, frames=4, WindowCenter=1000, WindowWidth=3001)
    frames = np.stack([np.full((16, 16), value, np.uint16) for value in (0, 1000, 2000, 3000)])
    path = write_native(tmp_path / "four.dcm", ds, frames)
    middle = float(_pixels(thumbnail(path)).mean())
    assert abs(middle - _expected(1000, 1000, 3001, "LINEAR")) < 2  # frame 2 of 4


# -- refusals -----------------------------------------------------------------------------------


def test_render_refusals(tmp_path: Path) -> None:
    ct = bundled("CT_small.dcm")
    for number in (0, 2):
        with pytest.raises(FrameError) as caught:
            render(ct, number)
        assert caught.value.code == "no-such-frame"
    with pytest.raises(FrameError, match="no-pixel-data"):
        render(bundled("test-SR.dcm"), 1)
    with pytest.raises(FrameError, match="no-pixel-data"):
        thumbnail(bundled("waveform_ecg.dcm"))
    with pytest.raises(RenderError) as refused:
        render(ct, 1, media_type="image/gif")
    assert refused.value.status == 406
    for window in [(40.0, 0.0, "LINEAR"), (40.0, 0.5, "LINEAR"), (40.0, 10.0, "cubic")]:
        with pytest.raises(RenderError) as refused:
            render(ct, 1, window=window)
        assert (refused.value.parameter, refused.value.status) == ("window", 400)
    with pytest.raises(RenderError, match="viewport"):
        render(ct, 1, viewport=(0, 10))
    with pytest.raises(RenderError, match="quality"):
        render(ct, 1, quality=0)


def test_query_parsing() -> None:
    assert parse_query({}) == RenderOptions()
    assert parse_query(
        {"window": "40,400,linear", "viewport": "256,256", "quality": "80", "other": "x"}
    ) == RenderOptions(window=(40.0, 400.0, "LINEAR"), viewport=(256, 256), quality=80)
    assert parse_window("-600.5, 1500") == (-600.5, 1500.0, "LINEAR")
    assert parse_window("40,400,LINEAR-EXACT") == (40.0, 400.0, "LINEAR_EXACT")
    assert parse_window("40,0.5,sigmoid") == (40.0, 0.5, "SIGMOID")
    assert parse_viewport(f"1,{MAX_VIEWPORT}") == (1, MAX_VIEWPORT)
    assert parse_quality(" 100 ") == 100


@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("window", ""),
        ("window", "40"),
        ("window", "abc,400"),
        ("window", "40,400,cubic"),
        ("window", "40,400,linear,extra"),
        ("window", "nan,400"),
        ("window", "40,inf"),
        ("window", "40,0,linear"),
        ("window", "40,-5,sigmoid"),
        ("window", "40,0.5,linear"),
        ("viewport", "256"),
        ("viewport", "0,256"),
        ("viewport", "-1,256"),
        ("viewport", "a,b"),
        ("viewport", "2.5,3"),
        ("viewport", "１２,３"),  # full-width digits are digits to str.isdigit, not to us
        ("viewport", f"{MAX_VIEWPORT + 1},10"),
        ("viewport", "256,256,0,0,10,10"),
        ("quality", "0"),
        ("quality", "101"),
        ("quality", "8.5"),
        ("quality", "high"),
        ("quality", ""),
    ],
)
def test_query_refusals(parameter: str, value: str) -> None:
    with pytest.raises(RenderError) as caught:
        parse_query({parameter: value})
    assert caught.value.parameter == parameter
    assert caught.value.status == 400
    assert caught.value.message
