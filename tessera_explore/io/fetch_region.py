"""``fetch_region``: copy the chunks an area needs from a store into a local store.

The copy has the published layout (same zone groups, array shapes, shards, inner
chunks, codecs, coordinates, statistics, ``years_complete`` and, where the source has
them, the per-pixel quality arrays; names from :mod:`~tessera_explore.io.layout`),
holds the chunks an area needs, and opens offline with
:func:`~tessera_explore.open_embeddings` like the original.

* **Exactly what the area reads**: per zone, the pixels ``open_embeddings`` on the same
  bbox can read (in the CRS of any UTM zone the bbox touches, the default included,
  with the nearest and bilinear neighbours of resampled pixels), widened to whole inner
  chunks, copied in blocks on a grid of :data:`BLOCK` pixels that never cross a shard.
* **Knows what it holds**: a manifest (``.tessera_fetch.json`` in the store folder)
  records each block once it is written and read back equal, and each file the copy
  wrote (size, CRC-32 of its shard index, CRC-32 of the whole file once the call has
  finished writing into it).  Opening the copy (:func:`held_extent`, used by
  :class:`~tessera_explore.io.store.ZarrSource`) reads pixels outside the recorded
  blocks as no data with ``data_mask`` 3 (outside), never as "not computed"; a year or
  an area it holds nothing of is refused, naming what it holds.
* **Resumable, and resume verifies**: a later call checks every recorded file
  (presence, size, shard index, whole-file CRC-32) and fetches again every block whose
  files are missing, truncated or changed; blocks already held are skipped.
* **One writer per folder**: a call holds an exclusive lock on the folder
  (``.tessera_fetch.lock``); a second call, in any thread or process, is refused.
* **One dataset per folder**: the manifest names the source URL, version and variant
  before the first block is written; fetching another dataset into the folder is
  refused.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import threading
import warnings
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..exceptions import (
    NoTilesInAreaError,
    StoreError,
    TesseraExploreError,
    TesseraExploreWarning,
    VersionMismatchError,
    YearNotAvailableError,
)
from . import grid, layout
from .store import StoreTile, UnfilledTile, ZarrSource, open_store, zones_in_bbox

__all__ = ["fetch_region", "held_extent", "HeldExtent", "MANIFEST", "LOCK"]

MANIFEST = ".tessera_fetch.json"
#: The lock file a call holds in the destination folder while it writes.
LOCK = ".tessera_fetch.lock"
#: The manifest's format: 2 records every written file (format 1, from before, is
#: upgraded by fetching its blocks again: its files cannot be verified).
FORMAT = 2
#: Pixels per side of one copied block (at most 128 MiB of int8 codes at 128 bands).
BLOCK = 1024
_COORDS = (layout.TIME, layout.X, layout.Y, layout.BAND, layout.MONTH)
_READ = 1 << 22


def _write_json_atomic(path: str, obj: Any) -> None:
    from .._atomic import write_json

    write_json(path, obj)


def _parse_key(key: str, where: str) -> tuple[str, int, tuple[int, int, int, int], tuple[str, ...]]:
    """``(zone group, year, (r0, r1, c0, c1), embedding array names)`` of a block key."""
    try:
        group, year, rows, cols, names = key.split("/")
        r0, r1 = (int(v) for v in rows.split("-"))
        c0, c1 = (int(v) for v in cols.split("-"))
        if layout.parse_zone_group(group) is None or not names or r0 >= r1 or c0 >= c1:
            raise ValueError(key)
        return group, int(year), (r0, r1, c0, c1), tuple(names.split(","))
    except (ValueError, AttributeError) as err:
        raise StoreError(f"{where}: the fetch manifest records a block it cannot parse ({key!r}); "
                         "delete the folder and fetch again") from err


def _key(group: str, year: int, blk: tuple[int, int, int, int], names: Sequence[str]) -> str:
    return f"{group}/{year}/{blk[0]}-{blk[1]}/{blk[2]}-{blk[3]}/{','.join(names)}"


def _read_manifest(dest: str) -> dict | None:
    path = os.path.join(dest, MANIFEST)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
    except (OSError, ValueError, RecursionError) as err:
        raise StoreError(f"the fetch manifest {path} cannot be read ({err}); delete the folder and fetch again") from err
    if (not isinstance(m, dict) or "source" not in m or not isinstance(m.get("done", []), list)
            or not isinstance(m.get("files", {}), dict) or not isinstance(m.get("requests", []), list)):
        raise StoreError(f"{path} is not a fetch manifest; delete the folder and fetch again")
    for key in m.get("done", []):
        _parse_key(key, path)
    return m


# -- geometry -----------------------------------------------------------------------------------
def _need(part, bbox: Sequence[float], inner: int) -> tuple[int, int, int, int] | None:
    """``(r0, r1, c0, c1)`` of the zone part's pixels that ``open_embeddings(bbox=bbox)``
    can read, widened to whole inner chunks; None when the bbox misses the part.

    The output grid covers the bbox's bounds in its CRS (the default is the northern UTM
    CRS of the bbox's centre zone; any zone the bbox touches is allowed here), snapped
    outward by under a pixel.  In the part's own CRS those pixels are read one for one;
    from another zone's CRS they are resampled, reading the nearest source pixel and, for
    bilinear, the next one: two pixels of margin hold both.
    """
    from rasterio.warp import transform_bounds

    t = part.transform
    a = float(t.a)
    x0 = y0 = math.inf
    x1 = y1 = -math.inf
    for zone in zones_in_bbox(bbox):
        epsg = layout.zone_epsg(zone)
        b = transform_bounds("EPSG:4326", f"EPSG:{epsg}", *bbox, densify_pts=41)
        b = (b[0] - a, b[1] - a, b[2] + a, b[3] + a)
        if epsg != part.epsg:
            b = transform_bounds(f"EPSG:{epsg}", f"EPSG:{part.epsg}", *b, densify_pts=41)
        x0, y0, x1, y1 = min(x0, b[0]), min(y0, b[1]), max(x1, b[2]), max(y1, b[3])
    h, w = part.shape
    c0 = max(0, (math.floor((x0 - t.c) / a) - 2) // inner * inner)
    r0 = max(0, (math.floor((t.f - y1) / a) - 2) // inner * inner)
    c1 = min(w, -(-(math.ceil((x1 - t.c) / a) + 2) // inner) * inner)
    r1 = min(h, -(-(math.ceil((t.f - y0) / a) + 2) // inner) * inner)
    if r0 >= r1 or c0 >= c1:
        return None
    return r0, r1, c0, c1


def _cuts(a0: int, a1: int, shard: int, step: int) -> list[tuple[int, int]]:
    """``[a0, a1)`` cut at every shard edge and every ``step`` pixels from a shard's edge."""
    out, pos = [], a0
    while pos < a1:
        s0 = pos // shard * shard
        nxt = min(a1, s0 + shard, s0 + ((pos - s0) // step + 1) * step)
        out.append((pos, nxt))
        pos = nxt
    return out


def _blocks(win, shard: int, inner: int, block: int) -> Iterator[tuple[int, int, int, int]]:
    """Blocks that tile a window exactly: on a grid of ``block`` pixels (whole inner chunks)
    within each shard, never across a shard."""
    step = max(inner, min(block, shard) // inner * inner)
    r0, r1, c0, c1 = win
    for ra, rb in _cuts(r0, r1, shard, step):
        for ca, cb in _cuts(c0, c1, shard, step):
            yield ra, rb, ca, cb


def _clip(rect, win):
    r = (max(rect[0], win[0]), min(rect[1], win[1]), max(rect[2], win[2]), min(rect[3], win[3]))
    return r if r[0] < r[1] and r[2] < r[3] else None


def _covered(rect, rects) -> bool:
    """Whether the union of ``rects`` covers ``rect`` (all ``(r0, r1, c0, c1)``)."""
    parts = [c for c in (_clip(q, rect) for q in rects) if c is not None]
    if not parts:
        return False
    ys = np.unique([rect[0], rect[1], *(q[0] for q in parts), *(q[1] for q in parts)])
    xs = np.unique([rect[2], rect[3], *(q[2] for q in parts), *(q[3] for q in parts)])
    cov = np.zeros((len(ys) - 1, len(xs) - 1), bool)
    for q in parts:
        cov[np.searchsorted(ys, q[0]):np.searchsorted(ys, q[1]), np.searchsorted(xs, q[2]):np.searchsorted(xs, q[3])] = True
    return bool(cov.all())


# -- the files a block writes -----------------------------------------------------------------
def _dims(part, name: str) -> tuple[str, ...]:
    """Dimension names of a per-pixel array (the published ones where it records none)."""
    dims = part.pixel_dims(name)
    if dims:
        return tuple(dims)
    return layout.SCALE_DIMS if name == layout.SCALES else layout.EMBEDDING_DIMS


def _selection(dims, ti: int, blk) -> tuple:
    ra, rb, ca, cb = blk
    return tuple(ti if d == layout.TIME else slice(ra, rb) if d in layout.Y_DIMS
                 else slice(ca, cb) if d in layout.X_DIMS else slice(None) for d in dims)


def _files_of(rel: str, arr, sel: tuple) -> list[str]:
    """Keys (relative to the store) of the files (shards, or chunks of an unsharded
    array) that hold the selection ``sel`` of ``arr``, whose key is ``rel``."""
    cg = arr.metadata.chunk_grid.chunk_shape
    ranges = []
    for s, n, size in zip(sel, arr.shape, cg):
        if isinstance(s, (int, np.integer)):
            ranges.append(range(int(s) // size, int(s) // size + 1))
        else:
            start, stop, _ = s.indices(n)
            ranges.append(range(start // size, max(start, stop - 1) // size + 1))
    return [f"{rel}/{arr.metadata.encode_chunk_key(c)}" for c in itertools.product(*ranges)]


def _index_span(arr) -> tuple[int, bool] | None:
    """``(bytes, at the end?)`` of a sharded array's shard index; None when unsharded."""
    codecs = getattr(arr.metadata, "codecs", None) or ()
    if len(codecs) != 1 or type(codecs[0]).__name__ != "ShardingCodec":
        return None
    sc = codecs[0]
    n = int(np.prod([s // i for s, i in zip(arr.shards, sc.chunk_shape)])) * 16
    n += 4 * sum(type(c).__name__ == "Crc32cCodec" for c in sc.index_codecs)
    return n, str(getattr(sc.index_location, "value", sc.index_location)) == "end"


def _crc_file(f) -> int:
    crc = 0
    for block in iter(lambda: f.read(_READ), b""):
        crc = zlib.crc32(block, crc)
    return crc


def _fingerprint(path: str, span: tuple[int, bool] | None, *, full: bool) -> dict:
    """What a file is now: ``{"absent": True}``, or its size, the CRC-32 of its shard
    index (of the whole file when unsharded) and, when ``full``, of the whole file."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return {"absent": True}
    with f:
        size = os.fstat(f.fileno()).st_size
        if span is None:
            crc = _crc_file(f)
            return {"size": size, "index": crc, "crc": crc}
        n, at_end = span
        if at_end:
            f.seek(max(0, size - n))
        rec = {"size": size, "index": zlib.crc32(f.read(n)), "crc": None}
        if full:
            f.seek(0)
            rec["crc"] = _crc_file(f)
        return rec


def _mismatch(path: str, rec: dict | None, span, *, full: bool) -> str | None:
    """Why the file at ``path`` is not what its record says (None: it is).  A file with
    no record must not be there."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return None if rec is None or rec.get("absent") else "it is missing"
    if rec is None:
        return "the manifest has no record of it"
    if rec.get("absent"):
        return "it was recorded as not written"
    if size != rec.get("size"):
        return f"it has {size} bytes, {rec.get('size')} were written"
    now = _fingerprint(path, span, full=full and rec.get("crc") is not None)
    if now.get("index") != rec.get("index"):
        return "its shard index differs from what was written"
    if full and rec.get("crc") is not None and now.get("crc") != rec["crc"]:
        return "its bytes fail their CRC-32"
    return None


def _path(dest: str, rel: str) -> str:
    return os.path.join(dest, *rel.split("/"))


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


# -- the lock ------------------------------------------------------------------------------------
_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def _locked(dest: str) -> Iterator[None]:
    """Hold ``dest`` exclusively, or refuse at once: an advisory ``flock`` on
    ``dest/.tessera_fetch.lock`` (released by the kernel when its process dies, so it
    never goes stale; its holder removes the file) plus a per-process lock for threads.  Without
    ``fcntl`` (Windows) only the threads of this process are kept apart."""
    key = os.path.realpath(dest)
    with _THREAD_LOCKS_GUARD:
        tlock = _THREAD_LOCKS.setdefault(key, threading.Lock())
    busy = (f"another fetch_region is writing into {dest} ({{}}); wait for it to finish (then call again "
            "to resume) or fetch into another folder")
    if not tlock.acquire(blocking=False):
        raise StoreError(busy.format("in this process"))
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        path = os.path.join(dest, LOCK)
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise StoreError(f"dest={dest}: cannot create the lock file {path}: {err.strerror or err}") from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode("utf-8", "replace").strip()
                os.close(fd)
                raise StoreError(busy.format(f"process {holder}" if holder else "another process")) from None
            except BaseException:
                os.close(fd)
                raise
            held = os.fstat(fd)
            try:
                now = os.stat(path)
            except FileNotFoundError:
                now = None
            if now is not None and (now.st_ino, now.st_dev) == (held.st_ino, held.st_dev):
                break
            os.close(fd)  # the holder before removed that file: lock the new one
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}".encode(), 0)
            yield
        finally:
            _remove(path)  # by its holder only, so a folder is left as it was found
            os.close(fd)
    finally:
        tlock.release()


# -- what a copy holds (the reading side) ----------------------------------------------------------
def _describe(requests: list) -> str:
    def one(r):
        bb = ", ".join(f"{v:g}" for v in r.get("bbox", []))
        return f"bbox ({bb}) years {r.get('years')} depths {r.get('depths')}"

    # (manifests from before the flag was kept record no "complete")
    done = [one(r) for r in requests if r.get("complete", True)]
    cut = [one(r) for r in requests if not r.get("complete", True)]
    out = "; ".join(done) if done else "no complete fetch"
    if cut:
        out += " (part of an interrupted fetch of " + "; ".join(cut) + ")"
    return out


class HeldExtent:
    """The blocks a ``fetch_region`` copy holds, from its manifest: opened windows are
    restricted to them (:meth:`restrict`)."""

    def __init__(self, path: str, manifest: dict):
        self.path = path
        self.where = os.path.join(path, MANIFEST)
        self.files: dict = manifest.get("files", {}) if manifest.get("format") == FORMAT else {}
        pending = manifest.get("pending")
        #: files a killed call was writing into: they hold what was recorded, and more
        self.pending = set(pending.get("files", [])) if isinstance(pending, dict) else set()
        self.requests: list = manifest.get("requests", [])
        self.rects: dict[tuple[str, int, str], list] = {}
        for key in manifest.get("done", []):
            group, year, rect, names = _parse_key(key, self.where)
            for n in names:
                self.rects.setdefault((group, year, n), []).append(rect)

    def describe(self) -> str:
        """What the copy holds, as its fetches asked for it."""
        return _describe(self.requests)

    def covers(self, group: str, year: int, names: Iterable[str], rect) -> bool:
        return all(_covered(rect, self.rects.get((group, int(year), n), [])) for n in names)

    def _check_files(self, tile, need, rects) -> None:
        """Presence and size of the files of the held blocks that the window ``need`` reads
        (a damaged copy is an error naming the file, never a hole)."""
        if not self.files:
            return
        part = tile.part
        for name in (tile.array, layout.SCALES):
            try:
                arr = part.group[name]
            except KeyError:
                continue
            rel = f"{layout.zone_group(tile.zone)}/{name}"
            dims = _dims(part, name)
            seen = set()
            for rect in rects:
                r = _clip(rect, need)
                if r is None:
                    continue
                for f in _files_of(rel, arr, _selection(dims, tile.ti, r)):
                    if f in seen:
                        continue
                    seen.add(f)
                    rec = self.files.get(f)
                    if rec is None or rec.get("absent"):
                        continue
                    p = _path(self.path, f)
                    try:
                        size = os.path.getsize(p)
                    except FileNotFoundError:
                        size = None
                    if size is None or (size != rec.get("size") and f not in self.pending):
                        why = "is missing" if size is None else f"has {size} bytes, {rec.get('size')} were written"
                        raise StoreError(f"{p} {why}: the fetch_region copy {self.path} is damaged; call fetch_region "
                                         "with the same arguments again to verify and repair it")

    def restrict(self, tiles: list, bbox: Sequence[float], year: int) -> list:
        """The windows of ``tiles`` restricted to the blocks the copy holds: pixels outside
        them read as no data with status 3 (outside).  Refuses a year, or an area, the
        copy holds nothing of; warns when the area reaches beyond what it holds."""
        kept, short = [], False
        for t in tiles:
            group = layout.zone_group(t.zone)
            h, w = t.shape
            win = (t.r0, t.r0 + h, t.c0, t.c0 + w)
            rects = [c for c in (_clip(r, win) for r in self.rects.get((group, int(year), t.array), []))
                     if c is not None]
            need = _need(t.part, bbox, int(t.inner_chunk or 1))
            need = _clip(need, win) if need is not None else None
            if need is None:  # the window's margin only: the area misses this part
                continue
            if not rects:
                short = True
                continue
            if not _covered(need, rects):
                short = True
            self._check_files(t, need, rects)
            kept.append(_restricted(t, [(a - t.r0, b - t.r0, c - t.c0, d - t.c0) for a, b, c, d in rects]))
        if not kept:
            years = sorted({y for (_, y, _) in self.rects})
            if int(year) not in years:
                raise YearNotAvailableError(
                    f"{year} was never fetched into the fetch_region copy {self.path} (it holds {self.describe()}); "
                    f"fetch it with fetch_region(bbox, {year}, dest=...)")
            raise NoTilesInAreaError(
                f"the fetch_region copy {self.path} holds nothing of bbox {tuple(bbox)} in {year} (it holds "
                f"{self.describe()}); fetch that area with fetch_region(bbox, {year}, dest=...)")
        if short:
            warnings.warn(
                f"bbox {tuple(bbox)} ({year}) reaches beyond what the fetch_region copy {self.path} holds "
                f"({self.describe()}): pixels outside it read as NaN with data_mask 3 (outside)",
                TesseraExploreWarning, stacklevel=4)
        return kept


class _Held:
    """Pixels of a window outside the blocks a copy holds."""

    held: list  # (r0, r1, c0, c1) in the window's own pixels

    def _outside(self, rows: slice, cols: slice) -> np.ndarray | None:
        h, w = rows.stop - rows.start, cols.stop - cols.start
        held = np.zeros((h, w), bool)
        for a, b, c, d in self.held:
            ra, rb, ca, cb = max(a, rows.start), min(b, rows.stop), max(c, cols.start), min(d, cols.stop)
            if ra < rb and ca < cb:
                held[ra - rows.start:rb - rows.start, ca - cols.start:cb - cols.start] = True
        return None if held.all() else ~held

    def status(self, rows: slice, cols: slice) -> np.ndarray:
        st = super().status(rows, cols)
        out = self._outside(rows, cols)
        if out is not None:
            st[out] = 3
        return st


class _HeldStoreTile(_Held, StoreTile):
    """A window of a ``fetch_region`` copy: pixels outside the blocks it holds have no
    data and status 3 (outside), whatever the store's fill values say."""

    def _raw_scales(self, rows: slice, cols: slice) -> np.ndarray:
        s = super()._raw_scales(rows, cols)
        out = self._outside(rows, cols)
        if out is None:
            return s
        s = s.copy()
        s[out] = np.inf
        return s


class _HeldUnfilledTile(_Held, UnfilledTile):
    """An unfilled year's window of a ``fetch_region`` copy: not computed where the copy
    holds blocks, outside (3) elsewhere."""


def _restricted(tile, held: list):
    cls = _HeldStoreTile if isinstance(tile, StoreTile) else _HeldUnfilledTile
    new = object.__new__(cls)
    new.__dict__.update(tile.__dict__)
    new.held = held
    return new


def held_extent(location: str) -> HeldExtent | None:
    """What the ``fetch_region`` copy at ``location`` holds; None for any other store
    (no manifest, or not a local folder)."""
    if "://" in location or not os.path.isfile(os.path.join(location, MANIFEST)):
        return None
    m = _read_manifest(location)
    return HeldExtent(location, m) if m is not None else None


# -- copying --------------------------------------------------------------------------------------
def _array_keys(group) -> set[str]:
    """The arrays of a group of the copy (an array folder whose metadata was just removed
    as damaged is not one, and is no news)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Object at .* is not recognized")
        return set(group.array_keys())


def _like(dst_group, name: str, src_arr, **over):
    """Create (or open) ``name`` in ``dst_group`` with ``src_arr``'s layout."""
    if name in _array_keys(dst_group):
        try:
            return dst_group[name]
        except (KeyError, ValueError, TypeError) as err:  # a zarr.json that does not parse
            where = os.path.join(str(getattr(dst_group.store, "root", dst_group.store)), dst_group.path, name)
            raise StoreError(f"{where}: the copy's array metadata cannot be read "
                             f"({type(err).__name__}: {err}); delete the folder and fetch again") from err
    meta = src_arr.metadata
    kwargs = dict(shape=src_arr.shape, dtype=src_arr.dtype, chunks=src_arr.chunks,
                  compressors=src_arr.compressors or None, fill_value=meta.fill_value,
                  dimension_names=meta.dimension_names, attributes=dict(src_arr.attrs))
    if getattr(src_arr, "shards", None):
        kwargs["shards"] = src_arr.shards
    kwargs.update(over)
    return dst_group.create_array(name, **kwargs)


def _consolidate(path: str) -> None:
    """Consolidated metadata at the root, as the published stores have (zarr warns that
    consolidation is not part of the v3 spec yet: the published stores use it anyway)."""
    import zarr

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        warnings.filterwarnings("ignore", message=r"Object at \.tessera_fetch\.\w+ is not recognized")
        try:
            zarr.consolidate_metadata(path)
        except (ValueError, KeyError, TypeError) as err:  # a member's zarr.json that does not parse
            raise StoreError(f"{path}: the store's metadata cannot be consolidated ({type(err).__name__}: {err}); "
                             "a zarr.json in it is damaged: delete the folder and fetch again") from err


@dataclass
class _Job:
    key: str
    zone: int
    year: int
    ti: int
    blk: tuple[int, int, int, int]
    names: tuple[str, ...]
    order: tuple = ()
    files: list = field(default_factory=list)


class _Copy:
    """The state of one call: the manifest, the destination groups and arrays."""

    def __init__(self, dest: str, src: ZarrSource, root, manifest: dict):
        self.dest, self.src, self.root, self.m = dest, src, root, manifest
        self.files: dict = manifest.setdefault("files", {})
        self.small: dict = manifest.setdefault("small", {})
        self._zones: dict = {}
        self._arrays: dict = {}
        self.spans: dict = {}  # file key -> shard index span

    def save(self) -> None:
        _write_json_atomic(os.path.join(self.dest, MANIFEST), self.m)

    def zone(self, zone: int, want_depths: Sequence[int]):
        """``(part, source group, destination group)``; the zone's coordinates and
        statistics are copied whole the first time (and again when their files fail
        their check)."""
        part = self.src._parts[zone][0]
        name = layout.zone_group(zone)
        sg = part.group
        if zone in self._zones:
            return part, sg, self._zones[zone]
        dg = self.root.require_group(name)
        if not dict(dg.attrs):
            dg.attrs.update(dict(sg.attrs))
        self._zones[zone] = dg
        members = set(sg.array_keys())
        held = _array_keys(dg)
        for c in (*_COORDS, *(layout.depth_band(d) for d in want_depths), *layout.STATS):
            if c not in members:
                continue
            rel = f"{name}/{c}"
            recs = self.small.get(rel)
            if c in held and recs is not None:
                why = next(((f, w) for f in recs
                            if (w := _mismatch(_path(self.dest, f), self.files.get(f), None, full=True))), None)
                if why is None:
                    continue
                warnings.warn(f"{self.dest}: {_path(self.dest, why[0])}: {why[1]}; fetching it again",
                              TesseraExploreWarning, stacklevel=5)
            a = sg[c]
            d = _like(dg, c, a, shards=None, chunks=a.chunks if not getattr(a, "shards", None) else a.shards)
            d[...] = np.asarray(a[...])
            files = _files_of(rel, d, tuple(slice(None) for _ in d.shape))
            for f in files:
                self.files[f] = _fingerprint(_path(self.dest, f), None, full=True)
            self.small[rel] = files
        return part, sg, dg

    def arrays(self, zone: int, names: tuple[str, ...], want_depths):
        """``[(name, source array, destination array, dims, file key prefix)]`` a block
        of ``names`` writes: the embeddings of those depths, scales, quality arrays."""
        k = (zone, names)
        if k not in self._arrays:
            part, sg, dg = self.zone(zone, want_depths)
            rel = layout.zone_group(zone)
            out = []
            for n in (*names, layout.SCALES, *part.quality_arrays()):
                try:
                    sa = sg[n]
                except KeyError as err:
                    raise StoreError(f"{self.src.url}/{rel}: no array {n} to copy") from err
                out.append((n, sa, _like(dg, n, sa), _dims(part, n), f"{rel}/{n}"))
            self._arrays[k] = out
        return self._arrays[k]

    def job(self, key: str, want_depths) -> _Job:
        group, year, blk, names = _parse_key(key, os.path.join(self.dest, MANIFEST))
        zone = layout.parse_zone_group(group)
        if zone not in self.src._parts:
            raise StoreError(f"{self.dest} holds {group}, which {self.src.url} does not have")
        part = self.src._parts[zone][0]
        if year not in part.years:
            raise StoreError(f"{self.dest} holds {year} of {group}, which {self.src.url} does not have")
        j = _Job(key, zone, year, part.years.index(year), blk, names)
        arrays = self.arrays(zone, names, want_depths)
        shard = min(layout.chunk_grid(sa).shard for _, sa, _, _, _ in arrays)
        j.order = (group, year, blk[0] // shard, blk[2] // shard, blk[0], blk[2])
        for _, _, da, dims, rel in arrays:
            span = _index_span(da)
            for f in _files_of(rel, da, _selection(dims, j.ti, blk)):
                self.spans[f] = span
                j.files.append(f)
        return j


def _damaged_metadata(dest: str) -> list[str]:
    """Remove the copy's ``zarr.json`` files (root, zone groups, arrays) that are not Zarr
    v3 metadata, so that they are written again from the source (the shards they describe
    are verified against the manifest as usual); returns their paths."""
    cands = [os.path.join(dest, "zarr.json")]
    for z in sorted(os.listdir(dest)):
        zdir = os.path.join(dest, z)
        if layout.parse_zone_group(z) and os.path.isdir(zdir):
            cands.append(os.path.join(zdir, "zarr.json"))
            cands += [os.path.join(zdir, a, "zarr.json") for a in sorted(os.listdir(zdir))
                      if os.path.isdir(os.path.join(zdir, a))]
    gone = []
    for p in cands:
        try:
            with open(p, encoding="utf-8") as f:
                meta = json.load(f)
        except FileNotFoundError:
            continue
        except (ValueError, RecursionError):
            meta = None
        if not (isinstance(meta, dict) and meta.get("zarr_format") == 3 and meta.get("node_type") in ("group", "array")):
            _remove(p)
            gone.append(p)
    return gone


def _check_dest(dest: str) -> None:
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise StoreError(f"dest={dest} is a file, not a folder; fetch_region writes a store folder there")
    try:
        os.makedirs(dest, exist_ok=True)
    except OSError as err:
        raise StoreError(f"dest={dest}: cannot create the folder ({err.strerror or err})") from err


def fetch_region(
    bbox: Sequence[float],
    years: int | Iterable[int],
    *,
    dest: str | os.PathLike,
    source: str | os.PathLike = "v1.1",
    depths: Iterable[int] | None = None,
    progress: bool = True,
    cache: Any = None,
    base_url: str | None = None,
    http_options: dict | None = None,
) -> str:
    """Copy what an area needs from a store into a local store of the same layout.

    Parameters
    ----------
    bbox : ``(west, south, east, north)`` in degrees.
    years : a year or several.
    dest : folder of the local store (created; an earlier, interrupted fetch of the same
        dataset into it is resumed, and a fetch of another area or year adds to it).
    source : a published dataset name (``"v1.1"``, ``"v2"`` ...), a store URL, or a path.
    depths : band counts to copy (e.g. ``[16]`` for a v2 store's 16-band prefix only);
        None copies the full embeddings.  Scales are always copied.
    progress : show a progress bar over blocks.
    cache : the HTTP cache of the source (default: none, the copy is the cache).

    Returns the local store's path; open it with ``open_embeddings(dest, bbox=..., year=...)``.
    The copy holds every pixel ``open_embeddings`` reads for this bbox (in the CRS of any
    UTM zone it touches); opened beyond what it holds, pixels read as NaN with
    ``data_mask`` 3 (outside), with a warning naming what it holds.

    Raises VersionMismatchError when ``dest`` holds another dataset, StoreError when the
    source cannot be read, when ``dest`` is a file or cannot be written, or when another
    call is writing into ``dest`` (nothing unverified is ever recorded as done; a later
    call verifies every recorded file and fetches again what is missing or damaged).
    """
    import zarr
    from tqdm.auto import tqdm

    bbox = grid.normalize_bbox(bbox)
    years = [int(years)] if isinstance(years, (int, np.integer)) else sorted({int(y) for y in years})
    if not years:
        raise TesseraExploreError("fetch_region needs at least one year")
    dest = os.fspath(dest)
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise StoreError(f"dest={dest} is a file, not a folder; fetch_region writes a store folder there")
    src = open_store(source, cache=cache, base_url=base_url, http_options=http_options)
    if src.icechunk:
        raise StoreError("fetch_region copies from Zarr stores; open the Icechunk copy directly instead")
    want_depths = sorted({int(d) for d in depths}) if depths is not None else [src.nbands]
    names = tuple(src.array_name(d) for d in want_depths)
    zones = [z for z in zones_in_bbox(bbox) if z in src.zones]
    if not zones:
        raise StoreError(f"no zone of {src.url} covers bbox {bbox} (zones in the store: {src.zones})")
    for y in years:
        src.check_year(y, zones)
    _check_dest(dest)
    try:
        with _locked(dest):
            _fetch(dest, src, bbox, years, want_depths, names, zones, progress, zarr, tqdm)
    except TesseraExploreError:
        raise
    except OSError as err:
        where = err.filename or dest
        raise StoreError(f"fetch_region into {dest}: {where}: {err.strerror or err}") from err
    finally:
        # a later open must see the new manifest and consolidated metadata, not a cached one
        from . import store as _store

        with _store._SOURCES_LOCK:
            for k in [k for k in _store._SOURCES if os.path.abspath(str(k[0])) == os.path.abspath(dest)]:
                del _store._SOURCES[k]
    return dest


def _fetch(dest, src, bbox, years, want_depths, names, zones, progress, zarr, tqdm) -> None:
    # the manifest names the dataset before any byte is written
    ident = {"source": src.url, "dataset_version": src.version, "dataset_variant": src.variant}
    manifest = _read_manifest(dest)
    if manifest is None:
        if [n for n in os.listdir(dest) if n != LOCK]:
            raise StoreError(f"{dest} is not empty and holds no fetch manifest; fetch into a new folder")
        manifest = {"format": FORMAT, **ident, "done": [], "files": {}, "small": {}, "requests": []}
        _write_json_atomic(os.path.join(dest, MANIFEST), manifest)
    elif (manifest.get("dataset_version"), manifest.get("dataset_variant")) != (src.version, src.variant):
        raise VersionMismatchError(
            f"{dest} holds {manifest.get('dataset_version')} (variant {manifest.get('dataset_variant')}) from "
            f"{manifest.get('source')}; it cannot take {src.version} (variant {src.variant}) from {src.url}. "
            "Embeddings of different datasets never share a store; fetch into another folder.")
    if manifest.get("format") != FORMAT:
        # written before files were recorded: every block is verified by fetching it again
        manifest.update(format=FORMAT, files={}, small={})
    request = {"bbox": list(bbox), "years": years, "depths": want_depths, "complete": False}
    reqs = manifest.setdefault("requests", [])
    for r in reqs:
        if (r.get("bbox"), r.get("years"), r.get("depths")) == (request["bbox"], years, want_depths):
            request = r
            r["complete"] = False
            break
    else:
        reqs.append(request)

    # the files themselves, not the consolidated view of the last call (which would hide a
    # damaged or missing array metadata file until consolidation fails on it)
    gone = _damaged_metadata(dest)
    if gone:
        warnings.warn(f"{dest}: {len(gone)} metadata file(s) of the copy do not parse ({gone[0]}): written again "
                      "from the source", TesseraExploreWarning, stacklevel=3)
    root = zarr.open_group(dest, mode="a", zarr_format=3, use_consolidated=False)
    attrs = dict(root.attrs)
    new = dict(attrs) if attrs else {**src.attrs, "dataset_version": src.version, "dataset_variant": src.variant,
                                     "tessera_explore:fetched_from": src.url}
    # the depth arrays the copy holds (any zone) and those this call adds
    zdirs = [os.path.join(dest, n) for n in os.listdir(dest) if layout.parse_zone_group(n)]
    have = sorted(set(want_depths) | {d for d, a in src.depths.items() if any(os.path.isdir(os.path.join(z, a))
                                                                              for z in zdirs)})
    if have != [src.nbands]:
        new[layout.GEOEMB_DEPTHS] = [{"dimensions": d, "array": src.depths[d]} for d in have]
    if new != attrs:
        root.attrs.update(new)
        if attrs:
            _consolidate(dest)  # rewriting the root's attributes dropped its consolidated metadata
    cp = _Copy(dest, src, root, manifest)
    files = cp.files

    # 1. verify every block recorded as done: its files must be what was written
    done: dict[str, _Job] = {k: cp.job(k, want_depths) for k in dict.fromkeys(manifest.get("done", []))}
    users: dict[str, set] = {}
    for j in done.values():
        for f in j.files:
            users.setdefault(f, set()).add(j.key)
    bad = {}
    for f in users:
        why = _mismatch(_path(dest, f), files.get(f), cp.spans.get(f), full=True)
        if why is not None:
            bad[f] = why
    repairs: list[_Job] = []
    if bad:
        lost = sorted({k for f in bad for k in users[f]})
        first = next(iter(bad.items()))
        warnings.warn(f"{dest}: {len(bad)} file(s) of the copy are not what the manifest records (a call was "
                      f"interrupted, or the files were changed: {_path(dest, first[0])}: {first[1]}); fetching the "
                      f"{len(lost)} block(s) they hold again", TesseraExploreWarning, stacklevel=3)
        for f in bad:
            _remove(_path(dest, f))
            files.pop(f, None)
        for k in lost:
            repairs.append(done.pop(k))
        manifest["done"] = list(done)
        cp.save()

    # 2. the blocks of this request the copy does not hold yet
    held: dict[tuple[str, int], list] = {}
    for j in done.values():
        held.setdefault((layout.zone_group(j.zone), j.year), []).append((j.blk, set(j.names)))
    jobs: list[_Job] = []
    for z in zones:
        part = src._parts[z][0]
        group = layout.zone_group(z)
        arrays = cp.arrays(z, names, want_depths)
        # blocks of whole inner chunks of every array, never across a shard (sizes from
        # the arrays' own metadata)
        grids = [layout.chunk_grid(sa) for _, sa, _, _, _ in arrays]
        inner, shard = max(g.inner for g in grids), min(g.shard for g in grids)
        win = _need(part, bbox, inner)
        if win is None:
            continue
        for y in years:
            if y not in part.years:
                continue
            have = [r for r, ns in held.get((group, y), []) if ns >= set(names)]
            for blk in _blocks(win, shard, inner, BLOCK):
                if _covered(blk, have):
                    continue
                if src.held is not None and not src.held.covers(group, y, names, blk):
                    raise StoreError(f"the source {src.url} is a fetch_region copy that does not hold bbox {bbox} "
                                     f"in {y} (it holds {src.held.describe()})")
                jobs.append(cp.job(_key(group, y, blk, names), want_depths))
    keys = {j.key for j in jobs}
    jobs += [j for j in repairs if j.key not in keys]
    jobs.sort(key=lambda j: j.order)
    remaining: dict[str, int] = {}
    for j in jobs:
        for f in j.files:
            remaining[f] = remaining.get(f, 0) + 1

    # 3. copy, read back, record
    bar = tqdm(total=len(jobs), desc="fetching blocks", unit="block", disable=not progress)
    try:
        i = 0
        while i < len(jobs):
            j = jobs[i]
            i += 1
            # a file of this block that is not what the manifest says (left by a call that
            # was killed between writing and recording) is removed, and the blocks
            # recorded in it are fetched again
            for f in j.files:
                why = _mismatch(_path(dest, f), files.get(f), cp.spans.get(f), full=False)
                if why is None:
                    continue
                _remove(_path(dest, f))
                files.pop(f, None)
                for k in sorted(users.pop(f, set())):
                    if k in done:
                        again = done.pop(k)
                        jobs.append(again)
                        bar.total += 1
                        for g in again.files:
                            remaining[g] = remaining.get(g, 0) + 1
                manifest["done"] = list(done)
            # the files about to change: a copy opened after a kill here reads them as they are
            manifest["pending"] = {"key": j.key, "files": j.files}
            cp.save()
            for n, sa, da, dims, _ in cp.arrays(j.zone, j.names, want_depths):
                sel = _selection(dims, j.ti, j.blk)
                data = np.asarray(sa[sel])
                da[sel] = data
                back = np.asarray(da[sel])
                if back.shape != data.shape or not np.array_equal(back, data, equal_nan=True):
                    raise StoreError(f"{dest}: block {j.key} of {n} reads back differently from what was written; "
                                     "the disk may be full or failing")
            for f in j.files:
                remaining[f] -= 1
                files[f] = _fingerprint(_path(dest, f), cp.spans.get(f), full=remaining[f] <= 0)
                users.setdefault(f, set()).add(j.key)
            done[j.key] = j
            manifest["done"] = list(done)
            manifest.pop("pending", None)
            cp.save()
            bar.update(1)
    finally:
        bar.close()
    request["complete"] = True
    cp.save()
    _consolidate(dest)
