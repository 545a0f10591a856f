"""``cluster``: an unsupervised map (mini-batch k-means) to start labelling from."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from ..exceptions import ClassifierError
from . import _kernels
from .area import PreparedArea, blocks, grid_of, new_map, provenance, stitch

__all__ = ["cluster"]


def _sample_unit(obj: Any, n: int, seed: int, block: int) -> np.ndarray:
    """Unit-normalised float32 embeddings of up to ``n`` random pixels with data."""
    rng = np.random.default_rng(seed)
    if isinstance(obj, PreparedArea):
        idx = np.flatnonzero(obj.valid)
        if len(idx) > n:
            idx = np.sort(rng.choice(idx, n, replace=False))
        return obj.codes[idx].astype(np.float32) * obj.inv_norm[idx, None]
    h, w = grid_of(obj).shape
    frac = min(1.0, n / max(1, h * w))
    parts = []
    for blk in blocks(obj, block=block):
        idx = np.flatnonzero(blk.valid)
        take = rng.random(len(idx)) < frac
        parts.append(blk.codes[idx[take]].astype(np.float32) * blk.inv_norm[idx[take], None])
    from .samples import _n_bands

    return np.concatenate(parts) if parts else np.empty((0, _n_bands(obj)), np.float32)


def cluster(da: Any, k: int, *, sample: int = 50_000, seed: int = 0, block: int = 512) -> xr.DataArray:
    """Group the pixels of an area into ``k`` clusters (cosine geometry: k-means on
    unit-normalised embeddings).

    Fits scikit-learn's ``MiniBatchKMeans`` on ``sample`` random pixels, then assigns every
    pixel to its nearest centre in one pass over the int8 codes.

    Returns a DataArray ``cluster`` (uint8 0..k-1, 255 = no data) on the area's grid;
    ``attrs["centers"]`` are not stored (see ``attrs["inertia"]`` for the fit).
    """
    from sklearn.cluster import MiniBatchKMeans

    k = int(k)
    if not 2 <= k <= 254:
        raise ClassifierError(f"k must be between 2 and 254, got {k}")
    grid = grid_of(da)
    X = _sample_unit(da, int(sample), seed, block)
    if len(X) < k:
        raise ClassifierError(f"only {len(X)} pixels with data; cannot make {k} clusters")
    km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096).fit(X)
    C = km.cluster_centers_.astype(np.float32)
    # nearest centre of a unit vector x: argmax x.c - |c|^2 / 2
    bias = (-0.5 * (C * C).sum(axis=1)).astype(np.float32)

    def assign(blk):
        n = len(blk.scales)
        lab = np.empty(n, np.uint8)
        score = np.empty(n, np.float32)
        _kernels.run(_kernels.linear_classify, blk.codes, blk.inv_norm, C, bias, blk.valid, False, lab, score,
                     np.empty((k, 0), np.float32), False)
        return (lab,)

    (out,) = stitch(grid, blocks(da, block=block), assign, (255,))
    attrs = {**provenance(grid), "product": "cluster", "model": "MiniBatchKMeans",
             "settings": f'{{"k": {k}, "sample": {int(sample)}, "seed": {int(seed)}, "space": "unit-normalised"}}',
             "k": k, "inertia": float(km.inertia_), "long_name": "cluster"}
    return new_map(grid, out, name="cluster", nodata=255, attrs=attrs)
