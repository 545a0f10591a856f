"""The HTTP store's cache is written in the background: a read returns before its entries
are on disk, reads of a range whose entry is still queued are answered from the queue
(correct bytes, no request), ``flush_cache`` puts everything on disk, the queue stays
within its bound in bytes, a failing disk never fails a read and warns once, and
clearing a store's cache drops what was queued for it."""

from __future__ import annotations

import errno
import threading
import warnings

import numpy as np
import pytest
from zarr.abc.store import RangeByteRequest
from zarr.core.buffer import default_buffer_prototype

from tessera_explore.exceptions import TesseraExploreWarning
from tessera_explore.io import http
from tessera_explore.io.http import CacheWriter, RemoteStore, flush_cache
from tessera_explore.io.shards import run
from tessera_explore.testing.server import serve_folder

SIZE = 64 * 1024
RANGES = [(0, 1000), (1000, 5000), (9000, 9100), (20000, 40000), (50000, 65536)]


@pytest.fixture()
def served(tmp_path):
    """A served random object ``obj`` and its bytes."""
    data = np.random.default_rng(3).integers(0, 256, SIZE, dtype=np.uint8).tobytes()
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "obj").write_bytes(data)
    with serve_folder(tmp_path / "www") as srv:
        yield srv, data
    assert flush_cache(timeout=60)


@pytest.fixture()
def held(monkeypatch):
    """Cache writes held until ``gate`` is set (the disk is slow); the paths written."""
    gate = threading.Event()
    done: list = []
    real = http._write_entry

    def slow(path, head, body, within=None):
        assert gate.wait(60)
        real(path, head, body, within)
        done.append(path)

    monkeypatch.setattr(http, "_write_entry", slow)
    yield gate, done
    gate.set()
    assert flush_cache(timeout=60)


def _read(store: RemoteStore, ranges=RANGES) -> list[bytes]:
    async def go():
        out = {}
        async for batch in store.get_ranges("obj", [RangeByteRequest(s, e) for s, e in ranges],
                                            prototype=default_buffer_prototype()):
            for i, buf in batch:
                out[i] = buf.to_bytes()
        return [out[i] for i in range(len(ranges))]

    return run(go())  # the package's I/O loop: asyncio.run would refuse a loop another test left running


def _entries(cache):
    return sorted(p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".tmp"))


def _store(srv, cache) -> RemoteStore:
    return RemoteStore(srv.url, cache_dir=cache, retries=1, backoff=0.01, timeout=10)


def test_reads_return_before_their_entries_are_written_and_are_on_disk_after_flush(served, held, tmp_path):
    srv, data = served
    gate, done = held
    cache = tmp_path / "cache"
    store = _store(srv, cache)
    assert _read(store) == [data[s:e] for s, e in RANGES]  # returned with every write still held
    assert done == [] and _entries(cache) == []
    srv.reset_counters()
    # another store object of the same URL and cache (a fresh session of this process):
    # the queued entries answer, no request
    assert _read(_store(srv, cache)) == [data[s:e] for s, e in RANGES]
    assert srv.requests == 0
    gate.set()
    assert store.flush_cache(timeout=60)
    assert len(_entries(cache)) == len(RANGES)
    srv.reset_counters()
    assert _read(_store(srv, cache)) == [data[s:e] for s, e in RANGES]  # now from disk
    assert srv.requests == 0


def test_concurrent_readers_of_a_queued_entry_read_its_bytes(served, held, tmp_path):
    srv, data = served
    gate, _ = held
    cache = tmp_path / "cache"
    first = _read(_store(srv, cache))
    assert first == [data[s:e] for s, e in RANGES]
    # a torn file where one queued entry will go (what a crash mid-write could leave): the
    # queue answers first, and the disk copy is checked when the queue no longer holds it
    store = _store(srv, cache)
    path, _ = store._cache_file("obj", f"{RANGES[3][0]}-{RANGES[3][1]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"TXC2 torn")
    srv.reset_counters()
    got: list = [None] * 8
    errors: list = []

    def reader(k):
        try:
            got[k] = _read(store)
        except BaseException as err:  # noqa: BLE001 -- reported below
            errors.append(err)

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(len(got))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert all(g == [data[s:e] for s, e in RANGES] for g in got)
    assert srv.requests == 0
    gate.set()
    assert flush_cache(timeout=60)
    assert store._cache_read(store._cache_file("obj", f"{RANGES[3][0]}-{RANGES[3][1]}")) == data[20000:40000]


def test_the_queue_holds_at_most_its_bound_and_a_full_queue_makes_the_writer_wait(tmp_path, held):
    gate, done = held

    class Owner:  # what the writer asks of a store
        _cache_off = False
        _cache_made = False
        cache_path = tmp_path / "c"

        def _write_failed(self, err):
            raise AssertionError(err)

    owner = Owner()
    w = CacheWriter(max_bytes=10_000)
    entry = lambda k: (tmp_path / "c" / "aa" / f"e{k}", http._DATA, b"12345678", bytes(3000), owner)  # noqa: E731
    assert w.offer([entry(0)]) and w.offer([entry(1)]) and w.offer([entry(2)])
    assert not w.offer([entry(3)])  # 12,000 bytes would pass the bound: refused, nothing queued
    assert w.queued == 9000 and w.lookup(tmp_path / "c" / "aa" / "e3") is KeyError
    t = threading.Thread(target=w.put, args=([entry(3)],))
    t.start()
    t.join(0.3)
    assert t.is_alive()  # put waits for room while the disk holds the writes
    assert w.queued <= w.max_bytes
    gate.set()
    t.join(60)
    assert not t.is_alive()
    assert w.flush(timeout=60)
    assert w.peak <= w.max_bytes and w.queued == 0
    assert sorted(p.name for p in (tmp_path / "c" / "aa").iterdir()) == ["e0", "e1", "e2", "e3"]
    # one entry larger than the bound is taken when the queue is empty (never a deadlock)
    assert w.offer([(tmp_path / "c" / "aa" / "big", http._DATA, b"12345678", bytes(20_000), owner)])
    assert w.flush(timeout=60) and (tmp_path / "c" / "aa" / "big").stat().st_size == 20_000 + http._ENTRY.size


@pytest.mark.parametrize("fault", ["disk full", "file in the way"])
def test_a_failing_write_never_fails_a_read_and_warns_once(served, tmp_path, monkeypatch, fault):
    srv, data = served
    cache = tmp_path / "cache"
    store = _store(srv, cache)
    assert _read(store, RANGES[:1]) == [data[:1000]]
    assert store.flush_cache(timeout=60) and len(_entries(cache)) == 1
    if fault == "disk full":
        def full(path, head, body, within=None):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

        monkeypatch.setattr(http, "_write_entry", full)
    else:  # works as root too, where permissions do not
        for p in _entries(cache):
            p.unlink()
        for d in sorted(store.cache_path.rglob("*"), reverse=True):
            d.rmdir()
        store.cache_path.rmdir()
        store.cache_path.write_text("a file where the store's cache folder was")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert _read(store, RANGES[1:]) == [data[s:e] for s, e in RANGES[1:]]
        assert store.flush_cache(timeout=60)
        assert _read(store) == [data[s:e] for s, e in RANGES]  # the cache is off: read again
        assert store.flush_cache(timeout=60)
    said = [str(x.message) for x in w if issubclass(x.category, TesseraExploreWarning)]
    assert len(said) == 1 and "cannot be written" in said[0]
    assert store._cache_off


def test_a_cache_folder_deleted_while_entries_are_queued_is_not_made_again(served, held, tmp_path):
    srv, data = served
    gate, _ = held
    cache = tmp_path / "cache"
    store = _store(srv, cache)
    store.cache_path.mkdir(parents=True)
    store._cache_made = True  # as after its first entry: the store's folder was made
    _read(store)
    import shutil

    shutil.rmtree(cache)  # e.g. a temporary folder removed right after the read
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        gate.set()
        assert store.flush_cache(timeout=60)
    assert not cache.exists()


def test_clearing_a_cache_drops_what_is_queued_for_it(served, held, tmp_path):
    srv, data = served
    gate, done = held
    cache = tmp_path / "cache"
    store = _store(srv, cache)
    _read(store)
    # the writer holds its first entry: clear_cache waits for it, drops the rest
    t = threading.Thread(target=store.clear_cache)
    t.start()
    t.join(0.3)
    gate.set()
    t.join(60)
    assert not t.is_alive()
    assert flush_cache(timeout=60)
    assert len(done) <= 1 and not store.cache_path.exists()
    srv.reset_counters()
    assert _read(_store(srv, cache)) == [data[s:e] for s, e in RANGES]
    assert srv.requests > 0  # nothing of the cleared cache answered
