"""Local Zarr stores: the same values as NPY tiles, lazily, chunk-aligned, georeferenced
north and south of the equator, water told from not computed, nested depths, errors."""

from __future__ import annotations

import numpy as np
import pytest
from pyproj import Transformer

import tessera_explore as te
from tessera_explore.exceptions import (
    NoTilesInAreaError,
    StoreError,
    TesseraExploreError,
    YearNotAvailableError,
)
from tessera_explore.io.codes import codes_window, iter_blocks

from .conftest import BBOX_CROSS, BBOX_EQUATOR, BBOX_NORTH, BBOX_SOUTH, SEED


@pytest.mark.parametrize("bbox", [BBOX_NORTH, BBOX_CROSS, BBOX_EQUATOR, BBOX_SOUTH],
                         ids=["north", "across-zones", "across-equator", "south"])
def test_store_gives_the_tiles_values(scene, bbox):
    a = te.open_embeddings(scene["store"], bbox=bbox, year=2024)
    b = te.open_embeddings(scene["tiles"], bbox=bbox, year=2024)
    te.validate(a)
    assert a.shape == b.shape
    assert np.array_equal(a.x.values, b.x.values)
    # the store keeps southern rows on the zone's northern CRS (negative northings)
    shift = 0.0 if b.rio.crs == a.rio.crs else 10_000_000.0
    assert np.allclose(a.y.values + shift, b.y.values)
    va, vb = a.values, b.values
    assert np.isfinite(va).mean() > 0.5
    if bbox is BBOX_CROSS:
        # across zones both layouts take a pixel from the zone (tile) it lies in; where that
        # has water, tiles may fill it from a neighbouring tile's margin, which a store's
        # zone grid does not hold (only cells are computed there).  Everywhere else: equal.
        differ = (~((va == vb) | (np.isnan(va) & np.isnan(vb)))).any(axis=0)
        assert differ.mean() < 0.03
        assert np.isnan(va[:, differ]).all() and np.isin(te.data_mask(a).values[differ], (1, 2)).all()
        va, vb = va[:, ~differ], vb[:, ~differ]
    assert np.array_equal(va, vb, equal_nan=True)
    assert a.attrs["dataset_version"] == "v1.1" and a.attrs["dataset_variant"] == "dclimate"


def test_open_is_lazy_keeps_codes_and_aligns_chunks(scene):
    from tessera_explore.io.store import open_store

    da = te.open_embeddings(scene["store"], bbox=BBOX_CROSS, year=2023, chunks=64)
    import dask.array as dsa

    assert isinstance(da.data, dsa.Array)
    cw = codes_window(da)
    assert cw is not None  # int8 codes stay behind the array
    (_, _, q, s), = list(iter_blocks(da, block=10_000))
    assert q.dtype == np.int8 and s.dtype == np.float32
    # chunk edges fall on the zone grid's 32-pixel inner chunks and never cross a 64-pixel shard
    st = open_store(scene["store"])
    zone = int(str(da.rio.crs.to_epsg())[-2:])
    t = st._parts[zone][0].transform
    r0 = round((t.f - float(da.y[0])) / t.a - 0.5)
    c0 = round((float(da.x[0]) - t.c) / t.a - 0.5)
    def check(da, side):
        for off, sizes in ((r0, da.chunks[1]), (c0, da.chunks[2])):
            edges = off + np.cumsum((0,) + sizes)
            assert all(e % side == 0 for e in edges[1:-1])
            assert max(sizes) <= side
            assert all(a // 64 == (b - 1) // 64 for a, b in zip(edges[:-1], edges[1:]))

    check(da, 64)
    assert len(da.chunks[2]) > 1
    # an odd chunk request is rounded down to a side that divides the shard
    check(te.open_embeddings(scene["store"], bbox=BBOX_CROSS, year=2023, chunks=50), 32)


@pytest.mark.parametrize("lon, lat", [(0.1234, 52.1567), (-58.4567, -34.5432), (30.0512, -0.0231), (30.0488, 0.0377)])
def test_known_coordinates_north_and_south(scene, lon, lat):
    """The pixel at a known lon/lat holds the scene's embedding of that place: the same
    vector as the NPY tile there (georeferenced independently, by its own landmask and
    CRS), and water exactly where the scene has water."""
    from tessera_explore.testing import scene_classes

    bbox = (lon - 0.02, lat - 0.02, lon + 0.02, lat + 0.02)
    a = te.open_embeddings(scene["store"], bbox=bbox, year=2024)
    b = te.open_embeddings(scene["tiles"], bbox=bbox, year=2024)
    assert a.rio.crs.to_epsg() == 32600 + int((lon + 180) // 6) + 1  # the zone's northern CRS
    xa, ya = Transformer.from_crs(4326, a.rio.crs, always_xy=True).transform(lon, lat)
    xb, yb = Transformer.from_crs(4326, b.rio.crs, always_xy=True).transform(lon, lat)
    if lat < 0:
        assert ya < 0  # negative northings south of the equator
    va = a.sel(x=xa, y=ya, method="nearest").values
    vb = b.sel(x=xb, y=yb, method="nearest").values
    assert np.array_equal(va, vb, equal_nan=True)
    px = abs(float(a.x[1] - a.x[0]))
    assert abs(float(a.sel(x=xa, method="nearest").x) - xa) <= px / 2
    water = scene_classes(np.array([lon]), np.array([lat]), 2024, seed=SEED)[0] == 0
    assert np.isnan(va).all() == water


def test_data_mask_tells_water_from_not_computed(scene):
    # east of the Cambridge tiles the zone grid holds no computed pixels (+inf scales)
    bbox = (0.02, 52.12, 0.5, 52.18)
    da = te.open_embeddings(scene["store"], bbox=bbox, year=2024)
    mask = te.data_mask(da)
    counts = np.bincount(mask.values.ravel(), minlength=4)
    assert counts[0] > 0 and counts[1] > 0 and counts[2] > 0
    v = da.values
    assert np.isnan(v[:, mask.values != 0]).all() and np.isfinite(v[:, mask.values == 0]).all()
    # water is where the scene has water; not computed is east of 0.2 E
    lon, lat = Transformer.from_crs(da.rio.crs, 4326, always_xy=True).transform(
        *np.meshgrid(da.x.values, da.y.values))
    assert (lon[mask.values == 2] > 0.19).all()
    from tessera_explore.testing import scene_classes

    cls = scene_classes(lon[mask.values == 1], lat[mask.values == 1], 2024, seed=SEED)
    assert (cls == 0).all()
    # a window of the array gives the same mask
    sub = da.isel(y=slice(3, 20), x=slice(5, 40))
    assert np.array_equal(te.data_mask(sub).values, mask.values[3:20, 5:40])


def test_nested_depths(scene):
    full = te.open_embeddings(scene["store"], bbox=BBOX_NORTH, year=2024)
    for d in (4, 16):
        pre = te.open_embeddings(scene["store"], bbox=BBOX_NORTH, year=2024, depth=d)
        te.validate(pre)
        assert pre.sizes["band"] == d and pre.attrs["depth"] == d
        assert np.array_equal(pre.values, full.values[:d], equal_nan=True)
        assert codes_window(pre) is not None
    with pytest.raises(TesseraExploreError, match="depth must be"):
        te.open_embeddings(scene["store"], bbox=BBOX_NORTH, year=2024, depth=8)
    with pytest.raises(TesseraExploreError, match="needs a Zarr store with nested-depth"):
        te.open_embeddings(scene["tiles"], bbox=BBOX_NORTH, year=2024, depth=16)


def test_depth_refused_where_the_store_has_none(other_variant_store):
    with pytest.raises(StoreError, match="no depth-16 array.*v2 stores"):
        te.open_embeddings(other_variant_store, bbox=BBOX_NORTH, year=2024, depth=16)


def test_verbs_work_on_fewer_bands(scene, tmp_path):
    d16 = te.open_embeddings(scene["store"], bbox=BBOX_NORTH, year=2024, depth=16)
    comps, pca = te.project(d16, random_state=0)
    assert comps.sizes["component"] == 3 and pca.n_features_in_ == 16
    sim = te.similarity(d16, (0.1, 52.15))
    assert sim.shape == (d16.sizes["y"], d16.sizes["x"]) and np.nanmax(sim.values) > 0.99
    store = te.LabelStore(tmp_path / "l.geojson", classes=["a", "b"])
    for i, (x, y) in enumerate(zip(np.linspace(0.03, 0.17, 10), np.linspace(52.13, 52.17, 10))):
        store.add_point(float(x), float(y), "ab"[i % 2])
    clf = te.fit_classifier(d16, store)
    m1 = te.predict_map(d16, clf)
    m2 = te.predict_map(te.prepare(d16), clf)
    assert np.array_equal(m1["class"].values, m2["class"].values)
    assert (m1["class"].values != 255).mean() > 0.5
    # a projection fitted on 16 bands refuses 128
    full = te.open_embeddings(scene["store"], bbox=BBOX_NORTH, year=2024)
    with pytest.raises(TesseraExploreError, match="16 bands"):
        te.project(full, fitted=pca)


def test_years_reopen_and_available_years(scene):
    from tessera_explore.io.open import available_years, reopen

    da = te.open_embeddings(scene["store"], bbox=BBOX_NORTH, year=2024)
    assert available_years(da) == [2023, 2024]
    other = reopen(da, 2023)
    assert int(other.year) == 2023 and other.sizes == da.sizes
    assert not np.array_equal(other.values, da.values, equal_nan=True)
    with pytest.raises(YearNotAvailableError, match="2019"):
        reopen(da, 2019)
    with pytest.raises(YearNotAvailableError, match="pass year="):
        te.open_embeddings(scene["store"], bbox=BBOX_NORTH)


def test_clear_errors(scene, tmp_path):
    with pytest.raises(StoreError, match="Zarr store not found: .*nope.zarr"):
        te.open_embeddings(str(tmp_path / "nope.zarr"), bbox=BBOX_NORTH, year=2024)
    (tmp_path / "broken.zarr").mkdir()
    (tmp_path / "broken.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(StoreError, match="broken.zarr"):
        te.open_embeddings(str(tmp_path / "broken.zarr"), bbox=BBOX_NORTH, year=2024)
    with pytest.raises(NoTilesInAreaError, match="no zone"):
        te.open_embeddings(scene["store"], bbox=(100.0, 10.0, 100.1, 10.1), year=2024)
    with pytest.raises(TesseraExploreError, match="bbox= is needed"):
        te.open_embeddings(scene["store"], year=2024)
    with pytest.raises(StoreError, match="unknown dataset"):
        from tessera_explore.io.store import dataset_url

        dataset_url("v9")
