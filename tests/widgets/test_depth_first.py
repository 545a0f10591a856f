"""Depth first: on a store with nested prefixes the explorer opens the 16-band prefix,
takes clicks at once, and switches to full depth when it has been read."""

from __future__ import annotations

import html
import threading

import numpy as np
import pytest

BBOX = (0.1, 52.0, 0.3, 52.1)


@pytest.fixture(scope="module")
def v2_store(tmp_path_factory):
    """A small v2-like store: full depth beside the 4- and 16-band prefixes, two years."""
    from tessera_explore.testing import make_store

    d = tmp_path_factory.mktemp("depth")
    return make_store(d / "v2.zarr", tiles=[(0.15, 52.05), (0.25, 52.05)], years=[2023, 2024], depths=(4, 16),
                      shape=(64, 48), seed=1, version="v2")


@pytest.fixture(scope="module")
def full24(v2_store):
    import tessera_explore as te

    return te.open_embeddings(v2_store, bbox=BBOX, year=2024)


@pytest.fixture(scope="module")
def truth(full24):
    """lon, lat and the true class name of every pixel of the store's area (seed 1)."""
    from pyproj import Transformer

    from tessera_explore.testing import CLASSES, scene_classes

    tr = Transformer.from_crs(full24.rio.crs, 4326, always_xy=True)
    X, Y = np.meshgrid(full24.x.values, full24.y.values)
    lon, lat = tr.transform(X, Y)
    return lon, lat, np.asarray(CLASSES)[scene_classes(lon, lat, 2024, seed=1)]


def points_of(truth, name, n, seed=0):
    lon, lat, cls = truth
    idx = np.flatnonzero(cls.ravel() == name)
    pick = np.random.default_rng(seed).choice(idx, n, replace=False)
    return [(float(lon.ravel()[i]), float(lat.ravel()[i])) for i in pick]


def label(app, truth, per_class, seed=0):
    for cls in ("forest", "cereal"):
        app.state.active_class = cls
        for q in points_of(truth, cls, per_class, seed=seed):
            assert "labelled" in app.click(*q)


@pytest.fixture
def gate(monkeypatch):
    """Holds the read of full depth until set (the prefix's own reads go through)."""
    from tessera_explore.widgets import depth

    gate = threading.Event()
    real = depth.FullDepth.open

    def held(self, like):
        assert gate.wait(120), "the gate was never opened"
        return real(self, like)

    monkeypatch.setattr(depth.FullDepth, "open", held)
    yield gate
    gate.set()


def _explore(store, tmp_path, **kw):
    import tessera_explore as te

    kw.setdefault("scatter", False)
    return te.explore(store, bbox=BBOX, year=2024, labels=tmp_path / "labels.geojson", basemap=False,
                      classes=["forest", "cereal"], **kw)


def test_depth_16_first_then_full_depth_in_every_layer(v2_store, full24, truth, tmp_path, gate):
    from tessera_explore.classify import fit_classifier, predict_map, prepare, similarity

    app = _explore(v2_store, tmp_path, scatter=True)
    try:
        ctl, st = app.controller, app.state
        # the prefix is shown and clickable before full depth is read
        assert st.depth == 16 and ctl.arrays[2024].sizes["band"] == 16 and ctl.arrays[2023].sizes["band"] == 16
        assert st.depth_status.startswith("depth 16 of 128 (loading full depth")
        assert app.panel.depth.value == html.escape(st.depth_status)
        colour16 = app.map_view.layers["false_colour"].url
        xy16 = app.scatter.xy.copy()
        st.mode = "similarity"
        app.click(*points_of(truth, "forest", 1, seed=5)[0])
        st.mode = "label"
        label(app, truth, 3)
        app.wait(full_depth=False)
        assert "trained on 6 labels" in st.status and st.error == ""
        assert ctl.classifier.samples_.X.shape[1] == 16  # trained on the array shown
        assert ctl.prediction is not None and ctl.similarity_map is not None
        assert not ctl.depth.future.done() and st.depth == 16

        gate.set()
        app.wait()
        assert st.error == ""
        # every layer is at full depth now
        assert st.depth == 128 and all(a.sizes["band"] == 128 for a in ctl.arrays.values())
        assert ctl.prepared[2024].codes.shape[1] == 128
        assert ctl.classifier.samples_.X.shape[1] == 128
        assert app.map_view.layers["false_colour"].url != colour16
        assert not np.array_equal(app.scatter.xy, xy16)  # the scatter shows the full-depth PCA
        full = prepare(full24)
        clf = fit_classifier(full, app.labels, model="knn", max_per_label=200)
        assert np.array_equal(app.class_map.values, predict_map(full, clf)["class"].values)
        np.testing.assert_allclose(ctl.similarity_map.values, similarity(full, ctl.similarity_query).values,
                                   rtol=1e-5, equal_nan=True)
        # the panel says so, with what the prefix costs on this area
        s = st.depth_status
        assert s.startswith("depth 128 (full). 16 bands against 128: top-100 similarity overlap "), s
        assert "at the last query" in s and "class map agreement" in s and "(the same 6 labels, " in s
        assert app.panel.depth.value == html.escape(s)
        cost = ctl.depth.cost
        assert 0 <= cost["overlap"] <= 1 and 0 <= cost["agreement"] <= 1 and cost["n_queries"] == 9
        # labelling goes on at full depth
        label(app, truth, 1, seed=7)
        app.wait()
        assert "trained on 8 labels" in st.status and ctl.classifier.samples_.X.shape[1] == 128
        assert "(the same 8 labels, " in st.depth_status and st.error == ""
    finally:
        app.close()


def test_the_class_maps_are_compared_after_each_retrain(v2_store, truth, tmp_path):
    app = _explore(v2_store, tmp_path)
    try:
        app.wait()
        st = app.state
        waiting = "class map agreement: measured once two classes are labelled"
        assert st.depth == 128 and st.error == ""
        assert waiting in st.depth_status
        assert "top-100 similarity overlap" in st.depth_status and "at the last query" not in st.depth_status
        overlap = app.controller.depth.cost["overlap"]
        label(app, truth, 2)
        app.wait()
        assert "class map agreement" in st.depth_status and "(the same 4 labels, " in st.depth_status
        label(app, truth, 1, seed=3)
        app.wait()
        assert "(the same 6 labels, " in st.depth_status, st.depth_status
        assert app.controller.depth.cost["overlap"] == overlap  # measured once
        app.clear()  # no classifier: nothing to compare
        app.wait()
        assert waiting in st.depth_status and st.error == ""
    finally:
        app.close()


def test_a_failed_full_depth_read_is_shown_and_the_prefix_stays(v2_store, truth, tmp_path, monkeypatch):
    from tessera_explore.exceptions import StoreError
    from tessera_explore.widgets import depth

    def broken(self, like):
        raise StoreError("the bucket went away")

    monkeypatch.setattr(depth.FullDepth, "open", broken)
    app = _explore(v2_store, tmp_path)
    try:
        app.wait()
        st = app.state
        assert st.error == "loading full depth failed: StoreError: the bucket went away"
        assert st.depth == 16 and "could not be loaded" in st.depth_status
        label(app, truth, 2)
        app.wait()
        assert "trained on 4 labels" in st.status and app.controller.classifier.samples_.X.shape[1] == 16
    finally:
        app.close()


def test_arrays_and_depth_first_off_are_explored_as_they_are(v2_store, area24, tmp_path):
    import tessera_explore as te

    for i, (source, kw, bands) in enumerate(((area24, {}, 128),
                              (te.open_embeddings(v2_store, bbox=BBOX, year=2024, depth=16), {}, 16),
                              (v2_store, {"bbox": BBOX, "year": 2024, "depth_first": False}, 128))):
        app = te.explore(source, labels=tmp_path / f"l{i}.geojson", basemap=False, scatter=False, **kw)
        try:
            app.wait()
            ctl = app.controller
            assert ctl.depth.future is None and not ctl.depth.active  # no upgrade
            assert app.state.depth == bands and app.state.depth_status == "" and app.panel.depth.value == ""
            assert all(a.sizes["band"] == bands for a in ctl.arrays.values())
        finally:
            app.close()


def test_a_umap_fit_of_the_prefix_is_dropped_after_a_reset(area24, tmp_path):
    import tessera_explore as te

    app = te.explore(area24, labels=tmp_path / "l.geojson", basemap=False, scatter=False, years=[])
    try:
        app.wait()
        sw = app.controller.umap
        comps = app.controller.components[2024]
        gen = sw._generation
        sw.reset()
        assert sw._ready(2024, comps, 0.0, gen) is comps
        assert sw.components == {} and sw.fitted is None  # the old fit is not shown
        sw._ready(2024, comps, 0.0, sw._generation)
        assert sw.components[2024] is comps
    finally:
        app.close()
