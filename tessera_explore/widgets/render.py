"""An array rendered as an overlay image: a PNG on a Web Mercator grid, its lat/lon
corners and its legend (see :mod:`tessera_explore.widgets.overlay`).

Three kinds of input:

* RGB(A) uint8 with a leading band dim of 3 or 4 (``to_rgb`` output): shown as is;
* categorical 2-D (integers, or ``categories=``/``attrs["classes"]``): one colour per
  class, a legend of swatches;
* continuous 2-D (floats: confidence, similarity): a colour map between ``vmin`` and
  ``vmax`` (default the 2nd and 98th percentiles), a colour-bar legend.

NaN (and the array's nodata, and alpha 0) is transparent.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from ..exceptions import ArgumentError
from .colours import category_colours, colour_lut, encode_indexed, encode_png, hex_to_rgb
from .legend import legend_html
from .reproject import DEFAULT_MAX_PIXELS, bounds_latlon, crs_of, prereduce, raster_grid_of, spatial_of, target_grid, warp_image

__all__ = ["OverlayImage", "overlay_image"]


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

def _fast_classes(da: xr.DataArray, resampling: str) -> bool:
    return da.dtype == np.uint8 and resampling == "nearest"


@dataclass
class _Target:
    """From the (prereduced) source grid to the Web Mercator grid of the PNG."""

    src_crs: Any
    src_transform: Any
    dst_transform: Any
    dst_shape: tuple[int, int]
    resampling: str

    def warp(self, src: np.ndarray, nodata) -> np.ndarray:
        return warp_image(src, self.src_crs, self.src_transform, self.dst_transform, self.dst_shape, self.resampling,
                     nodata)


def _nodata_of(da: xr.DataArray):
    return da.attrs.get("_FillValue", da.rio.nodata if hasattr(da, "rio") else None)


def _class_table(palette: Sequence[str]) -> np.ndarray:
    """RGBA rows of the class colours and a last, transparent one (no data)."""
    table = np.zeros((len(palette) + 1, 4), np.uint8)
    for i, c in enumerate(palette):
        table[i, :3] = hex_to_rgb(c)
        table[i, 3] = 255
    return table


def _class_legend(keys: np.ndarray, names: list[str], palette: list[str], title: str, info: dict) -> str:
    info["classes"] = dict(zip(keys.tolist(), names))
    info["legend_categories"] = list(zip(names, palette))
    return legend_html(title=title, categories=list(zip(names, palette)))


def _render_rgb(da: xr.DataArray, target: _Target) -> np.ndarray:
    """RGB(A) uint8 as is; alpha 0 is no data."""
    a = np.asarray(da.values)
    if a.shape[0] == 3:
        a = np.concatenate([a, np.full((1, *a.shape[1:]), 255, np.uint8)], axis=0)
    src = a.astype(np.uint8)
    # alpha 0 pixels are no data: keep them out of averages
    src = np.where(src[3:4] == 0, np.uint8(0), src)
    dst = target.warp(src, 0)
    rgba = np.ascontiguousarray(np.moveaxis(dst, 0, -1))
    rgba[rgba[..., 3] == 0] = 0
    return rgba


def _render_uint8_classes(da, target: _Target, categories, colors, title: str, info: dict):
    """uint8 classes, nearest: a 256-entry lookup to palette indices, then the cached warp
    of one byte a pixel (the explorer's class maps take this path on every click)."""
    vals = np.asarray(da.values)
    nodata = _nodata_of(da)
    nd = int(nodata) if nodata is not None and np.isfinite(nodata) and 0 <= nodata <= 255 else None
    present = np.empty(0, np.int64)
    if categories is None and not any(k in da.attrs for k in ("classes", "flag_meanings")):
        present = np.flatnonzero(np.bincount(vals.ravel(), minlength=256))
        present = present[present != nd] if nd is not None else present
    keys, names, palette = category_colours(da, present, categories, colors)
    n = len(keys)
    lut = np.full(256, n, np.uint8)
    for i, k in enumerate(keys.tolist()):
        if 0 <= k <= 255 and k != nd:
            lut[k] = i
    index = target.warp(lut[vals][None], n)[0]
    table = _class_table(palette)
    return table[index], encode_indexed(index, table), _class_legend(keys, names, palette, title, info)


def _render_classes(da, target: _Target, categories, colors, title: str, info: dict):
    """Classes of any dtype (float NaN and the nodata value are no data)."""
    vals = np.asarray(da.values)
    nodata = _nodata_of(da)
    if np.issubdtype(vals.dtype, np.floating):
        bad = ~np.isfinite(vals)
        vals = np.where(bad, -1, vals).astype(np.int64)
    else:
        vals = vals.astype(np.int64)
        bad = np.zeros(vals.shape, bool)
    if nodata is not None and np.isfinite(nodata):
        bad |= vals == int(nodata)
    keys, names, palette = category_colours(da, np.where(bad, -1, vals), categories, colors)
    idx = np.searchsorted(keys, vals).clip(0, max(len(keys) - 1, 0))
    known = (~bad) & (keys[idx] == vals) if len(keys) else np.zeros(vals.shape, bool)
    src = np.where(known, idx, -1).astype(np.int32)[None]
    dst = target.warp(src, -1)[0]
    table = _class_table(palette)
    index = np.where(dst >= 0, dst, len(keys))
    png = encode_indexed(index.astype(np.uint8), table) if len(table) <= 256 else None
    return table[index], png, _class_legend(keys, names, palette, title, info)


def _render_continuous(da, target: _Target, cmap, vmin, vmax, title: str, info: dict):
    """A colour map between vmin and vmax (default the 2nd and 98th percentiles)."""
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
    dst = target.warp(vals[None], np.nan)[0]
    lut = colour_lut(cmap)
    ok = np.isfinite(dst)
    span = (vmax - vmin) or 1.0
    t = np.clip((np.where(ok, dst, vmin) - vmin) / span, 0, 1)
    # 255 colour steps and one transparent entry: a palette PNG
    level = np.where(ok, (t * 254 + 0.5).astype(np.uint8), np.uint8(255))
    table = np.zeros((256, 4), np.uint8)
    table[:255, :3] = lut[np.linspace(0, 255, 255).round().astype(np.int64)]
    table[:255, 3] = 255
    info.update(vmin=vmin, vmax=vmax)
    legend = legend_html(title=title, cmap=lut, vmin=vmin, vmax=vmax, units=str(da.attrs.get("units", "")))
    return table[level], encode_indexed(level, table), legend


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
    da = spatial_of(da)
    kind = _kind(da, categories)
    if da.ndim == 2 and categorical is not None:
        kind = "categorical" if categorical else "continuous"
    src_crs = crs_of(da)
    max_pixels = int(max_pixels)
    if max_pixels < 1:
        raise ArgumentError(f"max_pixels must be positive, got {max_pixels}")
    source_shape = (da.sizes["y"], da.sizes["x"])
    da = prereduce(da, kind, max_pixels)
    src_transform = raster_grid_of(da, src_crs)
    dst_transform, dst_shape, factor = target_grid(src_crs, src_transform, (da.sizes["y"], da.sizes["x"]), max_pixels)
    down = factor > 1.0 or da.sizes["y"] != source_shape[0]
    if resampling is None:
        resampling = ("mode" if kind == "categorical" else "average") if factor > 1.0 else "nearest"
    target = _Target(src_crs, src_transform, dst_transform, dst_shape, resampling)
    name = title or str(da.attrs.get("long_name") or da.name or "")
    info: dict[str, Any] = {"downsample_factor": factor, "prereduced": da.sizes["y"] != source_shape[0]}
    if kind == "rgb":
        rgba, png, legend = _render_rgb(da, target), None, None
    elif kind == "categorical":
        fast = _fast_classes(da, resampling)
        rgba, png, legend = (_render_uint8_classes if fast else _render_classes)(
            da, target, categories, colors, name, info)
    else:
        rgba, png, legend = _render_continuous(da, target, cmap, vmin, vmax, name, info)
    info["downsampled"] = bool(down)
    return OverlayImage(
        png=png if png is not None else encode_png(rgba), rgba=rgba, bounds=bounds_latlon(dst_transform, dst_shape),
        transform=dst_transform,
        kind=kind, resampling=resampling, legend=legend, source_shape=source_shape, info=info,
    )
