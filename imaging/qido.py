"""QIDO-RS (PS3.18 §10.6): parse a search's query string and run it against the index.

Matching follows PS3.4 C.2.2.2: single value, wildcards ``*`` and ``?`` (strings and person
names), ranges ``A-B``, ``-B``, ``A-`` (dates and times), UID lists (``a,b`` or repeated keys).
Person names match any of their alphabetic, ideographic or phonetic groups, case-insensitively,
so ``张*`` and ``zhang*`` both find ``Zhang^San=张三``. Attributes may be named by keyword or by
tag. ``includefield`` (repeated or comma-separated, or ``all``) adds attributes from the stored
metadata of the first instance; ``limit`` and ``offset`` page. An attribute the server cannot
match on is a :class:`QueryError`, which the server answers with 400.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import keyword_for_tag, tag_for_keyword
from sqlalchemy import ColumnElement, Select, and_, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from imaging.index import DicomIndex

__all__ = ["Level", "QidoQuery", "QueryError", "parse_query", "search"]

MAX_LIMIT = 1000
DEFAULT_LIMIT = 200


class Level(enum.StrEnum):
    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


class QueryError(ValueError):
    """The query cannot be answered; ``message`` says why (never echoing values)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Kind(enum.Enum):
    UID = "uid"
    DATE = "date"
    TIME = "time"
    STRING = "string"
    PN = "pn"
    INT = "int"
    MODALITIES = "modalities"


# tag → (level, column name, kind)
_MATCHABLE: dict[str, tuple[Level, str, Kind]] = {
    "0020000D": (Level.STUDY, "study_uid", Kind.UID),
    "00080020": (Level.STUDY, "study_date", Kind.DATE),
    "00080030": (Level.STUDY, "study_time", Kind.TIME),
    "00080050": (Level.STUDY, "accession_number", Kind.STRING),
    "00080061": (Level.STUDY, "modalities", Kind.MODALITIES),
    "00080090": (Level.STUDY, "referring_physician", Kind.STRING),
    "00081030": (Level.STUDY, "study_description", Kind.STRING),
    "00100010": (Level.STUDY, "patient_name", Kind.PN),
    "00100020": (Level.STUDY, "patient_id", Kind.STRING),
    "00100030": (Level.STUDY, "patient_birth_date", Kind.DATE),
    "00200010": (Level.STUDY, "study_id", Kind.STRING),
    "0020000E": (Level.SERIES, "series_uid", Kind.UID),
    "00080060": (Level.SERIES, "modality", Kind.STRING),
    "00200011": (Level.SERIES, "series_number", Kind.INT),
    "0008103E": (Level.SERIES, "series_description", Kind.STRING),
    "00400244": (Level.SERIES, "performed_date", Kind.DATE),
    "00080018": (Level.INSTANCE, "sop_instance_uid", Kind.UID),
    "00080016": (Level.INSTANCE, "sop_class_uid", Kind.UID),
    "00200013": (Level.INSTANCE, "instance_number", Kind.INT),
}
_ORDER = {Level.STUDY: 0, Level.SERIES: 1, Level.INSTANCE: 2}
#: Not attributes. ``accept`` and ``charset`` (PS3.18 8.3.3.1) are taken and ignored here: the
#: answer is DICOM JSON in UTF-8 whatever they say.
_CONTROL = frozenset({"limit", "offset", "includefield", "fuzzymatching", "accept", "charset"})
_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")


@dataclass(frozen=True, slots=True)
class Filter:
    tag: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QidoQuery:
    level: Level
    filters: tuple[Filter, ...] = ()
    include_all: bool = False
    include: frozenset[str] = field(default_factory=frozenset)
    limit: int = DEFAULT_LIMIT
    offset: int = 0


def _tag_of(name: str) -> str:
    if _TAG.match(name):
        return name.upper()
    tag = tag_for_keyword(name)
    if tag is None:
        raise QueryError(f"unknown attribute {name[:64]!r}")
    return f"{tag:08X}"


def _int_param(name: str, value: str, maximum: int) -> int:
    if not value.isdigit() or len(value) > 9:
        raise QueryError(f"{name} must be a non-negative integer")
    return min(int(value), maximum)


def parse_query(level: Level, pairs: Iterable[tuple[str, str]]) -> QidoQuery:
    """Parse a QIDO query string (its key/value pairs in order) for a search at ``level``."""
    filters: dict[str, list[str]] = {}
    include: set[str] = set()
    include_all = False
    limit, offset = DEFAULT_LIMIT, 0
    for key, value in pairs:
        if key in _CONTROL:
            if key == "limit":
                limit = _int_param("limit", value, MAX_LIMIT)
            elif key == "offset":
                offset = _int_param("offset", value, 10**9)
            elif key == "includefield":
                for name in value.split(","):
                    name = name.strip()
                    if not name:
                        continue
                    if name == "all":
                        include_all = True
                    else:
                        include.add(_tag_of(name))
            elif key == "fuzzymatching" and value not in {"true", "false"}:
                raise QueryError("fuzzymatching must be true or false")
            continue
        tag = _tag_of(key)
        spec = _MATCHABLE.get(tag)
        if spec is None or _ORDER[spec[0]] > _ORDER[level]:
            raise QueryError(f"cannot search on {keyword_for_tag(int(tag, 16)) or tag} here")
        kind = spec[2]
        parts = value.split(",") if kind is Kind.UID else [value]
        for part in parts:
            _check_value(kind, part, tag)
        filters.setdefault(tag, []).extend(parts)
    return QidoQuery(
        level=level,
        filters=tuple(Filter(t, tuple(v)) for t, v in filters.items()),
        include_all=include_all,
        include=frozenset(include),
        limit=limit,
        offset=offset,
    )


def _check_value(kind: Kind, value: str, tag: str) -> None:
    name = keyword_for_tag(int(tag, 16)) or tag
    if len(value) > 324:
        raise QueryError(f"the value for {name} is too long")
    if kind is Kind.UID and value and not re.match(r"^[0-9]+(\.[0-9]+)*$", value):
        raise QueryError(f"{name} must be a UID or a list of UIDs")
    if kind in (Kind.DATE, Kind.TIME):
        pattern = _DATE if kind is Kind.DATE else _TIME
        low, sep, high = value.partition("-")
        for bound in (low, high) if sep else (value,):
            if bound and not pattern.match(bound):
                raise QueryError(f"{name} must be a {kind.value} or a range of them")
    if kind is Kind.INT and value and not value.lstrip("-").isdigit():
        raise QueryError(f"{name} must be an integer")


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _wild(value: str) -> bool:
    return "*" in value or "?" in value


def _condition(index: DicomIndex, tag: str, values: Sequence[str]) -> ColumnElement[bool]:
    level, column, kind = _MATCHABLE[tag]
    table = {
        Level.STUDY: index.studies,
        Level.SERIES: index.series,
        Level.INSTANCE: index.instances,
    }[level]
    if kind is Kind.UID:
        uids = [v for v in values if v]
        return table.c[column].in_(uids) if uids else literal(True)
    value = values[-1]
    if value in ("", "*"):
        return literal(True)  # universal matching
    if kind is Kind.PN:
        cols = [table.c.pn_alphabetic, table.c.pn_ideographic, table.c.pn_phonetic]
        needle = value.lower()
        if _wild(needle):
            return or_(*[c.like(_like(needle), escape="\\") for c in cols])
        # A name without wildcards matches a group exactly, or its family name component.
        return or_(*[or_(c == needle, c.like(_like(needle) + "^%", escape="\\")) for c in cols])
    col = table.c[column]
    if kind in (Kind.DATE, Kind.TIME):
        low, sep, high = value.partition("-")
        if not sep:
            return col == value if kind is Kind.DATE else col.like(value + "%")
        clauses: list[ColumnElement[bool]] = [col != ""]
        if low:
            clauses.append(col >= low)
        if high:
            clauses.append(col <= (high if kind is Kind.DATE else high + "\uffff"))
        return and_(*clauses)
    if kind is Kind.INT:
        return col == int(value)
    if kind is Kind.MODALITIES:
        return col.like(f"% {_like(value)} %", escape="\\")
    if tag == "00080090":
        value = value.lower()
    if _wild(value):
        return col.like(_like(value), escape="\\")
    return col == value


def _statement(
    index: DicomIndex,
    query: QidoQuery,
    visible: ColumnElement[bool],
    study_uid: str | None,
    series_uid: str | None,
) -> Select[Any]:
    s, se, i = index.studies, index.series, index.instances
    if query.level is Level.STUDY:
        stmt = select(s).order_by(s.c.study_date.desc(), s.c.study_time.desc(), s.c.study_uid)
    elif query.level is Level.SERIES:
        stmt = (
            select(se, s.c.attributes.label("study_attributes"))
            .join(s, s.c.study_uid == se.c.study_uid)
            .order_by(se.c.study_uid, se.c.series_number, se.c.series_uid)
        )
    else:
        stmt = (
            select(
                i.c.sop_instance_uid,
                i.c.series_uid,
                i.c.study_uid,
                i.c.metadata,
                se.c.attributes.label("series_attributes"),
                s.c.attributes.label("study_attributes"),
            )
            .join(se, se.c.series_uid == i.c.series_uid)
            .join(s, s.c.study_uid == i.c.study_uid)
            .order_by(i.c.series_uid, i.c.instance_number, i.c.sop_instance_uid)
        )
    stmt = stmt.where(visible)
    if study_uid is not None:
        stmt = stmt.where(s.c.study_uid == study_uid)
    if series_uid is not None:
        stmt = stmt.where(se.c.series_uid == series_uid)
    for f in query.filters:
        stmt = stmt.where(_condition(index, f.tag, f.values))
    return stmt.limit(query.limit).offset(query.offset)


def _attr(vr: str, value: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": [value]} if value not in (None, "") else {"vr": vr}


_INSTANCE_DEFAULT = (
    "00080016",
    "00080018",
    "00200013",
    "00280010",
    "00280011",
    "00280100",
    "00280008",
)


def _filtered_include(meta: Mapping[str, Any], query: QidoQuery) -> dict[str, Any]:
    if query.include_all:
        return {t: v for t, v in meta.items() if "BulkDataURI" not in v}
    return {t: meta[t] for t in query.include if t in meta}


async def search(
    session: AsyncSession,
    index: DicomIndex,
    query: QidoQuery,
    *,
    visible: ColumnElement[bool] | None = None,
    base_url: str,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> list[dict[str, Any]]:
    """Run ``query``; return DICOM JSON objects (PS3.18 F.2), one per match."""
    stmt = _statement(
        index, query, visible if visible is not None else literal(True), study_uid, series_uid
    )
    rows = (await session.execute(stmt)).mappings().all()
    out: list[dict[str, Any]] = []
    first_meta: dict[str, dict[str, Any]] = {}
    if query.include or query.include_all:
        first_meta = await _first_instances(session, index, query.level, rows)
    for row in rows:
        item: dict[str, Any]
        if query.level is Level.STUDY:
            item = _filtered_include(first_meta.get(row["study_uid"], {}), query)
            item.update(json.loads(row["attributes"]))
            item["00080056"] = _attr("CS", "ONLINE")
            mods = row["modalities"].split()
            item["00080061"] = {"vr": "CS", "Value": mods} if mods else {"vr": "CS"}
            item["00201206"] = _attr("IS", row["series_count"])
            item["00201208"] = _attr("IS", row["instance_count"])
            item["00081190"] = _attr("UR", f"{base_url}/studies/{row['study_uid']}")
        elif query.level is Level.SERIES:
            item = _filtered_include(first_meta.get(row["series_uid"], {}), query)
            if query.include_all or "00100010" in query.include or "00100020" in query.include:
                study_attrs = json.loads(row["study_attributes"])
                item.update(study_attrs if query.include_all else {})
            item.update(json.loads(row["attributes"]))
            item["00080056"] = _attr("CS", "ONLINE")
            item["00201209"] = _attr("IS", row["instance_count"])
            item["00081190"] = _attr(
                "UR", f"{base_url}/studies/{row['study_uid']}/series/{row['series_uid']}"
            )
        else:
            meta = json.loads(row["metadata"])
            item = _filtered_include(meta, query)
            for tag in _INSTANCE_DEFAULT:
                if tag in meta:
                    item[tag] = meta[tag]
            item.update(json.loads(row["series_attributes"]))
            if query.include_all:
                item.update(json.loads(row["study_attributes"]))
            item["0020000D"] = _attr("UI", row["study_uid"])
            item["00080056"] = _attr("CS", "ONLINE")
            item["00081190"] = _attr(
                "UR",
                f"{base_url}/studies/{row['study_uid']}/series/{row['series_uid']}"
                f"/instances/{row['sop_instance_uid']}",
            )
        out.append(dict(sorted(item.items())))
    return out


async def _first_instances(
    session: AsyncSession, index: DicomIndex, level: Level, rows: Sequence[Any]
) -> dict[str, dict[str, Any]]:
    """For study or series rows, the metadata of one instance each (for ``includefield``)."""
    if level is Level.INSTANCE or not rows:
        return {}
    i = index.instances
    key = i.c.study_uid if level is Level.STUDY else i.c.series_uid
    wanted = [r["study_uid"] if level is Level.STUDY else r["series_uid"] for r in rows]
    firsts = (
        select(func.min(i.c.sop_instance_uid))
        .where(key.in_(wanted))
        .group_by(key)
        .scalar_subquery()
    )
    stmt = select(key.label("k"), i.c.metadata).where(i.c.sop_instance_uid.in_(firsts))
    return {row.k: json.loads(row.metadata) for row in (await session.execute(stmt)).all()}
