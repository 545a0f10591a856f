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

import numpy as np

from ..exceptions import ArgumentError
from . import grid
from .quant import quantize

__all__ = ["Mosaic", "RESAMPLING"]

RESAMPLING = ("nearest", "bilinear")


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
        nbs = {int(getattr(t, "nbands", 128)) for t in self.tiles}
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
        ii, jj = grid.lonlat_tile_index(lon, lat)
        owner = np.full(xx.shape, -1, dtype=np.int32)
        for n, k in enumerate(cands):
            t = self.tiles[k]
            owns = getattr(t, "owns", None)
            if owns is not None:
                owner[owns(lon, lat)] = n
                continue
            if t.lon is None or t.lat is None:
                continue
            ci, cj = grid.center_index(t.lon, t.lat)
            owner[(ii == ci) & (jj == cj)] = n
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
        if out is None:
            out = np.empty((self.nbands, h, w), dtype=np.float32)
        plan = self.plan(rows, cols)
        whole = len(plan) == 1 and plan[0].src[0] == "slice"
        if not (whole and plan[0].ty == slice(0, h) and plan[0].tx == slice(0, w)):
            out.fill(np.nan)
        for c in plan:
            t = self.tiles[c.k]
            if c.src[0] == "slice" and (whole or c.take.all()) and hasattr(t, "read_bands"):
                # band-first source (Zarr stores): no transpose on the way
                q, s = t.read_bands(c.src[1], c.src[2])
                np.multiply(q, s[None], out=out[:, c.ty, c.tx], casting="unsafe")
                continue
            if c.src[0] == "slice" and (whole or c.take.all()):
                # one tile gives the whole block: its NaN scales already mark the gaps
                q, s = self.tiles[c.k].read(c.src[1], c.src[2])
                _dequantize_into(out[:, c.ty, c.tx], q, s)
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
        h, w = rows.stop - rows.start, cols.stop - cols.start
        out = np.full((h, w), 3, np.uint8)
        cands = self._candidates(rows, cols)
        if not cands:
            return out
        owner = self._owner(rows, cols, cands) if len(cands) > 1 else np.zeros((h, w), np.int32)
        for pass_ in ("owner", "fill"):
            for n, k in enumerate(cands):
                m = self._map_tile(k, rows, cols)
                if m is None:
                    continue
                ty, tx, src, _valid = m
                st = self._tile_status(k, src)
                cur = out[ty, tx]
                if pass_ == "owner":
                    take = (owner[ty, tx] == n) & (st < cur)
                else:
                    take = (st < cur)
                cur[take] = st[take]
        return out

    def _tile_status(self, k: int, src) -> np.ndarray:
        t = self.tiles[k]
        if src[0] == "slice":
            sr, sc = src[1], src[2]
        else:
            r0, r1, c0, c1 = src[-1]
            sr, sc = slice(r0, r1), slice(c0, c1)
        status = getattr(t, "status", None)
        if status is not None:
            st = status(sr, sc)
        else:
            st = np.where(t.valid(sr, sc), 0, 1).astype(np.uint8)
        if src[0] == "slice":
            return st
        if src[0] == "index":
            ri, ci = src[1] - src[-1][0], src[2] - src[-1][2]
        else:  # bilinear: the status of the nearest source pixel
            ri = np.clip(np.floor(src[1]).astype(np.int64), src[-1][0], src[-1][1] - 1) - src[-1][0]
            ci = np.clip(np.floor(src[2]).astype(np.int64), src[-1][2], src[-1][3] - 1) - src[-1][2]
        th, tw = st.shape
        out = st[np.clip(ri, 0, th - 1), np.clip(ci, 0, tw - 1)]
        return np.where(src[3], out, 3).astype(np.uint8)

    def release_pages(self) -> None:
        """Drop already-read pages of memory-mapped tile files from the resident set."""
        for t in self.tiles:
            rel = getattr(t, "release_pages", None)
            if rel is not None:
                rel()
            else:
                _madvise_dontneed(getattr(t, "_codes", None), getattr(t, "_scales", None))


def _madvise_dontneed(*arrays) -> None:
    """MADV_DONTNEED on the maps behind memory-mapped NumPy arrays (np.load mmap_mode)."""
    import mmap

    if not hasattr(mmap, "MADV_DONTNEED"):
        return
    for arr in arrays:
        mm = getattr(arr, "_mmap", None)
        if mm is not None and hasattr(mm, "madvise"):
            try:
                mm.madvise(mmap.MADV_DONTNEED)
            except (OSError, ValueError):  # a closed map or a platform without it: only memory is at stake
                return


#: Meaning of :meth:`Mosaic.read_status` codes.
STATUS = {0: "valid", 1: "water", 2: "nodata", 3: "outside"}


def _dequantize_into(out_bhw: np.ndarray, codes: np.ndarray, scales: np.ndarray, block: int = 8) -> None:
    """Write ``codes * scales`` band-first into ``out_bhw`` a few rows at a time.

    The int8 codes are transposed (a quarter of the bytes of floats) and multiplied
    straight into the output, in row blocks small enough to stay in cache: about 1.25x
    the time of a plain pixel-major ``codes.astype(float32) * scales``.
    NaN scales give NaN pixels.
    """
    h = codes.shape[0]
    for r0 in range(0, h, block):
        r1 = min(h, r0 + block)
        qt = np.ascontiguousarray(np.asarray(codes[r0:r1]).transpose(2, 0, 1))
        np.multiply(qt, scales[None, r0:r1, :], out=out_bhw[:, r0:r1, :], casting="unsafe")
