"""The explorer's layout, class edits, colours and readable numbers, without a browser:
the map flexes and the panel keeps a readable width, status and refusals show on the map,
a removed class leaves every view at once and stays removed after a restart, classes get
their colour by name, walk markers are far from every class colour, the learning curve of
one point reads as one point."""

from __future__ import annotations

import types

from explorer_points import points_of


def _label(app, truth, per_class, pairs):
    for app_class, true_class in pairs:
        app.state.active_class = app_class
        for q in points_of(truth, true_class, per_class):
            app.click(*q)
    app.wait()


# ---------------------------------------------------------------------------- layout
def test_the_map_flexes_and_the_panel_keeps_a_readable_width(app_factory):
    from tessera_explore.widgets.map_view import MAP_BASIS, MAP_MIN
    from tessera_explore.widgets.panel import PANEL_MAX, PANEL_MIN

    app = app_factory()
    m, panel = app.map.layout, app.panel.widget.layout
    assert m.width == "auto" and m.flex == f"1 1 {MAP_BASIS}px" and m.min_width == f"{MAP_MIN}px"
    assert panel.min_width == f"{PANEL_MIN}px" and panel.max_width == f"{PANEL_MAX}px"
    assert panel.flex.startswith("1 1 ")
    top = app.widget.children[0]
    assert top.children == (app.map, app.panel.widget)
    assert top.layout.flex_flow == "row wrap" and top.layout.width == "100%"
    assert "te-top" in top._dom_classes
    # rarely used controls wait in a closed section; every panel control is at most the panel's least width
    assert app.panel.more.selected_index is None
    assert app.panel.model in app.panel.more.children[0].children
    for w in (app.panel.mode, app.panel.active, app.panel.year, app.panel.model, app.panel.opacity):
        assert int(w.layout.width.replace("px", "")) <= PANEL_MIN - 10


def test_status_and_refusals_show_on_the_map(app_factory, truth):
    from tessera_explore.widgets.map_view import status_html

    app = app_factory()
    line = app.map_view.status_line
    assert any(getattr(c, "widget", None) is line for c in app.map.controls)
    lon_w, lat_w = points_of(truth, "water", 1)[0]
    app.add_class("forest")
    msg = app.click(lon_w, lat_w)
    assert "no data" in msg and "no data" in line.value
    app.state.error = "the map click failed: ValueError: boom"
    assert "te-map-error" in line.value and "boom" in line.value
    app.state.error = ""
    assert "boom" not in line.value and line.value == status_html(app.state)


# ---------------------------------------------------------------------------- classes
def test_removing_a_class_leaves_every_view_at_once(app_factory, truth):
    app = app_factory(classes=["forest", "cereal", "water"])
    _label(app, truth, 2, (("forest", "forest"), ("cereal", "cereal"), ("water", "grassland")))
    assert "water" in app.map_view.legend
    app.state.active_class = "water"
    app.panel.remove_btn.click()
    # before any retrain: buttons, swatches, answer buttons and the legend no longer name it
    assert list(app.panel.active.options) == ["forest", "cereal"]
    assert "water" not in app.panel.counts.value
    assert [b.description for b in app.panel.guided.answers.children] == ["forest", "cereal"]
    assert "water" not in app.map_view.legend and "forest" in app.map_view.legend
    assert app.state.active_class in ("forest", "cereal")
    app.wait()
    assert app.state.classes == ["forest", "cereal"] and app.state.error == ""


def test_removed_classes_stay_removed_after_a_restart(app_factory, truth):
    app = app_factory(classes=["forest", "cereal", "water"])
    app.state.active_class = "water"
    app.panel.remove_btn.click()
    app.wait()
    app.close()
    again = app_factory(classes=["forest", "cereal", "water"])
    assert again.state.classes == ["forest", "cereal"]
    assert again.state.active_class in again.state.classes
    assert "['water'] not added" in again.state.notice
    # a recoloured class keeps its colour too
    again.panel.active.value = "forest"
    again.panel.color.value = "#123456"
    again.close()
    third = app_factory(classes={"forest": "#ff0000", "cereal": None})
    assert third.state.colors["forest"] == "#123456"


def test_new_classes_get_their_colour_by_name(app_factory):
    from tessera_explore.widgets.colours import class_colour, keyword_colour

    app = app_factory(classes=["mixed woodland", "lake", "winter wheat"])
    cols = app.state.colors
    assert cols["mixed woodland"] == keyword_colour("woods")
    assert cols["lake"] == keyword_colour("water")
    assert cols["winter wheat"] == keyword_colour("field")
    p = app.panel
    p.new_name.value = "river"  # water again: taken, so another colour far from the others
    p.add_btn.click()
    assert app.state.colors["river"] == class_colour("river", [cols["mixed woodland"], cols["lake"],
                                                               cols["winter wheat"]])
    assert app.state.colors["river"] not in (cols["mixed woodland"], cols["lake"], cols["winter wheat"])
    assert app.add_class("pasture") and app.state.colors["pasture"] == keyword_colour("grass")


# ---------------------------------------------------------------------------- colours
def test_legend_swatches_show_classes_as_painted(app_factory, truth):
    from tessera_explore.widgets.colours import painted_colour

    app = app_factory(classes={"forest": "#33a02c", "cereal": "#e3c42b"})
    _label(app, truth, 2, (("forest", "forest"), ("cereal", "cereal")))
    legend = app.map_view.legend
    assert painted_colour("#33a02c", app.state.class_opacity) in legend
    app.state.class_opacity = 1.0
    legend = app.map_view.legend
    assert painted_colour("#33a02c", 0.6) not in legend and "#33a02c" in legend
    # a new colour is in the legend at once
    app.panel.active.value = "forest"
    app.panel.color.value = "#0000aa"
    assert "#0000aa" in app.map_view.legend


def test_walk_markers_are_far_from_every_class_colour(app_factory):
    from tessera_explore.widgets.colours import (
        CLASS_PALETTE,
        KEYWORD_COLOURS,
        MARKER_MIN_DISTANCE,
        SUGGESTION_COLOUR,
        VALIDATION_COLOUR,
        colour_distance,
    )

    app = app_factory()
    mv = app.map_view
    (s, w), (n, e) = ((52.02, 0.12), (52.08, 0.28))
    stop = types.SimpleNamespace(number=1, lat=(s + n) / 2, lon=(w + e) / 2, open=True)
    for kind, colour in (("suggest", SUGGESTION_COLOUR), ("validate", VALIDATION_COLOUR)):
        walk = types.SimpleNamespace(kind=kind, stops=[stop], current=stop)
        mv.show_walk(walk)
        html = mv.walk_markers.layers[0].icon.html
        assert f"background:{colour}" in html
        for c in list(CLASS_PALETTE) + [k for k, _ in KEYWORD_COLOURS]:
            assert colour_distance(colour, c) > MARKER_MIN_DISTANCE
    mv.show_walk(None)
    assert mv.walk_markers is None


# ---------------------------------------------------------------------------- numbers
def test_learning_curve_of_one_point_reads_as_one_point():
    from tessera_explore.widgets.quality import curve_html

    one = curve_html([{"n": 15, "accuracy": 0.8, "low": 0.6, "high": 0.9}])
    assert "15 labels" in one and ">16<" not in one and "<polygon" not in one
    two = curve_html([{"n": 15, "accuracy": 0.8, "low": 0.6, "high": 0.9},
                      {"n": 30, "accuracy": 0.9, "low": 0.8, "high": 0.95}])
    assert ">15<" in two and ">30<" in two and ">labels<" in two and "<polygon" in two


def test_area_table_cells_do_not_break_inside_numbers():
    from tessera_explore.widgets.app import CSS

    assert ".te-area-table td" in CSS and "white-space: nowrap" in CSS.split(".te-area-table td")[1][:60]
    assert "overflow-wrap: normal" in CSS.split(".te-area-table table")[1][:120]


def test_the_map_zooms_out_once_when_shown_narrower_than_the_area(app_factory):
    app = app_factory()
    m = app.map
    z = m.zoom
    (s, w), (n, e) = ((52.0, 0.1), (52.1, 0.3))
    mid = ((s + n) / 2, (w + e) / 2)
    # the page reports a view that cuts the area off: one zoom out, then it fits and the map is left alone
    m.set_trait("bounds", ((mid[0] - 0.01, mid[1] - 0.01), (mid[0] + 0.01, mid[1] + 0.01)))
    assert m.zoom == z - 1
    m.set_trait("bounds", ((s - 1, w - 1), (n + 1, e + 1)))
    assert m.zoom == z - 1
    m.set_trait("bounds", ((mid[0] - 0.01, mid[1] - 0.01), (mid[0] + 0.01, mid[1] + 0.01)))  # the user zoomed in
    assert m.zoom == z - 1


def test_the_confidence_legend_reads_0_to_1(app_factory, truth):
    import re

    app = app_factory(classes=["forest", "cereal"])
    _label(app, truth, 2, (("forest", "forest"), ("cereal", "cereal")))
    app.state.show_confidence = True
    app.wait()
    ticks = re.findall(r"class='tessera-tick'>([^<]*)<", app.map_view.legend)
    assert "confidence" in app.map_view.legend and ticks, app.map_view.legend
    assert not any(t.endswith(" 1") for t in ticks), ticks  # no CF unit "1" after a number
    assert ticks[-1] == "1" and all(re.fullmatch(r"[0-9.]+", t) for t in ticks), ticks
