"""Colours of overlays: class palettes, colour tables of colour maps, and the PNGs
(palette PNGs where one byte a pixel is enough)."""

from __future__ import annotations

import io

import numpy as np
import xarray as xr

from ..exceptions import ArgumentError

#: Default class colours (Tableau 20 order): used when neither ``colors=`` nor attrs say.
_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)


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

def _blend(color: str, opacity: float, under: tuple[int, int, int] = (128, 128, 128)) -> str:
    """``color`` painted at ``opacity`` over ``under``, as #rrggbb."""
    rgb = np.asarray(_hex_to_rgb(color), float)
    out = opacity * rgb + (1 - opacity) * np.asarray(under, float)
    return "#" + "".join(f"{int(round(v)):02x}" for v in out)

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
