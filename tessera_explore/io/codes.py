"""The int8 codes behind an embeddings array: the public seam for reading them.

Arrays made by :func:`~tessera_explore.open_embeddings` are lazy views of int8 codes
and per-pixel scales (NPY tiles, Zarr stores).  Code that can work on the codes
directly (projections, classifiers, similarity) asks this module for them instead of
dequantising to float32 first:

* :func:`codes_window` gives a :class:`CodesWindow` when ``da`` is an unresampled
  window of an opened source (after ``isel``/``sel`` with unit steps too), else None;
* :func:`iter_blocks` walks any embeddings array block by block, as codes + scales
  (read straight from the source when there is one, quantised on the fly otherwise)
  or as float32;
* :func:`release` drops pages of memory-mapped files already copied out of the
  process's resident set.

Float arrays (live encoder output, computed arrays) have no codes: :func:`codes_window`
is None for them, and callers treat them as floats without re-quantising.
"""

from __future__ import annotations

import itertools
import os
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from .quant import quantize

__all__ = ["CodesWindow", "codes_window", "iter_blocks", "release", "register", "source_of"]

_SOURCES: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
_counter = itertools.count()
ATTR = "tessera_mosaic"


def register(mosaic: Any) -> str:
    """Register an opened source (a :class:`~tessera_explore.io.mosaic.Mosaic`) and
    return the token that arrays made from it carry in ``attrs["tessera_mosaic"]``.

    The registry holds weak references: a source lives as long as an array (its dask
    graph) refers to it.
    """
    token = f"tessera-{os.getpid()}-{next(_counter)}"
    _SOURCES[token] = mosaic
    return token


@dataclass
class CodesWindow:
    """Where ``da`` sits in an opened source: ``source`` plus a row/column offset.

    ``read(rows, cols)`` gives int8 codes ``(h, w, bands)`` and float32 scales ``(h, w)``
    (NaN = no data) for slices of ``da``'s own y/x; ``read_float`` gives float32
    ``(bands, h, w)``.
    """

    source: Any
    row0: int
    col0: int

    def _win(self, rows: slice, cols: slice) -> tuple[slice, slice]:
        return (slice(rows.start + self.row0, rows.stop + self.row0),
                slice(cols.start + self.col0, cols.stop + self.col0))

    def read(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        return self.source.read_quantized(*self._win(rows, cols))

    def read_float(self, rows: slice, cols: slice) -> np.ndarray:
        return self.source.read_float(*self._win(rows, cols))

    def release(self) -> None:
        """Drop already-read pages of memory-mapped files from the resident set."""
        rel = getattr(self.source, "release_pages", None)
        if rel is not None:
            rel()


def source_of(da: xr.DataArray) -> Any:
    """The opened source (a :class:`~tessera_explore.io.mosaic.Mosaic`) an array was made
    from, or None; unlike :func:`codes_window`, computed or resampled arrays keep it."""
    return _SOURCES.get(str(da.attrs.get(ATTR, "")))


def codes_window(da: xr.DataArray) -> CodesWindow | None:
    """The int8 codes behind ``da``, or None when ``da`` has none (float arrays,
    resampled or band-subset views)."""
    token = str(da.attrs.get(ATTR, ""))
    m = _SOURCES.get(token)
    nb = getattr(m, "nbands", 128)
    if m is None or da.sizes.get("band") != nb or da.sizes["y"] == 0 or da.sizes["x"] == 0:
        return None
    if not _is_view(da, token):  # computed from the source (xarray keeps attrs through arithmetic)
        return None
    if "band" in da.coords and not np.array_equal(da.band.values, np.arange(1, nb + 1)):
        return None
    t = m.transform
    x, y = da.x.values, da.y.values
    c0 = (x[0] - t.c) / t.a - 0.5
    r0 = (y[0] - t.f) / t.e - 0.5
    if abs(c0 - round(c0)) > 1e-6 or abs(r0 - round(r0)) > 1e-6:
        return None
    if (len(x) > 1 and not np.allclose(np.diff(x), t.a)) or (len(y) > 1 and not np.allclose(np.diff(y), t.e)):
        return None
    c0, r0 = int(round(c0)), int(round(r0))
    if r0 < 0 or c0 < 0 or r0 + len(y) > m.shape[0] or c0 + len(x) > m.shape[1]:
        return None
    return CodesWindow(m, r0, c0)


def _is_view(da: xr.DataArray, token: str) -> bool:
    """True when ``da``'s data is the opened source itself or an indexing of it (no
    arithmetic, no loaded copy that a user may have changed)."""
    data = da.variable._data
    try:
        import dask.array as dsa
    except ImportError:  # pragma: no cover - dask is a dependency
        dsa = None
    if dsa is not None and isinstance(data, dsa.Array):
        layers = list(data.dask.layers)
        return token in layers and all(n == token or n.startswith(("getitem-", "rechunk-")) for n in layers)
    while data is not None:  # xarray's lazy-indexing wrappers around the source array
        if getattr(data, "mosaic", None) is not None and type(data).__name__ == "_MosaicArray":
            return True
        data = getattr(data, "array", None)
    return False


def release(da: xr.DataArray) -> None:
    """Drop pages of ``da``'s memory-mapped source files already read from this
    process's resident set (they stay in the OS page cache).  No-op for other arrays."""
    cw = codes_window(da)
    if cw is not None:
        cw.release()


def iter_blocks(
    da: xr.DataArray, *, block: int = 512, quantized: bool = True
) -> Iterator[tuple[slice, slice, np.ndarray, np.ndarray | None]]:
    """Walk an embeddings array block by block, pixel-major.

    Yields ``(rows, cols, values, scales)`` where ``rows``/``cols`` are slices of ``da``'s
    y/x.  With ``quantized=True`` ``values`` are int8 codes ``(h, w, bands)`` and
    ``scales`` float32 ``(h, w)`` (NaN = no data): read straight from the source when
    ``da`` has codes (:func:`codes_window`; nothing is dequantised), quantised on the
    fly otherwise.  With ``quantized=False`` ``values`` are float32 ``(h, w, bands)``
    and ``scales`` is None.
    """
    from .. import _schema

    _schema.validate(da)
    cw = codes_window(da)
    H, W = da.sizes["y"], da.sizes["x"]
    for r0 in range(0, H, block):
        rows = slice(r0, min(H, r0 + block))
        for c0 in range(0, W, block):
            cols = slice(c0, min(W, c0 + block))
            if cw is not None:
                if quantized:
                    q, s = cw.read(rows, cols)
                    yield rows, cols, q, s
                else:
                    yield rows, cols, np.moveaxis(cw.read_float(rows, cols), 0, -1), None
                continue
            f = np.asarray(da.isel(y=rows, x=cols).transpose("y", "x", "band").values, dtype=np.float32)
            if quantized:
                q, s = quantize(f)
                yield rows, cols, q, s
            else:
                yield rows, cols, f, None
