"""The one seam for reading Zarr stores over HTTP(S): range requests through obstore.

:class:`RemoteStore` is a read-only ``zarr.abc.store.Store`` over an ``http(s)://``
URL.  zarr-python asks it for whole small objects (metadata) and byte ranges of
shards (the shard index, then each inner chunk that a read touches); the store turns
each into one ranged GET, never a whole shard.

* **HTTP client**: obstore's ``HTTPStore`` (Rust ``object_store`` + reqwest): connection
  pooling, timeouts, and retries with exponential back-off on 5xx answers and
  connection errors.  Bodies cut short mid-transfer are retried here too.
* **Concurrency**: at most ``concurrency`` requests in flight per store.
* **Shard indexes** (the suffix ranges zarr reads before the inner chunks of a shard)
  are kept in memory (the last 64), so reading an area chunk by chunk fetches each
  shard's index once, not once per dask chunk.
* **Cache** (optional, ``cache_dir=``): every answer (and every "not found") is kept
  on disk, keyed by store URL, object key and byte range, and written atomically.
  A second read of the same area makes no request at all, so an area once read
  opens offline.  Published stores are immutable per dataset; call
  :meth:`RemoteStore.clear_cache` after a store was rebuilt in place.
* **Errors**: anything that is not a plain "not found" (unreachable host, 5xx after
  the retries, a body of the wrong length, a timeout) raises
  :class:`~tessera_explore.exceptions.StoreError` naming the URL and key.

Why obstore rather than fsspec + aiohttp: it is what the published stores' own
reader uses, it retries and times out in the client itself (fsspec's HTTP file
system does neither by default), and zarr-python supports it as a first-class
backend.  See ``docs/design/zarr-stores.md``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from datetime import timedelta
from pathlib import Path

from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype

from .._atomic import write_bytes
from ..exceptions import StoreError

__all__ = ["RemoteStore", "store_cache_key"]

_MISSING = b"\x00tessera-explore-missing\x00"


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


class RemoteStore(Store):
    """A read-only Zarr store over ``http(s)://`` with retries, a concurrency cap and a disk cache.

    Parameters
    ----------
    url : the store's root URL (the folder that holds the root ``zarr.json``).
    cache_dir : folder for the persistent cache (a sub-folder per store URL is made in
        it), or None for no cache.
    retries : attempts after the first for one request (server errors, dropped
        connections, short bodies).
    timeout : seconds for one request (connect + transfer).
    concurrency : requests in flight at most.
    backoff : first back-off in seconds; it doubles per retry up to 30 s.

    ``requests`` counts the requests this store object sent (cache hits send none).
    """

    supports_writes = False
    supports_deletes = False
    supports_partial_writes = False
    supports_listing = False

    def __init__(self, url: str, *, cache_dir: str | os.PathLike | None = None, retries: int = 6,
                 timeout: float = 60.0, concurrency: int = 16, backoff: float = 0.25):
        super().__init__(read_only=True)
        if not re.match(r"^https?://", str(url)):
            raise StoreError(f"{url!r} is not an http(s) URL")
        self.url = str(url).rstrip("/")
        self.retries = int(retries)
        self.timeout = float(timeout)
        self.concurrency = max(1, int(concurrency))
        self.backoff = float(backoff)
        self.cache_path = Path(cache_dir) / store_cache_key(self.url) if cache_dir is not None else None
        self.requests = 0
        self._count_lock = threading.Lock()
        self._index_cache: OrderedDict = OrderedDict()
        self._init_client()

    # -- set-up and pickling (dask.distributed ships the store to workers) -------------
    def _init_client(self) -> None:
        from obstore.store import HTTPStore

        self._http = HTTPStore.from_url(
            self.url,
            client_options={
                "allow_http": True,
                "timeout": timedelta(seconds=self.timeout),
                "connect_timeout": timedelta(seconds=min(self.timeout, 10.0)),
            },
            retry_config={
                "max_retries": self.retries,
                "backoff": {"init_backoff": timedelta(seconds=self.backoff),
                            "max_backoff": timedelta(seconds=30), "base": 2.0},
                "retry_timeout": timedelta(seconds=max(60.0, self.timeout * (self.retries + 1))),
            },
        )
        self._sems: dict[int, asyncio.Semaphore] = {}

    def __getstate__(self):
        return {"url": self.url, "retries": self.retries, "timeout": self.timeout,
                "concurrency": self.concurrency, "backoff": self.backoff, "cache_path": self.cache_path,
                "read_only": True}

    def __setstate__(self, state):
        cache_path = state.pop("cache_path")
        read_only = state.pop("read_only", True)
        Store.__init__(self, read_only=read_only)
        self.__dict__.update(state)
        self.cache_path = cache_path
        self.requests = 0
        self._count_lock = threading.Lock()
        self._index_cache = OrderedDict()
        self._init_client()

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
    def _cache_file(self, key: str, byte_range: ByteRequest | None) -> Path | None:
        if self.cache_path is None:
            return None
        h = hashlib.sha256(f"{key}\x00{_range_tag(byte_range)}".encode()).hexdigest()
        return self.cache_path / h[:2] / h[2:]

    @staticmethod
    def _cache_read(path: Path | None) -> bytes | None:
        if path is None:
            return None
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    @staticmethod
    def _cache_write(path: Path | None, data: bytes) -> None:
        if path is not None:
            write_bytes(path, data, fsync=False)

    def clear_cache(self) -> None:
        """Delete this store's cached objects (other stores' caches are kept)."""
        if self.cache_path is not None and self.cache_path.exists():
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

    async def _fetch(self, key: str, byte_range: ByteRequest | None) -> bytes | None:
        """One object or range from the server (None when it is not there), retried."""
        import obstore as obs
        from obstore.exceptions import NotFoundError

        where = f"{self.url}/{key}"
        last: Exception | None = None
        delay = self.backoff
        for attempt in range(self.retries + 1):
            async with self._semaphore():
                self._counted()
                try:
                    if isinstance(byte_range, RangeByteRequest):
                        data = bytes(await obs.get_range_async(self._http, key, start=byte_range.start,
                                                               end=byte_range.end))
                        want = byte_range.end - byte_range.start
                        if len(data) != want:
                            raise StoreError(f"{where}: asked for bytes {byte_range.start}-{byte_range.end - 1} "
                                             f"({want} bytes), the server sent {len(data)}")
                        return data
                    if byte_range is None:
                        resp = await obs.get_async(self._http, key)
                    elif isinstance(byte_range, OffsetByteRequest):
                        resp = await obs.get_async(self._http, key, options={"range": {"offset": byte_range.offset}})
                    else:
                        resp = await obs.get_async(self._http, key, options={"range": {"suffix": byte_range.suffix}})
                    data = bytes(await resp.bytes_async())
                    if isinstance(byte_range, SuffixByteRequest) and len(data) > byte_range.suffix:
                        raise StoreError(f"{where}: asked for the last {byte_range.suffix} bytes, the server sent "
                                         f"{len(data)}")
                    return data
                except NotFoundError:
                    return None
                except StoreError:
                    raise
                except Exception as err:  # obstore raises its own classes and OSError/TimeoutError subclasses
                    last = err
            if attempt < self.retries:
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)
        raise StoreError(f"cannot read {where} after {self.retries + 1} attempts: {_short(last)}") from last

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        is_index = isinstance(byte_range, SuffixByteRequest)
        if is_index:
            with self._count_lock:
                data = self._index_cache.get((key, byte_range.suffix))
            if data is not None:
                return None if data == _MISSING else prototype.buffer.from_bytes(data)
        cfile = self._cache_file(key, byte_range)
        data = self._cache_read(cfile)
        if data is None:
            data = await self._fetch(key, byte_range)
            self._cache_write(cfile, _MISSING if data is None else data)
        if is_index:
            with self._count_lock:
                self._index_cache[(key, byte_range.suffix)] = _MISSING if data is None else data
                while len(self._index_cache) > 64:
                    self._index_cache.popitem(last=False)
        if data is None or data == _MISSING:
            return None
        return prototype.buffer.from_bytes(data)

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


def _short(err: Exception | None) -> str:
    text = f"{type(err).__name__}: {err}" if err is not None else "no answer"
    text = " ".join(text.split())
    return text if len(text) < 400 else text[:400] + " ..."
