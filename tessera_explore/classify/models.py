"""Classifier recipes and ``fit_classifier``.

``model="knn"`` is :class:`CosineKNN` (cosine k-nearest neighbours, the usual choice for
a handful of clicks), ``"logreg"`` a standardised multinomial logistic regression,
``"rf"`` the random forest of the TESSERA notebook (100 trees); any scikit-learn
classifier (``fit`` / ``predict_proba``) is accepted too and cloned before fitting.

Every fitted classifier follows scikit-learn's contract.  :func:`predict_map` has fast
paths for cosine kNN (int8 codes against int8 training codes) and for linear models
(a standard scaler folds into the weights, and ``x = scale * codes`` folds the
per-pixel scale into the product), and applies anything else chunk by chunk.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import check_is_fitted

from ..exceptions import ClassifierError
from ..io.quant import quantize
from .samples import Samples, sample_labels

__all__ = ["CosineKNN", "LabelClassifier", "make_model", "fit_classifier", "linear_form", "training_codes",
           "knn_training", "MODELS"]

MODELS = ("knn", "logreg", "rf")


class CosineKNN(ClassifierMixin, BaseEstimator):
    """k-nearest-neighbour vote by cosine similarity, for a handful of labels.

    ``n_neighbors`` is an upper bound: the k used (``n_neighbors_``) is at most the number
    of training samples of the smallest class.  With k=5 and two or three labels per class
    most of a pixel's five neighbours are bound to be of *another* class, so a fixed k
    scores every held-out label wrong and maps an area badly until each class has five
    labels; ``adaptive=False`` keeps the fixed k.

    Ties in similarity at the k-th neighbour go to the class that sorts first, and equal
    votes to the first class, whatever the order of the training samples.

    ``weights="similarity"`` (the default) weights each vote by its cosine similarity
    (clipped at 0), which breaks the ties an even k makes and gives a smoother confidence;
    ``weights="uniform"`` makes the same decisions as
    ``KNeighborsClassifier(metric="cosine")``.  The defaults were chosen with a simulated
    user on the synthetic scene (``docs/design/explorer.md``).

    The training embeddings are kept as int8 codes (exact for pixels read from quantised
    tiles), so prediction over an area runs on codes against codes.
    """

    def __init__(self, n_neighbors: int = 5, weights: str = "similarity", adaptive: bool = True):
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.adaptive = adaptive

    def fit(self, X, y):
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y)
        if X.ndim != 2 or len(X) != len(y):
            raise ClassifierError(f"X must be (n, d) and y (n,), got {X.shape} and {y.shape}")
        if np.isnan(X).any():
            raise ClassifierError("X holds NaN (no-data pixels); sample_labels leaves them out")
        if self.weights not in ("uniform", "similarity"):
            raise ClassifierError(f"weights must be 'uniform' or 'similarity', got {self.weights!r}")
        if int(self.n_neighbors) < 1:
            raise ClassifierError(f"n_neighbors must be at least 1, got {self.n_neighbors}")
        self.classes_, self.y_ = np.unique(y, return_inverse=True)
        self.codes_, self.inv_norm_ = training_codes(X)
        k = min(int(self.n_neighbors), len(y))
        if self.adaptive:
            k = min(k, int(np.bincount(self.y_).min()))
        self.n_neighbors_ = max(k, 1)
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "codes_")
        X = np.asarray(X, dtype=np.float32)
        nx = np.linalg.norm(X, axis=1)
        nx[nx == 0] = 1.0
        codes, inv_norm, y_ = knn_training(self)
        T = codes.astype(np.float32) * inv_norm[:, None]
        out = np.zeros((len(X), len(self.classes_)), np.float64)
        k = self.n_neighbors_
        for s in range(0, len(X), 65536):
            S = (X[s:s + 65536] / nx[s:s + 65536, None]) @ T.T
            top = np.argsort(-S, axis=1, kind="stable")[:, :k]
            w = np.ones(top.shape, np.float32)
            if self.weights == "similarity":
                w = np.maximum(np.take_along_axis(S, top, axis=1), 0) + np.float32(1e-6)
            rows = np.repeat(np.arange(len(top)), k)
            np.add.at(out[s:s + 65536], (rows, y_[top].ravel()), w.ravel().astype(np.float64))
        out /= out.sum(axis=1, keepdims=True)
        return out.astype(np.float32)

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def training_codes(X) -> tuple[np.ndarray, np.ndarray]:
    """Training embeddings ``X`` (float ``(n, bands)``) as :class:`CosineKNN` keeps them:
    int8 codes widened to int16 and float32 inverse code norms."""
    codes, _ = quantize(np.asarray(X, np.float32))
    codes = np.ascontiguousarray(codes, np.int16)
    norm = np.sqrt((codes.astype(np.int64) ** 2).sum(axis=1)).astype(np.float32)
    if (norm == 0).any():
        raise ClassifierError("a training vector is all zeros and has no direction")
    return codes, (1.0 / norm).astype(np.float32)


def knn_training(est: CosineKNN) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fitted :class:`CosineKNN`'s training codes, inverse norms and class indices,
    ordered by class (stably).

    Scanning them in this order, "ties in similarity keep the earlier sample" becomes
    "the class that sorts first wins a tie in similarity": the map no longer depends on
    the order the labels were given in, and an incremental update
    (:class:`~tessera_explore.classify.incremental.IncrementalKNNMap`) reproduces it.
    """
    order = np.argsort(est.y_, kind="stable")
    return (np.ascontiguousarray(est.codes_[order]), np.ascontiguousarray(est.inv_norm_[order]),
            np.ascontiguousarray(est.y_[order].astype(np.int64)))


def make_model(model: Any) -> BaseEstimator:
    """A fresh estimator for ``"knn"``, ``"logreg"``, ``"rf"`` or a clone of an estimator."""
    if isinstance(model, str):
        if model == "knn":
            return CosineKNN()
        if model == "logreg":
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        if model == "rf":
            from sklearn.ensemble import RandomForestClassifier

            return RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=-1)
        raise ClassifierError(f"unknown model {model!r}; use one of {MODELS} or a scikit-learn classifier")
    if not (hasattr(model, "fit") and hasattr(model, "predict")):
        raise ClassifierError(f"{type(model).__name__} is not a scikit-learn classifier (no fit/predict)")
    try:
        return clone(model)
    except TypeError as err:
        raise ClassifierError(f"cannot clone {type(model).__name__}: {err}") from err


def linear_form(est: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``(W (K, d), b (K,))`` such that ``predict_proba(x) = softmax(W x + b)``, or None.

    Folds leading StandardScalers into the weights.  Binary logistic regression becomes
    two classes with ``+-z/2`` (softmax of those is the sigmoid).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    steps = [s for _, s in est.steps] if isinstance(est, Pipeline) else [est]
    final = steps[-1]
    if type(final) is not LogisticRegression or final.solver == "liblinear":
        return None
    W = np.asarray(final.coef_, np.float64)
    b = np.asarray(final.intercept_, np.float64)
    for pre in reversed(steps[:-1]):
        if pre == "passthrough" or pre is None:
            continue
        if type(pre) is not StandardScaler:
            return None
        scale = pre.scale_ if pre.with_std and pre.scale_ is not None else np.ones(W.shape[1])
        mean = pre.mean_ if pre.with_mean and pre.mean_ is not None else np.zeros(W.shape[1])
        W = W / scale
        b = b - W @ mean
    if W.shape[0] == 1:
        W = np.vstack([-W / 2, W / 2])
        b = np.array([-b[0] / 2, b[0] / 2])
    return np.ascontiguousarray(W, np.float32), np.ascontiguousarray(b, np.float32)


def _describe(est: Any) -> tuple[str, str]:
    from sklearn.pipeline import Pipeline

    if isinstance(est, Pipeline):
        name = "Pipeline(" + ", ".join(type(s).__name__ for _, s in est.steps) + ")"
        params = {f"{n}": s.get_params(deep=False) for n, s in est.steps if hasattr(s, "get_params")}
    else:
        name = type(est).__name__
        params = est.get_params(deep=False) if hasattr(est, "get_params") else {}
    return name, json.dumps(params, default=str, sort_keys=True)


class LabelClassifier(ClassifierMixin, BaseEstimator):
    """A classifier of embeddings into label classes (what :func:`fit_classifier` returns).

    ``model``: ``"knn"``, ``"logreg"``, ``"rf"`` or a scikit-learn classifier.  After
    ``fit``: ``estimator_`` (the fitted model), ``classes_`` (class names).  After
    :func:`fit_classifier` also ``samples_`` (what was sampled and what was skipped),
    ``colors_`` (class -> colour) and ``provenance_`` (dataset version, year, model and
    settings, label file), which :func:`predict_map` copies into its maps.
    """

    def __init__(self, model: Any = "knn"):
        self.model = model

    def fit(self, X, y):
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y)
        check_training_set(y, None)
        est = make_model(self.model)
        try:
            # one BLAS thread: a few hundred samples gain nothing from more, and OpenBLAS
            # threads left spinning afterwards halve the speed of the numba kernels that
            # follow on a 2-core machine (measured: logreg refit 170 ms -> a few ms)
            with _blas_controller().limit(limits=1, user_api="blas"):
                self.estimator_ = est.fit(X, y)
        except ValueError as err:
            raise ClassifierError(f"{type(est).__name__} cannot be trained on these labels: {err}") from err
        if not hasattr(self.estimator_, "predict_proba"):
            raise ClassifierError(f"{type(est).__name__} has no predict_proba: confidence needs probabilities")
        self.classes_ = np.asarray(self.estimator_.classes_)
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        return np.asarray(self.estimator_.predict_proba(np.asarray(X, np.float32)), np.float32)

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


_BLAS = None


def _blas_controller():
    """One threadpoolctl controller for the process, made on the first refit (after
    numpy and scikit-learn have loaded their BLAS): ``threadpool_limits`` scans the loaded
    libraries on every call, 3-10 ms a refit, which a click that refits pays each time."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS


def check_training_set(y: np.ndarray, label_id: np.ndarray | None) -> None:
    """Refuse training sets that cannot make a classifier, with a message that says why."""
    classes = np.unique(y)
    n_labels = len(np.unique(label_id)) if label_id is not None else len(y)
    if n_labels < 2:
        raise ClassifierError(
            f"only {n_labels} label gives a sample; a classifier needs labels of at least two classes"
        )
    if len(classes) < 2:
        raise ClassifierError(
            f"all {n_labels} labels are of one class ({classes[0]!r}); add labels of at least one other class "
            "(to find more of one class, use similarity() instead)"
        )


def _samples_provenance(samples: Samples) -> dict:
    """The provenance of a map trained on samples alone (no area): the dataset and year
    the samples' ``meta`` records (as :func:`provenance` of the area would give them)."""
    m = samples.meta
    year = m.get("year")
    if year is None:
        raise ClassifierError("the samples do not say their year (meta['year']); pass the area as da")
    return {"dataset_version": str(m.get("dataset_version") or "?"),
            "dataset_variant": str(m.get("dataset_variant") or "?"),
            "model_generation": str(m.get("model_generation") or "?"),
            "year": int(year), "source": str(m.get("source") or "")}


def fit_classifier(da: Any, labels: Any, *, model: Any = "knn", kernel: int = 1,
                   max_per_label: int | None = None) -> LabelClassifier:
    """Train a classifier on the embeddings under labels.

    Parameters
    ----------
    da : embeddings DataArray or :class:`PreparedArea` (faster for repeated refits); or
        None when ``labels`` is a :class:`Samples` (from :func:`samples_from_labels`, or
        samples kept from earlier refits): the provenance (dataset version and variant,
        year) is then taken from ``samples.meta``.
    labels : a :class:`LabelStore`, label file, GeoDataFrame, GeoJSON dict, list of
        ``(lon, lat, class)``, or a :class:`Samples` from :func:`sample_labels`.
    model : ``"knn"`` (cosine k-NN, similarity-weighted, k = 5 or the smallest class's
        sample count if fewer: see :class:`CosineKNN`), ``"logreg"``, ``"rf"``, or any scikit-learn
        classifier with ``predict_proba``.
    kernel : window side for point labels (see :func:`sample_labels`).
    max_per_label : use at most this many pixels of each label (a seeded random choice
        within large polygons).  kNN predicts in time proportional to the number of
        training pixels, so a few large polygons (tens of thousands of pixels) make
        whole-area prediction slow; a cap of a few hundred keeps it fast.

    Returns a fitted :class:`LabelClassifier`.  Raises ClassifierError for one class or a
    single label; labels left out while sampling are reported in ``samples_.skipped``.
    """
    from .area import grid_of, provenance

    if da is None and not isinstance(labels, Samples):
        raise ClassifierError("fit_classifier needs an area (da) to sample the labels from; without one, pass "
                              "Samples (samples_from_labels(labels) trains on the labels' stored vectors)")
    samples = labels if isinstance(labels, Samples) else sample_labels(da, labels, kernel=kernel)
    if max_per_label is not None:
        samples = samples.thin(max_per_label)
    check_training_set(samples.y, samples.label_id)
    clf = LabelClassifier(model).fit(samples.X, samples.y)
    name, settings = _describe(clf.estimator_)
    clf.samples_ = samples
    clf.colors_ = {c: samples.colors.get(c) for c in clf.classes_}
    prov = provenance(grid_of(da)) if da is not None else _samples_provenance(samples)
    prov.update({"model": name, "settings": settings, "kernel": int(kernel),
                 "label_file": samples.meta.get("label_file") or "",
                 "n_labels": int(len(np.unique(samples.label_id))), "n_samples": int(len(samples))})
    clf.provenance_ = prov
    return clf
