"""``prepare(da)``: an opened area held in memory as int8 codes, for fast repeated work.

A :class:`PreparedArea` keeps, pixel-major for the whole area:

* ``codes``  int8 ``(n, 128)`` (``n = height * width``, row-major): the tiles' own codes,
  100 MB for a full tile;
* ``scales`` float32 ``(n,)``: dequantise with ``codes * scales`` (NaN = no data);
* ``inv_norm`` float32 ``(n,)``: ``1 / |codes|`` (0 = no data), so the unit-normalised
  embedding of a pixel is ``codes * inv_norm`` and cosine similarity is a dot product
  of codes.

Every verb of :mod:`tessera_explore.classify` accepts a PreparedArea where it accepts
an embeddings DataArray.  A DataArray with int8 codes behind it (from
``open_embeddings``) is prepared on first use and the result kept for the next call
(the fast path is the default path): at most :data:`AUTO_PREPARE_BYTES` in all, the
least recently used area dropped first, keyed by the opened source and the window, so
another area or another year is never served stale codes.  Larger areas, and float
arrays, are walked block by block (:func:`tessera_explore.io.codes.iter_blocks`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import xarray as xr

from .. import _schema
from ..exceptions import SchemaError
from ..io.grid import Grid
from . import _kernels

__all__ = ["PreparedArea", "prepare", "auto_prepared", "clear_prepared", "Block", "blocks", "grid_of", "new_map",
           "stitch", "AUTO_PREPARE_BYTES"]

#: Default block side (pixels) of :func:`blocks` when it walks a DataArray that is not
#: prepared in memory: 512 x 512 pixels x 128 int8 bands is 32 MiB of codes a block.
#: (The verbs pass their own ``block=``, 512 by default too; :func:`prepare` reads in
#: 256 px blocks.)
BLOCK = 512
#: Memory for areas prepared automatically (codes + scales + norms): two full tiles.
#: 0 turns automatic preparation off.
AUTO_PREPARE_BYTES = 320 * 2**20

_AUTO: OrderedDict = OrderedDict()
_AUTO_LOCK = threading.Lock()


class Block:
    """One window of an area: pixel-major codes, scales, inverse norms, valid mask."""

    __slots__ = ("rows", "cols", "codes", "scales", "inv_norm", "valid")

    def __init__(self, rows, cols, codes, scales, inv_norm=None, valid=None):
        self.rows, self.cols = rows, cols
        self.codes = codes
        self.scales = scales
        self.valid = valid if valid is not None else (np.isfinite(scales) & (scales != 0))
        if inv_norm is None:
            inv_norm = np.empty(len(scales), np.float32)
            _kernels.run(_kernels.inv_norms, codes, self.valid, inv_norm)
        self.inv_norm = inv_norm
        # a zero code vector has no direction: treat it as no data
        if inv_norm is not None and valid is None:
            self.valid &= inv_norm > 0

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows.stop - self.rows.start, self.cols.stop - self.cols.start)

    def features(self, idx=None) -> np.ndarray:
        """Dequantised float32 ``(m, bands)`` of the pixels ``idx`` (all when None)."""
        if idx is None:
            return self.codes.astype(np.float32) * self.scales[:, None]
        return self.codes[idx].astype(np.float32) * self.scales[idx, None]


class AreaGrid:
    """An area: its pixel grid (:class:`~tessera_explore.io.grid.Grid`), its coordinates
    as the array holds them, CRS and provenance attrs.

    ``x``/``y`` are kept exactly as given (maps made with :func:`new_map` align with the
    input); the pixel maths (which pixel holds a point) is the grid's.
    """

    def __init__(self, x, y, crs, transform, attrs, year):
        self.x, self.y = np.asarray(x), np.asarray(y)
        self.crs, self.transform = crs, transform
        self.attrs = dict(attrs)
        self.year = year
        self._to_crs = None
        self._geo = None

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.y), len(self.x))

    @property
    def geo(self) -> Grid:
        """The area's :class:`~tessera_explore.io.grid.Grid` (CRS, transform, shape)."""
        if self._geo is None:
            self._geo = Grid(self.crs, self.transform, self.shape)
        return self._geo

    def same_as(self, other: AreaGrid) -> bool:
        return (self.shape == other.shape and self.crs == other.crs
                and np.allclose(self.x, other.x) and np.allclose(self.y, other.y))

    def lonlat_to_xy(self, lon, lat) -> tuple[np.ndarray, np.ndarray]:
        """Lon/lat (degrees) to the area's CRS (metres); the transformer is made once."""
        if self._to_crs is None:
            from pyproj import Transformer

            self._to_crs = Transformer.from_crs("EPSG:4326", self.crs, always_xy=True)
        x, y = self._to_crs.transform(np.asarray(lon, float), np.asarray(lat, float))
        return np.asarray(x, float), np.asarray(y, float)

    def xy_to_rowcol(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Row/column of the pixels that contain x/y (may lie outside the area)."""
        return self.geo.pixel_of(x, y)

    def lonlat_to_rowcol(self, lon, lat) -> tuple[np.ndarray, np.ndarray]:
        return self.xy_to_rowcol(*self.lonlat_to_xy(lon, lat))

    def inside(self, row, col) -> np.ndarray:
        h, w = self.shape
        return (row >= 0) & (row < h) & (col >= 0) & (col < w)


def grid_of(obj: Any) -> AreaGrid:
    """The grid of a PreparedArea or an embeddings DataArray.

    The transform comes from the array's pixel-centre coordinates
    (:meth:`Grid.from_coords <tessera_explore.io.grid.Grid.from_coords>`); coordinates that
    are not evenly spaced raise :class:`~tessera_explore.exceptions.ArgumentError`.
    """
    if isinstance(obj, PreparedArea):
        return obj.grid
    da = _schema.validate(obj)
    geo = Grid.from_coords(da)
    g = AreaGrid(da.x.values, da.y.values, da.rio.crs, geo.transform, da.attrs, int(da.coords["year"].values))
    g._geo = geo
    return g


class PreparedArea:
    """An embeddings area held in memory as int8 codes; made by :func:`prepare`."""

    def __init__(self, grid: AreaGrid, codes: np.ndarray, scales: np.ndarray, inv_norm: np.ndarray,
                 valid: np.ndarray):
        self.grid = grid
        self.codes = codes
        self.scales = scales
        self.inv_norm = inv_norm
        self.valid = valid

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.grid.shape

    @property
    def attrs(self) -> dict:
        return self.grid.attrs

    @property
    def year(self) -> int:
        return self.grid.year

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + self.scales.nbytes + self.inv_norm.nbytes + self.valid.nbytes

    def block(self) -> Block:
        h, w = self.shape
        return Block(slice(0, h), slice(0, w), self.codes, self.scales, self.inv_norm, self.valid)

    def window(self, rows: slice, cols: slice) -> Block:
        """A copy of one rectangular window as a :class:`Block`."""
        h, w = self.shape
        sel = (np.arange(rows.start, rows.stop)[:, None] * w + np.arange(cols.start, cols.stop)[None, :]).ravel()
        return Block(rows, cols, self.codes[sel], self.scales[sel], self.inv_norm[sel], self.valid[sel])

    def __repr__(self) -> str:
        h, w = self.shape
        return (f"PreparedArea({h} x {w} px, {int(self.valid.sum())} with data, "
                f"{self.nbytes / 2**20:.0f} MiB, {self.attrs.get('dataset_version')}, {self.year})")


def prepare(da: xr.DataArray | PreparedArea, *, block: int = 256) -> PreparedArea:
    """Load an embeddings area into memory as int8 codes (about 100 MB per tile).

    Pass the result to :func:`predict_map`, :func:`similarity`, :func:`fit_classifier` and
    the other verbs in place of the DataArray: repeated calls then skip reading and
    dequantising the tiles.  Also compiles (or loads from cache) the numba kernels, so
    the first click pays nothing for it.
    """
    if isinstance(da, PreparedArea):
        return da
    _kernels.warm()
    grid = grid_of(da)
    h, w = grid.shape
    n = h * w
    nb = int(da.sizes["band"])
    codes = np.empty((n, nb), np.int8)
    scales = np.empty(n, np.float32)
    c3 = codes.reshape(h, w, nb)
    s2 = scales.reshape(h, w)
    from ..io.codes import iter_blocks

    last_row = 0
    for rows, cols, q, s in iter_blocks(da, block=block, quantized=True):
        if s.ndim == 3:
            raise SchemaError("per-band scales are not supported by prepare(); open the area as float")
        c3[rows, cols] = q
        s2[rows, cols] = s
        if rows.start != last_row:
            last_row = rows.start
            _release_pages(da)
    _release_pages(da)
    valid = np.isfinite(scales) & (scales != 0)
    inv_norm = np.empty(n, np.float32)
    _kernels.run(_kernels.inv_norms, codes, valid, inv_norm)
    valid &= inv_norm > 0
    return PreparedArea(grid, codes, scales, inv_norm, valid)


def _release_pages(da: xr.DataArray) -> None:
    """Drop already-copied pages of memory-mapped tile files from the resident set:
    without this, preparing a tile holds its codes twice (the copy and the mapped
    file), 200 MB instead of 100 MB."""
    from ..io.codes import release

    release(da)


def auto_prepared(da: Any) -> PreparedArea | None:
    """The PreparedArea of ``da`` kept from an earlier call, or a new one (kept for the
    next), when ``da`` has int8 codes behind it and fits :data:`AUTO_PREPARE_BYTES`;
    None otherwise."""
    if isinstance(da, PreparedArea):
        return da
    if not isinstance(da, xr.DataArray) or AUTO_PREPARE_BYTES <= 0:
        return None
    from ..io.codes import ATTR, codes_window

    cw = codes_window(da)
    if cw is None:
        return None
    h, w, nb = da.sizes["y"], da.sizes["x"], da.sizes["band"]
    need = h * w * (nb + 4 + 4 + 1)
    if need > AUTO_PREPARE_BYTES:
        return None
    key = (str(da.attrs.get(ATTR)), cw.row0, cw.col0, h, w, nb, int(da.coords["year"]) if "year" in da.coords else None)
    with _AUTO_LOCK:
        hit = _AUTO.get(key)
        if hit is not None:
            _AUTO.move_to_end(key)
            return hit
    prepared = prepare(da)
    with _AUTO_LOCK:
        _AUTO[key] = prepared
        while sum(p.nbytes for p in _AUTO.values()) > AUTO_PREPARE_BYTES and len(_AUTO) > 1:
            _AUTO.popitem(last=False)
    return prepared


def clear_prepared() -> None:
    """Forget every automatically prepared area (frees their memory)."""
    with _AUTO_LOCK:
        _AUTO.clear()


def blocks(obj: Any, *, block: int = BLOCK) -> Iterator[Block]:
    """Walk a PreparedArea (one block, no copies) or a DataArray: prepared automatically
    when it has codes and fits (see :func:`auto_prepared`), else in ``block`` px blocks."""
    prepared = auto_prepared(obj)
    if prepared is not None:
        yield prepared.block()
        return
    from ..io.codes import iter_blocks

    _kernels.warm()
    for rows, cols, q, s in iter_blocks(obj, block=block, quantized=True):
        if s.ndim == 3:
            raise SchemaError("per-band scales are not supported here; open the area as float")
        n = q.shape[0] * q.shape[1]
        yield Block(rows, cols, np.ascontiguousarray(q.reshape(n, q.shape[-1])), np.ascontiguousarray(s.reshape(n)))


def stitch(grid: AreaGrid, pieces: Iterable[Any], fn: Callable[[Any], Sequence[np.ndarray]],
           fills: Sequence[Any]) -> tuple[np.ndarray, ...]:
    """Place per-block results on the area's grid: the loop every map-making verb shares.

    ``pieces`` are :class:`Block` s (from :func:`blocks`) or tuples of aligned blocks (the
    first one says where they lie, as :func:`~tessera_explore.classify.change.change`
    walks two years).  ``fn(piece)`` returns one pixel-major array per output: ``(n,)``
    becomes ``(h, w)``, ``(k, n)`` becomes ``(k, h, w)``.  ``fills`` holds one value per
    output for pixels no block covers (the array's dtype is the block result's).

    A single block covering the whole area (a :class:`PreparedArea`) is reshaped, not
    copied.
    """
    h, w = grid.shape
    outs: list[np.ndarray] | None = None
    for piece in pieces:
        where = piece[0] if isinstance(piece, tuple) else piece
        results = fn(piece)
        bh, bw = where.shape
        if bh == h and bw == w:
            outs = [r.reshape(r.shape[:-1] + (h, w)) for r in results]
            continue
        if outs is None:
            outs = [np.full(r.shape[:-1] + (h, w), fill, r.dtype) for r, fill in zip(results, fills)]
        for out, r in zip(outs, results):
            out[..., where.rows, where.cols] = r.reshape(r.shape[:-1] + (bh, bw))
    if outs is None:  # an area without blocks (no pixels): nothing to place
        raise SchemaError("the area has no pixels")
    return tuple(outs)


def _spatial_ref(grid: AreaGrid) -> xr.Variable:
    """The ``spatial_ref`` coordinate (CRS and GeoTransform) of a grid, built once."""
    ref = getattr(grid, "_sref", None)
    if ref is None:
        import rioxarray  # noqa: F401  (registers .rio)

        tiny = xr.DataArray(np.zeros((1, 1), np.uint8), dims=("y", "x"),
                            coords={"y": grid.y[:1], "x": grid.x[:1]})
        tiny = tiny.rio.write_crs(grid.crs).rio.write_transform(grid.transform)
        ref = tiny.coords["spatial_ref"].variable
        grid._sref = ref
    return ref


def new_map(grid: AreaGrid, data: np.ndarray, *, name: str, attrs: dict | None = None,
            nodata: Any = None, dims: tuple = ("y", "x"), extra_coords: dict | None = None) -> xr.DataArray:
    """A DataArray on the area's grid (coords, CRS, transform) holding ``data``.

    Built directly (rioxarray's writers deep-copy the data, 25 ms a map on a full tile);
    ``.rio.crs``, ``.rio.transform()`` and ``.rio.nodata`` read it as usual.
    """
    coords = {"y": grid.y, "x": grid.x, "year": grid.year, "spatial_ref": _spatial_ref(grid)}
    if extra_coords:
        coords.update(extra_coords)
    attrs = dict(attrs or {})
    if nodata is not None:
        attrs["_FillValue"] = np.array(nodata, dtype=data.dtype)[()]
    out = xr.DataArray(data, dims=dims, coords=coords, name=name, attrs=attrs)
    out.encoding["grid_mapping"] = "spatial_ref"
    return out


def provenance(grid: AreaGrid) -> dict:
    """The provenance attrs every map carries."""
    a = grid.attrs
    return {"dataset_version": str(a.get("dataset_version", "?")),
            "dataset_variant": str(a.get("dataset_variant", "?")),
            "model_generation": str(a.get("model_generation", "?")),
            "year": int(grid.year), "source": str(a.get("source", ""))}
