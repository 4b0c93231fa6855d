"""The DICOM JSON model (PS3.18 F.2) of a pydicom data set, without pydicom's per-element detour.

:func:`to_json_dict` returns what ``Dataset.to_json_dict(bulk_data_threshold, handler)`` returns,
equal with ``==``, but converts each raw element's bytes with pydicom's own value converter
(:func:`pydicom.values.convert_value`: the same character set decoding, the same value types and
the same validation warnings) and writes the JSON attribute from that value directly. pydicom
instead converts every element into a :class:`~pydicom.dataelem.DataElement`, stores it back
into the data set and then asks it for its JSON, which costs most of the time of a small file.

Only the common case takes the short path: an element whose VR is explicit (or known from the
dictionary), neither ``UN`` nor ambiguous (``US or SS``...), not a LUT descriptor, not deferred.
Every other element, and every element when pydicom's conversion hooks or numpy options are
customised, goes through pydicom itself (``ds[tag].to_json_dict``). Sequences are converted by
pydicom (that sets the items' parent and pixel representation) and their items walked here.

Unlike pydicom, the data set is left mostly unconverted: elements taken on the short path stay
raw in ``ds``. Blocking and pure otherwise.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, MutableSequence
from functools import partial
from typing import Any

from pydicom import config
from pydicom.charset import default_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.hooks import hooks
from pydicom.hooks import raw_element_value as _default_value_hook
from pydicom.hooks import raw_element_vr as _default_vr_hook
from pydicom.valuerep import AMBIGUOUS_VR, BYTES_VR, FLOAT_VR, INT_VR, PersonName
from pydicom.values import convert_value

__all__ = ["to_json_dict"]

BulkHandler = Callable[[DataElement], str]

_UNDEFINED = 0xFFFFFFFF
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
    return _dataset(ds, bulk_data_threshold, handler)


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


def _dataset(ds: Dataset, threshold: int, handler: BulkHandler | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    encoding: str | MutableSequence[str] | None = None
    # Dataset.keys() and get_item() for each cost more than the rest of a short-path element.
    for tag, element in list(ds._dict.items()):
        key = f"{tag:08X}"
        if isinstance(element, RawDataElement):
            vr = _short_path_vr(element)
            if vr is None:
                out[key] = ds[tag].to_json_dict(handler, threshold)
                continue
            if vr == "SQ":
                out[key] = _sequence(ds[tag], threshold, handler)
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
            out[key] = _sequence(element, threshold, handler)
        elif element.VR in _AMBIGUOUS or element.is_buffered:
            out[key] = element.to_json_dict(handler, threshold)
        else:
            out[key] = _attribute(
                element.VR, element.value, threshold, handler, partial(_same, element)
            )
    return out


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


def _element(raw: RawDataElement, vr: str, value: Any) -> DataElement:
    """The element pydicom would have made of ``raw``, for a bulk data handler."""
    return DataElement(
        raw.tag, vr, value, raw.value_tell, raw.length == _UNDEFINED, already_converted=True
    )


def _same(element: DataElement) -> DataElement:
    return element


def _sequence(element: DataElement, threshold: int, handler: BulkHandler | None) -> dict[str, Any]:
    return {"vr": "SQ", "Value": [_dataset(item, threshold, handler) for item in element.value]}


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
        names = []
        for name in values:
            components = name.components
            comps = {"Alphabetic": components[0]}
            if len(components) > 1:
                comps["Ideographic"] = components[1]
            if len(components) > 2:
                comps["Phonetic"] = components[2]
            names.append(comps)
        attr["Value"] = names
    elif vr == "AT":
        attr["Value"] = [format(v, "08X") for v in values]
    elif vr in _INT:
        attr["Value"] = [int(v) if v is not None else empty_value_for_VR(vr) for v in values]
    elif vr in _FLOAT:
        attr["Value"] = [float(v) if v is not None else empty_value_for_VR(vr) for v in values]
    else:
        attr["Value"] = list(values)
    return attr
