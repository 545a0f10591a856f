"""``predict_map``: class and confidence (and per-class probability) over an area."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from .. import _schema
from ..exceptions import ClassifierError, VersionMismatchError
from . import _kernels
from .area import blocks, grid_of, new_map, provenance, stitch
from .models import CosineKNN, LabelClassifier, knn_training, linear_form

__all__ = ["predict_map", "map_dataset", "NODATA_CLASS"]

#: Class value of pixels without data in the class map (uint8).
NODATA_CLASS = 255
_BATCH = 65536
_NO_NEAR = np.empty(0, np.float32)


def _predict_block(blk, est, fast, n_cls, want_prob, near=None):
    n = len(blk.scales)
    cls = np.empty(n, np.uint8)
    conf = np.empty(n, np.float32)
    prob = np.empty((n_cls, n if want_prob else 0), np.float32)
    if fast[0] == "knn":
        T, t_inv, t_cls = fast[1]
        _kernels.run(_kernels.knn_classify, blk.codes, blk.valid, T, t_inv, t_cls, n_cls, est.n_neighbors_,
                     est.weights == "similarity",
                     cls, conf, prob, want_prob, near if near is not None else _NO_NEAR, near is not None)
    elif fast[0] == "linear":
        W, b = fast[1]
        _kernels.run(_kernels.linear_classify, blk.codes, blk.scales, W, b, blk.valid, True, cls, conf, prob,
                     want_prob)
    else:
        cls.fill(NODATA_CLASS)
        conf.fill(np.nan)
        if want_prob:
            prob.fill(np.nan)
        idx = np.flatnonzero(blk.valid)
        for s in range(0, len(idx), _BATCH):
            ii = idx[s:s + _BATCH]
            p = np.asarray(est.predict_proba(blk.features(ii)), np.float32)
            k = np.argmax(p, axis=1)
            cls[ii] = k
            conf[ii] = p[np.arange(len(ii)), k]
            if want_prob:
                prob[:, ii] = p.T
    return cls, conf, prob


def check_classifier(grid: Any, clf: Any) -> None:
    """Refuse a classifier that cannot map the area: trained on another dataset (version
    or variant), or with more classes than the uint8 class map holds."""
    prov = dict(getattr(clf, "provenance_", {}) or {})
    have = str(grid.attrs.get("dataset_version", ""))
    trained = {k: v for k, v in prov.items() if k in ("dataset_version", "dataset_variant", "model_generation")
               and v not in (None, "?", "")}
    if trained.get("dataset_version") and have and not _schema.same_dataset(trained, grid.attrs):
        raise VersionMismatchError(
            f"the classifier was trained on dataset {_schema.describe_dataset(trained)} but the area is "
            f"{_schema.describe_dataset(grid.attrs)}; embeddings of different datasets (versions, or variants of "
            "one version) live in unrelated feature spaces"
        )
    if len(clf.classes_) > 254:
        raise ClassifierError("at most 254 classes fit the uint8 class map")


def fast_path(est: Any, n_bands: int) -> tuple:
    """How :func:`predict_map` applies a fitted estimator: ``("knn", training)``,
    ``("linear", (W, b))`` or ``("generic",)``."""
    if isinstance(est, CosineKNN):
        return ("knn", knn_training(est))
    lf = linear_form(est)
    return ("linear", lf) if lf is not None and lf[0].shape[1] == n_bands else ("generic",)


def predict_map(da: Any, clf: Any, *, probabilities: bool = False, block: int = 512,
                _nearest: np.ndarray | None = None) -> xr.Dataset:
    """Apply a fitted classifier to every pixel of an area.

    Parameters
    ----------
    da : embeddings DataArray (walked in ``block`` x ``block`` pixel blocks of int8 codes,
        so memory stays bounded) or a :class:`PreparedArea` (one pass over codes in memory).
    clf : from :func:`fit_classifier`, or any fitted scikit-learn classifier with
        ``predict_proba`` trained on dequantised embeddings.
    probabilities : also return ``probability`` (class_name, y, x).

    Returns
    -------
    Dataset on the area's grid (CRS written, so ``.rio.to_raster`` works) with
    ``class`` (uint8 index into ``attrs["classes"]``, 255 where there is no data) and
    ``confidence`` (float32 probability of the winning class, NaN where there is no data),
    plus provenance attrs (dataset version, year, model, settings, label file).

    ``_nearest`` (internal, for :func:`trust`): a float32 ``(y, x)`` array that the kNN
    path fills with each pixel's cosine similarity to its nearest training pixel, from the
    same scan (only on the kNN fast path: ``attrs["fast_path"] == "knn"``).
    """
    if not hasattr(clf, "classes_") or not hasattr(clf, "predict_proba"):
        raise ClassifierError("clf must be a fitted classifier (from fit_classifier) with predict_proba")
    grid = grid_of(da)
    check_classifier(grid, clf)
    est = clf.estimator_ if isinstance(clf, LabelClassifier) else clf
    n_cls = len(clf.classes_)
    from .samples import _n_bands

    fast = fast_path(est, _n_bands(da))
    want_near = _nearest is not None and fast[0] == "knn"

    def run(blk):
        near = np.empty(len(blk.scales), np.float32) if want_near else None
        c, f, p = _predict_block(blk, est, fast, n_cls, probabilities, near)
        if want_near:
            _nearest[blk.rows, blk.cols] = near.reshape(blk.shape)
        return (c, f, p) if probabilities else (c, f)

    maps = stitch(grid, blocks(da, block=block), run, (NODATA_CLASS, np.nan, np.nan))
    return map_dataset(grid, clf, maps[0], maps[1], maps[2] if probabilities else None, fast_path=fast[0])


def map_dataset(grid: Any, clf: Any, cls_map: np.ndarray, conf_map: np.ndarray, prob_map: np.ndarray | None = None,
                *, fast_path: str) -> xr.Dataset:
    """The Dataset :func:`predict_map` returns, around maps already computed: ``class``,
    ``confidence`` (and ``probability``) on the area's grid with the classifier's
    provenance, class names and colours."""
    prov = dict(getattr(clf, "provenance_", {}) or {})
    est = clf.estimator_ if isinstance(clf, LabelClassifier) else clf
    classes = [str(c) for c in clf.classes_]
    n_cls = len(classes)
    colors = getattr(clf, "colors_", {}) or {}
    base = provenance(grid)
    base.update({k: v for k, v in prov.items() if k not in base})
    base.setdefault("model", type(est).__name__)
    base["classes"] = classes
    base["colors"] = [colors.get(c) or "" for c in classes]
    base["fast_path"] = fast_path
    # each map carries the provenance too, so ``export_map(pred["class"])`` tags it as the Dataset would
    prov_attrs = {k: v for k, v in base.items() if k not in ("classes", "colors", "fast_path")}
    prov_attrs["product"] = "classification"
    cls_da = new_map(grid, cls_map, name="class", nodata=NODATA_CLASS,
                     attrs={**prov_attrs, "long_name": "class", "classes": classes, "colors": base["colors"],
                            "flag_values": list(range(n_cls)), "flag_meanings": " ".join(
                                c.replace(" ", "_") for c in classes)})
    conf_da = new_map(grid, conf_map, name="confidence", nodata=np.nan,
                      attrs={**prov_attrs, "long_name": "probability of the winning class", "units": "1"})
    data = {"class": cls_da, "confidence": conf_da}
    if prob_map is not None:
        data["probability"] = new_map(grid, prob_map, name="probability", nodata=np.nan,
                                      dims=("class_name", "y", "x"), extra_coords={"class_name": classes},
                                      attrs={**prov_attrs, "long_name": "class probability", "units": "1"})
    return xr.Dataset(data, attrs={**base, "product": "classification"})
