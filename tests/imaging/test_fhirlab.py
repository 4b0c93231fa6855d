"""FHIR R4 lab results: the same records as HL7 v2, errors that point at the bad element."""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imaging.fhirlab import FhirError, parse_fhir
from imaging.hl7v2 import parse_oru
from imaging.lab import LabMessage
from server.reports import LabValue
from tests.imaging.labmessages import (
    CONSULT,
    NATIONAL_ID,
    ORU_UTF8,
    POTASSIUM,
    REPORT_CONTAINED,
    V3,
    as_json,
    transaction_bundle,
)

CST = dt.timezone(dt.timedelta(hours=8))


def test_report_with_contained_observations() -> None:
    m = parse_fhir(as_json(REPORT_CONTAINED))
    assert (m.message_type, m.control_id, m.version) == ("DiagnosticReport", "dr1", "R4")
    assert m.national_id == NATIONAL_ID
    assert (m.patient_name, m.sex, m.birth_date) == ("张三", "M", dt.date(1949, 12, 31))
    (order,) = m.orders
    assert (order.placer, order.filler, order.status) == (CONSULT, "F202403150088", "F")
    assert (order.service.code, order.service.name) == ("ELEC", "电解质四项")
    assert order.observed_at == dt.datetime(2024, 3, 15, 9, 15, tzinfo=CST)
    assert order.reported_at == dt.datetime(2024, 3, 15, 10, 28, tzinfo=CST)
    assert order.notes == ("血钾危急值，已电话通知",)
    k, na = order.results
    assert (k.code, k.name, k.system) == ("2823-3", "血钾 K", "http://loinc.org")
    assert (k.value, k.numeric, k.unit, k.reference_range) == ("6.8", 6.8, "mmol/L", "3.5-5.3")
    assert (k.low, k.high, k.flags, k.flag, k.critical) == (
        3.5,
        5.3,
        ("HH",),
        "critical_high",
        True,
    )
    assert (k.status, k.value_type) == ("F", "Quantity")
    assert (na.value, na.flag, na.critical) == ("138", "normal", False)


def test_same_potassium_as_hl7() -> None:
    hl7 = parse_oru(ORU_UTF8).orders[0].results[0]
    fhir = parse_fhir(REPORT_CONTAINED).orders[0].results[0]
    for name in ("code", "name", "value", "numeric", "unit", "reference_range", "flag"):
        assert getattr(fhir, name) == getattr(hl7, name), name
    assert (fhir.low, fhir.high, fhir.critical, fhir.status) == (
        hl7.low,
        hl7.high,
        hl7.critical,
        hl7.status,
    )
    assert LabValue.model_validate(fhir.as_lab_value()) == LabValue.model_validate(
        hl7.as_lab_value()
    )


def test_transaction_bundle() -> None:
    m = parse_fhir(json.dumps(transaction_bundle(), ensure_ascii=False))
    assert (m.message_type, m.control_id) == ("Bundle/transaction", "LAB20240315000123")
    assert [p.type for p in m.patient_ids] == ["MR", "NNCHN"]
    (order,) = m.orders
    assert order.placer == CONSULT  # basedOn -> ServiceRequest/sr1 -> PLAC identifier
    assert order.observed_at == dt.datetime(2024, 3, 15, 9, 15, tzinfo=CST)  # effectivePeriod
    ctni, hgb = order.results  # by urn:uuid fullUrl, and by Observation/hgb
    assert (ctni.name, ctni.flag, ctni.critical, ctni.notes) == (
        "肌钙蛋白 I",
        "critical_high",
        True,
        ("复查确认",),
    )
    assert (hgb.name, hgb.value, hgb.flag) == ("血红蛋白 HGB", "85", "low")
    assert m.critical


def test_collection_of_loose_observations_grouped_by_placer() -> None:
    def obs(ident: str, placer: str, value: float) -> dict[str, Any]:
        o = copy.deepcopy(POTASSIUM)
        o["id"] = ident
        o["valueQuantity"]["value"] = value
        o["basedOn"] = [{"identifier": {"system": "urn:huizhen:consult", "value": placer}}]
        o["subject"] = {"identifier": {"system": "urn:oid:2.16.156.10011.1.3", "value": "X1"}}
        return o

    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": obs("a", "C-1", 4.1)},
            {"resource": {"resourceType": "Specimen", "id": "s1", "anything": [1, 2]}},
            {"resource": obs("b", "C-2", 6.9)},
            {"resource": obs("c", "C-1", 4.3)},
        ],
    }
    m = parse_fhir(bundle)
    assert [(o.placer, [r.value for r in o.results]) for o in m.orders] == [
        ("C-1", ["4.1", "4.3"]),
        ("C-2", ["6.9"]),
    ]
    assert [(p.value, p.authority) for p in m.patient_ids] == [("X1", "urn:oid:2.16.156.10011.1.3")]


def test_standalone_observation() -> None:
    m = parse_fhir(POTASSIUM)
    assert m.message_type == "Observation"
    (order,) = m.orders
    assert order.placer == ""
    assert order.results[0].critical


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"valueQuantity": {"value": 0.01, "comparator": "<", "unit": "ng/mL"}}, ("<0.01", None)),
        ({"valueQuantity": {"value": 5, "code": "mmol/L"}}, ("5", 5.0)),
        ({"valueString": "阴性"}, ("阴性", None)),
        ({"valueString": "12.5"}, ("12.5", 12.5)),
        (
            {"valueCodeableConcept": {"coding": [{"code": "NEG", "display": "阴性"}]}},
            ("阴性", None),
        ),
        ({"valueCodeableConcept": {"text": "阳性(+)"}}, ("阳性(+)", None)),
        ({"valueInteger": 3}, ("3", 3.0)),
        ({"valueBoolean": False}, ("false", None)),
        (
            {"valueRatio": {"numerator": {"value": 1}, "denominator": {"value": 320}}},
            ("1:320", None),
        ),
        ({"valueRange": {"low": {"value": 10}, "high": {"value": 20}}}, ("10-20", None)),
        ({}, ("", None)),
    ],
)
def test_values(value: dict[str, Any], expected: tuple[str, float | None]) -> None:
    o = copy.deepcopy(POTASSIUM)
    del o["valueQuantity"]
    o.update(value)
    (result,) = parse_fhir(o).results
    assert (result.value, result.numeric) == expected


def test_decimal_precision_is_kept_from_json() -> None:
    text = as_json(POTASSIUM).replace(b'"value": 6.8', b'"value": 6.80')
    assert parse_fhir(text).results[0].value == "6.80"


@pytest.mark.parametrize(
    ("code", "flag", "critical"),
    [
        ("N", "normal", False),
        ("L", "low", False),
        ("H", "high", False),
        ("LL", "critical_low", True),
        ("HH", "critical_high", True),
        ("A", "abnormal", False),
        ("AA", "abnormal", True),
    ],
)
def test_interpretations(code: str, flag: str, critical: bool) -> None:
    o = copy.deepcopy(POTASSIUM)
    o["interpretation"] = [{"coding": [{"system": V3, "code": code}]}]
    (result,) = parse_fhir(o).results
    assert (result.flag, result.critical) == (flag, critical)


def test_components_and_panels() -> None:
    panel = {
        "resourceType": "Observation",
        "id": "panel",
        "status": "final",
        "code": {"text": "血常规"},
        "hasMember": [{"reference": "#hgb"}],
        "component": [
            {"code": {"text": "白细胞 WBC"}, "valueQuantity": {"value": 12.6, "unit": "10^9/L"}}
        ],
        "contained": [
            {
                "resourceType": "Observation",
                "id": "hgb",
                "status": "preliminary",
                "code": {"text": "血红蛋白 HGB"},
                "valueQuantity": {"value": 85, "unit": "g/L"},
                "referenceRange": [{"text": "130～175"}],
                "interpretation": [{"coding": [{"system": V3, "code": "L"}]}],
            }
        ],
    }
    (hgb, wbc) = parse_fhir(panel).results
    assert (hgb.name, hgb.status, hgb.low, hgb.high, hgb.flag) == (
        "血红蛋白 HGB",
        "P",
        130.0,
        175.0,
        "low",
    )
    assert (wbc.name, wbc.value, wbc.unit, wbc.status) == ("白细胞 WBC", "12.6", "10^9/L", "F")


def test_extensions_where_fhir_allows_them() -> None:
    o = copy.deepcopy(POTASSIUM)
    o["extension"] = [{"url": "urn:huizhen:analyser", "valueString": "Mindray BS-240"}]
    o["_status"] = {"extension": [{"url": "urn:x", "valueBoolean": True}]}
    o["code"]["coding"][0]["extension"] = [{"url": "urn:y", "extension": [{"url": "a"}]}]
    assert parse_fhir(o).results[0].critical


def _broken(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    doc = copy.deepcopy(base or REPORT_CONTAINED)
    *parents, last = path.strip("/").split("/")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


_DELETE = object()
ERRORS = [
    ("/contained/1/valueQuantity/value", "6.8", "decimal-type"),
    ("/contained/1/valueQuantity/value", True, "decimal-type"),
    ("/contained/1/status", "done", "literal-error"),
    ("/contained/1/code", _DELETE, "missing"),
    ("/contained/1/code/coding/0/code", 2823, "string-type"),
    ("/contained/1/code/coding/0/code", "", "string-too-short"),
    ("/contained/1/effectiveDateTime", "2024-03-15 10:15", "datetime"),
    ("/contained/1/effectiveDateTime", "2024-02-30", "datetime"),
    ("/contained/1/colour", "red", "extra-forbidden"),
    (
        "/contained/1/modifierExtension",
        [{"url": "urn:x", "valueBoolean": True}],
        "modifier-extension",
    ),
    (
        "/contained/1/extension",
        [{"url": "urn:x", "valueString": "a", "valueInteger": 1}],
        "extension",
    ),
    ("/contained/1/valueString", "6.8", "multiple-values"),
    ("/result/1/reference", "#nowhere", "unresolved-reference"),
    ("/result/1/reference", "#p1", "not-an-observation"),
    ("/status", 1, "literal-error"),
]


@pytest.mark.parametrize(("path", "value", "reason"), ERRORS)
def test_errors_point_at_the_element(path: str, value: Any, reason: str) -> None:
    doc = _broken(path, value)
    with pytest.raises(FhirError) as caught:
        parse_fhir(doc)
    assert caught.value.reason == reason
    expected = {
        "multiple-values": "/contained/1",
        "extension": "/contained/1/extension/0",
    }.get(reason, path)
    assert caught.value.pointer == expected
    # nothing chained: pydantic's messages quote the input
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__
    assert str(value) not in str(caught.value) or str(value) in path


def test_errors_in_bundles_and_raw_json() -> None:
    bundle = transaction_bundle()
    bundle["entry"][2]["resource"]["result"][0]["reference"] = "urn:uuid:missing"
    with pytest.raises(FhirError) as caught:
        parse_fhir(bundle)
    assert (caught.value.pointer, caught.value.reason) == (
        "/entry/2/resource/result/0/reference",
        "unresolved-reference",
    )
    bundle = transaction_bundle()
    bundle["entry"][3]["resource"]["subject"] = {
        "identifier": {"system": "urn:oid:2.16.156.10011.1.3", "value": "OTHER"}
    }
    with pytest.raises(FhirError) as caught:
        parse_fhir(bundle)
    assert (caught.value.pointer, caught.value.reason) == (
        "/entry/3/resource/subject",
        "different-subjects",
    )
    cases = [
        (b"{not json", ("", "not-json")),
        (b'{"resourceType": "Observation", "status": NaN}', ("", "not-json")),
        (b'{"resourceType": "Observation", "resourceType": "Observation"}', ("", "duplicate-key")),
        (b"[1, 2]", ("", "not-a-resource")),
        (b'{"resourceType": "Patient"}', ("/resourceType", "unsupported-resource")),
        (b'{"id": "x"}', ("/resourceType", "missing")),
        (b"[" * 100_000 + b"]" * 100_000, ("", "too-large")),
        (b'{"resourceType": "Bundle", "type": "history"}', ("/type", "literal-error")),
        (b'{"resourceType": "Bundle", "type": "collection"}', ("/entry", "no-results")),
    ]
    for data, where in cases:
        with pytest.raises(FhirError) as caught:
            parse_fhir(data, max_bytes=100_000)
        assert (caught.value.pointer, caught.value.reason) == where, data[:40]


def test_pointer_escapes_slash_and_tilde() -> None:
    o = copy.deepcopy(POTASSIUM)
    o["a/b~c"] = 1
    with pytest.raises(FhirError) as caught:
        parse_fhir(o)
    assert caught.value.pointer == "/a~1b~0c"


# -- never another exception --------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
KEYS = [
    "value",
    "valueQuantity",
    "code",
    "status",
    "result",
    "reference",
    "basedOn",
    "subject",
    "identifier",
    "interpretation",
    "referenceRange",
    "contained",
    "entry",
    "resource",
    "hasMember",
    "component",
    "extension",
    "_status",
    "effectiveDateTime",
    "low",
    "high",
]


def _outcome(data: Any) -> None:
    outcome: LabMessage | FhirError
    try:
        outcome = parse_fhir(data)
    except FhirError as exc:
        outcome = exc
    if isinstance(outcome, FhirError):
        assert outcome.pointer == "" or outcome.pointer.startswith("/")
    else:
        assert outcome.orders


def _mutate(doc: Any, path: list[int], key: str, value: Any) -> Any:
    """Set ``key`` to ``value`` in the object reached by following ``path`` as far as it goes."""
    node = doc
    for step in path:
        children = list(node.values()) if isinstance(node, dict) else node
        containers = (
            [c for c in children if isinstance(c, dict | list)]
            if isinstance(children, list)
            else []
        )
        if not containers:
            break
        node = containers[step % len(containers)]
    if isinstance(node, dict):
        node[key] = value
    elif isinstance(node, list) and node:
        node[path[-1] % len(node) if path else 0] = value
    return doc


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=500))
def test_random_bytes(data: bytes) -> None:
    _outcome(data)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([REPORT_CONTAINED, POTASSIUM, transaction_bundle()]),
    st.lists(
        st.tuples(st.lists(st.integers(0, 50), max_size=6), st.sampled_from(KEYS), JSON), max_size=4
    ),
)
def test_mutated_resources(base: dict[str, Any], edits: list[tuple[list[int], str, Any]]) -> None:
    doc = copy.deepcopy(base)
    for path, key, value in edits:
        doc = _mutate(doc, path, key, value)
    _outcome(doc)
    _outcome(json.dumps(doc, ensure_ascii=False).encode())
