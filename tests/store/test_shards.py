"""The shard-aware window reader (io/shards.py) and the HTTP store's coalesced,
cached range reads (io/http.py): the same values as zarr-python for any window, merged
requests, many in flight at once, a cache that answers any window inside an area read
before, entries checked on read, one retry layer within a stated deadline."""

from __future__ import annotations

import os
import tracemalloc
import warnings

import numpy as np
import pytest
import zarr

import tessera_explore as te
from tessera_explore.exceptions import StoreError, TesseraExploreWarning
from tessera_explore.io import shards
from tessera_explore.io.http import RemoteStore, flush_cache
from tessera_explore.io.shards import ShardLayout, coalesce, window_reader
from tessera_explore.testing.proxy import latency_proxy
from tessera_explore.testing.server import serve_folder

from .conftest import BBOX_NORTH


@pytest.fixture(autouse=True)
def _fresh_indexes():
    shards._INDEXES.clear()
    yield
    shards._INDEXES.clear()


def test_coalesce_merges_small_gaps_up_to_the_size_limit():
    ranges = [(100, 200), (0, 50), (250, 300), (5000, 5100), (5100, 9000)]
    got = coalesce(ranges, gap=60, max_merge=1000)
    assert [(s, e) for s, e, _ in got] == [(0, 300), (5000, 5100), (5100, 9000)]
    assert sorted(i for _, _, idx in got for i in idx) == list(range(5))
    # a range above the limit stays whole and alone
    assert coalesce([(0, 10), (10, 5000)], gap=0, max_merge=100) == [(0, 10, [0]), (10, 5000, [1])]


def _sharded(path, *, compressors=None, index_location="end", write=True, dtype="int8", fill=0, order=None):
    """A (time, band, y, x) array in small shards: 48 px shards of 16 px chunks, with a
    shard never written and an inner chunk left empty."""
    kw = {}
    if order is not None:
        from zarr.codecs import TransposeCodec

        kw["filters"] = [TransposeCodec(order=order)]
    from zarr.codecs import ShardingCodec

    arr = zarr.create_array(path, shape=(2, 5, 130, 150), dtype=dtype, shards=(1, 5, 48, 48), chunks=(1, 5, 16, 16),
                           compressors=compressors if compressors is not None else "auto", fill_value=fill,
                           zarr_format=3, **kw)
    assert isinstance(arr.metadata.codecs[0], ShardingCodec)
    if index_location == "start":
        from zarr.codecs import BytesCodec, Crc32cCodec

        arr = zarr.create_array(path, shape=(2, 5, 130, 150), dtype=dtype, chunks=(1, 5, 48, 48), fill_value=fill,
                               serializer=ShardingCodec(chunk_shape=(1, 5, 16, 16), index_location="start",
                                                        index_codecs=[BytesCodec(), Crc32cCodec()]),
                               compressors=None, zarr_format=3, overwrite=True)
    if write:
        rng = np.random.default_rng(3)
        values = rng.integers(-100, 100, size=arr.shape).astype(dtype)
        arr[:, :, :96, :] = values[:, :, :96, :]  # the last shard row is never written
        arr[0, :, 16:32, 16:32] = fill  # an empty inner chunk
    return arr


WINDOWS = [(slice(0, 1), slice(0, 5), slice(0, 130), slice(0, 150)),  # everything, absent shards too
           (slice(1, 2), slice(0, 5), slice(7, 101), slice(33, 149)),  # mid-chunk starts across shard edges
           (slice(0, 2), slice(1, 4), slice(47, 49), slice(47, 49)),  # four shards, a band subset
           (slice(0, 1), slice(0, 5), slice(100, 130), slice(0, 20))]  # only never-written parts


@pytest.mark.parametrize("codec", ["blosc", "zstd", "gzip", "none", "index-at-start", "transposed", "float"])
def test_reader_gives_zarrs_values_for_any_window(tmp_path, codec):
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

    comp = {"blosc": [BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")], "zstd": [ZstdCodec()],
            "gzip": [GzipCodec()], "none": [], "transposed": [BloscCodec()], "float": [BloscCodec()]}.get(codec)
    arr = _sharded(str(tmp_path / "a.zarr"), compressors=comp, index_location="start" if codec == "index-at-start" else "end",
                   order=(0, 1, 3, 2) if codec == "transposed" else None,
                   dtype="float32" if codec == "float" else "int8", fill=np.inf if codec == "float" else 0)
    reader = window_reader(arr)
    assert reader is not None
    for sel in WINDOWS:
        np.testing.assert_array_equal(reader.read_array(sel), arr[sel])


def test_layout_comes_from_the_metadata_and_unknown_codecs_fall_back(tmp_path):
    arr = _sharded(str(tmp_path / "a.zarr"), write=False)
    lay = ShardLayout.of(arr)
    assert (lay.shard, lay.inner, lay.per_shard) == ((1, 5, 48, 48), (1, 5, 16, 16), (1, 1, 3, 3))
    assert lay.index_nbytes == 9 * 16 + 4
    plain = zarr.create_array(str(tmp_path / "b.zarr"), shape=(10, 10), chunks=(5, 5), dtype="int8", zarr_format=3)
    assert window_reader(plain) is None  # not sharded: zarr reads it
    from zarr.codecs.numcodecs import Delta

    odd = zarr.create_array(str(tmp_path / "c.zarr"), shape=(32, 32), shards=(16, 16), chunks=(8, 8), dtype="int8",
                            filters=[Delta(dtype="int8")], zarr_format=3)
    assert window_reader(odd) is None  # a codec this reader does not decode


def test_a_damaged_chunk_names_the_shard(tmp_path):
    from zarr.codecs import BloscCodec

    arr = _sharded(str(tmp_path / "a.zarr"), compressors=[BloscCodec()])
    shard = tmp_path / "a.zarr" / "c" / "0" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    idx = window_reader(arr).layout.parse_index(bytes(raw[-(9 * 16 + 4):]), "x")
    off, n = (int(v) for v in idx[0, 0, 0, 0])
    raw[off:off + n] = b"\x07" * n  # garbage where the first chunk's bytes were
    shard.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match=r"c/0/0/0/0.*cannot decode"):
        window_reader(arr).read_array((slice(0, 1), slice(0, 5), slice(0, 16), slice(0, 16)))
    raw[-1] ^= 0xFF  # now the index fails its checksum
    shard.write_bytes(bytes(raw))
    shards._INDEXES.clear()
    with pytest.raises(StoreError, match="CRC-32C"):
        window_reader(arr).read_array((slice(0, 1), slice(0, 5), slice(0, 16), slice(0, 16)))


# -- over HTTP ----------------------------------------------------------------------------
def _remote(tmp_path, srv_url, cache=None, **kw):
    store = RemoteStore(srv_url + "/a.zarr", cache_dir=cache, backoff=0.02, **kw)
    return zarr.open_array(store, mode="r", zarr_format=3)


def test_http_reads_merge_ranges_keep_many_in_flight_and_cache_each_chunk(tmp_path):
    from zarr.codecs import BloscCodec

    local = _sharded(str(tmp_path / "a.zarr"), compressors=[BloscCodec()])
    whole = (slice(0, 2), slice(0, 5), slice(0, 130), slice(0, 150))
    with serve_folder(tmp_path) as srv, latency_proxy(srv.url, rtt=0.05) as px:
        arr = _remote(tmp_path, px.url, cache=tmp_path / "cache")
        reader = window_reader(arr)
        srv.reset_counters()
        px.reset_counters()
        np.testing.assert_array_equal(reader.read_array(whole), local[whole])
        chunk_gets = [rng for p, rng, _ in srv.log if "/c/" in p and not rng.startswith("bytes=-")]
        index_gets = [rng for p, rng, _ in srv.log if "/c/" in p and rng.startswith("bytes=-")]
        assert len(index_gets) == 24  # one per shard, written or absent: 2 years x 3 x 4 shards, each read once
        written = 2 * 2 * 4  # shards with data: each one merged request (its chunks are adjacent)
        assert len(chunk_gets) == written
        assert all(r.startswith("bytes=") for r in chunk_gets)
        assert px.peak_in_flight >= 8  # the shards' requests overlap instead of queueing
        # a window inside the area read before: no request at all, even with a cold index cache
        shards._INDEXES.clear()
        fresh = window_reader(_remote(tmp_path, px.url, cache=tmp_path / "cache"))
        srv.reset_counters()
        sub = (slice(1, 2), slice(0, 5), slice(5, 77), slice(40, 120))
        np.testing.assert_array_equal(fresh.read_array(sub), local[sub])
        assert srv.requests == 0
        # zarr-python's own partial-shard reads go through the same cache (Store.get_ranges)
        zarr_arr = _remote(tmp_path, px.url, cache=tmp_path / "cache")
        assert [p for p, _, _ in srv.log] == ["/a.zarr/zarr.json"]  # opening checks the store is unchanged
        srv.reset_counters()
        part = (slice(1, 2), slice(0, 5), slice(5, 30), slice(50, 70))
        np.testing.assert_array_equal(zarr_arr[part], local[part])
        assert srv.requests == 0, srv.log


def _cache_entries(cache):
    return sorted(p for p in cache.rglob("*") if p.is_file())


@pytest.mark.parametrize("damage", ["empty", "flipped", "swapped", "truncated"])
def test_damaged_cache_entries_are_dropped_and_fetched_again(tmp_path, damage):
    from zarr.codecs import BloscCodec

    local = _sharded(str(tmp_path / "a.zarr"), compressors=[BloscCodec()])
    sel = (slice(0, 1), slice(0, 5), slice(0, 48), slice(0, 48))
    with serve_folder(tmp_path) as srv:
        window_reader(_remote(tmp_path, srv.url, cache=tmp_path / "cache")).read_array(sel)
        assert flush_cache(timeout=60)  # the entries are written in the background
        files = [p for p in _cache_entries(tmp_path / "cache") if p.stat().st_size > 1000]
        assert files
        for k, f in enumerate(files):
            raw = bytearray(f.read_bytes())
            if damage == "empty":
                raw = b""
            elif damage == "flipped":
                raw[len(raw) // 2] ^= 0x01
            elif damage == "truncated":
                raw = raw[: len(raw) // 2]
            else:  # another entry's bytes under this name (its digest says whose they are)
                raw = files[(k + 1) % len(files)].read_bytes()
            f.write_bytes(bytes(raw))
        shards._INDEXES.clear()
        srv.reset_counters()
        got = window_reader(_remote(tmp_path, srv.url, cache=tmp_path / "cache")).read_array(sel)
        np.testing.assert_array_equal(got, local[sel])
        assert srv.requests > 0  # the damaged entries were fetched again


def test_an_unwritable_cache_warns_once_and_reads_go_on(tmp_path):
    from zarr.codecs import BloscCodec

    local = _sharded(str(tmp_path / "a.zarr"), compressors=[BloscCodec()])
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    sel = (slice(0, 1), slice(0, 5), slice(0, 100), slice(0, 100))
    with serve_folder(tmp_path) as srv:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            got = window_reader(_remote(tmp_path, srv.url, cache=tmp_path / "cache")).read_array(sel)
        np.testing.assert_array_equal(got, local[sel])
    said = [str(x.message) for x in w if issubclass(x.category, TesseraExploreWarning)]
    assert len(said) == 1 and "cannot be written" in said[0]


def test_one_retry_layer_counts_attempts_and_keeps_its_deadline(tmp_path):
    _sharded(str(tmp_path / "a.zarr"))
    with serve_folder(tmp_path, fail_times=10) as srv:
        store = RemoteStore(srv.url + "/a.zarr", retries=2, backoff=0.01)
        with pytest.raises(StoreError, match=r"a\.zarr/zarr\.json: 3 attempt\(s\) failed") as err:
            zarr.open_array(store, mode="r", zarr_format=3)
        assert "503" in str(err.value)
        assert sum(1 for p, _, _ in srv.log if p.endswith("zarr.json")) == 3  # not (retries + 1) squared
    big = np.zeros(4 << 20, np.uint8)
    (tmp_path / "big.bin").write_bytes(big.tobytes())
    with serve_folder(tmp_path, throttle=0.5) as srv:  # a trickle: 64 KiB every half second
        store = RemoteStore(srv.url, retries=5, timeout=30, deadline=1.5, backoff=0.01)
        from zarr.core.buffer import default_buffer_prototype

        with pytest.raises(StoreError, match=r"big\.bin: 1 attempt\(s\) failed within the 1\.5 s deadline"):
            shards.run(store.get("big.bin", default_buffer_prototype()))


def test_values_of_an_opened_store_are_one_read_into_one_array(tmp_path):
    """``DataArray.values`` of an opened store reads once into the result (no chunk
    copies for dask to concatenate), and equals the chunk-by-chunk computation."""
    from tessera_explore.testing.store import make_store

    store = make_store(tmp_path / "s.zarr", tiles=[(0.05, 52.15), (0.15, 52.15)], years=[2024], shape=(300, 300),
                       shard=256, chunk=32)
    da = te.open_embeddings(store, bbox=(0.02, 52.11, 0.18, 52.19), year=2024, chunks=64)
    assert len(da.chunks[1]) > 2 and len(da.chunks[2]) > 2
    nbytes = int(np.prod(da.shape)) * 4
    da.isel(x=slice(0, 2), y=slice(0, 2)).values  # metadata and one index in, outside the measure
    tracemalloc.start()
    try:
        values = da.values
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the result plus the compressed bytes in flight (here all of them: a local store is
    # fast); chunk by chunk with dask's concatenation it would be twice the result
    assert nbytes > 20e6 and peak < 1.6 * nbytes
    np.testing.assert_array_equal(values, da.compute().values)
    # the same after xarray's copies, and derived arrays stay ordinary dask arrays
    np.testing.assert_array_equal(da.copy().values, values)
    np.testing.assert_array_equal(da.isel(x=slice(3, 40)).values, values[:, :, 3:40])
    assert float(da.mean()) == pytest.approx(float(np.nanmean(values)), rel=1e-4)


def test_implausible_scales_are_masked_with_a_count(scene, tmp_path):
    import shutil

    store = str(tmp_path / "s.zarr")
    shutil.copytree(scene["store"], store)
    good = te.open_embeddings(scene["store"], bbox=BBOX_NORTH, year=2024)
    ok = np.isfinite(good.isel(band=0).values)
    sc = zarr.open_group(store, mode="r+")["utm31"]["scales"]
    from tessera_explore.io.store import open_store

    part = open_store(scene["store"])._parts[31][0]
    t, ti = part.transform, part.years.index(2024)
    rr, cc = np.nonzero(ok)
    hit = list(zip(rr, cc))[:3]
    for (r, c), v in zip(hit, (5e5, 3.0e38, 0.0)):  # far above 1, near the float32 limit, and zero
        R = int(round((t.f - float(good.y[r])) / t.a - 0.5))
        C = int(round((float(good.x[c]) - t.c) / t.a - 0.5))
        sc[ti, R, C] = v
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        bad = te.open_embeddings(store, bbox=BBOX_NORTH, year=2024)
        values = bad.values
        mask = te.data_mask(bad).values
    said = [str(x.message) for x in w if issubclass(x.category, TesseraExploreWarning)]
    assert any("3 pixel(s)" in m and "implausible scales" in m for m in said)
    for r, c in hit:
        assert np.isnan(values[:, r, c]).all() and mask[r, c] == 2
    keep = ok.copy()
    for r, c in hit:
        keep[r, c] = False
    np.testing.assert_array_equal(values[:, keep], good.values[:, keep])


def test_remote_store_pickles_with_its_options(tmp_path):
    import pickle

    st = RemoteStore("http://127.0.0.1:1/x", cache_dir=tmp_path, retries=3, deadline=7.0, concurrency=5)
    again = pickle.loads(pickle.dumps(st))
    assert (again.retries, again.deadline, again.concurrency, again.cache_path) == (3, 7.0, 5, st.cache_path)
    assert os.fspath(again.cache_path).startswith(os.fspath(tmp_path))
