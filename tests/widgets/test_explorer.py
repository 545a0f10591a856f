"""The explorer driven programmatically: state, controller and views, without a browser."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from explorer_points import points_of


@pytest.fixture(scope="module")
def area(area24):
    return area24


def label(app, truth, per_class, classes=(("forest", "forest"), ("cereal", "cereal"))):
    """Click ``per_class`` pixels of each true class as the app class paired with it."""
    for app_class, true_class in classes:
        app.state.active_class = app_class
        for q in points_of(truth, true_class, per_class):
            app.click(*q)
    app.wait()


def marker_labels(app):
    """(label id, geometry type, coordinates) of each label drawn on the map's marker layer."""
    seen = {}
    for f in app.map_view.markers.data["features"]:
        seen.setdefault(f["properties"]["id"], (f["geometry"]["type"], f["geometry"]["coordinates"]))
    return [(i, *v) for i, v in seen.items()]


def layer_names(app):
    return {n for n, l in app.map_view.layers.items() if l in app.map.layers and l.visible}


# ---------------------------------------------------------------------------- state
def test_state_refuses_unknown_arguments_and_bad_values():
    import traitlets

    from tessera_explore.widgets.state import ExplorerState

    with pytest.raises(TypeError, match="unknown arguments \\['mdoe'\\]"):
        ExplorerState(mdoe="label")
    st = ExplorerState(years=[2023, 2024], year=2024, classes=["a", "b"])
    with pytest.raises(traitlets.TraitError, match="year 2022 is not open"):
        st.year = 2022
    with pytest.raises(traitlets.TraitError, match="unknown class 'c'"):
        st.active_class = "c"
    with pytest.raises(traitlets.TraitError):
        st.mode = "paint"


# ---------------------------------------------------------------------------- the app
def test_explore_opens_with_false_colour_and_every_year(app_factory):
    app = app_factory()
    assert app.state.years == [2023, 2024] and app.state.year == 2024
    assert "false_colour" in layer_names(app)
    assert app.map_view.layers["false_colour"].url.startswith("data:image/png;base64,")
    assert app.state.error == ""
    assert "Explorer(" in repr(app)
    # the widget displays through the app object
    bundle = app._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_clicks_label_train_and_draw_the_class_map(app_factory, truth, tmp_path):
    app = app_factory(classes=["forest", "cereal"])
    st = app.state
    assert st.classes == ["forest", "cereal"]
    st.active_class = "forest"
    for lon, lat in points_of(truth, "forest", 3):
        assert "labelled" in app.click(lon, lat)
    assert "at least two classes" in st.status
    assert "classes" not in layer_names(app)
    st.active_class = "cereal"
    for lon, lat in points_of(truth, "cereal", 3):
        app.click(lon, lat)
    app.wait()
    assert st.error == ""
    assert "trained on 6 labels" in st.status
    assert "classes" in layer_names(app)
    # the map is right where the labels are
    cm = app.class_map
    names = list(cm.attrs["classes"])
    lon, lat, cls = truth
    for want in ("forest", "cereal"):
        idx = np.flatnonzero(cls.ravel() == want)
        got = np.asarray(names + ["-"] * 256)[cm.values.ravel()[idx]]
        assert np.mean(got == want) > 0.9
    # the labels are on disk after every click, with the markers on the map
    doc = json.loads((tmp_path / "labels.geojson").read_text())
    assert [f["properties"]["class"] for f in doc["features"]] == ["forest"] * 3 + ["cereal"] * 3
    assert len(marker_labels(app)) == 6
    assert st.counts == {"forest": 3, "cereal": 3} and st.n_labels == 6


def test_bad_clicks_say_what_happened(app_factory, truth, area):
    app = app_factory()
    st = app.state
    lon, lat = points_of(truth, "forest", 1)[0]
    assert "add a class first" in app.click(lon, lat)
    assert len(app.labels) == 0
    assert "outside the embeddings" in app.click(10.0, 40.0)
    lon_w, lat_w = points_of(truth, "water", 1)[0]
    app.add_class("forest")
    assert "no data" in app.click(lon_w, lat_w)
    assert "labelled" in app.click(lon, lat)
    assert "already" in app.click(lon, lat)  # the same point twice
    assert len(app.labels) == 1 and st.error == ""


def test_fast_repeated_clicks_coalesce(app_factory, truth):
    app = app_factory(classes=["forest", "cereal"])
    runs = []
    orig = app.controller.classifying.retrain_now

    def counting():
        runs.append(1)
        return orig()

    app.controller.classifying.retrain_now = counting
    app.state.active_class = "forest"
    for p in points_of(truth, "forest", 2, seed=1):
        app.click(*p)
    app.state.active_class = "cereal"
    pts = points_of(truth, "cereal", 20, seed=1)
    for p in pts:
        app.click(*p)
    app.wait()
    assert len(app.labels) == 22
    assert 1 <= len(runs) < 20  # retrains coalesce; the last one saw every label
    assert "trained on 22 labels" in app.state.status


def test_panel_buttons_edit_classes_and_labels(app_factory, truth):
    app = app_factory()
    p = app.panel
    p.new_name.value = "forest"
    p.add_btn.click()
    p.new_name.value = "fields"
    p.add_btn.click()
    assert app.state.classes == ["forest", "fields"] and app.state.active_class == "fields"
    p.active.value = "forest"
    assert app.state.active_class == "forest"
    label(app, truth, 2, classes=(("forest", "forest"), ("fields", "cereal")))
    assert "classes" in layer_names(app)
    p.new_name.value = "cereal"
    p.rename_btn.click()
    assert app.labels.counts() == {"forest": 2, "cereal": 2}
    p.color.value = "#123456"
    assert app.labels.classes["cereal"] == "#123456"
    p.undo_btn.click()
    assert app.labels.classes["cereal"] != "#123456"
    p.clear_btn.click()
    app.wait()
    assert len(app.labels) == 0 and "classes" not in layer_names(app)
    p.undo_btn.click()
    app.wait()
    assert len(app.labels) == 4 and "classes" in layer_names(app)
    p.active.value = "cereal"
    p.remove_btn.click()
    app.wait()
    assert app.state.classes == ["forest"] and app.state.error == ""


def test_reopening_the_label_file_brings_labels_back(app_factory, truth, tmp_path):
    app = app_factory(classes=["forest", "cereal"])
    app.state.active_class = "forest"
    app.click(*points_of(truth, "forest", 1)[0])
    app.state.active_class = "cereal"
    app.click(*points_of(truth, "cereal", 1)[0])
    app.wait()
    app.close()
    assert not os.path.exists(str(tmp_path / "labels.geojson.lock"))
    again = app_factory()
    assert again.state.counts == {"forest": 1, "cereal": 1}
    assert len(marker_labels(again)) == 2
    assert "classes" in layer_names(again)  # trained at start


def test_second_app_on_one_label_file(app_factory, truth, tmp_path):
    from tessera_explore.exceptions import LabelError

    first = app_factory(classes=["forest"])
    second = app_factory()  # same kernel: shares the store
    assert "also open in another explorer" in second.state.notice
    assert "also open in another explorer" in second.panel.notice.value
    assert second.labels is first.labels
    first.click(*points_of(truth, "forest", 1)[0])
    assert second.state.n_labels == 1
    # another live process holds a lock: refused, nothing touched
    other = tmp_path / "other.geojson"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        (tmp_path / "other.geojson.lock").write_text(json.dumps({"pid": proc.pid, "host": socket.gethostname()}))
        with pytest.raises(LabelError, match=f"open in another process \\(process {proc.pid}"):
            app_factory(labels=other)
        assert not other.exists()
    finally:
        proc.kill()
        proc.wait()
    # that process is gone: its stale lock is taken over, and the app says so
    with pytest.warns(Warning, match="took over"):
        taken = app_factory(labels=other)
    assert "took over" in taken.state.notice and "took over" in taken.labels.lock_notice


def test_close_releases_the_label_file_after_the_last_app(app_factory, truth, tmp_path):
    """The label store explore() opened is closed (its lock released) by the last app
    sharing it; a closed app refuses label edits, saving and its panel's buttons."""
    from tessera_explore.exceptions import LabelError

    lock = tmp_path / "labels.geojson.lock"
    first = app_factory(classes=["forest", "cereal"])
    second = app_factory()
    assert lock.exists() and second.labels is first.labels
    first.close()
    assert first.closed and lock.exists() and not second.labels.closed
    second.state.active_class = "forest"
    assert "labelled" in second.click(*points_of(truth, "forest", 1)[0])
    second.close()
    assert second.labels.closed and not lock.exists()
    for action in (lambda: second.click(*points_of(truth, "cereal", 1)[0]), lambda: second.add_class("water"),
                   second.undo, second.redo, second.clear, second.save):
        with pytest.raises(LabelError, match="closed"):
            action()
    # the panel's callbacks raise too (ipywidgets logs what a button's handler raises)
    handler = second.panel.clear_btn._click_handlers.callbacks[0]
    with pytest.raises(LabelError, match="closed"):
        handler(second.panel.clear_btn)
    assert len(second.labels) == 1  # kept, readable
    # a store passed in stays open: it belongs to the caller
    from tessera_explore import LabelStore

    store = LabelStore.open(tmp_path / "mine.geojson", create=True)
    app = app_factory(labels=store)
    app.close()
    assert not store.closed
    store.close()


def test_callback_errors_show_in_the_app(app_factory, truth):
    app = app_factory(classes=["forest"])

    def broken(lon, lat):
        raise RuntimeError("boom")

    app.controller.click = broken
    app.map_view._on_interaction(type="click", coordinates=[52.05, 0.2])  # Leaflet order: lat, lon
    assert "the map click failed: RuntimeError: boom" in app.state.error
    assert "boom" in app.panel.error.value
    app.panel.dismiss.click()
    assert app.state.error == ""


def test_map_click_converts_leaflet_order(app_factory, truth):
    app = app_factory(classes=["forest"])
    lon, lat = points_of(truth, "forest", 1)[0]
    app.map_view._on_interaction(type="click", coordinates=[lat, lon])
    lab = app.labels.labels[0]
    assert (lab.lon, lab.lat) == (lon, lat)
    (_, kind, coords), = marker_labels(app)
    assert kind == "Point" and tuple(coords) == (lon, lat)  # GeoJSON order on the marker layer


def test_similarity_mode_and_threshold(app_factory, truth):
    app = app_factory()
    app.state.mode = "similarity"
    lon, lat = points_of(truth, "forest", 1)[0]
    app.click(lon, lat)
    app.wait()
    assert "similarity" in layer_names(app)
    sim = app.controller.similarity_map
    r, c = app.controller.pixel_at(lon, lat)
    assert sim.values[r, c] == pytest.approx(1.0, abs=1e-4)
    url = app.map_view.layers["similarity"].url
    app.state.similarity_threshold = 0.95
    app.wait()
    assert app.map_view.layers["similarity"].url != url
    assert "cosine similarity >= 0.95" in app.state.status and app.state.error == ""
    n80 = int(np.count_nonzero(sim.values >= 0.8))
    assert f"{int(np.count_nonzero(sim.values >= 0.95)):,} pixels" in app.state.status and n80 > 0
    app.state.mode = "label"
    assert "similarity" not in layer_names(app)


def test_change_mode_year_switch_and_export(app_factory, truth, tmp_path):
    import rasterio

    app = app_factory(classes=["forest", "cereal"])
    label(app, truth, 2)
    app.state.mode = "change"
    app.wait()
    assert "change" in layer_names(app) and "change 2023 to 2024" in app.state.status
    lon, lat = points_of(truth, "forest", 1, seed=5)[0]
    assert "distance" in app.click(lon, lat)
    url = app.map_view.layers["false_colour"].url
    app.state.year = 2023
    app.wait()
    assert app.map_view.layers["false_colour"].url != url
    assert app.controller.prediction_year == 2023
    files = app.export(str(tmp_path / "out"))
    names = sorted(os.path.basename(f) for f in files)
    assert "labels.geojson" in names and any(n.startswith("classes_2023") for n in names)
    assert any(n.startswith("change_2023_2024") for n in names)
    with rasterio.open([f for f in files if "classes_2023_class" in f][0]) as src:
        tags = src.tags()
    assert tags.get("year") == "2023" or "2023" in json.dumps(tags)
    assert app.state.error == ""


def test_scatter_selection_and_marker(area, tmp_path, truth):
    import tessera_explore as te

    app = te.explore(area, labels=tmp_path / "l.geojson", basemap=False, scatter=True)
    try:
        app.wait()
        sv = app.scatter
        assert sv is not None and len(sv.points) > 0
        x0, y0, x1, y1 = sv.points.bounds()
        sv._on_box(bounds=(x0, y0, (x0 + x1) / 2, y1))
        app.wait()
        assert app.state.selection_size > 0 and "selection" in layer_names(app)
        lasso = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        sv._on_lasso(geometry=lasso)
        app.wait()
        assert app.state.selection_size == len(sv.points)
        sent = []
        sv.pipe.add_subscriber(lambda data: sent.append(data))
        lon, lat = points_of(truth, "forest", 1)[0]
        app.click(lon, lat)
        assert sent and len(sent[-1]["x"]) == 1
        r, c = app.controller.pixel_at(lon, lat)
        comps = app.controller.components[2024]
        assert sent[-1]["x"][0] == pytest.approx(float(comps.values[0, r, c]))
    finally:
        app.close()


def test_live_embedding_needs_a_model(app_factory):
    app = app_factory()
    assert not app.map_view.live and "live" not in [v for _, v in app.panel.mode.options]
    assert app.controller.embed_live((0.15, 52.03, 0.16, 52.04)) is None
    assert "needs a model" in app.state.status


def _draw(app, ring, color):
    """What the map's draw control sends for a shape drawn with ``color``."""
    app.map_view._on_draw(app.map_view.draw, "created", {
        "type": "Feature", "properties": {"style": {"color": color}},
        "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}})


def test_drawn_polygons_are_labels_and_the_panel_shows_accuracy(app_factory, truth, area):
    from tessera_explore.widgets.views import LABEL_COLOR

    app = app_factory(classes=["forest", "cereal"])
    lon, lat, cls = truth

    def square_around(name, seed):
        x, y = points_of(truth, name, 1, seed=seed)[0]
        d = 0.0004
        return [(x - d, y - d), (x + d, y - d), (x + d, y + d), (x - d, y + d), (x - d, y - d)]

    assert app.map_view.draw is None  # no drawing tools in click mode
    app.state.mode = "draw"
    assert app.map_view.draw in app.map.controls
    n = len(app.labels)
    assert "draw mode" in app.click(*points_of(truth, "forest", 1, seed=9)[0])  # clicks are not labels here
    assert len(app.labels) == n
    app.state.active_class = "forest"
    _draw(app, square_around("forest", 1), LABEL_COLOR)
    assert app.labels.labels[-1].kind == "polygon" and app.labels.labels[-1].cls == "forest"
    app.state.mode = "label"
    assert app.map_view.draw is None
    label(app, truth, 3)
    app.wait()
    assert app.state.error == ""
    assert "trained on" in app.state.status
    # 4 forest and 3 cereal labels: too few to score on held-out labels, and the app says so
    acc = app.state.accuracy
    assert acc.startswith("accuracy: not scored yet: needs 5 labels of each class") and "cereal 3" in acc, acc
    assert "rests on 7 labels" in acc and app.controller.evaluation is None
    for name in ("forest", "cereal"):
        app.state.active_class = name
        for q in points_of(truth, name, 2, seed=5):
            app.click(*q)
    app.wait()
    acc = app.state.accuracy
    assert acc.startswith("spatial cross-validation: accuracy") and "95 % interval" in acc, acc
    assert "on 11 held-out labels" in acc
    assert app.controller.evaluation is not None
    assert any(kind == "Polygon" for _, kind, _ in marker_labels(app))
    # not in draw mode: a drawn shape is not a label
    app.state.mode = "similarity"
    n = len(app.labels)
    app.controller.add_polygon(square_around("cereal", 2))
    assert len(app.labels) == n and "draw mode" in app.state.status


def test_confidence_layer_replaces_the_classes(app_factory, truth):
    app = app_factory(classes=["forest", "cereal"])
    label(app, truth, 2)
    assert "classes" in layer_names(app) and "confidence" not in layer_names(app)
    app.state.show_confidence = True
    app.wait()
    assert layer_names(app) >= {"confidence"} and "classes" not in layer_names(app)
    assert "confidence" in app.map_view.legend
    app.panel.show_conf.value = False
    app.wait()
    assert "classes" in layer_names(app) and "confidence" not in layer_names(app)


def test_scatter_follows_the_year(area, tmp_path, truth):
    import tessera_explore as te

    app = te.explore(area, labels=tmp_path / "l.geojson", basemap=False, scatter=True)
    try:
        app.wait()
        sv = app.scatter
        before = sv.plot.points
        app.panel.year.value = 2023
        app.wait()
        after = sv.plot.points
        assert after is not before and app.controller.scatter_year == 2023
        comps23 = app.controller.components[2023]
        np.testing.assert_allclose(after.xy[:, 0], comps23.values[0].ravel()[after.index])
        # a click now marks the pixel's 2023 position
        sent = []
        sv.pipe.add_subscriber(lambda data: sent.append(data))
        lon, lat = points_of(truth, "forest", 1)[0]
        app.click(lon, lat)
        r, c = app.controller.pixel_at(lon, lat)
        assert sent[-1]["x"][0] == pytest.approx(float(comps23.values[0, r, c]))
        assert app.state.error == ""
    finally:
        app.close()


def test_queue_coalesces_and_a_retrain_drops_a_pending_score(app_factory):
    import threading

    ctl = app_factory().controller
    gate, ran = threading.Event(), []
    ctl.submit("block", gate.wait, "waiting")
    f1 = ctl.submit("x", lambda: ran.append("x1") or 1, "x")
    f2 = ctl.submit("x", lambda: ran.append("x2") or 2, "x")  # replaces x1, which never runs
    score = ctl.submit("evaluate", lambda: ran.append("score"), "scoring", quiet=True)
    ctl.submit("retrain", lambda: ran.append("retrain"), "training", supersedes=("evaluate",))
    assert ctl.state.busy
    gate.set()
    ctl.wait()
    assert ran == ["x2", "retrain"]
    assert f1 is f2 and f2.result() == 2 and score.result() is None
    assert not ctl.state.busy


def test_label_file_in_a_missing_folder_is_refused(area, tmp_path):
    import tessera_explore as te
    from tessera_explore.exceptions import LabelError

    with pytest.raises(LabelError, match="does not exist"):
        te.explore(area, labels=tmp_path / "nowhere" / "labels.geojson", scatter=False, basemap=False)


def test_a_year_with_missing_tiles_is_left_out_with_a_note(small_tiles, tmp_path):
    import shutil

    import tessera_explore as te
    from tessera_explore.io import grid

    folder, recs = small_tiles
    copy = tmp_path / "tiles"
    shutil.copytree(folder, copy)
    rec = next(r for r in recs if r["year"] == 2023)
    for p in grid.tile_paths(copy, rec["lon"], rec["lat"], 2023).values():
        if os.path.exists(p) and p.endswith(".npy"):
            os.remove(p)
    da = te.open_embeddings(copy, bbox=(0.1, 52.0, 0.3, 52.1), year=2024)
    app = te.explore(da, labels=tmp_path / "l.geojson", scatter=False, basemap=False)
    try:
        assert app.state.years == [2024]
        assert "2023 left out" in app.state.notice
    finally:
        app.close()
    with pytest.raises(te.exceptions.YearNotAvailableError):
        te.explore(da, years=[2023], labels=tmp_path / "m.geojson", scatter=False, basemap=False)


def test_a_hundred_clicks_make_no_new_widgets(app_factory, truth):
    """Label markers are a fixed pool of layers (chunks of labels) updated in place: the
    live widgets stay flat over 100 clicks, and each click sends one chunk of at most 20
    labels whatever the number of labels (so the cost of a click cannot grow with the
    labels the way a widget per marker did); ``markers.data`` is their union."""
    from ipywidgets.widgets import widget as W

    app = app_factory(classes=["forest", "cereal"])
    pts = {name: points_of(truth, name, 50, seed=11) for name in ("forest", "cereal")}
    updates = []
    app.map_view.markers.observe(lambda ch: updates.append(len(ch["new"]["features"])), names="data")

    def click(i):
        name = ("forest", "cereal")[i % 2]
        app.state.active_class = name
        said.append(app.click(*pts[name][i // 2]))

    said = []
    for i in range(10):
        click(i)
    app.wait()
    live = len(W._instances)
    n_updates = len(updates)
    for i in range(10, 100):
        click(i)
        if i % 10 == 9:
            app.wait()
            assert len(W._instances) == live, f"widgets grew from {live} to {len(W._instances)} after {i + 1} clicks"
    added = sum("labelled" in m for m in said)
    assert len(app.labels) == added > 90 and app.state.error == "", [m for m in said if "labelled" not in m][:3]
    # one change of the markers' union per label added, holding the labels so far (a halo and a
    # dot each); what goes to the browser is the chunk the label joins (test_label_markers.py)
    assert len(updates) - n_updates == added - sum("labelled" in m for m in said[:10])
    assert updates[-1] == 2 * added


@pytest.mark.parametrize("basemap", [False, True])
def test_every_widget_state_can_be_sent(app_factory, truth, basemap):
    """What Voila and JupyterLab ask a kernel for when a page opens: the state of every
    live widget at once.  One widget that cannot be serialised (a link left pointing at a
    closed layer, as leafmap's layer manager leaves when a basemap is removed) fails the
    whole answer, and no widget of the notebook renders.  Checked after the modes that
    add and remove controls (legend, drawing tools)."""
    import ipyleaflet
    from ipywidgets.widgets import widget as W

    app = app_factory(classes=["forest", "cereal"], basemap=basemap)
    label(app, truth, 2)
    for mode in ("draw", "similarity", "label"):
        app.state.mode = mode
    app.wait()
    assert any(isinstance(l, ipyleaflet.TileLayer) for l in app.map.layers) == basemap
    for w in list(W._instances.values()):
        w.get_state()  # raises for a widget that refers to a closed one


def test_class_image_classifies_only_the_pixels_it_shows(app_factory, truth):
    """With an image smaller than the area, a retrain classifies the pixels the image
    shows (the same image as from the whole map); the whole map is classified when asked
    for (``class_map``, export)."""
    from tessera_explore.classify import predict_map
    from tessera_explore.widgets.overlay import overlay_image

    app = app_factory(classes=["forest", "cereal"])
    ctl = app.controller
    ctl.max_pixels = 1500  # far below the area's 5,280 pixels
    images = []
    ctl.on("layer", lambda name, img: images.append(img) if name == "classes" else None)
    label(app, truth, 3)
    pred = ctl.prediction
    assert pred.attrs.get("partial") and (pred["class"].values == 255).any()
    whole = predict_map(ctl.session.area(ctl.prediction_year), ctl.classifier)
    names = list(whole.attrs["classes"])
    want = overlay_image(whole["class"], categories=names, colors=[ctl.store.classes[n] for n in names],
                         **ctl.session.render_options, title="classes")
    assert images[-1].url == want.url
    cm = app.class_map
    assert not ctl.prediction.attrs.get("partial")
    np.testing.assert_array_equal(cm.values, whole["class"].values)
