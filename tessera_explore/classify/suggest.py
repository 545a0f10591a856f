"""``suggest``: the pixels whose labels would help the classifier most (active learning).

Scores, for every pixel with data:

* **uncertainty**: from the classifier's class probabilities, ``1 - (p1 - p2)`` (one
  minus the margin between the two most probable classes; ``measure="margin"``) or the
  normalised entropy ``-sum p log p / log K`` (``measure="entropy"``).  1 = a coin toss.
* **novelty**: cosine distance (``1 - cos``) in embedding space to the nearest pixel
  already labelled or already suggested.  High = a part of embedding space no label
  covers yet.

Strategies, on a pool of the most uncertain pixels (``pool``, default ``max(2000, 50 n)``):

* ``"uncertainty"``: the most uncertain pixels;
* ``"diverse"``: farthest-point sampling in embedding space among the pool (each pick
  maximises novelty, then counts as labelled), so the suggestions spread over
  embedding space instead of all sampling one confused boundary;
* ``"mixed"`` (default): each pick maximises ``uncertainty * novelty``.

Every strategy keeps suggestions at least ``spacing`` metres apart and away from
labelled pixels (neighbouring pixels are near copies: labelling two teaches little
more than labelling one).  A seeded jitter far below the score resolution breaks ties.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..exceptions import ArgumentError
from .area import grid_of, prepare

__all__ = ["suggest", "uncertainty"]

STRATEGIES = ("uncertainty", "diverse", "mixed")


def uncertainty(prob: np.ndarray, measure: str = "margin") -> np.ndarray:
    """Uncertainty in [0, 1] from class probabilities ``(K, ...)`` (NaN stays NaN)."""
    k = prob.shape[0]
    if k < 2:
        return np.zeros(prob.shape[1:], np.float32)
    if measure == "margin":
        # two running maxima over the K class planes (contiguous, unlike a partition on axis 0)
        p1 = prob[0].copy()
        p2 = np.full_like(p1, -np.inf)
        for j in range(1, k):
            pj = prob[j]
            np.maximum(p2, np.minimum(p1, pj), out=p2)
            np.maximum(p1, pj, out=p1)
        return (1.0 - (p1 - p2)).astype(np.float32, copy=False)
    if measure == "entropy":
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = -np.where(prob > 0, prob * np.log(prob), 0.0).sum(axis=0) / np.log(k)
        ent[np.isnan(prob[0])] = np.nan
        return ent.astype(np.float32)
    raise ArgumentError(f"measure must be 'margin' or 'entropy', got {measure!r}")


def _label_pixels(area, grid, labels) -> np.ndarray:
    """Flat pixel indices of labels (points, polygons, Samples, LabelStore...)."""
    from .samples import Samples, sample_labels

    if labels is None:
        return np.zeros(0, np.int64)
    if not isinstance(labels, Samples):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            labels = sample_labels(area, labels, warn=False)
    flat = labels.rows.astype(np.int64) * grid.shape[1] + labels.cols.astype(np.int64)
    return flat[labels.in_area]  # samples from stored vectors (rows -1) mark no pixel of this area


def suggest(area: Any, clf: Any, n: int = 10, *, strategy: str = "mixed", exclude: Any = None, seed: int = 0,
            measure: str = "margin", spacing: float = 100.0, pool: int | None = None):
    """The ``n`` pixels whose labels would help the classifier most.

    Parameters
    ----------
    area : embeddings DataArray or :class:`PreparedArea` (prepare it: this is called after
        every click).
    clf : a fitted classifier from :func:`fit_classifier`; its training pixels are
        excluded and count as covered in embedding space.
    n : number of suggestions.
    strategy : ``"uncertainty"``, ``"diverse"`` or ``"mixed"`` (module docstring).
    exclude : more labels to keep away from (a LabelStore, label list, Samples, ...),
        e.g. the scientist's labels not yet used for training.
    seed : seeds the tie-breaking jitter.
    measure : ``"margin"`` or ``"entropy"``.
    spacing : minimum distance in metres between suggestions and from labelled pixels.
    pool : how many of the most uncertain pixels the diverse and mixed strategies choose
        from.

    Returns a GeoDataFrame of points (EPSG:4326, pixel centres) in order of choice with
    ``rank``, ``lon``, ``lat``, ``x``, ``y``, ``row``, ``col``, ``predicted`` (class),
    ``confidence``, ``uncertainty``, ``novelty`` and ``score``.
    """
    import geopandas as gpd

    from .predict import predict_map

    if strategy not in STRATEGIES:
        raise ArgumentError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    n = int(n)
    if n < 1:
        raise ArgumentError(f"n must be at least 1, got {n}")
    area = prepare(area)
    grid = grid_of(area)
    h, w = grid.shape
    ds = predict_map(area, clf, probabilities=True)
    prob = ds["probability"].values.reshape(len(ds.class_name), -1)
    unc = uncertainty(prob, measure)
    ok = area.valid.copy()
    taken = np.concatenate([_label_pixels(area, grid, getattr(clf, "samples_", None)),
                            _label_pixels(area, grid, exclude)])
    ok[taken] = False
    cand = np.flatnonzero(ok)
    if cand.size == 0:
        raise ArgumentError("no unlabelled pixel with data is left to suggest")
    rng = np.random.default_rng(seed)
    score = unc[cand] + rng.random(cand.size, dtype=np.float32) * np.float32(1e-6)
    m = min(cand.size, int(pool) if pool else max(2000, 50 * n))
    if strategy == "uncertainty":
        m = min(cand.size, max(20 * n, 200))
    top = np.argpartition(-score, m - 1)[:m] if m < cand.size else np.arange(cand.size)
    top = top[np.argsort(-score[top], kind="stable")]
    idx = cand[top]
    u = score[top]
    res = float(grid.transform.a)
    rr, cc = idx // w, idx % w
    tr_r, tr_c = taken // w, taken % w
    min_px2 = (spacing / res) ** 2

    def far_enough(r, c, rows, cols):
        if len(rows) == 0:
            return np.ones(len(r) if np.ndim(r) else 1, bool)
        d2 = (np.subtract.outer(np.atleast_1d(r), rows) ** 2 + np.subtract.outer(np.atleast_1d(c), cols) ** 2)
        return (d2 >= min_px2).all(axis=1)

    # pool pixels too close to a labelled pixel are out
    alive = far_enough(rr, cc, tr_r, tr_c) if spacing > 0 else np.ones(len(idx), bool)
    if strategy == "uncertainty":
        novelty = np.full(len(idx), np.nan, np.float32)
    else:
        V = area.codes[idx].astype(np.float32) * area.inv_norm[idx, None]
        T = _training_units(clf)
        sims = V @ T.T if len(T) else np.full((len(idx), 1), -1.0, np.float32)
        novelty = (1.0 - sims.max(axis=1)).astype(np.float32)
    chosen, nov_at, sc_at = [], [], []
    for _ in range(n):
        if not alive.any():
            break
        if strategy == "uncertainty":
            s = np.where(alive, u, -np.inf)
        elif strategy == "diverse":
            s = np.where(alive, novelty + 1e-6 * u, -np.inf)
        else:
            s = np.where(alive, u * np.maximum(novelty, 0), -np.inf)
        j = int(np.argmax(s))
        chosen.append(j)
        nov_at.append(novelty[j])
        sc_at.append(s[j])
        alive[j] = False
        if spacing > 0:
            alive &= (rr - rr[j]) ** 2 + (cc - cc[j]) ** 2 >= min_px2
        if strategy != "uncertainty":
            novelty = np.minimum(novelty, 1.0 - V @ V[j])
    sel = np.asarray(chosen, np.int64)
    pix = idx[sel]
    r, c = pix // w, pix % w
    x, y = grid.x[c], grid.y[r]
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(grid.crs, 4326, always_xy=True).transform(x, y)
    classes = list(ds.class_name.values)
    cls = ds["class"].values.ravel()[pix]
    gdf = gpd.GeoDataFrame({
        "rank": np.arange(len(sel)), "lon": lon, "lat": lat, "x": x, "y": y, "row": r, "col": c,
        "predicted": [classes[k] for k in cls], "confidence": ds["confidence"].values.ravel()[pix],
        "uncertainty": unc[pix], "novelty": np.asarray(nov_at, np.float32), "score": np.asarray(sc_at, np.float32),
    }, geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326")
    gdf.attrs["strategy"] = strategy
    gdf.attrs["measure"] = measure
    return gdf


def _training_units(clf: Any) -> np.ndarray:
    """Unit vectors of the classifier's training pixels (float32 ``(m, d)``)."""
    samples = getattr(clf, "samples_", None)
    if samples is None or len(samples) == 0:
        return np.zeros((0, 128), np.float32)
    X = np.asarray(samples.X, np.float32)
    nrm = np.linalg.norm(X, axis=1, keepdims=True)
    nrm[nrm == 0] = 1.0
    return X / nrm
