"""``similarity``: how alike every pixel is to one or more query pixels.

Cosine similarity runs on int8 codes (the per-pixel scale cancels) against a float32
query direction: one pass over the codes, ``codes . q * inv_norm``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import xarray as xr

from ..exceptions import ArgumentError, LabelError
from . import _kernels
from .area import blocks, grid_of, new_map, provenance, stitch

__all__ = ["similarity", "query_vectors"]

METRICS = ("cosine", "euclidean")
REDUCE = ("mean", "max")


def _as_point(q: Any) -> Any:
    """A Label (or anything with a Point ``geometry``) stands for its point."""
    g = getattr(q, "geometry", None)
    return g if g is not None and getattr(g, "geom_type", None) == "Point" and not hasattr(q, "columns") else q


def _is_lonlat(q: Any) -> bool:
    q = _as_point(q)
    if hasattr(q, "geom_type"):
        return q.geom_type == "Point"
    if isinstance(q, (tuple, list)) and len(q) == 2:
        return all(isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) for v in q)
    return False


def query_vectors(area: Any, query: Any, *, what: str = "query") -> tuple[np.ndarray, list]:
    """Float32 ``(m, bands)`` embeddings of a query and the lon/lat points it named.

    ``query``: a point ``(lon, lat)`` or shapely Point, a list of points, or embedding
    vectors ``(bands,)`` / ``(m, bands)`` (``bands`` = the area's band count).
    """
    from .samples import _n_bands, read_pixels

    nb = _n_bands(area)
    if isinstance(query, np.ndarray) and query.dtype != object and query.shape[-1:] == (nb,):
        v = np.atleast_2d(np.asarray(query, np.float32))
        if v.ndim != 2 or np.isnan(v).any():
            raise LabelError(f"{what}: vectors must be ({nb},) or (m, {nb}) without NaN")
        return v, []
    pts = [query] if _is_lonlat(query) else list(query) if isinstance(query, (list, tuple)) else None
    if not pts or not all(_is_lonlat(p) for p in pts):
        raise LabelError(f"{what}: expected (lon, lat), a list of (lon, lat), shapely Points or (m, {nb}) vectors; "
                         f"got {query!r:.100}")
    pts = [_as_point(p) for p in pts]
    lonlat = [(float(p.x), float(p.y)) if hasattr(p, "geom_type") else (float(p[0]), float(p[1])) for p in pts]
    grid = grid_of(area)
    lon, lat = np.array(lonlat).T
    rows, cols = grid.lonlat_to_rowcol(lon, lat)
    out = ~grid.inside(rows, cols)
    if out.any():
        bad = [lonlat[i] for i in np.flatnonzero(out)]
        raise LabelError(f"{what}: point(s) {bad[:5]} lie outside the area")
    v = read_pixels(area, rows, cols)
    nan = np.isnan(v).any(axis=1)
    if nan.any():
        bad = [lonlat[i] for i in np.flatnonzero(nan)]
        raise LabelError(f"{what}: point(s) {bad[:5]} are on no-data pixels (water or missing embedding)")
    return v, lonlat


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=1, keepdims=True)
    if (n == 0).any():
        raise LabelError("a query vector is all zeros and has no direction")
    return (v / n).astype(np.float32)


def _cosine(blk, pos: np.ndarray, neg: np.ndarray | None, reduce: str, out: np.ndarray) -> None:
    n = len(blk.scales)
    if reduce == "mean":
        q = pos.mean(axis=0)
        q = q / np.linalg.norm(q)
        if neg is not None:
            qn = neg.mean(axis=0)
            q = q - qn / np.linalg.norm(qn)
        _kernels.run(_kernels.dot_scores, blk.codes, blk.inv_norm, q.astype(np.float32), np.float32(0.0),
                     blk.valid, out)
        return
    _kernels.run(_kernels.max_scores, blk.codes, blk.inv_norm, pos, blk.valid, out)
    if neg is not None:
        tmp = np.empty(n, np.float32)
        _kernels.run(_kernels.max_scores, blk.codes, blk.inv_norm, neg, blk.valid, tmp)
        out -= tmp


def _distance(blk, vecs: np.ndarray, reduce: str) -> np.ndarray:
    n = len(blk.scales)
    with np.errstate(divide="ignore", invalid="ignore"):
        x2 = np.where(blk.valid, (blk.scales / blk.inv_norm) ** 2, np.nan).astype(np.float32)
    mult = (-2.0 * blk.scales).astype(np.float32)
    qs = [vecs.mean(axis=0)] if reduce == "mean" else list(vecs)
    best = None
    tmp = np.empty(n, np.float32)
    for q in qs:
        q = q.astype(np.float32)
        _kernels.run(_kernels.dot_scores, blk.codes, mult, q, np.float32(q @ q), blk.valid, tmp)
        d = np.sqrt(np.maximum(tmp + x2, 0))
        best = d if best is None else np.fmin(best, d)
    return best


def similarity(da: Any, query: Any, *, negatives: Any = None, reduce: str = "mean", metric: str = "cosine",
               threshold: float | None = None, block: int = 512) -> xr.DataArray | xr.Dataset:
    """Similarity of every pixel to a query.

    Parameters
    ----------
    da : embeddings DataArray or :class:`PreparedArea` (fast: one pass over codes in memory).
    query : a pixel ``(lon, lat)`` (or a shapely Point, or a point :class:`Label` of a
        LabelStore), a list of them, or embedding vectors
        ``(128,)`` / ``(m, 128)``.
    negatives : pixels (same forms) to move away from: the result is the similarity to the
        positives minus the similarity to the negatives.
    reduce : for several query pixels, ``"mean"`` (cosine to their mean direction; for
        euclidean, distance to their mean) or ``"max"`` (best match over them).
    metric : ``"cosine"`` (similarity, higher = more alike, in -1..1) or ``"euclidean"``
        (distance between dequantised embeddings, lower = more alike).
    threshold : also return a mask: 1 where cosine similarity >= threshold (euclidean:
        distance <= threshold), 0 elsewhere, 255 where there is no data.

    Returns
    -------
    DataArray ``similarity`` (or ``distance``) float32 on the area's grid, NaN where there
    is no data; with ``threshold`` a Dataset holding it and ``mask`` (uint8).
    """
    if metric not in METRICS:
        raise ArgumentError(f"metric must be one of {METRICS}, got {metric!r}")
    if reduce not in REDUCE:
        raise ArgumentError(f"reduce must be one of {REDUCE}, got {reduce!r}")
    grid = grid_of(da)
    pos, pos_ll = query_vectors(da, query)
    neg, neg_ll = (None, []) if negatives is None else query_vectors(da, negatives, what="negatives")
    if metric == "cosine":
        pos = _unit(pos)
        neg = None if neg is None else _unit(neg)

    def score(blk):
        if metric == "cosine":
            out = np.empty(len(blk.scales), np.float32)
            _cosine(blk, pos, neg, reduce, out)
        else:
            out = _distance(blk, pos, reduce)
            if neg is not None:
                out = out - _distance(blk, neg, reduce)
        return (out,)

    (result,) = stitch(grid, blocks(da, block=block), score, (np.nan,))
    name = "similarity" if metric == "cosine" else "distance"
    attrs = {**provenance(grid), "product": name, "metric": metric, "reduce": reduce,
             "query": json.dumps(pos_ll) if pos_ll else f"{len(pos)} vectors",
             "negatives": json.dumps(neg_ll) if neg_ll else (f"{len(neg)} vectors" if neg is not None else ""),
             "long_name": f"{metric} {name}"}
    sim = new_map(grid, result, name=name, attrs=attrs, nodata=np.nan)
    if threshold is None:
        return sim
    thr = float(threshold)
    with np.errstate(invalid="ignore"):
        hit = result >= thr if metric == "cosine" else result <= thr
    mask = np.where(np.isnan(result), np.uint8(255), hit.astype(np.uint8))
    mask_da = new_map(grid, mask, name="mask", nodata=255,
                      attrs={**attrs, "product": "similarity mask", "threshold": thr,
                             "long_name": f"{name} {'>=' if metric == 'cosine' else '<='} {thr}"})
    return xr.Dataset({name: sim, "mask": mask_da}, attrs={**attrs, "threshold": thr})
