"""open_embeddings on geotessera-layout folders, single files and GeoTIFF exports."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import rasterio
from pyproj import Transformer

import tessera_explore as te
from tessera_explore import exceptions as ex
from tessera_explore.io import grid
from tessera_explore.io.open import iter_blocks


def _hand_tile(rec):
    """Dequantise one tile by hand: (values (H, W, 128) with NaN, transform, crs)."""
    p = rec["paths"]
    q = np.load(p["codes"])
    s = np.load(p["scales"])
    with rasterio.open(p["landmask"]) as lm:
        land = lm.read(1) != 0
        tr, crs = lm.transform, lm.crs
    v = q.astype(np.float32) * s[..., None]
    v[(s == 0) | ~np.isfinite(s) | ~land] = np.nan
    return v, tr, crs


# -- grid maths ------------------------------------------------------------------------------
def test_tile_names_and_centres():
    assert grid.tile_center(0.17, 52.23) == (0.15, 52.25)
    assert grid.tile_center(-0.01, -0.01) == (-0.05, -0.05)
    assert grid.tile_name(0.15, 52.05) == "grid_0.15_52.05"
    assert grid.tiles_in_bbox((0.1, 52.0, 0.2, 52.1)) == [(0.15, 52.05)]
    assert len(grid.tiles_in_bbox((0.1, 52.0, 0.3, 52.2))) == 4
    assert grid.utm_epsg(5.99, 52) == 32631 and grid.utm_epsg(6.01, 52) == 32632
    assert grid.utm_epsg(-70, -33) == 32719
    with pytest.raises(ValueError, match="west < east"):
        grid.normalize_bbox((0.2, 52.0, 0.1, 52.1))
    with pytest.raises(ValueError, match="lon before lat"):
        grid.normalize_bbox((52.0, 100.0, 52.1, 100.2))


# -- make_tiles --------------------------------------------------------------------------------
def test_make_tiles_layout(small_tiles):
    d, recs = small_tiles
    assert len(recs) == 4
    for r in recs:
        p = r["paths"]
        q, s = np.load(p["codes"]), np.load(p["scales"])
        assert q.dtype == np.int8 and q.shape == (64, 48, 128)
        assert s.dtype == np.float32 and s.shape == (64, 48)
        assert os.path.exists(p["landmask"])
        assert f"global_0.1_degree_representation/{r['year']}/grid_" in p["codes"].replace(os.sep, "/")
    meta = json.load(open(os.path.join(d, "tessera_metadata.json")))
    assert meta["dataset_version"] == "v1" and meta["years"] == [2023, 2024]


def test_full_size_tile_is_realistic(tmp_path):
    recs = te.testing.make_tiles(tmp_path, tiles=[(0.15, 53.05)], years=[2024], seed=0)
    h, w = recs[0]["shape"]
    # about 1,113 rows plus a margin that grows away from the zone's central meridian
    assert 1110 <= h <= 1145 and 660 <= w <= 740
    assert recs[0]["epsg"] == 32631 and recs[0]["transform"].a == 10
    v, _, _ = _hand_tile(recs[0])
    flat = v.reshape(-1, 128)
    ok = ~np.isnan(flat[:, 0])
    assert 0.5 < ok.mean() < 1.0  # some water, mostly land
    # spatially coherent: neighbouring pixels are far more alike than random pairs
    near = np.nanmean(np.linalg.norm(v[:, 1:] - v[:, :-1], axis=-1))
    rng = np.random.default_rng(0)
    a, b = rng.choice(np.flatnonzero(ok), (2, 2000))
    far = np.mean(np.linalg.norm(flat[a] - flat[b], axis=-1))
    assert near < 0.5 * far


def test_scene_classes_are_separable_and_change_between_years():
    from tessera_explore.testing import CLASSES, scene_classes, scene_embeddings

    rng = np.random.default_rng(1)
    lon, lat = rng.uniform(0.0, 0.3, 4000), rng.uniform(52.0, 52.3, 4000)
    e, cls = scene_embeddings(lon, lat, 2024, seed=5)
    assert set(np.unique(cls)) >= {0, 2, 3, 4, 5, 6}, [CLASSES[c] for c in np.unique(cls)]
    assert np.isnan(e[cls == 0]).all() and not np.isnan(e[cls != 0]).any()
    c23 = scene_classes(lon, lat, 2023, seed=5)
    assert 0.05 < np.mean(c23 != cls) < 0.6  # crop rotation and towns growing
    # nearest-centroid on the true classes is good but not perfect
    land = cls != 0
    cents = {k: e[land & (cls == k)].mean(0) for k in np.unique(cls[land])}
    keys = list(cents)
    d = np.stack([np.linalg.norm(e[land] - cents[k], axis=1) for k in keys], 1)
    acc = np.mean(np.array(keys)[d.argmin(1)] == cls[land])
    assert 0.7 < acc <= 1.0


# -- open_embeddings ----------------------------------------------------------------------------
def test_open_matches_hand_dequantisation(small_tiles):
    d, recs = small_tiles
    da = te.open_embeddings(d, bbox=(0.10, 52.00, 0.30, 52.10), year=2024)
    te.validate(da)
    assert da.dims == ("band", "y", "x") and da.sizes["band"] == 128 and da.dtype == np.float32
    assert da.attrs["dataset_version"] == "v1" and da.attrs["dataset_variant"] == "vultr"
    assert int(da.year) == 2024 and da.rio.crs.to_epsg() == 32631
    vals = da.values
    for rec in (r for r in recs if r["year"] == 2024):
        v, tr, crs = _hand_tile(rec)
        # every pixel of the tile's own 0.1 degree cell equals the hand dequantisation
        rr, cc = np.mgrid[0 : v.shape[0], 0 : v.shape[1]]
        x, y = tr @ (cc + 0.5, rr + 0.5)
        lon, lat = Transformer.from_crs(crs, 4326, always_xy=True).transform(x, y)
        own = (np.floor(np.round(lon * 10, 9)) == np.floor(rec["lon"] * 10)) & (
            np.floor(np.round(lat * 10, 9)) == np.floor(rec["lat"] * 10))
        col = np.round((x - da.x.values[0]) / tr.a).astype(int)
        row = np.round((da.y.values[0] - y) / tr.a).astype(int)
        inside = own & (row >= 0) & (row < da.sizes["y"]) & (col >= 0) & (col < da.sizes["x"])
        got = vals[:, row[inside], col[inside]].T
        np.testing.assert_array_equal(got, v[inside])


def test_mosaic_has_no_seam_in_overlap(small_tiles):
    """Tiles overlap in their margins; the mosaic equals either tile there (same scene)."""
    d, recs = small_tiles
    r0, r1 = [r for r in recs if r["year"] == 2024]
    v0, tr0, _ = _hand_tile(r0)
    v1, tr1, _ = _hand_tile(r1)
    # pixels that both tiles hold
    dc = int(round((tr1.c - tr0.c) / tr0.a))
    dr = int(round((tr1.f - tr0.f) / tr0.e))
    assert 0 < dc < v0.shape[1]
    a = v0[max(0, dr):, dc:]
    b = v1[max(0, -dr): max(0, -dr) + a.shape[0], : a.shape[1]]
    a = a[: b.shape[0]]
    np.testing.assert_array_equal(a, b)
    # and the mosaic holds those values there: no seam
    da = te.open_embeddings(d, bbox=(0.10, 52.00, 0.30, 52.10), year=2024, chunks=None)
    oc = int(round((float(da.x[0]) - tr0.a / 2 - tr0.c) / tr0.a))
    orow = int(round((float(da.y[0]) - tr0.e / 2 - tr0.f) / tr0.e))
    r0_, c0_ = max(0, dr) - orow, dc - oc  # the overlap's first pixel in the mosaic
    rr = slice(max(0, r0_), min(da.sizes["y"], r0_ + a.shape[0]))
    cc = slice(max(0, c0_), min(da.sizes["x"], c0_ + a.shape[1]))
    assert rr.stop > rr.start and cc.stop > cc.start
    got = np.moveaxis(da.values[:, rr, cc], 0, -1)
    want = a[rr.start - r0_: rr.stop - r0_, cc.start - c0_: cc.stop - c0_]
    np.testing.assert_array_equal(got, want)


def test_nodata_is_nan_never_zero(small_tiles, tmp_path):
    d, recs = small_tiles
    rec = recs[0]
    # copy one tile and punch holes: a zero scale, a NaN scale, and water in the landmask
    dst = tmp_path / "holes"
    shutil.copytree(d, dst)
    p = grid.tile_paths(dst, rec["lon"], rec["lat"], rec["year"])
    s = np.load(p["scales"])
    s[5, 5], s[6, 6] = 0.0, np.nan
    np.save(p["scales"], s)
    with rasterio.open(p["landmask"], "r+") as lm:
        land = lm.read(1)
        land[7, 7] = 0
        lm.write(land, 1)
    da = te.open_embeddings(p["codes"], year=rec["year"])
    v = da.values
    for r, c in ((5, 5), (6, 6), (7, 7)):
        assert np.isnan(v[:, r, c]).all()
    assert not np.any(np.all(v == 0, axis=0))  # no zero vectors anywhere


def test_chunks_none_and_dask_agree_and_iter_blocks_reads_codes(small_tiles):
    d, _ = small_tiles
    kw = dict(bbox=(0.10, 52.00, 0.30, 52.10), year=2023)
    a = te.open_embeddings(d, chunks=None, **kw)
    b = te.open_embeddings(d, chunks=16, **kw)
    assert b.chunks is not None and a.chunks is None
    va = a.values
    np.testing.assert_array_equal(va, b.values)
    np.testing.assert_array_equal(a.isel(x=slice(3, 9), y=5).values, va[:, 5, 3:9])
    # iter_blocks on a window: codes * scales gives the same numbers as the float path
    win = b.isel(y=slice(10, 50), x=slice(7, 70))
    seen = 0
    for rows, cols, q, s in iter_blocks(win, block=16):
        assert q.dtype == np.int8
        f = q.astype(np.float32) * s[..., None]
        np.testing.assert_allclose(np.moveaxis(f, -1, 0), win.values[:, rows, cols], rtol=1e-6)
        seen += q.shape[0] * q.shape[1]
    assert seen == win.sizes["y"] * win.sizes["x"]


def test_lazy_open_reads_no_codes(small_tiles, monkeypatch):
    d, _ = small_tiles
    calls = []
    from tessera_explore.io import mosaic

    orig = mosaic.Mosaic.read_float
    monkeypatch.setattr(mosaic.Mosaic, "read_float", lambda self, *a, **k: calls.append(1) or orig(self, *a, **k))
    da = te.open_embeddings(d, bbox=(0.10, 52.00, 0.30, 52.10), year=2024)
    assert calls == []
    da.isel(x=0, y=0).values
    assert len(calls) == 1


def test_zone_boundary_pair(zone_tiles):
    d, recs = zone_tiles
    assert {r["epsg"] for r in recs} == {32631, 32632}
    da = te.open_embeddings(d, bbox=(5.9, 52.0, 6.1, 52.1), year=2024)
    assert da.rio.crs.to_epsg() == 32632  # zone of the centre (6.0 E)
    v = da.values
    valid = ~np.isnan(v[0])
    assert valid.mean() > 0.6
    # pixels from the zone-31 tile are nearest-neighbour genuine vectors of that tile
    west = next(r for r in recs if r["epsg"] == 32631)
    v31, tr31, crs31 = _hand_tile(west)
    xx, yy = np.meshgrid(da.x.values, da.y.values)
    lon, lat = Transformer.from_crs(da.rio.crs, 4326, always_xy=True).transform(xx, yy)
    sx, sy = Transformer.from_crs(da.rio.crs, crs31, always_xy=True).transform(xx, yy)
    fc, fr = ~tr31 @ (sx, sy)
    pick = (lon < 5.99) & (lon > 5.91) & (lat > 52.01) & (lat < 52.09) & valid
    ri, ci = np.floor(fr[pick]).astype(int), np.floor(fc[pick]).astype(int)
    src = v31[ri, ci]
    has = ~np.isnan(src[:, 0])  # where the owner has no data, a neighbour's margin may fill in
    assert has.mean() > 0.8
    np.testing.assert_array_equal(v[:, pick].T[has], src[has])
    # across the boundary, neighbours stay similar (no seam): compare columns either side of 6 E
    col = np.argmin(np.abs(lon[lon.shape[0] // 2] - 6.0))
    left, right = v[:, :, col - 1], v[:, :, col + 1]
    ok = ~np.isnan(left[0]) & ~np.isnan(right[0])
    across = np.nanmean(np.linalg.norm(left[:, ok] - right[:, ok], axis=0))
    inner = np.nanmean(np.linalg.norm(v[:, :, col - 3][:, ok] - v[:, :, col - 5][:, ok], axis=0))
    assert across < 2.0 * inner
    # bilinear is selectable and differs only slightly
    bl = te.open_embeddings(d, bbox=(5.9, 52.0, 6.1, 52.1), year=2024, resampling="bilinear").values
    assert np.isfinite(bl[:, pick]).all()


def test_explicit_crs(zone_tiles):
    d, _ = zone_tiles
    da = te.open_embeddings(d, bbox=(5.9, 52.0, 6.1, 52.1), year=2024, crs="EPSG:32631")
    assert da.rio.crs.to_epsg() == 32631
    assert np.isfinite(da.values[0]).mean() > 0.6


def test_geotiff_export_source(tmp_path):
    recs = te.testing.make_tiles(tmp_path, tiles=[(0.15, 52.05)], years=[2024], shape=(32, 24), seed=4,
                                 formats=("npy", "tiff"), version="v1.1-cam")
    tif = recs[0]["paths"]["tiff"]
    with rasterio.open(tif) as src:
        assert src.count == 128 and src.tags()["TESSERA_DATASET_VERSION"] == "v1.1-cam"
        assert src.descriptions[0] == "Tessera_Band_0"
    a = te.open_embeddings(tif)
    b = te.open_embeddings(recs[0]["paths"]["codes"])
    assert a.attrs["dataset_version"] == "v1.1-cam" and a.attrs["model_generation"] == "v1.1"
    assert int(a.year) == 2024
    np.testing.assert_allclose(a.values, b.values, rtol=1e-6)
    cropped = te.open_embeddings(recs[0]["paths"]["codes"], bbox=(0.1, 52.0, 0.2, 52.1)).values
    # a folder holding only GeoTIFF exports opens too
    os.remove(recs[0]["paths"]["codes"])
    os.remove(recs[0]["paths"]["scales"])
    c = te.open_embeddings(tmp_path, bbox=(0.1, 52.0, 0.2, 52.1), year=2024)
    np.testing.assert_allclose(c.values, cropped, rtol=1e-6)


def test_per_band_scales(tmp_path):
    recs = te.testing.make_tiles(tmp_path, tiles=[(0.15, 52.05)], years=[2024], shape=(20, 16), per_band_scales=True)
    assert np.load(recs[0]["paths"]["scales"]).shape == (20, 16, 128)
    da = te.open_embeddings(recs[0]["paths"]["codes"])
    q = np.load(recs[0]["paths"]["codes"]).astype(np.float32)
    s = np.load(recs[0]["paths"]["scales"])
    ref = q * s
    ref[s[..., 0] == 0] = np.nan
    np.testing.assert_allclose(np.moveaxis(da.values, 0, -1), ref, rtol=1e-6)


# -- bad input ----------------------------------------------------------------------------------
@pytest.fixture
def tile_copy(small_tiles, tmp_path):
    d, recs = small_tiles
    dst = tmp_path / "copy"
    shutil.copytree(d, dst)
    rec = recs[0]
    return dst, grid.tile_paths(dst, rec["lon"], rec["lat"], rec["year"]), rec


def test_missing_tile(tile_copy):
    d, p, rec = tile_copy
    with pytest.raises(ex.TileNotFoundError, match="grid_0.35_52.05"):
        te.open_embeddings(d, bbox=(0.1, 52.0, 0.4, 52.1), year=rec["year"])
    da = te.open_embeddings(d, bbox=(0.1, 52.0, 0.4, 52.1), year=rec["year"], missing="nan")
    assert np.isnan(da.isel(x=-1).values).all()


def test_truncated_npy(tile_copy):
    d, p, rec = tile_copy
    data = open(p["codes"], "rb").read()
    open(p["codes"], "wb").write(data[: len(data) // 2])
    with pytest.raises(ex.CorruptTileError, match="truncated") as err:
        te.open_embeddings(d, bbox=(0.1, 52.0, 0.2, 52.1), year=rec["year"])
    assert p["codes"] in str(err.value)


def test_corrupt_npy(tile_copy):
    d, p, rec = tile_copy
    open(p["scales"], "wb").write(b"not a numpy file at all")
    with pytest.raises(ex.CorruptTileError, match="_scales.npy"):
        te.open_embeddings(d, bbox=(0.1, 52.0, 0.2, 52.1), year=rec["year"])


def test_codes_and_scales_of_different_shapes(tile_copy):
    d, p, rec = tile_copy
    np.save(p["scales"], np.ones((10, 10), np.float32))
    with pytest.raises(ex.CorruptTileError, match="do not match"):
        te.open_embeddings(d, bbox=(0.1, 52.0, 0.2, 52.1), year=rec["year"])


def test_wrong_dtype_codes(tile_copy):
    d, p, rec = tile_copy
    np.save(p["codes"], np.zeros((64, 48, 128), np.float32))
    with pytest.raises(ex.CorruptTileError, match="int8"):
        te.open_embeddings(d, bbox=(0.1, 52.0, 0.2, 52.1), year=rec["year"])


def test_missing_landmask(tile_copy):
    d, p, rec = tile_copy
    os.remove(p["landmask"])
    with pytest.raises(ex.MissingLandmaskError, match="landmask"):
        te.open_embeddings(d, bbox=(0.1, 52.0, 0.2, 52.1), year=rec["year"])


def test_bbox_outside_any_tile(small_tiles):
    d, _ = small_tiles
    with pytest.raises(ex.NoTilesInAreaError, match="fetch_tiles"):
        te.open_embeddings(d, bbox=(10.0, 40.0, 10.1, 40.1), year=2024)
    with pytest.raises(ValueError, match="bbox"):
        te.open_embeddings(d, year=2024)


def test_wrong_year(small_tiles):
    d, _ = small_tiles
    with pytest.raises(ex.YearNotAvailableError, match=r"\[2023, 2024\]"):
        te.open_embeddings(d, bbox=(0.1, 52.0, 0.2, 52.1), year=2019)
    with pytest.raises(ex.YearNotAvailableError, match="several years"):
        te.open_embeddings(d, bbox=(0.1, 52.0, 0.2, 52.1))


def test_mixing_versions_is_refused(tmp_path):
    a = te.testing.make_tiles(tmp_path / "a", tiles=[(0.15, 52.05)], years=[2024], shape=(16, 12), version="v1")
    b = te.testing.make_tiles(tmp_path / "b", tiles=[(0.25, 52.05)], years=[2024], shape=(16, 12), version="v1.1-cam")
    with pytest.raises(ex.VersionMismatchError, match="v1.1-cam"):
        te.open_embeddings([a[0]["paths"]["codes"], b[0]["paths"]["codes"]])
    # the same version from two folders is fine
    c = te.testing.make_tiles(tmp_path / "c", tiles=[(0.25, 52.05)], years=[2024], shape=(16, 12), version="v1")
    da = te.open_embeddings([a[0]["paths"]["codes"], c[0]["paths"]["codes"]])
    assert da.attrs["n_tiles"] == 2


def test_source_not_found(tmp_path):
    with pytest.raises(ex.TileNotFoundError):
        te.open_embeddings(tmp_path / "nope.npy")
    with pytest.raises(ex.TileNotFoundError, match="geotessera-layout"):
        te.open_embeddings(tmp_path, bbox=(0.1, 52.0, 0.2, 52.1), year=2024)


def test_errors_share_one_root():
    for name in ex.__all__:
        assert issubclass(getattr(ex, name), ex.TesseraExploreError)


def test_schema_validate_rejects_bad_arrays(small_tiles):
    import xarray as xr

    with pytest.raises(ex.SchemaError, match="DataArray"):
        te.validate(np.zeros(3))
    with pytest.raises(ex.SchemaError, match="dims"):
        te.validate(xr.DataArray(np.zeros((2, 2)), dims=("y", "x")))
    d, _ = small_tiles
    da = te.open_embeddings(d, bbox=(0.1, 52.0, 0.2, 52.1), year=2024)
    bad = da.copy()
    bad.attrs = {}
    with pytest.raises(ex.SchemaError, match="attrs missing"):
        te.validate(bad)


def test_strided_and_integer_indexing(small_tiles):
    d, _ = small_tiles
    kw = dict(bbox=(0.10, 52.00, 0.30, 52.10), year=2024)
    full = te.open_embeddings(d, chunks=None, **kw).values
    for chunks in (None, 16):
        da = te.open_embeddings(d, chunks=chunks, **kw)
        np.testing.assert_array_equal(da.isel(x=slice(1, None, 3), y=slice(None, None, 4)).values, full[:, ::4, 1::3])
        np.testing.assert_array_equal(da.isel(band=5, y=7).values, full[5, 7])
        np.testing.assert_array_equal(da.isel(x=-1, y=-2).values, full[:, -2, -1])
        assert da.isel(x=slice(5, 5)).size == 0


def test_opening_and_copying_never_loads_the_codes(small_tiles):
    """A lazy array is copied by xarray/rioxarray (write_crs, .copy()): that must stay lazy."""
    import copy
    import tracemalloc

    d, _ = small_tiles
    te.open_embeddings(d, bbox=(0.10, 52.00, 0.30, 52.10), year=2024, chunks=None)  # imports done
    tracemalloc.start()
    da = te.open_embeddings(d, bbox=(0.10, 52.00, 0.30, 52.10), year=2024, chunks=None)
    da2 = copy.deepcopy(da)
    da3 = da.copy(deep=True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    codes_bytes = 2 * 64 * 48 * 128
    assert peak < codes_bytes  # nothing of the size of the codes was allocated
    np.testing.assert_array_equal(da2.values, da3.values)


def test_reopen_another_year_on_the_same_grid(small_tiles):
    from tessera_explore.io.open import available_years, reopen

    folder, _ = small_tiles
    da = te.open_embeddings(folder, bbox=(0.12, 52.01, 0.28, 52.09), year=2024)
    assert da.attrs["bbox"] == [0.12, 52.01, 0.28, 52.09]
    assert available_years(da) == [2023, 2024]
    other = reopen(da, 2023)
    assert int(other.year) == 2023 and other.sizes == da.sizes
    np.testing.assert_array_equal(other.x.values, da.x.values)
    np.testing.assert_array_equal(other.y.values, da.y.values)
    assert not np.array_equal(other.isel(band=0).values, da.isel(band=0).values, equal_nan=True)
    with pytest.raises(ex.YearNotAvailableError, match="2019"):
        reopen(da, 2019)


def test_geotessera_metadata_version_is_read(tile_copy):
    folder, _, rec = tile_copy
    meta_path = os.path.join(folder, "tessera_metadata.json")
    with open(meta_path) as f:
        meta = json.load(f)
    meta.update({"dataset_version": "1.0", "dataset_path": "v1"})  # as geotessera writes it
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    lon, lat = rec["lon"], rec["lat"]
    da = te.open_embeddings(folder, bbox=(lon - 0.03, lat - 0.03, lon + 0.03, lat + 0.03), year=rec["year"])
    assert da.attrs["dataset_version"] == "v1" and da.attrs["model_generation"] == "v1.0"
