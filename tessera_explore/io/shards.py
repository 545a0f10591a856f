"""Windows of sharded Zarr v3 arrays, read with coalesced, concurrent byte-range requests.

zarr-python reads a window chunk by chunk from the thread that asks, so a dask array
read by two threads keeps two or three requests in flight, whatever the link could
carry.  This module reads a whole window at once, in one event loop shared by every
thread of the process:

1. the index of every shard the window touches (one suffix request each, all at once;
   decoded indexes are kept in memory);
2. the byte ranges of the inner chunks the window needs, sorted by offset and merged
   where the gap between two is at most :data:`GAP` (a merged request is at most
   :data:`MAX_MERGE`), as zarr-python 3.3+ merges them within one shard;
3. every merged range requested at once (the store caps requests in flight; the bytes
   in flight are capped here by :data:`BUDGET`), each inner chunk decoded in a worker
   thread as soon as its range arrives and handed to a *sink* that writes it into the
   caller's output (so a read peaks at its result plus what is in flight).

Inner chunks and shards come from each array's own metadata (the Cambridge layout
uses 32 px chunks in 4096 px shards, the dclimate v1.1 layout 256 px in 2048 px;
neither is assumed).  Arrays that are not sharded, or whose codecs this module does
not decode (anything beyond bytes, blosc, zstd, gzip, crc32c and transpose), give no
:class:`ShardLayout`, and their callers fall back to zarr-python's own reads.

The ranges go through zarr-python's ``Store.get_ranges`` (3.4+), which every store has:
local stores merge and read them; the HTTP store
(:class:`~tessera_explore.io.http.RemoteStore`) first answers what its disk cache holds,
range by range, and merges only the rest, so a second read of an area sends no request
even when its window differs from the first.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..exceptions import StoreError

__all__ = ["GAP", "MAX_MERGE", "BUDGET", "ShardLayout", "WindowReader", "coalesce", "run", "window_reader"]

#: Largest gap (bytes) between two inner chunks fetched in one request.
GAP = 1 << 20
#: Largest merged request (bytes).
MAX_MERGE = 16 << 20
#: Bytes requested but not yet decoded, at most, in the whole process.
BUDGET = 256 << 20
#: Requests that one read keeps in flight against a store with no cap of its own.
LOCAL_CONCURRENCY = 64

_EMPTY = (1 << 64) - 1  # offset and length of an inner chunk that was never written


def coalesce(ranges: Sequence[tuple[int, int]], *, gap: int = GAP, max_merge: int = MAX_MERGE
             ) -> list[tuple[int, int, list[int]]]:
    """Merge byte ranges ``(start, end)`` whose gaps are at most ``gap`` into requests of at
    most ``max_merge`` bytes (a single larger range stays whole).  Returns
    ``(start, end, indices into ranges)`` per request, in offset order."""
    order = sorted(range(len(ranges)), key=lambda i: ranges[i][0])
    out: list[tuple[int, int, list[int]]] = []
    for i in order:
        s, e = ranges[i]
        if out:
            ms, me, idx = out[-1]
            if s - me <= gap and max(me, e) - ms <= max_merge:
                out[-1] = (ms, max(me, e), idx + [i])
                continue
        out.append((s, e, [i]))
    return out


# -- the codecs of an inner chunk ---------------------------------------------------------
def _decoder(codec) -> Callable[[Any], Any] | None:
    """A function bytes -> bytes (or array -> array for ``transpose``) for one zarr v3
    codec, or None when this module does not know it."""
    name = type(codec).__name__
    if name == "BytesCodec":
        return None  # handled by the dtype's byte order
    if name == "BloscCodec":
        from numcodecs import blosc

        return blosc.decompress
    if name == "ZstdCodec":
        from numcodecs import Zstd

        return Zstd().decode
    if name == "GzipCodec":
        from numcodecs import GZip

        return GZip().decode
    if name == "Crc32cCodec":
        return lambda b: memoryview(b)[:-4]
    raise NotImplementedError(name)


@dataclass(frozen=True)
class ShardLayout:
    """How one sharded array lays out its chunks: read from the array's metadata."""

    shape: tuple[int, ...]
    shard: tuple[int, ...]
    inner: tuple[int, ...]
    dtype: np.dtype
    fill_value: Any
    index_at_end: bool
    index_crc: bool
    decoders: tuple  # bytes -> bytes, applied in order
    transpose: tuple[int, ...] | None

    @classmethod
    def of(cls, arr) -> ShardLayout | None:
        """The layout of a zarr array, or None when it is not sharded or uses codecs this
        module does not decode."""
        meta = getattr(arr, "metadata", None)
        codecs = getattr(meta, "codecs", None)
        if not codecs or len(codecs) != 1 or type(codecs[0]).__name__ != "ShardingCodec":
            return None
        sc = codecs[0]
        try:
            decoders, transpose, dtype = [], None, np.dtype(arr.dtype)
            for c in sc.codecs:
                kind = type(c).__name__
                if kind == "TransposeCodec":
                    transpose = tuple(int(v) for v in c.order)
                    continue
                if kind == "BytesCodec" and getattr(c, "endian", None) is not None and dtype.itemsize > 1:
                    dtype = dtype.newbyteorder("<" if str(getattr(c.endian, "value", c.endian)) == "little" else ">")
                d = _decoder(c)
                if d is not None:
                    decoders.append(d)
            index_kinds = [type(c).__name__ for c in sc.index_codecs]
            if any(k not in ("BytesCodec", "Crc32cCodec") for k in index_kinds):
                return None
        except NotImplementedError:
            return None
        loc = str(getattr(sc.index_location, "value", sc.index_location))
        return cls(shape=tuple(int(v) for v in arr.shape), shard=tuple(int(v) for v in arr.shards),
                   inner=tuple(int(v) for v in sc.chunk_shape), dtype=dtype, fill_value=meta.fill_value,
                   index_at_end=loc == "end", index_crc="Crc32cCodec" in index_kinds, decoders=tuple(decoders),
                   transpose=transpose)

    @property
    def per_shard(self) -> tuple[int, ...]:
        return tuple(s // i for s, i in zip(self.shard, self.inner))

    @property
    def index_nbytes(self) -> int:
        return int(np.prod(self.per_shard)) * 16 + (4 if self.index_crc else 0)

    def decode(self, data) -> np.ndarray:
        for d in self.decoders:
            data = d(data)
        if self.transpose is not None:
            inv = tuple(np.argsort(self.transpose))
            shape = tuple(self.inner[i] for i in self.transpose)
            return np.frombuffer(data, self.dtype).reshape(shape).transpose(inv)
        return np.frombuffer(data, self.dtype).reshape(self.inner)

    def parse_index(self, data, where: str) -> np.ndarray:
        """``(offset, length)`` per inner chunk, shaped ``per_shard + (2,)``."""
        raw = bytes(data)
        if len(raw) != self.index_nbytes:
            raise StoreError(f"{where}: the shard index is {len(raw)} bytes, expected {self.index_nbytes}")
        if self.index_crc:
            body, crc = raw[:-4], int.from_bytes(raw[-4:], "little")
            if _crc32c(body) != crc:
                raise StoreError(f"{where}: the shard index fails its CRC-32C check (a damaged or changed shard)")
            raw = body
        return np.frombuffer(raw, "<u8").reshape(self.per_shard + (2,))


def _crc32c(data: bytes) -> int:
    import google_crc32c  # what zarr-python's own crc32c codec uses

    return int(google_crc32c.value(data))


# -- one event loop and decoding threads for the whole process -------------------------
_LOOP: asyncio.AbstractEventLoop | None = None
_LOOP_THREAD: threading.Thread | None = None
_LOOP_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None
_BUDGET: dict[int, _Budget] = {}


def _loop() -> asyncio.AbstractEventLoop:
    global _LOOP, _LOOP_THREAD, _POOL
    with _LOOP_LOCK:
        if _LOOP is None or not _LOOP_THREAD.is_alive():
            loop = asyncio.new_event_loop()
            t = threading.Thread(target=loop.run_forever, name="tessera-explore-io", daemon=True)
            t.start()
            _LOOP, _LOOP_THREAD = loop, t
            _POOL = ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 2)),
                                       thread_name_prefix="tessera-explore-decode")
        return _LOOP


def run(coro, timeout: float | None = None):
    """Run a coroutine in the process's I/O loop and wait for its result (from any thread
    but the loop's own)."""
    loop = _loop()
    if threading.current_thread() is _LOOP_THREAD:
        coro.close()
        raise RuntimeError("tessera_explore's I/O loop cannot wait on itself")
    fut = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return fut.result(timeout)
    except BaseException:
        fut.cancel()
        raise


class _Budget:
    """Bytes in flight at most (a request larger than the whole budget waits for an empty
    budget, then goes alone)."""

    def __init__(self, limit: int):
        self.limit, self.used = int(limit), 0
        self.cond = asyncio.Condition()

    async def take(self, n: int) -> int:
        n = min(int(n), self.limit)
        async with self.cond:
            await self.cond.wait_for(lambda: self.used + n <= self.limit)
            self.used += n
        return n

    async def give(self, n: int) -> None:
        async with self.cond:
            self.used -= n
            self.cond.notify_all()


def _budget() -> _Budget:
    loop = asyncio.get_running_loop()
    b = _BUDGET.get(id(loop))
    if b is None:
        b = _BUDGET[id(loop)] = _Budget(BUDGET)
    return b


# -- reading a window -------------------------------------------------------------------
_INDEXES: OrderedDict = OrderedDict()  # (store id, key) -> decoded shard index (or None: absent)
_INDEX_LOCK = threading.Lock()
_INDEX_KEEP = 256


@dataclass
class _Piece:
    """One inner chunk a window needs: where its bytes are and where its values go."""

    key: str
    start: int
    end: int
    src: tuple  # slices into the decoded inner chunk
    dst: tuple  # slices into the window


class WindowReader:
    """Reads windows of one sharded array: ``read(selection, sink)``.

    ``selection`` is a tuple of unit-step slices, one per dimension.  ``sink(dst, block)``
    is called from a worker thread for every part of the window: ``dst`` the slices of
    the window it fills, ``block`` the values (fill values where a chunk or a shard was
    never written).  Use :meth:`read_array` for a plain NumPy result.
    """

    def __init__(self, arr, layout: ShardLayout, *, where: str = ""):
        self.layout = layout
        sp = arr.store_path
        self.store = sp.store
        self.path = sp.path
        self._encode_key = arr.metadata.encode_chunk_key
        self.where = where or f"{getattr(self.store, 'url', self.store)}/{self.path}"

    def _key(self, shard_coords: tuple[int, ...]) -> str:
        k = self._encode_key(shard_coords)
        return f"{self.path}/{k}" if self.path else k

    def read_array(self, selection: tuple[slice, ...]) -> np.ndarray:
        shape = tuple(s.stop - s.start for s in selection)
        out = np.empty(shape, self.layout.dtype)

        def sink(dst, block):
            out[dst] = block

        run(self.read(selection, sink))
        return out

    # -- the parts ------------------------------------------------------------------------
    def _shards(self, selection):
        L = self.layout
        per_dim = [range(s.start // sh, (s.stop - 1) // sh + 1) for s, sh in zip(selection, L.shard)]
        return list(itertools.product(*per_dim))

    async def _index(self, shard: tuple[int, ...]):
        """The decoded index of one shard, or None when the shard is absent."""
        from zarr.abc.store import SuffixByteRequest
        from zarr.core.buffer import default_buffer_prototype

        key = self._key(shard)
        # kept only for stores that say under what (the HTTP store, new token when the store
        # changed); a local shard is re-read, since a copy being extended changes under us
        token = getattr(self.store, "index_token", None)
        ck = (token, key)
        with _INDEX_LOCK:
            if token is not None and ck in _INDEXES:
                _INDEXES.move_to_end(ck)
                return _INDEXES[ck]
        L = self.layout
        if L.index_at_end:
            buf = await self.store.get(key, default_buffer_prototype(), SuffixByteRequest(L.index_nbytes))
        else:
            from zarr.abc.store import RangeByteRequest

            buf = await self.store.get(key, default_buffer_prototype(), RangeByteRequest(0, L.index_nbytes))
        idx = None if buf is None else L.parse_index(buf.to_bytes(), f"{self.where}/{key}")
        if token is not None:
            with _INDEX_LOCK:
                _INDEXES[ck] = idx
                while len(_INDEXES) > _INDEX_KEEP:
                    _INDEXES.popitem(last=False)
        return idx

    def _pieces(self, selection, shard, index) -> tuple[list[_Piece], list[tuple]]:
        """Inner chunks of one shard that the window needs: those with bytes, and the
        ``(dst, shape)`` of those never written (fill values)."""
        L = self.layout
        lo = [max(s.start, c * sh) for s, c, sh in zip(selection, shard, L.shard)]
        hi = [min(s.stop, (c + 1) * sh) for s, c, sh in zip(selection, shard, L.shard)]
        ranges = [range(a // i, (b - 1) // i + 1) for a, b, i in zip(lo, hi, L.inner)]
        pieces, empty = [], []
        key = self._key(shard)
        per = L.per_shard
        for cc in itertools.product(*ranges):
            src, dst = [], []
            for d, c in enumerate(cc):
                c0 = c * L.inner[d]
                a, b = max(lo[d], c0), min(hi[d], c0 + L.inner[d])
                src.append(slice(a - c0, b - c0))
                dst.append(slice(a - selection[d].start, b - selection[d].start))
            if index is not None:
                local = tuple(c % p for c, p in zip(cc, per))
                off, n = (int(v) for v in index[local])
                if not (off == _EMPTY and n == _EMPTY):
                    pieces.append(_Piece(key, off, off + n, tuple(src), tuple(dst)))
                    continue
            empty.append((tuple(dst), tuple(s.stop - s.start for s in src)))
        return pieces, empty

    async def read(self, selection: tuple[slice, ...], sink: Callable[[tuple, np.ndarray], None]) -> None:
        """Read ``selection`` and hand every part of it to ``sink``."""
        L = self.layout
        if len(selection) != len(L.shape) or any(s.start < 0 or s.stop > n or s.start >= s.stop
                                                 for s, n in zip(selection, L.shape)):
            raise StoreError(f"{self.where}: window {selection} lies outside the array's shape {L.shape}")
        shards = self._shards(selection)
        indexes = await asyncio.gather(*(self._index(s) for s in shards))
        loop = asyncio.get_running_loop()
        by_key: dict[str, list[_Piece]] = {}
        fills = []
        for shard, idx in zip(shards, indexes):
            pieces, empty = self._pieces(selection, shard, idx)
            fills += empty
            if pieces:
                by_key.setdefault(pieces[0].key, []).extend(pieces)
        if fills:
            fill = np.asarray(L.fill_value, dtype=L.dtype)
            for dst, shape in fills:
                sink(dst, np.broadcast_to(fill, shape))

        def decode_all(pieces: list[_Piece], blobs: list) -> None:
            for p, b in zip(pieces, blobs):
                if len(b) != p.end - p.start:
                    raise StoreError(f"{self.where}/{p.key}: bytes {p.start}-{p.end - 1} came back as {len(b)} bytes")
                try:
                    block = L.decode(b)
                except StoreError:
                    raise
                except Exception as err:  # codecs raise ValueError/RuntimeError on damaged bytes
                    raise StoreError(f"{self.where}/{p.key}: cannot decode the inner chunk at bytes "
                                     f"{p.start}-{p.end - 1} ({type(err).__name__}: {err})") from err
                sink(p.dst, block[p.src])

        budget = _budget()
        from zarr.abc.store import RangeByteRequest
        from zarr.core.buffer import default_buffer_prototype

        async def one(key: str, pieces: list[_Piece]) -> None:
            nbytes = sum(p.end - p.start for p in pieces)
            held = await budget.take(nbytes)
            try:
                # zarr's Store.get_ranges merges nearby ranges; the HTTP store answers from
                # its cache first and merges what is left
                batches = self.store.get_ranges(key, [RangeByteRequest(p.start, p.end) for p in pieces],
                                                prototype=default_buffer_prototype(),
                                                max_concurrency=LOCAL_CONCURRENCY, max_gap_bytes=GAP,
                                                max_coalesced_bytes=MAX_MERGE)
                work = []
                async for batch in batches:
                    got = [(pieces[i], b.as_numpy_array()) for i, b in batch]
                    work.append(loop.run_in_executor(_POOL, decode_all, [g[0] for g in got], [g[1] for g in got]))
                await asyncio.gather(*work)
            except BaseExceptionGroup as eg:
                raise _first(eg, f"{self.where}/{key}") from eg
            finally:
                await budget.give(held)

        jobs = []
        for key, pieces in by_key.items():
            # groups about a merged request's size, so the byte budget counts real requests
            group, size = [], 0
            for p in sorted(pieces, key=lambda p: p.start):
                if group and size + (p.end - p.start) > MAX_MERGE:
                    jobs.append(one(key, group))
                    group, size = [], 0
                group.append(p)
                size += p.end - p.start
            if group:
                jobs.append(one(key, group))
        results = await asyncio.gather(*jobs, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]


def _first(eg: BaseExceptionGroup, where: str) -> BaseException:
    """The error to raise for a failed ``get_ranges``: the first one inside the group
    (an absent object becomes a StoreError: its index was just read)."""
    err = eg
    while isinstance(err, BaseExceptionGroup):
        err = err.exceptions[0]
    if isinstance(err, FileNotFoundError) and not isinstance(err, StoreError):
        return StoreError(f"{where}: the shard vanished between its index and its chunks")
    return err


def window_reader(arr, *, where: str = "") -> WindowReader | None:
    """A :class:`WindowReader` for a zarr array, or None when its layout is not one this
    module reads (the caller then reads through zarr-python)."""
    layout = ShardLayout.of(arr)
    return None if layout is None else WindowReader(arr, layout, where=where)
