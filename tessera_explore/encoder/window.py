"""Observation windows for live embeddings: a calendar year or any span of at most one year.

The published products cover calendar years.  A live request may instead take a shifted
window (a growing season, July to June).  The rule used for the model's time input:

* every acquisition keeps its **calendar day of year** (1..366, in UTC): the models were
  trained on that value and it is their only notion of time (the season), so 15 January
  is day 15 whether it falls at the start or the end of the window;
* when a window crosses 1 January, the dates are given to the model **ordered by day of
  year** (January of the later year first, December of the earlier year last), so the
  sequence looks like the calendar years the models saw in training.  This matters for
  v1.1's GRU pooling (order-dependent); v2's attention pooling ignores order and v1.0
  sorts its draw by day of year anyway.

A shifted window is not the published calendar-year product: the same pixel mixes two
seasons' observations.  :func:`~tessera_explore.encoder.compare` against the precomputed
year measures how far it lands from it.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any

from ..exceptions import ArgumentError

__all__ = ["Window", "resolve_window"]


def _add_year(d: _dt.date) -> _dt.date:
    try:
        return d.replace(year=d.year + 1)
    except ValueError:  # 29 February -> 1 March of the next year
        return _dt.date(d.year + 1, 3, 1)


def _as_date(name: str, v: Any) -> _dt.date:
    if isinstance(v, _dt.datetime):
        return v.date()
    if isinstance(v, _dt.date):
        return v
    if isinstance(v, str):
        try:
            return _dt.date.fromisoformat(v.strip()[:10])
        except ValueError:
            pass
    raise ArgumentError(f"{name}={v!r} is not a date; use 'YYYY-MM-DD' or a datetime.date")


@dataclass(frozen=True)
class Window:
    """Observations from ``start`` to ``end`` (dates, both included, UTC)."""

    start: _dt.date
    end: _dt.date

    @classmethod
    def calendar(cls, year: int) -> Window:
        return cls(_dt.date(int(year), 1, 1), _dt.date(int(year), 12, 31))

    @property
    def is_calendar_year(self) -> bool:
        return (self.start.month, self.start.day, self.end.month, self.end.day) == (1, 1, 12, 31) and \
            self.start.year == self.end.year

    @property
    def crosses_new_year(self) -> bool:
        return self.end.year != self.start.year

    @property
    def year(self) -> int:
        """The year holding most of the window's days (the start's year on a tie): the
        scalar ``year`` coordinate of the result."""
        if not self.crosses_new_year:
            return self.start.year
        first = (_dt.date(self.start.year, 12, 31) - self.start).days + 1
        second = (self.end - _dt.date(self.end.year, 1, 1)).days + 1
        return self.start.year if first >= second else self.end.year

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def label(self) -> str:
        """``"2024"`` for a calendar year, else ``"2024-07-01_2025-06-30"`` (cache keys, file names)."""
        return str(self.start.year) if self.is_calendar_year else f"{self.start.isoformat()}_{self.end.isoformat()}"

    def stac_datetime(self) -> str:
        return f"{self.start.isoformat()}T00:00:00Z/{self.end.isoformat()}T23:59:59.999Z"

    def attrs(self) -> dict[str, str]:
        return {"window_start": self.start.isoformat(), "window_end": self.end.isoformat()}

    def __str__(self) -> str:
        return str(self.start.year) if self.is_calendar_year else f"{self.start.isoformat()} to {self.end.isoformat()}"


def resolve_window(year: Any = None, start: Any = None, end: Any = None) -> Window:
    """``year`` alone (a calendar year) or ``start`` and ``end`` (at most one year, not empty).

    A ``Window`` passed as ``year`` is returned as it is.  Refused with
    :class:`~tessera_explore.exceptions.ArgumentError`: neither or both forms, only one of
    ``start``/``end``, ``end`` before ``start``, or a span longer than one year (``end`` must
    be before the same date a year after ``start``: 2024-07-01 allows up to 2025-06-30).
    """
    if isinstance(year, Window) and start is None and end is None:
        return year
    if year is not None and (start is not None or end is not None):
        raise ArgumentError("give either year= (a calendar year) or start= and end= (a window), not both")
    if year is not None:
        if isinstance(year, bool) or not isinstance(year, (int, str)) or not str(year).strip().isdigit():
            raise ArgumentError(f"year={year!r} is not a year; use e.g. year=2024, or start= and end= for a window")
        y = int(year)
        if not 1900 <= y <= 2200:
            raise ArgumentError(f"year={y} is outside 1900..2200")
        return Window.calendar(y)
    if start is None and end is None:
        raise ArgumentError("no time window: give year= (e.g. 2024) or start= and end= (e.g. '2024-07-01', '2025-06-30')")
    if start is None or end is None:
        raise ArgumentError("a window needs both start= and end= (e.g. start='2024-07-01', end='2025-06-30')")
    s, e = _as_date("start", start), _as_date("end", end)
    if e < s:
        raise ArgumentError(f"the window {s} to {e} is empty: end is before start")
    if e >= _add_year(s):
        raise ArgumentError(
            f"the window {s} to {e} is longer than one year ({(e - s).days + 1} days); the models take one year "
            f"of observations: end it by {_add_year(s) - _dt.timedelta(days=1)}"
        )
    return Window(s, e)
