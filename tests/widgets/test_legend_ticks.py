"""Colour-bar legends: readable ticks, the unit once, none for dimensionless values."""

from __future__ import annotations

import re

from tessera_explore.widgets.legend import legend_html, tick_labels


def ticks_of(html: str) -> list[str]:
    return re.findall(r"<span class='tessera-tick'>([^<]*)</span>", html)


def test_confidence_ticks_read_0_05_1():
    html = legend_html(title="confidence", cmap="viridis", vmin=0.0, vmax=1.0, units="1")
    assert ticks_of(html) == ["0", "0.5", "1"]
    assert "0 1" not in html and "1 1" not in html


def test_units_once_and_number_formats():
    assert tick_labels(-0.5, 0.75, "cos") == ["-0.5", "0.125", "0.75 cos"]
    assert tick_labels(0, 2000, "m") == ["0", "1000", "2000 m"]
    assert tick_labels(0, 1, "dimensionless") == ["0", "0.5", "1"]
    assert tick_labels(0, 1e6, "") == ["0", "5e+05", "1e+06"]
    assert tick_labels(0.0, 0.3, "", n=4) == ["0", "0.1", "0.2", "0.3"]


def test_words_as_ticks_and_defaults():
    html = legend_html(title="confidence", cmap=["#000000", "#ffffff"], ticks=("low", "high"))
    assert ticks_of(html) == ["low", "high"]
    assert ticks_of(legend_html(cmap="viridis")) == ["0", "0.5", "1"]  # no range given: 0..1
