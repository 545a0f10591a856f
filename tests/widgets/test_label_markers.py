"""Label markers in chunks: a new label re-sends the last chunk only, whatever the number
of labels; undo, remove, relabel, recolour, rename and clear re-send the chunks they
touch; the layers together always show ``labels_geojson(store)``."""

from __future__ import annotations

import ipyleaflet
import pytest

from tessera_explore import LabelStore
from tessera_explore.exceptions import ArgumentError
from tessera_explore.widgets.label_markers import DOT, HALO, LabelMarkers, labels_geojson

CLASSES = {"forest": "#1f6b2e", "cereal": "#e3c75a"}


def _setup(chunk=3, pool=4):
    store = LabelStore(classes=dict(CLASSES))
    m = ipyleaflet.Map(center=(0, 0), zoom=3)
    markers = LabelMarkers(m, chunk=chunk, pool=pool)
    sends = [0] * len(markers.layers)
    for i, layer in enumerate(markers.layers):
        layer.observe(lambda ch, i=i: sends.__setitem__(i, sends[i] + 1), names="data")
    store.observe(lambda st, what: markers.update(st))
    return store, m, markers, sends


def _add(store, n, start=0):
    for k in range(start, start + n):
        store.add_point(10 + 0.01 * k, 50 + 0.01 * k, ("forest", "cereal")[k % 2])


def _union(markers):
    return {"type": "FeatureCollection", "features": [f for l in markers.layers for f in l.data["features"]]}


def _check(store, markers):
    want = labels_geojson(store)
    assert _union(markers) == want
    assert markers.data == want
    assert [l.visible for l in markers.layers] == [bool(l.data["features"]) for l in markers.layers]


def test_the_layers_are_on_the_map_once_in_order_and_start_empty():
    store, m, markers, sends = _setup()
    assert list(m.layers[-4:]) == list(markers.layers)
    assert all(not l.visible and l.data["features"] == [] for l in markers.layers)
    with pytest.raises(ArgumentError, match="at least 1"):
        LabelMarkers(m, chunk=0)


def test_adding_a_label_resends_only_the_chunk_it_joins():
    store, m, markers, sends = _setup(chunk=3, pool=4)
    _add(store, 7)  # chunks: 3, 3, 1
    _check(store, markers)
    assert sends == [3, 3, 1, 0]
    before = list(sends)
    first = markers.layers[0].data
    _add(store, 1, start=7)  # joins the third chunk
    _check(store, markers)
    assert [a - b for a, b in zip(sends, before)] == [0, 0, 1, 0]
    assert markers.layers[0].data is first  # the first chunk's data object is not re-sent
    assert len(markers.layers[2].data["features"]) == 2 * 2  # a halo and a dot per label


def test_markers_look_as_before_and_follow_the_class_colours():
    store, m, markers, sends = _setup()
    _add(store, 2)
    halo, dot = markers.layers[0].data["features"][:2]
    assert halo["properties"]["style"] == HALO
    assert dot["properties"]["style"] == {**DOT, "fillColor": CLASSES["forest"]}
    before = list(sends)
    store.set_color("cereal", "#0000ff")  # the cereal label is in chunk 0 only
    _check(store, markers)
    assert [a - b for a, b in zip(sends, before)] == [1, 0, 0, 0]
    assert markers.layers[0].data["features"][3]["properties"]["style"]["fillColor"] == "#0000ff"


@pytest.mark.parametrize("change, resent", [
    (lambda s: s.undo(), [0, 0, 1, 0]),  # the last label out of the last chunk
    (lambda s: s.remove(s.labels[0].id), [1, 1, 1, 0]),  # every chunk after it shifts
    (lambda s: s.relabel(s.labels[3].id, "forest"), [0, 1, 0, 0]),
    (lambda s: s.set_color("forest", "#00ff00"), [1, 1, 1, 0]),
    (lambda s: s.rename_class("forest", "woods"), [1, 1, 1, 0]),
    (lambda s: s.remove_class("cereal"), [1, 1, 1, 0]),
    (lambda s: s.clear(), [1, 1, 1, 0]),
])
def test_other_changes_resend_the_chunks_they_touch(change, resent):
    store, m, markers, sends = _setup(chunk=3, pool=4)
    _add(store, 8)
    before = list(sends)
    change(store)
    _check(store, markers)
    assert [a - b for a, b in zip(sends, before)] == resent


def test_a_restart_shows_every_label_and_a_polygon_keeps_its_outline(tmp_path):
    path = tmp_path / "labels.geojson"
    store = LabelStore(path, classes=dict(CLASSES))
    _add(store, 5)
    store.add_polygon([(10, 50), (10.1, 50), (10.1, 50.1), (10, 50)], "cereal")
    store.close()
    again = LabelStore.open(path)
    markers = LabelMarkers(ipyleaflet.Map(center=(0, 0), zoom=3), chunk=2, pool=3)
    assert markers.update(again) == 3
    _check(again, markers)
    poly = markers.layers[2].data["features"][-1]
    assert poly["geometry"]["type"] == "Polygon" and poly["properties"]["style"]["fillColor"] == CLASSES["cereal"]
    assert markers.update(again) == 0  # nothing changed: nothing sent


def test_outgrowing_the_pool_doubles_the_chunks_and_clear_starts_again():
    store, m, markers, sends = _setup(chunk=2, pool=3)
    _add(store, 6)
    assert markers.chunk == 2
    _add(store, 1, start=6)  # 7 labels do not fit 3 chunks of 2: chunks of 4, one full redraw
    assert markers.chunk == 4
    _check(store, markers)
    before = list(sends)
    _add(store, 1, start=7)
    assert [a - b for a, b in zip(sends, before)] == [0, 1, 0]
    store.clear()
    _check(store, markers)
    assert markers.chunk == 2 and not any(l.visible for l in markers.layers)


def test_the_explorer_map_sends_one_chunk_a_click(tmp_path):
    """Through the explorer: a click re-sends one chunk, image layers go under the
    markers, and every label is on the map."""
    import tessera_explore as te

    pytest.importorskip("leafmap")
    app = te.explore(te.tutorial.open_demo(), labels=str(tmp_path / "l.geojson"),
                     classes=dict(CLASSES), basemap=False)
    try:
        mv = app.map_view
        layers = list(app.map.layers)
        first_marker = layers.index(mv.markers.layers[0])
        assert all(layers.index(l) < first_marker for l in mv.layers.values() if l in layers)
        store = app.labels
        _add(store, 5)
        sends = [0] * len(mv.markers.layers)
        for i, layer in enumerate(mv.markers.layers):
            layer.observe(lambda ch, i=i: sends.__setitem__(i, sends[i] + 1), names="data")
        _add(store, 1, start=5)
        assert sum(sends) == 1
        assert mv.markers.data == labels_geojson(store)
    finally:
        app.close()
