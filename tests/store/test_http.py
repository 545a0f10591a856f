"""Stores over HTTP on 127.0.0.1: same values as the local store, range requests only
(never a whole shard), a disk cache that makes a second read request-free, retries
through 503 periods and dropped connections, clear errors naming the URL."""

from __future__ import annotations

import os

import numpy as np
import pytest

import tessera_explore as te
from tessera_explore.exceptions import StoreError
from tessera_explore.testing.server import serve_folder
from tessera_explore.testing.store import touched_chunk_bytes

from .conftest import BBOX_NORTH, BBOX_SOUTH

FAST = {"backoff": 0.05, "retries": 6, "timeout": 10}  # one retry layer: 6 retries span about 3 s


def test_http_gives_the_local_values_with_ranged_reads_and_a_cache(scene, tmp_path):
    local = te.open_embeddings(scene["store"], bbox=BBOX_NORTH, year=2024).values
    with serve_folder(scene["root"]) as srv:
        url = srv.url + "/s.zarr"
        da = te.open_embeddings(url, bbox=BBOX_NORTH, year=2024, cache=tmp_path / "cache", http_options=FAST)
        opened = list(srv.log)
        assert [p for p, _, _ in opened][0] == "/s.zarr/zarr.json"
        # the consolidated metadata, the zone's time axis and its coordinates (checked against
        # its transform): nothing else
        assert sorted(p.rsplit("/", 3)[-3] if "/c/" in p else p for p, _, _ in opened) == \
            ["/s.zarr/zarr.json", "time", "x", "y"]
        srv.reset_counters()
        values = da.values
        assert np.array_equal(values, local, equal_nan=True)
        from tessera_explore.io.store import open_store

        st = open_store(url, cache=tmp_path / "cache", http_options=FAST)
        zone = 31
        t = st._parts[zone][0].transform
        r0 = round((t.f - float(da.y[0])) / t.a - 0.5)
        c0 = round((float(da.x[0]) - t.c) / t.a - 0.5)
        rows, cols = slice(r0, r0 + da.sizes["y"]), slice(c0, c0 + da.sizes["x"])
        need = sum(touched_chunk_bytes(scene["store"], f"utm{zone:02d}", a, 1, rows, cols) for a in ("embeddings", "scales"))
        assert need > 0 and srv.bytes_sent <= 1.2 * need
        # a second open and read in a fresh session: one check that the store is unchanged
        # (its root metadata), nothing else goes over the network
        from tessera_explore.io import shards, store

        store._SOURCES.clear()
        shards._INDEXES.clear()
        srv.reset_counters()
        again = te.open_embeddings(url, bbox=BBOX_NORTH, year=2024, cache=tmp_path / "cache", http_options=FAST)
        assert np.array_equal(again.values, local, equal_nan=True)
        assert [p for p, _, _ in srv.log] == ["/s.zarr/zarr.json"]
    # offline, the cache alone opens and reads it
    store._SOURCES.clear()
    shards._INDEXES.clear()
    offline = te.open_embeddings(url, bbox=BBOX_NORTH, year=2024, cache=tmp_path / "cache", http_options=FAST)
    assert np.array_equal(offline.values, local, equal_nan=True)


def test_a_small_area_reads_inner_chunks_by_range(scene):
    """A few pixels need one inner chunk: the shard index and that chunk are fetched by
    range, never the whole shard."""
    import zarr

    bbox = (0.1, 52.15, 0.1005, 52.1505)
    with serve_folder(scene["root"]) as srv:
        da = te.open_embeddings(srv.url + "/s.zarr", bbox=bbox, year=2024, cache=None, http_options=FAST)
        srv.reset_counters()
        v = da.values
        chunk_reqs = [(p, rng) for p, rng, _ in srv.log if "/embeddings/c/" in p or "/scales/c/" in p]
        assert chunk_reqs and all(rng.startswith("bytes=") for _, rng in chunk_reqs)
        emb = zarr.open_group(scene["store"], mode="r")["utm31"]["embeddings"]
        shard_bytes = os.path.getsize(os.path.join(scene["store"], "utm31", "embeddings", "c", "1", "0", "0", "0"))
        assert srv.bytes_sent < shard_bytes / 2 and emb.shards[-1] > emb.chunks[-1]
    assert np.array_equal(v, te.open_embeddings(scene["store"], bbox=bbox, year=2024).values, equal_nan=True)


def test_depth_16_fetches_a_fifth_of_the_bytes(scene):
    with serve_folder(scene["root"]) as srv:
        url = srv.url + "/s.zarr"
        full = te.open_embeddings(url, bbox=BBOX_NORTH, year=2024, cache=None, http_options=FAST)
        srv.reset_counters()
        full.values
        full_bytes = srv.bytes_sent
        d16 = te.open_embeddings(url, bbox=BBOX_NORTH, year=2024, depth=16, cache=None, http_options=FAST)
        srv.reset_counters()
        v16 = d16.values
        assert srv.bytes_sent <= full_bytes / 5
        assert np.array_equal(v16, full.values[:16], equal_nan=True)


def test_south_over_http(scene):
    local = te.open_embeddings(scene["store"], bbox=BBOX_SOUTH, year=2023).values
    with serve_folder(scene["root"]) as srv:
        da = te.open_embeddings(srv.url + "/s.zarr", bbox=BBOX_SOUTH, year=2023, cache=None, http_options=FAST)
        assert float(da.y.max()) < 0
        assert np.array_equal(da.values, local, equal_nan=True)


@pytest.mark.parametrize("behaviour", [{"fail_for": 1.0}, {"fail_times": 2}, {"drop_after": 200, "drop_times": 2}],
                         ids=["503-for-a-while", "503-twice-per-file", "dropped-connections"])
def test_misbehaving_server_is_retried(scene, behaviour):
    local = te.open_embeddings(scene["store"], bbox=BBOX_NORTH, year=2024).values
    with serve_folder(scene["root"], **behaviour) as srv:
        da = te.open_embeddings(srv.url + "/s.zarr", bbox=BBOX_NORTH, year=2024, cache=None, http_options=FAST)
        assert np.array_equal(da.values, local, equal_nan=True)
        assert any(status == 503 for _, _, status in srv.log) or "drop_after" in behaviour


def test_dataset_names_map_to_published_paths(scene, tmp_path):
    # the published layout under a base URL: <base>/v1.1-dclimate is the store of "v1.1"
    os.symlink(scene["store"], tmp_path / "v1.1-dclimate")
    with serve_folder(tmp_path) as srv:
        da = te.open_embeddings("v1.1", bbox=BBOX_NORTH, year=2024, base_url=srv.url, cache=None,
                                http_options=FAST)
        assert da.attrs["store"] == srv.url + "/v1.1-dclimate"
        assert (da.attrs["dataset_version"], da.attrs["dataset_variant"]) == ("v1.1", "dclimate")
    from tessera_explore.io.store import PUBLISHED_BASE, dataset_url

    assert dataset_url("v1.1-cambridge") == PUBLISHED_BASE + "/v1.1"
    assert dataset_url("v2") == PUBLISHED_BASE + "/v2-2B-L~beta1"
    assert dataset_url("v1") == PUBLISHED_BASE + "/v1"


def test_unreachable_missing_and_malformed_stores_name_the_url(scene, tmp_path):
    with serve_folder(scene["root"]) as srv:
        base = srv.url
    # nothing listens there any more
    with pytest.raises(StoreError, match=f"{base}/s.zarr"):
        te.open_embeddings(base + "/s.zarr", bbox=BBOX_NORTH, year=2024, cache=None,
                           http_options={"retries": 1, "backoff": 0.01, "timeout": 2})
    with serve_folder(scene["root"]) as srv:
        with pytest.raises(StoreError, match=f"{srv.url}/missing.zarr"):
            te.open_embeddings(srv.url + "/missing.zarr", bbox=BBOX_NORTH, year=2024, cache=None, http_options=FAST)
    (tmp_path / "html.zarr").mkdir()
    (tmp_path / "html.zarr" / "zarr.json").write_text("<html><body>Service temporarily moved</body></html>")
    with serve_folder(tmp_path) as srv:
        with pytest.raises(StoreError, match=f"{srv.url}/html.zarr"):
            te.open_embeddings(srv.url + "/html.zarr", bbox=BBOX_NORTH, year=2024, cache=None, http_options=FAST)


def test_remote_store_pickles_for_workers(scene, tmp_path):
    import pickle

    from tessera_explore.io.http import RemoteStore

    with serve_folder(scene["root"]) as srv:
        st = RemoteStore(srv.url + "/s.zarr", cache_dir=tmp_path, **FAST)
        st2 = pickle.loads(pickle.dumps(st))
        assert st2 == st and st2.cache_path == st.cache_path
        import zarr

        g = zarr.open_group(st2, mode="r", zarr_format=3, use_consolidated=True)
        assert "utm31" in set(g.group_keys())


def test_options_travel_with_the_array(scene, tmp_path, monkeypatch):
    """Another year (reopen) and whole-zone statistics reuse the store as the user opened
    it: no cache written when the cache was turned off, the same time-outs."""
    from tessera_explore.io import store as store_mod
    from tessera_explore.io.open import reopen, store_of

    monkeypatch.setenv("TESSERA_EXPLORE_CACHE", str(tmp_path / "default-cache"))
    opts = {"retries": 1, "timeout": 7.0, "deadline": 9.0}
    with serve_folder(scene["root"]) as srv:
        da = te.open_embeddings(srv.url + "/s.zarr", bbox=BBOX_NORTH, year=2024, cache=None, http_options=opts)
        store_mod._SOURCES.clear()  # whatever the process kept, the array knows its store
        other = reopen(da, 2023)
        other.values
        st = store_of(other)
        assert st.options == {"cache": None, "http_options": opts}
        assert (st.store.timeout, st.store.deadline, st.store.retries, st.store.cache_path) == (7.0, 9.0, 1, None)
        te.project(da, from_stats=True)
    assert not (tmp_path / "default-cache").exists()
