"""GB 11643-1999 resident identity numbers."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.identity import NationalIdError, make_national_id, mask_national_id, parse_national_id


def test_known_good_numbers() -> None:
    nid = parse_national_id("11010519491231002X")
    assert nid.birth_date == dt.date(1949, 12, 31)
    assert nid.male is False
    assert nid.region == "110105"
    assert parse_national_id(" 11010519491231002x ").value == "11010519491231002X"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("11010519491231002", "18 characters"),
        ("1101051949123100211", "18 characters"),
        ("11010519491231002Y", "17 digits"),
        ("01010519491231002X", "17 digits"),
        ("99010519491231002X", "province"),
        ("110105194902300021", "calendar date"),
        ("110105187001010011", "out of range"),
        ("110105194912310021", "check character"),
    ],
)
def test_bad_numbers_say_why(raw: str, reason: str) -> None:
    with pytest.raises(NationalIdError, match=reason):
        parse_national_id(raw)


def test_future_birth_date_is_refused() -> None:
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=2)
    with pytest.raises(NationalIdError, match="out of range"):
        parse_national_id(make_national_id("110105", tomorrow, 1))


@given(
    born=st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2020, 12, 31)),
    seq=st.integers(min_value=0, max_value=999),
)
def test_made_numbers_round_trip(born: dt.date, seq: int) -> None:
    nid = parse_national_id(make_national_id("411625", born, seq))
    assert nid.birth_date == born
    assert nid.male == (seq % 2 == 1)


@given(
    born=st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2020, 12, 31)),
    position=st.integers(min_value=6, max_value=16),
    delta=st.integers(min_value=1, max_value=9),
)
def test_any_single_digit_error_is_caught(born: dt.date, position: int, delta: int) -> None:
    good = make_national_id("411625", born, 5)
    digit = (int(good[position]) + delta) % 10
    bad = good[:position] + str(digit) + good[position + 1 :]
    with pytest.raises(NationalIdError):
        parse_national_id(bad)


def test_mask() -> None:
    assert mask_national_id("11010519491231002X") == "110105***********X"
