"""Rendered images for WADO-RS: the ``rendered`` and ``thumbnail`` resources (PS3.18 §8.3.5).

One frame is decoded (:mod:`imaging.frames`), then, for greyscale:

1. the Modality LUT: Rescale Slope and Intercept (per frame from the functional groups of an
   enhanced multi-frame image, else the top-level ones), or a Modality LUT Sequence;
2. the VOI LUT: the ``window`` asked for, else the file's first window (per frame, else top
   level) with its VOI LUT Function, else its VOI LUT Sequence, else the frame's min..max;
   functions LINEAR, LINEAR_EXACT and SIGMOID as in PS3.3 C.11.2.1.2, to 8 bits;
3. MONOCHROME1 is inverted, so that white is always the highest value.

Colour: RGB and YBR_FULL/YBR_FULL_422 (converted to RGB by the decoder) and PALETTE COLOR are
reduced to 8 bits per sample. The ``viewport`` scales the image to fit inside (vw, vh) keeping its
aspect ratio (square pixels assumed). JPEG or PNG, 8-bit greyscale or RGB.

:func:`parse_query` turns the query values (``window=40,400,linear``, ``viewport=256,256``,
``quality=80``) into :class:`RenderOptions` or raises :class:`RenderError`, whose message is fit
for a 400 problem's detail. Blocking (decoding and encoding): call through ``asyncio.to_thread``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, cast

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi

from imaging.frames import FrameError, PixelSource, open_pixels

__all__ = [
    "MEDIA_TYPES",
    "THUMBNAIL_SIZE",
    "RenderError",
    "RenderOptions",
    "VoiFunction",
    "parse_quality",
    "parse_query",
    "parse_viewport",
    "parse_window",
    "render",
    "thumbnail",
]

VoiFunction = Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"]
MediaType = Literal["image/jpeg", "image/png"]
MEDIA_TYPES: Final[tuple[MediaType, ...]] = ("image/jpeg", "image/png")
THUMBNAIL_SIZE: Final = 128
MAX_VIEWPORT: Final = 4096  # a larger viewport is refused rather than allocated
DEFAULT_QUALITY: Final = 90
THUMBNAIL_QUALITY: Final = 80

_FUNCTIONS: Final[dict[str, VoiFunction]] = {
    "linear": "LINEAR",
    "linear-exact": "LINEAR_EXACT",
    "linear_exact": "LINEAR_EXACT",
    "sigmoid": "SIGMOID",
}


class RenderError(ValueError):
    """A rendering parameter is refused; ``message`` is fit for a problem's ``detail``."""

    def __init__(self, parameter: str, message: str, *, status: int = 400) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class RenderOptions:
    window: tuple[float, float, VoiFunction] | None = None
    viewport: tuple[int, int] | None = None
    quality: int | None = None


# -- query parameters ---------------------------------------------------------------------------


def parse_query(query: Mapping[str, str]) -> RenderOptions:
    """The rendering options among ``query`` (other parameters are left to the caller)."""
    window = query.get("window")
    viewport = query.get("viewport")
    quality = query.get("quality")
    return RenderOptions(
        window=parse_window(window) if window is not None else None,
        viewport=parse_viewport(viewport) if viewport is not None else None,
        quality=parse_quality(quality) if quality is not None else None,
    )


def parse_window(text: str) -> tuple[float, float, VoiFunction]:
    """``center,width[,function]``; function ``linear`` (default), ``linear-exact``, ``sigmoid``."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) not in (2, 3):
        raise RenderError("window", "expected center,width,function (e.g. 40,400,linear)")
    center = _finite("window", "center", parts[0])
    width = _finite("window", "width", parts[1])
    name = parts[2].lower() if len(parts) == 3 else "linear"
    if name not in _FUNCTIONS:
        raise RenderError("window", "function must be linear, linear-exact or sigmoid")
    return _check_window(center, width, _FUNCTIONS[name])


def parse_viewport(text: str) -> tuple[int, int]:
    """``vw,vh``: the rendered image fits inside, keeping its aspect ratio."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) == 6:
        raise RenderError("viewport", "a source region (sx,sy,sw,sh) is not supported")
    if len(parts) != 2:
        raise RenderError("viewport", "expected vw,vh (e.g. 256,256)")
    sizes = []
    for name, part in zip(("vw", "vh"), parts, strict=True):
        if not part.isascii() or not part.isdigit():
            raise RenderError("viewport", f"{name} must be a positive integer")
        sizes.append(int(part))
    return _check_viewport((sizes[0], sizes[1]))


def parse_quality(text: str) -> int:
    """An integer from 1 (smallest) to 100 (best)."""
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        raise RenderError("quality", "must be an integer from 1 to 100")
    return _check_quality(int(text))


def _finite(parameter: str, name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RenderError(parameter, f"{name} must be a number") from None
    if not math.isfinite(value):
        raise RenderError(parameter, f"{name} must be a finite number")
    return value


def _check_window(center: float, width: float, function: str) -> tuple[float, float, VoiFunction]:
    name = function.upper().replace("-", "_")
    if name not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        raise RenderError("window", "function must be linear, linear-exact or sigmoid")
    if not (math.isfinite(center) and math.isfinite(width)):
        raise RenderError("window", "center and width must be finite numbers")
    if name == "LINEAR" and width < 1:
        raise RenderError("window", "width must be at least 1 for the linear function")
    if width <= 0:
        raise RenderError("window", "width must be positive")
    return center, width, cast(VoiFunction, name)


def _check_viewport(viewport: tuple[int, int]) -> tuple[int, int]:
    if not all(1 <= size <= MAX_VIEWPORT for size in viewport):
        raise RenderError("viewport", f"vw and vh must be from 1 to {MAX_VIEWPORT}")
    return viewport


def _check_quality(quality: int) -> int:
    if not 1 <= quality <= 100:
        raise RenderError("quality", "must be an integer from 1 to 100")
    return quality


# -- rendering ----------------------------------------------------------------------------------


def render(
    path: Path,
    frame: int,
    *,
    media_type: str = "image/jpeg",
    window: tuple[float, float, str] | None = None,
    viewport: tuple[int, int] | None = None,
    quality: int | None = None,
) -> bytes:
    """Frame ``frame`` (1-based) of the instance at ``path`` as a JPEG or PNG image."""
    if media_type not in MEDIA_TYPES:
        raise RenderError("accept", "rendered images are image/jpeg or image/png", status=406)
    voi = _check_window(*window) if window is not None else None
    if viewport is not None:
        viewport = _check_viewport(viewport)
    if quality is not None:
        quality = _check_quality(quality)
    with open_pixels(path) as source:
        image = _image(source, frame, voi)
    if viewport is not None:
        image = _fit(image, viewport, enlarge=True)
    return _encode(image, media_type, quality or DEFAULT_QUALITY)


def thumbnail(
    path: Path, *, media_type: str = "image/jpeg", viewport: tuple[int, int] | None = None
) -> bytes:
    """The middle frame, fitting in ``viewport`` (default :data:`THUMBNAIL_SIZE` squared),
    never enlarged."""
    if media_type not in MEDIA_TYPES:
        raise RenderError("accept", "rendered images are image/jpeg or image/png", status=406)
    box = _check_viewport(viewport) if viewport is not None else (THUMBNAIL_SIZE, THUMBNAIL_SIZE)
    with open_pixels(path) as source:
        image = _image(source, (source.number_of_frames + 1) // 2, None)
    image = _fit(image, box, enlarge=False)
    return _encode(image, media_type, THUMBNAIL_QUALITY)


def _image(
    source: PixelSource, frame: int, window: tuple[float, float, VoiFunction] | None
) -> Image.Image:
    pixels, properties = source.decode(frame)
    ds = source.dataset
    photometric = str(properties.get("photometric_interpretation", ""))
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        values = _modality(pixels, ds, frame)
        del pixels  # only the modality values are needed from here
        grey = _greyscale(values, ds, frame, window)
        if photometric == "MONOCHROME1":
            np.subtract(255, grey, out=grey)
        return Image.fromarray(grey)
    if photometric == "RGB":
        bits = int(properties.get("bits_stored") or ds.get("BitsStored") or 8)
        return Image.fromarray(_to_8bit(pixels, bits))
    if photometric == "PALETTE COLOR":
        try:
            rgb = apply_color_lut(pixels, ds)
        except Exception as exc:  # a palette that does not fit the pixel values
            raise FrameError("malformed", f"bad palette: {type(exc).__name__}") from None
        bits = 16 if rgb.dtype.itemsize > 1 else 8
        return Image.fromarray(_to_8bit(rgb, bits))
    raise FrameError("unsupported", f"cannot render photometric interpretation {photometric!r}")


def _greyscale(
    values: np.ndarray[Any, Any],
    ds: Dataset,
    frame: int,
    window: tuple[float, float, VoiFunction] | None,
) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Modality values to 8-bit display values through the VOI stage."""
    if window is None:
        window = _file_window(ds, frame)
    if window is None and "VOILUTSequence" in ds:
        try:
            lut_values = apply_voi(values, ds)
            descriptor = ds.VOILUTSequence[0].LUTDescriptor
            return _scale(lut_values, 0.0, float(2 ** int(descriptor[2]) - 1))
        except Exception:  # noqa: S110 (an unusable VOI LUT: fall back to min..max)
            pass
    if window is None:
        low, high = float(values.min()), float(values.max())
        return _scale(values, low, high)
    return _apply_window(values, *window)


def _modality(pixels: np.ndarray[Any, Any], ds: Dataset, frame: int) -> np.ndarray[Any, Any]:
    item = _functional_item(ds, frame, "PixelValueTransformationSequence")
    source = item if item is not None and "RescaleSlope" in item else ds
    if "RescaleSlope" in source or "RescaleIntercept" in source:
        slope = _number(source.get("RescaleSlope"), 1.0)
        intercept = _number(source.get("RescaleIntercept"), 0.0)
        values = pixels.astype(np.float32)
        if slope != 1.0:
            values *= slope
        if intercept != 0.0:
            values += intercept
        return values
    if "ModalityLUTSequence" in ds:
        try:
            return cast(np.ndarray[Any, Any], apply_modality_lut(pixels, ds)).astype(np.float32)
        except Exception as exc:  # a table that does not fit the pixel values
            raise FrameError("malformed", f"bad Modality LUT: {type(exc).__name__}") from None
    return pixels.astype(np.float32)


def _file_window(ds: Dataset, frame: int) -> tuple[float, float, VoiFunction] | None:
    item = _functional_item(ds, frame, "FrameVOILUTSequence")
    for source in (item, ds):
        if source is None or "WindowCenter" not in source or "WindowWidth" not in source:
            continue
        center = _number(source.get("WindowCenter"), math.nan)
        width = _number(source.get("WindowWidth"), math.nan)
        function = str(source.get("VOILUTFunction") or "LINEAR").strip().upper()
        try:
            return _check_window(center, width, function)
        except RenderError:  # an unusable window in the file: try the next source
            continue
    return None


def _functional_item(ds: Dataset, frame: int, keyword: str) -> Dataset | None:
    """The item of ``keyword`` for ``frame`` in the per-frame, else shared, functional groups."""
    for groups_keyword, index in (
        ("PerFrameFunctionalGroupsSequence", frame - 1),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        groups = ds.get(groups_keyword)
        if groups is not None and index < len(groups):
            sequence = groups[index].get(keyword)
            if sequence:
                return cast(Dataset, sequence[0])
    return None


def _number(value: object, default: float) -> float:
    if isinstance(value, MultiValue):
        value = value[0] if value else None
    try:
        number = float(cast(Any, value))
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _apply_window(
    values: np.ndarray[Any, Any], center: float, width: float, function: VoiFunction
) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """PS3.3 C.11.2.1.2 and C.11.2.1.3.1 to an output range of 0..255."""
    if function == "SIGMOID":
        out = 255.0 / (1.0 + np.exp(-4.0 * (values.astype(np.float64) - center) / width))
        return _round(out)
    if function == "LINEAR_EXACT":
        return _scale(values, center - width / 2, center + width / 2)
    if width <= 1:  # LINEAR with width 1: a threshold
        return np.where(values > center - 0.5, 255, 0).astype(np.uint8)
    low = center - 0.5 - (width - 1) / 2
    return _scale(values, low, low + width - 1)


def _scale(
    values: np.ndarray[Any, Any], low: float, high: float
) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """``low`` → 0 and ``high`` → 255, linearly, clipped."""
    if high <= low:
        return np.where(values > low, 255, 0).astype(np.uint8)
    out = values.astype(np.float32, copy=False)  # every caller hands over an array of its own
    out -= low
    out *= 255.0 / (high - low)
    return _round(out)


def _round(values: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.uint8]]:
    np.clip(values, 0.0, 255.0, out=values)
    values += 0.5
    return values.astype(np.uint8)


def _to_8bit(pixels: np.ndarray[Any, Any], bits: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    if pixels.dtype == np.uint8 and bits <= 8:
        return pixels
    if pixels.dtype.kind == "f":
        return _scale(pixels, float(pixels.min()), float(pixels.max()))
    shift = max(bits - 8, 0)
    return (pixels.astype(np.uint32) >> shift).clip(0, 255).astype(np.uint8)


def _fit(image: Image.Image, viewport: tuple[int, int], *, enlarge: bool) -> Image.Image:
    width, height = image.size
    scale = min(viewport[0] / width, viewport[1] / height)
    if not enlarge:
        scale = min(scale, 1.0)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)


def _encode(image: Image.Image, media_type: MediaType, quality: int) -> bytes:
    out = io.BytesIO()
    if media_type == "image/png":
        image.save(out, format="PNG")
    else:
        image.save(out, format="JPEG", quality=quality)
    return out.getvalue()
