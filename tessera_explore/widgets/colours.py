"""Colours of overlays: class palettes, colour tables of colour maps, and the PNGs
(palette PNGs where one byte a pixel is enough).

Class colours by name (:func:`class_colour`, :func:`class_palette`): a class whose name
says what it is gets the colour people expect (woods green, water blue, fields yellow,
bare soil brown, built-up red, grass light green; case-insensitive, at the start of a
word: "Mixed woodland", "winter wheat", "river"); any other class gets the next colour of
a colour-blind-safe palette (Okabe & Ito, then Paul Tol's "muted") that is not close to
a colour another class already has.  Markers drawn over classes
(:data:`SUGGESTION_COLOUR`, :data:`VALIDATION_COLOUR`) are far (CIELAB distance above
:data:`MARKER_MIN_DISTANCE`) from every colour either can give; a test says so.

Colours as painted: :func:`painted_colour` gives a colour as it shows when a layer is
drawn at ``opacity`` over what is under it (a mid grey stands for the false colour), for
legend swatches that look like the map (``legend_html(..., swatch_opacity=)``).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence

import numpy as np
import xarray as xr

from ..exceptions import ArgumentError

__all__ = ["CLASS_PALETTE", "KEYWORD_COLOURS", "SUGGESTION_COLOUR", "VALIDATION_COLOUR", "MARKER_OUTLINE",
           "MID_GREY", "MARKER_MIN_DISTANCE", "class_colour", "class_palette", "keyword_colour", "painted_colour",
           "colour_distance"]

#: Colour-blind-safe class colours for names without a keyword: Okabe & Ito (2008)
#: without black, then Paul Tol's "muted" scheme.
CLASS_PALETTE = (
    "#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7",
    "#882255", "#44aa99", "#999933", "#aa4499", "#332288", "#ddcc77", "#117733", "#88ccee", "#cc6677",
)
#: Kept for the modules that index it by class number.
MAP_PALETTE = CLASS_PALETTE

#: (colour, word starts) in the order they are tried: the first group with a word of
#: the class name starting with one of its stems gives the colour (:func:`keyword_colour`).
KEYWORD_COLOURS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("#1f78b4", ("water", "lake", "river", "sea", "ocean", "pond", "reservoir", "canal", "stream", "estuar")),
    ("#33a02c", ("wood", "forest", "tree", "conifer", "broadleaf", "deciduous", "evergreen", "orchard",
                 "plantation")),
    ("#b2df8a", ("grass", "pasture", "meadow", "lawn", "park", "sport")),
    ("#e3c42b", ("field", "crop", "cereal", "arable", "wheat", "barley", "maize", "corn", "oat", "rapeseed",
                 "farm", "agri", "cultivat", "rice")),
    ("#a6761d", ("bare", "soil", "fallow", "ploughed", "plowed", "earth", "quarr", "mine")),
    ("#e31a1c", ("built", "urban", "building", "road", "city", "town", "village", "settlement", "residential",
                 "industr", "impervious", "house", "roof", "pavement", "car park")),
    ("#1b9e9e", ("wetland", "marsh", "bog", "fen", "swamp", "reed", "peat")),
    ("#8c8c3a", ("shrub", "scrub", "heath", "bush", "hedge")),
    ("#e8e0c8", ("sand", "beach", "dune")),
    ("#e6f0fa", ("snow", "ice", "glacier")),
)

#: What a semi-transparent class layer is blended over in a swatch: the false colour's
#: typical (mid grey) value.
MID_GREY = (128, 128, 128)
#: Suggested points to label (magenta) and validation points (black): far from every
#: class colour the palette or a keyword can give.
SUGGESTION_COLOUR = "#ff00ff"
VALIDATION_COLOUR = "#000000"
#: Outline drawn around both markers (white: readable on the dark false colour and on
#: the black validation fill).
MARKER_OUTLINE = "#ffffff"
#: The smallest CIELAB distance (Delta E 1976) between a marker colour and any class colour.
MARKER_MIN_DISTANCE = 35.0

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def keyword_colour(name: str) -> str | None:
    """The expected colour of a class called ``name`` (woods green, water blue, ...), or
    None when no word of it starts with a known stem.  Stems of two words ("car park")
    are tried first; stems of three letters or fewer ("sea", "oat", "fen") must be the
    whole word or its plural ("seasonal crop" is a crop, not the sea)."""
    words = _WORD.findall(str(name).lower())
    text = " " + " ".join(words) + " "
    for multi in (True, False):
        for colour, stems in KEYWORD_COLOURS:
            for stem in stems:
                if (" " in stem) != multi:
                    continue
                if multi and f" {stem} " in text:
                    return colour
                if not multi and any(w in (stem, stem + "s") if len(stem) <= 3 else w.startswith(stem)
                                     for w in words):
                    return colour
    return None


def _lab(colours: Sequence[str]) -> np.ndarray:
    """CIELAB (D65) of sRGB colours, (n, 3)."""
    rgb = np.asarray([hex_to_rgb(c) for c in colours], float) / 255.0
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


def colour_distance(a: str, b: str) -> float:
    """Perceptual distance of two colours (CIELAB Delta E 1976; about 2.3 is just
    noticeable, above 30 clearly different)."""
    la, lb = _lab([a, b])
    return float(np.linalg.norm(la - lb))


def class_colour(name: str, used: Iterable[str] = ()) -> str:
    """The default colour of a new class called ``name``, given the colours ``used`` by
    the other classes: its keyword colour (see the module docstring) when that is not
    taken, else the first palette colour not close to a used one (Delta E above 20),
    else the palette colour farthest from all used ones."""
    used = [str(c).lower() for c in used]
    kw = keyword_colour(name)
    if kw is not None and kw not in used:
        return kw
    if not used:
        return CLASS_PALETTE[0]
    lab_used = _lab(used)
    lab_pal = _lab(CLASS_PALETTE)
    nearest = np.min(np.linalg.norm(lab_pal[:, None, :] - lab_used[None, :, :], axis=2), axis=1)
    for colour, d in zip(CLASS_PALETTE, nearest):
        if d > 20.0:
            return colour
    return CLASS_PALETTE[int(np.argmax(nearest))]


def class_palette(names: Sequence[str], colours: Sequence[str | None] | None = None) -> list[str]:
    """Colours of classes ``names`` in order: the given ``colours`` where not None, else
    :func:`class_colour` with every colour assigned before (given ones first) as used."""
    given = list(colours or []) + [None] * max(0, len(names) - len(colours or []))
    used = [c for c in given[: len(names)] if c is not None]
    out: list[str] = []
    for name, c in zip(names, given):
        if c is None:
            c = class_colour(name, used)
            used.append(c)
        out.append(str(c))
    return out


def painted_colour(colour: str, opacity: float, under: str | Sequence[int] = MID_GREY) -> str:
    """``colour`` as it shows when painted at ``opacity`` (0..1) over ``under`` (a
    colour, or an (r, g, b) triple; the false colour's mid grey by default), as
    ``#rrggbb``.  Use it for legend swatches of a semi-transparent layer, or pass the
    mean false colour under a class to show exactly what the map shows."""
    if not 0.0 <= float(opacity) <= 1.0:
        raise ArgumentError(f"opacity must be between 0 and 1, got {opacity}")
    base = hex_to_rgb(under) if isinstance(under, str) else tuple(int(v) for v in under)
    return blend_colours(colour, float(opacity), base)


def category_colours(da: xr.DataArray, values: np.ndarray, categories, colors):
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
    palette = class_palette([names[k] for k in keys], [cols.get(k) for k in keys])
    return np.asarray(keys, dtype=np.int64), [names[k] for k in keys], palette

def hex_to_rgb(c: str) -> tuple[int, int, int]:
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

def colour_lut(cmap) -> np.ndarray:
    """A (256, 3) uint8 colour table from a colour map name or a list of colours."""
    if isinstance(cmap, (list, tuple)):
        stops = np.asarray([hex_to_rgb(c) for c in cmap], dtype=float)
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
        return colour_lut(list(pal))
    except (ImportError, KeyError):
        raise ArgumentError(f"unknown colour map {name!r}; give a matplotlib/colorcet name or a list of colours") from None

def blend_colours(color: str, opacity: float, under: tuple[int, int, int] = (128, 128, 128)) -> str:
    """``color`` painted at ``opacity`` over ``under``, as #rrggbb."""
    rgb = np.asarray(hex_to_rgb(color), float)
    out = opacity * rgb + (1 - opacity) * np.asarray(under, float)
    return "#" + "".join(f"{int(round(v)):02x}" for v in out)

def encode_png(rgba: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()

def encode_indexed(index: np.ndarray, table: np.ndarray) -> bytes:
    """A palette PNG: ``index`` (h, w) uint8 into ``table`` (n <= 256, 4) RGBA.

    One byte a pixel instead of four, and class maps are long runs of one value: the PNG
    is a tenth of the RGBA one or less, and faster to make, send and decode."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(index, np.uint8), mode="P")
    im.putpalette(table[:, :3].astype(np.uint8).tobytes(), rawmode="RGB")
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1, transparency=table[:, 3].astype(np.uint8).tobytes())
    return buf.getvalue()
