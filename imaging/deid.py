"""Pseudonymise a DICOM instance for sharing outside the consortium (PS3.15 Annex E, Basic Profile).

:func:`pseudonymise` applies the Basic Application Level Confidentiality Profile to one instance:

* the attributes of :data:`~imaging.deidtable.TABLE_E1_1` get the action of their row in PS3.15
  (2024b) Table E.1-1, wherever they are, sequence items included (the walk recurses into every
  sequence it keeps);
* private attributes are removed (the profile's "private attributes: X"), and so are curve data
  (groups 50xx) and overlays (groups 60xx: the table removes Overlay Data and Overlay Comments;
  the rest of an overlay means nothing without them), group lengths, and the file meta header's
  source AE title;
* UIDs are replaced by ``2.25.<n>``, *n* the first 128 bits of HMAC-SHA256(key, original UID) as
  an RFC 9562 version-8 UUID. The same key gives the same UID for the same original everywhere,
  so the instances of one study pseudonymised one by one, or the same study twice, keep their
  study, series, frame of reference and references together. Replaced are the U rows of the table
  and any other UI attribute whose value is not a DICOM-registered UID, except class, transfer
  syntax and coding-scheme UIDs (which identify definitions, not people or events);
* Patient's Name and Patient ID become the given pseudonym; Patient Identity Removed is YES;
  De-identification Method and its code sequence (113100, DCM, "Basic Application
  Confidentiality Profile") are set;
* the file meta header is rebuilt: Media Storage SOP Instance UID is the new SOP Instance UID,
  the transfer syntax is kept, pixel data is untouched.

:data:`~imaging.deidtable.TABLE_E1_1` holds 334 of the table's ~600 rows, with the table's own
codes: the rows about the patient, the visit and the request, the people and the institution, the
study, series, equipment and acquisition, free-text comments and interpretation, dates and times,
the main trial rows, pathology specimens and labels, presentation states, signatures, and the U
rows of all but the radiotherapy IODs (an instance UID the table misses is caught by the rule
above). Rows about radiotherapy, GPS and camera EXIF, hanging protocols and selector values are
not in it: such attributes, like every attribute the table does not list, are kept as they are.

The table's conditional codes are resolved without knowing each IOD's attribute types, towards
keeping the instance valid: a code with U (X/Z/U*) keeps the sequence and replaces the UIDs in
it; otherwise one with D gives a dummy, otherwise one with Z an empty value. A dummy sequence
cannot be made meaningful without the IOD's template, so D on a sequence empties it, like Z.

Burned-in text cannot be removed here: an instance declaring Burned In Annotation YES is refused
unless the caller accepts it. Blocking; from asyncio call it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import io
import re
import warnings
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydicom import dcmread
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRLittleEndian

from imaging.deidtable import TABLE_E1_1

__all__ = [
    "DEIDENTIFICATION_METHOD",
    "TABLE_E1_1",
    "DeidError",
    "DeidErrorCode",
    "Pseudonymised",
    "action_for",
    "pseudonymise",
    "pseudonymous_uid",
]

DeidErrorCode = Literal[
    "not-dicom", "bad-key", "bad-pseudonym", "burned-in-annotation", "missing-uid", "unwritable"
]
Action = Literal["D", "Z", "X", "U"]

DEIDENTIFICATION_METHOD = "PS3.15 E.1 Basic Profile; UIDs by HMAC-SHA256 (Huizhen)"
MIN_KEY_BYTES = 16

# UI attributes that name a definition (a class, an encoding, a coding scheme), never replaced.
_DEFINITION_UIDS = frozenset(
    {"CodingSchemeUID", "MappingResourceUID", "ContextUID", "ContextGroupExtensionCreatorUID"}
)
_DEFINITION_SUFFIXES = ("ClassUID", "SyntaxUID", "ClassUIDInFile", "SyntaxUIDInFile")
_PSEUDONYM = re.compile(r"^[ -\[\]-~]{1,64}$")  # printable ASCII without backslash

# Dummy values for D, by VR.
_DUMMY: dict[str, Any] = {
    "AE": "ANONYMIZED",
    "AS": "000Y",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "LO": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "SH": "ANONYMIZED",
    "ST": "ANONYMIZED",
    "UC": "ANONYMIZED",
    "UT": "ANONYMIZED",
    "UR": "urn:anonymized",
    "PN": "ANONYMIZED",
}
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})


class DeidError(Exception):
    """The instance cannot be pseudonymised; ``code`` says why, ``message`` says it for a person."""

    def __init__(self, code: DeidErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code: DeidErrorCode = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Pseudonymised:
    data: bytes  # the Part-10 file
    uid_map: dict[str, str] = field(repr=False)  # original UID → replacement, for this instance


def action_for(code: str) -> Action:
    """The action this module takes for a code of Table E.1-1 (see the module docstring)."""
    if "U" in code:
        return "U"
    if "D" in code:
        return "D"
    if "Z" in code:
        return "Z"
    return "X"


_ACTIONS: dict[str, Action] = {keyword: action_for(code) for keyword, code in TABLE_E1_1.items()}


def pseudonymous_uid(key: bytes, uid: str) -> str:
    """``2.25.<n>``: n is HMAC-SHA256(key, uid) cut to 128 bits, as a version-8 UUID."""
    digest = hmac.new(key, uid.encode("ascii", "replace"), hashlib.sha256).digest()
    n = int.from_bytes(digest[:16], "big")
    n = (n & ~(0xF << 76)) | (0x8 << 76)  # version 8 (custom)
    n = (n & ~(0x3 << 62)) | (0x2 << 62)  # variant 10 (RFC 9562)
    return f"2.25.{n}"


def pseudonymise(
    source: Dataset | bytes,
    *,
    key: bytes,
    pseudonym: str,
    accept_burned_in: bool = False,
) -> Pseudonymised:
    """One instance (a data set, or the bytes of a Part-10 file) pseudonymised. Blocking.

    ``key`` (at least 16 bytes, kept secret by the sender) makes the UIDs; ``pseudonym`` (printable
    ASCII without backslash, at most 64 characters) replaces the patient's name and ID.
    """
    if len(key) < MIN_KEY_BYTES:
        raise DeidError("bad-key", f"the key must have at least {MIN_KEY_BYTES} bytes")
    if not _PSEUDONYM.match(pseudonym):
        raise DeidError("bad-pseudonym", "the pseudonym must be 1-64 printable ASCII characters")
    ds = _dataset(source)
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES" and not accept_burned_in:
        raise DeidError("burned-in-annotation", "the pixel data has burned-in annotation")
    if not ds.get("SOPInstanceUID") or not ds.get("SOPClassUID"):
        raise DeidError("missing-uid", "the data set has no SOP Instance or SOP Class UID")
    transfer_syntax = UID(str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", "")))
    uid_map: dict[str, str] = {}
    _clean(ds, key, uid_map)
    ds.PatientName = pseudonym
    ds.PatientID = pseudonym
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEIDENTIFICATION_METHOD
    code = Dataset()
    code.CodeValue = "113100"
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = Sequence([code])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(str(ds.SOPClassUID))
    meta.MediaStorageSOPInstanceUID = UID(str(ds.SOPInstanceUID))
    meta.TransferSyntaxUID = transfer_syntax if transfer_syntax else ExplicitVRLittleEndian
    ds.file_meta = meta
    out = io.BytesIO()
    try:
        ds.save_as(out, enforce_file_format=True)
    except Exception as exc:  # a value pydicom cannot encode in the kept transfer syntax
        raise DeidError("unwritable", f"cannot write: {type(exc).__name__}") from None
    return Pseudonymised(data=out.getvalue(), uid_map=uid_map)


def _dataset(source: Dataset | bytes) -> Dataset:
    if isinstance(source, Dataset):
        return copy.deepcopy(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's complaints may quote patient data
            return dcmread(io.BytesIO(source), force=False)
    except Exception as exc:  # untrusted bytes: any parser failure is the file's fault
        raise DeidError("not-dicom", f"cannot parse: {type(exc).__name__}") from None


def _is_removed_group(tag: BaseTag) -> bool:
    group = tag.group
    curves_or_overlays = 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF
    return tag.is_private or (curves_or_overlays and group % 2 == 0) or tag.element == 0


def _clean(ds: Dataset, key: bytes, uid_map: MutableMapping[str, str]) -> None:
    for tag in list(ds.keys()):
        if _is_removed_group(tag):
            del ds[tag]
            continue
        element = ds[tag]
        keyword = keyword_for_tag(tag)
        action = _ACTIONS.get(keyword)
        if action == "X":
            del ds[tag]
        elif action == "Z" or (action == "D" and element.VR == "SQ"):
            element.value = Sequence() if element.VR == "SQ" else None
        elif action == "D":
            _dummy(element)
        elif element.VR == "SQ":  # U (X/Z/U*) or not in the table: keep, clean inside
            for item in element.value:
                _clean(item, key, uid_map)
        elif element.VR == "UI" and (action == "U" or _replaceable_uid(keyword, element)):
            _replace_uids(element, key, uid_map)


def _dummy(element: DataElement) -> None:
    vr = element.VR
    if vr == "UI":
        return  # D rows are not UIDs; a UI value would be replaced by the U rule
    if vr in _BINARY_VRS:
        element.value = b"\x00\x00"
    elif vr in _DUMMY:
        element.value = _DUMMY[vr]
    else:  # binary numbers: FL, FD, SL, SS, SV, UL, US, UV, AT
        element.value = 0


def _replaceable_uid(keyword: str, element: DataElement) -> bool:
    if keyword in _DEFINITION_UIDS or keyword.endswith(_DEFINITION_SUFFIXES):
        return False
    values = element.value if isinstance(element.value, MultiValue) else [element.value]
    return any(v and not UID(str(v)).keyword for v in values)


def _replace_uids(element: DataElement, key: bytes, uid_map: MutableMapping[str, str]) -> None:
    def replace(value: object) -> str:
        original = str(value or "").strip("\0 ")
        if not original:
            return original
        new = uid_map.get(original)
        if new is None:
            new = uid_map[original] = pseudonymous_uid(key, original)
        return new

    if isinstance(element.value, MultiValue):
        element.value = [replace(v) for v in element.value]
    elif element.value:
        element.value = replace(element.value)
