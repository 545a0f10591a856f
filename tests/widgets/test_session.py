"""The explorer's Session: events by name, the closed flag, prepared areas, and the one way
to replace the explored area (what full depth uses today and a map-following explorer
will use); the class map redraw says what it drew."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def session(area24, tmp_path):
    from tessera_explore.classify import LabelStore
    from tessera_explore.widgets.session import Session
    from tessera_explore.widgets.state import ExplorerState

    store = LabelStore(tmp_path / "labels.geojson", classes=["forest", "cereal"])
    s = Session(ExplorerState(), {2024: area24}, store, max_pixels=2000)
    yield s
    s.close()


def points_of(scene, k, n, seed=0):
    lon, lat, cls = scene
    idx = np.flatnonzero(cls.ravel() == k)
    pick = np.random.default_rng(seed).choice(idx, n, replace=False)
    return [(float(lon.ravel()[i]), float(lat.ravel()[i])) for i in pick]


def test_events_are_named_and_a_failing_listener_is_shown(session):
    from tessera_explore.exceptions import ArgumentError
    from tessera_explore.widgets.session import EVENT_LAYER, EVENTS

    assert EVENT_LAYER == "layer" and {"layer", "marker", "labels", "trained", "walk", "scatter", "components",
                                       "area"} <= set(EVENTS)
    with pytest.raises(ArgumentError, match="unknown explorer event 'layers'"):
        session.on("layers", print)
    with pytest.raises(ArgumentError):
        session.emit("nope")
    got = []

    def broken(*args):
        raise ValueError("the view broke")

    session.on(EVENT_LAYER, broken)
    session.on(EVENT_LAYER, lambda *args: got.append(args))
    session.emit(EVENT_LAYER, "classes", None)
    assert got == [("classes", None)]  # the second listener still ran
    assert "ValueError: the view broke" in session.state.error


def test_say_report_labels_and_trainable(session):
    st = session.state
    assert session.say("hello") == "hello" and st.status == "hello"
    session.report(KeyError("k"), "reading")
    assert st.error.startswith("reading failed: KeyError") and "failed" in st.status
    assert st.classes == ["forest", "cereal"] and not session.trainable()
    seen = []
    session.on("labels", lambda store: seen.append(len(store)))
    a = session.arrays[2024]
    from pyproj import Transformer

    tr = Transformer.from_crs(a.rio.crs, 4326, always_xy=True)
    lon, lat = tr.transform(float(a.x[4]), float(a.y[3]))
    assert session.pixel_at(lon, lat) == (3, 4)
    assert session.pixel_at(lon + 10, lat) is None
    session.store.add_point(lon, lat, "forest")
    lon2, lat2 = tr.transform(float(a.x[10]), float(a.y[12]))
    session.store.add_point(lon2, lat2, "cereal")
    assert seen == [1, 2] and st.counts == {"forest": 1, "cereal": 1} and session.trainable()


def test_area_is_prepared_once_and_render_options_follow_max_pixels(session):
    area = session.area(2024)
    assert session.area(2024) is area and session.prepared == {2024: area}
    assert area.shape == session.grid.shape
    assert session.render_options == {"max_pixels": 2000, "resampling": "nearest"}
    shown = session.shown_pixels(2024)
    h, w = area.shape
    assert shown is not None and 0 < shown.size < h * w  # 2,000 screen pixels of a larger area
    assert session.shown_pixels(2024) is shown  # cached


def test_closed_session_refuses_jobs_and_runs_its_closers(session):
    from tessera_explore.widgets.session import ExplorerClosedError

    assert session.submit("x", lambda: 41 + 1, "adding").result(10) == 42
    order = []
    session.when_closed(lambda: order.append(session.closed))
    session.close()
    assert order == [True] and session.closed
    with pytest.raises(ExplorerClosedError):
        session.check_open()
    with pytest.raises(ExplorerClosedError):
        session.submit("x", lambda: None, "anything")
    session.close()  # twice is fine
    assert order == [True]


def test_replace_arrays_resets_the_area_and_tells_every_part(session, area24):
    from tessera_explore.exceptions import ArgumentError
    from tessera_explore.widgets.session import EVENT_AREA

    old_area = session.area(2024)
    old_shown = session.shown_pixels(2024)
    seen = []
    session.on(EVENT_AREA, lambda arrays: seen.append(arrays))
    half = area24.isel(x=slice(0, area24.sizes["x"] // 2))  # another grid: fine
    session.replace_arrays({2024: half})
    assert seen and seen[0][2024] is session.arrays[2024]
    assert session.grid.shape == (area24.sizes["y"], area24.sizes["x"] // 2)
    assert session.prepared == {}
    new_area = session.area(2024)
    assert new_area is not old_area and new_area.shape == session.grid.shape
    assert session.shown_pixels(2024) is not old_shown
    session.replace_arrays({2024: area24}, prepared={2024: old_area})
    assert session.area(2024) is old_area  # given prepared areas are used
    with pytest.raises(ArgumentError, match="years"):
        session.replace_arrays({2023: area24})
    assert len(seen) == 2


def test_controller_redraws_on_replaced_arrays(area24, scene24, tmp_path):
    """The area replaced from a job, then ``redraw``: the classifier is retrained on the
    new arrays, the PCA and the similarity recomputed (the path of depth first, and of an
    explorer that follows the map)."""
    import tessera_explore as te
    from tessera_explore.testing import CLASSES

    lon, lat, k = scene24
    scene = (lon, lat, np.asarray(CLASSES)[k])
    app = te.explore(area24, years=[], labels=tmp_path / "l.geojson", classes=["forest", "cereal"],
                     basemap=False, scatter=False)
    try:
        app.wait()
        ctl = app.controller
        for name in ("forest", "cereal"):
            app.state.active_class = name
            for p in points_of(scene, name, 3):
                app.click(*p)
        app.wait()
        app.state.mode = "similarity"
        app.click(*points_of(scene, "forest", 1, seed=5)[0])
        app.wait()
        clf, comps, sim = ctl.classifier, ctl.components[2024], ctl.similarity_map
        assert clf is not None and sim is not None
        layers = []
        ctl.on("layer", lambda name, img: layers.append(name))
        scaled = (area24 * 0.5).astype("float32")
        scaled.attrs.update(area24.attrs)
        scaled = scaled.rio.write_crs(area24.rio.crs)

        def switch():
            ctl.session.replace_arrays({2024: scaled})
            assert ctl.classifier is None and ctl.components == {}  # the parts let go at once
            return ctl.redraw()

        assert ctl.submit("area", switch, "replacing the area").result(60) is True
        app.wait()
        assert ctl.arrays[2024] is not area24
        assert ctl.classifier is not None and ctl.classifier is not clf
        assert ctl.components[2024] is not comps
        assert ctl.similarity_map is not sim
        assert {"false_colour", "classes", "similarity"} <= set(layers)
        assert app.state.error == ""
    finally:
        app.close()


def test_class_map_redraw_says_what_it_drew(area24, scene24, tmp_path):
    import tessera_explore as te
    from tessera_explore.testing import CLASSES

    lon, lat, k = scene24
    scene = (lon, lat, np.asarray(CLASSES)[k])
    app = te.explore(area24, years=[], labels=tmp_path / "l.geojson", classes=["forest", "cereal"],
                     basemap=False, scatter=False)
    try:
        st = app.state
        st.confidence_threshold = 0.9
        app.wait()
        assert st.status.startswith("no class map to redraw")
        for name in ("forest", "cereal"):
            st.active_class = name
            for p in points_of(scene, name, 3):
                app.click(*p)
        app.wait()
        st.show_confidence = True
        app.wait()
        assert st.status.startswith("class map redrawn: showing confidence")
        assert "below confidence 0.90 hidden" in st.status
        st.confidence_threshold = 0.0
        app.wait()
        assert st.status == "class map redrawn: showing confidence"
        assert "redrawing" not in st.status
    finally:
        app.close()
