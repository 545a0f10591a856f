"""Guided labelling in the explorer, driven through the controller on the synthetic scene:
suggestions, validation, the trust layer, the learning curve and the UMAP scatter."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from explorer_points import points_of

from tessera_explore.exceptions import ArgumentError

LAND = ("forest", "grassland", "cereal")


@pytest.fixture
def app_factory(app_factory):
    """The explorers of these tests open one year only."""
    def make(**kw):
        kw.setdefault("years", [])
        return app_factory(**kw)

    return make


def start_labels(app, truth, per_class, classes=LAND, seed=0):
    for name in classes:
        app.state.active_class = name
        for q in points_of(truth, name, per_class, seed=seed):
            app.click(*q)
    app.wait()


def true_class(truth, stop):
    return str(truth[2][stop.row, stop.col])


def layer_names(app):
    return {n for n, l in app.map_view.layers.items() if l in app.map.layers and l.visible}


# ---------------------------------------------------------------------------- suggestions
def test_suggestions_are_walked_and_labelled_with_the_true_class(app_factory, truth):
    app = app_factory(classes=list(LAND))
    ctl, st = app.controller, app.state
    start_labels(app, truth, 2)
    n0 = len(app.labels)
    assert n0 == 6 and ctl.classifier is not None

    first = ctl.suggest_next().result(timeout=120)
    app.wait()
    walk = ctl.guide.walk
    assert st.walk == "suggest" and walk is not None and len(walk.stops) == 10
    assert first is walk.stops[0] and "suggestion 1 of 10" in st.guide
    # numbered markers on the map, the map centred on the current point
    mv = app.map_view
    assert mv.walk_markers in app.map.layers and len(mv.walk_markers.layers) == 10
    assert mv.walk_markers.layers[0].location == pytest.approx((first.lat, first.lon))
    assert mv.map.center == pytest.approx((first.lat, first.lon))
    # no suggestion sits on a labelled pixel
    labelled = {ctl.pixel_at(lab.lon, lab.lat) for lab in app.labels.labels}
    assert not labelled & {(s.row, s.col) for s in walk.stops}

    # the simulated user answers with the true class, skipping what is not one of its classes
    added, skipped = [], 0
    while walk.current is not None:
        stop = walk.current
        name = true_class(truth, stop)
        if name in LAND:
            msg = ctl.label_suggestion(name)
            assert "labelled" in msg, msg
            added.append((stop, name))
            nxt = walk.current
            if nxt is not None:
                assert mv.map.center == pytest.approx((nxt.lat, nxt.lon))
        else:
            ctl.skip_suggestion()
            skipped += 1
    app.wait()
    assert added, "no suggestion fell on a labelled class"
    assert len(app.labels) == n0 + len(added)
    assert walk.answered == len(added) and walk.skipped == skipped
    assert "all 10 suggestions seen" in st.guide
    # each answer is a point label of the true class at the suggested pixel, trained on
    by_pixel = {ctl.pixel_at(lab.lon, lab.lat): lab.cls for lab in app.labels.labels}
    for stop, name in added:
        assert by_pixel[(stop.row, stop.col)] == name
    assert f"trained on {n0 + len(added)} labels" in st.status or st.status.startswith("low trust")
    # answered markers fade
    assert all(m.opacity < 1 for m in mv.walk_markers.layers)

    # the batch is used up: the next one comes from the retrained classifier, away from every label
    ctl.suggest_next().result(timeout=120)
    new = ctl.guide.walk
    assert new is not walk and len(new.stops) == 10
    labelled = {ctl.pixel_at(lab.lon, lab.lat) for lab in app.labels.labels}
    assert not labelled & {(s.row, s.col) for s in new.stops}
    assert st.error == ""


def test_suggest_needs_a_classifier_and_stop_clears_the_markers(app_factory, truth):
    app = app_factory(classes=list(LAND))
    ctl = app.controller
    assert ctl.suggest() is None and "needs a classifier" in app.state.status
    assert "no suggestion" in ctl.label_suggestion("forest")
    start_labels(app, truth, 2)
    # the panel's strategy choice is the default of every suggestion batch
    app.panel.guided.strategy.value = "uncertainty"
    assert app.state.suggest_strategy == "uncertainty"
    with pytest.raises(ArgumentError, match="strategy"):
        ctl.suggest(3, strategy="nearest")
    ctl.suggest(3).result(timeout=120)
    app.wait()
    assert ctl.guide.suggestions.attrs["strategy"] == "uncertainty" and "(uncertainty)" in app.state.status
    assert len(app.map_view.walk_markers.layers) == 3
    from ipywidgets.widgets import widget as W

    before = len(W._instances)
    ctl.stop_walk()
    assert app.state.walk == "" and app.map_view.walk_markers is None
    assert not any(type(l).__name__ == "Marker" for l in app.map.layers)
    # the markers, their icons, their group and the ring are closed, and every widget left can be sent
    assert len(W._instances) <= before - 8
    for w in list(W._instances.values()):
        w.get_state()


# ---------------------------------------------------------------------------- validation
def test_validation_points_stay_out_of_the_label_store(app_factory, truth, tmp_path):
    app = app_factory(classes=list(LAND))
    ctl, st = app.controller, app.state
    start_labels(app, truth, 6)
    n_labels = len(app.labels)
    store_file = (tmp_path / "labels.geojson").read_text()

    ctl.validate(24).result(timeout=120)
    app.wait()
    walk = ctl.guide.walk
    assert st.walk == "validate" and len(walk.stops) == 24
    sample = ctl.guide.sample
    map_classes = set(sample["map_class"])
    assert map_classes <= set(LAND)
    answered = 0
    while walk.current is not None:
        stop = walk.current
        if answered == 0:
            assert st.area_table == ""  # not before every stratum holds two answers
        ctl.record_reference(true_class(truth, stop))
        answered += 1
    app.wait()
    # never a training label: the store and its file are as before
    assert len(app.labels) == n_labels
    assert (tmp_path / "labels.geojson").read_text() == store_file
    # the reference points are saved beside the label file
    ref = json.loads((tmp_path / "labels_reference.geojson").read_text())
    assert len(ref["features"]) == 24
    assert [f["properties"]["reference"] for f in ref["features"]] == [true_class(truth, s) for s in walk.stops]
    assert ref["tessera_validation"]["sample_sizes"]
    # the area table: every map class, mapped and adjusted hectares, accuracies
    est = ctl.guide.estimate
    assert est is not None
    assert map_classes <= set(est.table.index)
    assert est.table.loc[list(map_classes), "mapped_ha"].gt(0).all()
    assert 0.5 <= est.overall_accuracy <= 1.0
    for name in map_classes:
        assert f"<td>{name}</td>" in st.area_table
    assert "overall accuracy" in st.area_table and "adjusted ha" in app.panel.guided.area.value
    assert st.error == ""


def test_validation_needs_two_answers_per_stratum_and_keeps_its_map(app_factory, truth):
    app = app_factory(classes=list(LAND))
    ctl = app.controller
    start_labels(app, truth, 3)
    ctl.validate(12, allocation="equal").result(timeout=120)
    app.wait()
    kept = ctl.guide.validation_map
    walk = ctl.guide.walk
    stop = walk.current
    msg = ctl.record_reference(true_class(truth, stop))
    assert "the area table needs" in msg and ctl.guide.estimate is None
    ctl.skip_reference()
    assert walk.skipped == 1
    # put aside and resumed: the same sample, at its next open point
    ctl.stop_walk()
    assert ctl.guide.walk is None and app.state.walk == ""
    resumed = ctl.validate(12).result(timeout=5)
    assert ctl.guide.walk is walk and resumed is walk.current and resumed.open
    # a retrain while validating does not change the map the sample was drawn from
    app.state.active_class = "forest"
    app.click(*points_of(truth, "forest", 1, seed=7)[0])
    app.wait()
    assert ctl.guide.validation_map is kept
    while walk.current is not None:
        ctl.record_reference(true_class(truth, walk.current))
    assert ctl.guide.estimate is not None
    assert int(ctl.guide.estimate.error_matrix.to_numpy().sum()) == 11  # one skipped


def test_validation_resumes_from_the_reference_file(app_factory, truth, tmp_path):
    app = app_factory(classes=list(LAND))
    start_labels(app, truth, 3)
    ctl = app.controller
    ctl.validate(12, allocation="equal").result(timeout=120)
    walk = ctl.guide.walk
    answers = [true_class(truth, walk.current)]
    ctl.record_reference(answers[0])
    answers.append(true_class(truth, walk.current))
    ctl.record_reference(answers[1])
    first_points = [(s.row, s.col) for s in walk.stops]
    app.close()

    # the same labels give the same map: its saved sample comes back with its answers
    app2 = app_factory(classes=list(LAND))
    ctl2 = app2.controller
    cur = ctl2.validate(12).result(timeout=120)
    walk2 = ctl2.guide.walk
    assert [(s.row, s.col) for s in walk2.stops] == first_points
    assert [s.answer for s in walk2.stops[:2]] == answers and walk2.answered == 2
    assert cur is walk2.stops[2] and "resumed" in app2.state.status
    assert len(app2.labels) == 9
    while walk2.current is not None:
        ctl2.record_reference(true_class(truth, walk2.current))
    assert ctl2.guide.estimate is not None
    app2.close()

    # another map (one more label): a new sample; the old file is kept beside it
    app3 = app_factory(classes=list(LAND))
    app3.state.active_class = "forest"
    app3.click(*points_of(truth, "forest", 1, seed=11)[0])
    app3.wait()
    app3.controller.validate(12).result(timeout=120)
    assert app3.controller.guide.walk.answered == 0 and "another class map" in app3.state.status
    assert (tmp_path / "labels_reference.previous.geojson").exists()
    old = json.loads((tmp_path / "labels_reference.previous.geojson").read_text())
    assert all(f["properties"]["reference"] for f in old["features"])


# ---------------------------------------------------------------------------- trust
def test_trust_layer_toggles_follows_retrain_and_is_exported(app_factory, truth, tmp_path):
    app = app_factory(classes=list(LAND))
    st, ctl = app.state, app.controller
    start_labels(app, truth, 2)
    assert "trust" not in layer_names(app)
    st.show_trust = True
    app.wait()
    assert "trust" in layer_names(app)
    layer = app.map_view.layers["trust"]
    ds = ctl.quality.trust_map
    assert set(ds.data_vars) >= {"trust", "reason"}
    low = (ds["reason"].values >= 1) & (ds["reason"].values <= 3)
    assert low.any() and "low trust" in st.status
    legend = app.map_view.legend
    assert "low trust" in legend and ("unfamiliar" in legend or "uncertain" in legend)
    # hatched: the image has transparent gaps between its stripes
    url0 = layer.url
    start_labels(app, truth, 3, seed=3)
    assert ctl.quality._trust_key[0] is ctl.classifier  # recomputed for the new classifier
    assert layer.url != url0
    st.show_trust = False
    assert "trust" not in layer_names(app)
    files = app.export(str(tmp_path / "out"))
    names = sorted(p.rsplit("/", 1)[-1] for p in files)
    assert "trust_2024_trust.tif" in names and "trust_2024_reason.tif" in names
    assert st.error == ""
    app.close()
    st.show_trust = True  # after close: nothing is queued, nothing fails
    assert st.error == ""


def test_hatch_leaves_gaps():
    from tessera_explore.widgets.overlay import OverlayImage, encode_png
    from tessera_explore.widgets.quality import hatch

    rgba = np.full((12, 12, 4), 200, np.uint8)
    img = OverlayImage(png=encode_png(rgba), rgba=rgba, bounds=((0, 0), (1, 1)), transform=None, kind="classes",
                       resampling="nearest")
    out = hatch(img)
    alpha = out.rgba[..., 3]
    assert (alpha == 0).any() and (alpha == 200).any()
    assert alpha[0, 0] == 200 and alpha[0, 5] == 0  # diagonal stripes, period 6
    assert out.png != img.png


# ---------------------------------------------------------------------------- learning curve
def test_learning_curve_after_retrain(app_factory, truth):
    app = app_factory(classes=["forest", "cereal"])
    st = app.state
    start_labels(app, truth, 4, classes=("forest", "cereal"))
    assert st.learning_curve == []  # 4 a class: not scored yet
    start_labels(app, truth, 6, classes=("forest", "cereal"), seed=5)
    curve = st.learning_curve
    assert curve, st.accuracy
    ns = [p["n"] for p in curve]
    assert ns == sorted(ns) and ns[-1] == len(app.labels) == 20
    assert all(0 <= p["low"] <= p["accuracy"] <= p["high"] <= 1 for p in curve)
    # its last point is the panel's score of all the labels, scored once
    ev = app.controller.evaluation
    assert curve[-1]["accuracy"] == ev.accuracy and (curve[-1]["low"], curve[-1]["high"]) == ev.accuracy_interval
    assert "<svg" in app.panel.guided.curve.value and "learning curve" in app.panel.guided.curve.value


# ---------------------------------------------------------------------------- UMAP
def click_timed(app, truth) -> list[float]:
    """Label three pixels of forest and of cereal by clicking; each click's time in ms."""
    lat_ms = []
    for name in ("forest", "cereal"):
        app.state.active_class = name
        for q in points_of(truth, name, 3):
            t0 = time.perf_counter()
            assert "labelled" in app.click(*q)
            lat_ms.append((time.perf_counter() - t0) * 1000)
    return lat_ms


@pytest.mark.slow  # numba compiles UMAP once per process (a minute or more on two busy cores)
def test_umap_fits_in_the_background_while_clicks_go_on(area24, tmp_path, truth, monkeypatch):
    import tessera_explore as te
    import tessera_explore.project as proj

    gate = threading.Event()
    real = proj.project

    def gated(*a, **kw):  # holds the UMAP fit only (the app's PCA goes through the same function)
        if kw.get("method") == "umap":
            assert gate.wait(300), "the gate was never opened"
        return real(*a, **kw)

    monkeypatch.setattr(proj, "project", gated)
    app = te.explore(area24, labels=tmp_path / "l.geojson", basemap=False, scatter=True, years=[],
                     classes=["forest", "cereal"])
    try:
        app.wait()
        ctl, st, sv = app.controller, app.state, app.scatter
        # tiny, and no separate warm-up: the test is about the app, not UMAP; on a thread of
        # the kernel's process (the fallback path, where the gate can hold it)
        ctl.umap.sample, ctl.umap.warm_up, ctl.umap.options = 600, False, {"n_epochs": 30, "n_neighbors": 8}
        ctl.umap.process = False
        pca_xy = sv.xy.copy()
        st.projection = "umap"
        fut = ctl.umap._futures[ctl.scatter_year]
        assert st.projection_status.startswith("UMAP")
        # labelling and retraining carry on while UMAP is still fitting
        lat_ms = click_timed(app, truth)
        app.wait()
        assert "trained on 6 labels" in st.status
        assert not fut.done()  # held at the gate: the clicks did not wait for it
        assert np.array_equal(sv.xy, pca_xy)  # the scatter stays PCA meanwhile
        print(f"click latency while UMAP waits to fit: median {np.median(lat_ms):.0f} ms")
        gate.set()
        comps = fut.result(timeout=300)
        assert comps.sizes["component"] == 2 and st.projection_status.startswith("UMAP ready")
        assert len(sv.points) > 0 and not np.array_equal(sv.xy, pca_xy)
        # a map click marks its pixel in UMAP coordinates
        sent = []
        sv.pipe.add_subscriber(lambda data: sent.append(data))
        lon, lat = points_of(truth, "forest", 1, seed=9)[0]
        app.click(lon, lat)
        r, c = ctl.pixel_at(lon, lat)
        assert sent[-1]["x"][0] == pytest.approx(float(comps.values[0, r, c]))
        # back to PCA at once
        st.projection = "pca"
        assert np.array_equal(sv.xy, pca_xy)
        assert st.error == ""
    finally:
        gate.set()
        app.close()


@pytest.mark.slow  # starts a process that imports UMAP and compiles it
def test_umap_fits_in_a_separate_process(area24, tmp_path, truth):
    import os

    import tessera_explore as te

    app = te.explore(area24, labels=tmp_path / "l.geojson", basemap=False, scatter=True, years=[],
                     classes=["forest", "cereal"])
    try:
        app.wait()
        ctl, st, sv = app.controller, app.state, app.scatter
        ctl.umap.sample, ctl.umap.options = 600, {"n_epochs": 30, "n_neighbors": 8}
        assert ctl.umap.process
        pca_xy = sv.xy.copy()
        st.projection = "umap"
        fut = ctl.umap._futures[ctl.scatter_year]
        lat_ms = click_timed(app, truth)
        app.wait()
        assert "trained on 6 labels" in st.status
        print(f"click latency while UMAP fits in its own process: median {np.median(lat_ms):.0f} ms, "
              f"max {max(lat_ms):.0f} ms; fit done before the clicks ended: {fut.done()}")
        comps = fut.result(timeout=600)
        assert ctl.umap.fitted_in not in (None, os.getpid())  # fitted in another process
        assert comps.sizes == {"component": 2, "y": area24.sizes["y"], "x": area24.sizes["x"]}
        assert np.array_equal(comps.x.values, area24.x.values) and comps.rio.crs == area24.rio.crs
        assert np.isfinite(comps.values).mean() > 0.5
        assert st.projection_status.startswith("UMAP ready") and not np.array_equal(sv.xy, pca_xy)
        assert st.error == ""
    finally:
        app.close()
