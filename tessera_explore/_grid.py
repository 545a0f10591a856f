"""The one raster-grid value type, at the contract's level (beside ``_schema``).

:class:`Grid` is a north-up raster grid: a CRS, an affine transform and a shape.
Every part of the package that needs "the grid of this array" (the schema, the loader's
output grid, the classifiers' areas, the live encoder's output grid) builds one, and
:meth:`Grid.from_coords` is the single place that turns pixel-centre coordinates into a
transform: it refuses coordinates that are not evenly spaced instead of guessing.

It imports nothing of the package but :mod:`~tessera_explore.exceptions`, so the schema
builds on it without importing ``io``; ``tessera_explore.io.grid.Grid`` is the same
class.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .exceptions import ArgumentError

__all__ = ["Grid", "COORD_TOLERANCE"]

# --- the raster grid ---------------------------------------------------------------------

#: How far (in pixels) a coordinate may lie from the evenly spaced grid that
#: :meth:`Grid.from_coords` fits, before the coordinates count as irregular.  A tenth of a
#: pixel admits float32 coordinates (a 1 m step at 10,000 km northings) and nothing else.
COORD_TOLERANCE = 0.1


def _normalize_crs(crs: Any) -> str:
    """``"EPSG:n"`` for a CRS with an EPSG code (int, text, rasterio or pyproj CRS), else its WKT."""
    if isinstance(crs, bool):
        raise ArgumentError(f"crs={crs!r} is not a CRS")
    if isinstance(crs, (int, np.integer)):
        return f"EPSG:{int(crs)}"
    if isinstance(crs, str):
        head, _, code = crs.strip().partition(":")
        if head.upper() == "EPSG" and code.isdigit():
            return f"EPSG:{int(code)}"
    if crs is None:
        raise ArgumentError("a Grid needs a CRS (got None)")
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        pc = CRS.from_user_input(crs)
    except (CRSError, TypeError, ValueError) as err:
        raise ArgumentError(f"crs={crs!r} is not a CRS: {err}") from err
    epsg = pc.to_epsg()
    return f"EPSG:{epsg}" if epsg is not None else pc.to_wkt()


def _axis(values: Any, name: str, step: float | None, tolerance: float) -> tuple[float, float]:
    """(edge, signed step) of one axis of pixel-centre coordinates, refused when irregular."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ArgumentError(f"{name} coordinates must be a non-empty 1-D array, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ArgumentError(f"{name} coordinates hold NaN or infinite values")
    if v.size == 1:
        if step is None:
            raise ArgumentError(f"{name} has a single coordinate, so its pixel size cannot be told; pass resolution=")
        return float(v[0] - step / 2), float(step)
    d = (v[-1] - v[0]) / (v.size - 1)
    if d == 0:
        raise ArgumentError(f"{name} coordinates are all equal ({v[0]}); a grid needs distinct pixel centres")
    off = np.abs(v - (v[0] + d * np.arange(v.size))).max() / abs(d)
    if off > tolerance:
        steps = np.diff(v)
        raise ArgumentError(
            f"{name} coordinates are not evenly spaced (steps from {steps.min():g} to {steps.max():g}; a centre lies "
            f"{off:.2f} pixels off the regular grid), so they do not describe a raster grid. Resample or reindex "
            "the array onto regular pixel centres first (e.g. .rio.reproject or .interp)")
    return float(v[0] - d / 2), float(d)


@dataclass(frozen=True)
class Grid:
    """A north-up raster grid: ``crs``, affine ``transform`` and ``shape`` ``(height, width)``.

    A hashable value: two grids are equal when they place every pixel at the same spot.
    ``crs`` is kept as text, ``"EPSG:32630"`` for a CRS with an EPSG code (an int or any
    CRS object is accepted and normalised), else WKT.  ``transform`` maps (col, row) of
    pixel corners to (x, y); it has no rotation.  Pixel centres are
    :meth:`coords`; :meth:`from_coords` goes the other way.  Southern UTM rows of the
    published stores (EPSG 326xx with negative northings) are ordinary grids.
    """

    crs: Any
    transform: Any
    shape: tuple[int, int]

    def __post_init__(self):
        from affine import Affine

        t = self.transform
        if not isinstance(t, Affine):
            try:
                t = Affine(*tuple(t)[:6])
            except (TypeError, ValueError) as err:
                raise ArgumentError(f"transform={self.transform!r} is not an affine transform") from err
        if t.b != 0 or t.d != 0 or t.a == 0 or t.e == 0:
            raise ArgumentError(f"transform {tuple(t)[:6]} is rotated or degenerate; a Grid is north-up (b = d = 0)")
        try:
            h, w = (int(v) for v in self.shape)
        except (TypeError, ValueError) as err:
            raise ArgumentError(f"shape={self.shape!r} is not (height, width)") from err
        if h < 0 or w < 0:
            raise ArgumentError(f"shape={self.shape!r} has a negative size")
        object.__setattr__(self, "crs", _normalize_crs(self.crs))
        object.__setattr__(self, "transform", t)
        object.__setattr__(self, "shape", (h, w))

    # --- construction ------------------------------------------------------------------

    @classmethod
    def from_xy(cls, x: Any, y: Any, crs: Any, *, resolution: float | tuple[float, float] | None = None,
                tolerance: float = COORD_TOLERANCE) -> Grid:
        """The grid whose pixel centres are ``x`` (columns) and ``y`` (rows).

        Raises :class:`ArgumentError` when either axis is not evenly spaced (a centre more
        than ``tolerance`` pixels off the fitted regular grid).  ``resolution`` is the pixel
        size of an axis with a single coordinate (a number: ``(r, -r)``; or the signed
        ``(x step, y step)``); by default such an axis takes the other axis's pixel size.
        """
        xs = np.asarray(x, dtype=np.float64)
        ys = np.asarray(y, dtype=np.float64)
        if resolution is not None:
            rx, ry = (float(resolution), -float(resolution)) if np.isscalar(resolution) else map(float, resolution)
        else:
            rx = ry = None
            if xs.size > 1 and ys.size == 1:
                ry = -abs(float(xs[-1] - xs[0]) / (xs.size - 1))
            elif ys.size > 1 and xs.size == 1:
                rx = abs(float(ys[-1] - ys[0]) / (ys.size - 1))
        x0, dx = _axis(xs, "x", rx, tolerance)
        y0, dy = _axis(ys, "y", ry, tolerance)
        from affine import Affine

        return cls(crs, Affine(dx, 0.0, x0, 0.0, dy, y0), (ys.size, xs.size))

    @classmethod
    def from_coords(cls, obj: Any, *, crs: Any = None, resolution: float | tuple[float, float] | None = None,
                    tolerance: float = COORD_TOLERANCE) -> Grid:
        """The grid of an xarray object from its ``x``/``y`` pixel-centre coordinates.

        ``crs`` defaults to ``obj.rio.crs``.  An axis with a single coordinate takes its
        pixel size from ``resolution``, else from the transform rioxarray has recorded, else
        from the other axis.  Irregular coordinates raise :class:`ArgumentError` (see
        :meth:`from_xy`).
        """
        rio = getattr(obj, "rio", None) if hasattr(obj, "dims") else None
        xname, yname = "x", "y"
        coords = getattr(obj, "coords", {})
        if rio is not None and not ("x" in coords and "y" in coords):
            from rioxarray.exceptions import MissingSpatialDimensionError

            try:
                xname, yname = rio.x_dim, rio.y_dim
            except MissingSpatialDimensionError as err:
                raise ArgumentError(f"{type(obj).__name__} has no x/y coordinates to make a grid of") from err
        try:
            xs, ys = obj[xname].values, obj[yname].values
        except (KeyError, TypeError) as err:
            raise ArgumentError(f"{type(obj).__name__} has no {xname!r}/{yname!r} coordinates to make a grid of") from err
        if crs is None:
            crs = rio.crs if rio is not None else None
            if crs is None:
                raise ArgumentError("the array has no CRS (write one with .rio.write_crs) and no crs= was given")
        if resolution is None and (np.size(xs) == 1 or np.size(ys) == 1) and rio is not None:
            t = rio.transform()
            if t.b == 0 and t.d == 0 and not t.is_identity:
                resolution = (t.a, t.e)
        return cls.from_xy(xs, ys, crs, resolution=resolution, tolerance=tolerance)

    @classmethod
    def covering(cls, bounds: Sequence[float], crs: Any, resolution: float, *,
                 origin: tuple[float, float] = (0.0, 0.0)) -> Grid:
        """The north-up grid of ``resolution`` pixels that covers ``bounds`` (left, bottom,
        right, top in ``crs``), its edges on multiples of ``resolution`` from ``origin``
        (a millionth of a pixel of slack, so an edge that is on the lattice stays there)."""
        from affine import Affine

        x0, y0, x1, y1 = (float(v) for v in bounds)
        r = float(resolution)
        if not r > 0:
            raise ArgumentError(f"resolution={resolution!r} must be a positive number")
        ox, oy = (float(v) for v in origin)
        left = ox + math.floor(round((x0 - ox) / r, 6)) * r
        right = ox + math.ceil(round((x1 - ox) / r, 6)) * r
        top = oy + math.ceil(round((y1 - oy) / r, 6)) * r
        bottom = oy + math.floor(round((y0 - oy) / r, 6)) * r
        width, height = int(round((right - left) / r)), int(round((top - bottom) / r))
        return cls(crs, Affine(r, 0.0, left, 0.0, -r, top), (max(height, 0), max(width, 0)))

    # --- what it is ----------------------------------------------------------------------

    @property
    def height(self) -> int:
        return self.shape[0]

    @property
    def width(self) -> int:
        return self.shape[1]

    @property
    def n_pixels(self) -> int:
        return int(self.shape[0] * self.shape[1])

    @property
    def epsg(self) -> int | None:
        """The EPSG code of the CRS (None for a CRS without one)."""
        return int(self.crs[5:]) if self.crs.startswith("EPSG:") else None

    @property
    def resolution(self) -> tuple[float, float]:
        """Pixel size ``(x, y)`` in CRS units, both positive."""
        return abs(self.transform.a), abs(self.transform.e)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of the outer pixel edges."""
        t = self.transform
        xa, xb = t.c, t.c + t.a * self.width
        ya, yb = t.f, t.f + t.e * self.height
        return min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb)

    def coords(self) -> dict[str, np.ndarray]:
        """Pixel-centre coordinates ``{"y": ..., "x": ...}`` (float64)."""
        t = self.transform
        return {"y": t.f + (np.arange(self.height) + 0.5) * t.e, "x": t.c + (np.arange(self.width) + 0.5) * t.a}

    def pixel_of(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(row, col)`` (int64) of the pixels holding the points ``x``, ``y``; they may lie
        outside the grid (see :meth:`inside`)."""
        t = self.transform
        col = np.floor((np.asarray(x, dtype=np.float64) - t.c) / t.a).astype(np.int64)
        row = np.floor((np.asarray(y, dtype=np.float64) - t.f) / t.e).astype(np.int64)
        return row, col

    def inside(self, row: Any, col: Any) -> np.ndarray:
        """Whether ``(row, col)`` lies on the grid."""
        row, col = np.asarray(row), np.asarray(col)
        return (row >= 0) & (row < self.height) & (col >= 0) & (col < self.width)

    def window(self, rows: slice, cols: slice) -> Grid:
        """The sub-grid of ``rows`` x ``cols`` (slices without steps, clipped to the grid)."""
        if rows.step not in (None, 1) or cols.step not in (None, 1):
            raise ArgumentError("Grid.window takes slices without a step")
        r0, r1, _ = rows.indices(self.height)
        c0, c1, _ = cols.indices(self.width)
        from affine import Affine

        return Grid(self.crs, self.transform @ Affine.translation(c0, r0), (max(r1 - r0, 0), max(c1 - c0, 0)))

    def window_of_bounds(self, bounds: Sequence[float]) -> tuple[slice, slice]:
        """``(rows, cols)`` of the pixels that a box ``(left, bottom, right, top)`` touches,
        clipped to the grid (empty slices when it misses)."""
        x0, y0, x1, y1 = (float(v) for v in bounds)
        t = self.transform
        cs = sorted(((x0 - t.c) / t.a, (x1 - t.c) / t.a))
        rs = sorted(((y0 - t.f) / t.e, (y1 - t.f) / t.e))
        c0 = int(np.clip(np.floor(cs[0]), 0, self.width))
        c1 = int(np.clip(np.ceil(cs[1]), 0, self.width))
        r0 = int(np.clip(np.floor(rs[0]), 0, self.height))
        r1 = int(np.clip(np.ceil(rs[1]), 0, self.height))
        return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))

    def lonlat_bounds(self) -> tuple[float, float, float, float]:
        """``(west, south, east, north)`` in degrees of the grid's outer edges."""
        from pyproj import Transformer

        tr = Transformer.from_crs(self.crs, 4326, always_xy=True)
        return tuple(float(v) for v in tr.transform_bounds(*self.bounds, densify_pts=21))

    def key(self) -> str:
        """A short text naming the grid (file and cache names)."""
        t = self.transform
        if self.epsg is not None:
            crs = str(self.epsg)
        else:
            import hashlib

            crs = "crs" + hashlib.sha1(self.crs.encode()).hexdigest()[:8]
        return f"{crs}_{t.a:g}_{t.e:g}_{t.c:.2f}_{t.f:.2f}_{self.shape[0]}x{self.shape[1]}"

    def geobox(self):
        """The same grid as an ``odc.geo`` GeoBox (for odc-stac; needs ``odc-geo``)."""
        from odc.geo.geobox import GeoBox

        return GeoBox(self.shape, self.transform, self.crs)
