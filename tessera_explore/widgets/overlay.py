"""Any 2-D or RGB DataArray as an exactly placed, in-band PNG overlay on a web map.

Leaflet's ``ImageOverlay`` stretches an image linearly in Web Mercator between two
lat/lon corners.  So the array is first reprojected from its own CRS (UTM for
embeddings) onto a Web Mercator grid (rasterio/GDAL, nearest neighbour unless the area
is downsampled), and the PNG's corners are that grid's corners: every pixel lands
within half a pixel of its true place.  The PNG travels in the widget state as a
``data:`` URL, so no tile server is needed (Binder, remote JupyterHubs, offline).

Three kinds of input:

* RGB(A) uint8 with a leading band dim of 3 or 4 (``to_rgb`` output): shown as is;
* categorical 2-D (integers, or ``categories=``/``attrs["classes"]``): one colour per
  class, a legend of swatches;
* continuous 2-D (floats: confidence, similarity): a colour map between ``vmin`` and
  ``vmax`` (default the 2nd and 98th percentiles), a colour-bar legend.

NaN (and the array's nodata, and alpha 0) is transparent.  ipyleaflet and ipywidgets
are imported only inside :func:`overlay` and its helpers.
"""

from __future__ import annotations

import base64
import html
import io
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from ..exceptions import ArgumentError, ArgumentTypeError

__all__ = [
    "OverlayImage",
    "overlay_image",
    "overlay",
    "update_overlay",
    "remove_overlay",
    "legend_html",
    "DEFAULT_MAX_PIXELS",
]

#: Default pixel budget of one overlay image (about 1-3 MB of PNG).
DEFAULT_MAX_PIXELS = 1_000_000
WEB_MERCATOR = "EPSG:3857"

#: Default class colours (Tableau 20 order): used when neither ``colors=`` nor attrs say.
_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)

_LEGENDS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


@dataclass
class OverlayImage:
    """A rendered overlay: PNG bytes on a Web Mercator grid and where it goes.

    ``bounds`` is ``((south, west), (north, east))`` in degrees, as ipyleaflet wants;
    ``transform``/``shape`` describe the Web Mercator grid of the PNG's pixels;
    ``rgba`` is the image itself ``(h, w, 4)`` uint8.
    """

    png: bytes
    rgba: np.ndarray
    bounds: tuple[tuple[float, float], tuple[float, float]]
    transform: Any
    kind: str
    resampling: str
    legend: str | None = None
    source_shape: tuple[int, int] = (0, 0)
    info: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.rgba.shape[:2]

    @property
    def url(self) -> str:
        """The PNG as a ``data:image/png;base64,...`` URL."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


# -- input analysis ------------------------------------------------------------------------
def _spatial(da: xr.DataArray) -> xr.DataArray:
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


def _crs_of(da: xr.DataArray):
    import rioxarray  # noqa: F401  (registers .rio)

    crs = da.rio.crs
    if crs is None:
        raise ArgumentError("the array has no CRS; write one with da.rio.write_crs(...) so it can be placed")
    return crs


def _grid_of(da: xr.DataArray):
    """Affine transform of the pixel grid from the x/y coordinates (pixel centres)."""
    from affine import Affine

    x, y = da.x.values.astype(float), da.y.values.astype(float)
    if len(x) > 1:
        rx = (x[-1] - x[0]) / (len(x) - 1)
    else:
        rx = abs(float(da.rio.resolution()[0]))
    if len(y) > 1:
        ry = (y[-1] - y[0]) / (len(y) - 1)
    else:
        ry = -abs(float(da.rio.resolution()[1]))
    return Affine(rx, 0.0, x[0] - rx / 2, 0.0, ry, y[0] - ry / 2)


def _kind(da: xr.DataArray, categories) -> str:
    if da.ndim == 3:
        n = da.shape[0]
        if n not in (3, 4) or da.dtype != np.uint8:
            raise ArgumentError(
                f"a 3-D overlay must be RGB(A) uint8 with 3 or 4 bands, got {n} bands of {da.dtype}; "
                "colour projection components with tessera_explore.to_rgb first"
            )
        return "rgb"
    if categories is not None or "classes" in da.attrs or "flag_meanings" in da.attrs:
        return "categorical"
    if np.issubdtype(da.dtype, np.integer) or da.dtype == bool:
        return "categorical"
    return "continuous"


def _categories(da: xr.DataArray, values: np.ndarray, categories, colors):
    """Sorted class values, names and colours."""
    names: dict[int, str] = {}
    cols: dict[int, str] = {}
    from_attrs = categories is None
    if categories is None:
        if "classes" in da.attrs:
            categories = list(np.atleast_1d(da.attrs["classes"]))
        elif "flag_meanings" in da.attrs:
            meanings = str(da.attrs["flag_meanings"]).split()
            fv = np.atleast_1d(da.attrs.get("flag_values", np.arange(len(meanings))))
            categories = {int(v): m.replace("_", " ") for v, m in zip(fv, meanings)}
    if isinstance(categories, dict):
        for v, spec in categories.items():
            if isinstance(spec, (tuple, list)):
                names[int(v)] = str(spec[0])
                if len(spec) > 1:
                    cols[int(v)] = str(spec[1])
            else:
                names[int(v)] = str(spec)
    elif categories is not None:
        names = {i: str(n) for i, n in enumerate(categories)}
    else:
        present = np.unique(values[values >= 0]) if values.size else np.empty(0, int)
        if present.size > 256:
            raise ArgumentError(
                f"{present.size} distinct values is too many for a class map; pass categorical=False "
                "(or a float array) for a colour map"
            )
        names = {int(v): str(int(v)) for v in present}
    if colors is None and from_attrs:
        colors = da.attrs.get("class_colors", da.attrs.get("colors"))
    if colors is not None:
        if isinstance(colors, dict):
            cols.update({int(k): str(c) for k, c in colors.items()})
        else:
            keys = sorted(names)
            cols.update({k: str(c) for k, c in zip(keys, list(np.atleast_1d(colors)))})
    keys = sorted(names)
    palette = [cols.get(k, _PALETTE[i % len(_PALETTE)]) for i, k in enumerate(keys)]
    return np.asarray(keys, dtype=np.int64), [names[k] for k in keys], palette


def _hex_to_rgb(c: str) -> tuple[int, int, int]:
    c = str(c).strip()
    if c.startswith("#") and len(c) in (4, 7):
        if len(c) == 4:
            c = "#" + "".join(ch * 2 for ch in c[1:])
        return int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)
    try:
        from matplotlib.colors import to_rgb

        r, g, b = to_rgb(c)
        return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))
    except (ImportError, ValueError):
        raise ArgumentError(f"cannot read the colour {c!r}; use '#rrggbb'") from None


def _lut(cmap) -> np.ndarray:
    """A (256, 3) uint8 colour table from a colour map name or a list of colours."""
    if isinstance(cmap, (list, tuple)):
        stops = np.asarray([_hex_to_rgb(c) for c in cmap], dtype=float)
        t = np.linspace(0, 1, len(stops))
        u = np.linspace(0, 1, 256)
        return np.stack([np.interp(u, t, stops[:, i]) for i in range(3)], axis=1).round().astype(np.uint8)
    name = str(cmap)
    try:
        import matplotlib

        cm = matplotlib.colormaps[name]
        return (cm(np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
    except (ImportError, KeyError):
        pass
    try:
        import colorcet

        pal = colorcet.palette[name]
        return _lut(list(pal))
    except (ImportError, KeyError):
        raise ArgumentError(f"unknown colour map {name!r}; give a matplotlib/colorcet name or a list of colours") from None


# -- reprojection ------------------------------------------------------------------------------
def _target_grid(src_crs, src_transform, shape, max_pixels: int):
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


def _prereduce(da: xr.DataArray, kind: str, max_pixels: int) -> xr.DataArray:
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
    da = _spatial(da)
    h, w = da.sizes["y"], da.sizes["x"]
    if _prereduce_factor(h * w, int(max_pixels)) >= 2:
        return None
    src_crs = _crs_of(da)
    src_transform = _grid_of(da)
    dst_transform, dst_shape, _ = _target_grid(src_crs, src_transform, (h, w), int(max_pixels))
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


def _warp(src: np.ndarray, src_crs, src_transform, dst_transform, dst_shape, resampling: str, nodata):
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


def _bounds_latlon(transform, shape):
    from pyproj import Transformer
    from rasterio.transform import array_bounds

    west, south, east, north = array_bounds(shape[0], shape[1], transform)
    t = Transformer.from_crs(WEB_MERCATOR, "EPSG:4326", always_xy=True)
    w, s = t.transform(west, south)
    e, n = t.transform(east, north)
    return (float(s), float(w)), (float(n), float(e))


def _encode_png(rgba: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _encode_indexed(index: np.ndarray, table: np.ndarray) -> bytes:
    """A palette PNG: ``index`` (h, w) uint8 into ``table`` (n <= 256, 4) RGBA.

    One byte a pixel instead of four, and class maps are long runs of one value: the PNG
    is a tenth of the RGBA one or less, and faster to make, send and decode."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(index, np.uint8), mode="P")
    im.putpalette(table[:, :3].astype(np.uint8).tobytes(), rawmode="RGB")
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1, transparency=table[:, 3].astype(np.uint8).tobytes())
    return buf.getvalue()


def _fast_classes(da: xr.DataArray, resampling: str) -> bool:
    return da.dtype == np.uint8 and resampling == "nearest"


def overlay_image(
    da: xr.DataArray,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    cmap: str | Sequence[str] = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    categories: dict | Sequence[str] | None = None,
    colors: dict | Sequence[str] | None = None,
    categorical: bool | None = None,
    resampling: str | None = None,
    title: str | None = None,
) -> OverlayImage:
    """Render ``da`` as a Web Mercator RGBA PNG with its lat/lon bounds and legend.

    Parameters
    ----------
    da : 2-D ``(y, x)`` array, or RGB(A) uint8 ``(band, y, x)`` with 3 or 4 bands, with
        x/y pixel-centre coordinates and a CRS (``.rio.crs``).
    max_pixels : pixel budget of the PNG; larger areas are downsampled to fit.
    cmap, vmin, vmax : colour map (name or list of colours) and its range for
        continuous values (default range: 2nd-98th percentile).
    categories : class names: a list (value i -> name), or ``{value: name}`` /
        ``{value: (name, colour)}``.  Also read from ``attrs["classes"]`` or CF
        ``flag_values``/``flag_meanings``.
    colors : class colours (list in class order, or ``{value: colour}``); default
        ``attrs["class_colors"]``, else a 20-colour palette.
    categorical : force the class (True) or colour-map (False) treatment of a 2-D array.
    resampling : GDAL resampling; default ``nearest``, or when downsampled ``average``
        (continuous, RGB) / ``mode`` (classes).
    title : legend title (default ``attrs["long_name"]`` or the array's name).
    """
    da = _spatial(da)
    kind = _kind(da, categories)
    if da.ndim == 2 and categorical is not None:
        kind = "categorical" if categorical else "continuous"
    src_crs = _crs_of(da)
    max_pixels = int(max_pixels)
    if max_pixels < 1:
        raise ArgumentError(f"max_pixels must be positive, got {max_pixels}")
    source_shape = (da.sizes["y"], da.sizes["x"])
    da = _prereduce(da, kind, max_pixels)
    src_transform = _grid_of(da)
    dst_transform, dst_shape, factor = _target_grid(src_crs, src_transform, (da.sizes["y"], da.sizes["x"]), max_pixels)
    down = factor > 1.0 or da.sizes["y"] != source_shape[0]
    if resampling is None:
        resampling = ("mode" if kind == "categorical" else "average") if factor > 1.0 else "nearest"
    name = title or str(da.attrs.get("long_name") or da.name or "")
    info: dict[str, Any] = {"downsample_factor": factor, "prereduced": da.sizes["y"] != source_shape[0]}
    legend = None
    png = None
    if kind == "rgb":
        a = np.asarray(da.values)
        if a.shape[0] == 3:
            a = np.concatenate([a, np.full((1, *a.shape[1:]), 255, np.uint8)], axis=0)
        src = a.astype(np.uint8)
        # alpha 0 pixels are no data: keep them out of averages
        src = np.where(src[3:4] == 0, np.uint8(0), src)
        dst = _warp(src, src_crs, src_transform, dst_transform, dst_shape, resampling, 0)
        rgba = np.ascontiguousarray(np.moveaxis(dst, 0, -1))
        rgba[rgba[..., 3] == 0] = 0
    elif kind == "categorical" and _fast_classes(da, resampling):
        # uint8 classes, nearest: a 256-entry lookup to palette indices, then the cached
        # warp of one byte a pixel (the explorer's class maps take this path on every click)
        vals = np.asarray(da.values)
        nodata = da.attrs.get("_FillValue", da.rio.nodata if hasattr(da, "rio") else None)
        nd = int(nodata) if nodata is not None and np.isfinite(nodata) and 0 <= nodata <= 255 else None
        present = np.empty(0, np.int64)
        if categories is None and not any(k in da.attrs for k in ("classes", "flag_meanings")):
            present = np.flatnonzero(np.bincount(vals.ravel(), minlength=256))
            present = present[present != nd] if nd is not None else present
        keys, names, palette = _categories(da, present, categories, colors)
        n = len(keys)
        lut = np.full(256, n, np.uint8)
        for i, k in enumerate(keys.tolist()):
            if 0 <= k <= 255 and k != nd:
                lut[k] = i
        index = _warp(lut[vals][None], src_crs, src_transform, dst_transform, dst_shape, resampling, n)[0]
        table = np.zeros((n + 1, 4), np.uint8)
        for i, c in enumerate(palette):
            table[i, :3] = _hex_to_rgb(c)
            table[i, 3] = 255
        rgba = table[index]
        png = _encode_indexed(index, table)
        legend = legend_html(title=name, categories=list(zip(names, palette)))
        info["classes"] = dict(zip(keys.tolist(), names))
        info["legend_categories"] = list(zip(names, palette))
    elif kind == "categorical":
        vals = np.asarray(da.values)
        nodata = da.attrs.get("_FillValue", da.rio.nodata if hasattr(da, "rio") else None)
        if np.issubdtype(vals.dtype, np.floating):
            bad = ~np.isfinite(vals)
            vals = np.where(bad, -1, vals).astype(np.int64)
        else:
            vals = vals.astype(np.int64)
            bad = np.zeros(vals.shape, bool)
        if nodata is not None and np.isfinite(nodata):
            bad |= vals == int(nodata)
        keys, names, palette = _categories(da, np.where(bad, -1, vals), categories, colors)
        idx = np.searchsorted(keys, vals).clip(0, max(len(keys) - 1, 0))
        known = (~bad) & (keys[idx] == vals) if len(keys) else np.zeros(vals.shape, bool)
        src = np.where(known, idx, -1).astype(np.int32)[None]
        dst = _warp(src, src_crs, src_transform, dst_transform, dst_shape, resampling, -1)[0]
        table = np.zeros((len(keys) + 1, 4), np.uint8)
        for i, c in enumerate(palette):
            table[i, :3] = _hex_to_rgb(c)
            table[i, 3] = 255
        index = np.where(dst >= 0, dst, len(keys))
        rgba = table[index]
        if len(table) <= 256:
            png = _encode_indexed(index.astype(np.uint8), table)
        legend = legend_html(title=name, categories=list(zip(names, palette)))
        info["classes"] = dict(zip(keys.tolist(), names))
        info["legend_categories"] = list(zip(names, palette))
    else:
        vals = np.asarray(da.values, dtype=np.float32)
        nodata = da.rio.nodata if hasattr(da, "rio") else None
        if nodata is not None and np.isfinite(nodata):
            vals = np.where(vals == nodata, np.nan, vals)
        finite = np.isfinite(vals)
        if vmin is None or vmax is None:
            if finite.any():
                sample = vals[finite]
                if sample.size > 1_000_000:
                    sample = sample[:: sample.size // 1_000_000]
                lo, hi = np.percentile(sample, [2, 98])
            else:
                lo, hi = 0.0, 1.0
            vmin = float(lo) if vmin is None else float(vmin)
            vmax = float(hi) if vmax is None else float(vmax)
        dst = _warp(vals[None], src_crs, src_transform, dst_transform, dst_shape, resampling, np.nan)[0]
        lut = _lut(cmap)
        ok = np.isfinite(dst)
        span = (vmax - vmin) or 1.0
        t = np.clip((np.where(ok, dst, vmin) - vmin) / span, 0, 1)
        # 255 colour steps and one transparent entry: a palette PNG
        level = np.where(ok, (t * 254 + 0.5).astype(np.uint8), np.uint8(255))
        table = np.zeros((256, 4), np.uint8)
        table[:255, :3] = lut[np.linspace(0, 255, 255).round().astype(np.int64)]
        table[:255, 3] = 255
        rgba = table[level]
        png = _encode_indexed(level, table)
        legend = legend_html(title=name, cmap=lut, vmin=vmin, vmax=vmax, units=str(da.attrs.get("units", "")))
        info.update(vmin=vmin, vmax=vmax)
    info["downsampled"] = bool(down)
    return OverlayImage(
        png=png if png is not None else _encode_png(rgba), rgba=rgba, bounds=_bounds_latlon(dst_transform, dst_shape),
        transform=dst_transform,
        kind=kind, resampling=resampling, legend=legend, source_shape=source_shape, info=info,
    )


# -- legend ---------------------------------------------------------------------------------
def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _blend(color: str, opacity: float, under: tuple[int, int, int] = (128, 128, 128)) -> str:
    """``color`` painted at ``opacity`` over ``under``, as #rrggbb."""
    rgb = np.asarray(_hex_to_rgb(color), float)
    out = opacity * rgb + (1 - opacity) * np.asarray(under, float)
    return "#" + "".join(f"{int(round(v)):02x}" for v in out)


def legend_html(*, title: str = "", categories: Sequence[tuple[str, str]] | None = None,
                cmap: np.ndarray | str | Sequence[str] | None = None, vmin: float | None = None,
                vmax: float | None = None, units: str = "", swatch_opacity: float = 1.0) -> str:
    """A small self-contained HTML legend: class swatches, or a colour bar with its range.

    ``swatch_opacity`` below 1 paints each swatch as the layer shows it at that opacity
    over a mid grey (beside the full colour, as a thin bar), so the legend looks like the map."""
    box = ("font: 14px sans-serif; background: rgba(255,255,255,0.85); padding: 6px 8px; "
           "border-radius: 4px; line-height: 1.4")
    head = f"<div style='font-weight:bold'>{html.escape(title)}</div>" if title else ""
    if categories is not None:
        def swatch(c):
            if swatch_opacity >= 1:
                return (f"<span class='tessera-swatch' style='display:inline-block;width:14px;height:14px;"
                        f"margin-right:6px;vertical-align:middle;background:{html.escape(c)}'></span>")
            return (f"<span class='tessera-swatch' style='display:inline-block;width:14px;height:14px;"
                    f"margin-right:6px;vertical-align:middle;background:{_blend(c, swatch_opacity)};"
                    f"border-left:4px solid {html.escape(c)}'></span>")

        rows = "".join(f"<div>{swatch(c)}{html.escape(n)}</div>" for n, c in categories)
        return f"<div class='tessera-legend' style='{box}'>{head}{rows}</div>"
    lut = cmap if isinstance(cmap, np.ndarray) else _lut(cmap if cmap is not None else "viridis")
    stops = ", ".join(f"rgb({r},{g},{b}) {100 * i / 10:.0f}%" for i, (r, g, b) in
                      enumerate(lut[np.linspace(0, 255, 11).round().astype(int)]))
    unit = f" {html.escape(units)}" if units else ""
    bar = (f"<div style='width:160px;height:12px;background:linear-gradient(to right, {stops})'></div>"
           f"<div style='display:flex;justify-content:space-between;width:160px'>"
           f"<span>{_fmt(vmin if vmin is not None else 0)}{unit}</span>"
           f"<span>{_fmt(vmax if vmax is not None else 1)}{unit}</span></div>")
    return f"<div class='tessera-legend' style='{box}'>{head}{bar}</div>"


# -- ipyleaflet ------------------------------------------------------------------------------
def overlay(
    da: xr.DataArray,
    *,
    m: Any = None,
    name: str | None = None,
    opacity: float = 1.0,
    legend: bool = True,
    legend_position: str = "bottomright",
    **image_options,
):
    """An ``ipyleaflet.ImageOverlay`` of ``da``, placed exactly (see :func:`overlay_image`).

    With ``m`` (an ``ipyleaflet.Map``, e.g. ``leafmap.leafmap.Map``) the layer is added to
    the map, with its legend as a ``WidgetControl`` where the values have meaning (class
    maps, continuous values; not RGB embedding colour).  Returns the layer; its legend
    control, if any, is removed with it by :func:`remove_overlay`.
    ``image_options`` go to :func:`overlay_image` (``max_pixels``, ``cmap``, ``vmin``, ...).
    """
    import ipyleaflet

    img = overlay_image(da, **image_options)
    layer = ipyleaflet.ImageOverlay(url=img.url, bounds=img.bounds, opacity=float(opacity),
                                    name=name or str(da.attrs.get("long_name") or da.name or "overlay"))
    control = None
    if legend and img.legend:
        import ipywidgets

        control = ipyleaflet.WidgetControl(widget=ipywidgets.HTML(img.legend), position=legend_position)
        _LEGENDS[layer] = control
    if m is not None:
        m.add(layer)
        if control is not None:
            m.add(control)
    return layer


def update_overlay(layer, da: xr.DataArray, **image_options):
    """Re-render ``da`` into an existing ImageOverlay (its URL, bounds and legend), so a
    map shows new values without removing and re-adding layers."""
    img = overlay_image(da, **image_options)
    layer.url = img.url
    layer.bounds = img.bounds
    control = _LEGENDS.get(layer)
    if control is not None and img.legend:
        control.widget.value = img.legend
    return layer


def remove_overlay(m, layer) -> None:
    """Remove an overlay layer and its legend control from the map."""
    if layer in m.layers:
        _map_remove(m, layer)
    control = _LEGENDS.pop(layer, None)
    if control is not None and control in m.controls:
        _map_remove(m, control)


def _map_add(m, obj) -> None:
    """Add a layer or control with ipyleaflet's own ``Map.add``: leafmap's rebuilds its
    layer manager on every add (new checkboxes, sliders and links for every layer, never
    closed), which the explorer does not show."""
    import ipyleaflet

    ipyleaflet.Map.add(m, obj)


def _map_remove(m, obj) -> None:
    """Remove a layer or control from the map and close it, with the widget links that
    point at it (leafmap's layer manager links a checkbox and a slider to each layer).

    A link left pointing at a closed widget cannot be serialised, and one such widget
    makes the kernel's answer to the front end's request for all widget states fail: in
    Voila no widget of the notebook renders ("Loading widget..." forever)."""
    import ipyleaflet
    import ipywidgets as W

    ipyleaflet.Map.remove(m, obj)
    for widget in list(_live_widgets()):
        ends = (widget.source, widget.target) if isinstance(widget, W.widgets.widget_link.Link) else ()
        if any(end[0] is obj for end in ends):
            widget.close()
    if isinstance(obj, W.Widget):
        obj.close()


def _live_widgets():
    """The widgets of this kernel that are open (ipywidgets' registry)."""
    from ipywidgets.widgets import widget

    return getattr(widget, "_instances", {}).values()
