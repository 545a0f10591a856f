"""A store over HTTP served by a hostile server: nothing silently wrong, nothing unbounded.

Empty and short bodies, a lying Content-Length, a server that hangs, absent shards
(404), gzip-encoded bodies: each ends in the store's own values, or a
:class:`~tessera_explore.exceptions.StoreError` that names the URL, within a stated
deadline, and nothing bad enters the cache.
"""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest

import tessera_explore as te
from tessera_explore.exceptions import StoreError, TesseraExploreError
from tessera_explore.io import shards
from tessera_explore.testing.server import serve_folder

from .conftest import BBOX_NORTH

FAST = {"backoff": 0.02, "retries": 2, "timeout": 5, "deadline": 10}
CHUNKS = r"/utm31/(embeddings|scales)/c/"


@pytest.fixture(autouse=True)
def _fresh_indexes():
    shards._INDEXES.clear()
    yield
    shards._INDEXES.clear()


def _open(url, **kw):
    return te.open_embeddings(url + "/s.zarr", bbox=BBOX_NORTH, year=2024, http_options=FAST, **kw)


@pytest.mark.parametrize("fault", [{"empty_body": True}, {"huge_length": True}, {"gzip": True}],
                         ids=["empty-body", "content-length-1e12", "gzip"])
def test_bad_chunk_answers_are_errors_naming_the_url_and_never_cached(scene, tmp_path, fault):
    cache = tmp_path / "cache"
    with serve_folder(scene["root"], only=CHUNKS, **fault) as srv:
        da = _open(srv.url, cache=cache)  # metadata is served properly
        with pytest.raises(StoreError) as err:
            da.values
        assert srv.url + "/s.zarr/utm31/" in str(err.value)
    # the bad answers never entered the cache: the good server fills it and gives the values
    with serve_folder(scene["root"]) as srv:
        np.testing.assert_array_equal(_open(srv.url, cache=cache).values,
                                      te.open_embeddings(scene["store"], bbox=BBOX_NORTH, year=2024).values)


def test_a_hanging_server_is_given_up_within_the_deadline(scene):
    with serve_folder(scene["root"], only=CHUNKS, hang=60) as srv:
        da = te.open_embeddings(srv.url + "/s.zarr", bbox=BBOX_NORTH, year=2024, cache=None,
                                http_options={"retries": 5, "timeout": 30, "deadline": 1.0, "backoff": 0.01})
        t0 = time.monotonic()
        with pytest.raises(StoreError, match=r"within the 1 s deadline"):
            da.values
        assert time.monotonic() - t0 < 20  # bounded by the deadline, not by retries x timeout


def test_an_absent_shard_over_http_is_not_computed_like_a_local_one(scene, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(scene["root"], root, ignore=shutil.ignore_patterns("tiles"))
    store = root / "s.zarr"
    # remove every embeddings and scales shard of year 2024 (time index 1) in zone 31
    gone = 0
    for arr in ("embeddings", "scales"):
        base = store / "utm31" / arr / "c" / "1"
        if base.exists():
            shutil.rmtree(base)
            gone += 1
    assert gone == 2
    local = te.open_embeddings(str(store), bbox=BBOX_NORTH, year=2024)
    with serve_folder(root) as srv:
        da = _open(srv.url, cache=None)
        values = da.values
        mask = te.data_mask(da).values
        assert any(status == 404 for _, _, status in srv.log)
    assert np.isnan(values).all() and (mask == 2).all()
    np.testing.assert_array_equal(values, local.values)


def test_errors_are_the_packages_own(scene):
    with serve_folder(scene["root"], only=CHUNKS, empty_body=True) as srv:
        with pytest.raises(TesseraExploreError):
            _open(srv.url, cache=None).values
    with pytest.raises(TesseraExploreError, match="127.0.0.1:9"):
        te.open_embeddings("http://127.0.0.1:9/s.zarr", bbox=BBOX_NORTH, year=2024, cache=None,
                           http_options={**FAST, "timeout": 1, "deadline": 2})


def test_a_read_only_cache_does_not_stop_a_read(scene, tmp_path):
    if os.geteuid() == 0:
        cache = tmp_path / "cache-file"
        cache.write_text("not a folder")  # root ignores permissions: a file in the way does the same
    else:
        cache = tmp_path / "ro"
        cache.mkdir()
        cache.chmod(0o500)
    with serve_folder(scene["root"]) as srv, pytest.warns(te.exceptions.TesseraExploreWarning, match="cannot be written"):
        values = _open(srv.url, cache=cache).values
    np.testing.assert_array_equal(values, te.open_embeddings(scene["store"], bbox=BBOX_NORTH, year=2024).values)


def test_a_store_rebuilt_in_place_drops_its_cache_and_says_so(tmp_path):
    from tessera_explore.io import store as store_mod
    from tessera_explore.testing.store import make_store

    from .conftest import NORTH, SHAPE

    path = tmp_path / "root" / "s.zarr"
    make_store(path, tiles=NORTH, years=[2024], shape=SHAPE, seed=1, shard=64, chunk=32)
    cache = tmp_path / "cache"
    with serve_folder(tmp_path / "root") as srv:
        first = _open(srv.url, cache=cache).values
        time.sleep(1.1)  # a new Last-Modified second, as a real rebuild would have
        make_store(path, tiles=NORTH, years=[2024], shape=SHAPE, seed=2, shard=64, chunk=32, overwrite=True)
        store_mod._SOURCES.clear()
        shards._INDEXES.clear()
        with pytest.warns(te.exceptions.TesseraExploreWarning, match=r"changed since it was cached.*cleared"):
            again = _open(srv.url, cache=cache).values
    rebuilt = te.open_embeddings(str(path), bbox=BBOX_NORTH, year=2024).values
    assert not np.array_equal(first, rebuilt, equal_nan=True)
    np.testing.assert_array_equal(again, rebuilt)  # the new store's values, none of the old cache's


@pytest.mark.parametrize("target", ["time", "stretch_stats_sum"])
def test_small_arrays_that_do_not_decode_name_their_url(scene, tmp_path, target):
    """The time axis and the statistics are read through zarr-python: garbage of the
    right length there is a StoreError naming the array, not a codec's ValueError."""
    root = tmp_path / "root"
    shutil.copytree(scene["root"], root, ignore=shutil.ignore_patterns("tiles"))
    chunks = [p for p in (root / "s.zarr" / "utm31" / target).rglob("*") if p.is_file() and p.name != "zarr.json"]
    assert chunks
    for p in chunks:
        p.write_bytes(os.urandom(p.stat().st_size))
    with serve_folder(root) as srv:
        with pytest.raises(StoreError, match=rf"s\.zarr/utm31/{target[:8]}.* does not decode"):
            da = _open(srv.url, cache=None)
            te.project(da, from_stats=True)
