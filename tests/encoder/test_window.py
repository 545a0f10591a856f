"""Observation windows: calendar years, shifted windows, refusals."""

from __future__ import annotations

import datetime as dt

import pytest

from tessera_explore.encoder.window import Window, resolve_window
from tessera_explore.exceptions import ArgumentError


def test_calendar_year():
    w = resolve_window(2024)
    assert (w.start, w.end) == (dt.date(2024, 1, 1), dt.date(2024, 12, 31))
    assert w.is_calendar_year and not w.crosses_new_year and w.year == 2024 and w.label == "2024"
    assert w.stac_datetime() == "2024-01-01T00:00:00Z/2024-12-31T23:59:59.999Z"
    assert resolve_window(w) is w


def test_shifted_window():
    w = resolve_window(start="2024-07-01", end="2025-06-30")
    assert w.crosses_new_year and not w.is_calendar_year and w.days == 365
    assert w.year == 2024  # 184 days of 2024 against 181 of 2025
    assert resolve_window(start="2024-10-01", end="2025-09-30").year == 2025
    assert w.label == "2024-07-01_2025-06-30"
    assert w.attrs() == {"window_start": "2024-07-01", "window_end": "2025-06-30"}
    assert w.stac_datetime() == "2024-07-01T00:00:00Z/2025-06-30T23:59:59.999Z"
    # dates and datetimes are accepted; a window inside one year is not "calendar"
    w2 = resolve_window(start=dt.date(2022, 3, 1), end=dt.datetime(2022, 9, 30, 12))
    assert w2 == Window(dt.date(2022, 3, 1), dt.date(2022, 9, 30)) and not w2.is_calendar_year
    assert resolve_window(start="2024-01-01", end="2024-12-31").is_calendar_year
    # exactly one year minus a day is the longest; 29 February starts run to 28 February
    resolve_window(start="2024-02-29", end="2025-02-28")
    assert resolve_window(start="2024-05-05", end="2024-05-05").days == 1


@pytest.mark.parametrize("kw, match", [
    ({}, "no time window"),
    ({"year": 2024, "start": "2024-01-01", "end": "2024-06-30"}, "not both"),
    ({"start": "2024-07-01"}, "both start= and end="),
    ({"end": "2024-07-01"}, "both start= and end="),
    ({"start": "2024-07-01", "end": "2024-06-30"}, "empty"),
    ({"start": "2024-07-01", "end": "2025-07-01"}, "longer than one year"),
    ({"start": "2024-02-29", "end": "2025-03-01"}, "longer than one year"),
    ({"start": "2024-13-01", "end": "2025-01-01"}, "not a date"),
    ({"start": 20240701, "end": "2025-01-01"}, "not a date"),
    ({"year": "twenty"}, "not a year"),
    ({"year": True}, "not a year"),
    ({"year": 1066}, "outside"),
])
def test_refused(kw, match):
    with pytest.raises(ArgumentError, match=match):
        resolve_window(**kw)
