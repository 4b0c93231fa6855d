"""Chinese resident identity numbers (公民身份号码, GB 11643-1999).

Eighteen characters: a six-digit region code, the birth date as YYYYMMDD, a three-digit sequence
whose last digit is odd for men and even for women, and a check character computed with ISO 7064
MOD 11-2 (``0``–``9`` or ``X``).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_SHAPE = re.compile(r"^[1-9]\d{16}[\dX]$")
#: First digits of the province-level region codes in use (11 Beijing … 65 Xinjiang, 71/81/82).
_PROVINCES = frozenset(
    {"11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37"}
    | {"41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64"}
    | {"65", "71", "81", "82"}
)


class NationalIdError(ValueError):
    """The number is not a valid resident identity number; the message says why."""


@dataclass(frozen=True, slots=True)
class NationalId:
    value: str
    region: str
    birth_date: dt.date
    male: bool


def check_character(first17: str) -> str:
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK[total % 11]


def parse_national_id(raw: str) -> NationalId:
    """Validate and decode an 18-character identity number. A lower-case ``x`` is accepted."""
    value = raw.strip().upper()
    if len(value) != 18:
        raise NationalIdError(f"must be 18 characters, got {len(value)}")
    if not _SHAPE.match(value):
        raise NationalIdError("must be 17 digits followed by a digit or X")
    if value[:2] not in _PROVINCES:
        raise NationalIdError("region code does not name a province")
    try:
        birth = dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        raise NationalIdError("birth date part is not a calendar date") from None
    if birth.year < 1880 or birth > dt.datetime.now(dt.UTC).date():
        raise NationalIdError("birth date part is out of range")
    if check_character(value[:17]) != value[17]:
        raise NationalIdError("check character does not match")
    return NationalId(value=value, region=value[:6], birth_date=birth, male=int(value[16]) % 2 == 1)


def make_national_id(region: str, birth: dt.date, sequence: int) -> str:
    """Build a valid number (for demo data and tests)."""
    body = f"{region}{birth:%Y%m%d}{sequence:03d}"
    return body + check_character(body)


def mask_national_id(value: str) -> str:
    """The form shown in lists and logs: region and check character only."""
    return value[:6] + "*" * 11 + value[-1:] if len(value) == 18 else "*" * len(value)
