"""``change``: per-pixel distance between two years on one grid, and a classed version."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from .. import _schema
from ..exceptions import ArgumentError, SchemaError, VersionMismatchError
from .area import PreparedArea, blocks, grid_of, new_map, provenance, stitch

__all__ = ["change", "CHANGE_CLASSES", "CHANGE_COLORS", "DEFAULT_BREAKS"]

#: The change classes, in the order of ``change_class`` values 0..3: the one place
#: their names are spelled (a change map carries them in ``attrs["classes"]``).
CHANGE_CLASSES = ("stable", "minor", "moderate", "major")
#: A colour per change class, written to ``attrs["colors"]`` of ``change_class``.
CHANGE_COLORS = ("#f0f0f0", "#fdd49e", "#fc8d59", "#b30000")
#: Cosine-distance breaks between the classes.  Calibrated on the synthetic scene
#: (``tessera_explore.testing``): a pixel of unchanged land cover a year apart has a
#: median distance of about 0.11 and a 95th percentile of about 0.24; a pixel whose class
#: changed (crop rotation, new buildings) about 0.5 (5th percentile) to 0.83 (95th).
#: Real scenes differ: pass ``breaks=`` after looking at the distance histogram.
DEFAULT_BREAKS = (0.25, 0.4, 0.6)


def _pairs(a: Any, b: Any, block: int):
    if isinstance(a, PreparedArea) and isinstance(b, PreparedArea):
        yield a.block(), b.block()
        return
    if isinstance(a, PreparedArea):
        for bb in blocks(b, block=block):
            yield a.window(bb.rows, bb.cols), bb
        return
    if isinstance(b, PreparedArea):
        for ba in blocks(a, block=block):
            yield ba, b.window(ba.rows, ba.cols)
        return
    yield from zip(blocks(a, block=block), blocks(b, block=block))


def _cos_dist(ba, bb) -> np.ndarray:
    dot = np.einsum("ij,ij->i", ba.codes, bb.codes, dtype=np.int32).astype(np.float32)
    d = 1.0 - dot * ba.inv_norm * bb.inv_norm
    d[~(ba.valid & bb.valid)] = np.nan
    return d


def _euc_dist(ba, bb) -> np.ndarray:
    diff = ba.codes.astype(np.float32) * ba.scales[:, None] - bb.codes.astype(np.float32) * bb.scales[:, None]
    d = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    d[~(ba.valid & bb.valid)] = np.nan
    return d


def change(da_year_a: Any, da_year_b: Any, *, metric: str = "cosine", breaks: tuple = DEFAULT_BREAKS,
           block: int = 512) -> xr.Dataset:
    """How much every pixel changed between two years.

    Parameters
    ----------
    da_year_a, da_year_b : embeddings (DataArray or :class:`PreparedArea`) of one dataset
        version on the same grid (open both with the same ``bbox``).
    metric : ``"cosine"`` (``1 - cos``, 0..2; the default) or ``"euclidean"``.
    breaks : three increasing thresholds on the distance between ``stable``, ``minor``,
        ``moderate`` and ``major`` change.

    Returns
    -------
    Dataset with ``distance`` (float32, NaN where either year has no data) and
    ``change_class`` (uint8 index into ``attrs["classes"]``, 255 = no data).
    """
    if metric not in ("cosine", "euclidean"):
        raise ArgumentError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    br = tuple(float(v) for v in breaks)
    if len(br) != 3 or not (br[0] < br[1] < br[2]):
        raise ArgumentError(f"breaks must be three increasing numbers, got {breaks!r}")
    ga, gb = grid_of(da_year_a), grid_of(da_year_b)
    if not _schema.same_dataset(ga.attrs, gb.attrs):
        raise VersionMismatchError(
            f"cannot compare embeddings of different datasets ({_schema.describe_dataset(ga.attrs)} and "
            f"{_schema.describe_dataset(gb.attrs)}): they live in unrelated feature spaces; open both years "
            "from one dataset"
        )
    if not ga.same_as(gb):
        raise SchemaError(
            f"the two years are not on the same grid ({ga.shape} vs {gb.shape} pixels, CRS {ga.crs} vs {gb.crs}); "
            "open both with the same bbox, or align one with .rio.reproject_match"
        )
    fn = _cos_dist if metric == "cosine" else _euc_dist
    (dist,) = stitch(ga, _pairs(da_year_a, da_year_b, block), lambda pair: (fn(*pair),), (np.nan,))
    dist = dist.astype(np.float32, copy=False)
    cls = np.digitize(np.nan_to_num(dist, nan=0.0), br).astype(np.uint8)
    cls[np.isnan(dist)] = 255
    attrs = provenance(ga)
    attrs.update({"year": f"{ga.year}-{gb.year}", "year_a": int(ga.year), "year_b": int(gb.year),
                  "metric": metric, "breaks": list(br), "product": "change"})
    # each map carries the provenance too, so one exported alone is tagged as the Dataset would be
    d_da = new_map(ga, dist, name="distance", nodata=np.nan,
                   attrs={**attrs, "long_name": f"{metric} distance between {ga.year} and {gb.year}"})
    c_da = new_map(ga, cls, name="change_class", nodata=255,
                   attrs={**attrs, "long_name": "change class", "classes": list(CHANGE_CLASSES),
                          "colors": list(CHANGE_COLORS),
                          "flag_values": list(range(len(CHANGE_CLASSES))), "flag_meanings": " ".join(CHANGE_CLASSES),
                          "breaks": list(br)})
    ds = xr.Dataset({"distance": d_da, "change_class": c_da}, attrs=attrs)
    return ds.drop_vars("year", errors="ignore").assign_coords(year_a=int(ga.year), year_b=int(gb.year))
