"""Where an overlay's pixels go: the array's grid, the Web Mercator grid of the PNG and
the warp between them.

Leaflet's ``ImageOverlay`` stretches an image linearly in Web Mercator between two
lat/lon corners.  So the array is reprojected from its own CRS (UTM for embeddings) onto
a Web Mercator grid, nearest neighbour unless the area is downsampled, and the PNG's
corners are that grid's corners: every pixel lands within half a pixel of its true place.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from ..exceptions import ArgumentError, ArgumentTypeError

__all__ = ["DEFAULT_MAX_PIXELS", "WEB_MERCATOR", "shown_pixels"]

#: Default pixel budget of one overlay image (about 1-3 MB of PNG).
DEFAULT_MAX_PIXELS = 1_000_000

WEB_MERCATOR = "EPSG:3857"


def spatial_of(da: xr.DataArray) -> xr.DataArray:
    if not isinstance(da, xr.DataArray):
        raise ArgumentTypeError(f"overlay needs an xarray.DataArray with x/y coordinates, got {type(da).__name__}")
    if "x" not in da.dims or "y" not in da.dims:
        raise ArgumentError(f"overlay needs dims 'y' and 'x', got {da.dims}")
    extra = [d for d in da.dims if d not in ("y", "x")]
    if len(extra) > 1:
        raise ArgumentError(f"overlay takes a 2-D array or one band dim (RGB), got dims {da.dims}")
    da = da.transpose(*extra, "y", "x")
    if da.sizes["x"] < 1 or da.sizes["y"] < 1:
        raise ArgumentError("overlay got an empty array")
    return da

def crs_of(da: xr.DataArray):
    import rioxarray  # noqa: F401  (registers .rio)

    crs = da.rio.crs
    if crs is None:
        raise ArgumentError("the array has no CRS; write one with da.rio.write_crs(...) so it can be placed")
    return crs


def raster_grid_of(da: xr.DataArray, crs=None):
    """Affine transform of the pixel grid from the x/y coordinates (pixel centres): that of
    :meth:`Grid.from_coords <tessera_explore.io.grid.Grid.from_coords>`."""
    from ..io.grid import Grid

    return Grid.from_coords(da, crs=crs).transform


def target_grid(src_crs, src_transform, shape, max_pixels: int):
    from rasterio.transform import array_bounds
    from rasterio.warp import calculate_default_transform

    h, w = shape
    bounds = array_bounds(h, w, src_transform)  # (west, south, east, north) in src CRS
    tr, tw, th = calculate_default_transform(src_crs, WEB_MERCATOR, w, h, *bounds)
    factor = 1.0
    if tw * th > max_pixels:
        factor = math.sqrt(tw * th / max_pixels)
        res = (tr.a * factor, -tr.e * factor)
        tr, tw, th = calculate_default_transform(src_crs, WEB_MERCATOR, w, h, *bounds, resolution=res)
        while tw * th > max_pixels:  # rounding up of the edges can overshoot a little
            factor *= 1.02
            res = (res[0] * 1.02, res[1] * 1.02)
            tr, tw, th = calculate_default_transform(src_crs, WEB_MERCATOR, w, h, *bounds, resolution=res)
    return tr, (th, tw), factor

def _prereduce_factor(n: int, max_pixels: int) -> int:
    return int(math.floor(math.sqrt(n / (4 * max_pixels))))

def prereduce(da: xr.DataArray, kind: str, max_pixels: int) -> xr.DataArray:
    """Cut a very large source down by an integer factor before warping (keeps memory low)."""
    k = _prereduce_factor(da.sizes["y"] * da.sizes["x"], max_pixels)
    if k < 2:
        return da
    if kind == "categorical":
        return da.isel(y=slice(k // 2, None, k), x=slice(k // 2, None, k))
    out = da.astype(np.float32).coarsen(y=k, x=k, boundary="trim").mean()  # NaN-skipping
    return out.assign_attrs(da.attrs)

def _lattice_interp(vals: np.ndarray, li: np.ndarray, lj: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear interpolation of values known on lattice rows ``li`` x cols ``lj`` to every pixel."""

    def weights(lat: np.ndarray, n: int):
        k = np.clip(np.searchsorted(lat, np.arange(n), side="right") - 1, 0, len(lat) - 2)
        t = (np.arange(n) - lat[k]) / (lat[k + 1] - lat[k])
        return k, t

    if len(lj) > 1:
        kj, tj = weights(lj, w)
        rows = vals[:, kj] * (1 - tj) + vals[:, kj + 1] * tj
    else:
        rows = np.repeat(vals, w, axis=1)
    if len(li) > 1:
        ki, ti = weights(li, h)
        return rows[ki] * (1 - ti)[:, None] + rows[ki + 1] * ti[:, None]
    return np.repeat(rows, h, axis=0)


#: nearest-warp indices of recent (source grid, target grid) pairs: an explorer redraws
#: the same area again and again, and the indices cost more than the lookup itself
_WARP_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

_WARP_CACHE_SIZE = 4


def _warp_index(src_crs, src_transform, src_shape, dst_transform, dst_shape, step: int = 8):
    """(rows, cols, inside) of the source pixel under each target pixel centre (cached)."""
    from pyproj import Transformer

    key = (str(src_crs), tuple(src_transform)[:6], tuple(src_shape), tuple(dst_transform)[:6], tuple(dst_shape))
    hit = _WARP_CACHE.get(key)
    if hit is not None:
        return hit
    h, w = dst_shape
    li = np.unique(np.append(np.arange(0, h, step), h - 1))
    lj = np.unique(np.append(np.arange(0, w, step), w - 1))
    gx = dst_transform.c + (lj + 0.5) * dst_transform.a
    gy = dst_transform.f + (li + 0.5) * dst_transform.e
    GX, GY = np.meshgrid(gx, gy)
    sx, sy = Transformer.from_crs(WEB_MERCATOR, src_crs, always_xy=True).transform(GX, GY)
    inv = ~src_transform
    fc, fr = inv @ (np.asarray(sx), np.asarray(sy))
    fc = _lattice_interp(np.asarray(fc, float), li, lj, h, w)
    fr = _lattice_interp(np.asarray(fr, float), li, lj, h, w)
    sh, sw = src_shape
    inside = np.isfinite(fc) & np.isfinite(fr) & (fc >= 0) & (fc < sw) & (fr >= 0) & (fr < sh)
    ci = np.where(inside, np.floor(fc), 0).astype(np.int32)
    ri = np.where(inside, np.floor(fr), 0).astype(np.int32)
    out = (ri, ci, inside)
    if len(_WARP_CACHE) >= _WARP_CACHE_SIZE:
        _WARP_CACHE.pop(next(iter(_WARP_CACHE)))
    _WARP_CACHE[key] = out
    return out

def shown_pixels(da: xr.DataArray, *, max_pixels: int = DEFAULT_MAX_PIXELS, resampling: str | None = "nearest",
                 **_ignored) -> np.ndarray | None:
    """Row-major indices of the pixels of ``da``'s grid that a nearest-neighbour
    :func:`overlay_image` of it within ``max_pixels`` reads (each image pixel shows one
    of them), or None when that image reads them all or is not nearest-neighbour."""
    if resampling != "nearest":
        return None
    da = spatial_of(da)
    h, w = da.sizes["y"], da.sizes["x"]
    if _prereduce_factor(h * w, int(max_pixels)) >= 2:
        return None
    src_crs = crs_of(da)
    src_transform = raster_grid_of(da, src_crs)
    dst_transform, dst_shape, _ = target_grid(src_crs, src_transform, (h, w), int(max_pixels))
    ri, ci, inside = _warp_index(src_crs, src_transform, (h, w), dst_transform, dst_shape)
    return np.unique(ri[inside].astype(np.int64) * w + ci[inside])

def _warp_nearest(src: np.ndarray, src_crs, src_transform, dst_transform, dst_shape, nodata, step: int = 8):
    """Nearest-neighbour warp with exact placement.

    Each output pixel takes the source pixel that contains its centre.  Centres are
    transformed with PROJ exactly on a lattice of every ``step``-th pixel and bilinearly in
    between (the curvature of UTM <-> Web Mercator over 8 pixels is far below a millimetre;
    GDAL's default approximation allows 0.125 pixel).  The indices are cached per pair of
    grids, so redrawing one area is a lookup.
    """
    ri, ci, inside = _warp_index(src_crs, src_transform, src.shape[1:], dst_transform, dst_shape, step)
    dst = src[:, ri, ci]
    if not inside.all():
        dst[:, ~inside] = nodata
    return dst

def warp_image(src: np.ndarray, src_crs, src_transform, dst_transform, dst_shape, resampling: str, nodata):
    if resampling == "nearest":
        return _warp_nearest(src, src_crs, src_transform, dst_transform, dst_shape, nodata)
    from rasterio.warp import Resampling, reproject

    dst = np.empty((src.shape[0], *dst_shape), dtype=src.dtype)
    dst.fill(nodata)
    reproject(
        src, dst, src_transform=src_transform, src_crs=src_crs, dst_transform=dst_transform,
        dst_crs=WEB_MERCATOR, resampling=getattr(Resampling, resampling), src_nodata=nodata,
        dst_nodata=nodata, num_threads=2,
    )
    return dst

def bounds_latlon(transform, shape):
    from pyproj import Transformer
    from rasterio.transform import array_bounds

    west, south, east, north = array_bounds(shape[0], shape[1], transform)
    t = Transformer.from_crs(WEB_MERCATOR, "EPSG:4326", always_xy=True)
    w, s = t.transform(west, south)
    e, n = t.transform(east, north)
    return (float(s), float(w)), (float(n), float(e))
