"""Ingest one DICOM Part-10 file without trusting it.

:func:`ingest` checks, in order: the 128-byte preamble and the ``DICM`` marker; the file meta
information (Transfer Syntax UID, Media Storage SOP Class and Instance UID); that the data set
parses to its end, elements included (truncation is detected from element lengths, not from
pydicom's tolerance, which silently drops a short tail); that the Study, Series and SOP Instance
UIDs and the SOP Class UID are present, well formed and agree with the meta header. It returns an
:class:`Instance` with the fields an index needs and the DICOM JSON model of the data set, bulk
data (pixel and waveform data, large binary values) replaced by ``BulkDataURI`` placeholders for
WADO-RS metadata. Every failure is an :class:`IngestError` with a stable ``code``.

Character sets are decoded by pydicom from ``SpecificCharacterSet`` (GB18030, ISO_IR 192 and the
ISO 2022 sets); a value it could not decode cleanly is noted in :attr:`Instance.warnings`.

Blocking: this reads and parses with pydicom in the calling thread. From asyncio, call it through
``asyncio.to_thread(ingest, path)``. pydicom reports problems through :mod:`warnings`, which this
module captures with :func:`warnings.catch_warnings`; that context is process-wide before Python
3.14, so a concurrent thread may, rarely, see its own warnings recorded here rather than shown.
"""

from __future__ import annotations

import io
import json
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from imaging.dicomjson import direct_attribute, to_json_dict

__all__ = ["BULK_TAGS", "IngestError", "IngestErrorCode", "Instance", "ingest"]

IngestErrorCode = Literal[
    "not-dicom",
    "truncated",
    "malformed",
    "missing-meta",
    "missing-uid",
    "bad-uid",
    "inconsistent-meta",
]

UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_UNDEFINED = 0xFFFFFFFF
_DEFLATED = frozenset({"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1"})

# Always served as bulk data, whatever their size: pixel data and waveform data (tag: VR when the
# transfer syntax is implicit).
BULK_TAGS = {
    0x7FE00008: "OF",  # Float Pixel Data
    0x7FE00009: "OD",  # Double Float Pixel Data
    0x7FE00010: "OW",  # Pixel Data
    0x54001010: "OW",  # Waveform Data
}
_BULK_KEYS = frozenset(f"{tag:08X}" for tag in BULK_TAGS)  # as keys of the JSON model
_PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)
DEFER_SIZE = 64 * 1024
# A file given by its path and no larger than this is read whole and parsed from memory.
READ_WHOLE_SIZE = 1 << 20
# Other binary values longer than this are bulk data too (PS3.18 leaves the choice to the server).
BULK_THRESHOLD = 1024
_BULK_PLACEHOLDER = "bulkdata:"


class IngestError(Exception):
    """The file is refused; ``code`` says why, ``message`` says it for a person."""

    def __init__(self, code: IngestErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code: IngestErrorCode = code
        self.message = message

    def __reduce__(self) -> tuple[type[IngestError], tuple[IngestErrorCode, str]]:
        return (IngestError, (self.code, self.message))  # it crosses from ingest processes


@dataclass(frozen=True, slots=True)
class Instance:
    """What ingest learnt about one SOP instance. Strings are empty when the file has no value."""

    study_uid: str
    series_uid: str
    instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str
    patient_id: str
    patient_name: str
    patient_sex: str
    patient_birth_date: str
    study_date: str
    study_time: str
    accession_number: str
    specific_character_set: tuple[str, ...]
    number_of_frames: int | None  # None when the instance has no pixel data
    rows: int | None
    columns: int | None
    # DICOM JSON model (PS3.18 F.2) of the data set without file meta; bulk data as BulkDataURI
    # whose value is a relative path: "7FE00010" or "54000100/0/54001010" (tag/item/tag...).
    metadata: Mapping[str, Any] = field(repr=False)
    # The same model as compact JSON text, as the index stores it (made here, in the worker
    # thread, rather than on the event loop).
    metadata_json: str = field(repr=False, compare=False)
    warnings: tuple[str, ...] = ()


def ingest(source: bytes | Path) -> Instance:
    """Validate and summarise one Part-10 file, given as its bytes or its path. Blocking."""
    if isinstance(source, Path):
        try:
            size = source.stat().st_size
            with source.open("rb") as fh:
                # A small file is read whole, once, and parsed from memory (cheaper than pydicom
                # reading it element by element); a large one is parsed from disk.
                head = fh.read() if size <= READ_WHOLE_SIZE else fh.read(132)
        except OSError as exc:
            raise IngestError("not-dicom", f"cannot read the file: {exc.strerror}") from None
        _check_preamble(head[:132], size)
        # The same parse either way: values over DEFER_SIZE stay unread (see _parse).
        parse_from: BinaryIO | Path = io.BytesIO(head) if len(head) == size else source
        defer: int | None = DEFER_SIZE
    else:
        size = len(source)
        _check_preamble(bytes(source[:132]), size)
        parse_from = io.BytesIO(source)
        defer = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = _parse(parse_from, defer)
            if any(_is_eof(w.message) for w in caught):
                raise IngestError("truncated", "the file ends inside a data element")
            _check_meta(ds)
            _check_complete(ds, size)
            uids = _check_uids(ds)
            has_pixels = any(tag in ds for tag in _PIXEL_TAGS)
            metadata = _metadata(ds)
            instance = _summarise(ds, uids, metadata, has_pixels=has_pixels)
        except IngestError:
            raise
        except Exception as exc:  # untrusted bytes: whatever else breaks is the file's fault
            raise IngestError("malformed", f"cannot decode: {type(exc).__name__}") from None
    if any(_is_eof(w.message) for w in caught):
        raise IngestError("truncated", "the file ends inside a data element")
    notes = tuple(dict.fromkeys(str(w.message) for w in caught))
    return replace(instance, warnings=notes) if notes else instance


def _is_eof(message: Warning | str) -> bool:
    text = str(message)
    return "EOF" in text or "End of file" in text or "delimiter" in text


def _check_preamble(head: bytes, size: int) -> None:
    """``head`` is the first 132 bytes (or fewer) of a file of ``size`` bytes."""
    if size == 0:
        raise IngestError("not-dicom", "the file is empty")
    if size < 132:
        if size > 128 and b"DICM".startswith(head[128:]):
            raise IngestError("truncated", "the file ends inside the DICM marker")
        raise IngestError("not-dicom", "too short for a 128-byte preamble and the DICM marker")
    if head[128:132] != b"DICM":
        raise IngestError("not-dicom", "no DICM marker after a 128-byte preamble")


def _parse(source: BinaryIO | Path, defer: int | None) -> FileDataset:
    # From a path, values over DEFER_SIZE (pixel data) stay on disk (or, for a small file read
    # whole, in its bytes) until asked for: memory does not grow with the file. From bytes, they
    # are in memory already.
    try:
        return dcmread(source, force=False, defer_size=defer)
    except InvalidDicomError as exc:
        raise IngestError("not-dicom", str(exc)) from None
    except EOFError:
        raise IngestError("truncated", "the file ends inside the file meta information") from None
    except Exception as exc:  # untrusted bytes: any parser failure is the file's fault
        raise IngestError("malformed", f"cannot parse: {type(exc).__name__}") from None


def _check_meta(ds: FileDataset) -> None:
    meta = ds.file_meta
    for keyword in ("TransferSyntaxUID", "MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID"):
        value = _direct_text(meta, keyword)
        if value is None:
            value = meta.get(keyword)
        if not value:
            raise IngestError("missing-meta", f"the file meta information has no {keyword}")
        _check_uid(keyword, str(value))


def _check_complete(ds: FileDataset, size: int) -> None:
    """Refuse a data set whose elements claim more bytes than the file has.

    pydicom reads a short value or a short last header without complaint; here each element's
    start and length are checked against the file size. A sequence of undefined length is parsed
    eagerly and carries no position, nor does deferred encapsulated pixel data (a path's value
    over DEFER_SIZE); their truncation surfaces as pydicom's EOF warning instead. A
    file cut exactly between two elements cannot be told from a whole one; required attributes
    (UIDs) catch most of those. Deflated data sets have positions in the inflated stream.
    """
    if str(ds.file_meta.get("TransferSyntaxUID", "")) in _DEFLATED:
        return
    end = 132
    last_is_raw = True
    # ds.keys() and ds.get_item(tag, keep_deferred=True) for each, without their cost (iterating
    # the Dataset itself would convert every element).
    for tag, raw in ds._dict.items():
        if not isinstance(raw, RawDataElement):
            last_is_raw = False
            continue
        last_is_raw = True
        length, value, value_tell = raw.length, raw.value, raw.value_tell
        if length == _UNDEFINED:
            if value is None:  # deferred: pydicom found its delimiter, and keeps not where
                last_is_raw = False
                continue
            length = len(value) + 8  # the value and its delimiter
        elif value is not None and len(value) < length:
            raise IngestError("truncated", f"element {tag} is shorter than its length")
        if value_tell + length > end:
            end = value_tell + length
    if end > size:
        raise IngestError("truncated", "the file ends inside a data element")
    if last_is_raw and end < size:  # bytes pydicom did not read as an element: a cut header
        raise IngestError("truncated", "the file ends inside an element header")


def _check_uid(name: str, value: str) -> None:
    if len(value) > 64:
        raise IngestError("bad-uid", f"{name} is longer than 64 characters")
    if not UID_PATTERN.match(value):
        raise IngestError("bad-uid", f"{name} is not a dotted-decimal UID")


def _check_uids(ds: FileDataset) -> tuple[str, str, str, str]:
    values: list[str] = []
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        value = _direct_text(ds, keyword)
        if value is None:
            try:
                value = ds.get(keyword)
            except Exception as exc:  # a value pydicom cannot convert
                raise IngestError("malformed", f"{keyword}: {type(exc).__name__}") from None
        if value is None or str(value).strip() == "":
            raise IngestError("missing-uid", f"the data set has no {keyword}")
        if isinstance(value, MultiValue):
            raise IngestError("bad-uid", f"{keyword} has several values")
        text = str(value)
        _check_uid(keyword, text)
        values.append(text)
    study, series, sop_instance, sop_class = values
    meta = ds.file_meta
    if _meta_text(meta, "MediaStorageSOPInstanceUID") != sop_instance:
        raise IngestError("inconsistent-meta", "MediaStorageSOPInstanceUID ≠ SOPInstanceUID")
    if _meta_text(meta, "MediaStorageSOPClassUID") != sop_class:
        raise IngestError("inconsistent-meta", "MediaStorageSOPClassUID ≠ SOPClassUID")
    return study, series, sop_instance, sop_class


def _meta_text(meta: Dataset, keyword: str) -> str:
    """``str(meta.<keyword>)`` of an element known to be there."""
    value = _direct_text(meta, keyword)
    return value if value is not None else str(getattr(meta, keyword))


def _direct_text(ds: Dataset, keyword: str) -> str | None:
    """``ds.get(keyword)`` when it is a string VR's empty ("") or single value, read by the JSON
    writer's direct road from the raw element (which stays raw, as pydicom would convert it just
    the same); None for anything else (absent, several values, another VR, left to pydicom)."""
    attr = direct_attribute(ds, _tag(keyword))
    if attr is None or attr["vr"] not in _STRING_VRS:
        return None
    values = attr.get("Value")
    if values is None:  # pydicom's "" (or None: callers treat both alike)
        return ""
    return str(values[0]) if len(values) == 1 else None


def _metadata(ds: Dataset) -> dict[str, Any]:
    """The JSON model. Top-level bulk data is taken out of ``ds`` first, never read."""
    bulk: dict[str, Any] = {}
    for tag in [tag for tag in BULK_TAGS if tag in ds._dict]:  # a look-up each, not a walk
        element: DataElement | RawDataElement = ds.get_item(tag, keep_deferred=True)
        vr = element.VR if element.VR in {"OB", "OW", "OF", "OD"} else BULK_TAGS[tag]
        bulk[f"{tag:08X}"] = {"vr": vr, "BulkDataURI": f"{tag:08X}"}
        del ds[tag]

    def handler(_element: DataElement) -> str:
        return _BULK_PLACEHOLDER

    try:
        model = to_json_dict(ds, BULK_THRESHOLD, handler)  # as ds.to_json_dict, faster
    except EOFError:
        raise IngestError("truncated", "the file ends inside a sequence") from None
    except IngestError:
        raise
    except Exception as exc:  # untrusted bytes: a value that does not decode
        raise IngestError("malformed", f"cannot decode: {type(exc).__name__}") from None
    _place_bulk(model, "")
    model.update(bulk)
    return dict(sorted(model.items()))


def _place_bulk(model: dict[str, Any], prefix: str) -> None:
    """Give each bulk value its path, and make the always-bulk tags bulk even when small."""
    for tag, attr in model.items():  # tag: eight upper-case hex digits, as the writer makes it
        if tag in _BULK_KEYS and "InlineBinary" in attr:
            del attr["InlineBinary"]
            attr["BulkDataURI"] = _BULK_PLACEHOLDER
        if attr.get("BulkDataURI") == _BULK_PLACEHOLDER:
            attr["BulkDataURI"] = f"{prefix}{tag}"
        if attr.get("vr") == "SQ":
            for index, item in enumerate(attr.get("Value", [])):
                _place_bulk(item, f"{prefix}{tag}/{index}/")


# The summary is read from the JSON model when the model holds the value pydicom would give
# (``ds.get(keyword)``) without ambiguity: a string VR's values are that value's strings, an
# integer VR's are its integers. Otherwise (another VR, a person name that may have had more than
# three groups) it is read through pydicom as before. Every top-level element of ``ds`` is in the
# model, so an attribute missing from it is an element missing from ``ds``.
_STRING_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
_INTEGER_VRS = frozenset({"IS", "SL", "SS", "SV", "UL", "US", "UV"})


@cache
def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return tag


@cache
def _model_key(keyword: str) -> str:
    return f"{_tag(keyword):08X}"


def _text(ds: Dataset, model: Mapping[str, Any], keyword: str) -> str:
    """``ds.get(keyword)`` as text: a list joined with backslashes, a single value stripped."""
    attr = model.get(_model_key(keyword))
    if attr is None:
        return ""
    vr, values = attr.get("vr"), attr.get("Value")
    if vr in _STRING_VRS:
        if values is None:  # "" or None
            return ""
        if len(values) > 1:  # a MultiValue
            return "\\".join(str(v) for v in values)
        return str(values[0]).strip()
    if vr == "PN" and (values is None or all("Phonetic" not in name for name in values)):
        # str(PersonName) is its up to three groups joined with "=", not stripped
        return "\\".join("=".join(name.values()) for name in values or ())
    return _text_from(ds, keyword)


def _text_from(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value)
    if isinstance(value, PersonName):
        return str(value)
    return str(value).strip()


def _int(ds: Dataset, model: Mapping[str, Any], keyword: str) -> int | None:
    attr = model.get(_model_key(keyword))
    if attr is None:
        return None
    if attr.get("vr") in _INTEGER_VRS:
        values = attr.get("Value")
        if values is None:  # None or ""
            return None
        if len(values) == 1:
            return int(values[0])
        raise IngestError("malformed", f"{keyword} is not an integer")  # int() of a list
    return _int_from(ds, keyword)


def _int_from(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise IngestError("malformed", f"{keyword} is not an integer") from None


def _summarise(
    ds: FileDataset, uids: tuple[str, str, str, str], metadata: dict[str, Any], *, has_pixels: bool
) -> Instance:
    study, series, sop_instance, sop_class = uids
    frames = _int(ds, metadata, "NumberOfFrames")
    charset = ds.get("SpecificCharacterSet")
    charsets: tuple[str, ...]
    if charset is None:
        charsets = ()
    elif isinstance(charset, MultiValue):
        charsets = tuple(str(c) for c in charset)
    else:
        charsets = (str(charset),)
    return Instance(
        study_uid=study,
        series_uid=series,
        instance_uid=sop_instance,
        sop_class_uid=sop_class,
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        modality=_text(ds, metadata, "Modality"),
        patient_id=_text(ds, metadata, "PatientID"),
        patient_name=_text(ds, metadata, "PatientName"),
        patient_sex=_text(ds, metadata, "PatientSex"),
        patient_birth_date=_text(ds, metadata, "PatientBirthDate"),
        study_date=_text(ds, metadata, "StudyDate"),
        study_time=_text(ds, metadata, "StudyTime"),
        accession_number=_text(ds, metadata, "AccessionNumber"),
        specific_character_set=charsets,
        number_of_frames=(frames if frames is not None else 1) if has_pixels else None,
        rows=_int(ds, metadata, "Rows"),
        columns=_int(ds, metadata, "Columns"),
        metadata=metadata,
        # The model is a tree (no cycles to look for): the same text, a little sooner.
        metadata_json=json.dumps(
            metadata, ensure_ascii=False, separators=(",", ":"), check_circular=False
        ),
    )
