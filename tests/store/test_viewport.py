"""Views that follow a map over a whole store (``io/viewport.py``): a 3 x 3-tile store
across the 6 E zone edge, served on 127.0.0.1; views in both zones equal
``open_embeddings`` of the same bbox; a pan back reads nothing, an overlapping pan reads
only the new blocks; views beyond the budget plan as the footprint; colours from the
store's statistics agree across views and zones; memory stays under the cache's cap over
a 20-view walk; the disk cache alone reloads the views with the server stopped."""

from __future__ import annotations

import numpy as np
import pytest

import tessera_explore as te
from tessera_explore.exceptions import AreaTooLargeError, ArgumentError, StoreError
from tessera_explore.io import shards, store
from tessera_explore.io.viewport import (
    BlockCache,
    ViewLoader,
    coverage_footprint,
    overview_layer,
    resolve_store,
)
from tessera_explore.project.store_colours import StoreColours, false_colour
from tessera_explore.testing.server import serve_folder

TILES = [(lon, lat) for lon in (5.85, 5.95, 6.05) for lat in (52.05, 52.15, 52.25)]
YEAR = 2024
A = (5.82, 52.02, 5.98, 52.18)  # zone 31
A_PAN = (5.86, 52.06, 5.99, 52.22)  # overlaps A, still zone 31
B = (6.01, 52.12, 6.09, 52.28)  # zone 32
FAST = {"backoff": 0.05, "retries": 4, "timeout": 10}
BLOCK = 16  # the store's inner chunk: many blocks per view


@pytest.fixture(scope="module")
def edge_store(tmp_path_factory):
    """Folder holding ``e.zarr``: 3 x 3 tiles of 40 x 40 px across 6 E (zones 31 and 32),
    a depth-16 prefix, 16 px inner chunks in 64 px shards."""
    from tessera_explore.testing.store import make_store

    root = tmp_path_factory.mktemp("edge")
    make_store(root / "e.zarr", tiles=TILES, years=[YEAR], shape=(40, 40), seed=11, depths=(16,), shard=64,
               chunk=16)
    (root / "v1.1-dclimate").symlink_to(root / "e.zarr")  # the published name of v1.1, for base_url=
    return root


@pytest.fixture
def served(edge_store, tmp_path):
    with serve_folder(edge_store) as srv:
        yield srv, srv.url + "/e.zarr", tmp_path / "cache"


def _loader(url, cache, **kw):
    return ViewLoader(url, year=YEAR, cache=cache, http_options=FAST, block=BLOCK, **kw)


def _direct(url, bbox, **kw):
    return te.open_embeddings(url, bbox=bbox, year=YEAR, cache=None, http_options=FAST, **kw)


def test_views_in_both_zones_equal_open_embeddings(served):
    srv, url, cache = served
    loader = _loader(url, cache)
    assert loader.depths == (16, 128)
    a = loader.load(A)
    b = loader.load(B)
    for view, bbox, epsg in ((a, A, 32631), (b, B, 32632)):
        ref = _direct(url, bbox)
        assert view.rio.crs.to_epsg() == epsg == ref.rio.crs.to_epsg()
        assert view.sizes == ref.sizes
        assert np.array_equal(view.x.values, ref.x.values) and np.array_equal(view.y.values, ref.y.values)
        v = view.values
        assert np.isfinite(v).any()
        assert np.array_equal(v, ref.values, equal_nan=True)
        assert view.attrs["store"] == url and view.attrs["dataset_version"] == ref.attrs["dataset_version"]
    # depth 16 first: the prefix array, equal to open_embeddings(depth=16)
    a16 = loader.load(A, depth=16)
    assert a16.sizes["band"] == 16
    assert np.array_equal(a16.values, _direct(url, A, depth=16).values, equal_nan=True)
    # the codes stay int8 behind the view: data_mask and the codes seam work on it
    assert te.data_mask(a).shape == (a.sizes["y"], a.sizes["x"])
    from tessera_explore.io.codes import codes_window

    assert codes_window(a) is not None


def test_a_view_across_the_zone_edge_follows_open_embeddings(served):
    srv, url, cache = served
    edge = (5.94, 52.08, 6.06, 52.22)  # centre at 6 E: zone 32's grid, zone 31 resampled
    view = _loader(url, cache).load(edge)
    ref = _direct(url, edge)
    assert view.rio.crs == ref.rio.crs
    assert np.array_equal(view.values, ref.values, equal_nan=True)


def test_pan_back_reads_nothing_and_overlap_reads_only_new_blocks(served):
    srv, url, cache = served
    loader = _loader(url, cache)
    a = loader.load(A)
    a_vals = a.values
    seen_a = set(loader.last_blocks)
    loader.load(B)
    # back to A: every block in memory, no request at all
    srv.reset_counters()
    read = loader.counters.blocks_read
    back = loader.load(A)
    assert srv.requests == 0
    assert loader.counters.blocks_read == read
    assert np.array_equal(back.values, a_vals, equal_nan=True)
    assert srv.requests == 0
    # an overlapping pan: only the blocks A lacks are read
    srv.reset_counters()
    read = loader.counters.blocks_read
    pan = loader.load(A_PAN)
    new = set(loader.last_blocks) - seen_a
    assert 0 < len(new) < len(loader.last_blocks)
    assert loader.counters.blocks_read - read == len(new)
    assert srv.requests > 0
    assert np.array_equal(pan.values, _direct(url, A_PAN).values, equal_nan=True)


def test_a_view_beyond_the_budget_plans_as_the_footprint(served):
    srv, url, cache = served
    loader = _loader(url, cache, budget=200_000)  # bytes of float32: depth 16 fits A, 128 does not
    p = loader.plan(A)
    assert p.kind == "load" and p.depths == (16,) and "zoom in" in p.message
    assert loader.load(A).sizes["band"] == 16
    with pytest.raises(AreaTooLargeError, match="depth 128"):
        loader.load(A, depth=128)
    srv.reset_counters()
    country = (0.0, 45.0, 12.0, 55.0)
    p = loader.plan(country)
    assert p.kind == "footprint" and p.depths == () and "zoom in to load embeddings" in p.message
    assert srv.requests == 0  # decided from geometry alone
    with pytest.raises(AreaTooLargeError, match="zoom in"):
        loader.load(country)
    far = (100.0, 10.0, 100.1, 10.1)  # no zone of the store
    assert loader.plan(far).kind == "footprint"
    assert "no data here" in loader.plan(far).message


def test_colours_agree_between_overlapping_views_and_zones(served):
    srv, url, cache = served
    loader = _loader(url, cache)
    colours = StoreColours(loader.store, year=YEAR)
    srv.reset_counters()
    proj = colours.projection(128)
    # fitted from the statistics: no embeddings or scales chunk was read
    assert not any("/embeddings" in p or "/scales" in p for p, _, _ in srv.log)
    a, pan = loader.load(A), loader.load(A_PAN)
    ra, rp = colours.rgb(a), colours.rgb(pan)
    xs = np.intersect1d(a.x.values, pan.x.values)
    ys = np.intersect1d(a.y.values, pan.y.values)
    assert len(xs) > 5 and len(ys) > 5
    sa = ra.sel(x=xs, y=ys).values
    sp = rp.sel(x=xs, y=ys).values
    assert (sa[3] == 255).any()
    assert np.array_equal(sa, sp)
    # the stretch is the store's, not the view's: one stretch for both zones
    b = loader.load(B)
    assert colours.projection(128) is proj
    assert np.array_equal(colours.rgb(b).values, false_colour(b, proj).values)
    assert ra.attrs["stretch_low"] == colours.rgb(b).attrs["stretch_low"]
    assert ra.attrs["stretch_low"] == [float(v) for v in proj.stretch_.low_]
    # depth 16 has its own PCA of the 16 leading bands
    assert colours.projection(16).n_features_in_ == 16
    assert colours.rgb(loader.load(A, depth=16)).shape == ra.shape


def test_view_components_from_the_blocks_equal_the_projection(served):
    """The band-major projection from the blocks gives the components (and the colours)
    of ``projection.transform``, in a zone, across the zone edge (resampled pixels) and
    at depth 16; other projections or arrays fall back to it."""
    from tessera_explore.io.codes import codes_window
    from tessera_explore.project.rgb import to_rgb
    from tessera_explore.project.store_colours import view_components

    srv, url, cache = served
    loader = _loader(url, cache)
    colours = StoreColours(loader.store, year=YEAR)
    edge = (5.94, 52.08, 6.06, 52.22)
    for bbox, depth in ((A, 128), (edge, 128), (B, 16)):
        da = loader.load(bbox, depth=depth)
        if bbox == edge:  # some pixels come resampled from the other zone
            m = codes_window(da).source
            assert any(c.src[0] != "slice" for c in m.plan(slice(0, m.shape[0]), slice(0, m.shape[1])))
        proj = colours.projection(depth)
        fast = view_components(da, proj)
        ref = proj.transform(da).values
        assert fast is not None and fast.shape == ref.shape
        assert np.array_equal(np.isnan(fast), np.isnan(ref)) and np.isfinite(ref).any()
        np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-4, equal_nan=True)
        rgb = colours.rgb(da)
        assert rgb.attrs["projection"] == "pca" and rgb.rio.crs == da.rio.crs
        diff = np.abs(rgb.values.astype(int) - to_rgb(proj.transform(da), stretch=proj).values.astype(int))
        assert diff.max() <= 1
    # a float array (no codes), or a subset of bands: no fast path
    assert view_components(da.copy(data=da.values), proj) is None
    assert view_components(_direct(url, A), colours.projection(128)) is None


def test_load_async_and_the_depths_of_one_view_count_once(served):
    srv, url, cache = served
    loader = _loader(url, cache, keep_views=1)
    a16 = loader.load(A, depth=16)
    fut = loader.load_async(A, depth=128)
    a128 = fut.result(timeout=60)
    assert a128.sizes["band"] == 128 and a16.sizes["band"] == 16
    assert np.array_equal(a128.values, _direct(url, A).values, equal_nan=True)
    # one view in memory, with both depths: going back to either reads nothing
    assert list(loader._recent) == [loader.plan(A).bbox]
    srv.reset_counters()
    read = loader.counters.blocks_read
    loader.load(A, depth=16)
    loader.load(A, depth=128)
    assert loader.counters.blocks_read == read and srv.requests == 0
    # a view beyond the budget fails in the future, not in the caller
    with pytest.raises(AreaTooLargeError):
        loader.load_async((0.0, 45.0, 12.0, 55.0)).result(timeout=60)


def test_memory_stays_under_the_cap_over_a_20_view_walk(served):
    srv, url, cache = served
    loader = _loader(url, cache, keep_views=2)
    one = None
    lons = np.linspace(5.84, 6.02, 5)
    lats = np.linspace(52.04, 52.16, 4)
    walk = [(lo, la, lo + 0.08, la + 0.08) for la in lats for lo in lons]
    assert len(walk) == 20
    loader.load(walk[0])
    one = loader.cache.nbytes
    loader.release()
    loader.cache.max_bytes = int(2.5 * one)  # about two and a half views
    for bbox in walk:
        v = loader.load(bbox)
        assert loader.cache.nbytes <= loader.cache.max_bytes
        # what is held belongs to the last two views only
        held = set(loader.cache._data)
        assert held <= set().union(*loader._recent.values())
        assert len(loader._recent) <= 2
    assert loader.cache.peak <= loader.cache.max_bytes
    assert loader.counters.views == 21
    # a view whose blocks were released still reads (again) correctly
    assert np.array_equal(v.values, _direct(url, walk[-1]).values, equal_nan=True)


def test_the_disk_cache_alone_reloads_the_views_offline(edge_store, tmp_path):
    cache = tmp_path / "cache"
    with serve_folder(edge_store) as srv:
        url = srv.url + "/e.zarr"
        loader = _loader(url, cache)
        want = {bbox: loader.load(bbox).values for bbox in (A, B)}
        for d in loader.depths[:1]:
            loader.load(A, depth=d)
            loader.load(B, depth=d)
    store._SOURCES.clear()
    shards._INDEXES.clear()
    offline = _loader(url, cache)
    for bbox, values in want.items():
        assert np.array_equal(offline.load(bbox).values, values, equal_nan=True)
    assert offline.load(A, depth=16).sizes["band"] == 16


def test_resolve_store_takes_names_urls_paths_copies_and_arrays(served, edge_store, tmp_path):
    srv, url, cache = served
    by_url = resolve_store(url, cache=cache)
    assert by_url.url == url
    assert resolve_store(by_url) is by_url
    local = resolve_store(str(edge_store / "e.zarr"))
    assert local.zones == [31, 32]
    named = resolve_store("v1.1", base_url=srv.url, cache=cache, http_options=FAST)
    assert named.url == srv.url + "/v1.1-dclimate" and named.zones == [31, 32]
    da = te.open_embeddings(str(edge_store / "e.zarr"), bbox=A, year=YEAR)
    assert resolve_store(da).url == local.url
    with pytest.raises(StoreError, match="not a Zarr store"):
        resolve_store(str(tmp_path))
    with pytest.raises(ArgumentError):
        resolve_store(42)
    with pytest.raises(ArgumentError, match="unknown options"):
        ViewLoader(url, year=YEAR, colour="red")
    # a fetch_region copy of A: the views it holds load as from the store
    from tessera_explore.io.fetch_region import fetch_region

    copy = fetch_region(A, YEAR, dest=tmp_path / "copy", source=str(edge_store / "e.zarr"), progress=False)
    loader = ViewLoader(copy, year=YEAR, block=BLOCK)
    assert np.array_equal(loader.load(A).values, te.open_embeddings(copy, bbox=A, year=YEAR).values,
                          equal_nan=True)


def test_the_footprint_covers_the_tiles_in_lon_lat(served):
    srv, url, cache = served
    srv.reset_counters()
    fp = coverage_footprint(url, year=YEAR)
    assert not any("/embeddings" in p or "/scales" in p for p, _, _ in srv.log)
    assert fp["type"] == "FeatureCollection"
    assert {f["properties"]["zone"] for f in fp["features"]} == {31, 32}
    rings = [np.asarray(f["geometry"]["coordinates"][0]) for f in fp["features"]]
    assert all(np.array_equal(r[0], r[-1]) for r in rings)
    for lon, lat in TILES:
        assert any(r[:, 0].min() <= lon <= r[:, 0].max() and r[:, 1].min() <= lat <= r[:, 1].max() for r in rings)
    # lon/lat, not metres
    assert all(abs(r[:, 0]).max() <= 180 and abs(r[:, 1]).max() <= 90 for r in rings)
    assert coverage_footprint(url, year=YEAR, bbox=(100, 10, 101, 11))["features"] == []
    assert overview_layer(url) is None


def test_block_cache_evicts_least_recent_within_its_cap():
    c = BlockCache(max_bytes=3000)
    for i in range(5):
        c.put(i, np.zeros(1000, np.uint8))
        assert c.nbytes <= 3000
    assert 0 not in c and 1 not in c and 4 in c
    c.get(2)
    c.put(5, np.zeros(1000, np.uint8))
    assert 2 in c and 3 not in c
    assert c.keep_only([5]) == 2000 and len(c) == 1
