"""The direct writers: a DICOM value's JSON attribute (PS3.18 F.2) written from its bytes, as
pydicom's converter for its VR would make it, nothing converted; None when pydicom would warn
about the value, fail on it or convert it in some other way.

Each writer of :data:`WRITERS` takes the VR, the value's bytes, whether they are little endian and
the codec of the VRs with a character set (None: those values are refused), and does what
pydicom's converter for that VR (``pydicom.values``) and then ``DataElement.to_json_dict`` do.
They are the direct road of :mod:`imaging.dicomjson`, which walks the data sets, chooses the
codec and writes the binary VRs itself (:func:`binary_marker`). Pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from struct import Struct, calcsize, unpack
from typing import Any

__all__ = [
    "DEFAULT_CODEC",
    "EXPLICIT_VRS",
    "WRITERS",
    "Attribute",
    "DirectWriter",
    "binary_marker",
    "person_name",
    "strings",
]

Attribute = dict[str, Any]

# ---- the direct writers: (vr, value bytes, little endian, codec) -> attribute or None -------
# Each follows pydicom.values' converter for its VR, then DataElement.to_json_dict: an empty
# single value has no "Value"; a list keeps its empty strings; numbers are int or float.

DirectWriter = Callable[[str, bytes, bool, "str | None"], "Attribute | None"]
# The default repertoire: pydicom decodes these VRs with default_encoding ("iso8859", latin-1).
DEFAULT_CODEC = "latin-1"
# Read validation (valuerep.validate_value) warns past these lengths (MAX_VALUE_LEN).
_MAX_LENGTH = {"SH": 16, "LO": 64, "ST": 1024, "LT": 10240}
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")  # VR_REGEXES["UI"], ASCII digits
_IS = re.compile(r" *[+\-]?[0-9]+ *")  # VR_REGEXES["IS"], ASCII digits
_NUMBERS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "UV": "Q", "SV": "q", "FL": "f", "FD": "d"}


def _values(vr: str, values: list[Any]) -> Attribute:
    """The attribute of a split string value: one empty string is no value at all."""
    if len(values) == 1 and not values[0]:
        return {"vr": vr}
    return {"vr": vr, "Value": values}


def strings(vr: str, value: bytes, _little: bool, _codec: str | None) -> Attribute | None:
    """AS, CS, DA, DT, TM (convert_string: multi_string, trailing spaces and NULs off)."""
    return _values(vr, value.decode(DEFAULT_CODEC).rstrip(" \x00").split("\\"))


def _ae(vr: str, value: bytes, _little: bool, _codec: str | None) -> Attribute | None:
    """AE (convert_AE_string: each value stripped of whitespace on both sides)."""
    return _values(vr, [item.strip() for item in value.decode(DEFAULT_CODEC).split("\\")])


def _ur(vr: str, value: bytes, _little: bool, _codec: str | None) -> Attribute | None:
    """UR (convert_UR_string: one value, trailing whitespace off)."""
    return _values(vr, [value.decode(DEFAULT_CODEC).rstrip()])


def _ui(vr: str, value: bytes, _little: bool, _codec: str | None) -> Attribute | None:
    """UI (convert_UI; UID() validates each non-empty value: refused here if it would warn)."""
    items = value.decode(DEFAULT_CODEC).rstrip("\x00 ").split("\\")
    for item in items:
        if item and (len(item) > 64 or _UID.fullmatch(item) is None):
            return None
    return _values(vr, items)


def _ds(vr: str, value: bytes, _little: bool, _codec: str | None) -> Attribute | None:
    """DS (convert_DS_string: strip, multi_string, DSfloat = float(text); JSON float)."""
    items = value.decode(DEFAULT_CODEC).strip().rstrip(" \x00").split("\\")
    return _numeric_strings(vr, items, _float)


def _is(vr: str, value: bytes, _little: bool, _codec: str | None) -> Attribute | None:
    """IS (convert_IS_string: multi_string, IS() validates then int(text); JSON int)."""
    return _numeric_strings(vr, value.decode(DEFAULT_CODEC).rstrip(" \x00").split("\\"), _int)


def _numeric_strings(
    vr: str, items: list[str], number: Callable[[str], float | int | None]
) -> Attribute | None:
    """DS and IS values as JSON numbers, each by ``number`` (None: pydicom's to convert)."""
    numbers: list[Any] = []
    for item in items:
        if not item.strip():  # DSfloat, IS keep the text; the JSON writer's float(), int() fail
            if len(items) == 1 and not item:
                return {"vr": vr}
            return None
        converted = number(item)
        if converted is None:
            return None
        numbers.append(converted)
    return {"vr": vr, "Value": numbers}


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:  # pydicom retries other VRs
        return None


def _int(text: str) -> int | None:
    if len(text) > 12 or _IS.fullmatch(text) is None:  # a warning, or an ISfloat
        return None
    return int(text)


def _decode(value: bytes, codec: str | None) -> str | None:
    """decode_bytes's one-character-set case, when it cannot warn; else None."""
    if codec is None or b"\x1b" in value:
        return None
    try:
        return value.decode(codec)
    except UnicodeDecodeError:
        return None


def _text(vr: str, value: bytes, _little: bool, codec: str | None) -> Attribute | None:
    """SH, LO, UC (convert_text: split, each value validated, trailing spaces and NULs off)."""
    text = _decode(value, codec)
    if text is None:
        return None
    limit = _MAX_LENGTH.get(vr)
    items = text.split("\\")
    if limit is not None:
        for item in items:
            if len(item) > limit:
                return None
    return _values(vr, [item.rstrip("\x00 ") for item in items])


def _single_text(vr: str, value: bytes, _little: bool, codec: str | None) -> Attribute | None:
    """ST, LT, UT (convert_single_string: no split, validated, trailing spaces and NULs off)."""
    text = _decode(value, codec)
    if text is None:
        return None
    limit = _MAX_LENGTH.get(vr)
    if limit is not None and len(text) > limit:
        return None
    return _values(vr, [text.rstrip("\x00 ")])


def _pn(vr: str, value: bytes, _little: bool, codec: str | None) -> Attribute | None:
    """PN (convert_PN: trailing NULs and spaces off, decoded, split; PersonName's groups)."""
    text = _decode(value.rstrip(b"\x00 "), codec)
    if text is None:
        return None
    names = text.split("\\")
    out: list[dict[str, str]] = []
    for name in names:
        groups = name.split("=")
        if len(groups) > 3:  # validate_pn warns
            return None
        for group in groups:
            if len(group) > 64:
                return None
        while groups and not groups[-1]:
            groups.pop()
        if not groups:  # an empty name: no value alone, an IndexError in pydicom in a list
            if len(names) == 1:
                return {"vr": vr}
            return None
        out.append(person_name(groups))
    return {"vr": vr, "Value": out}


def person_name(groups: Sequence[str]) -> dict[str, str]:
    """A person name's JSON object (PS3.18 F.2.2) from its one to three component groups."""
    name = {"Alphabetic": groups[0]}
    if len(groups) > 1:
        name["Ideographic"] = groups[1]
    if len(groups) > 2:
        name["Phonetic"] = groups[2]
    return name


def _numbers(code: str) -> DirectWriter:
    """US SS UL SL UV SV FL FD (convert_numbers: struct.unpack of the whole value)."""
    size = calcsize(f"<{code}")
    one = {True: Struct(f"<{code}").unpack, False: Struct(f">{code}").unpack}

    def write(vr: str, value: bytes, little: bool, _codec: str | None) -> Attribute | None:
        if len(value) == size:
            return {"vr": vr, "Value": list(one[little](value))}
        count, rest = divmod(len(value), size)
        if rest:  # pydicom's BytesLengthException: an error or UN
            return None
        return {"vr": vr, "Value": list(unpack(f"{'<' if little else '>'}{count}{code}", value))}

    return write


def _at(vr: str, value: bytes, little: bool, _codec: str | None) -> Attribute | None:
    """AT (convert_ATvalue: (group, element) pairs; JSON as eight hex digits)."""
    count, rest = divmod(len(value), 4)
    if rest:
        return None
    halves = unpack(f"{'<' if little else '>'}{2 * count}H", value)
    return {
        "vr": vr,
        "Value": [format(halves[i] << 16 | halves[i + 1], "08X") for i in range(0, 2 * count, 2)],
    }


def binary_marker(vr: str, value: bytes, little: bool, codec: str | None) -> Attribute | None:
    """A marker: the binary VRs are written by :meth:`_Writer.binary` (bulk data)."""
    raise AssertionError("_Writer.binary writes these")


WRITERS: dict[str, DirectWriter] = {
    "AE": _ae,
    "AS": strings,
    "CS": strings,
    "DA": strings,
    "DT": strings,
    "TM": strings,
    "UR": _ur,
    "UI": _ui,
    "DS": _ds,
    "IS": _is,
    "SH": _text,
    "LO": _text,
    "UC": _text,
    "ST": _single_text,
    "LT": _single_text,
    "UT": _single_text,
    "PN": _pn,
    "AT": _at,
    **{vr: _numbers(code) for vr, code in _NUMBERS.items()},
    **dict.fromkeys(("OB", "OD", "OF", "OL", "OV", "OW"), binary_marker),
}


# The explicit VRs an item's elements may have (the direct road's, and SQ).
EXPLICIT_VRS = {vr.encode(): vr for vr in [*WRITERS, "SQ"]}
