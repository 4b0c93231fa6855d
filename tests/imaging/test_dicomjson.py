"""imaging.dicomjson gives what Dataset.to_json_dict gives; ingest gives the same Instance."""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom.data
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

import imaging.ingest
from imaging.dicomjson import to_json_dict
from imaging.ingest import BULK_THRESHOLD, IngestError, ingest
from tests.imaging.dicomfiles import build, bundled


def _bundled_files() -> list[Path]:
    """pydicom's test files present in the wheel (none downloaded)."""
    return sorted(p for p in map(Path, pydicom.data.get_testdata_files()) if p.is_file())


def _handler(element: DataElement) -> str:
    return f"bulk:{element.tag:08X}"


BUILT = {
    "gb18030": build(charset="GB18030", patient_name="Zhang^San=张^三", PatientID="身份证110101"),
    "utf8": build(charset="ISO_IR 192", patient_name="张三", InstitutionName="协和医院"),
    "utf8-multi": build(charset="ISO_IR 192", patient_name="张三\\李四=李^四"),
    "pn-three-groups": build(charset="ISO_IR 192", patient_name="Zhang^San=张^三=zhang^san"),
    "latin1": build(charset="ISO_IR 100", patient_name="Müller^Jürgen"),
    "no-charset": build(charset=None),
}


def _sources() -> Iterator[Any]:
    for path in _bundled_files():
        yield pytest.param(path.read_bytes(), id=path.name)
    for name, data in BUILT.items():
        yield pytest.param(data, id=name)


SOURCES = list(_sources())


def _outcome(convert: Any, data: bytes, threshold: int, handler: Any) -> Any:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = dcmread(io.BytesIO(data), force=True)
            ds.StudyInstanceUID  # noqa: B018 (as ingest does: some elements converted already)
            result: Any = convert(ds, threshold, handler)
        except Exception as exc:
            result = ("raises", type(exc))
    return result, list(dict.fromkeys(str(w.message) for w in caught))


def _pydicom(ds: Dataset, threshold: int, handler: Any) -> dict[str, Any]:
    return ds.to_json_dict(threshold, handler)


def _same(a: Any, b: Any) -> bool:
    """``==``, except that a NaN equals a NaN (pydicom's own output is unequal to itself)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.mark.parametrize("data", SOURCES)
@pytest.mark.parametrize(("threshold", "handler"), [(BULK_THRESHOLD, _handler), (16, None)])
def test_same_json_model_and_warnings_as_pydicom(data: bytes, threshold: int, handler: Any) -> None:
    expected = _outcome(_pydicom, data, threshold, handler)
    assert _outcome(to_json_dict, data, threshold, handler) == expected


def _old_ingest(data: bytes) -> Any:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(imaging.ingest, "to_json_dict", _pydicom)
        return _ingest(data)


def _ingest(data: bytes) -> Any:
    try:
        return ingest(data)
    except IngestError as exc:
        return exc.code, exc.message


@pytest.mark.parametrize("data", SOURCES)
def test_ingest_gives_the_same_instance(data: bytes) -> None:
    assert _ingest(data) == _old_ingest(data)


SAMPLES = [
    bundled("CT_small.dcm").read_bytes(),
    bundled("test-SR.dcm").read_bytes(),
    bundled("MR_small.dcm").read_bytes(),  # implicit VR
    BUILT["gb18030"],
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A sample with bytes changed after the preamble: values, lengths, VRs."""
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(132, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "text", "overwrite"]))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "text":
            chunk = draw(st.sampled_from([b"\\", b" ", b"\x00", b"=", b"^", b".", b"e", b"\xe5"]))
            data[at : at + 1] = chunk
        else:
            chunk = draw(st.sampled_from([b"UN", b"SQ", b"DS", b"IS", b"PN", b"AT", b"OB", b"FD"]))
            data[at : at + 2] = chunk
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_files_same_json_model(data: bytes) -> None:
    new, new_warnings = _outcome(to_json_dict, data, BULK_THRESHOLD, _handler)
    old, old_warnings = _outcome(_pydicom, data, BULK_THRESHOLD, _handler)
    assert _same(new, old)
    assert new_warnings == old_warnings


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_files_same_instance(data: bytes) -> None:
    new, old = _ingest(data), _old_ingest(data)
    if isinstance(new, tuple):
        assert new == old
    else:
        assert _same(dict(new.metadata), dict(old.metadata))
        assert new.warnings == old.warnings
