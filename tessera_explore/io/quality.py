"""Per-pixel quality arrays of a store, on the grid of an opened embeddings array.

The dclimate v1.1 store records, beside every embedding, how the pixel was observed in
its year: ``s2_obs_count``, ``s1_asc_obs_count``, ``s1_desc_obs_count`` (valid
Sentinel-2 / Sentinel-1 ascending / descending observations) and ``*_month_covered``
(which months had one), plus, per zone group, ``years_complete``.  The run's rule: a
pixel with fewer than :data:`~tessera_explore.io.layout.MIN_S2_OBS` valid optical
observations is left empty; pixels without radar are still embedded.

:func:`quality` reads them for exactly the pixels of an array made by
:func:`~tessera_explore.open_embeddings` (or a window of one): each output pixel takes
the values of the zone the embedding came from, through the same mosaic that placed
the embeddings (across zones, the nearest source pixel, as for values).  A year that
``years_complete`` leaves out reads as the arrays' fill values (0 observations), as
its embeddings read as not computed (:func:`~tessera_explore.data_mask` gives 2).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import xarray as xr

from ..exceptions import ArgumentError, StoreError
from . import layout

__all__ = ["quality", "quality_arrays"]


def _store_tiles(da: xr.DataArray):
    from .codes import codes_window
    from .store import StoreTile, UnfilledTile

    cw = codes_window(da)
    if cw is None:
        raise ArgumentError("quality arrays are read for arrays opened from a store with open_embeddings (or a "
                            "window of one); this array has no store behind it (resampled, computed or live?)")
    tiles = [t for t in cw.source.tiles if isinstance(t, (StoreTile, UnfilledTile))]
    if not tiles:
        raise ArgumentError(f"{da.attrs.get('source', 'this array')} is not a Zarr store: NPY tiles and GeoTIFF "
                            "exports hold no quality arrays")
    return cw, tiles


def quality_arrays(da: xr.DataArray) -> list[str]:
    """Names of the quality arrays the store behind ``da`` holds for its zones (empty
    for stores without them, such as the Cambridge layout)."""
    _, tiles = _store_tiles(da)
    return sorted({n for t in tiles for n in t.part.quality_arrays()})


def quality(da: xr.DataArray, names: str | Iterable[str] | None = None) -> xr.Dataset:
    """The store's per-pixel quality arrays on ``da``'s grid, as an ``xarray.Dataset``.

    Parameters
    ----------
    da : an array from :func:`~tessera_explore.open_embeddings` on a Zarr store or the
        Icechunk copy (a window of one, after ``isel``/``sel`` with unit steps, is fine).
    names : the arrays to read (default: every quality array the store holds, see
        :func:`quality_arrays`).

    Returns
    -------
    Dataset with one variable per array, dims ``(y, x)`` (and any other axis the array
    has first, e.g. ``month`` for ``*_month_covered``), the coordinates ``x``, ``y``,
    ``year`` and CRS of ``da``, and attrs ``store`` and ``year_complete`` (False when a
    zone's ``years_complete`` leaves ``da``'s year out: its values are the fill values).
    Lazy (dask, on ``da``'s chunks) when ``da`` is; read at once otherwise.  A store
    without quality arrays gives an empty Dataset.  Pixels outside every zone hold
    the arrays' fill values; :func:`~tessera_explore.data_mask` tells them apart.
    """
    import rioxarray  # noqa: F401  (registers the .rio accessor)

    cw, tiles = _store_tiles(da)
    parts = {}
    for t in tiles:
        for n in t.part.quality_arrays():
            parts.setdefault(n, t.part)
    if names is None:
        want = sorted(parts)
    else:
        want = [names] if isinstance(names, str) else list(names)
        unknown = [n for n in want if n not in parts]
        if unknown:
            raise StoreError(f"{da.attrs.get('store', 'the store')} holds no quality array {', '.join(unknown)} "
                             f"for this area; it holds: {', '.join(sorted(parts)) or 'none'}")
    h, w = da.sizes["y"], da.sizes["x"]
    mosaic = cw.source
    data_vars, coords = {}, {"y": da.y, "x": da.x}
    if "year" in da.coords:
        coords["year"] = da.coords["year"]
    for name in want:
        part = parts[name]
        arr = part.group[name]
        dims = part.pixel_dims(name)
        extra_dims = [d for d in dims if d != layout.TIME and d not in layout.Y_DIMS and d not in layout.X_DIMS]
        extra = tuple(int(arr.shape[dims.index(d)]) for d in extra_dims)
        fill = arr.metadata.fill_value
        dtype = np.dtype(arr.dtype)
        reader = _TileReader(name, fill, dtype, extra)

        def block(r0: int, r1: int, c0: int, c1: int, reader=reader, fill=fill, dtype=dtype, extra=extra):
            return mosaic.read_layer(slice(cw.row0 + r0, cw.row0 + r1), slice(cw.col0 + c0, cw.col0 + c1), reader,
                                     fill=fill, dtype=dtype, extra=extra)

        data = _lazy(block, da, dtype, extra, name) if da.chunks is not None else block(0, h, 0, w)
        for d in extra_dims:
            if d not in coords and d in set(part.group.array_keys()):
                coords[d] = (d, np.asarray(part.group[d][...]))
        data_vars[name] = xr.Variable((*extra_dims, "y", "x"), data, dict(arr.attrs))
    year = int(da.coords["year"]) if "year" in da.coords else None
    ds = xr.Dataset(data_vars, coords=coords, attrs={
        "store": str(da.attrs.get("store", "")),
        "year_complete": all(t.part.filled(year) for t in tiles) if year is not None else True,
        "min_s2_obs": layout.MIN_S2_OBS,
    })
    if da.rio.crs is not None:
        ds = ds.rio.write_crs(da.rio.crs)
    return ds


class _TileReader:
    """``read(tile, rows, cols)`` of one quality array for :meth:`Mosaic.read_layer`: the
    tile's zone part's values, or the fill where the part lacks the array or its year was
    never filled."""

    def __init__(self, name: str, fill, dtype: np.dtype, extra: tuple[int, ...]):
        self.name, self.fill, self.dtype, self.extra = name, fill, dtype, extra

    def __call__(self, tile, rows: slice, cols: slice) -> np.ndarray:
        from .store import UnfilledTile

        if isinstance(tile, UnfilledTile) or self.name not in tile.part.quality_arrays():
            return np.full((*self.extra, rows.stop - rows.start, cols.stop - cols.start), self.fill, self.dtype)
        return tile.part.read_layer(self.name, tile.ti, slice(rows.start + tile.r0, rows.stop + tile.r0),
                                    slice(cols.start + tile.c0, cols.stop + tile.c0))


def _lazy(block, da: xr.DataArray, dtype: np.dtype, extra: tuple[int, ...], name: str):
    """A dask array of ``block`` over ``da``'s y/x chunks."""
    import dask
    import dask.array as dsa

    ych, xch = da.chunks[da.get_axis_num("y")], da.chunks[da.get_axis_num("x")]
    token = dask.base.tokenize(da.attrs.get("tessera_mosaic"), name, ych, xch)
    rows = []
    r0 = 0
    for hy in ych:
        row, c0 = [], 0
        for wx in xch:
            d = dask.delayed(block)(r0, r0 + hy, c0, c0 + wx, dask_key_name=f"quality-{name}-{token}-{r0}-{c0}")
            row.append(dsa.from_delayed(d, shape=(*extra, hy, wx), dtype=dtype))
            c0 += wx
        rows.append(row)
        r0 += hy
    return dsa.block(rows)  # two levels of lists: joined along the last two axes (y, x)
