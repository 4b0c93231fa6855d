"""Frames of a stored instance: located on disk, read as stored, decoded on demand.

WADO-RS serves pixel data frame by frame (PS3.18 §8.3.5, 1-based frame numbers). A file may hold
hundreds of megabytes of pixel data, so nothing here reads it whole:

* the data set is parsed up to the pixel data element and stops there (values over
  :data:`DEFER_SIZE` before it are skipped, not read);
* native pixel data: frame *n* is one seek and one read of exactly its bytes (a 1-bit frame
  that does not start on a byte boundary is read with its neighbouring bits and re-aligned);
* encapsulated pixel data: the Extended Offset Table, else the Basic Offset Table, locate the
  frame; without either, fragment item headers are walked (8 bytes read per fragment, payloads
  skipped by seeking). Several fragments per frame are joined; without an offset table they are
  grouped by the codestream start markers (JPEG SOI, JPEG 2000 SOC) when there are more
  fragments than frames;
* a deflated data set (Deflated Explicit VR Little Endian) is inflated as a stream, in bounded
  memory, up to the frame wanted: cost grows with the frame's position, memory does not.

:func:`decode_frame` hands one frame's bytes to pydicom's decoders (:mod:`pydicom.pixels`),
which use pylibjpeg (libjpeg, openjpeg, rle plugins), python-gdcm or Pillow when installed
(``pip install '.[codecs]'``). Errors are :class:`FrameError` with a stable ``code``.

Blocking: every function here reads files. From asyncio, call through ``asyncio.to_thread``.
"""

from __future__ import annotations

import itertools
import struct
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Final, Literal, cast

import numpy as np
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filereader import read_dataset
from pydicom.multival import MultiValue
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import as_pixel_options
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRLittleEndian

from imaging.inflate import InflatedStream

__all__ = [
    "DEFER_SIZE",
    "Frame",
    "FrameError",
    "FrameErrorCode",
    "PixelSource",
    "decode_frame",
    "frame_count",
    "open_pixels",
    "read_frame",
    "read_frames",
]

FrameErrorCode = Literal["no-pixel-data", "no-such-frame", "unsupported", "malformed"]

# Values longer than this, before the pixel data, are skipped rather than read.
DEFER_SIZE: Final = 1 << 20

IMPLICIT_VR_LE: Final = "1.2.840.10008.1.2"
EXPLICIT_VR_BE: Final = "1.2.840.10008.1.2.2"
DEFLATED_LE: Final = "1.2.840.10008.1.2.1.99"
ENCAPSULATED_UNCOMPRESSED: Final = "1.2.840.10008.1.2.1.98"
#: Process 2 & 4: 12-bit samples are decoded only by libjpeg (pylibjpeg-libjpeg, GPL-3.0), which
#: is an opt-in extra (``codecs-gpl``); GDCM and Pillow decode the rest of the JPEG family.
JPEG_EXTENDED: Final = "1.2.840.10008.1.2.4.51"
# MPEG-2, MPEG-4 AVC/H.264 and HEVC/H.265: one stream, no frame can be cut out of it.
_VIDEO_PREFIX: Final = "1.2.840.10008.1.2.4.10"

_PIXEL_TAGS: Final = {0x7FE00008: "FloatPixelData", 0x7FE00009: "DoubleFloatPixelData"} | {
    0x7FE00010: "PixelData"
}
_ITEM: Final = 0xFFFEE000
_SEQUENCE_DELIMITER: Final = 0xFFFEE0DD
_UNDEFINED: Final = 0xFFFFFFFF
_LONG_VRS: Final = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
# First bytes of a codestream: a fragment starting so starts a new frame.
_FRAME_MARKERS: Final = (b"\xff\xd8\xff", b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP  ")

# PS3.18 Table 8.7.3-2: the media type of one frame, by transfer syntax.
_MEDIA_TYPES: Final = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.4.110": "image/jxl",
    "1.2.840.10008.1.2.4.111": "image/jxl",
    "1.2.840.10008.1.2.4.112": "image/jxl",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}

_STATUS: Final[dict[FrameErrorCode, int]] = {
    "no-pixel-data": 404,
    "no-such-frame": 404,
    "unsupported": 406,
    "malformed": 500,
}


class FrameError(Exception):
    """A frame cannot be served; ``code`` says why, ``status`` is the HTTP status it maps to."""

    def __init__(self, code: FrameErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code: FrameErrorCode = code
        self.message = message
        self.status = _STATUS[code]


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame's bytes as stored (for encapsulated pixel data, its codestream).

    For a deflated data set the bytes are the inflated ones (Explicit VR Little Endian); for
    Explicit VR Big Endian (retired) they are big-endian as stored, except 8-bit data in OW
    words, given in pixel order (a frame may start inside a word). A 1-bit frame that starts
    inside a byte is realigned to start on one.
    """

    number: int  # 1-based
    data: bytes = field(repr=False)
    transfer_syntax_uid: str
    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    photometric_interpretation: str
    encapsulated: bool

    @property
    def media_type(self) -> str:
        """The media type a WADO-RS frame response gives these bytes (PS3.18 Table 8.7.3-2)."""
        return _MEDIA_TYPES.get(self.transfer_syntax_uid, "application/octet-stream")


def frame_count(path: Path) -> int:
    """How many frames the instance has (``NumberOfFrames``, 1 when absent)."""
    with open_pixels(path) as source:
        return source.number_of_frames


def read_frame(path: Path, number: int) -> Frame:
    """Frame ``number`` (1-based) as stored, without reading the rest of the pixel data."""
    with open_pixels(path) as source:
        return source.read(number)


def read_frames(path: Path, numbers: Iterable[int]) -> Iterator[Frame]:
    """Several frames of one file, parsed once (the file stays open until exhausted)."""
    with open_pixels(path) as source:
        for number in numbers:
            yield source.read(number)


def decode_frame(path: Path, number: int) -> np.ndarray[Any, Any]:
    """Frame ``number`` decoded to pixels, as ``pydicom`` gives them (YBR converted to RGB)."""
    with open_pixels(path) as source:
        return source.decode(number)[0]


def open_pixels(path: Path) -> PixelSource:
    """Parse ``path`` up to its pixel data; use as a context manager to close the file."""
    return PixelSource(path)


class PixelSource:
    """An open Part-10 file positioned by its pixel data element. Not thread-safe.

    ``dataset`` holds every top-level element before the pixel data (values over
    :data:`DEFER_SIZE` left unread), for the attributes rendering needs.
    """

    def __init__(self, path: Path) -> None:
        try:
            self._fh: BinaryIO = path.open("rb")
        except OSError as exc:
            raise FrameError("malformed", f"cannot read the file: {exc.strerror}") from None
        self._fragments: tuple[array[int], array[int]] | None = None
        self._frame_starts: array[int] | None = None
        try:
            self._locate()
        except BaseException:
            self._fh.close()
            raise

    def __enter__(self) -> PixelSource:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._fh.close()

    # -- locating the pixel data ----------------------------------------------------------------

    def _locate(self) -> None:
        ts, start = _read_meta(self._fh)
        self.transfer_syntax_uid = ts
        self._little = ts != EXPLICIT_VR_BE
        implicit = ts == IMPLICIT_VR_LE
        self._stream: BinaryIO = (
            cast(BinaryIO, InflatedStream(self._fh, start)) if ts == DEFLATED_LE else self._fh
        )
        self._stream.seek(0 if ts == DEFLATED_LE else start)  # the inflated stream starts at 0
        try:
            self.dataset: Dataset = read_dataset(
                self._stream,
                is_implicit_VR=implicit,
                is_little_endian=self._little,
                stop_when=_at_pixel_data,
                defer_size=DEFER_SIZE,
            )
        except Exception as exc:  # the bytes before the pixel data do not parse
            raise FrameError("malformed", f"cannot parse: {type(exc).__name__}") from None
        endian = "<" if self._little else ">"
        header = self._stream.read(8)
        if len(header) < 8:
            raise FrameError("no-pixel-data", "the instance has no pixel data")
        vr: bytes | None
        # A VR is two capital letters; some writers encode implicit VR under an explicit
        # transfer syntax, which pydicom detects (with a warning), and so must we.
        if implicit or not (b"AA" <= header[4:6] <= b"ZZ" and header[5:6].isupper()):
            group, element, length = struct.unpack(endian + "HHI", header)
            vr = None
        else:
            group, element, vr, length = struct.unpack(endian + "HH2sH", header)
            if vr in _LONG_VRS:
                (length,) = struct.unpack(endian + "I", _read_exact(self._stream, 4))
        tag = group << 16 | element
        if tag not in _PIXEL_TAGS:  # read_dataset stopped at EOF, or before an odd tag
            raise FrameError("no-pixel-data", "the instance has no pixel data")
        self._keyword = _PIXEL_TAGS[tag]
        self._vr = vr.decode("ascii", "replace") if vr else None
        self._value_offset = self._stream.tell()
        self._length = length
        self.encapsulated = length == _UNDEFINED

        ds = self.dataset
        self.rows = _attr_int(ds, "Rows", 0)
        self.columns = _attr_int(ds, "Columns", 0)
        self.samples_per_pixel = _attr_int(ds, "SamplesPerPixel", 1)
        self.bits_allocated = _attr_int(ds, "BitsAllocated", 0)
        self.photometric_interpretation = str(ds.get("PhotometricInterpretation", "")).strip()
        self.number_of_frames = _attr_int(ds, "NumberOfFrames", 1)
        if self.number_of_frames < 1:
            raise FrameError("malformed", "NumberOfFrames is not a positive integer")
        if min(self.rows, self.columns, self.samples_per_pixel, self.bits_allocated) < 1:
            raise FrameError("malformed", "the image pixel attributes are missing or zero")

    # -- frames as stored -----------------------------------------------------------------------

    def read(self, number: int) -> Frame:
        """Frame ``number`` (1-based) as stored."""
        if isinstance(number, bool) or not isinstance(number, int):
            raise FrameError("no-such-frame", "a frame number is a positive integer")
        if not 1 <= number <= self.number_of_frames:
            raise FrameError(
                "no-such-frame", f"frame {number} is not in 1..{self.number_of_frames}"
            )
        data = self._encapsulated_frame(number) if self.encapsulated else self._native(number)
        return Frame(
            number=number,
            data=data,
            transfer_syntax_uid=self.transfer_syntax_uid,
            rows=self.rows,
            columns=self.columns,
            samples_per_pixel=self.samples_per_pixel,
            bits_allocated=self.bits_allocated,
            photometric_interpretation=self.photometric_interpretation,
            encapsulated=self.encapsulated,
        )

    def _native(self, number: int) -> bytes:
        if _is_encapsulated_syntax(self.transfer_syntax_uid):
            raise FrameError("malformed", "encapsulated transfer syntax with native pixel data")
        bits = self.rows * self.columns * self.samples_per_pixel * self.bits_allocated
        if self.photometric_interpretation == "YBR_FULL_422" and self.samples_per_pixel == 3:
            bits = bits // 3 * 2  # two luminance samples share one pair of chrominance samples
        start_bit = (number - 1) * bits
        if start_bit + bits > self._length * 8:
            raise FrameError("malformed", f"the pixel data ends before frame {number}")
        first, end = start_bit // 8, -(-(start_bit + bits) // 8)
        if (
            self.transfer_syntax_uid == EXPLICIT_VR_BE
            and self._vr == "OW"
            and self.bits_allocated == 8
        ):
            # Bytes swapped in pairs (OW words) while a frame may start inside a word: undo
            # the swap, so these bytes are in pixel order.
            aligned = first - first % 2
            self._stream.seek(self._value_offset + aligned)
            words = _read_exact(self._stream, end - aligned + (end - aligned) % 2)
            swapped = np.frombuffer(words, np.uint16).byteswap().tobytes()
            return swapped[first - aligned : end - aligned]
        self._stream.seek(self._value_offset + first)
        raw = _read_exact(self._stream, end - first)
        if start_bit % 8 == 0 and bits % 8 == 0:
            return raw
        # 1-bit data: frames are packed back to back, so realign this one to a byte boundary.
        unpacked = np.unpackbits(np.frombuffer(raw, np.uint8), bitorder="little")
        skip = start_bit - first * 8
        return np.packbits(unpacked[skip : skip + bits], bitorder="little").tobytes()

    def _encapsulated_frame(self, number: int) -> bytes:
        ts = self.transfer_syntax_uid
        if ts.startswith(_VIDEO_PREFIX):
            raise FrameError("unsupported", "video pixel data is one stream: no single frame")
        if not _is_encapsulated_syntax(ts):
            raise FrameError("malformed", "native transfer syntax with encapsulated pixel data")
        starts, lengths = self._locate_frame(number)
        parts = []
        for offset, length in zip(starts, lengths, strict=True):
            self._stream.seek(offset)
            parts.append(_read_exact(self._stream, length))
        return b"".join(parts) if len(parts) != 1 else parts[0]

    def _locate_frame(self, number: int) -> tuple[list[int], list[int]]:
        """Payload offsets and lengths of the fragments of frame ``number``."""
        self._stream.seek(self._value_offset)
        tag, bot_length = _item_header(self._stream)
        if tag != _ITEM or bot_length == _UNDEFINED or bot_length % 4:
            raise FrameError("malformed", "encapsulated pixel data has no Basic Offset Table")
        first = self._value_offset + 8 + bot_length
        frames = self.number_of_frames

        eot = _extended_offsets(self.dataset, frames)
        if eot is not None:  # one fragment per frame, by definition of the table
            offsets, eot_lengths = eot
            self._stream.seek(first + offsets[number - 1])
            tag, length = _item_header(self._stream)
            if tag != _ITEM or length < eot_lengths[number - 1]:
                raise FrameError("malformed", "the Extended Offset Table points outside an item")
            return [first + offsets[number - 1] + 8], [eot_lengths[number - 1]]

        if bot_length == 4 * frames and bot_length <= DEFER_SIZE:
            bot = struct.unpack(f"<{frames}I", _read_exact(self._stream, bot_length))
            if bot[0] == 0 and all(a < b for a, b in itertools.pairwise(bot)):
                stop = first + bot[number] if number < frames else None
                found = _walk_items(self._stream, first + bot[number - 1], stop)
                if not found[0]:
                    raise FrameError("malformed", f"frame {number} has no fragment")
                return list(found[0]), list(found[1])

        # No usable offset table: walk the fragment headers once, then group.
        starts, lengths = self._fragment_table(first)
        frame_starts = self._group(starts, lengths)
        lo, hi = frame_starts[number - 1], frame_starts[number]
        return list(starts[lo:hi]), list(lengths[lo:hi])

    def _fragment_table(self, first: int) -> tuple[array[int], array[int]]:
        if self._fragments is None:
            self._fragments = _walk_items(self._stream, first, None)
        return self._fragments

    def _group(self, starts: array[int], lengths: array[int]) -> array[int]:
        """Index of each frame's first fragment, plus a final sentinel."""
        if self._frame_starts is not None:
            return self._frame_starts
        frames, count = self.number_of_frames, len(starts)
        if count < frames:
            raise FrameError("malformed", f"{count} fragments for {frames} frames")
        if frames == 1:
            found = array("Q", [0, count])
        elif count == frames:
            found = array("Q", range(count + 1))
        else:  # several fragments per frame and no table: a codestream start begins a frame
            found = array("Q")
            for index, (offset, length) in enumerate(zip(starts, lengths, strict=True)):
                self._stream.seek(offset)
                head = self._stream.read(min(length, 8))
                if index == 0 or head.startswith(_FRAME_MARKERS):
                    found.append(index)
            if len(found) != frames:
                raise FrameError(
                    "unsupported",
                    f"{count} fragments for {frames} frames and no offset table to group them",
                )
            found.append(count)
        self._frame_starts = found
        return found

    # -- decoding -------------------------------------------------------------------------------

    def decode(
        self, number: int, *, as_rgb: bool = True
    ) -> tuple[np.ndarray[Any, Any], dict[str, Any]]:
        """Frame ``number`` decoded by pydicom, and the pixel properties after decoding.

        With ``as_rgb`` (the default) YBR_FULL and YBR_FULL_422 come back as RGB and the
        returned ``photometric_interpretation`` says so.
        """
        frame = self.read(number)
        ts = self.transfer_syntax_uid
        src: bytes = frame.data
        if ts in (DEFLATED_LE, ENCAPSULATED_UNCOMPRESSED) or (
            ts == EXPLICIT_VR_BE and self._vr == "OW" and self.bits_allocated == 8
        ):
            ts = ExplicitVRLittleEndian  # the frame's bytes are native little endian
        elif frame.encapsulated:
            src = encapsulate([frame.data])
        try:
            decoder = get_decoder(UID(ts))
        except NotImplementedError:
            raise FrameError("unsupported", f"no decoder for transfer syntax {ts}") from None
        if not decoder.is_available:
            missing = "; ".join(decoder.missing_dependencies)
            raise FrameError("unsupported", f"no decoder installed for {ts} ({missing})")
        twelve_bit = _attr_int(self.dataset, "BitsStored", 8) > 8
        if ts == JPEG_EXTENDED and twelve_bit and not _has_libjpeg():
            raise FrameError(
                "unsupported",
                "12-bit JPEG Extended needs pylibjpeg-libjpeg (GPL-3.0, the codecs-gpl extra)",
            )
        options = as_pixel_options(self.dataset)
        options.pop("extended_offsets", None)
        options.update(
            number_of_frames=1,
            transfer_syntax_uid=UID(ts),
            pixel_keyword=self._keyword,
            as_rgb=as_rgb,
        )
        if self._vr:
            options["pixel_vr"] = self._vr
        try:
            array_, properties = decoder.as_array(src, index=0, **options)
        except Exception as exc:  # a codestream the plugins reject, or inconsistent attributes
            raise FrameError(
                "malformed", f"cannot decode frame {number}: {type(exc).__name__}"
            ) from None
        return array_, dict(properties)


# -- helpers ------------------------------------------------------------------------------------


def _has_libjpeg() -> bool:
    try:
        import libjpeg  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return True


def _at_pixel_data(tag: BaseTag, _vr: str | None, _length: int) -> bool:
    return int(tag) in _PIXEL_TAGS


def _is_encapsulated_syntax(ts: str) -> bool:
    return ts not in (IMPLICIT_VR_LE, EXPLICIT_VR_BE, DEFLATED_LE, ExplicitVRLittleEndian)


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise FrameError("malformed", "the pixel data ends early")
    return data


def _item_header(stream: BinaryIO) -> tuple[int, int]:
    group, element, length = struct.unpack("<HHI", _read_exact(stream, 8))
    return group << 16 | element, length


def _walk_items(stream: BinaryIO, pos: int, stop: int | None) -> tuple[array[int], array[int]]:
    """Payload offsets and lengths of the items from ``pos`` to ``stop`` or the delimiter."""
    starts, lengths = array("Q"), array("Q")
    while stop is None or pos < stop:
        stream.seek(pos)
        tag, length = _item_header(stream)
        if tag == _SEQUENCE_DELIMITER:
            if stop is not None:
                raise FrameError("malformed", "the Basic Offset Table points past the end")
            break
        if tag != _ITEM or length == _UNDEFINED:
            raise FrameError("malformed", "a fragment is not an item of defined length")
        starts.append(pos + 8)
        lengths.append(length)
        pos += 8 + length
    if stop is not None and pos != stop:
        raise FrameError("malformed", "the Basic Offset Table does not fall on fragments")
    return starts, lengths


def _extended_offsets(ds: Dataset, frames: int) -> tuple[list[int], list[int]] | None:
    """The Extended Offset Table and its lengths, when present, read and consistent."""
    values = []
    for tag in (0x7FE00001, 0x7FE00002):
        if tag not in ds:
            return None
        element: DataElement | RawDataElement = ds.get_item(tag, keep_deferred=True)
        raw = element.value
        if not isinstance(raw, bytes) or len(raw) != 8 * frames:
            return None  # deferred (over DEFER_SIZE) or inconsistent: walk instead
        values.append(list(struct.unpack(f"<{frames}Q", raw)))
    return values[0], values[1]


def _attr_int(ds: Dataset, keyword: str, default: int) -> int:
    try:
        value = ds.get(keyword)
    except Exception:  # a value pydicom cannot convert
        raise FrameError("malformed", f"{keyword} is not an integer") from None
    if isinstance(value, MultiValue):
        value = value[0] if value else None
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise FrameError("malformed", f"{keyword} is not an integer") from None


def _read_meta(fh: BinaryIO) -> tuple[str, int]:
    """The transfer syntax and where the data set starts, from the file meta information."""
    head = fh.read(132)
    if len(head) < 132 or head[128:] != b"DICM":
        raise FrameError("malformed", "not a DICOM Part-10 file")
    pos, ts = 132, ""
    while True:
        fh.seek(pos)
        header = fh.read(8)
        if len(header) < 8:
            break
        group, element, vr = struct.unpack("<HH2s", header[:6])
        if group != 0x0002:
            break
        if vr in _LONG_VRS:
            (length,) = struct.unpack("<I", _read_exact(fh, 4))
            value_at = pos + 12
        else:
            (length,) = struct.unpack("<H", header[6:])
            value_at = pos + 8
        if length == _UNDEFINED:
            raise FrameError("malformed", "undefined length in the file meta information")
        if element == 0x0010:
            fh.seek(value_at)
            ts = _read_exact(fh, min(length, 64)).rstrip(b"\0 ").decode("ascii", "replace")
        pos = value_at + length
    if not ts:
        raise FrameError("malformed", "the file meta information has no Transfer Syntax UID")
    return ts, pos
