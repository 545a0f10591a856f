"""``trust``: where not to trust a class map, pixel by pixel.

Three components, each a map on the area's grid:

* ``confidence`` - how sure the classifier is: the probability of the winning class,
  rescaled so that a uniform guess among ``K`` classes is 0 and certainty is 1:
  ``(p1 - 1/K) / (1 - 1/K)``.  Low where classes compete (boundaries, mixed pixels).
* ``novelty`` - how far the pixel lies from everything labelled: cosine distance
  ``1 - max_j cos(x, t_j)`` to the nearest training pixel ``t_j`` in embedding space.
  A classifier always names *some* class, however unlike its training data a pixel is;
  high novelty means the map is extrapolating (out of distribution) and even a
  confident class may be wrong.  ``familiarity`` turns it into a score: 1 up to the
  *reference distance* ``d_ref`` (the 90th percentile, over training pixels, of the
  distance to the nearest *other* training pixel of the same class: how far apart labels
  of one class typically are), falling linearly to 0 at ``2 d_ref``.
* ``has_data`` - 1 where the pixel has an embedding, 0 where it has none (water, not
  computed): such pixels are not classified at all.

``trust = confidence * familiarity`` where there is data, 0 where there is none: a pixel
is trusted only when the classifier is sure *and* it resembles labelled pixels.
``reason`` says why a pixel is not trusted (``trust < threshold``): 0 trusted,
1 uncertain, 2 unfamiliar (out of distribution), 3 both, 4 no data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from . import _kernels
from .area import grid_of, new_map, prepare, provenance

__all__ = ["trust", "REASONS"]

_CHUNK = 256


def _nearest_kernel():
    """Compiled on first use: max cosine of every pixel's int8 codes to int16 training codes."""
    global _NEAREST
    if _NEAREST is None:
        from numba import njit, prange

        @njit(parallel=True, cache=True)
        def nearest(codes, inv_norm, valid, T, t_inv, out):  # pragma: no cover - compiled
            n, nb = codes.shape
            m = T.shape[0]
            for blk in prange((n + _CHUNK - 1) // _CHUNK):
                row = np.empty(nb, np.int16)
                sc = np.empty(m, np.int32)
                for i in range(blk * _CHUNK, min(n, blk * _CHUNK + _CHUNK)):
                    if not valid[i]:
                        out[i] = np.float32(np.nan)
                        continue
                    for d in range(nb):
                        row[d] = codes[i, d]
                    # the dot products alone first: this loop vectorises (int16 x int16 -> int32)
                    for j in range(m):
                        acc = np.int32(0)
                        for d in range(nb):
                            acc += np.int32(row[d] * T[j, d])
                        sc[j] = acc
                    best = np.float32(-2.0)
                    for j in range(m):
                        s = np.float32(sc[j]) * t_inv[j]
                        if s > best:
                            best = s
                    out[i] = best * inv_norm[i]

        _NEAREST = nearest
    return _NEAREST


_NEAREST = None

REASONS = ("trusted", "uncertain", "unfamiliar", "uncertain and unfamiliar", "no data")


def _units(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, np.float32)
    n = np.linalg.norm(X, axis=1, keepdims=True)
    n[n == 0] = 1.0
    return np.ascontiguousarray(X / n, np.float32)


def reference_distance(X: np.ndarray, y: np.ndarray, q: float = 90.0) -> float:
    """90th percentile of each training pixel's cosine distance to its nearest other
    training pixel of the same class (all classes when a class has one pixel)."""
    U = _units(X)
    S = U @ U.T
    np.fill_diagonal(S, -np.inf)
    y = np.asarray(y)
    same = y[:, None] == y[None, :]
    has_same = same.sum(axis=1) > 1
    best = np.where(has_same, np.where(same, S, -np.inf).max(axis=1), S.max(axis=1))
    d = 1.0 - best[np.isfinite(best)]
    return float(max(np.percentile(d, q), 1e-3)) if d.size else 0.1


def trust(area: Any, clf: Any, *, threshold: float = 0.5, max_training: int = 512, seed: int = 0) -> xr.Dataset:
    """A per-pixel map of how far to trust the class map of ``clf`` over ``area``.

    Parameters
    ----------
    area : embeddings DataArray or :class:`PreparedArea`.
    clf : a fitted classifier from :func:`fit_classifier` (its training pixels define
        what is familiar).
    threshold : trust below this counts as not trusted in ``reason``.
    max_training : novelty is measured against at most this many training pixels (a
        seeded random choice within large polygon labels), which bounds the time.  With
        a kNN classifier and no more training pixels than this, the nearest training
        pixel comes from the kNN scan itself (one pass over the codes for both).

    Returns a Dataset with ``trust``, ``confidence``, ``novelty``, ``familiarity``
    (float32, NaN where there is no data, except ``trust``: 0 there), ``has_data`` and
    ``reason`` (uint8; see the module docstring and ``attrs["reasons"]``).  Every variable
    is a map on the area's grid, so :func:`export_map` writes it as a GeoTIFF.
    """
    from .models import CosineKNN, LabelClassifier
    from .predict import predict_map

    area = prepare(area)
    grid = grid_of(area)
    h, w = grid.shape
    valid = area.valid
    samples = getattr(clf, "samples_", None)
    have = samples is not None and len(samples) > 0
    est = clf.estimator_ if isinstance(clf, LabelClassifier) else clf
    # a kNN classifier scans every pixel against its training codes anyway: the nearest
    # training pixel comes from that scan when it holds exactly the training pixels
    # novelty is measured against (all of them, up to max_training)
    merged = (have and isinstance(est, CosineKNN) and len(samples) <= max_training
              and len(getattr(est, "codes_", ())) == len(samples))
    sim = np.empty((h, w), np.float32) if merged else None
    pred = predict_map(area, clf, _nearest=sim)
    merged = merged and pred.attrs.get("fast_path") == "knn"
    k = len(pred.attrs["classes"])
    conf = pred["confidence"].values.ravel()
    conf_n = np.clip((conf - 1.0 / k) / (1.0 - 1.0 / k), 0.0, 1.0).astype(np.float32)
    if have:
        X, y = np.asarray(samples.X, np.float32), np.asarray(samples.y)
        if len(X) > max_training:
            pick = np.sort(np.random.default_rng(seed).choice(len(X), max_training, replace=False))
            X, y = X[pick], y[pick]
        d_ref = reference_distance(X, y)
        if merged:
            sim = sim.ravel()
        else:
            from ..io.quant import quantize

            q, _ = quantize(X)
            T = np.ascontiguousarray(q, np.int16)
            t_inv = (1.0 / np.maximum(np.sqrt((T.astype(np.int64) ** 2).sum(axis=1)), 1)).astype(np.float32)
            sim = np.empty(h * w, np.float32)
            _kernels.run(_nearest_kernel(), area.codes, area.inv_norm, valid, T, t_inv, sim)
        novelty = (1.0 - sim).astype(np.float32)
        familiarity = np.clip(2.0 - novelty / np.float32(d_ref), 0.0, 1.0).astype(np.float32)
    else:  # a classifier without its samples: novelty unknown, nothing is unfamiliar
        d_ref = float("nan")
        novelty = np.full(h * w, np.nan, np.float32)
        familiarity = np.where(valid, 1.0, np.nan).astype(np.float32)
    tr = np.where(valid, conf_n * familiarity, 0.0).astype(np.float32)
    conf_n[~valid] = np.nan
    low_conf = conf_n < threshold
    low_fam = familiarity < threshold
    reason = np.zeros(h * w, np.uint8)
    untrusted = tr < threshold
    reason[untrusted & low_conf] = 1
    reason[untrusted & low_fam & ~low_conf] = 2
    reason[untrusted & low_fam & low_conf] = 3
    # neither component alone below the threshold, but their product is
    reason[untrusted & ~low_fam & ~low_conf] = 1
    reason[~valid] = 4
    base = provenance(grid)
    base.update({"product": "trust", "model": pred.attrs.get("model", ""), "reference_distance": d_ref,
                 "threshold": float(threshold), "reasons": list(REASONS)})

    def m(name, data, nodata, long_name):  # each map carries the provenance, for an export of it alone
        return new_map(grid, data.reshape(h, w), name=name, nodata=nodata, attrs={**base, "long_name": long_name})

    return xr.Dataset({
        "trust": m("trust", tr, None, "confidence x familiarity (0 = do not trust, 1 = trust)"),
        "confidence": m("confidence", conf_n, np.nan, "classifier confidence, 0 = uniform guess, 1 = certain"),
        "novelty": m("novelty", novelty, np.nan, "cosine distance to the nearest training pixel"),
        "familiarity": m("familiarity", familiarity, np.nan, "1 within the reference distance of a label, 0 beyond twice it"),
        "has_data": m("has_data", valid.astype(np.uint8), None, "1 = the pixel has an embedding"),
        "reason": m("reason", reason, None, "why not trusted: " + ", ".join(f"{i} {r}" for i, r in enumerate(REASONS))),
    }, attrs=base)
