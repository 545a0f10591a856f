"""fetch_region under faults: windows that start mid-block, partial copies, damaged
files on resume, two writers and a destination that is a file (issue 23, items 1-3
and 17).  Every test works on real files; the concurrent writer is a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

import tessera_explore as te
from tessera_explore.exceptions import NoTilesInAreaError, StoreError, TesseraExploreWarning, YearNotAvailableError
from tessera_explore.io import fetch_region as fr
from tessera_explore.io import store as _store

NORTH4 = [(0.05, 52.15), (0.15, 52.15), (0.05, 52.25), (0.15, 52.25)]
CROSS = [(5.95, 52.15), (6.05, 52.15)]
YEARS = [2023, 2024]
#: windows in zone 31 start 16 px into a 32 px block and cross 64 px shard edges
BBOX_MID = (0.04, 52.13, 0.17, 52.27)
BBOX_CROSS = (5.93, 52.12, 6.07, 52.18)
BBOX_SMALL = (0.06, 52.16, 0.10, 52.20)
BBOX_WIDE = (0.03, 52.11, 0.19, 52.29)
BBOX_ELSEWHERE = (0.16, 52.26, 0.19, 52.29)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A store of small shards and chunks (64 px shards of 16 px chunks), two zones, a
    16-band prefix."""
    from tessera_explore.testing.store import make_store

    root = tmp_path_factory.mktemp("faults")
    return make_store(root / "s.zarr", tiles=NORTH4 + CROSS, years=YEARS, shape=(100, 100), seed=3,
                      version="v1.1", depths=(16,), shard=64, chunk=16)


@pytest.fixture(autouse=True)
def _small_blocks(monkeypatch):
    monkeypatch.setattr(fr, "BLOCK", 32)


def _open(path, bbox, year=2024, **kw):
    _store._SOURCES.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", TesseraExploreWarning)
        return te.open_embeddings(str(path), bbox=bbox, year=year, **kw)


def _assert_same(copy, source, bbox, year=2024, **kw):
    a, b = _open(copy, bbox, year, **kw), _open(source, bbox, year, **kw)
    va, vb = a.values, b.values
    assert np.isfinite(vb).any(), "the source holds no data there: the comparison would prove nothing"
    assert va.shape == vb.shape
    assert np.array_equal(va, vb, equal_nan=True)
    assert np.array_equal(te.data_mask(a).values, te.data_mask(b).values)


def _fetch(bbox, years, dest, source, **kw):
    _store._SOURCES.clear()
    return te.fetch_region(bbox, years, dest=dest, source=source, progress=False, **kw)


def _shards(dest, array="embeddings", zone="utm31"):
    root = os.path.join(dest, zone, array, "c")
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)


# -- 1. the copy holds exactly what open_embeddings reads -----------------------------------
@pytest.mark.parametrize("bbox, kw", [
    (BBOX_MID, {}),
    (BBOX_MID, {"resampling": "bilinear"}),
    (BBOX_CROSS, {}),
    (BBOX_CROSS, {"resampling": "bilinear"}),
    (BBOX_CROSS, {"crs": "EPSG:32632"}),
], ids=["mid-block", "mid-block-bilinear", "cross-zone", "cross-zone-bilinear", "cross-zone-other-crs"])
def test_windows_that_start_mid_block_are_copied_whole(source, tmp_path, bbox, kw):
    src = _store.open_store(source)
    part = src._parts[31][0]
    t = part.transform
    from rasterio.warp import transform_bounds

    x0, _, x1, y1 = transform_bounds("EPSG:4326", "EPSG:32631", *bbox)
    c0, r0 = int((x0 - t.c) // t.a), int((t.f - y1) // t.a)
    assert c0 % fr.BLOCK or r0 % fr.BLOCK  # the area does not start on a block edge
    assert c0 // 64 != int((x1 - t.c) // t.a) // 64  # and it crosses a shard edge
    dest = tmp_path / "copy.zarr"
    _fetch(bbox, YEARS, dest, source)
    for year in YEARS:
        _assert_same(dest, source, bbox, year, **kw)
    # a smaller area inside it is held too
    _assert_same(dest, source, BBOX_SMALL if bbox == BBOX_MID else (5.96, 52.13, 6.04, 52.17), **kw)


def test_blocks_tile_the_window_exactly():
    for win in [(16, 176, 16, 112), (3, 200, 5, 77), (0, 64, 0, 64), (96, 176, 3376, 3456)]:
        cover = np.zeros((win[1], win[3]), int)
        for ra, rb, ca, cb in fr._blocks(win, 64, 16, 32):
            assert ra // 64 == (rb - 1) // 64 and ca // 64 == (cb - 1) // 64  # never across a shard
            cover[ra:rb, ca:cb] += 1
        inside = cover[win[0]:win[1], win[2]:win[3]]
        assert (inside == 1).all() and cover.sum() == inside.size


# -- 2. a copy knows what it holds ------------------------------------------------------------
def test_opening_beyond_the_copy_marks_outside_and_says_what_it_holds(source, tmp_path):
    dest = tmp_path / "copy.zarr"
    _fetch(BBOX_SMALL, [2024], dest, source)
    _store._SOURCES.clear()
    with pytest.warns(TesseraExploreWarning, match=r"holds \(bbox \(0\.06, 52\.16, 0\.1, 52\.2\) years \[2024\]"):
        a = te.open_embeddings(str(dest), bbox=BBOX_WIDE, year=2024)
    b = _open(source, BBOX_WIDE)
    ma, mb = te.data_mask(a).values, te.data_mask(b).values
    va, vb = a.values, b.values
    outside = ma == 3
    assert outside.any() and not (mb == 3).all()
    # never "not computed" (or any other claim) where the source says otherwise
    assert (ma[~outside] == mb[~outside]).all()
    assert np.isnan(va[:, outside]).all()
    assert np.array_equal(va[:, ~outside], vb[:, ~outside], equal_nan=True)
    assert (~outside & (mb == 0)).any()
    # a year never fetched, and an area the copy holds nothing of, are refused
    _store._SOURCES.clear()
    with pytest.raises(YearNotAvailableError, match=r"2023 was never fetched.*holds bbox \(0\.06"):
        te.open_embeddings(str(dest), bbox=BBOX_SMALL, year=2023)
    with pytest.raises(NoTilesInAreaError, match=r"holds nothing of bbox.*holds bbox \(0\.06"):
        te.open_embeddings(str(dest), bbox=BBOX_ELSEWHERE, year=2024)


def test_an_interrupted_extension_opens_with_what_it_holds(source, tmp_path, monkeypatch):
    dest = tmp_path / "copy.zarr"
    _fetch(BBOX_SMALL, [2024], dest, source)
    real = fr._write_json_atomic
    before = len(json.loads((dest / fr.MANIFEST).read_text())["done"])

    def dies(path, obj):
        if len(obj.get("done", [])) >= before + 3:
            raise KeyboardInterrupt
        real(path, obj)

    monkeypatch.setattr(fr, "_write_json_atomic", dies)
    with pytest.raises(KeyboardInterrupt):
        _fetch(BBOX_WIDE, [2024], dest, source)
    monkeypatch.setattr(fr, "_write_json_atomic", real)
    _store._SOURCES.clear()
    with pytest.warns(TesseraExploreWarning, match="interrupted fetch of bbox"):
        a = te.open_embeddings(str(dest), bbox=BBOX_WIDE, year=2024)
    b = _open(source, BBOX_WIDE)
    ma, mb = te.data_mask(a).values, te.data_mask(b).values
    held = ma != 3
    assert (~held).any() and (ma[held] == mb[held]).all()
    assert np.array_equal(a.values[:, held], b.values[:, held], equal_nan=True)
    # resumed, the extension is whole
    _fetch(BBOX_WIDE, [2024], dest, source)
    _assert_same(dest, source, BBOX_WIDE)


def test_a_depth_fetched_on_a_smaller_area_is_not_zero_vectors(source, tmp_path):
    dest = tmp_path / "copy.zarr"
    _fetch(BBOX_WIDE, [2024], dest, source, depths=[16])
    _fetch(BBOX_SMALL, [2024], dest, source)  # full depth on part of it: scales are there everywhere
    _assert_same(dest, source, BBOX_SMALL)
    _assert_same(dest, source, BBOX_WIDE, depth=16)
    _store._SOURCES.clear()
    with pytest.warns(TesseraExploreWarning, match="reaches beyond"):
        a = te.open_embeddings(str(dest), bbox=BBOX_WIDE, year=2024)
    b = _open(source, BBOX_WIDE)
    va, vb = a.values, b.values
    finite = np.isfinite(va).all(axis=0)
    assert np.array_equal(va[:, finite], vb[:, finite])
    assert (te.data_mask(a).values[~finite] != 0).all()


# -- 3. resume verifies what it skips -----------------------------------------------------------
def _damage(kind, path):
    if kind == "deleted":
        os.remove(path)
    elif kind == "truncated":
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    elif kind == "flipped":  # same size, one byte of chunk data changed
        with open(path, "r+b") as f:
            f.seek(40)
            b = f.read(1)
            f.seek(40)
            f.write(bytes([b[0] ^ 0xFF]))


@pytest.mark.parametrize("kind", ["deleted", "truncated", "flipped"])
@pytest.mark.parametrize("array", ["embeddings", "scales"])
def test_resume_refetches_damaged_shards(source, tmp_path, kind, array):
    dest = tmp_path / "copy.zarr"
    _fetch(BBOX_MID, YEARS, dest, source)
    victims = _shards(dest, array)
    assert len(victims) > 4
    for p in victims[1::3]:
        _damage(kind, p)
    if kind != "flipped":
        # opened as it is, a damaged copy is an error naming the file, never a hole
        _store._SOURCES.clear()
        with pytest.raises(StoreError, match=r"(is missing|bytes).*damaged"):
            te.open_embeddings(str(dest), bbox=BBOX_MID, year=2024)
    with pytest.warns(TesseraExploreWarning, match="not what the manifest records"):
        _fetch(BBOX_MID, YEARS, dest, source)
    for year in YEARS:
        _assert_same(dest, source, BBOX_MID, year)
    # and a resume of a sound copy fetches nothing
    mtimes = {p: os.stat(p).st_mtime_ns for p in _shards(dest, array)}
    with warnings.catch_warnings():
        warnings.simplefilter("error", TesseraExploreWarning)
        _fetch(BBOX_MID, YEARS, dest, source)
    assert {p: os.stat(p).st_mtime_ns for p in _shards(dest, array)} == mtimes


def test_resume_rewrites_damaged_coordinates(source, tmp_path):
    dest = tmp_path / "copy.zarr"
    _fetch(BBOX_MID, [2024], dest, source)
    for name in ("x", "stretch_stats_sum"):
        folder = dest / "utm31" / name / "c"
        files = [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs]
        assert files
        _damage("flipped" if name == "x" else "truncated", files[0])
    with pytest.warns(TesseraExploreWarning, match=r"utm31/(x|stretch_stats_sum).*fetching it again"):
        _fetch(BBOX_MID, [2024], dest, source)
    _assert_same(dest, source, BBOX_MID)
    a, b = _open(dest, BBOX_MID), _open(source, BBOX_MID)
    _, pa = te.project(a, from_stats=True)
    _, pb = te.project(b, from_stats=True)
    assert np.allclose(pa.components_, pb.components_)


@pytest.mark.parametrize("meta", ["zarr.json", "utm31/zarr.json", "utm31/embeddings/zarr.json"])
def test_resume_rewrites_damaged_metadata(source, tmp_path, meta):
    dest = tmp_path / "copy.zarr"
    _fetch(BBOX_MID, [2024], dest, source)
    (dest / meta).write_text("{")
    with pytest.warns(TesseraExploreWarning, match=rf"do not parse \(.*{meta}\): written again"):
        _fetch(BBOX_MID, [2024], dest, source)
    _assert_same(dest, source, BBOX_MID)
    assert _open(dest, BBOX_MID).attrs["dataset_variant"] == "dclimate"


def test_a_block_written_but_not_recorded_is_fetched_again(source, tmp_path, monkeypatch):
    """Killed between zarr's write and the manifest's record: the shard's record no longer
    matches, so every block in it is fetched again."""
    dest = tmp_path / "copy.zarr"
    real = fr._write_json_atomic

    def dies(path, obj):
        if len(obj.get("done", [])) >= 3:
            raise KeyboardInterrupt
        real(path, obj)

    monkeypatch.setattr(fr, "_write_json_atomic", dies)
    with pytest.raises(KeyboardInterrupt):
        _fetch(BBOX_MID, [2024], dest, source)
    monkeypatch.setattr(fr, "_write_json_atomic", real)
    # and the shard that block went into is damaged as well
    _damage("truncated", _shards(dest)[0])
    _fetch(BBOX_MID, [2024], dest, source)
    _assert_same(dest, source, BBOX_MID)


# -- 17. one writer per folder; a destination that is a file ----------------------------------
def test_a_destination_that_is_a_file_is_refused(source, tmp_path):
    f = tmp_path / "copy.zarr"
    f.write_text("mine")
    with pytest.raises(StoreError, match=r"dest=.*copy\.zarr is a file"):
        _fetch(BBOX_SMALL, [2024], f, source)
    assert f.read_text() == "mine"
    with pytest.raises(StoreError, match=r"dest=.*copy\.zarr/below: cannot create the folder"):
        _fetch(BBOX_SMALL, [2024], f / "below", source)


def test_a_second_writer_is_refused_and_a_killed_one_leaves_no_lock(source, tmp_path):
    dest = tmp_path / "copy.zarr"
    ready = tmp_path / "ready"
    script = textwrap.dedent(f"""
        import os, time
        from tessera_explore.io import fetch_region as fr
        fr.BLOCK = 32
        real = fr._write_json_atomic
        def hold(path, obj):
            real(path, obj)
            if len(obj.get("done", [])) >= 2:
                open({str(ready)!r}, "w").close()
                while True:
                    time.sleep(0.1)
        fr._write_json_atomic = hold
        fr.fetch_region({BBOX_MID!r}, [2024], dest={str(dest)!r}, source={source!r}, progress=False)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert child.poll() is None, child.stdout.read().decode()
            assert time.monotonic() < deadline, "the first writer never started"
            time.sleep(0.05)
        with pytest.raises(StoreError, match=rf"another fetch_region is writing into .*copy\.zarr \(process {child.pid}\)"):
            _fetch(BBOX_MID, [2024], dest, source)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        child.stdout.close()
    # the kernel released the dead writer's lock: the next call resumes and completes
    _fetch(BBOX_MID, [2024], dest, source)
    _assert_same(dest, source, BBOX_MID)
    assert not (dest / fr.LOCK).exists()


def test_a_second_writer_in_this_process_is_refused(source, tmp_path):
    dest = tmp_path / "copy.zarr"
    dest.mkdir()
    with fr._locked(str(dest)):
        with pytest.raises(StoreError, match="another fetch_region is writing .*in this process"):
            _fetch(BBOX_SMALL, [2024], dest, source)
    _fetch(BBOX_SMALL, [2024], dest, source)
    _assert_same(dest, source, BBOX_SMALL)
