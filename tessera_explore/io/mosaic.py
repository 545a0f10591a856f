"""Many tiles on one output grid, read window by window.

Tiles in the output CRS whose grids align with it are copied pixel for pixel (no
resampling, no seams).  Tiles in another UTM zone are resampled onto the output grid:

* ``"nearest"`` (default): each output pixel takes the embedding of the nearest
  source pixel, so every value is a genuine embedding (classifiers and similarity
  see real vectors, and the int8 codes stay exact);
* ``"bilinear"``: a NaN-aware weighted mean of the four nearest source pixels;
  smoother, but it blends embeddings across field edges.

Where tiles overlap (each tile's UTM rectangle covers its 0.1 degree cell plus a
margin), a pixel comes from the tile whose cell contains it, and from any other tile
that has data there only when that tile has none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..exceptions import ArgumentError
from .quant import quantize

__all__ = ["Mosaic", "RESAMPLING", "Tile", "STATUS"]

RESAMPLING = ("nearest", "bilinear")


@runtime_checkable
class Tile(Protocol):
    """What the mosaic reads: one raster of embeddings on its own north-up grid.

    :class:`~tessera_explore.io.tiles.NpyTile`, :class:`~tessera_explore.io.tiles.TiffTile`
    and the store windows (:class:`~tessera_explore.io.store.StoreTile`,
    :class:`~tessera_explore.io.store.UnfilledTile`) follow it; :class:`Mosaic` calls
    these methods directly, never probing for them.  Windows are ``rows``, ``cols``
    slices (unit step) of the tile's own pixels.
    """

    crs: Any  #: the tile's CRS (rasterio)
    transform: Any  #: affine transform of the tile's pixel corners (north-up)
    shape: tuple[int, int]  #: (height, width)
    nbands: int  #: bands per pixel (128, or a nested-depth prefix)
    year: int | None
    lon: float | None  #: centre of the tile's 0.1 degree cell (None for store windows)
    lat: float | None
    #: the source's chunk grid, for chunk-aligned reads: inner chunk and shard sides (from
    #: the arrays' metadata) and the (x, y) of its origin in ``crs``; None for tiles
    inner_chunk: int | None
    shard: int | None
    grid_origin: tuple[float, float] | None

    @property
    def res(self) -> float: ...

    @property
    def bounds(self) -> tuple[float, float, float, float]: ...

    def read(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        """int8 codes ``(h, w, bands)`` and float32 scales ``(h, w)``, NaN where no data."""

    def read_bands(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`read`, codes band-first ``(bands, h, w)``."""

    def read_float_into(self, out: np.ndarray, rows: slice, cols: slice) -> None:
        """Dequantised float32 ``(bands, h, w)`` written into ``out``, NaN where no data."""

    def valid(self, rows: slice, cols: slice) -> np.ndarray:
        """bool ``(h, w)``: the pixel has an embedding."""

    def status(self, rows: slice, cols: slice) -> np.ndarray:
        """uint8 ``(h, w)``: 0 valid, 1 water, 2 not computed (:data:`STATUS`)."""

    def owns(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray | None:
        """bool: the points (degrees) this tile gives first where tiles overlap (its 0.1
        degree cell, or its UTM zone); None when it claims none."""

    def release_pages(self) -> None:
        """Drop memory-mapped pages already read (a no-op for tiles that map nothing)."""


@dataclass
class _Contribution:
    k: int  # tile index
    ty: slice  # rows of the window (window coordinates)
    tx: slice
    take: np.ndarray  # bool (len(ty), len(tx))
    src: tuple  # ("slice", rows, cols) | ("index", ri, ci) | ("bilinear", r0, c0, fr, fc)


class Mosaic:
    """Tiles mapped onto one output grid ``(crs, transform, shape)``.

    ``read_quantized(rows, cols)`` gives int8 codes ``(h, w, 128)`` and scales ``(h, w)``
    (NaN = no data); ``read_float(rows, cols)`` gives float32 ``(128, h, w)``.
    """

    def __init__(self, tiles, *, crs, transform, shape, resampling: str = "nearest"):
        if resampling not in RESAMPLING:
            raise ArgumentError(f"resampling must be one of {RESAMPLING}, got {resampling!r}")
        self.tiles = list(tiles)
        self.crs = crs
        self.transform = transform
        self.shape = (int(shape[0]), int(shape[1]))
        self.resampling = resampling
        self.res = float(transform.a)
        nbs = {int(t.nbands) for t in self.tiles}
        if len(nbs) > 1:
            from ..exceptions import SchemaError

            raise SchemaError(f"tiles with different band counts {sorted(nbs)} cannot share one mosaic")
        self.nbands = nbs.pop() if nbs else 128
        self._aligned = [self._is_aligned(t) for t in self.tiles]
        self._tbounds = [self._tile_bounds_in_target(t) for t in self.tiles]

    # -- geometry -------------------------------------------------------------------
    def _is_aligned(self, tile) -> bool:
        if tile.crs != self.crs:
            return False
        t, o = tile.transform, self.transform
        if not (np.isclose(t.a, o.a) and np.isclose(t.e, o.e) and t.b == 0 and t.d == 0):
            return False
        dc, dr = (t.c - o.c) / o.a, (t.f - o.f) / o.e
        return abs(dc - round(dc)) < 1e-6 and abs(dr - round(dr)) < 1e-6

    def _tile_bounds_in_target(self, tile):
        if tile.crs == self.crs:
            return tile.bounds
        from rasterio.warp import transform_bounds

        return transform_bounds(tile.crs, self.crs, *tile.bounds, densify_pts=21)

    def _window_xy(self, rows: slice, cols: slice):
        o = self.transform
        x = o.c + (np.arange(cols.start, cols.stop) + 0.5) * o.a
        y = o.f + (np.arange(rows.start, rows.stop) + 0.5) * o.e
        return x, y

    def _candidates(self, rows: slice, cols: slice) -> list[int]:
        o = self.transform
        x0, x1 = o.c + cols.start * o.a, o.c + cols.stop * o.a
        y1, y0 = o.f + rows.start * o.e, o.f + rows.stop * o.e
        out = []
        for k, (bx0, by0, bx1, by1) in enumerate(self._tbounds):
            if bx0 < x1 and bx1 > x0 and by0 < y1 and by1 > y0:
                out.append(k)
        return out

    def _owner(self, rows: slice, cols: slice, cands: list[int]) -> np.ndarray:
        """Index (into ``cands``) of the tile whose 0.1 degree cell holds each pixel, or -1."""
        from pyproj import Transformer

        x, y = self._window_xy(rows, cols)
        xx, yy = np.meshgrid(x, y)
        lon, lat = Transformer.from_crs(self.crs, 4326, always_xy=True).transform(xx, yy)
        owner = np.full(xx.shape, -1, dtype=np.int32)
        for n, k in enumerate(cands):
            owns = self.tiles[k].owns(lon, lat)
            if owns is not None:
                owner[owns] = n
        return owner

    def _map_tile(self, k: int, rows: slice, cols: slice):
        """Where tile k covers the window: (ty, tx, src, valid) or None."""
        t = self.tiles[k]
        th, tw = t.shape
        if self._aligned[k]:
            o = self.transform
            dc = int(round((t.transform.c - o.c) / o.a))
            dr = int(round((t.transform.f - o.f) / o.e))
            r0, r1 = max(rows.start, dr), min(rows.stop, dr + th)
            c0, c1 = max(cols.start, dc), min(cols.stop, dc + tw)
            if r0 >= r1 or c0 >= c1:
                return None
            sr, sc = slice(r0 - dr, r1 - dr), slice(c0 - dc, c1 - dc)
            ty, tx = slice(r0 - rows.start, r1 - rows.start), slice(c0 - cols.start, c1 - cols.start)
            return ty, tx, ("slice", sr, sc), t.valid(sr, sc)
        from pyproj import Transformer

        x, y = self._window_xy(rows, cols)
        xx, yy = np.meshgrid(x, y)
        sx, sy = Transformer.from_crs(self.crs, t.crs, always_xy=True).transform(xx, yy)
        inv = ~t.transform
        fc, fr = inv @ (sx, sy)  # fractional pixel coordinates (0 = left/top edge)
        inside = (fr >= 0) & (fr < th) & (fc >= 0) & (fc < tw)
        if not inside.any():
            return None
        ri = np.clip(np.floor(fr).astype(np.int64), 0, th - 1)
        ci = np.clip(np.floor(fc).astype(np.int64), 0, tw - 1)
        r0, r1 = int(ri[inside].min()), int(ri[inside].max()) + 2
        c0, c1 = int(ci[inside].min()), int(ci[inside].max()) + 2
        r1, c1 = min(r1, th), min(c1, tw)
        valid_win = t.valid(slice(r0, r1), slice(c0, c1))
        # pixels outside the tile may clip to rows/cols beyond the window: index within it
        valid = inside & valid_win[np.clip(ri - r0, 0, r1 - r0 - 1), np.clip(ci - c0, 0, c1 - c0 - 1)]
        full = (slice(0, rows.stop - rows.start), slice(0, cols.stop - cols.start))
        if self.resampling == "nearest":
            return full[0], full[1], ("index", ri, ci, inside, (r0, r1, c0, c1)), valid
        return full[0], full[1], ("bilinear", fr, fc, inside, (r0, r1, c0, c1)), valid

    def plan(self, rows: slice, cols: slice) -> list[_Contribution]:
        """Which tile gives which pixels of a window (owner first, then gap filling)."""
        cands = self._candidates(rows, cols)
        if not cands:
            return []
        h, w = rows.stop - rows.start, cols.stop - cols.start
        mapped = [(k, self._map_tile(k, rows, cols)) for k in cands]
        mapped = [(k, m) for k, m in mapped if m is not None]
        if len(mapped) == 1:
            k, (ty, tx, src, valid) = mapped[0]
            return [_Contribution(k, ty, tx, valid, src)]
        owner = self._owner(rows, cols, cands)
        filled = np.zeros((h, w), dtype=bool)
        out = []
        for pass_ in ("owner", "fill"):
            for k, (ty, tx, src, valid) in mapped:
                free = ~filled[ty, tx]
                take = valid & free
                if pass_ == "owner":
                    take &= owner[ty, tx] == cands.index(k)
                if take.any():
                    filled[ty, tx] |= take
                    out.append(_Contribution(k, ty, tx, take, src))
        return out

    # -- reading ---------------------------------------------------------------------
    def _gather(self, c: _Contribution) -> tuple[np.ndarray, np.ndarray]:
        """(codes (n, 128), scales (n,)) of the pixels a contribution takes."""
        t = self.tiles[c.k]
        kind = c.src[0]
        if kind == "slice":
            codes, scales = t.read(c.src[1], c.src[2])
            return codes[c.take], scales[c.take]
        r0, r1, c0, c1 = c.src[-1]
        codes, scales = t.read(slice(r0, r1), slice(c0, c1))
        if kind == "index":
            ri, ci = c.src[1][c.take] - r0, c.src[2][c.take] - c0
            return codes[ri, ci], scales[ri, ci]
        f = self._bilinear(codes, scales, c.src[1][c.take] - r0, c.src[2][c.take] - c0)
        return quantize(f)

    @staticmethod
    def _bilinear(codes, scales, fr, fc) -> np.ndarray:
        """NaN-aware bilinear interpolation at fractional pixel positions (pixel centres at +0.5)."""
        h, w = scales.shape
        y, x = fr - 0.5, fc - 0.5
        r0 = np.clip(np.floor(y).astype(np.int64), 0, h - 1)
        c0 = np.clip(np.floor(x).astype(np.int64), 0, w - 1)
        r1, c1 = np.clip(r0 + 1, 0, h - 1), np.clip(c0 + 1, 0, w - 1)
        wy, wx = np.clip(y - r0, 0, 1), np.clip(x - c0, 0, 1)
        acc = np.zeros((len(fr), codes.shape[-1]), dtype=np.float32)
        wsum = np.zeros(len(fr), dtype=np.float32)
        for rr, cc, wt in ((r0, c0, (1 - wy) * (1 - wx)), (r0, c1, (1 - wy) * wx), (r1, c0, wy * (1 - wx)), (r1, c1, wy * wx)):
            s = scales[rr, cc]
            ok = np.isfinite(s) & (wt > 0)
            wt = np.where(ok, wt, 0).astype(np.float32)
            acc += codes[rr, cc].astype(np.float32) * (np.where(ok, s, 0) * wt)[:, None]
            wsum += wt
        with np.errstate(invalid="ignore", divide="ignore"):
            out = acc / wsum[:, None]
        out[wsum == 0] = np.nan
        return out

    def read_quantized(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        """int8 codes ``(h, w, 128)`` and float32 scales ``(h, w)`` (NaN = no data) of a window."""
        h, w = rows.stop - rows.start, cols.stop - cols.start
        codes = np.zeros((h, w, self.nbands), dtype=np.int8)
        scales = np.full((h, w), np.nan, dtype=np.float32)
        plan = self.plan(rows, cols)
        whole = len(plan) == 1 and plan[0].src[0] == "slice"
        for c in plan:
            if c.src[0] == "slice" and (whole or c.take.all()):
                q, s = self.tiles[c.k].read(c.src[1], c.src[2])
                codes[c.ty, c.tx] = q
                scales[c.ty, c.tx] = s
                continue
            q, s = self._gather(c)
            codes[c.ty, c.tx][c.take] = q
            scales[c.ty, c.tx][c.take] = s
        return codes, scales

    def read_float(self, rows: slice, cols: slice, out: np.ndarray | None = None) -> np.ndarray:
        """Dequantised float32 ``(128, h, w)`` of a window, NaN where there is no data."""
        h, w = rows.stop - rows.start, cols.stop - cols.start
        plan = self.plan(rows, cols)
        whole = len(plan) == 1 and plan[0].src[0] == "slice"
        if out is None:
            # filled even when every pixel will be written: the pages of a fresh array are
            # faulted in one sequential pass, not chunk by chunk from several threads at
            # once (which costs several times longer)
            out = np.empty((self.nbands, h, w), dtype=np.float32)
            out.fill(np.nan)
        elif not (whole and plan[0].ty == slice(0, h) and plan[0].tx == slice(0, w)):
            out.fill(np.nan)
        for c in plan:
            if c.src[0] == "slice" and (whole or c.take.all()):
                # one tile gives the whole block (its NaN scales already mark the gaps),
                # decoded straight into the output
                self.tiles[c.k].read_float_into(out[:, c.ty, c.tx], c.src[1], c.src[2])
                continue
            q, s = self._gather(c)
            vals = q.astype(np.float32) * s[:, None]
            sub = out[:, c.ty, c.tx]
            sub[:, c.take] = vals.T
        return out

    def read_status(self, rows: slice, cols: slice) -> np.ndarray:
        """Why each pixel of a window has or lacks data: uint8 ``(h, w)`` with
        :data:`STATUS` codes 0 valid, 1 water, 2 not computed, 3 outside every source.

        A pixel takes the status of the tile that owns it (as for values); where that
        tile has no data, any other tile with data there wins.
        """
        return self._winners(rows, cols)[0]

    def read_layer(self, rows: slice, cols: slice, read, *, fill: Any, dtype: Any,
                   extra: tuple[int, ...] = ()) -> np.ndarray:
        """Another per-pixel array of the tiles (a store's quality arrays) on a window of
        the output grid: ``(*extra, h, w)``.

        ``read(tile, rows, cols)`` gives the tile's values ``(*extra, th, tw)`` for a window
        of its own pixels.  Each output pixel takes the value of the tile whose
        :meth:`read_status` it has (the owner, else the tile with the best status there;
        across zones the nearest source pixel); pixels outside every tile hold ``fill``.
        """
        h, w = rows.stop - rows.start, cols.stop - cols.start
        out = np.full((*extra, h, w), fill, dtype)
        _, winner, maps = self._winners(rows, cols)
        for k in np.unique(winner[winner >= 0]).tolist():
            ty, tx, src, _ = maps[k]
            sel = winner[ty, tx] == k
            sr, sc, ri, ci = self._source_pixels(src)
            vals = np.asarray(read(self.tiles[k], sr, sc))
            dst = out[..., ty, tx]
            dst[..., sel] = vals[..., sel] if ri is None else vals[..., ri[sel], ci[sel]]
        return out

    def _winners(self, rows: slice, cols: slice):
        """``(status (h, w), index of the tile each pixel's status comes from (-1: none),
        {tile index: _map_tile result})`` of a window."""
        h, w = rows.stop - rows.start, cols.stop - cols.start
        out = np.full((h, w), 3, np.uint8)
        winner = np.full((h, w), -1, np.int32)
        maps: dict = {}
        cands = self._candidates(rows, cols)
        if not cands:
            return out, winner, maps
        owner = self._owner(rows, cols, cands) if len(cands) > 1 else np.zeros((h, w), np.int32)
        stats: dict = {}
        for pass_ in ("owner", "fill"):
            for n, k in enumerate(cands):
                if k not in maps:
                    maps[k] = self._map_tile(k, rows, cols)
                m = maps[k]
                if m is None:
                    continue
                ty, tx, src, _valid = m
                if k not in stats:
                    stats[k] = self._tile_status(k, src)
                st = stats[k]
                cur, win = out[ty, tx], winner[ty, tx]
                take = st < cur
                if pass_ == "owner":
                    take &= owner[ty, tx] == n
                cur[take] = st[take]
                win[take] = k
        return out, winner, {k: m for k, m in maps.items() if m is not None}

    @staticmethod
    def _source_pixels(src):
        """``(rows, cols)`` of the tile window a mapping reads, and for resampled mappings
        the (nearest) source pixel of every output pixel within it (None when aligned)."""
        if src[0] == "slice":
            return src[1], src[2], None, None
        r0, r1, c0, c1 = src[-1]
        if src[0] == "index":
            ri, ci = src[1] - r0, src[2] - c0
        else:  # bilinear: the nearest source pixel
            ri = np.clip(np.floor(src[1]).astype(np.int64), r0, r1 - 1) - r0
            ci = np.clip(np.floor(src[2]).astype(np.int64), c0, c1 - 1) - c0
        return slice(r0, r1), slice(c0, c1), np.clip(ri, 0, r1 - r0 - 1), np.clip(ci, 0, c1 - c0 - 1)

    def _tile_status(self, k: int, src) -> np.ndarray:
        sr, sc, ri, ci = self._source_pixels(src)
        st = self.tiles[k].status(sr, sc)
        if ri is None:
            return st
        return np.where(src[3], st[ri, ci], 3).astype(np.uint8)

    def release_pages(self) -> None:
        """Drop already-read pages of memory-mapped tile files from the resident set."""
        for t in self.tiles:
            t.release_pages()


#: Meaning of :meth:`Mosaic.read_status` codes.
STATUS = {0: "valid", 1: "water", 2: "nodata", 3: "outside"}
