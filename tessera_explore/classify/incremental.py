"""``IncrementalKNNMap``: a kNN class and confidence map updated label by label, exactly.

After a label is added, a cosine kNN map changes only where the new training samples
enter a pixel's k nearest neighbours.  :class:`IncrementalKNNMap` keeps, for every pixel
it holds (a whole :class:`~tessera_explore.classify.area.PreparedArea` or the pixels on
screen), the K best training samples (similarity and sample id), best first, with
``K = n_neighbors`` (the most k can be: k adapts downwards to the smallest class, see
:class:`~tessera_explore.classify.models.CosineKNN`).  Then:

* adding m samples costs ``pixels x m`` dot products, whatever the number of samples
  held (each pixel merges the new ones into its list);
* removing samples recomputes only the pixels whose list holds one of them, against the
  samples left (on average ``K / n`` of the pixels, so about ``K`` dot products a pixel);
* the vote (class and confidence) is derived from the lists for the k in use now, in
  ``pixels x k`` steps: a change of k (a class reaching or falling below 5 samples),
  of the weighting or of the class names' indices costs no rescan.

The result equals :func:`~tessera_explore.classify.predict.predict_map` of a
:class:`CosineKNN` fitted on the same samples: the class map is identical and the
confidence equal (both sum the votes in float64, exact for k <= 512).  Ties are broken
the same way on both paths, independently of the order of the samples: a tie in
similarity at the k-th neighbour goes to the class whose name sorts first, and equal
votes to the first class.

The usual entry point is :meth:`IncrementalKNNMap.update` with the classifier refitted
after each change of the labels (:func:`fit_classifier` of a kNN costs next to nothing):
it compares the classifier's training samples with those held, adds and removes the
difference, and falls back to a full prediction of the held pixels when the incremental
path cannot represent the change (a model that is not :class:`CosineKNN`, an
``n_neighbors`` above the K held: the lists are then rebuilt).

An instance is not thread-safe: call it from one thread (the explorer's worker).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..exceptions import ArgumentError, ClassifierError
from . import _kernels
from .area import Block, prepare
from .models import CosineKNN, LabelClassifier, training_codes

__all__ = ["IncrementalKNNMap"]


class IncrementalKNNMap:
    """Class and confidence of a set of pixels under a cosine kNN, kept up to date
    sample by sample.

    Parameters
    ----------
    area : :class:`PreparedArea` (or an embeddings DataArray, prepared on first use).
    pixels : flat indices (``row * width + col``) of the pixels to hold, in the order the
        results come in; None holds the whole area (results in the area's row-major order).
    n_neighbors, weights, adaptive : as :class:`CosineKNN`; ``n_neighbors`` also sets K,
        the length of the neighbour list kept per pixel.  :meth:`update` takes them from
        the classifier it is given.

    After a call: ``last_update`` says what it did (``mode``: ``"incremental"``,
    ``"rebuilt"`` or ``"full"``; ``added``, ``removed``; ``pixels_rescanned`` and
    ``dot_products``: pixels x training samples compared; ``pixels_voted``: pixels whose
    vote was taken again, all of them when k, the weighting or the classes changed).
    """

    def __init__(self, area: Any, *, pixels: Any = None, n_neighbors: int = 5, weights: str = "similarity",
                 adaptive: bool = True):
        self.area = area
        self.pixels = pixels
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.adaptive = adaptive
        self.last_update: dict = {}
        self._ready = False

    # -- state -------------------------------------------------------------------------

    def _setup(self) -> None:
        if self._ready:
            return
        if int(self.n_neighbors) < 1:
            raise ClassifierError(f"n_neighbors must be at least 1, got {self.n_neighbors}")
        self.area = prepare(self.area)
        self._pix = self._check_pixels(self.pixels)
        self._K = int(self.n_neighbors)
        nb = self.area.codes.shape[1]
        self._codes = np.empty((0, nb), np.int16)
        self._inv = np.empty(0, np.float32)
        self._ids = np.empty(0, np.int32)
        self._names = np.empty(0, object)
        self._next_id = 0
        self._by_key: dict = {}
        self._classes = np.empty(0, object)
        self._rank_of_id = np.zeros(0, np.int32)
        self._reset_pixels(self._pix)
        self._ready = True

    def _check_pixels(self, pixels: Any) -> np.ndarray:
        n = self.area.codes.shape[0]
        if pixels is None:
            return np.arange(n, dtype=np.int64)
        pix = np.asarray(pixels)
        if pix.dtype.kind not in "iu":
            raise ArgumentError(f"pixels must be integer flat indices (row * width + col), got dtype {pix.dtype}")
        pix = pix.astype(np.int64).ravel()
        if pix.size and (pix.min() < 0 or pix.max() >= n):
            raise ArgumentError(f"pixels must lie in [0, {n}) (row * width + col of the area)")
        return pix

    def _reset_pixels(self, pix: np.ndarray) -> None:
        self._pix = pix
        P = len(pix)
        self._valid = self.area.valid[pix]
        self._norm = np.empty(P, np.float32)
        _kernels.run(_kernels.code_norms, self.area.codes, pix, self._norm)
        self._top_s = np.empty((P, self._K), np.float32)
        self._top_id = np.full((P, self._K), -1, np.int32)
        self._top_n = np.zeros(P, np.int32)
        self._changed = np.ones(P, np.uint8)  # lists changed since the last vote
        self._voted = None  # (key, class, confidence) of the last vote

    def _start(self, mode: str) -> None:
        self.last_update = {"mode": mode, "added": 0, "removed": 0, "pixels_rescanned": 0, "dot_products": 0}

    def _merge(self, loc: np.ndarray, codes: np.ndarray, inv: np.ndarray, ids: np.ndarray) -> None:
        if len(loc) == 0 or len(ids) == 0:
            return
        _kernels.run(_kernels.knn_merge, self.area.codes, self._pix, np.ascontiguousarray(loc, np.int64),
                     np.ascontiguousarray(codes, np.int16), np.ascontiguousarray(inv, np.float32),
                     np.ascontiguousarray(ids, np.int32), self._rank_of_id, self._top_s, self._top_id, self._top_n,
                     self._changed)
        self.last_update["dot_products"] += int(len(loc)) * int(len(ids))

    def _set_classes(self) -> None:
        """Class names (sorted, as ``np.unique`` sorts them) and each id's class rank."""
        self._classes = np.unique(self._names) if len(self._names) else np.empty(0, object)
        rank = np.zeros(self._next_id, np.int32)
        if len(self._ids):
            rank[self._ids] = np.searchsorted(self._classes, self._names).astype(np.int32)
        self._rank_of_id = rank

    # -- samples -----------------------------------------------------------------------

    @property
    def classes(self) -> np.ndarray:
        """Class names of the samples held, sorted (the classifier's ``classes_``)."""
        self._setup()
        return self._classes

    @property
    def n_samples(self) -> int:
        """Number of training samples held."""
        self._setup()
        return len(self._ids)

    @property
    def sample_ids(self) -> np.ndarray:
        """Ids of the samples held (as :meth:`add` returned them)."""
        self._setup()
        return self._ids.copy()

    def add(self, X: Any, y: Any) -> np.ndarray:
        """Add training samples: ``X`` float embeddings ``(m, bands)`` (as
        :func:`sample_labels` gives them), ``y`` their class names.  Returns their ids
        (for :meth:`remove`).  Costs held pixels x m dot products."""
        self._setup()
        X = np.asarray(X, np.float32)
        y = np.asarray(y, dtype=object).ravel()
        if X.ndim != 2 or X.shape[0] != len(y) or X.shape[1] != self.area.codes.shape[1]:
            raise ClassifierError(f"X must be (m, {self.area.codes.shape[1]}) and y (m,), got {X.shape} and {y.shape}")
        if np.isnan(X).any():
            raise ClassifierError("X holds NaN (no-data pixels); sample_labels leaves them out")
        codes, inv = training_codes(X)
        self._start("incremental")
        ids = self._add(codes, inv, y)
        return ids

    def _add(self, codes: np.ndarray, inv: np.ndarray, names: np.ndarray) -> np.ndarray:
        m = len(names)
        ids = np.arange(self._next_id, self._next_id + m, dtype=np.int32)
        self._next_id += m
        self._codes = np.concatenate([self._codes, codes]) if len(self._codes) else np.ascontiguousarray(codes)
        self._inv = np.concatenate([self._inv, inv])
        self._ids = np.concatenate([self._ids, ids])
        self._names = np.concatenate([self._names, np.asarray(names, dtype=object)])
        for i, key in zip(ids.tolist(), _keys(codes, names)):
            self._by_key.setdefault(key, []).append(i)
        self._set_classes()
        self._merge(np.flatnonzero(self._valid), codes, inv, ids)
        self.last_update["added"] += m
        return ids

    def remove(self, ids: Any) -> None:
        """Remove training samples by id.  The pixels whose neighbour list holds one of
        them are recomputed against the samples left; the others keep their lists."""
        self._setup()
        ids = np.unique(np.asarray(ids, np.int64).ravel())
        held = np.isin(ids, self._ids)
        if not held.all():
            raise ArgumentError(f"no sample with id {ids[~held][:5].tolist()} is held")
        self._start("incremental")
        self._remove(ids)

    def _remove(self, ids: np.ndarray) -> None:
        if len(ids) == 0:
            return
        keep = ~np.isin(self._ids, ids)
        for i, key in zip(self._ids[~keep].tolist(), _keys(self._codes[~keep], self._names[~keep])):
            lst = self._by_key[key]
            lst.remove(i)
            if not lst:
                del self._by_key[key]
        self._codes = np.ascontiguousarray(self._codes[keep])
        self._inv = self._inv[keep]
        self._ids = self._ids[keep]
        self._names = self._names[keep]
        self._set_classes()
        gone = np.zeros(self._next_id, bool)
        gone[ids] = True
        filled = np.arange(self._K)[None, :] < self._top_n[:, None]
        hit = (gone[np.where(filled, self._top_id, 0)] & filled).any(axis=1)
        loc = np.flatnonzero(hit & self._valid)
        self._top_n[hit] = 0
        self._changed[hit] = 1
        self._merge(loc, self._codes, self._inv, self._ids)
        self.last_update["removed"] += len(ids)
        self.last_update["pixels_rescanned"] += len(loc)

    def sync(self, codes: np.ndarray, inv_norm: np.ndarray, names: Any) -> None:
        """Make the samples held those given (int16 codes, inverse norms and class names,
        as a fitted :class:`CosineKNN` keeps them: ``codes_``, ``inv_norm_``,
        ``classes_[y_]``): samples held but not given are removed, given but not held
        added.  Samples are matched by code and class, so the order does not matter."""
        self._setup()
        names = np.asarray(names, dtype=object).ravel()
        want: dict = {}
        for j, key in enumerate(_keys(codes, names)):
            want.setdefault(key, []).append(j)
        drop: list[int] = []
        for key, held in self._by_key.items():
            extra = len(held) - len(want.get(key, ()))
            if extra > 0:
                drop.extend(held[len(held) - extra:])
        new: list[int] = []
        for key, rows in want.items():
            extra = len(rows) - len(self._by_key.get(key, ()))
            if extra > 0:
                new.extend(rows[len(rows) - extra:])
        self._remove(np.asarray(sorted(drop), np.int64))
        if new:
            new_rows = np.asarray(sorted(new), np.int64)
            self._add(np.ascontiguousarray(codes[new_rows], np.int16), np.asarray(inv_norm, np.float32)[new_rows],
                      names[new_rows])

    # -- results -----------------------------------------------------------------------

    def k(self) -> int:
        """The k in use for the samples held (as :attr:`CosineKNN.n_neighbors_` would be)."""
        self._setup()
        n = len(self._ids)
        if n == 0:
            raise ClassifierError("no training samples are held")
        k = min(int(self.n_neighbors), n)
        if self.adaptive:
            counts = np.unique(self._names, return_counts=True)[1]
            k = min(k, int(counts.min()))
        return max(k, 1)

    def predict(self) -> tuple[np.ndarray, np.ndarray]:
        """``(class, confidence)`` of the held pixels: uint8 indices into :attr:`classes`
        (255 where there is no data) and float32 probabilities of the winner (NaN)."""
        self._setup()
        if self.weights not in ("uniform", "similarity"):
            raise ClassifierError(f"weights must be 'uniform' or 'similarity', got {self.weights!r}")
        k = self.k()
        if k > self._K:
            raise ClassifierError(f"n_neighbors={self.n_neighbors} exceeds the {self._K} neighbours held a pixel; "
                                  "update() with the classifier rebuilds the lists")
        cls_of_id = self._rank_of_id  # a sample's class index is its class's rank among the sorted names
        P = len(self._pix)
        # with the same k, weighting and classes, only the pixels whose list changed are voted again
        key = (k, self.weights, tuple(self._classes.tolist()))
        if self._voted is not None and self._voted[0] == key:
            _, out_cls, out_conf = self._voted
            loc = np.flatnonzero(self._changed)
        else:
            out_cls, out_conf = np.empty(P, np.uint8), np.empty(P, np.float32)
            loc = np.arange(P, dtype=np.int64)
        _kernels.run(_kernels.knn_vote, loc, self._top_s, self._top_id, self._top_n, cls_of_id, self._norm,
                     self._valid, k, len(self._classes), self.weights == "similarity", out_cls, out_conf)
        self._changed[:] = 0
        self._voted = (key, out_cls, out_conf)
        if self.last_update:
            self.last_update["pixels_voted"] = len(loc)
        return out_cls.copy(), out_conf.copy()

    def nearest(self) -> np.ndarray:
        """Cosine similarity of each held pixel to its nearest training sample (NaN where
        there is no data), as :func:`trust` measures novelty."""
        self._setup()
        out = self._top_s[:, 0] * self.area.inv_norm[self._pix]
        out[~self._valid | (self._top_n == 0)] = np.nan
        return out

    def update(self, clf: Any) -> tuple[np.ndarray, np.ndarray]:
        """Bring the map up to date with a fitted classifier and return ``(class,
        confidence)`` of the held pixels, equal to :func:`predict_map` ``(area, clf)`` there.

        A :class:`CosineKNN` (alone, or inside the :class:`LabelClassifier` of
        :func:`fit_classifier`) is applied incrementally: its training samples are
        compared with those held (:meth:`sync`), and only the difference is added or
        removed.  An ``n_neighbors`` above the K held rebuilds the lists (K grows to it);
        any other model is applied to the held pixels in full (the lists are kept for the
        next kNN).  ``last_update["mode"]`` says which happened.
        """
        from .predict import check_classifier

        self._setup()
        if not hasattr(clf, "classes_") or not hasattr(clf, "predict_proba"):
            raise ClassifierError("clf must be a fitted classifier (from fit_classifier) with predict_proba")
        check_classifier(self.area.grid, clf)
        est = clf.estimator_ if isinstance(clf, LabelClassifier) else clf
        if not isinstance(est, CosineKNN):
            return self._full(clf, est)
        if not hasattr(est, "codes_"):
            raise ClassifierError("the CosineKNN is not fitted")
        mode = "incremental"
        if int(est.n_neighbors) > self._K:
            self._K = int(est.n_neighbors)
            self._reset_pixels(self._pix)
            self._by_key, self._ids = {}, np.empty(0, np.int32)
            self._codes = self._codes[:0]
            self._inv, self._names = self._inv[:0], self._names[:0]
            mode = "rebuilt"
        self.n_neighbors, self.weights, self.adaptive = int(est.n_neighbors), est.weights, bool(est.adaptive)
        self._start(mode)
        self.sync(est.codes_, est.inv_norm_, np.asarray(est.classes_, dtype=object)[est.y_])
        if [str(c) for c in self._classes] != [str(c) for c in est.classes_] or self.k() != est.n_neighbors_:
            raise ClassifierError("the samples held do not match the classifier's (a bug): "
                                  f"classes {list(self._classes)} vs {list(est.classes_)}, "
                                  f"k {self.k()} vs {est.n_neighbors_}")
        return self.predict()

    def _full(self, clf: Any, est: Any) -> tuple[np.ndarray, np.ndarray]:
        from .predict import _predict_block, fast_path

        self._start("full")
        area = self.area
        if self.pixels is None:
            blk = area.block()
        else:
            p = self._pix
            blk = Block(slice(0, 1), slice(0, len(p)), area.codes[p], area.scales[p], area.inv_norm[p], self._valid)
        fast = fast_path(est, area.codes.shape[1])
        cls, conf, _ = _predict_block(blk, est, fast, len(clf.classes_), False)
        self.last_update["pixels_rescanned"] = int(self._valid.sum())
        self.last_update["fast_path"] = fast[0]
        return cls, conf

    def set_pixels(self, pixels: Any) -> None:
        """Hold another set of pixels (the view moved): pixels held before keep their
        lists, the others are computed against the samples held."""
        self._setup()
        new = self._check_pixels(pixels)
        old, top_s, top_id, top_n = self._pix, self._top_s, self._top_id, self._top_n
        self.pixels = pixels
        self._reset_pixels(new)
        self._start("incremental")
        order = np.argsort(old, kind="stable")
        pos = np.searchsorted(old[order], new)
        pos_c = np.minimum(pos, max(len(old) - 1, 0))
        found = (pos < len(old)) & (old[order][pos_c] == new) if len(old) else np.zeros(len(new), bool)
        src = order[pos_c[found]]
        self._top_s[found] = top_s[src]
        self._top_id[found] = top_id[src]
        self._top_n[found] = top_n[src]
        self._changed[:] = 1
        self._merge(np.flatnonzero(~found & self._valid), self._codes, self._inv, self._ids)
        self.last_update["pixels_rescanned"] = int((~found & self._valid).sum())

    def dataset(self, clf: Any):
        """:meth:`update` with ``clf``, placed on the area's grid as the Dataset
        :func:`predict_map` returns (pixels not held: class 255, confidence NaN)."""
        from .predict import NODATA_CLASS, map_dataset

        cls, conf = self.update(clf)
        h, w = self.area.shape
        if self.pixels is None:
            cmap, fmap = cls.reshape(h, w), conf.reshape(h, w)
        else:
            cmap = np.full(h * w, NODATA_CLASS, np.uint8)
            fmap = np.full(h * w, np.nan, np.float32)
            cmap[self._pix], fmap[self._pix] = cls, conf
            cmap, fmap = cmap.reshape(h, w), fmap.reshape(h, w)
        return map_dataset(self.area.grid, clf, cmap, fmap, fast_path=self.last_update.get("fast_path", "knn"))

    def __repr__(self) -> str:
        if not self._ready:
            return "IncrementalKNNMap(not started)"
        return (f"IncrementalKNNMap({len(self._pix)} px, {len(self._ids)} samples in {len(self._classes)} classes, "
                f"K={self._K})")


def _keys(codes: np.ndarray, names: np.ndarray):
    """One hashable key per sample: its code and class (what the vote depends on)."""
    codes = np.ascontiguousarray(codes, np.int16)
    return [(codes[i].tobytes(), names[i]) for i in range(len(names))]

