"""FHIR R4 resources as pydantic models, for :mod:`imaging.fhirlab`.

Strict and closed: the elements :mod:`imaging.fhirlab` reads are typed (a decimal is a JSON
number, a string a non-empty JSON string, a dateTime a FHIR dateTime); the other elements of these
R4 resources are accepted by name only (``LOOSE``); any other element is refused. Extensions are
allowed where FHIR allows them: ``extension`` on every element and ``_element`` beside a
primitive; an extension has a ``url`` and at most one ``value[x]``. A ``modifierExtension`` on
an element we read is refused: FHIR forbids ignoring one. Resources other than Observation,
DiagnosticReport, Patient and ServiceRequest (in a Bundle or ``contained``) are
:class:`OtherResource`, not validated beyond their type.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    PlainValidator,
    StringConstraints,
    Tag,
    model_validator,
)
from pydantic_core import PydanticCustomError

from imaging.lab import CHINA

__all__ = [
    "VALUES",
    "AnyResource",
    "Bundle",
    "BundleEntry",
    "CodeableConcept",
    "Coding",
    "DiagnosticReport",
    "Extension",
    "HumanName",
    "Identifier",
    "Observation",
    "ObservationComponent",
    "OtherResource",
    "Patient",
    "Period",
    "Quantity",
    "Reference",
    "ReferenceRange",
    "ServiceRequest",
    "Valued",
    "fhir_datetime",
]

_DATETIME = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})"
    r"(?:T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2}))?)?)?"
)


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


# -- primitive types -----------------------------------------------------------------------------


def _decimal(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise PydanticCustomError("decimal-type", "a decimal is a JSON number")
    number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        raise PydanticCustomError("decimal-type", "a decimal is finite")
    return number


def fhir_datetime(text: str, tz: dt.tzinfo = CHINA) -> dt.datetime:
    """A FHIR dateTime or instant; partial dates start at local midnight in ``tz``."""
    m = _DATETIME.fullmatch(text)
    if m is None:
        raise ValueError("not a FHIR dateTime")
    year, month, day, hour, minute, second, frac, zone = m.groups()
    tzinfo = tz
    if zone == "Z":
        tzinfo = dt.UTC
    elif zone:
        sign = -1 if zone[0] == "-" else 1
        offset = dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        tzinfo = dt.timezone(sign * offset)
    return dt.datetime(
        int(year),
        int(month or 1),
        int(day or 1),
        int(hour or 0),
        int(minute or 0),
        int(second or 0),
        int((frac or "0").ljust(6, "0")[:6]),
        tzinfo=tzinfo,
    )


def _check_datetime(text: str) -> str:
    try:
        fhir_datetime(text)
    except ValueError:
        raise PydanticCustomError("datetime", "not a FHIR dateTime") from None
    return text


Str = Annotated[str, StringConstraints(min_length=1)]
Dec = Annotated[Decimal, PlainValidator(_decimal)]
DateTime = Annotated[str, AfterValidator(_check_datetime)]


def _no_modifiers(value: list[Any] | None) -> list[Any] | None:
    if value:
        raise PydanticCustomError("modifier-extension", "a modifier extension we do not know")
    return value


# -- elements ------------------------------------------------------------------------------------


class _Element(BaseModel):
    """Strict, closed; ``_name`` primitive extensions of declared elements pass; ``LOOSE``
    names R4 elements accepted without being read."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    LOOSE: ClassVar[frozenset[str]] = frozenset()

    id: Str | None = None
    extension: list[Extension] | None = None

    @model_validator(mode="before")
    @classmethod
    def _siblings(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        loose = cls.LOOSE
        known = set(cls.model_fields) | loose
        out = {}
        for key, value in data.items():
            name = key[1:] if key.startswith("_") else key
            if key in loose or (key.startswith("_") and name in known):
                continue  # accepted, not read
            out[key] = value
        return out


class Extension(_Element):
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    url: Str

    @model_validator(mode="after")
    def _one_value(self) -> Self:
        extra = self.model_extra or {}
        if any(not key.startswith("value") for key in extra) or len(extra) > 1:
            raise PydanticCustomError("extension", "an extension holds a url and one value[x]")
        if extra and self.extension:
            raise PydanticCustomError("extension", "a value or extensions, not both")
        return self


class Coding(_Element):
    system: Str | None = None
    version: Str | None = None
    code: Str | None = None
    display: Str | None = None
    userSelected: bool | None = None


class CodeableConcept(_Element):
    coding: list[Coding] | None = None
    text: Str | None = None

    def first(self) -> Coding:
        return self.coding[0] if self.coding else Coding()

    def codes(self) -> Iterator[Coding]:
        yield from self.coding or ()


class Period(_Element):
    start: DateTime | None = None
    end: DateTime | None = None


class Identifier(_Element):
    use: Str | None = None
    type: CodeableConcept | None = None
    system: Str | None = None
    value: Str | None = None
    period: Period | None = None
    assigner: Reference | None = None

    def type_code(self) -> str:
        return (self.type.first().code or "") if self.type else ""


class Reference(_Element):
    reference: Str | None = None
    type: Str | None = None
    identifier: Identifier | None = None
    display: Str | None = None


class Quantity(_Element):
    value: Dec | None = None
    comparator: Literal["<", "<=", ">=", ">"] | None = None
    unit: Str | None = None
    system: Str | None = None
    code: Str | None = None


class Range(_Element):
    low: Quantity | None = None
    high: Quantity | None = None


class Ratio(_Element):
    numerator: Quantity | None = None
    denominator: Quantity | None = None


class Annotation(_Element):
    LOOSE = frozenset({"authorString", "authorReference", "time"})
    text: Str


class _Backbone(_Element):
    modifierExtension: Annotated[list[Extension] | None, AfterValidator(_no_modifiers)] = None


class ReferenceRange(_Backbone):
    LOOSE = frozenset({"type", "appliesTo", "age"})
    low: Quantity | None = None
    high: Quantity | None = None
    text: Str | None = None


VALUES = (
    "valueQuantity",
    "valueCodeableConcept",
    "valueString",
    "valueBoolean",
    "valueInteger",
    "valueRange",
    "valueRatio",
    "valueSampledData",
    "valueTime",
    "valueDateTime",
    "valuePeriod",
)


class Valued(_Backbone):
    code: CodeableConcept
    valueQuantity: Quantity | None = None
    valueCodeableConcept: CodeableConcept | None = None
    valueString: Str | None = None
    valueBoolean: bool | None = None
    valueInteger: int | None = None
    valueRange: Range | None = None
    valueRatio: Ratio | None = None
    valueSampledData: dict[str, Any] | None = None
    valueTime: Str | None = None
    valueDateTime: DateTime | None = None
    valuePeriod: Period | None = None
    dataAbsentReason: CodeableConcept | None = None
    interpretation: list[CodeableConcept] | None = None
    referenceRange: list[ReferenceRange] | None = None

    @model_validator(mode="after")
    def _one_value(self) -> Self:
        if sum(getattr(self, name) is not None for name in VALUES) > 1:
            raise PydanticCustomError("multiple-values", "value[x] holds one value")
        return self


class ObservationComponent(Valued):
    pass


class _Resource(_Element):
    meta: dict[str, Any] | None = None
    implicitRules: Str | None = None
    language: Str | None = None
    text: dict[str, Any] | None = None
    contained: list[AnyResource] | None = None
    modifierExtension: Annotated[list[Extension] | None, AfterValidator(_no_modifiers)] = None


class Observation(_Resource, Valued):
    LOOSE = _names(
        "partOf category focus encounter effectiveTiming performer bodySite method "
        "specimen device derivedFrom"
    )
    resourceType: Literal["Observation"]
    identifier: list[Identifier] | None = None
    basedOn: list[Reference] | None = None
    status: Literal[
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    ]
    subject: Reference | None = None
    effectiveDateTime: DateTime | None = None
    effectivePeriod: Period | None = None
    effectiveInstant: DateTime | None = None
    issued: DateTime | None = None
    note: list[Annotation] | None = None
    hasMember: list[Reference] | None = None
    component: list[ObservationComponent] | None = None


class DiagnosticReport(_Resource):
    LOOSE = _names(
        "category encounter performer resultsInterpreter specimen imagingStudy media "
        "conclusionCode presentedForm"
    )
    resourceType: Literal["DiagnosticReport"]
    identifier: list[Identifier] | None = None
    basedOn: list[Reference] | None = None
    status: Literal[
        "registered",
        "partial",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "appended",
        "cancelled",
        "entered-in-error",
        "unknown",
    ]
    code: CodeableConcept
    subject: Reference | None = None
    effectiveDateTime: DateTime | None = None
    effectivePeriod: Period | None = None
    issued: DateTime | None = None
    result: list[Reference] | None = None
    conclusion: Str | None = None


class HumanName(_Element):
    LOOSE = frozenset({"use", "prefix", "suffix", "period"})
    text: Str | None = None
    family: Str | None = None
    given: list[Str] | None = None


class Patient(_Resource):
    LOOSE = _names(
        "active telecom deceasedBoolean deceasedDateTime address maritalStatus "
        "multipleBirthBoolean multipleBirthInteger photo contact communication "
        "generalPractitioner managingOrganization link"
    )
    resourceType: Literal["Patient"]
    identifier: list[Identifier] | None = None
    name: list[HumanName] | None = None
    gender: Literal["male", "female", "other", "unknown"] | None = None
    birthDate: DateTime | None = None


class ServiceRequest(_Resource):
    LOOSE = _names(
        "instantiatesCanonical instantiatesUri basedOn replaces requisition status intent "
        "category priority doNotPerform code orderDetail quantityQuantity quantityRatio "
        "quantityRange subject encounter occurrenceDateTime occurrencePeriod "
        "occurrenceTiming asNeededBoolean asNeededCodeableConcept authoredOn requester "
        "performerType performer locationCode locationReference reasonCode "
        "reasonReference insurance supportingInfo specimen bodySite note "
        "patientInstruction relevantHistory"
    )
    resourceType: Literal["ServiceRequest"]
    identifier: list[Identifier] | None = None


class OtherResource(BaseModel):
    """A resource this module does not read (Specimen, Practitioner...): not validated."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    resourceType: Str
    id: Str | None = None


_READ = ("Observation", "DiagnosticReport", "Patient", "ServiceRequest")


def _kind(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("resourceType")
        return kind if kind in _READ else "other"
    if isinstance(value, BaseModel):
        return getattr(value, "resourceType", None)
    return None


AnyResource = Annotated[
    Annotated[Observation, Tag("Observation")]
    | Annotated[DiagnosticReport, Tag("DiagnosticReport")]
    | Annotated[Patient, Tag("Patient")]
    | Annotated[ServiceRequest, Tag("ServiceRequest")]
    | Annotated[OtherResource, Tag("other")],
    Discriminator(_kind),
]


class BundleEntry(_Backbone):
    LOOSE = frozenset({"link", "search", "request", "response"})
    fullUrl: Str | None = None
    resource: AnyResource | None = None


class Bundle(_Resource):
    LOOSE = frozenset({"timestamp", "total", "link", "signature"})
    resourceType: Literal["Bundle"]
    identifier: Identifier | None = None
    type: Literal["transaction", "batch", "collection", "searchset", "message", "document"]
    entry: list[BundleEntry] | None = None


for _model in (Identifier, Reference, _Element, Extension, _Resource, Observation, BundleEntry):
    _model.model_rebuild()
