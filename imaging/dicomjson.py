"""The DICOM JSON model (PS3.18 F.2) of a pydicom data set, without pydicom's per-element detour.

:func:`to_json_dict` returns what ``Dataset.to_json_dict(bulk_data_threshold, handler)`` returns,
equal with ``==``, with the same warnings and the same errors. Each raw element takes the first of
three roads that applies:

1. **Direct**: the JSON attribute is written from the element's bytes, nothing converted. It
   covers the common VRs: the text VRs (AE AS CS DA DS DT IS LO LT PN SH ST TM UC UI UR UT), the
   binary numbers (AT FD FL SL SS SV UL US UV), the binary VRs (OB OD OF OL OV OW: inline or bulk
   data) and plain sequences (see :meth:`_Writer.items`). Each does what pydicom's converter for
   that VR (``pydicom.values``) does: the text decoded once (the default repertoire as pydicom
   reads it, latin-1; the VRs with a character set in the data set's first one when that is
   ISO_IR 6, ISO_IR 100, ISO_IR 192 or GB18030 and the value has no escape sequence: then
   pydicom's ``decode_bytes`` too makes one strict ``bytes.decode``), split on backslashes and
   trimmed as that converter trims, numbers parsed with ``float``, ``int`` and ``struct`` as
   pydicom parses them. A value that pydicom would warn about (its read validation: lengths, UI
   and IS syntax, PN groups), fail on, or convert in some other way is refused, and goes the
   second road: decoding errors, escape sequences, lengths that are not a multiple of the value
   size, an empty number in a list, DS or IS text that ``float`` or the IS syntax refuse, an empty
   name in a list of person names. This road is open only with pydicom's default reading
   settings (WARN validation, no datetime conversion, DS as float, no hooks or callbacks; see
   :func:`_direct_allowed`) and for data sets that carry their character set (all that pydicom
   reads). The direct writers live in :mod:`imaging.dicomvalues`.
2. **Converted**: pydicom's value converter (:func:`pydicom.values.convert_value`) makes the value
   and the attribute is written from it, for an element whose VR is explicit or known from the
   dictionary, neither ``UN`` nor ambiguous (``US or SS``...), not a LUT descriptor, not deferred.
3. **pydicom**: ``ds[tag].to_json_dict`` for everything else, and for every element when
   pydicom's conversion hooks or numpy options are customised. A sequence not read directly is
   converted by pydicom (that parses it, and sets the items' parent and pixel representation)
   and its items walked here.

:func:`read_plain` goes further for a whole Part-10 file in memory: when every element of it
takes the direct road and pydicom would read it plainly, the file meta and the model are read
straight from the bytes, no pydicom data set made; otherwise it says None, and the caller reads
the file with pydicom and :func:`to_json_dict`.

Unlike pydicom, the data set is left mostly unconverted: elements taken on the first two roads
stay raw in ``ds``. :func:`direct_attribute` gives one top-level element's attribute by the
direct road, for a caller that wants a value without converting the element. Blocking and pure
otherwise.
"""

from __future__ import annotations

import base64
import codecs
from collections.abc import Callable, Container, MutableSequence
from functools import partial
from struct import Struct
from typing import Any, NamedTuple

import pydicom.valuerep
from pydicom import config
from pydicom.charset import default_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.hooks import hooks
from pydicom.hooks import raw_element_value as _default_value_hook
from pydicom.hooks import raw_element_vr as _default_vr_hook
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import (
    AMBIGUOUS_VR,
    BYTES_VR,
    EXPLICIT_VR_LENGTH_32,
    FLOAT_VR,
    INT_VR,
    DSfloat,
    PersonName,
)
from pydicom.values import convert_value

from imaging.dicomvalues import (
    DEFAULT_CODEC,
    EXPLICIT_VRS,
    WRITERS,
    Attribute,
    binary_marker,
    person_name,
    strings,
)

__all__ = ["PlainFile", "direct_attribute", "read_plain", "to_json_dict"]

BulkHandler = Callable[[DataElement], str]

_UNDEFINED = 0xFFFFFFFF
_PIXEL_REPRESENTATION = 0x00280103
_CHARSET_TAG = 0x00080005
# Tags whose first value pydicom's value hook adjusts (tag.py _LUT_DESCRIPTOR_TAGS).
_LUT_DESCRIPTORS = frozenset({0x00281101, 0x00281102, 0x00281103, 0x00283002})
_BINARY = frozenset(str(vr) for vr in BYTES_VR | AMBIGUOUS_VR) - {"US or SS"}
_AMBIGUOUS = frozenset(str(vr) for vr in AMBIGUOUS_VR)
_INT = frozenset(str(vr) for vr in INT_VR) - {"AT"}
_FLOAT = frozenset(str(vr) for vr in FLOAT_VR)


def to_json_dict(
    ds: Dataset, bulk_data_threshold: int, handler: BulkHandler | None
) -> dict[str, Any]:
    """``ds.to_json_dict(bulk_data_threshold, handler)``, the same value, faster."""
    if _customised():
        return ds.to_json_dict(bulk_data_threshold, handler)
    return _Writer(bulk_data_threshold, handler, direct=_direct_allowed()).dataset(ds)


class PlainFile(NamedTuple):
    """A Part-10 file as :func:`read_plain` reads it."""

    #: The file meta information's attributes.
    meta: dict[str, Attribute]
    #: The data set's JSON model, without the elements of ``bulk_tags``.
    model: dict[str, Attribute]
    #: The top-level elements of ``bulk_tags`` present: their VR as written ("" in implicit VR).
    bulk: dict[str, str]


# Transfer syntaxes whose data sets pydicom does not read as explicit (or implicit) VR little
# endian: big endian, deflated; and one whose frames are deflated, which ingest treats apart.
_NOT_PLAIN_SYNTAXES = frozenset(
    {"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1"}
)
_IMPLICIT_LE = "1.2.840.10008.1.2"
# Specific Character Sets read here, and the codec the direct road decodes them with.
_PLAIN_CHARSETS = {"ISO_IR 6": "iso8859-1", "ISO_IR 100": "iso8859-1", "ISO_IR 192": "utf-8"}
_PLAIN_CHARSETS["GB18030"] = "gb18030"


def read_plain(
    data: bytes, threshold: int, handler: BulkHandler, bulk_tags: Container[int]
) -> PlainFile | None:
    """A Part-10 file read straight from its bytes when it is plain, else None.

    What :func:`to_json_dict` makes of ``dcmread(data)`` (bulk data included, without the
    top-level elements of ``bulk_tags``, which are skipped unread), when every element takes the
    direct road and the file is plain, so that pydicom would read it the same way and warn about
    nothing: a file meta group that (0002,0000) measures, whose elements are all of group 0002;
    a transfer syntax that is explicit or implicit VR little endian (encapsulated ones included);
    a first data set element whose VR looks as the transfer syntax says and that is neither a
    command (group 0000) nor before (0008,0005); a Specific Character Set of one value that
    the direct road decodes (see :data:`_PLAIN_CHARSETS`), or none; every element ending before
    the file does (see :meth:`_Writer.item`). Anything else is pydicom's to read (and, for a
    broken file, to explain). Pure; blocking only as long as the parse.
    """
    if _customised() or not _direct_allowed() or len(data) < 144 or data[128:132] != b"DICM":
        return None
    if data[132:140] != b"\x02\x00\x00\x00UL\x04\x00":  # (0002,0000) UL, four bytes
        return None
    (meta_length,) = _LONG_LENGTH(data, 140)
    start = 144 + meta_length  # of the data set
    if start + 8 > len(data):
        return None
    writer = _Writer(threshold, handler, direct=True)
    read = writer.item(data, 132, start, False, DEFAULT_CODEC, delimited=False)
    if read is None or not next(reversed(read[0])).startswith("0002"):  # tags ascend
        return None
    meta = read[0]
    syntax = meta.get("00020010", {})
    uids = syntax.get("Value", [])
    if syntax.get("vr") != "UI" or len(uids) != 1 or uids[0] in _NOT_PLAIN_SYNTAXES:
        return None
    implicit = uids[0] == _IMPLICIT_LE
    group, elem, code, length = _EXPLICIT_HEADER(data, start)
    # pydicom's look at the first element: two capitals where an explicit VR would be?
    looks_explicit = 0x40 < code[0] < 0x5B and 0x40 < code[1] < 0x5B
    if looks_explicit == implicit or group in (0, 2):
        return None
    codec = _PLAIN_CHARSETS["ISO_IR 6"]  # the default repertoire
    tag = group << 16 | elem
    if tag < _CHARSET_TAG:
        return None
    if tag == _CHARSET_TAG:
        if implicit:
            (length,) = _LONG_LENGTH(data, start + 4)
        elif code != b"CS":
            return None
        terms = (strings("CS", data[start + 8 : start + 8 + length], True, None) or {}).get("Value")
        if terms is None or len(terms) != 1 or terms[0] not in _PLAIN_CHARSETS:
            return None
        codec = _PLAIN_CHARSETS[terms[0]]
    bulk: dict[str, str] = {}
    read = writer.item(
        data, start, len(data), implicit, codec, delimited=False, bulk=bulk, bulk_tags=bulk_tags
    )
    if read is None:
        return None
    return PlainFile(meta, read[0], bulk)


def _customised() -> bool:
    """pydicom options that change raw element conversion; with any set, pydicom does it all."""
    return bool(
        config.data_element_callback
        or hooks.raw_element_kwargs
        or hooks.raw_element_vr is not _default_vr_hook
        or hooks.raw_element_value is not _default_value_hook
        or config.use_DS_numpy
        or config.use_IS_numpy
    )


def _direct_allowed() -> bool:
    """The reading settings the direct writers assume (pydicom's defaults)."""
    return (
        config.settings.reading_validation_mode == config.WARN
        and not config.datetime_conversion
        and pydicom.valuerep.DSclass is DSfloat
    )


class _Writer:
    """One conversion: its bulk data settings and whether the direct road is open."""

    __slots__ = ("direct", "handler", "inline_limit", "threshold")

    def __init__(self, threshold: int, handler: BulkHandler | None, *, direct: bool) -> None:
        self.threshold = threshold
        self.handler = handler
        self.direct = direct
        # pydicom's rule: bulk data when the base64 text would exceed the threshold.
        self.inline_limit = (threshold // 4) * 3

    def dataset(self, ds: Dataset) -> dict[str, Any]:
        out: dict[str, Any] = {}
        threshold, handler = self.threshold, self.handler
        encoding: str | MutableSequence[str] | None = None
        # Dataset.__getitem__ decodes an element with ``ds.original_character_set or
        # ds._character_set``. A data set read by pydicom has the former (its own or its
        # parent's character set); only then is the direct road open: knowing the encoding
        # costs nothing, so the direct road may take elements before the others ask for it.
        charsets = ds.original_character_set
        direct = self.direct and bool(charsets)
        codec = _direct_codec(charsets) if direct else None
        writers, lut_descriptors = WRITERS, _LUT_DESCRIPTORS  # locals: this loop is hot
        # Dataset.keys() and get_item() for each cost more than the rest of a short-path element.
        for tag, element in list(ds._dict.items()):
            key = f"{tag:08X}"
            if isinstance(element, RawDataElement):
                if direct:  # _write_direct, inlined
                    known = element.VR or _dictionary_vr(tag)
                    writer = writers.get(known)
                    if writer is not None and tag not in lut_descriptors:
                        length = element.length
                        data = element.value
                        if length == 0:
                            out[key] = {"vr": known}
                            continue
                        if data is not None and len(data) == length:
                            if writer is binary_marker:
                                if tag >> 16 & 1 and _listed_creator(ds, tag):
                                    out[key] = ds[tag].to_json_dict(handler, threshold)
                                    continue
                                attr: Attribute | None = self.binary(element, known, data)
                            else:  # (0008,0005) itself is read in the default repertoire
                                attr = writer(
                                    known,
                                    data,
                                    element.is_little_endian,
                                    codec if key != "00080005" else DEFAULT_CODEC,
                                )
                            if attr is not None:
                                out[key] = attr
                                continue
                vr = _short_path_vr(element)
                if vr is None:
                    out[key] = ds[tag].to_json_dict(handler, threshold)
                    continue
                if vr == "SQ":
                    items = self.raw_sequence(ds, element, codec) if direct else None
                    if items is not None:
                        out[key] = {"vr": "SQ", "Value": items}
                    else:
                        out[key] = self.sequence(ds[tag])
                    continue
                if tag == _CHARSET_TAG:
                    charset: str | MutableSequence[str] = default_encoding
                else:
                    if encoding is None:  # as Dataset.__getitem__ chooses it
                        encoding = ds.original_character_set or ds._character_set
                    charset = encoding
                try:
                    value = convert_value(vr, element, charset)
                except Exception:  # pydicom decides: a warning and UN, or its own error
                    out[key] = ds[tag].to_json_dict(handler, threshold)
                    continue
                out[key] = _attribute(
                    vr, value, threshold, handler, partial(_element, element, vr, value)
                )
            elif element.VR == "SQ":
                out[key] = self.sequence(element)
            elif element.VR in _AMBIGUOUS or element.is_buffered:
                out[key] = element.to_json_dict(handler, threshold)
            else:
                out[key] = _attribute(
                    element.VR, element.value, threshold, handler, partial(_same, element)
                )
        return out

    def sequence(self, element: DataElement) -> Attribute:
        return {"vr": "SQ", "Value": [self.dataset(item) for item in element.value]}

    def raw_sequence(
        self, ds: Dataset, raw: RawDataElement, codec: str | None
    ) -> list[dict[str, Any]] | None:
        """The items of ``ds``'s raw SQ element ``raw`` written from its bytes, or None.

        Only a plain sequence is read here (see :meth:`items`): little endian, of defined length,
        whole, and not private (pydicom would look up its private creator). Then what
        ``Dataset.__getitem__`` does after converting a sequence is done too: it reads (converts)
        the data set's Pixel Representation.
        """
        value = raw.value
        if (
            raw.tag.is_private
            or not raw.is_little_endian
            or value is None
            or len(value) != raw.length
        ):
            return None
        read = self.items(value, 0, len(value), raw.is_implicit_VR, codec, delimited=False)
        if read is None:
            return None
        if _PIXEL_REPRESENTATION in ds._dict:
            _ = ds[_PIXEL_REPRESENTATION]  # Dataset._set_pixel_representation
        return read[0]

    def items(
        self, data: bytes, pos: int, end: int, implicit: bool, codec: str | None, *, delimited: bool
    ) -> tuple[list[Attribute], int] | None:
        """The items of a sequence value starting at ``data[pos]``, as pydicom's read_sequence
        parses them, and the position after them. The value ends at ``end`` (defined length) or,
        when ``delimited`` (undefined length), at a sequence delimiter before ``end``. None when
        anything is not plain: a header that is not an item's (FFFE,E000), a delimiter where
        none belongs or with a length, an item that overruns the value (see :meth:`item`)."""
        items: list[Attribute] = []
        while pos < end or delimited:
            if end - pos < 8:
                return None
            group, elem, length = _ITEM_HEADER(data, pos)
            pos += 8
            if group != 0xFFFE:
                return None
            if elem == 0xE0DD and delimited and length == 0:
                return items, pos
            if elem != 0xE000:
                return None
            if length == _UNDEFINED:
                read = self.item(data, pos, end, implicit, codec, delimited=True)
            elif pos + length > end:
                return None
            else:
                read = self.item(data, pos, pos + length, implicit, codec, delimited=False)
            if read is None:
                return None
            item, pos = read
            items.append(item)
        return items, pos

    def item(
        self,
        data: bytes,
        pos: int,
        end: int,
        implicit: bool,
        codec: str | None,
        *,
        delimited: bool,
        bulk: dict[str, str] | None = None,
        bulk_tags: Container[int] = (),
    ) -> tuple[Attribute, int] | None:
        """The JSON model of the data set starting at ``data[pos]`` and the position after it.

        It ends at ``end`` (an item of defined length, a whole data set) or, when ``delimited``
        (an item of undefined length), at an item delimiter before ``end``. None when anything
        in it is not plain: a VR the direct road does not write (in explicit VR not a known one;
        in implicit VR unknown to the dictionary), a length past the end, an undefined length
        other than a sequence's, tags out of order or repeated, a stray delimiter, its own
        Specific Character Set, a private sequence.

        ``bulk`` is given for a top-level data set: its Specific Character Set is then written
        (in the default repertoire, as pydicom reads it) and the elements of ``bulk_tags``
        (pixel and waveform data, encapsulated included) are skipped, unread, their VR as the
        element has it put in ``bulk`` under their key (an implicit VR gives "").
        """
        out: dict[str, Any] = {}
        last = -1
        while pos < end or delimited:
            if end - pos < 8:
                return None
            if delimited and data[pos : pos + 4] == _ITEM_DELIMITER:
                return (out, pos + 8) if data[pos + 4 : pos + 8] == _ZERO_LENGTH else None
            if implicit:
                group, elem, length = _IMPLICIT_HEADER(data, pos)
                start = pos + 8
                tag = group << 16 | elem
                vr = "" if group & 1 else _dictionary_vr(tag)
            else:
                group, elem, code, length = _EXPLICIT_HEADER(data, pos)
                start = pos + 8
                tag = group << 16 | elem
                vr = EXPLICIT_VRS.get(code, "")
                if vr in _LENGTH_32:  # two reserved bytes, then a four-byte length
                    if end - pos < 12:
                        return None
                    (length,) = _LONG_LENGTH(data, start)
                    start += 4
            if tag <= last or group == 0xFFFE or (tag == _CHARSET_TAG and bulk is None):
                return None
            if group & 1 and 0x10 <= elem <= 0xFF and b"\\" in data[start : start + length]:
                return None  # a private creator of several values (see _listed_creator)
            last = tag
            key = f"{tag:08X}"
            if bulk is not None and tag in bulk_tags:
                if length != _UNDEFINED:
                    pos = start + length
                elif implicit:
                    return None
                else:  # encapsulated
                    pos = _fragments_end(data, start, end)
                if not implicit and vr not in _BINARY:
                    return None
                if pos > end:
                    return None
                bulk[key] = "" if implicit else vr
                continue
            undefined = length == _UNDEFINED
            if vr == "SQ" and not group & 1:  # of undefined length, up to its delimiter
                stop = end if undefined else start + length
                read = None
                if stop <= end:
                    read = self.items(data, start, stop, implicit, codec, delimited=undefined)
                if read is None:
                    return None
                out[key] = {"vr": "SQ", "Value": read[0]}
                pos = read[1]
                continue
            pos = start + length
            if undefined or pos > end:
                return None
            writer = WRITERS.get(vr)  # none for a private sequence
            if writer is None or tag in _LUT_DESCRIPTORS:
                return None
            if length == 0:
                attr: Attribute | None = {"vr": vr}
            elif writer is binary_marker:
                value = data[start:pos]
                raw = RawDataElement(BaseTag(tag), vr, length, value, start, implicit, True)
                attr = self.binary(raw, vr, value)
            elif tag == _CHARSET_TAG:  # read in the default repertoire
                attr = writer(vr, data[start:pos], True, DEFAULT_CODEC)
            else:
                attr = writer(vr, data[start:pos], True, codec)
            if attr is None:
                return None
            out[key] = attr
        return out, pos

    def binary(self, raw: RawDataElement, vr: str, value: bytes) -> Attribute:
        """OB OD OF OL OV OW (their converters keep the bytes): bulk data or inline base64."""
        if self.handler is not None and len(value) > self.inline_limit:
            return {"vr": vr, "BulkDataURI": self.handler(_element(raw, vr, value))}
        return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("utf-8")}


def direct_attribute(ds: Dataset, tag: int) -> Attribute | None:
    """The attribute :func:`to_json_dict` writes for ``ds``'s top-level element ``tag`` when it
    takes the direct road: equal to pydicom's, without converting the element (it stays raw).

    None when the element is absent, converted already, of a binary VR, or left to pydicom.
    """
    element = ds._dict.get(Tag(tag))
    if not isinstance(element, RawDataElement) or _customised() or not _direct_allowed():
        return None
    charsets = ds.original_character_set
    if not charsets:
        return None
    codec = _direct_codec(charsets) if tag != _CHARSET_TAG else DEFAULT_CODEC
    return _write_direct(element, tag, codec, None)


def _write_direct(
    element: RawDataElement,
    tag: int,
    codec: str | None,
    binary: Callable[[RawDataElement, str, bytes], Attribute] | None,
) -> Attribute | None:
    """The direct road for one raw element (None: not taken); ``binary`` writes OB, OW...

    ``codec`` is that of :func:`_direct_codec` for the data set's character set.
    """
    known = element.VR or _dictionary_vr(tag)  # implicit VR: the dictionary's, if it has one
    writer = WRITERS.get(known)
    if writer is None or tag in _LUT_DESCRIPTORS:
        return None
    length = element.length
    if length == 0:  # pydicom's empty value for the VR: no "Value"
        return {"vr": known}
    data = element.value
    if data is None or len(data) != length:  # deferred, undefined length or cut short
        return None
    if writer is binary_marker:
        return None if binary is None else binary(element, known, data)
    return writer(known, data, element.is_little_endian, codec)


def _listed_creator(ds: Dataset, tag: int) -> bool:
    """Whether the private creator of the block of private ``tag`` has several values. pydicom
    then warns ("... is not a valid private creator") when it names one of the block's elements,
    as it does when it writes a binary value inline: the direct road leaves those to it."""
    creator = ds._dict.get(BaseTag(tag & 0xFFFF0000 | (tag & 0xFF00) >> 8))
    if creator is None or not tag & 0xFF00:
        return False
    if isinstance(creator, RawDataElement):
        return creator.value is not None and b"\\" in creator.value
    return not isinstance(creator.value, str | None)


def _fragments_end(data: bytes, pos: int, end: int) -> int:
    """Where encapsulated pixel data starting at ``data[pos]`` ends, after its sequence
    delimiter, when its items are whole and the delimiter has a zero length (then pydicom's
    reading of it, item by item, ends there too); else past ``end``."""
    while end - pos >= 8:
        tag = data[pos : pos + 4]
        if tag == _SEQUENCE_DELIMITER:
            return pos + 8 if data[pos + 4 : pos + 8] == _ZERO_LENGTH else end + 1
        if tag != _FRAGMENT:
            break
        (length,) = _LONG_LENGTH(data, pos + 4)
        pos += 8 + length
    return end + 1


def _dictionary_vr(tag: int) -> str:
    """The dictionary's VR for an implicit VR element, or "" (no direct road) when unknown."""
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return ""


def _short_path_vr(raw: RawDataElement) -> str | None:
    """The VR pydicom would give ``raw`` when it is an ordinary case, else None."""
    if raw.value is None and raw.length != 0:  # deferred read
        return None
    if raw.tag in _LUT_DESCRIPTORS:
        return None
    vr = raw.VR
    if vr is None:  # implicit VR: the dictionary's, when it has one
        try:
            vr = dictionary_VR(raw.tag)
        except KeyError:
            return None
    if vr == "UN" or vr in _AMBIGUOUS:
        return None
    return str(vr)


# First character sets (Python codec names, as codecs.lookup gives them) whose decoding without
# escape sequences pydicom does with one strict bytes.decode, and whose decoded text re-encodes
# without fail (pydicom's PersonName re-encodes each name, and would warn if it could not).
_DIRECT_CODECS = frozenset({"iso8859-1", "utf-8", "gb18030"})


def _direct_codec(encoding: str | MutableSequence[str]) -> str | None:
    """The codec of the direct road for the text VRs of a data set read with ``encoding``."""
    encodings = encoding or [default_encoding]  # as convert_value normalises it
    first = encodings if isinstance(encodings, str) else encodings[0]
    try:
        name = codecs.lookup(first).name
    except Exception:  # unknown: pydicom warns and falls back; leave it to pydicom
        return None
    return name if name in _DIRECT_CODECS else None


def _element(raw: RawDataElement, vr: str, value: Any) -> DataElement:
    """The element pydicom would have made of ``raw``, for a bulk data handler."""
    return DataElement(
        raw.tag, vr, value, raw.value_tell, raw.length == _UNDEFINED, already_converted=True
    )


def _same(element: DataElement) -> DataElement:
    return element


# Element and item headers inside a little endian sequence value (as data_element_generator).
_ITEM_HEADER = Struct("<HHL").unpack_from
_IMPLICIT_HEADER = Struct("<HHL").unpack_from
_EXPLICIT_HEADER = Struct("<HH2sH").unpack_from
_LONG_LENGTH = Struct("<L").unpack_from
_ITEM_DELIMITER = b"\xfe\xff\x0d\xe0"  # (FFFE,E00D) little endian
_ZERO_LENGTH = bytes(4)
_FRAGMENT = b"\xfe\xff\x00\xe0"  # (FFFE,E000) little endian
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0"  # (FFFE,E0DD)
_LENGTH_32 = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)


def _vm(value: Any) -> int:
    """``DataElement.VM`` for a value of a VR other than SQ."""
    if value is None:
        return 0
    if isinstance(value, str | bytes | PersonName):
        return 1 if value else 0
    try:
        iter(value)
    except TypeError:
        return 1
    return len(value)


def _attribute(
    vr: str,
    value: Any,
    threshold: int,
    handler: BulkHandler | None,
    element: Callable[[], DataElement],
) -> dict[str, Any]:
    """``DataElement.to_json_dict`` for a VR other than SQ and the ambiguous ones."""
    attr: dict[str, Any] = {"vr": vr}
    vm = _vm(value)
    if vm == 0:
        return attr
    if vr in _BINARY:
        if handler is not None and len(value) > (threshold // 4) * 3:
            attr["BulkDataURI"] = handler(element())
        else:
            attr["InlineBinary"] = base64.b64encode(value).decode("utf-8")
        return attr
    values = value if vm > 1 else [value]
    if vr == "PN":
        attr["Value"] = [person_name(name.components) for name in values]
    elif vr == "AT":
        attr["Value"] = [format(v, "08X") for v in values]
    elif vr in _INT:
        attr["Value"] = [int(v) if v is not None else empty_value_for_VR(vr) for v in values]
    elif vr in _FLOAT:
        attr["Value"] = [float(v) if v is not None else empty_value_for_VR(vr) for v in values]
    else:
        attr["Value"] = list(values)
    return attr
