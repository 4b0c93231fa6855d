"""Previews of photos attached to a consult: JPEG, PNG, TIFF, BMP, WebP, GIF, as a small JPEG.

A station photographs a rash, a wound, an X-ray film on a light box or a slide under a
microscope camera; the files run from a few hundred KB to 100 MB TIFFs, and browsers cannot show
TIFF at all. :func:`preview` decodes the first image (the first page of a multi-page TIFF),
honours the EXIF orientation, brings 16-bit and CMYK pictures to 8-bit RGB or grey, and fits it
into a square box without enlarging it, so a specialist on a township link looks at a few
hundred KB instead of the original. JPEGs are decoded at a reduced scale where the box allows
(``Image.draft``), which is most of the time saved on big photos.

Untrusted input: anything Pillow cannot read is a :class:`PhotoError` ``unreadable``; a picture
over :data:`MAX_PIXELS` (a whole-slide scan saved as one TIFF, a decompression bomb) is
``too-large`` and is never decoded.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Final, Literal, cast

from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["DEFAULT_BOX", "MAX_BOX", "MAX_PIXELS", "PhotoError", "preview"]

#: The longest side of a preview unless asked otherwise, and the largest that may be asked.
DEFAULT_BOX: Final = 1600
MAX_BOX: Final = 4096
#: Pictures with more pixels than this are not decoded (Pillow's own bomb limit is 89 M).
MAX_PIXELS: Final = 120_000_000
QUALITY: Final = 85

PhotoErrorCode = Literal["unreadable", "too-large"]


class PhotoError(Exception):
    def __init__(self, code: PhotoErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code: PhotoErrorCode = code
        self.message = message


def preview(path: Path, box: int = DEFAULT_BOX) -> bytes:
    """The picture at ``path`` as a JPEG fitting in ``box``×``box`` pixels. Blocking."""
    if not 16 <= box <= MAX_BOX:
        raise ValueError(f"box must be 16..{MAX_BOX}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise PhotoError(
                        "too-large",
                        f"{width}×{height} pixels is over the preview limit; download the file",
                    )
                image.draft("RGB", (box, box))  # JPEG only: decode at 1/2, 1/4 or 1/8 scale
                picture = ImageOps.exif_transpose(image)
                picture.thumbnail((box, box), Image.Resampling.LANCZOS)
                picture = _eight_bit(picture)
    except PhotoError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PhotoError("too-large", "too many pixels to preview; download the file") from None
    except UnidentifiedImageError:
        raise PhotoError("unreadable", "not a picture that can be previewed") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated, corrupt, odd modes
        raise PhotoError(
            "unreadable", f"the picture cannot be decoded ({type(exc).__name__})"
        ) from None
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=QUALITY, optimize=True)
    return out.getvalue()


def _eight_bit(image: Image.Image) -> Image.Image:
    """RGB or grey, 8 bits: what a JPEG holds."""
    if image.mode in ("RGB", "L"):
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit microscope and scanner pictures: stretch their own range onto 0..255.
        grey = image.convert("F") if image.mode != "F" else image
        low, high = cast(tuple[float, float], grey.getextrema())
        span = high - low or 1.0
        return grey.point(lambda v: (v - low) * 255.0 / span).convert("L")
    if image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")  # CMYK, YCbCr, LAB, 1-bit
