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

A plain file held in memory (given as bytes, or a path no larger than ``READ_WHOLE_SIZE``) is
read straight from its bytes by :func:`imaging.dicomjson.read_plain`, without pydicom's data set:
the same checks and the same instance, three times faster. Anything else about it (another
transfer syntax, a value pydicom would convert or warn about, any flaw) sends it down pydicom's
road, which gives the same instance or the error (tests/imaging/test_plain_read.py).

Blocking: this reads and parses in the calling thread. From asyncio, call it through
``asyncio.to_thread(ingest, path)``. pydicom reports problems through :mod:`warnings`, which this
module captures with :func:`warnings.catch_warnings`; that context is process-wide before Python
3.14, so a concurrent thread may, rarely, see its own warnings recorded here rather than shown.
"""

from __future__ import annotations

import io
import json
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache, partial
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson
from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from imaging.dicomjson import direct_attribute, read_plain, to_json_dict

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
        whole = head if len(head) == size else None
        # The same parse either way: values over DEFER_SIZE stay unread (see _parse).
        parse_from: BinaryIO | Path = io.BytesIO(head) if whole is not None else source
        defer: int | None = DEFER_SIZE
    else:
        size = len(source)
        _check_preamble(bytes(source[:132]), size)
        whole = source
        parse_from = io.BytesIO(source)
        defer = None
    if whole is not None and (plain := _plain(whole)) is not None:
        return plain
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = _parse(parse_from, defer)
            if any(_is_eof(w.message) for w in caught):
                raise IngestError("truncated", "the file ends inside a data element")
            meta = partial(_pydicom_value, ds.file_meta)
            syntax = _check_meta(meta)
            _check_complete(ds, size)
            uids = _check_uids(partial(_pydicom_value, ds), meta)
            has_pixels = any(tag in ds for tag in _PIXEL_TAGS)
            metadata = _metadata(ds)
            instance = _summarise(ds, uids, metadata, syntax, _charsets(ds), has_pixels=has_pixels)
        except IngestError:
            raise
        except Exception as exc:  # untrusted bytes: whatever else breaks is the file's fault
            raise IngestError("malformed", f"cannot decode: {type(exc).__name__}") from None
    if any(_is_eof(w.message) for w in caught):
        raise IngestError("truncated", "the file ends inside a data element")
    notes = tuple(dict.fromkeys(str(w.message) for w in caught))
    return replace(instance, warnings=notes) if notes else instance


class _NotPlain(Exception):
    """The model alone cannot say what pydicom would: the plain read gives way."""


def _plain(data: bytes) -> Instance | None:
    """The instance read by :func:`imaging.dicomjson.read_plain`, without pydicom's data set,
    when the file is plain and passes every check; None leaves the file to pydicom, which reads
    the same instance from it (tests/imaging/test_plain_read.py), or says what is wrong."""
    read = read_plain(data, BULK_THRESHOLD, _bulk_handler, BULK_TAGS)
    if read is None:
        return None
    meta = partial(_model_value, read.meta)
    model = read.model
    try:
        syntax = _check_meta(meta)
        uids = _check_uids(partial(_model_value, model), meta)
        charset = model.get("00080005", {}).get("Value", ())  # one value, if any (read_plain)
        bulk = {key: _bulk_attribute(int(key, 16), vr or None) for key, vr in read.bulk.items()}
        has_pixels = any(f"{tag:08X}" in bulk for tag in _PIXEL_TAGS)
        metadata = _finish(model, bulk)
        return _summarise(None, uids, metadata, syntax, tuple(charset), has_pixels=has_pixels)
    except (IngestError, _NotPlain):
        return None  # pydicom's road says why, in its own words


def _model_value(model: Mapping[str, Any], keyword: str) -> object:
    """``ds.get(keyword)`` from the JSON model, when it holds the value as a string VR's one
    value (or none); raises :class:`_NotPlain` otherwise."""
    attr = model.get(_model_key(keyword))
    if attr is None:
        return None  # the model has every top-level element: not in it, not in the data set
    text = _one_string(attr)
    if text is None:
        raise _NotPlain(keyword)
    return text


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


# A value as ``ds.get(keyword)`` gives it, or as much of it as the checks need.
_Value = Callable[[str], object]
_META_UIDS = ("TransferSyntaxUID", "MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID")
_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


def _pydicom_value(ds: Dataset, keyword: str) -> object:
    """``ds.get(keyword)``, read by the JSON writer's direct road when it can."""
    value = _direct_text(ds, keyword)
    if value is not None:
        return value
    try:
        return ds.get(keyword)
    except Exception as exc:  # a value pydicom cannot convert
        raise IngestError("malformed", f"{keyword}: {type(exc).__name__}") from None


def _check_meta(meta: _Value) -> str:
    """Check the file meta information's UIDs; return the transfer syntax."""
    values = []
    for keyword in _META_UIDS:
        value = meta(keyword)
        if not value:
            raise IngestError("missing-meta", f"the file meta information has no {keyword}")
        _check_uid(keyword, str(value))
        values.append(str(value))
    return values[0]


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


def _check_uids(value: _Value, meta: _Value) -> tuple[str, str, str, str]:
    """Check the data set's UIDs and that they agree with the file meta information's."""
    values: list[str] = []
    for keyword in _UIDS:
        found = value(keyword)
        if found is None or str(found).strip() == "":
            raise IngestError("missing-uid", f"the data set has no {keyword}")
        if isinstance(found, MultiValue):
            raise IngestError("bad-uid", f"{keyword} has several values")
        text = str(found)
        _check_uid(keyword, text)
        values.append(text)
    study, series, sop_instance, sop_class = values
    if str(meta("MediaStorageSOPInstanceUID")) != sop_instance:
        raise IngestError("inconsistent-meta", "MediaStorageSOPInstanceUID ≠ SOPInstanceUID")
    if str(meta("MediaStorageSOPClassUID")) != sop_class:
        raise IngestError("inconsistent-meta", "MediaStorageSOPClassUID ≠ SOPClassUID")
    return study, series, sop_instance, sop_class


def _direct_text(ds: Dataset, keyword: str) -> str | None:
    """``ds.get(keyword)`` when it is a string VR's empty ("") or single value, read by the JSON
    writer's direct road from the raw element (which stays raw, as pydicom would convert it just
    the same); None for anything else (absent, several values, another VR, left to pydicom)."""
    attr = direct_attribute(ds, _tag(keyword))
    return None if attr is None else _one_string(attr)


def _one_string(attr: Mapping[str, Any]) -> str | None:
    """What ``ds.get`` gives for the attribute of a string VR with no value ("", or None:
    callers treat both alike) or one value; None for several values or another VR."""
    if attr["vr"] not in _STRING_VRS:
        return None
    values = attr.get("Value")
    if values is None:
        return ""
    return str(values[0]) if len(values) == 1 else None


def _metadata(ds: Dataset) -> dict[str, Any]:
    """The JSON model. Top-level bulk data is taken out of ``ds`` first, never read."""
    bulk: dict[str, Any] = {}
    for tag in [tag for tag in BULK_TAGS if tag in ds._dict]:  # a look-up each, not a walk
        element: DataElement | RawDataElement = ds.get_item(tag, keep_deferred=True)
        bulk[f"{tag:08X}"] = _bulk_attribute(tag, element.VR)
        del ds[tag]
    try:
        model = to_json_dict(ds, BULK_THRESHOLD, _bulk_handler)  # as ds.to_json_dict, faster
    except EOFError:
        raise IngestError("truncated", "the file ends inside a sequence") from None
    except IngestError:
        raise
    except Exception as exc:  # untrusted bytes: a value that does not decode
        raise IngestError("malformed", f"cannot decode: {type(exc).__name__}") from None
    return _finish(model, bulk)


def _bulk_handler(_element: DataElement) -> str:
    return _BULK_PLACEHOLDER


def _finish(model: dict[str, Any], bulk: dict[str, Any]) -> dict[str, Any]:
    """The model with its bulk data paths, the top-level bulk data in, sorted by tag."""
    _place_bulk(model, "")
    model.update(bulk)
    return dict(sorted(model.items()))


def _bulk_attribute(tag: int, vr: str | None) -> dict[str, str]:
    """A top-level bulk data element's attribute: its VR when binary, else the tag's own."""
    key = f"{tag:08X}"
    return {"vr": vr if vr in {"OB", "OW", "OF", "OD"} else BULK_TAGS[tag], "BulkDataURI": key}


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


def _text(ds: Dataset | None, model: Mapping[str, Any], keyword: str) -> str:
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
    if ds is None:
        raise _NotPlain(keyword)
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


def _int(ds: Dataset | None, model: Mapping[str, Any], keyword: str) -> int | None:
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
    if ds is None:
        raise _NotPlain(keyword)
    return _int_from(ds, keyword)


def _int_from(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise IngestError("malformed", f"{keyword} is not an integer") from None


def _json_text(model: Mapping[str, Any]) -> str:
    """The model as compact JSON text, as WADO-RS serves it. A DS value that float() reads as
    NaN or an infinity, which JSON cannot say, is null (an empty value, PS3.18 F.2.5)."""
    try:
        return orjson.dumps(model).decode()
    except orjson.JSONEncodeError:  # an integer beyond 64 bits (an overlong IS pydicom read)
        text = json.dumps(model, ensure_ascii=False, separators=(",", ":"), allow_nan=True)
        return json.dumps(
            json.loads(text, parse_constant=lambda _name: None),
            ensure_ascii=False,
            separators=(",", ":"),
        )


def _charsets(ds: Dataset) -> tuple[str, ...]:
    charset = ds.get("SpecificCharacterSet")
    if charset is None:
        return ()
    if isinstance(charset, MultiValue):
        return tuple(str(c) for c in charset)
    return (str(charset),)


def _summarise(
    ds: Dataset | None,
    uids: tuple[str, str, str, str],
    metadata: dict[str, Any],
    transfer_syntax: str,
    charsets: tuple[str, ...],
    *,
    has_pixels: bool,
) -> Instance:
    """The instance's summary, read from the model, or from ``ds`` where the model cannot say
    (without ``ds``, :class:`_NotPlain` is raised then)."""
    study, series, sop_instance, sop_class = uids
    frames = _int(ds, metadata, "NumberOfFrames")
    return Instance(
        study_uid=study,
        series_uid=series,
        instance_uid=sop_instance,
        sop_class_uid=sop_class,
        transfer_syntax_uid=transfer_syntax,
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
        metadata_json=_json_text(metadata),
    )
