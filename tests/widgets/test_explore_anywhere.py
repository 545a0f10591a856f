"""Explore anywhere in the widgets (``widgets/follow.py``): an explorer over a 3 x 3-tile
store across the 6 E zone edge, served on 127.0.0.1, follows the map: open by URL, view
A in zone 31 with two classes labelled, a pan to view B in zone 32 whose class map is
``predict_map`` of the same classifier on B opened directly, similarity and trust
following, the label file carrying the vectors, a reopen from the disk cache with the
server stopped, the footprint when zoomed out, and memory bounded over a 20-view walk."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tessera_explore as te
from tessera_explore.io.viewport import ViewLoader
from tessera_explore.testing.server import serve_folder
from tessera_explore.widgets.follow import follows, view_bbox_at

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TILES = [(lon, lat) for lon in (5.85, 5.95, 6.05) for lat in (52.05, 52.15, 52.25)]
YEAR = 2024
FAST = {"backoff": 0.05, "retries": 4, "timeout": 10}
A = (5.85, 52.15)  # zone 31
B = (6.05, 52.15)  # zone 32
ZOOM = 12  # a 300 x 240 px map: about 0.1 x 0.05 deg, one tile of the store (40 px of ~170 m)
SIZE = ("300px", "240px")


@pytest.fixture(scope="module")
def edge_store(tmp_path_factory):
    from tessera_explore.testing.store import make_store

    root = tmp_path_factory.mktemp("edge-explore")
    make_store(root / "e.zarr", tiles=TILES, years=[YEAR], shape=(40, 40), seed=11, depths=(16,), shard=64,
               chunk=16)
    return root


def _open(source, tmp_path, center=A, **kw):
    return te.explore(source, center=center, zoom=ZOOM, labels=tmp_path / "labels.geojson", basemap=False,
                      scatter=False, map_size=SIZE, **kw)


def _pan(app, center, zoom=ZOOM):
    app.map.zoom = zoom
    app.map.center = (center[1], center[0])  # Leaflet order
    app.follower.wait(60)  # the debounce, the load, the swap
    app.wait(60)


def _label_a(app):
    app.add_class("water")
    app.add_class("field")
    w, s, e, n = app.view_bbox
    rng = np.random.default_rng(0)
    for cls in ("water", "field"):
        app.state.active_class = cls
        for _ in range(3):
            lon, lat = A[0] + rng.uniform(-0.03, 0.03), A[1] + rng.uniform(-0.015, 0.015)
            app.click(float(lon), float(lat))
    app.wait(60)


def test_follows_only_stores_without_a_bbox(edge_store):
    assert follows(str(edge_store / "e.zarr")) and follows("v1.1") and follows("https://example.org/x.zarr")
    assert not follows(str(edge_store / "e.zarr"), bbox=(0, 0, 1, 1))
    import xarray as xr

    assert not follows(xr.DataArray(np.zeros((2, 2)))) and not follows({2024: None})
    w, s, e, n = view_bbox_at((5.85, 52.15), 16, (300, 240))
    assert w < 5.85 < e and s < 52.15 < n
    assert 0.004 < e - w < 0.008  # 300 px at zoom 16: 1.2 m/px at 52 N x 300 = ~0.0064 deg


def test_walk_across_the_zone_edge(edge_store, tmp_path):
    with serve_folder(edge_store) as srv:
        url = srv.url + "/e.zarr"
        app = _open(ViewLoader(url, year=YEAR, cache=tmp_path / "cache", http_options=FAST, block=16), tmp_path)
        try:
            app.wait(60)
            assert app.follower is not None and app.state.depth == 128
            wa = app.view_bbox
            assert wa[0] < A[0] < wa[2] and app.area.rio.crs.to_epsg() == 32631
            assert "false_colour" in app.map_view.layers
            _label_a(app)
            clf_a = app.controller.classifier
            assert clf_a is not None and app.controller.class_map is not None
            app.state.mode = "similarity"
            q = (app.labels.labels[0].lon, app.labels.labels[0].lat)  # a pixel with data
            app.click(*q)
            app.wait(60)
            assert app.controller.similarity_map is not None
            app.state.show_trust = True
            app.wait(60)
            # pan to B, in the other zone
            _pan(app, B)
            wb = app.view_bbox
            assert wb[0] < B[0] < wb[2] and app.area.rio.crs.to_epsg() == 32632
            assert app.state.depth == 128
            # the labels left behind carry their vectors, in the file too
            assert all(lab.sample is not None and lab.sample.bands == 128 for lab in app.labels.labels)
            feats = json.loads((tmp_path / "labels.geojson").read_text())["features"]
            assert sum("tessera_explore:sample" in f["properties"] for f in feats) == len(app.labels) >= 4
            # B's class map: the same classifier's predict_map on B opened directly
            clf = app.controller.classifier
            assert clf is not None and clf is not clf_a
            ref = te.open_embeddings(url, bbox=wb, year=YEAR, cache=None, http_options=FAST)
            assert ref.sizes == app.area.sizes
            want = te.predict_map(ref, clf)["class"].values
            got = app.controller.classifying.complete_prediction()["class"].values
            assert np.array_equal(got, want)
            assert (want != 255).any()
            # similarity and trust follow: B's pixels against A's query vector
            sim = app.controller.similarity_map
            assert sim is not None and sim.sizes["y"] == app.area.sizes["y"] and np.isfinite(sim.values).any()
            assert app.controller.similarity_query == q, (app.state.error, app.state.status)
            # back to A: at once from memory, no request
            srv.reset_counters()
            _pan(app, A)
            assert app.view_bbox == wa and srv.requests == 0
        finally:
            app.close()
    # offline: the server is gone; the disk cache shows A and B
    app = _open(ViewLoader(url, year=YEAR, cache=tmp_path / "cache", http_options=FAST, block=16), tmp_path)
    try:
        app.wait(60)
        assert np.isfinite(app.area.values).any()
        _pan(app, B)
        assert app.area.rio.crs.to_epsg() == 32632 and np.isfinite(app.area.values).any()
        assert app.controller.classifier is not None  # trained on the stored vectors alone
    finally:
        app.close()


def test_open_by_url_and_zoomed_out(edge_store, tmp_path):
    with serve_folder(edge_store) as srv:
        url = srv.url + "/e.zarr"
        app = _open(url, tmp_path)
        try:
            app.wait(60)
            assert app.area.attrs["store"] == url and app.follower.footprint is None
            # the swap job's title ("showing the view at depth ...") does not stay once shown
            assert not app.state.status.startswith("showing the view"), app.state.status
            before = app.view_bbox
            _pan(app, A, zoom=4)  # a continent: never loaded
            assert app.view_bbox == before
            assert "zoom in to load embeddings" in app.follower.message
            fp = app.follower.footprint
            assert fp is not None and fp.visible and fp.data["features"]
            _pan(app, A)  # back in: the footprint goes
            assert not fp.visible
        finally:
            app.close()


def test_memory_stays_bounded_over_a_walk(edge_store, tmp_path):
    with serve_folder(edge_store) as srv:
        url = srv.url + "/e.zarr"
        loader = ViewLoader(url, year=YEAR, cache=tmp_path / "cache", http_options=FAST, block=16,
                            cache_bytes=4 << 20)
        app = _open(loader, tmp_path)
        try:
            centres = [(lon + dx, lat) for lon, lat in TILES for dx in (-0.001, 0.001)][:20]
            peak = 0
            for c in centres:
                _pan(app, c)
                peak = max(peak, loader.cache.nbytes)
                assert len(app.follower._views) <= loader.keep_views
            assert peak <= loader.cache.max_bytes
            assert loader.counters.views >= 20
        finally:
            app.close()


def test_map_region_puts_the_class_map_on_the_map(edge_store, tmp_path):
    from tessera_explore.exceptions import ArgumentError
    from tessera_explore.region.from_view import close_local_cluster, local_client
    from tessera_explore.widgets.region_panel import parse_bbox

    assert parse_bbox("") is None and parse_bbox("5.8, 52.1 5.9 52.2") == (5.8, 52.1, 5.9, 52.2)
    with pytest.raises(ArgumentError):
        parse_bbox("5.8, 52.1, east")
    app = _open(str(edge_store / "e.zarr"), tmp_path)
    client = local_client(processes=False)
    try:
        app.wait(60)
        with pytest.raises(ArgumentError, match="two classes"):
            app.region.start()
        _label_a(app)
        job = app.region.start(client=client, out=tmp_path / "region.zarr")
        cls = app.region.wait(120)
        assert job.state == "done" and app.region.bar.value == 1.0 and "done" in app.region.status.value
        assert len(app.region.layers) == 1 and app.region.layers[0] in app.map.layers
        # on the store's own grid (run_region's chunks), the classifier's classes
        assert list(cls.attrs["classes"]) == [str(c) for c in app.controller.classifier.classes_]
        assert (cls.values != 255).any() and set(np.unique(cls.values)) <= {0, 1, 255}
    finally:
        app.close()
        close_local_cluster()


def test_a_narrower_map_in_the_page_keeps_the_zoom_asked_for(edge_store, tmp_path):
    # the page shows the map narrower than map_size (the panel takes its share): the
    # browser's first bounds must not zoom the map out (an explorer of one area does, to
    # fit its area); the view follows the map at the zoom asked for, at the map's real size
    app = _open(str(edge_store / "e.zarr"), tmp_path)
    try:
        app.wait(60)
        w, s, e, n = view_bbox_at(A, ZOOM, (200, 160))  # smaller than SIZE
        app.map.set_trait("bounds", ((s, w), (n, e)))  # as the browser reports them (read-only here)
        app.follower.wait(60)
        app.wait(60)
        assert app.map.zoom == ZOOM
        assert app.follower.size == (200, 160)
        assert app.view_bbox == (w, s, e, n)
    finally:
        app.close()


def test_a_pan_back_shows_the_kept_class_map_until_a_label_changes(edge_store, tmp_path):
    # A -> B -> A with nothing changed: A's class map comes back as it was (no refit, no
    # prediction); a label added in B makes the way back to A refit, equal to predict_map
    from tessera_explore.widgets.classifying import Classifying
    from tessera_explore.widgets.state import MODELS

    app = _open(str(edge_store / "e.zarr"), tmp_path)
    cl = app.controller.classifying
    predicted = []
    orig = Classifying.predict

    def spy(self, year):
        predicted.append(year)
        return orig(self, year)

    try:
        app.wait(60)
        _label_a(app)
        wa = app.view_bbox
        clf_a = app.controller.classifier
        cls_a = cl.prediction["class"].values.copy()
        img_a = app.map_view.layers["classes"].url if hasattr(app.map_view.layers["classes"], "url") else None
        _pan(app, B)
        assert app.view_bbox != wa and cl.classifier is not clf_a
        fits = cl.fits
        Classifying.predict = spy
        _pan(app, A)
        assert app.view_bbox == wa
        assert cl.fits == fits and predicted == [] and cl.restored == 1
        assert cl.classifier is clf_a
        assert np.array_equal(cl.prediction["class"].values, cls_a)
        if img_a is not None:
            assert app.map_view.layers["classes"].url == img_a
        # the whole map is still the classifier's on A
        ref = te.predict_map(app.area, clf_a)["class"].values
        assert np.array_equal(cl.complete_prediction()["class"].values, ref)
        # a label added in B: the way back to A refits and predicts anew
        _pan(app, B)
        n = len(app.labels)
        app.state.active_class = "water"
        app.click(B[0] + 0.01, B[1])
        app.wait(60)
        assert len(app.labels) == n + 1
        predicted.clear()
        fits, restored = cl.fits, cl.restored
        _pan(app, A)
        assert cl.fits == fits + 1 and predicted and cl.restored == restored
        clf = cl.classifier
        assert clf is not clf_a
        want = te.predict_map(app.area, clf)["class"].values
        assert np.array_equal(cl.complete_prediction()["class"].values, want)
        # a model switched in B: no kept map on the way back either
        _pan(app, B)
        app.state.model = next(m for m in MODELS if m != app.state.model)
        app.wait(60)
        fits, restored = cl.fits, cl.restored
        _pan(app, A)
        assert cl.fits == fits + 1 and cl.restored == restored
    finally:
        Classifying.predict = orig
        app.close()


def test_a_pan_back_to_a_kept_class_map_prepares_and_warps_nothing(edge_store, tmp_path):
    # A is shown before any label, so its prepared area is made by the first refit, after
    # the swap: the way back to A reuses it (no second prepare of the whole view), and the
    # kept map's key needs no warp of the shown pixels (the session's cache of them went
    # with the swap); the class map shown is A's
    from tessera_explore.widgets import classifying as classifying_module
    from tessera_explore.widgets import reproject

    app = _open(str(edge_store / "e.zarr"), tmp_path)
    cl = app.controller.classifying
    s = app.controller.session
    prepared, warped = [], []
    orig_area, orig_shown = classifying_module.Session.area, reproject.shown_pixels

    def spy_area(self, year):
        if self.prepared.get(int(year)) is None:
            prepared.append(year)
        return orig_area(self, year)

    def spy_shown(*a, **kw):
        warped.append(1)
        return orig_shown(*a, **kw)

    try:
        app.wait(60)
        assert s.prepared.get(YEAR) is None  # nothing trained yet: A is not prepared
        _label_a(app)
        prep_a, cls_a = s.prepared[YEAR], cl.prediction["class"].values.copy()
        shown_a = s.shown_pixels(YEAR)
        _pan(app, B)
        assert s.prepared[YEAR] is not prep_a
        classifying_module.Session.area, reproject.shown_pixels = spy_area, spy_shown
        try:
            _pan(app, A)
        finally:
            classifying_module.Session.area, reproject.shown_pixels = orig_area, orig_shown
        assert cl.restored == 1
        assert prepared == [] and s.prepared[YEAR] is prep_a
        assert warped == []
        assert np.array_equal(cl.prediction["class"].values, cls_a)
        # the shown pixels, once warped, are those the kept map was predicted on
        shown = s.shown_pixels(YEAR)
        assert (shown is None) == (shown_a is None) and (shown is None or np.array_equal(shown, shown_a))
    finally:
        classifying_module.Session.area, reproject.shown_pixels = orig_area, orig_shown
        app.close()
