"""Class colours by name, the colour-blind-safe fallback, marker colours apart from every
class colour, and colours as painted at a layer's opacity."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from tessera_explore.exceptions import ArgumentError
from tessera_explore.widgets.colours import (
    CLASS_PALETTE,
    KEYWORD_COLOURS,
    MARKER_MIN_DISTANCE,
    SUGGESTION_COLOUR,
    VALIDATION_COLOUR,
    category_colours,
    class_colour,
    class_palette,
    colour_distance,
    hex_to_rgb,
    keyword_colour,
    painted_colour,
)


def hue(c: str) -> str:
    """The dominant channel of a colour: 'r', 'g', 'b', or 'y' (red and green high, blue low)."""
    r, g, b = hex_to_rgb(c)
    if r > 150 and g > 120 and b < 100:
        return "y"
    return "rgb"[int(np.argmax([r, g, b]))]


@pytest.mark.parametrize("name, want", [
    ("woods", "g"), ("Forest", "g"), ("Mixed woodland", "g"), ("trees", "g"),
    ("water", "b"), ("Lake", "b"), ("river", "b"), ("SEA", "b"),
    ("fields", "y"), ("crop", "y"), ("Cereal", "y"), ("arable land", "y"), ("winter wheat", "y"),
    ("built-up", "r"), ("Urban", "r"), ("buildings", "r"),
])
def test_keyword_colours_read_as_expected(name, want):
    assert hue(keyword_colour(name)) == want


def test_keywords_match_word_starts_not_any_substring():
    assert keyword_colour("seasonal crop") == keyword_colour("crop")  # "sea" is a whole word only
    assert keyword_colour("car park") == keyword_colour("urban") != keyword_colour("park")
    assert keyword_colour("oak woods") == keyword_colour("woods")
    assert keyword_colour("grassland") != keyword_colour("woods") and hue(keyword_colour("grassland")) == "g"
    # grass is lighter than woods
    assert sum(hex_to_rgb(keyword_colour("pasture"))) > sum(hex_to_rgb(keyword_colour("forest")))
    assert keyword_colour("class A") is None and keyword_colour("") is None


def test_default_palette_for_the_issue_names_and_unknown_names():
    woods, water, fields = class_palette(["woods", "water", "fields"])
    assert (hue(woods), hue(water), hue(fields)) == ("g", "b", "y")
    cols = class_palette(["a", "b", "c", "d"])
    assert cols == list(CLASS_PALETTE[:4]) and len(set(cols)) == 4
    # given colours are kept and never reused; a taken keyword colour falls back to the palette
    cols = class_palette(["woods", "forest", "x"], ["#33a02c", None, None])
    assert cols[0] == "#33a02c" and len(set(cols)) == 3 and cols[1] in CLASS_PALETTE
    # no colour close to one already used (the palette's own greens are skipped next to woods)
    used = [keyword_colour("woods"), keyword_colour("water")]
    c = class_colour("other", used)
    assert min(colour_distance(c, u) for u in used) > 20
    # many classes: all get a colour, the palette's first ones distinct
    many = class_palette([f"c{i}" for i in range(30)])
    assert len(many) == 30 and len(set(many[: len(CLASS_PALETTE)])) == len(CLASS_PALETTE)


def test_overlay_categories_use_the_name_colours():
    da = xr.DataArray(np.zeros((2, 2), np.uint8), dims=("y", "x"), attrs={"classes": ["woods", "water", "fields"]})
    keys, names, palette = category_colours(da, np.array([0, 1, 2]), None, None)
    assert names == ["woods", "water", "fields"] and [hue(c) for c in palette] == ["g", "b", "y"]
    da.attrs["class_colors"] = ["#123456"]
    assert category_colours(da, np.array([0, 1, 2]), None, None)[2][0] == "#123456"


def test_marker_colours_are_apart_from_every_class_colour():
    every = list(CLASS_PALETTE) + [c for c, _ in KEYWORD_COLOURS]
    for marker in (SUGGESTION_COLOUR, VALIDATION_COLOUR):
        assert min(colour_distance(marker, c) for c in every) > MARKER_MIN_DISTANCE
    assert colour_distance(SUGGESTION_COLOUR, VALIDATION_COLOUR) > MARKER_MIN_DISTANCE


def test_painted_colour_blends_over_the_background():
    assert painted_colour("#ff0000", 1.0) == "#ff0000"
    assert painted_colour("#ff0000", 0.0) == "#808080"
    assert painted_colour("#ff8000", 0.6) == "#cc8033"  # orange at 0.6 over mid grey: what the map shows
    assert painted_colour("#0000ff", 0.5, under="#ffffff") == "#8080ff"
    assert painted_colour("#0000ff", 0.5, under=(0, 0, 0)) == "#000080"
    with pytest.raises(ArgumentError):
        painted_colour("#0000ff", 1.5)
    assert colour_distance("#000000", "#ffffff") == pytest.approx(100, abs=0.5)
