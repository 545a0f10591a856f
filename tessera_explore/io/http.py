"""The one seam for reading Zarr stores over HTTP(S): range requests through obstore.

:class:`RemoteStore` is a read-only ``zarr.abc.store.Store`` over an ``http(s)://``
URL.  zarr-python asks it for whole small objects (metadata) and byte ranges;
:mod:`tessera_explore.io.shards` asks it, through :meth:`RemoteStore.get_ranges`, for
every inner chunk a window needs at once.

* **HTTP client**: obstore's ``HTTPStore`` (Rust ``object_store`` + reqwest): connection
  pooling and timeouts.  Retries happen in one layer only, here (obstore's own are
  off): server errors, dropped connections, bodies of the wrong length and time-outs
  are retried with exponential back-off, within a total ``deadline`` per request that
  the error states, with the attempts counted truthfully.
* **Coalescing**: the ranges of one object that :meth:`RemoteStore.get_ranges` must
  fetch are merged where their gap is at most 1 MiB, into requests of at most 16 MiB
  (as zarr-python 3.3+ merges the inner chunks of a shard), and split again on arrival.
* **Concurrency**: at most ``concurrency`` requests in flight per store (default 32,
  enough to fill a link with an 80 ms round trip); every thread of the process shares
  them through one event loop.
* **Shard indexes** (the suffix ranges read before the inner chunks of a shard) are
  kept in memory (the last 64) as well as on disk.
* **Cache** (optional, ``cache_dir=``): every answer is kept on disk, one entry per
  object, suffix or inner-chunk range (never per merged request, so a second read of
  an area sends no request even when its window differs), written atomically.  Each
  entry records what it holds (a digest of URL, key and range), its length and a
  CRC-32 of its bytes, checked on every read: a damaged, truncated or misplaced entry
  is dropped and fetched again.  "Not found" answers are kept for a day.  Entries are
  written by one background thread (:class:`CacheWriter`), so a read returns as soon
  as its bytes arrive: until an entry is on disk, a read of it is answered from the
  writer's queue; the queue holds at most :data:`WRITE_QUEUE_BYTES` and a read that
  would pass it waits for the disk (entries are never dropped).  :func:`flush_cache`
  (and :meth:`RemoteStore.flush_cache`) waits for the queue; it runs at interpreter
  exit.  A cache that cannot be written is left alone with one warning, and reads go
  on without it.  Published stores are immutable per dataset; call
  :meth:`RemoteStore.clear_cache` after a store was rebuilt in place.
* **Errors**: anything that is not a plain "not found" (unreachable host, 5xx after
  the retries, a body of the wrong length, a timeout) raises
  :class:`~tessera_explore.exceptions.StoreError` naming the URL and key.

Why obstore rather than fsspec + aiohttp: it is what the published stores' own
reader uses, it times out in the client itself (fsspec's HTTP file system does not by
default), and zarr-python supports it as a first-class backend.  See
``docs/design/zarr-stores.md``.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import logging
import os
import re
import shutil
import struct
import threading
import time
import uuid
import warnings
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import timedelta
from pathlib import Path

from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype

from ..exceptions import StoreError, TesseraExploreWarning

__all__ = ["CacheWriter", "RemoteStore", "flush_cache", "store_cache_key"]

_log = logging.getLogger(__name__)

#: Cache entry: magic, CRC-32 of the payload, payload length, digest of what it holds.
_ENTRY = struct.Struct("<4sIQ8s")
_DATA, _GONE = b"TXC2", b"TXM2"
#: How long a "not found" answer is trusted (seconds).
MISSING_TTL = 24 * 3600.0
#: The most bytes one answer may hold (a whole published shard is at most 2 GiB of codes).
MAX_OBJECT = 4 << 30
#: The most bytes of cache entries waiting to be written, process-wide.
WRITE_QUEUE_BYTES = 128 << 20
#: How long interpreter exit waits for the cache entries still queued (seconds).
EXIT_FLUSH_TIMEOUT = 120.0


def store_cache_key(url: str) -> str:
    """Folder name of one store's cache: a readable slug of the URL plus a digest."""
    url = url.rstrip("/")
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", url.split("://")[-1]).strip("_")
    return f"{slug[-80:]}-{digest}"


def _range_tag(byte_range: ByteRequest | None) -> str:
    if byte_range is None:
        return "all"
    if isinstance(byte_range, RangeByteRequest):
        return f"{byte_range.start}-{byte_range.end}"
    if isinstance(byte_range, OffsetByteRequest):
        return f"{byte_range.offset}-"
    if isinstance(byte_range, SuffixByteRequest):
        return f"-{byte_range.suffix}"
    raise StoreError(f"unexpected byte range {byte_range!r}")


class CacheWriter:
    """Writes cache entries on one background thread, so that reads never wait for the disk.

    An entry is queued with :meth:`offer` (never blocks) or :meth:`put` (waits for room);
    until it is on disk, :meth:`lookup` answers it from memory, so a read of the same
    range while its write is pending gets the same bytes and sends no request.  The queue
    holds at most ``max_bytes`` of entry bodies (one entry larger than that is taken when
    the queue is empty): when it is full, the reader waits for the disk rather than drop
    the entry, so an area read once is on disk in full (a later offline session relies on
    it) and memory stays bounded.  A write that fails (read-only folder, disk full) turns
    the owning store's cache off with one warning; the read it came from has already
    returned.  One writer serves the process (:data:`_WRITER`); a forked child starts
    with an empty one.
    """

    def __init__(self, max_bytes: int = WRITE_QUEUE_BYTES):
        self.max_bytes = int(max_bytes)
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition()
        #: path -> (path, magic, digest, body, owner), in the order they were queued
        self._pending: OrderedDict[str, tuple] = OrderedDict()
        self._busy: str | None = None
        self._thread: threading.Thread | None = None
        #: bytes queued now, the most ever queued, and entries written
        self.queued = 0
        self.peak = 0
        self.written = 0

    # -- queueing ------------------------------------------------------------------------
    def _room(self, n: int) -> bool:
        return self.queued == 0 or self.queued + n <= self.max_bytes

    def _add(self, entries: list[tuple]) -> None:
        for e in entries:
            key = str(e[0])
            old = self._pending.pop(key, None)
            if old is not None:
                self.queued -= len(old[3])
            self._pending[key] = e
            self.queued += len(e[3])
        self.peak = max(self.peak, self.queued)
        if self._thread is None or not self._thread.is_alive():
            if self._thread is None:
                atexit.register(self.flush, timeout=EXIT_FLUSH_TIMEOUT)
            self._thread = threading.Thread(target=self._run, name="tessera-cache-writer", daemon=True)
            self._thread.start()
        self._cond.notify_all()

    def offer(self, entries: list[tuple]) -> bool:
        """Queue ``entries`` (``(path, magic, digest, body, owner)``) if there is room; False
        (nothing queued) when the queue is full."""
        n = sum(len(e[3]) for e in entries)
        with self._cond:
            if not self._room(n):
                return False
            self._add(entries)
        return True

    def put(self, entries: list[tuple]) -> None:
        """Queue ``entries``, waiting until the queue has room for them."""
        n = sum(len(e[3]) for e in entries)
        with self._cond:
            self._cond.wait_for(lambda: self._room(n))
            self._add(entries)

    def lookup(self, path: Path | str):
        """The queued bytes of the entry at ``path`` (None for a "not found" answer), or
        KeyError when none is queued."""
        if not self._pending:
            return KeyError
        with self._cond:
            e = self._pending.get(str(path))
        if e is None:
            return KeyError
        return None if e[1] == _GONE else bytes(e[3])

    # -- waiting and discarding ----------------------------------------------------------
    def _under(self, prefix: str | None):
        if prefix is None:
            return lambda key: True
        head = prefix.rstrip(os.sep) + os.sep
        return lambda key: key.startswith(head)

    def flush(self, prefix: str | os.PathLike | None = None, timeout: float | None = None) -> bool:
        """Wait until every entry queued (under the folder ``prefix``, or all) is on disk or
        given up; True when none is left, False when ``timeout`` seconds passed first."""
        under = self._under(None if prefix is None else os.fspath(prefix))
        with self._cond:
            return self._cond.wait_for(lambda: not any(under(k) for k in self._pending), timeout)

    def discard(self, prefix: str | os.PathLike) -> int:
        """Drop the entries queued under the folder ``prefix`` (a store's cache being
        cleared), waiting for the one being written there; how many were dropped."""
        under = self._under(os.fspath(prefix))
        with self._cond:
            gone = [k for k in self._pending if under(k) and k != self._busy]
            for k in gone:
                self.queued -= len(self._pending.pop(k)[3])
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._busy is None or not under(self._busy))
        return len(gone)

    # -- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._pending))
                key, entry = next(iter(self._pending.items()))
                self._busy = key
            path, magic, digest, body, owner = entry
            try:
                if not owner._cache_off:
                    # once this store's folder was made, a folder gone since was deleted: not made again
                    _write_entry(path, _ENTRY.pack(magic, zlib.crc32(body), len(body), digest), body,
                                 within=owner.cache_path if owner._cache_made else None)
                    owner._cache_made = True
            except OSError as err:
                owner._write_failed(err)
            except Exception:  # a bug here must not stop the writer: reads go on regardless
                _log.exception("cache entry %s could not be written", path)
            finally:
                with self._cond:
                    self._busy = None
                    if self._pending.get(key) is entry:
                        del self._pending[key]
                        self.queued -= len(body)
                    self.written += 1
                    self._cond.notify_all()


_WRITER = CacheWriter()
os.register_at_fork(after_in_child=_WRITER._reset)


def flush_cache(timeout: float | None = None) -> bool:
    """Wait until every cache entry this process queued is on disk (or failed); True when
    none is left, False when ``timeout`` seconds passed first.  Runs at interpreter exit;
    call it before another process reads the cache this one is filling."""
    return _WRITER.flush(timeout=timeout)


class RemoteStore(Store):
    """A read-only Zarr store over ``http(s)://`` with retries, a concurrency cap and a disk cache.

    Parameters
    ----------
    url : the store's root URL (the folder that holds the root ``zarr.json``).
    cache_dir : folder for the persistent cache (a sub-folder per store URL is made in
        it), or None for no cache.
    retries : attempts after the first for one request (server errors, dropped
        connections, short bodies, time-outs).
    timeout : seconds for one attempt (connect + transfer).
    concurrency : requests in flight at most.
    backoff : first back-off in seconds; it doubles per retry up to 30 s.
    deadline : seconds one request may take in all, its retries and back-offs included
        (default: 300).

    ``requests`` counts the requests this store object sent (cache hits send none).
    """

    supports_writes = False
    supports_deletes = False
    supports_partial_writes = False
    supports_listing = False

    def __init__(self, url: str, *, cache_dir: str | os.PathLike | None = None, retries: int = 6,
                 timeout: float = 60.0, concurrency: int = 32, backoff: float = 0.25, deadline: float = 300.0):
        super().__init__(read_only=True)
        if not re.match(r"^https?://", str(url)):
            raise StoreError(f"{url!r} is not an http(s) URL")
        self.url = str(url).rstrip("/")
        self.retries = int(retries)
        self.timeout = float(timeout)
        self.concurrency = max(1, int(concurrency))
        self.backoff = float(backoff)
        self.deadline = float(deadline)
        self.cache_path = Path(cache_dir) / store_cache_key(self.url) if cache_dir is not None else None
        self._setup()

    def _setup(self) -> None:
        from obstore.store import HTTPStore

        self.requests = 0
        self._count_lock = threading.Lock()
        self._index_cache: OrderedDict = OrderedDict()
        self._cache_off = False
        self._cache_made = False  # an entry of this store object was written (its folder exists)
        self._root_checked = False
        #: what shard indexes decoded from this store are kept under (new when the store changed)
        self.index_token = (self.url, uuid.uuid4().hex)
        # one retry layer: ours (obstore's are off, or attempts would multiply)
        self._http = HTTPStore.from_url(
            self.url,
            client_options={
                "allow_http": True,
                "default_headers": {"Accept-Encoding": "identity"},
                "timeout": timedelta(seconds=self.timeout),
                "connect_timeout": timedelta(seconds=min(self.timeout, 10.0)),
            },
            retry_config={"max_retries": 0, "retry_timeout": timedelta(seconds=self.timeout),
                          "backoff": {"init_backoff": timedelta(seconds=self.backoff),
                                      "max_backoff": timedelta(seconds=30), "base": 2.0}},
        )
        self._sems: dict[int, asyncio.Semaphore] = {}

    # -- pickling (dask.distributed ships the store to workers) --------------------------
    def __getstate__(self):
        return {"url": self.url, "retries": self.retries, "timeout": self.timeout, "deadline": self.deadline,
                "concurrency": self.concurrency, "backoff": self.backoff, "cache_path": self.cache_path,
                "read_only": True}

    def __setstate__(self, state):
        read_only = state.pop("read_only", True)
        Store.__init__(self, read_only=read_only)
        self.__dict__.update(state)
        self._setup()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemoteStore) and other.url == self.url

    def __hash__(self) -> int:
        return hash(("RemoteStore", self.url))

    def __repr__(self) -> str:
        cache = f", cache={str(self.cache_path)!r}" if self.cache_path else ""
        return f"RemoteStore({self.url!r}{cache})"

    def with_read_only(self, read_only: bool = False) -> RemoteStore:
        if not read_only:
            raise StoreError(f"{self.url} is read-only")
        return self

    # -- cache ---------------------------------------------------------------------------
    def _cache_file(self, key: str, tag: str) -> tuple[Path, bytes] | None:
        """Where the entry of ``key`` and a range tag lives, and the digest it must carry."""
        if self.cache_path is None or self._cache_off:
            return None
        h = hashlib.sha256(f"{self.url}\x00{key}\x00{tag}".encode()).digest()
        name = h.hex()
        return self.cache_path / name[:2] / name[2:40], h[:8]

    def _cache_read(self, where: tuple[Path, bytes] | None) -> bytes | None | type[KeyError]:
        """The cached bytes, None for a cached "not found", or KeyError when there is no
        usable entry (absent, damaged, or another key's: a damaged one is removed)."""
        if where is None:
            return KeyError
        path, digest = where
        queued = _WRITER.lookup(path)
        if queued is not KeyError:
            return queued
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except (FileNotFoundError, NotADirectoryError):
            return KeyError
        except OSError:
            return KeyError
        if len(raw) >= _ENTRY.size:
            magic, crc, n, tag = _ENTRY.unpack_from(raw)
            body = memoryview(raw)[_ENTRY.size:]
            if tag == digest and n == len(body) and zlib.crc32(body) == crc:
                if magic == _DATA:
                    return bytes(body)
                if magic == _GONE and n == 8 and time.time() - struct.unpack("<d", body)[0] < MISSING_TTL:
                    return None
        # absent from here on: damaged, another key's, or a stale "not found"
        try:
            path.unlink()
        except OSError:
            pass
        return KeyError

    def _cache_write(self, where: tuple[Path, bytes] | None, data: bytes | None) -> None:
        """Write one entry now (the root metadata: it decides whether the cache is kept)."""
        if where is None:
            return
        path, digest = where
        body = struct.pack("<d", time.time()) if data is None else data
        head = _ENTRY.pack(_GONE if data is None else _DATA, zlib.crc32(body), len(body), digest)
        try:
            _write_entry(path, head, body)
            self._cache_made = True
        except OSError as err:
            self._write_failed(err)

    def _write_failed(self, err: OSError) -> None:
        """Turn this store's cache off, with one warning (the reads go on without it)."""
        with self._count_lock:
            if self._cache_off:
                return
            self._cache_off = True
        warnings.warn(f"the cache folder {self.cache_path} cannot be written ({err}); reading {self.url} "
                      "without a cache", TesseraExploreWarning, stacklevel=3)

    async def _queue(self, items: list[tuple[tuple[Path, bytes] | None, bytes | memoryview | None]]) -> None:
        """Hand entries (``(where, data)``, data None for "not found") to the background
        writer; waits only when its queue is full."""
        if self._cache_off:
            return
        now = struct.pack("<d", time.time())
        # no copy: a range's slice keeps its merged answer alive until written, and the
        # decoder holds that answer anyway while the read is in flight
        entries = [(where[0], _GONE if data is None else _DATA, where[1], now if data is None else data, self)
                   for where, data in items if where is not None]
        if entries and not _WRITER.offer(entries):
            await asyncio.get_running_loop().run_in_executor(None, _WRITER.put, entries)

    def flush_cache(self, timeout: float | None = None) -> bool:
        """Wait until this store's queued cache entries are on disk (or failed); True when
        none is left, False when ``timeout`` seconds passed first."""
        if self.cache_path is None:
            return True
        return _WRITER.flush(self.cache_path, timeout=timeout)

    def clear_cache(self) -> None:
        """Delete this store's cached objects (other stores' caches are kept), the entries
        still queued for it included."""
        if self.cache_path is not None:
            _WRITER.discard(self.cache_path)
            if self.cache_path.exists():
                shutil.rmtree(self.cache_path)

    # -- requests ------------------------------------------------------------------------
    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._sems.get(id(loop))
        if sem is None:
            sem = self._sems[id(loop)] = asyncio.Semaphore(self.concurrency)
        return sem

    def _counted(self) -> None:
        with self._count_lock:
            self.requests += 1

    async def _fetch(self, key: str, byte_range: ByteRequest | None, *, seen: dict | None = None,
                     attempts_max: int | None = None) -> bytes | None:
        """One object or range from the server (None when it is not there), retried
        within the deadline.  ``seen`` receives the answer's validators (``etag``,
        ``last_modified``)."""
        import obstore as obs
        from obstore.exceptions import NotFoundError

        where = f"{self.url}/{key}"
        last: Exception | None = None
        delay = self.backoff
        end = time.monotonic() + self.deadline
        attempts = 0
        while True:
            async with self._semaphore():
                left = end - time.monotonic()
                self._counted()
                attempts += 1
                try:
                    return await asyncio.wait_for(self._once(obs, key, byte_range, where, seen), max(0.001, left))
                except (NotFoundError, FileNotFoundError):
                    return None
                except StoreError as err:
                    if not getattr(err, "retry", False):
                        raise
                    last = err
                except TimeoutError as err:
                    last = TimeoutError(f"no complete answer within the {self.deadline:g} s deadline")
                    last.__cause__ = err
                except Exception as err:  # obstore raises its own classes and OSError/TimeoutError subclasses
                    last = err
            if attempts > (self.retries if attempts_max is None else attempts_max - 1) or \
                    time.monotonic() + delay >= end:
                break
            await asyncio.sleep(delay)
            delay = min(30.0, delay * 2)
        raise StoreError(f"cannot read {where}: {attempts} attempt(s) failed within the {self.deadline:g} s "
                         f"deadline; the last: {_short(last)}") from last

    async def _once(self, obs, key: str, byte_range: ByteRequest | None, where: str,
                    seen: dict | None = None) -> bytes | memoryview:
        """One GET.  The body is collected against the length this request must have (the
        range asked for, or the object's size, at most :data:`MAX_OBJECT`), never
        against a length the server announces, so a lying ``Content-Length`` cannot make
        the process allocate it; a body of any other length, an empty object or an
        encoded body is refused."""
        if isinstance(byte_range, RangeByteRequest):
            opts, want = {"range": (byte_range.start, byte_range.end)}, byte_range.end - byte_range.start
            what = f"bytes {byte_range.start}-{byte_range.end - 1} ({want} bytes)"
        elif isinstance(byte_range, OffsetByteRequest):
            opts, want, what = {"range": {"offset": byte_range.offset}}, None, f"bytes from {byte_range.offset}"
        elif isinstance(byte_range, SuffixByteRequest):
            opts, want, what = {"range": {"suffix": byte_range.suffix}}, byte_range.suffix, \
                f"the last {byte_range.suffix} bytes"
        else:
            opts, want, what = {}, None, "the object"
        resp = await obs.get_async(self._http, key, options=opts)
        enc = {str(k).lower(): v for k, v in (resp.attributes or {}).items()}.get("content-encoding", "identity")
        if enc.lower() not in ("identity", ""):
            raise StoreError(f"{where}: the server sent a {enc}-encoded body although identity was asked for")
        size = int(resp.meta["size"])
        start, stop = (int(v) for v in resp.range)
        if seen is not None:
            lm = resp.meta.get("last_modified")
            seen.update(etag=resp.meta.get("e_tag"), last_modified=lm.isoformat() if lm is not None else None)
        if want is None:
            want = stop - start
            if size == 0 or want == 0:
                raise _retryable(f"{where}: the server sent an empty object (no Zarr object is empty)")
        if want > MAX_OBJECT:
            raise StoreError(f"{where}: {what} would be {want:,} bytes, above the {MAX_OBJECT:,} this reader takes")
        if stop - start != want:
            raise _retryable(f"{where}: asked for {what}, the server answered for bytes {start}-{stop - 1}")
        out = bytearray(want)
        n = 0
        async for part in resp.stream(min_chunk_size=1 << 20):
            m = len(part)
            if n + m > want:
                raise StoreError(f"{where}: asked for {what}, the server sent more")
            out[n:n + m] = part
            n += m
        if n != want:
            raise _retryable(f"{where}: asked for {what}, the server sent {n} bytes")
        return memoryview(out)

    async def _cached(self, key: str, tag: str, fetch) -> bytes | None:
        where = self._cache_file(key, tag)
        loop = asyncio.get_running_loop()
        hit = await loop.run_in_executor(None, self._cache_read, where) if where is not None else KeyError
        if hit is not KeyError:
            return hit
        data = await fetch()
        if where is not None:
            await self._queue([(where, data)])
        return data

    async def _root(self) -> bytes | None:
        """The root metadata, checked against the server once per store object: when the
        object changed since it was cached (another ETag or Last-Modified, or other
        bytes), the store was rebuilt in place, so its whole cache is dropped (with a
        warning) before anything else is read.  Offline, the cached copy is used."""
        import json

        loop = asyncio.get_running_loop()
        where, vwhere = self._cache_file("zarr.json", "all"), self._cache_file("zarr.json", "validators")
        cached = await loop.run_in_executor(None, self._cache_read, where) if where else KeyError
        raw_v = await loop.run_in_executor(None, self._cache_read, vwhere) if vwhere else KeyError
        try:
            old = json.loads(raw_v) if isinstance(raw_v, bytes) else {}
        except ValueError:
            old = {}
        seen: dict = {}
        try:
            # with a cached copy, one attempt: offline, the cache answers at once
            data = await self._fetch("zarr.json", None, seen=seen,
                                     attempts_max=1 if isinstance(cached, bytes) else None)
        except StoreError:
            if isinstance(cached, bytes):
                self._root_checked = True
                return cached
            raise
        if data is not None:
            data = bytes(data)
        if isinstance(cached, bytes) and data is not None:
            same_tag = old.get("etag") and seen.get("etag") and old["etag"] == seen["etag"]
            changed = data != cached or (not same_tag and old.get("last_modified") != seen.get("last_modified")
                                         and bool(old.get("last_modified") or old.get("etag")))
            if changed:
                warnings.warn(f"the store at {self.url} changed since it was cached (its zarr.json is now "
                              f"{_tag(seen)}, was {_tag(old)}); its cache at {self.cache_path} was cleared, so "
                              "nothing read before the change is used", TesseraExploreWarning, stacklevel=2)
                await loop.run_in_executor(None, self.clear_cache)
                with self._count_lock:
                    self._index_cache.clear()
                self.index_token = (self.url, uuid.uuid4().hex)
        if where is not None:
            await loop.run_in_executor(None, self._cache_write, where, data)
            await loop.run_in_executor(None, self._cache_write, vwhere, json.dumps(seen).encode())
        self._root_checked = True
        return data

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        if key == "zarr.json" and byte_range is None and not self._root_checked:
            data = await self._root()
            return None if data is None else prototype.buffer.from_bytes(data)
        is_index = isinstance(byte_range, SuffixByteRequest)
        if is_index:
            with self._count_lock:
                hit = self._index_cache.get((key, byte_range.suffix), KeyError)
            if hit is not KeyError:
                return None if hit is None else prototype.buffer.from_bytes(hit)
        data = await self._cached(key, _range_tag(byte_range), lambda: self._fetch(key, byte_range))
        if is_index:
            with self._count_lock:
                self._index_cache[(key, byte_range.suffix)] = data
                while len(self._index_cache) > 64:
                    self._index_cache.popitem(last=False)
        return None if data is None else prototype.buffer.from_bytes(data)

    async def get_ranges(self, key: str, byte_ranges: Sequence[ByteRequest | None], *, prototype: BufferPrototype,
                         max_concurrency: int | None = None, max_gap_bytes: int = 1 << 20,
                         max_coalesced_bytes: int = 16 << 20) -> AsyncIterator[Sequence[tuple[int, Buffer | None]]]:
        """Many byte ranges of one object (zarr-python's ``Store.get_ranges``): each range
        from the cache where it is there (one batch), the rest in merged requests (gap at
        most ``max_gap_bytes``, at most ``max_coalesced_bytes`` each), all in flight at
        once within the store's ``concurrency``, yielded as they arrive.  Every range is
        cached on its own, never the merged request.  An absent object raises
        ``FileNotFoundError`` in an exception group, as zarr-python expects."""
        from .shards import coalesce

        loop = asyncio.get_running_loop()
        ranged = [i for i, r in enumerate(byte_ranges) if isinstance(r, RangeByteRequest)]
        other = [i for i, r in enumerate(byte_ranges) if not isinstance(r, RangeByteRequest)]
        wheres = {i: self._cache_file(key, _range_tag(byte_ranges[i])) for i in ranged}
        todo = ranged
        if self.cache_path is not None and not self._cache_off:
            found = await loop.run_in_executor(None, lambda: [(i, self._cache_read(wheres[i])) for i in ranged])
            hits = [(i, v) for i, v in found if v is not KeyError]
            if any(v is None for _, v in hits):
                raise ExceptionGroup(f"{self.url}/{key}", [FileNotFoundError(f"{self.url}/{key}")])
            if hits:
                yield [(i, prototype.buffer.from_bytes(v)) for i, v in hits]
            todo = [i for i, v in found if v is KeyError]

        async def merged(s: int, e: int, members: list[int]) -> list[tuple[int, Buffer]]:
            data = await self._fetch(key, RangeByteRequest(s, e))
            if data is None:
                raise FileNotFoundError(f"{self.url}/{key}")
            parts = [(i, data[byte_ranges[i].start - s:byte_ranges[i].end - s]) for i in members]
            if self.cache_path is not None and not self._cache_off:
                # written by the background writer; read from its queue until they are on disk
                await self._queue([(wheres[i], b) for i, b in parts])
            return [(i, prototype.buffer.from_bytes(b)) for i, b in parts]

        async def single(i: int) -> list[tuple[int, Buffer]]:
            buf = await self.get(key, prototype, byte_ranges[i])
            if buf is None:
                raise FileNotFoundError(f"{self.url}/{key}")
            return [(i, buf)]

        spans = coalesce([(byte_ranges[i].start, byte_ranges[i].end) for i in todo], gap=max_gap_bytes,
                         max_merge=max_coalesced_bytes)
        tasks = [asyncio.ensure_future(merged(s, e, [todo[j] for j in idx])) for s, e, idx in spans]
        tasks += [asyncio.ensure_future(single(i)) for i in other]
        try:
            for fut in asyncio.as_completed(tasks):
                try:
                    batch = await fut
                except FileNotFoundError as err:
                    raise ExceptionGroup(f"{self.url}/{key}", [err]) from None
                yield batch
        finally:
            for t in tasks:
                t.cancel()

    async def get_partial_values(self, prototype: BufferPrototype,
                                 key_ranges: Iterable[tuple[str, ByteRequest | None]]) -> list[Buffer | None]:
        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    async def exists(self, key: str) -> bool:
        from zarr.core.buffer import default_buffer_prototype

        return (await self.get(key, default_buffer_prototype())) is not None

    async def set(self, key: str, value: Buffer) -> None:
        raise StoreError(f"{self.url} is read-only")

    async def delete(self, key: str) -> None:
        raise StoreError(f"{self.url} is read-only")

    def list(self) -> AsyncIterator[str]:
        raise StoreError(f"{self.url}: an HTTP store cannot be listed")

    def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        raise StoreError(f"{self.url}: an HTTP store cannot be listed")

    def list_dir(self, prefix: str) -> AsyncIterator[str]:
        raise StoreError(f"{self.url}: an HTTP store cannot be listed")


def _write_entry(path: Path, head: bytes, body, within: Path | None = None) -> None:
    """Write one cache entry atomically: a temporary file of this process and thread beside
    it, then a rename (thousands are written per area, so no more system calls than that;
    an entry's header and checksum make anything else harmless).  Missing folders are
    made, but only inside ``within`` when it is given: a cache folder deleted while its
    entries were queued is not made again (the write fails)."""
    tmp = f"{path}.{os.getpid()}-{threading.get_ident()}.tmp"
    try:
        f = open(tmp, "wb")
    except FileNotFoundError:
        if within is not None and not within.is_dir():
            raise
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(tmp, "wb")
    try:
        with f:
            f.write(head)
            f.write(body)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _retryable(message: str) -> StoreError:
    err = StoreError(message)
    err.retry = True
    return err


def _tag(v: dict) -> str:
    return f"ETag {v['etag']}" if v.get("etag") else f"Last-Modified {v.get('last_modified') or '?'}"


def _short(err: Exception | None) -> str:
    text = f"{type(err).__name__}: {err}" if err is not None else "no answer"
    text = " ".join(text.split())
    return text if len(text) < 400 else text[:400] + " ..."
