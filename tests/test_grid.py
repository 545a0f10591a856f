"""The one raster-grid type, ``tessera_explore.io.grid.Grid``: coordinates <-> grid round
trips, irregular coordinates refused, the same answers as the formulas it replaced (the
schema's first-step transform, rioxarray's recalculated transform, the loader's and the
live encoder's snapped output grids), and southern-hemisphere grids."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr
from affine import Affine

from tessera_explore import _schema
from tessera_explore.exceptions import ArgumentError, SchemaError, StacError
from tessera_explore.io.grid import Grid, utm_epsg

GRIDS = [
    # Cambridge, UTM 31N, the published 10 m layout
    Grid(32631, Affine(10.0, 0.0, 299_960.0, 0.0, -10.0, 5_778_010.0), (7, 5)),
    # south of the equator in its own zone (327xx, large positive northings)
    Grid(32719, Affine(10.0, 0.0, 345_670.0, 0.0, -10.0, 6_346_680.0), (4, 6)),
    # the stores' southern rows: 326xx with negative northings
    Grid(32637, Affine(10.0, 0.0, 230_000.0, 0.0, -10.0, -1_000.0), (5, 3)),
    # a coarse grid with an origin off the 10 m lattice
    Grid(32630, Affine(20.0, 0.0, 500_003.5, 0.0, -20.0, 6_000_007.25), (3, 8)),
]


def _array(grid: Grid, dtype=np.float64) -> xr.DataArray:
    c = grid.coords()
    da = xr.DataArray(np.zeros((1, grid.height, grid.width), np.float32), dims=("band", "y", "x"),
                      coords={"band": [1], "y": c["y"].astype(dtype), "x": c["x"].astype(dtype)})
    return da.rio.write_crs(grid.crs)


# --- reference copies of the formulas the Grid replaced ---------------------------------

def _old_schema_transform(x, y):  # _schema._transform_from_coords
    rx = float(x[1] - x[0]) if len(x) > 1 else 10.0
    ry = float(y[1] - y[0]) if len(y) > 1 else -10.0
    return Affine(rx, 0.0, float(x[0]) - rx / 2, 0.0, ry, float(y[0]) - ry / 2)


def _old_stac_utm_epsg(lon, lat):  # encoder.stac._utm_epsg
    zone = int(np.floor((lon + 180.0) / 6.0)) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def _old_stac_snap(bounds, r):  # the bbox branch of encoder.stac.area_grid
    x0, y0, x1, y1 = bounds
    x0, y0 = np.floor(x0 / r) * r, np.floor(y0 / r) * r
    x1, y1 = np.ceil(x1 / r) * r, np.ceil(y1 / r) * r
    shape = (int(round((y1 - y0) / r)), int(round((x1 - x0) / r)))
    return Affine(r, 0.0, float(x0), 0.0, -r, float(y1)), shape


def _old_open_snap(bounds, res, ox, oy):  # io.open.output_grid
    x0, y0, x1, y1 = bounds
    left = ox + math.floor(round((x0 - ox) / res, 6)) * res
    right = ox + math.ceil(round((x1 - ox) / res, 6)) * res
    top = oy + math.ceil(round((y1 - oy) / res, 6)) * res
    bottom = oy + math.floor(round((y0 - oy) / res, 6)) * res
    width, height = int(round((right - left) / res)), int(round((top - bottom) / res))
    return Affine(res, 0.0, left, 0.0, -res, top), (height, width)


# --- round trips ---------------------------------------------------------------------------

@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: g.key())
def test_coords_grid_coords_round_trip(grid):
    c = grid.coords()
    assert c["x"].shape == (grid.width,) and c["y"].shape == (grid.height,)
    assert c["x"][0] == grid.transform.c + grid.transform.a / 2
    assert c["y"][0] == grid.transform.f + grid.transform.e / 2
    assert np.all(np.diff(c["y"]) < 0)  # north-up: rows go south

    back = Grid.from_xy(c["x"], c["y"], grid.crs)
    assert back.crs == grid.crs and back.shape == grid.shape
    assert back.transform.almost_equals(grid.transform, precision=1e-6)
    again = back.coords()
    np.testing.assert_allclose(again["x"], c["x"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(again["y"], c["y"], rtol=0, atol=1e-6)

    from_da = Grid.from_coords(_array(grid))
    assert from_da.crs == grid.crs and from_da.shape == grid.shape
    assert from_da.transform.almost_equals(grid.transform, precision=1e-6)


def test_from_coords_reads_a_dataset_and_refuses_an_array_without_crs():
    grid = GRIDS[0]
    ds = _array(grid).to_dataset(name="v")
    assert Grid.from_coords(ds).transform.almost_equals(grid.transform, precision=1e-6)
    bare = xr.DataArray(np.zeros((2, 2)), dims=("y", "x"), coords={"y": [15.0, 5.0], "x": [5.0, 15.0]})
    with pytest.raises(ArgumentError, match="no CRS"):
        Grid.from_coords(bare)
    g = Grid.from_coords(bare, crs=32630)
    assert g == Grid(32630, Affine(10, 0, 0, 0, -10, 20), (2, 2))


def test_float32_coordinates_are_regular_enough():
    # float32 northings near 6,000 km are only good to half a metre: still a grid
    grid = GRIDS[1]
    g = Grid.from_coords(_array(grid, np.float32))
    assert g.shape == grid.shape
    assert abs(g.transform.a - 10) < 0.01 and abs(g.transform.e + 10) < 0.01
    assert abs(g.transform.c - grid.transform.c) < 1 and abs(g.transform.f - grid.transform.f) < 1


# --- irregular coordinates ---------------------------------------------------------------

def test_irregular_coordinates_are_refused_with_a_clear_error():
    x = np.array([5.0, 15.0, 25.0, 45.0])
    y = np.array([25.0, 15.0, 5.0])
    with pytest.raises(ArgumentError, match=r"x coordinates are not evenly spaced \(steps from 10 to 20"):
        Grid.from_xy(x, y, 32630)
    with pytest.raises(ArgumentError, match="y coordinates are not evenly spaced"):
        Grid.from_xy(np.array([5.0, 15.0, 25.0]), np.array([30.0, 25.0, 5.0]), 32630)
    with pytest.raises(ArgumentError, match="all equal"):
        Grid.from_xy(np.array([5.0, 5.0]), y, 32630)
    with pytest.raises(ArgumentError, match="NaN"):
        Grid.from_xy(np.array([5.0, np.nan]), y, 32630)
    with pytest.raises(ArgumentError, match="single coordinate"):
        Grid.from_xy(np.array([5.0]), np.array([5.0]), 32630)


def test_every_former_grid_reader_refuses_irregular_coordinates():
    """The schema, the classifiers' area grid and the live encoder's like= used to make
    three different transforms of the same irregular array; now each refuses it."""
    from tessera_explore.classify.area import grid_of
    from tessera_explore.encoder.stac import area_grid

    grid = GRIDS[0]
    c = grid.coords()
    keep = [0, 1, 2, 4]  # drop one column: the x step jumps from 10 to 20 m
    x = c["x"][keep]
    data = np.zeros((_schema.N_BANDS, grid.height, len(x)), np.float32)
    with pytest.raises(ArgumentError, match="not evenly spaced"):
        _schema.make_embedding_array(data, x=x, y=c["y"], crs=grid.crs, year=2024, dataset_version="v1.1",
                                     source="test")

    regular = _schema.make_embedding_array(np.zeros((_schema.N_BANDS, grid.height, grid.width), np.float32),
                                           x=c["x"], y=c["y"], crs=grid.crs, year=2024, dataset_version="v1.1",
                                           source="test")
    holed = regular.isel(x=keep)
    with pytest.raises(ArgumentError, match="not evenly spaced"):
        grid_of(holed)
    with pytest.raises(StacError, match="not evenly spaced"):
        area_grid(None, like=holed)


# --- agreement with the replaced formulas on regular grids ---------------------------------

@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: g.key())
def test_agrees_with_the_old_schema_and_rioxarray_transforms(grid):
    c = grid.coords()
    new = Grid.from_xy(c["x"], c["y"], grid.crs).transform
    assert new.almost_equals(_old_schema_transform(c["x"], c["y"]), precision=1e-6)
    da = _array(grid)
    assert new.almost_equals(da.rio.transform(recalc=True), precision=1e-6)
    made = _schema.make_embedding_array(np.zeros((_schema.N_BANDS, grid.height, grid.width), np.float32),
                                        x=c["x"], y=c["y"], crs=grid.crs, year=2024, dataset_version="v1.1",
                                        source="test")
    assert made.rio.transform().almost_equals(grid.transform, precision=1e-6)


def test_one_pixel_arrays_keep_the_old_10m_default():
    made = _schema.make_embedding_array(np.zeros((_schema.N_BANDS, 1, 1), np.float32), x=np.array([500_005.0]),
                                        y=np.array([5_000_005.0]), crs="EPSG:32630", year=2024,
                                        dataset_version="v1.1", source="test")
    assert made.rio.transform() == _old_schema_transform([500_005.0], [5_000_005.0])
    # a single row takes its height from the columns' width (square pixels)
    g = Grid.from_xy(np.array([5.0, 25.0, 45.0]), np.array([100.0]), 32630)
    assert g.transform == Affine(20, 0, -5, 0, -20, 110) and g.shape == (1, 3)
    # and from_coords reads a recorded transform where it has one
    one = xr.DataArray(np.zeros((1, 1)), dims=("y", "x"), coords={"y": [100.0], "x": [5.0]}).rio.write_crs(32630)
    one = one.rio.write_transform(Affine(30, 0, -10, 0, -30, 115))
    assert Grid.from_coords(one).transform == Affine(30, 0, -10, 0, -30, 115)


def test_classify_grid_matches_rioxarray_on_a_regular_array():
    from tessera_explore.classify.area import grid_of

    grid = GRIDS[2]
    c = grid.coords()
    da = _schema.make_embedding_array(np.zeros((_schema.N_BANDS, grid.height, grid.width), np.float32),
                                      x=c["x"], y=c["y"], crs=grid.crs, year=2024, dataset_version="v1.1",
                                      source="test")
    g = grid_of(da)
    assert g.transform.almost_equals(da.rio.transform(recalc=True), precision=1e-6)
    assert g.geo == Grid.from_coords(da) and g.shape == grid.shape
    # pixel look-ups: each centre in its own pixel, the outer edges just outside
    rr, cc = np.meshgrid(np.arange(grid.height), np.arange(grid.width), indexing="ij")
    row, col = g.xy_to_rowcol(c["x"][cc], c["y"][rr])
    assert (row == rr).all() and (col == cc).all()
    left, bottom, right, top = grid.bounds
    row, col = g.xy_to_rowcol([left - 1, right + 1], [top + 1, bottom - 1])
    assert not g.inside(row, col).any()


def test_utm_zone_is_one_function():
    import tessera_explore.encoder.stac as stac

    assert not hasattr(stac, "_utm_epsg")
    for lon in np.arange(-180.0, 180.0, 2.5):
        for lat in (-60.0, -0.001, 0.0, 45.0):
            assert utm_epsg(lon, lat) == _old_stac_utm_epsg(lon, lat)
    assert utm_epsg(0.1, 52.0) == 32631 and utm_epsg(-70.0, -33.0) == 32719


@pytest.mark.parametrize("bounds", [
    (299_963.2, 5_777_941.7, 300_012.9, 5_778_001.1),
    (345_671.0, 6_346_640.0, 345_730.0, 6_346_680.0),  # edges on the lattice stay there
    (229_999.99, -1_049.5, 230_031.0, -1_000.0),  # negative northings
])
def test_covering_agrees_with_the_old_snapping(bounds):
    for res in (10.0, 20.0):
        t, shape = _old_stac_snap(bounds, res)
        g = Grid.covering(bounds, 32631, res)
        assert g.transform == t and g.shape == shape
        for ox, oy in ((0.0, 0.0), (3.5, -2.25)):
            t, shape = _old_open_snap(bounds, res, ox, oy)
            g = Grid.covering(bounds, 32631, res, origin=(ox, oy))
            assert g.transform == t and g.shape == shape
            left, bottom, right, top = g.bounds
            assert left <= bounds[0] and bottom <= bounds[1] and right >= bounds[2] and top >= bounds[3]


def test_live_encoder_grid_is_the_same_type():
    from tessera_explore.encoder import stac

    assert stac.Grid is Grid
    g = stac.area_grid((0.195, 52.045, 0.205, 52.055))
    assert isinstance(g, Grid) and g.epsg == 32631 and g.crs == "EPSG:32631"
    # the granule cache key keeps its old spelling
    t = g.transform
    assert g.key() == f"32631_10_-10_{t.c:.2f}_{t.f:.2f}_{g.shape[0]}x{g.shape[1]}"
    assert stac.Grid(32631, t, g.shape) == g  # the old positional constructor


# --- southern hemisphere ---------------------------------------------------------------------

def test_southern_rows_with_negative_northings():
    """The stores keep 326NN south of the equator: northings below zero, still north-up."""
    y = -5.0 - 10.0 * np.arange(6)  # -5, -15, ... -55
    x = 230_005.0 + 10.0 * np.arange(4)
    g = Grid.from_xy(x, y, 32637)
    assert g.transform == Affine(10, 0, 230_000, 0, -10, 0) and g.shape == (6, 4)
    assert g.bounds == (230_000.0, -60.0, 230_040.0, 0.0)
    row, col = g.pixel_of([230_001.0, 230_039.0], [-0.5, -59.5])
    assert row.tolist() == [0, 5] and col.tolist() == [0, 3]
    west, south, east, north = g.lonlat_bounds()
    assert south < 0 and north <= 1e-9 and 36 < west < east < 37
    # the same place in its own southern zone has positive northings near 10,000 km
    s = Grid.covering((230_000.0, 9_999_940.0, 230_040.0, 10_000_000.0), 32737, 10.0)
    lon_w, lat_s, lon_e, lat_n = s.lonlat_bounds()
    assert lat_s < 0 and abs(lat_s - south) < 1e-6 and abs(lon_w - west) < 1e-6


# --- the value type ----------------------------------------------------------------------------

def test_crs_is_normalised_and_grids_are_values():
    from pyproj import CRS as PyprojCRS
    from rasterio.crs import CRS

    t = Affine(10, 0, 0, 0, -10, 100)
    grids = {Grid(32630, t, (10, 10)), Grid("epsg:32630", t, (10, 10)), Grid(CRS.from_epsg(32630), t, (10, 10)),
             Grid(PyprojCRS.from_epsg(32630), t, (10, 10)), Grid(32630, tuple(t)[:6], [10, 10])}
    assert len(grids) == 1
    g = grids.pop()
    assert g.crs == "EPSG:32630" and g.epsg == 32630 and g.n_pixels == 100 and g.resolution == (10.0, 10.0)
    with pytest.raises(AttributeError):
        g.shape = (1, 1)
    with pytest.raises(ArgumentError, match="rotated"):
        Grid(32630, Affine(10, 1, 0, 0, -10, 100), (1, 1))
    with pytest.raises(ArgumentError, match="not a CRS"):
        Grid("not a crs", t, (1, 1))
    custom = Grid("+proj=tmerc +lat_0=0 +lon_0=3.3 +k=1 +x_0=0 +y_0=0 +ellps=WGS84 +units=m", t, (1, 1))
    assert custom.epsg is None and custom.crs.startswith(("PROJCRS", "PROJCS"))
    assert custom.key().startswith("crs") and custom.key() == Grid(custom.crs, t, (1, 1)).key()


def test_window_and_window_of_bounds():
    g = GRIDS[0]
    sub = g.window(slice(2, 5), slice(1, None))
    assert sub.shape == (3, 4) and sub.crs == g.crs
    np.testing.assert_array_equal(sub.coords()["x"], g.coords()["x"][1:])
    np.testing.assert_array_equal(sub.coords()["y"], g.coords()["y"][2:5])
    left, bottom, right, top = sub.bounds
    rows, cols = g.window_of_bounds((left + 1, bottom + 1, right - 1, top - 1))
    assert (rows, cols) == (slice(2, 5), slice(1, 5))
    rows, cols = g.window_of_bounds((0.0, 0.0, 1.0, 1.0))  # far away
    assert rows.stop - rows.start == 0 or cols.stop - cols.start == 0
    with pytest.raises(ArgumentError, match="step"):
        g.window(slice(0, 4, 2), slice(None))


def test_geobox_is_the_same_grid():
    pytest.importorskip("odc.geo")
    g = GRIDS[2]
    gb = g.geobox()
    assert tuple(gb.shape) == g.shape and gb.affine == g.transform and gb.crs.epsg == 32637


def test_schema_validate_still_reads_the_written_grid():
    grid = GRIDS[3]
    c = grid.coords()
    da = _schema.make_embedding_array(np.zeros((_schema.N_BANDS, grid.height, grid.width), np.float32),
                                      x=c["x"], y=c["y"], crs=grid.crs, year=2024, dataset_version="v1.1",
                                      source="test")
    assert _schema.validate(da) is da
    with pytest.raises(SchemaError):
        _schema.validate(da.drop_vars("year"))
