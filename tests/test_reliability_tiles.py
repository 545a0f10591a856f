"""Tiles are placed where they belong or refused; .npy files are read safely; versions
never mix silently."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import rasterio
from affine import Affine

import tessera_explore as te
from tessera_explore import exceptions as ex
from tessera_explore.io import grid
from tessera_explore.io import tiles as T

BBOX = (0.1, 52.0, 0.2, 52.1)


@pytest.fixture
def two_tiles(tmp_path):
    recs = te.testing.make_tiles(tmp_path / "d", tiles=[(0.15, 52.05), (0.25, 52.05)], years=[2024],
                                 shape=(48, 32), seed=2)
    return tmp_path / "d", recs


def _rewrite_landmask(path, *, crs=None, transform=None):
    with rasterio.open(path) as src:
        data, profile = src.read(), src.profile
    profile.update(**({"crs": crs} if crs is not None else {}), **({"transform": transform} if transform else {}))
    os.remove(path)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def _open(folder):
    return te.open_embeddings(folder, bbox=BBOX, year=2024)


def test_the_landmask_of_a_neighbour_is_refused_not_shifted(two_tiles):
    d, _ = two_tiles
    a = grid.tile_paths(d, 0.15, 52.05, 2024)["landmask"]
    shutil.copy(grid.tile_paths(d, 0.25, 52.05, 2024)["landmask"], a)  # same shape, 7 km east
    with pytest.raises(ex.GeoreferenceError, match="km from where it belongs") as err:
        _open(d)
    assert a in str(err.value)


@pytest.mark.parametrize("change, match", [
    (lambda t: {"crs": "EPSG:32632"}, "UTM zone 31N"),  # another zone, same numbers
    (lambda t: {"crs": "EPSG:32731"}, "UTM zone 31N"),  # the southern hemisphere
    (lambda t: {"crs": "EPSG:4326", "transform": Affine(0.0001, 0, 0.1, 0, -0.0001, 52.1)}, "not a projected"),
    (lambda t: {"crs": "EPSG:2227"}, "not metres"),  # US survey feet
    (lambda t: {"transform": Affine(t.a, 0.5, t.c, 0.0, t.e, t.f)}, "not north-up"),
    (lambda t: {"transform": Affine(t.a, 0, t.c, 0, t.e / 2, t.f)}, "square"),
    (lambda t: {"transform": Affine(t.a * 1000, 0, t.c, 0, t.e * 1000, t.f)}, "m pixels"),  # would be 1000x too big
    (lambda t: {"transform": Affine(0.01, 0, t.c, 0, -0.01, t.f)}, "m pixels"),  # a multi-terabyte mosaic
    (lambda t: {"transform": Affine(t.a, 0, t.c + 3000, 0, t.e, t.f)}, "km from where it belongs"),  # 3 km off
])
def test_a_wrong_landmask_is_a_clear_error_naming_the_file(two_tiles, change, match):
    d, recs = two_tiles
    path = grid.tile_paths(d, 0.15, 52.05, 2024)["landmask"]
    kw = change(recs[0]["transform"])
    _rewrite_landmask(path, crs=kw.get("crs"), transform=kw.get("transform"))
    with pytest.raises(ex.GeoreferenceError, match=match) as err:
        _open(d)
    assert path in str(err.value)


def test_small_synthetic_and_full_size_tiles_stay_valid(tmp_path):
    places = [(0.15, 52.05), (-60.05, -33.05), (5.95, 70.05), (179.95, 0.05), (-0.05, -0.05)]
    cases = [(shape, place) for shape in [(8, 6), (20, 30), (48, 32)] for place in places]
    cases.append((None, (0.15, 52.05)))  # full size, 10 m
    for i, (shape, (lon, lat)) in enumerate(cases):
        recs = te.testing.make_tiles(tmp_path / str(i), tiles=[(lon, lat)], years=[2024], shape=shape, seed=1)
        p = recs[0]["paths"]
        t = T.open_npy_tile(p["codes"], landmask_path=p["landmask"], lon=lon, lat=lat)
        assert t.shape == recs[0]["shape"]


def test_a_tile_opened_by_path_is_checked_against_its_name(two_tiles):
    d, _ = two_tiles
    p = grid.tile_paths(d, 0.15, 52.05, 2024)
    shutil.copy(grid.tile_paths(d, 0.25, 52.05, 2024)["landmask"], p["landmask"])
    with pytest.raises(ex.GeoreferenceError, match="grid_0.15_52.05"):
        te.open_embeddings(p["codes"])


def test_check_georeference_alone():
    tr = Affine(10.0, 0, 296_000.0, 0, -10.0, 5_787_000.0)
    with pytest.raises(ex.GeoreferenceError, match="no CRS"):
        T.check_georeference("x.tif", None, tr, (10, 10), None, None)
    T.check_georeference("x.tif", "EPSG:32631", tr, (10, 10), None, None)  # without a name: kind and shape only


def test_an_output_crs_must_be_projected_in_metres():
    assert T.check_output_crs("EPSG:32631").to_epsg() == 32631
    assert T.check_output_crs(3857).to_epsg() == 3857
    for bad, match in (("EPSG:4326", "not a projected"), ("EPSG:2227", "metres"), ("no such crs", "not a CRS")):
        with pytest.raises(ex.ArgumentError, match=match):
            T.check_output_crs(bad)


# --- .npy files ---------------------------------------------------------------------------
def _header(text: bytes) -> bytes:
    pad = b" " * ((64 - (10 + len(text) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text + pad)) + text + pad


@pytest.mark.parametrize("body", [
    _header(b"{'descr': '<i1', 'fortran_order': False, 'shape': (2, \"") + b"\0" * 10,  # TokenError
    _header(b"{'descr': '<i1', 'fortran_order': False, 'shape': (99999999999999999999999, 9), }"),  # Overflow
    _header(b"['descr']"),
    _header(b"{'descr': '|O', 'fortran_order': False, 'shape': (2,), }") + b"\0" * 16,  # pickles
    b"\x93NUMPY\x09\x00garbage",
    b"",
])
def test_a_broken_npy_header_is_a_corrupt_tile_error(two_tiles, body):
    d, _ = two_tiles
    p = grid.tile_paths(d, 0.15, 52.05, 2024)
    with open(p["codes"], "wb") as f:
        f.write(body)
    with pytest.raises(ex.CorruptTileError) as err:
        _open(d)
    assert p["codes"] in str(err.value)


def test_an_npy_longer_than_its_header_says_is_refused(two_tiles):
    d, _ = two_tiles
    p = grid.tile_paths(d, 0.15, 52.05, 2024)
    with open(p["codes"], "ab") as f:
        f.write(b"\0" * 4096)  # two downloads stitched together
    with pytest.raises(ex.CorruptTileError, match="more than its header"):
        _open(d)


def test_read_npy_header_reads_fortran_order_too(tmp_path):
    a = np.asfortranarray(np.arange(2 * 3 * 128, dtype=np.int8).reshape(2, 3, 128))
    np.save(tmp_path / "f.npy", a)
    shape, dtype, fortran, _ = T.read_npy_header(str(tmp_path / "f.npy"))
    assert shape == (2, 3, 128) and dtype == np.int8 and fortran


def test_a_file_truncated_while_open_is_an_error_not_a_crash(two_tiles):
    d, _ = two_tiles
    code = textwrap.dedent(f"""
        import os, sys
        import tessera_explore as te
        from tessera_explore.exceptions import CorruptTileError
        da = te.open_embeddings({str(d)!r}, bbox={BBOX!r}, year=2024, chunks=None)
        p = te.io.grid.tile_paths({str(d)!r}, 0.15, 52.05, 2024)["codes"]
        with open(p, "r+b") as f:
            f.truncate(1000)  # someone else's download or cleanup while the kernel reads
        try:
            da.values
        except CorruptTileError as err:
            print("CorruptTileError", err)
            sys.exit(0)
        print("read without error")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])  # -7 would be SIGBUS
    assert r.stdout.startswith("CorruptTileError") and "grid_0.15_52.05.npy" in r.stdout


def test_windows_read_by_file_reads_equal_the_arrays(two_tiles):
    d, recs = two_tiles
    p = recs[0]["paths"]
    t = T.open_npy_tile(p["codes"], landmask_path=p["landmask"], lon=0.15, lat=52.05)
    q = np.load(p["codes"])
    s = np.load(p["scales"])
    for rows, cols in [(slice(0, 48), slice(0, 32)), (slice(5, 17), slice(3, 30)), (slice(47, 48), slice(0, 1)),
                       (slice(10, 10), slice(0, 5))]:
        np.testing.assert_array_equal(t._codes[rows, cols], q[rows, cols])
        np.testing.assert_array_equal(t._scales[rows, cols], s[rows, cols])


# --- versions ------------------------------------------------------------------------------
def test_tiff_tiles_of_another_version_in_a_folder_are_refused(tmp_path):
    recs = te.testing.make_tiles(tmp_path / "d", tiles=[(0.15, 52.05)], years=[2024], shape=(16, 12),
                                 formats=("tiff",), version="v1.1-cam")
    tile = T.open_tiff_tile(recs[0]["paths"]["tiff"], year=2024)
    with pytest.raises(ex.VersionMismatchError, match="v1.1-cam") as err:
        T.check_tile_versions([tile], expected="v1", source=str(tmp_path / "d"))
    assert recs[0]["paths"]["tiff"] in str(err.value)
    T.check_tile_versions([tile], expected="v1.1-cam", source="d")
    T.check_tile_versions([tile], expected=None, source="d")


def test_a_dataset_version_argument_never_hides_a_mismatch():
    assert T.resolve_dataset_version({"a": "v1", "b": None}) == "v1"
    assert T.resolve_dataset_version({"a": None}, "v1.1-cam") == "v1.1-cam"
    assert T.resolve_dataset_version({"a": None}) == "v1"
    with pytest.raises(ex.VersionMismatchError, match="different dataset versions"):
        T.resolve_dataset_version({"a": "v1", "b": "v1.1-cam"}, "v1")
    with pytest.raises(ex.VersionMismatchError, match="dataset_version='v1'"):
        T.resolve_dataset_version({"a": "v1.1-cam"}, "v1")


def test_make_tiles_argument_errors_are_ours(tmp_path):
    with pytest.raises(ex.ArgumentError, match="formats"):
        te.testing.make_tiles(tmp_path, tiles=[(0.15, 52.05)], years=[2024], shape=(4, 4), formats=["zarr"])
    with pytest.raises(ex.ArgumentError, match="at least one tile"):
        te.testing.make_tiles(tmp_path, tiles=[], years=[2024])
