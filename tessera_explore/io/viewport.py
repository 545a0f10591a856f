"""Views of a whole published store that follow a map: the data layer of "explore anywhere".

A map shows a lon/lat box; :class:`ViewLoader` turns it into the embeddings behind it,
reading only what is new:

* :func:`resolve_store` opens what the user named (a dataset name, a URL, a local
  store or a ``fetch_region`` copy) through :func:`~tessera_explore.io.store.open_store`;
* :meth:`ViewLoader.plan` says, without reading a pixel, whether a view fits the memory
  budget (kind ``"load"``, with the depths to load in order: 16 first where the store
  has the prefix, then 128) or not (kind ``"footprint"``: show
  :func:`coverage_footprint` and ask the user to zoom in);
* :meth:`ViewLoader.load` gives the view as the package's embeddings DataArray, on
  exactly the grid and with exactly the values of ``open_embeddings(store, bbox=...)``
  (the UTM zone of the view's centre; pixels of a neighbouring zone resampled as
  ``open_embeddings`` does).  The array is lazy over int8 codes held in memory: the
  store's arrays are cut into *blocks* aligned to their inner chunks and shards, kept
  decoded (int8 codes, float32 scales) in a :class:`BlockCache` bounded in bytes; a view
  reads only the blocks it lacks, all at once (coalesced ranges through
  :class:`~tessera_explore.io.shards.WindowReader`, whose HTTP store answers from its
  disk cache first), and a pan back to a seen view reads nothing;
* :class:`~tessera_explore.project.store_colours.StoreColours` (in ``project``, since it
  fits a projection) fits one PCA per (year, depth) from the store's per-zone
  statistics (``stretch_stats_*``, summed over every zone: no pixel read), with its
  colour stretch fitted on the stored pixel sample, so every view of every zone gets
  the same colour for the same embedding; ``false_colour`` applies it.

See ``docs/design/explore-anywhere.md``.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from ..exceptions import AreaTooLargeError, ArgumentError, NoTilesInAreaError, StoreError
from . import grid, layout

__all__ = [
    "VIEW_BUDGET",
    "CACHE_BYTES",
    "BLOCK",
    "resolve_store",
    "BlockCache",
    "ViewPlan",
    "ViewLoader",
    "project_view",
    "coverage_footprint",
    "overview_layer",
]

#: Largest view loaded (bytes of its float32 embeddings at the depth asked): 600 MiB is a
#: 10 km view (1,000 x 1,000 px, 512 MB at 128 bands) with room, and leaves a Binder
#: kernel (2 GB) the rest for the int8 block cache (:data:`CACHE_BYTES`), the libraries
#: and the explorer's own arrays.  Depth 16 fits 8 times the pixels.
VIEW_BUDGET = 600 << 20
#: Bytes of decoded blocks (int8 codes + float32 scales) kept in memory: about two and a
#: half full-depth 10 km views (132 MB each) and their depth-16 previews.
CACHE_BYTES = 384 << 20
#: Preferred block side (pixels): rounded to a multiple of each array's inner chunk that
#: divides its shard (256 px: 8.4 MB of codes at 128 bands).
BLOCK = 256


# -- opening ------------------------------------------------------------------------------------
def resolve_store(source: Any, *, cache: Any = "auto", base_url: str | None = None,
                  http_options: dict | None = None):
    """The opened store (:class:`~tessera_explore.io.store.ZarrSource`) behind ``source``.

    ``source``: a published dataset name (``"v1.1"``, ``"v2"``, ... see
    :data:`~tessera_explore.io.store.DATASETS`), an ``http(s)://`` store URL, a local
    store folder (a ``fetch_region`` copy is one), an already opened ``ZarrSource``, or
    an embeddings DataArray opened from one store.  Stores are opened once per process
    (metadata only); the options are those of :func:`~tessera_explore.open_embeddings`.
    """
    from .store import ZarrSource, is_store_location, open_store

    if isinstance(source, ZarrSource):
        return source
    if isinstance(source, xr.DataArray):
        from .open import store_of

        st = store_of(source)
        if st is None:
            raise ArgumentError(f"this array does not come from one Zarr store (its source is "
                                f"{source.attrs.get('source', '?')}); pass a store name, URL or path")
        return st
    if not isinstance(source, (str, os.PathLike)):
        raise ArgumentError(f"expected a store name, URL or path, got {type(source).__name__}")
    if not is_store_location(source):
        raise StoreError(f"{os.fspath(source)} is not a Zarr store: expected a dataset name, an http(s):// URL or a "
                         "folder holding zarr.json")
    return open_store(source, cache=cache, base_url=base_url, http_options=http_options)


# -- the block cache ------------------------------------------------------------------------------
class BlockCache:
    """Decoded blocks in memory, least recently used first out, at most ``max_bytes``.

    Keys are ``(store url, array path, time index, block row, block col)``; values are
    NumPy arrays (int8 codes ``(bands, h, w)`` or float32 scales ``(h, w)``).  ``nbytes``
    is what it holds now and ``peak`` the most it ever held.
    """

    def __init__(self, max_bytes: int = CACHE_BYTES):
        self.max_bytes = int(max_bytes)
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0
        self.peak = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._data

    def get(self, key):
        """The block, marked recently used, or None."""
        with self._lock:
            v = self._data.get(key)
            if v is not None:
                self._data.move_to_end(key)
            return v

    def put(self, key, value: np.ndarray) -> None:
        """Add a block, evicting the least recently used ones beyond ``max_bytes``."""
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self.nbytes -= old.nbytes
            self._data[key] = value
            self.nbytes += value.nbytes
            while self.nbytes > self.max_bytes and len(self._data) > 1:
                _, v = self._data.popitem(last=False)
                self.nbytes -= v.nbytes
            self.peak = max(self.peak, self.nbytes)

    def keep_only(self, keys: Iterable) -> int:
        """Drop every block not in ``keys``; returns the bytes released."""
        keep = set(keys)
        freed = 0
        with self._lock:
            for k in [k for k in self._data if k not in keep]:
                freed += self._data.pop(k).nbytes
            self.nbytes -= freed
        return freed

    def clear(self) -> None:
        """Drop every block."""
        with self._lock:
            self._data.clear()
            self.nbytes = 0


@dataclass
class _Counters:
    views: int = 0
    blocks_read: int = 0
    blocks_hit: int = 0
    reads: int = 0  # read calls (each a batch of rectangles)


class _Blocks:
    """The block grid of one zone array for one time index, and how to read it."""

    def __init__(self, loader: ViewLoader, url: str, arr, reader, ti: int, kind: str):
        self.loader, self.arr, self.reader, self.ti, self.kind = loader, arr, reader, ti, kind
        cg = layout.chunk_grid(arr)
        self.side = _block_side(loader.block, cg.inner, cg.shard)
        self.H, self.W = int(arr.shape[-2]), int(arr.shape[-1])
        self.nb = int(arr.shape[1]) if kind == "codes" else 0
        self.prefix = (url, str(arr.path), int(ti))

    def key(self, br: int, bc: int) -> tuple:
        return (*self.prefix, br, bc)

    def span(self, rows: slice, cols: slice) -> list[tuple[int, int]]:
        B = self.side
        return [(br, bc) for br in range(rows.start // B, (rows.stop - 1) // B + 1)
                for bc in range(cols.start // B, (cols.stop - 1) // B + 1)]

    def shape_of(self, br: int, bc: int) -> tuple[int, int]:
        B = self.side
        return min(B, self.H - br * B), min(B, self.W - bc * B)

    def new_block(self, br: int, bc: int) -> np.ndarray:
        h, w = self.shape_of(br, bc)
        if self.kind == "codes":
            return np.empty((self.nb, h, w), self.arr.dtype)
        return np.empty((h, w), np.float32)

    def read_rects(self, rects: list[tuple[int, int, int, int]], out: dict) -> list:
        """Coroutines reading rectangles of blocks ``(br0, br1, bc0, bc1)`` into ``out``
        (``{(br, bc): block}``, allocated here); the arrays without a coalescing reader
        are read at once through zarr-python and give no coroutine."""
        from .store import decoding

        B, coros = self.side, []
        for br0, br1, bc0, bc1 in rects:
            for br in range(br0, br1):
                for bc in range(bc0, bc1):
                    out[(br, bc)] = self.new_block(br, bc)
            r0, r1 = br0 * B, min(br1 * B, self.H)
            c0, c1 = bc0 * B, min(bc1 * B, self.W)
            t = slice(self.ti, self.ti + 1)
            if self.reader is None:
                with decoding(f"{self.prefix[0]}/{self.arr.path}"):
                    if self.kind == "codes":
                        vals = np.asarray(self.arr[self.ti, :, r0:r1, c0:c1])
                    else:
                        vals = np.asarray(self.arr[self.ti, r0:r1, c0:c1], np.float32)
                self._split((slice(r0, r1), slice(c0, c1)), vals, out)
                continue
            sel = (t, slice(0, self.nb), slice(r0, r1), slice(c0, c1)) if self.kind == "codes" else \
                (t, slice(r0, r1), slice(c0, c1))

            def sink(dst, block, r0=r0, c0=c0):
                rs, cs = dst[-2], dst[-1]
                # the time axis is one long: drop it
                self._split((slice(rs.start + r0, rs.stop + r0), slice(cs.start + c0, cs.stop + c0)), block[0], out)

            coros.append(self.reader.read(sel, sink))
        return coros

    def _split(self, where: tuple[slice, slice], vals: np.ndarray, out: dict) -> None:
        """Write ``vals`` (``(..., h, w)`` at array rows/cols ``where``) into the blocks."""
        B = self.side
        rows, cols = where
        br, bc = rows.start // B, cols.start // B
        if (rows.stop - 1) // B == br and (cols.stop - 1) // B == bc:  # one block (inner chunks always)
            out[(br, bc)][..., rows.start - br * B:rows.stop - br * B, cols.start - bc * B:cols.stop - bc * B] = vals
            return
        for br, bc in self.span(rows, cols):
            a, b = max(rows.start, br * B), min(rows.stop, (br + 1) * B)
            c, d = max(cols.start, bc * B), min(cols.stop, (bc + 1) * B)
            out[(br, bc)][..., a - br * B:b - br * B, c - bc * B:d - bc * B] = \
                vals[..., a - rows.start:b - rows.start, c - cols.start:d - cols.start]


def _block_side(want: int, inner: int, shard: int) -> int:
    from .open import chunk_side

    return chunk_side(int(want), int(inner), int(shard))


def _rectangles(missing: Iterable[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """Blocks ``(br, bc)`` grouped into rectangles ``(br0, br1, bc0, bc1)``: runs along each
    row, then runs of rows with the same columns (a pan's L-shaped strip gives two)."""
    by_row: dict[int, list[int]] = {}
    for br, bc in missing:
        by_row.setdefault(br, []).append(bc)
    runs: list[tuple[int, int, int]] = []
    for br in sorted(by_row):
        cs = sorted(by_row[br])
        start = prev = cs[0]
        for c in cs[1:]:
            if c != prev + 1:
                runs.append((br, start, prev + 1))
                start = c
            prev = c
        runs.append((br, start, prev + 1))
    rects: list[list[int]] = []
    open_: dict[tuple[int, int], list[int]] = {}
    for br, c0, c1 in runs:
        r = open_.get((c0, c1))
        if r is not None and r[1] == br:
            r[1] = br + 1
        else:
            r = [br, br + 1, c0, c1]
            rects.append(r)
            open_[(c0, c1)] = r
    return [tuple(r) for r in rects]


# -- tiles whose reads come from the blocks --------------------------------------------------------
class _CachedReads:
    """Mixed into a :class:`~tessera_explore.io.store.StoreTile` (or a ``fetch_region``
    copy's tile): its raw reads of codes and scales come from the loader's blocks."""

    _loader: ViewLoader

    def _abs(self, rows: slice, cols: slice) -> tuple[slice, slice]:
        return self._rows(rows), self._cols(cols)

    def _assemble(self, which: str, rows: slice, cols: slice) -> np.ndarray:
        r, c = self._abs(rows, cols)
        got = self._loader._ensure([(self, r, c)], (which,))[(self._grid(which).prefix)]
        g = self._grid(which)
        B = g.side
        h, w = r.stop - r.start, c.stop - c.start
        out = np.empty(((g.nb,) if which == "codes" else ()) + (h, w), np.int8 if which == "codes" else np.float32)
        for (br, bc), blk in got.items():
            a, b = max(r.start, br * B), min(r.stop, (br + 1) * B)
            cc, d = max(c.start, bc * B), min(c.stop, (bc + 1) * B)
            if a < b and cc < d:
                out[..., a - r.start:b - r.start, cc - c.start:d - c.start] = \
                    blk[..., a - br * B:b - br * B, cc - bc * B:d - bc * B]
        return out

    def _grid(self, which: str) -> _Blocks:
        return self._loader._grid(self, which)

    def _raw_scales(self, rows: slice, cols: slice) -> np.ndarray:
        s = self._assemble("scales", rows, cols)
        outside = getattr(self, "_outside", None)  # a fetch_region copy: outside its blocks
        if outside is not None:
            out = outside(rows, cols)
            if out is not None:
                s[out] = np.inf
        return s

    def _codes_raw(self, rows: slice, cols: slice) -> np.ndarray:
        return self._assemble("codes", rows, cols)

    def read_float_into(self, out: np.ndarray, rows: slice, cols: slice) -> None:
        s = self._clean(self._raw_scales(rows, cols))
        np.multiply(self._codes_raw(rows, cols), s[None], out=out, casting="unsafe")


_MIXED: dict[type, type] = {}


def _cached_tile(tile, loader: ViewLoader):
    """``tile`` reading through ``loader``'s blocks (tiles that read nothing, and the
    Icechunk copy's band-last tiles, are returned as they are)."""
    from .store import StoreTile

    if not isinstance(tile, StoreTile) or tile.part.band_last:
        return tile
    cls = type(tile)
    mixed = _MIXED.get(cls)
    if mixed is None:
        mixed = _MIXED[cls] = type(f"Cached{cls.__name__}", (_CachedReads, cls), {})
    new = object.__new__(mixed)
    new.__dict__.update(tile.__dict__)
    new._loader = loader
    return new


# -- plans and views --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ViewPlan:
    """What a view would cost, decided from geometry alone (nothing is read).

    ``kind``: ``"load"`` (load ``depths`` in this order) or ``"footprint"`` (too large, or
    outside every zone of the store: show the coverage footprint).  ``shape``: the view's
    ``(rows, cols)`` on the grid of ``epsg``; ``nbytes``: float32 bytes of the view per
    depth; ``message``: what to tell the user (``""`` when everything loads).
    """

    kind: str
    bbox: tuple[float, float, float, float]
    epsg: int
    shape: tuple[int, int]
    depths: tuple[int, ...]
    nbytes: dict = field(default_factory=dict)
    message: str = ""


class ViewLoader:
    """Loads the views of a map over one store and year, reading only what is new.

    Parameters
    ----------
    store : anything :func:`resolve_store` takes.
    year : the year to show (may be left out when the store holds one).
    budget : the most bytes of float32 embeddings one view may hold at the depth loaded
        (default :data:`VIEW_BUDGET`); a larger view plans as ``"footprint"``.
    cache_bytes : bytes of decoded blocks kept in memory (default :data:`CACHE_BYTES`).
    keep_views : blocks of views older than the last ``keep_views`` views loaded are released
        (a view is its bbox: its depth-16 and full-depth loads count once).
    block : preferred block side in pixels (rounded to the arrays' chunk grids).
    store_options : ``cache``, ``base_url``, ``http_options`` for :func:`resolve_store`.

    Attributes: ``store``, ``year``, ``cache`` (the :class:`BlockCache`), ``counters``
    (views loaded, blocks read and found in memory, read batches), ``depths`` (the
    depths a view loads, in order).
    """

    def __init__(self, store: Any, *, year: int | None = None, budget: int = VIEW_BUDGET,
                 cache_bytes: int = CACHE_BYTES, keep_views: int = 3, block: int = BLOCK,
                 **store_options: Any):
        unknown = set(store_options) - {"cache", "base_url", "http_options"}
        if unknown:
            raise ArgumentError(f"unknown options {sorted(unknown)}; expected cache, base_url, http_options")
        if int(budget) <= 0 or int(cache_bytes) <= 0 or int(keep_views) < 1 or int(block) < 1:
            raise ArgumentError("budget, cache_bytes, block and keep_views must be positive")
        self.store = resolve_store(store, **store_options)
        self.year = self.store.check_year(year)
        self.budget = int(budget)
        self.block = int(block)
        self.keep_views = int(keep_views)
        self.cache = BlockCache(cache_bytes)
        self.counters = _Counters()
        self._grids: dict[tuple, _Blocks] = {}
        self._fetch_lock = threading.Lock()
        # block keys of the last views (by bbox: a view's depths count once), newest last
        self._recent: OrderedDict[tuple, set] = OrderedDict()
        self._recent_lock = threading.Lock()
        self._background = None  # the executor of load_async, made on first use
        self.last_blocks: frozenset = frozenset()

    def __repr__(self) -> str:
        return (f"ViewLoader({self.store.url!r}, year={self.year}, depths={self.depths}, "
                f"cache={self.cache.nbytes / 2**20:.0f}/{self.cache.max_bytes / 2**20:.0f} MiB)")

    @property
    def depths(self) -> tuple[int, ...]:
        """16 then the full depth where the store has a 16-band prefix, else the full depth."""
        full = self.store.nbands if self.store.nbands in self.store.depths else max(self.store.depths)
        return (16, full) if 16 in self.store.depths and full != 16 else (full,)

    # -- planning ------------------------------------------------------------------------------
    def plan(self, bbox: Sequence[float]) -> ViewPlan:
        """Whether the view ``bbox`` (west, south, east, north) loads, and at which depths;
        decided from geometry alone (no read)."""
        from rasterio.warp import transform_bounds

        from .store import zones_in_bbox

        bbox = grid.normalize_bbox(bbox)
        epsg = grid.utm_epsg((bbox[0] + bbox[2]) / 2, 0.0)
        x0, y0, x1, y1 = transform_bounds("EPSG:4326", f"EPSG:{epsg}", *bbox, densify_pts=21)
        res = float(self.store.attrs.get(layout.GEOEMB_GSD, 10.0))
        shape = (max(1, math.ceil((y1 - y0) / res)), max(1, math.ceil((x1 - x0) / res)))
        npx = shape[0] * shape[1]
        nbytes = {d: npx * d * 4 for d in self.depths}
        if not any(z in self.store.zones for z in zones_in_bbox(bbox)):
            return ViewPlan("footprint", bbox, epsg, shape, (), nbytes,
                            f"the store has no data here (its zones: {self.store.zones})")
        fits = tuple(d for d in self.depths if nbytes[d] <= self.budget and self._int8_bytes(npx, d) <= self.cache.max_bytes)
        if not fits:
            return ViewPlan("footprint", bbox, epsg, shape, (), nbytes,
                            f"zoom in to load embeddings (this view is {shape[1]:,} x {shape[0]:,} px; "
                            f"{nbytes[self.depths[0]] / 2**20:,.0f} MiB at depth {self.depths[0]}, the budget is "
                            f"{self.budget / 2**20:,.0f} MiB)")
        msg = "" if fits == self.depths else f"zoom in for depth {self.depths[-1]} (showing depth {fits[-1]})"
        return ViewPlan("load", bbox, epsg, shape, fits, nbytes, msg)

    @staticmethod
    def _int8_bytes(npx: int, depth: int) -> int:
        return npx * (depth + 4)

    # -- loading ---------------------------------------------------------------------------------
    def load(self, bbox: Sequence[float], *, depth: int | None = None,
             progress: Callable[[int, int], None] | None = None) -> xr.DataArray:
        """The embeddings of the view ``bbox`` at ``depth`` (default: the last depth the
        plan allows), as :func:`~tessera_explore.open_embeddings` gives them for the same
        bbox: lazy over int8 blocks held in memory (``.values`` reads no store).  Only
        blocks not in memory are read.  ``progress(done, total)`` is called as blocks
        arrive.  A view beyond the budget raises :class:`AreaTooLargeError` (ask
        :meth:`plan` first to avoid it)."""
        from rasterio.crs import CRS

        from .. import _schema
        from .codes import ATTR, register
        from .mosaic import Mosaic
        from .open import lazy_data, output_grid
        from .store import zones_in_bbox

        p = self.plan(bbox)
        if p.kind != "load":
            raise AreaTooLargeError(p.message)
        depth = p.depths[-1] if depth is None else int(depth)
        if depth not in p.depths:
            raise AreaTooLargeError(f"depth {depth} cannot be loaded for this view: {p.message or p.depths}")
        st = self.store
        if not any(self.year in pt.years for z in zones_in_bbox(p.bbox) for pt in st._parts.get(z, [])):
            raise NoTilesInAreaError(f"{st.url} holds no {self.year} data in bbox {p.bbox}")
        tiles = st.windows(p.bbox, self.year, depth=None if depth == st.nbands else depth)
        tiles = [_cached_tile(t, self) for t in tiles]
        crs = CRS.from_epsg(p.epsg)
        out_crs, out_grid = output_grid(tiles, p.bbox, crs, min(t.res for t in tiles))
        mosaic = Mosaic(tiles, crs=out_crs, transform=out_grid.transform, shape=out_grid.shape)
        if not mosaic._candidates(slice(0, out_grid.shape[0]), slice(0, out_grid.shape[1])):
            raise NoTilesInAreaError(f"bbox {p.bbox} lies outside every zone of {st.url}")
        touched: set = set()
        self._prefetch(mosaic, progress, touched)
        self._remember(p.bbox, touched)
        #: the block keys of the last view loaded
        self.last_blocks = frozenset(touched)
        self.counters.views += 1
        token = register(mosaic)
        data = lazy_data(mosaic, None, token, tiles, out_crs, out_grid.transform)
        c = out_grid.coords()
        return _schema.make_embedding_array(
            data, x=c["x"], y=c["y"], crs=out_crs, year=self.year, dataset_version=st.version,
            dataset_variant=st.variant, source=st.url,
            extra_attrs={ATTR: token, "resampling": "nearest", "n_tiles": len(tiles), "bbox": list(p.bbox),
                         "store": st.url, "depth": int(mosaic.nbands)})

    def load_async(self, bbox: Sequence[float], *, depth: int | None = None,
                   progress: Callable[[int, int], None] | None = None):
        """:meth:`load` in a background thread: a :class:`concurrent.futures.Future` of the
        DataArray.  Loads started this way run one after the other, in order; e.g. start
        the full depth as soon as depth 16 is loaded, and paint depth 16 while it reads.
        Errors (:class:`AreaTooLargeError`, ...) come out of ``future.result()``."""
        from concurrent.futures import ThreadPoolExecutor

        with self._recent_lock:
            if self._background is None:
                self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tessera-explore-view")
        return self._background.submit(self.load, bbox, depth=depth, progress=progress)

    def _prefetch(self, mosaic, progress, touched: set) -> None:
        """Bring every block the mosaic will read into memory, in one batch."""
        from rasterio.warp import transform_bounds

        h, w = mosaic.shape
        o = mosaic.transform
        bounds = (o.c, o.f + o.e * h, o.c + o.a * w, o.f)
        wants = []
        for t in mosaic.tiles:
            if not isinstance(t, _CachedReads):
                continue
            if t.crs == mosaic.crs:
                x0, y0, x1, y1 = bounds
                pad = 0
            else:  # read as the mosaic maps another zone: the rectangle under the view, plus a pixel
                x0, y0, x1, y1 = transform_bounds(mosaic.crs, t.crs, *bounds, densify_pts=41)
                pad = 2
            tt, (th, tw) = t.transform, t.shape
            c0 = max(0, int(math.floor((x0 - tt.c) / tt.a)) - pad)
            c1 = min(tw, int(math.ceil((x1 - tt.c) / tt.a)) + pad)
            r0 = max(0, int(math.floor((tt.f - y1) / tt.a)) - pad)
            r1 = min(th, int(math.ceil((tt.f - y0) / tt.a)) + pad)
            if r0 < r1 and c0 < c1:
                wants.append((t, *t._abs(slice(r0, r1), slice(c0, c1))))
        if wants:
            self._ensure(wants, ("codes", "scales"), progress=progress, touched=touched)

    def _grid(self, tile, which: str) -> _Blocks:
        arr, reader = (tile._emb, tile._emb_reader) if which == "codes" else (tile._scales, tile._scales_reader)
        key = (self.store.url, str(arr.path), tile.ti, which)
        g = self._grids.get(key)
        if g is None:
            g = self._grids[key] = _Blocks(self, self.store.url, arr, reader, tile.ti, which)
        return g

    def _ensure(self, wants, kinds: Sequence[str], progress=None, touched: set | None = None) -> dict:
        """The blocks under every ``(tile, rows, cols)`` of ``wants`` (array rows/cols), for
        each kind (``"codes"``, ``"scales"``): ``{grid prefix: {(br, bc): block}}``.  Blocks
        not in memory are read in one batch.  ``touched`` receives every block's key."""
        found: dict = {}
        need: dict = {}
        for tile, rows, cols in wants:
            for kind in kinds:
                g = tile._grid(kind)
                got = found.setdefault(g.prefix, {})
                for br, bc in g.span(rows, cols):
                    if (br, bc) in got:
                        continue
                    blk = self.cache.get(g.key(br, bc))
                    if blk is None:
                        need.setdefault(g.prefix, (g, set()))[1].add((br, bc))
                    else:
                        got[(br, bc)] = blk
                        self.counters.blocks_hit += 1
                    if touched is not None:
                        touched.add(g.key(br, bc))
        if need:
            with self._fetch_lock:
                coros, fresh, total = [], [], 0
                for prefix, (g, missing) in need.items():
                    # another thread may have read some while this one waited
                    still = set()
                    for b in missing:
                        blk = self.cache.get(g.key(*b))
                        if blk is None:
                            still.add(b)
                        else:
                            found[prefix][b] = blk
                    missing = still
                    if not missing:
                        continue
                    out: dict = {}
                    coros += g.read_rects(_rectangles(missing), out)
                    fresh.append((g, out))
                    total += len(missing)
                if coros:
                    self._run(coros, progress, total)
                self.counters.reads += 1
                for g, out in fresh:
                    for b, blk in out.items():
                        self.cache.put(g.key(*b), blk)
                        found[g.prefix][b] = blk
                        self.counters.blocks_read += 1
                if progress is not None:
                    progress(total, total)
        return found

    @staticmethod
    def _run(coros, progress, total) -> None:
        from .shards import run

        async def all_of():
            done = 0
            for fut in asyncio.as_completed(coros):
                await fut
                done += 1
                if progress is not None and done < len(coros):
                    progress(int(total * done / len(coros)), total)

        run(all_of())

    def _remember(self, bbox: tuple, keys: set) -> None:
        """Record a view's blocks (its depths together); release those of views older than
        ``keep_views``."""
        with self._recent_lock:
            if bbox in self._recent:
                self._recent[bbox] |= keys
                self._recent.move_to_end(bbox)
            else:
                self._recent[bbox] = set(keys)
            while len(self._recent) > self.keep_views:
                self._recent.popitem(last=False)
            self.cache.keep_only(set().union(*self._recent.values()))

    def release(self) -> None:
        """Drop every block held in memory (the disk cache keeps what was read)."""
        with self._recent_lock:
            self.cache.clear()
            self._recent.clear()


# -- colours: the linear projection of a view's blocks (project.store_colours fits it) ---------------
#: Pixels per product in :func:`project_view` (128 bands x 4,096 px = 2 MiB of float32).
_PAINT_PIXELS = 4096
#: Output window (pixels per side) each worker projects at a time.
_PAINT_BLOCK = 256


def project_view(da: xr.DataArray, w: np.ndarray, offset: np.ndarray,
                 transform_codes: Callable[[np.ndarray, np.ndarray], np.ndarray], *,
                 check: Callable[[], None] | None = None) -> np.ndarray | None:
    """The ``(k, y, x)`` float32 linear projection ``(w @ embedding) - offset`` (NaN where
    there is no data) of a view loaded by a :class:`ViewLoader`, from the int8 blocks in
    memory; None when ``da`` is not such a view.  ``w`` is ``(k, d)``; ``check()`` runs
    once ``da`` is known to be a view.

    Pixels a tile gives on its own grid are projected band-major from that tile's codes
    (``(w @ codes) * scale - offset``); pixels of a neighbouring zone (resampled) go
    through ``transform_codes(codes, scales)`` (the projection's own code path).  Two
    threads (the caller limits BLAS threads).
    """
    from concurrent.futures import ThreadPoolExecutor

    from .codes import codes_window
    from .mosaic import Mosaic

    cw = codes_window(da)
    if cw is None or not isinstance(cw.source, Mosaic):
        return None
    m = cw.source
    if not any(isinstance(t, _CachedReads) for t in m.tiles):
        return None
    if check is not None:
        check()
    k, d = w.shape
    H, W = da.sizes["y"], da.sizes["x"]
    out = np.full((k, H, W), np.nan, np.float32)

    def window(rows: slice, cols: slice) -> None:
        win_r = slice(rows.start + cw.row0, rows.stop + cw.row0)
        win_c = slice(cols.start + cw.col0, cols.stop + cw.col0)
        plan = m.plan(win_r, win_c)
        whole = len(plan) == 1 and plan[0].src[0] == "slice"
        view = out[:, rows, cols]
        for c in plan:
            t = m.tiles[c.k]
            if c.src[0] == "slice" and isinstance(t, _CachedReads):
                s = t._clean(t._raw_scales(c.src[1], c.src[2]))
                ok = np.isfinite(s) & (s != 0)
                if not (whole or c.take.all()):
                    ok &= c.take
                if not ok.any():
                    continue
                comps = _project_band_major(t._codes_raw(c.src[1], c.src[2]), s, w, offset)
                sub = view[:, c.ty, c.tx]
                for i in range(k):
                    sub[i][ok] = comps[i][ok]
                continue
            q, s = m._gather(c)
            ok = np.isfinite(s) & (s != 0)
            if not ok.any():
                continue
            comps = transform_codes(q[ok], s[ok])
            rr, cc = np.nonzero(c.take)  # the order in which _gather took them
            view[:, c.ty, c.tx][:, rr[ok], cc[ok]] = comps.T

    B = _PAINT_BLOCK
    wins = [(slice(r, min(H, r + B)), slice(c, min(W, c + B))) for r in range(0, H, B) for c in range(0, W, B)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        for f in [pool.submit(window, r, c) for r, c in wins]:
            f.result()
    return out


def _project_band_major(codes: np.ndarray, scales: np.ndarray, w: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """``(k, h, w)`` components of int8 ``codes`` ``(d, h, w)`` with ``scales`` ``(h, w)``
    through ``w`` ``(k, d)``: ``(w @ codes) * scales - offset`` (NaN scales give NaN)."""
    d, h, wd = codes.shape
    n = h * wd
    flat = codes.reshape(d, n)
    out = np.empty((w.shape[0], n), np.float32)
    buf = np.empty((d, min(n, _PAINT_PIXELS)), np.float32)
    for a in range(0, n, _PAINT_PIXELS):
        b = min(n, a + _PAINT_PIXELS)
        f = buf[:, :b - a]
        f[...] = flat[:, a:b]
        np.matmul(w, f, out=out[:, a:b])
    out *= scales.reshape(1, n)
    out -= offset[:, None]
    return out.reshape(-1, h, wd)


# -- the zoomed-out map -------------------------------------------------------------------------------


def coverage_footprint(store: Any, *, year: int | None = None, bbox: Sequence[float] | None = None,
                       densify: int = 8) -> dict:
    """The store's coverage as a GeoJSON FeatureCollection in lon/lat.

    One rectangle (in the zone's CRS, drawn with ``densify`` points per edge) per run of
    neighbouring filled shards along a shard row of each zone, from the zone's
    ``stretch_stats_shards`` (which shards were folded into the statistics); a zone
    without that array gives its whole grid (``spatial:bbox``) with ``"filled": null``.
    Properties: ``zone``, ``year``, ``filled``, ``complete`` (False where the zone's
    ``years_complete`` leaves the year out).  ``bbox`` keeps the features that meet it.
    Nothing but small metadata arrays is read.
    """
    from pyproj import Transformer

    from .store import decoding

    st = resolve_store(store)
    year = st.check_year(year)
    feats = []
    want = grid.normalize_bbox(bbox) if bbox is not None else None
    for zone in st.zones:
        tr = Transformer.from_crs(layout.zone_epsg(zone), 4326, always_xy=True)
        for part in st._parts[zone]:
            if year not in part.years:
                continue
            t, (H, W) = part.transform, part.shape
            g = part.group
            rects, filled = [], None
            if "stretch_stats_shards" in g and not part.band_last:
                with decoding(f"{part.where}/stretch_stats_shards"):
                    done = np.asarray(g["stretch_stats_shards"][part.years.index(year)]).astype(bool)
                sr, sc = done.shape
                sh = sw = layout.chunk_grid(g[part.arrays[max(part.arrays)]]).shard
                for r in range(sr):
                    for c0, c1 in _runs(np.flatnonzero(done[r])):
                        rects.append((c0 * sw, min(c1 * sw, W), r * sh, min((r + 1) * sh, H)))
                filled = True
            else:
                rects.append((0, W, 0, H))
            for a, b, c, d in rects:
                xs = t.c + np.linspace(a, b, densify + 1) * t.a
                ys = t.f - np.linspace(c, d, densify + 1) * t.a
                ring_x = np.concatenate([xs, np.full(densify, xs[-1]), xs[::-1][1:], np.full(densify, xs[0])])
                ring_y = np.concatenate([np.full(densify + 1, ys[0]), ys[1:], np.full(densify, ys[-1]), ys[::-1][1:]])
                south = ring_y < 0
                lon, lat = _to_lonlat(tr, zone, ring_x, ring_y, south)
                if want is not None and (lon.max() < want[0] or lon.min() > want[2] or lat.max() < want[1]
                                         or lat.min() > want[3]):
                    continue
                # the ring closes on its first point; reversed: counterclockwise, as GeoJSON wants
                coords = [[float(x), float(y)] for x, y in zip(lon[::-1], lat[::-1])]
                feats.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [coords]},
                              "properties": {"zone": zone, "year": year, "filled": filled,
                                             "complete": part.filled(year)}})
    return {"type": "FeatureCollection", "features": feats}


def _runs(idx: np.ndarray) -> list[tuple[int, int]]:
    out = []
    for i in idx.tolist():
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return [tuple(r) for r in out]


def _to_lonlat(tr, zone: int, x: np.ndarray, y: np.ndarray, south: np.ndarray):
    """lon/lat of zone-grid points (southern rows: negative northings, as stored)."""
    from pyproj import Transformer

    lon, lat = np.empty(len(x)), np.empty(len(x))
    if (~south).any():
        lon[~south], lat[~south] = tr.transform(x[~south], y[~south])
    if south.any():
        trs = Transformer.from_crs(layout.zone_epsg(zone, south=True), 4326, always_xy=True)
        lon[south], lat[south] = trs.transform(x[south], y[south] + layout.FALSE_NORTHING)
    return lon, lat


def overview_layer(store: Any) -> None:
    """The store's overview layer: None, since no published store holds one (the layout,
    ``shared/spec/zarr-store.md``, has no overview arrays); the zoomed-out map shows
    :func:`coverage_footprint` alone."""
    resolve_store(store)
    return None
