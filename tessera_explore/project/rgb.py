"""Projection components -> RGBA colour with a reusable percentile stretch.

:class:`RGBStretch` learns, per component, the values at two percentiles and maps them
to 0 and 255.  Fit once (a projection fits one on its own fitting sample, ``stretch_``)
and apply it everywhere, so a colour means the same embedding on every tile and year.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from sklearn.base import BaseEstimator

from ..exceptions import ArgumentError, ArgumentTypeError, ProjectionError

__all__ = ["RGBStretch", "to_rgb", "RGB_BANDS"]

RGB_BANDS = ("r", "g", "b", "a")
#: At most this many pixels are used to compute percentiles (evenly strided).
_PERCENTILE_PIXELS = 1_000_000


def _as_pixels(components: Any) -> tuple[np.ndarray, bool]:
    """(k, ...) float array view and whether it was a (n, k) table."""
    if isinstance(components, xr.DataArray):
        if components.ndim != 3:
            raise ProjectionError(f"components must be (component, y, x); got dims {components.dims}")
        return np.asarray(components.values), False
    a = np.asarray(components)
    if a.ndim == 2:  # (n, k) table
        return a.T, True
    if a.ndim == 3:
        return a, False
    raise ProjectionError(f"components must be (component, y, x) or (n, component), got shape {a.shape}")


class RGBStretch(BaseEstimator):
    """Linear stretch of up to three components to 0..255 between two percentiles.

    Parameters
    ----------
    percentiles : (low, high) percentiles of the fitted pixels that map to 0 and 255.

    Learned attributes: ``low_``, ``high_`` (one value per component, at most 3).
    """

    def __init__(self, percentiles: tuple[float, float] = (2, 98)):
        self.percentiles = percentiles

    def fit(self, components, y=None) -> RGBStretch:
        lo_p, hi_p = (float(p) for p in self.percentiles)
        if not 0 <= lo_p < hi_p <= 100:
            raise ArgumentError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")
        a, _ = _as_pixels(components)
        k = min(3, a.shape[0])
        flat = a[:k].reshape(k, -1)
        if flat.shape[1] > _PERCENTILE_PIXELS:
            flat = flat[:, :: -(-flat.shape[1] // _PERCENTILE_PIXELS)]
        ok = np.isfinite(flat).all(axis=0)
        if not ok.any():
            raise ProjectionError("cannot fit a colour stretch: no pixel has data")
        q = np.percentile(flat[:, ok], [lo_p, hi_p], axis=1)
        self.low_ = q[0].astype(np.float64)
        self.high_ = q[1].astype(np.float64)
        return self

    def _check(self):
        if not hasattr(self, "low_"):
            raise ProjectionError("this RGBStretch is not fitted yet; call fit(components) first")

    def transform(self, components):
        """RGBA uint8: a ``(4, y, x)`` DataArray for a components DataArray, else an array
        of shape ``(4, H, W)`` or ``(n, 4)``.  Alpha is 0 where there is no data."""
        self._check()
        a, table = _as_pixels(components)
        k = min(3, a.shape[0])
        if k > len(self.low_):
            raise ProjectionError(f"the stretch was fitted on {len(self.low_)} components, got {k}")
        shape = a.shape[1:]
        valid = np.isfinite(a[:k]).all(axis=0)
        out = np.zeros((4, *shape), dtype=np.uint8)
        for i in range(k):
            span = self.high_[i] - self.low_[i]
            scale = np.float32(255.0 / span) if span > 0 else np.float32(0.0)
            t = a[i] - np.float32(self.low_[i])
            t *= scale
            if span <= 0:
                t += np.float32(127.5)
            np.clip(t, 0, 255, out=t)
            t += np.float32(0.5)
            t[~valid] = 0
            out[i] = t.astype(np.uint8)
        if k == 1:
            out[1] = out[0]
            out[2] = out[0]
        elif k == 2:
            out[2] = np.where(valid, np.uint8(128), np.uint8(0))
        out[3] = np.where(valid, np.uint8(255), np.uint8(0))
        if table:
            return out.T
        if isinstance(components, xr.DataArray):
            return _rgb_array(out, components, self)
        return out

    def fit_transform(self, components, y=None):
        return self.fit(components).transform(components)

    def to_attrs(self) -> dict:
        """The stretch as plain attrs (lists of floats), e.g. for a DataArray."""
        self._check()
        return {
            "stretch_percentiles": [float(p) for p in self.percentiles],
            "stretch_low": [float(v) for v in self.low_],
            "stretch_high": [float(v) for v in self.high_],
        }

    @classmethod
    def from_attrs(cls, attrs: dict) -> RGBStretch:
        """Rebuild a fitted stretch from :meth:`to_attrs` output (or an RGB array's attrs)."""
        try:
            s = cls(tuple(float(p) for p in attrs["stretch_percentiles"]))
            s.low_ = np.asarray(attrs["stretch_low"], dtype=np.float64).ravel()
            s.high_ = np.asarray(attrs["stretch_high"], dtype=np.float64).ravel()
        except KeyError as err:
            raise ProjectionError(f"no colour stretch in these attrs (missing {err})") from None
        return s


def _rgb_array(rgba: np.ndarray, like: xr.DataArray, stretch: RGBStretch) -> xr.DataArray:
    coords = {"band": list(RGB_BANDS), "y": like.y, "x": like.x}
    for c in ("year", "spatial_ref"):
        if c in like.coords:
            coords[c] = like.coords[c]
    attrs = {k: v for k, v in like.attrs.items() if not k.startswith("stretch_")}
    attrs.update(stretch.to_attrs())
    attrs["long_name"] = "projection colour (RGBA)"
    out = xr.DataArray(rgba, dims=("band", "y", "x"), coords=coords, name="rgb", attrs=attrs)
    if "spatial_ref" in like.coords:
        out.encoding["grid_mapping"] = "spatial_ref"
    return out


def _stretch_for(components, stretch) -> RGBStretch:
    from ._base import Projection

    if isinstance(stretch, RGBStretch):
        return stretch
    if isinstance(stretch, Projection):
        stretch._check_fitted()
        return stretch.stretch_
    if isinstance(stretch, dict):
        return RGBStretch.from_attrs(stretch)
    try:
        lo, hi = (float(p) for p in stretch)
    except (TypeError, ValueError):
        raise ArgumentTypeError(
            "stretch must be a (low, high) percentile pair, a fitted RGBStretch, a fitted projection or "
            f"stretch attrs; got {stretch!r}"
        ) from None
    attrs = getattr(components, "attrs", {})
    if "stretch_percentiles" in attrs and tuple(float(p) for p in attrs["stretch_percentiles"]) == (lo, hi):
        # components from project(): the projection's stretch, computed once on its fitting sample
        return RGBStretch.from_attrs(attrs)
    return RGBStretch((lo, hi)).fit(components)


def to_rgb(components, *, stretch=(2, 98)):
    """Colour projection components as RGBA uint8, transparent where there is no data.

    Parameters
    ----------
    components : the ``(component, y, x)`` DataArray from :func:`~tessera_explore.project`
        (or a NumPy array of that shape, or an ``(n, component)`` table).  Components 1-3
        become red, green and blue.
    stretch : how values map to 0..255:

        * a ``(low, high)`` percentile pair (default ``(2, 98)``).  Components made by
          ``project`` carry their projection's stretch at these percentiles, computed once
          on the fitting sample, and it is reused: every tile or year projected with the
          same ``fitted=`` gets the same colours.  Other arrays (or other percentiles)
          are stretched on their own pixels.
        * a fitted :class:`RGBStretch`, a fitted projection (its ``stretch_``), or the
          attrs of an earlier RGB result: applied as they are.

    Returns
    -------
    A ``(band, y, x)`` uint8 DataArray with bands ``r, g, b, a`` (alpha 0 = no data) and
    the stretch in its attrs (``RGBStretch.from_attrs(rgb.attrs)`` rebuilds it); a NumPy
    array for NumPy input.
    """
    s = _stretch_for(components, stretch)
    return s.transform(components)
