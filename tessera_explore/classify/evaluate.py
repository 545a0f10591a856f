"""``evaluate``: held-out accuracy, per-class F1, confusion matrix, spatially blocked CV.

Neighbouring pixels are near copies of each other, so a split that puts one pixel of a
field in training and its neighbour in testing measures memory, not skill.  Splits here
never separate the pixels of one label (a polygon or a kernel window), and the default
``cv="spatial"`` keeps whole square blocks of the map (``block_size`` metres) on one side.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..exceptions import ArgumentError, ClassifierError
from .models import LabelClassifier, check_training_set
from .samples import Samples, sample_labels

__all__ = ["Evaluation", "evaluate", "wilson_interval", "cv_readiness", "MIN_LABELS_PER_CLASS"]

CV = ("spatial", "holdout", "random")

#: labels of every class before a cross-validated score means something: with fewer, each
#: fold trains on one or two labels of a class and tests on one, so the score says more
#: about which labels were held out than about the classifier (and its interval spans
#: most of 0-1).  Chosen with the simulated user of ``docs/design/explorer.md``.
MIN_LABELS_PER_CLASS = 5


def wilson_interval(correct: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95 % by default) of a proportion ``correct / n``."""
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return float(max(0.0, mid - half)), float(min(1.0, mid + half))


def cv_readiness(counts: dict, min_per_class: int = MIN_LABELS_PER_CLASS) -> str | None:
    """None when every class with labels has ``min_per_class`` of them (and there are two
    such classes); otherwise what is missing, in words."""
    have = {c: int(k) for c, k in counts.items() if int(k) > 0}
    if len(have) < 2:
        return "label at least two classes"
    short = {c: k for c, k in have.items() if k < min_per_class}
    if not short:
        return None
    return (f"needs {min_per_class} labels of each class to score on held-out labels ("
            + ", ".join(f"{c} {k}" for c, k in short.items()) + ")")


@dataclass
class Evaluation:
    """Scores of a classifier recipe on held-out labels (pooled over the folds)."""

    cv: str
    accuracy: float
    f1: dict
    macro_f1: float
    confusion: Any  # pandas DataFrame: rows true class, columns predicted class
    classes: list
    fold_accuracy: list
    n_samples: int
    n_labels: int
    settings: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    #: 95 % Wilson interval of the accuracy, counting each held-out *label* once (its
    #: pixels are near copies, so they are not independent trials)
    accuracy_interval: tuple = (0.0, 1.0)
    #: held-out labels scored per class
    labels_per_class: dict = field(default_factory=dict)

    def summary(self) -> str:
        """One line: accuracy with its interval and what it rests on."""
        lo, hi = self.accuracy_interval
        return (f"accuracy {self.accuracy:.2f} (95 % interval {lo:.2f}-{hi:.2f}), macro F1 {self.macro_f1:.2f}, "
                f"on {self.n_labels} held-out label{'s' if self.n_labels != 1 else ''}")

    def __repr__(self) -> str:
        f1 = ", ".join(f"{k}: {v:.2f}" for k, v in self.f1.items())
        folds = ", ".join(f"{a:.2f}" for a in self.fold_accuracy)
        return (f"Evaluation(cv={self.cv!r}, accuracy={self.accuracy:.3f}, macro_f1={self.macro_f1:.3f}, "
                f"folds=[{folds}], f1={{{f1}}}, n_labels={self.n_labels}, n_samples={self.n_samples})")


def _label_blocks(s: Samples, block_size: float) -> dict:
    """Block id of each label (by its first pixel), so a label never straddles folds."""
    out = {}
    for lid, (x, y) in zip(s.label_id, s.xy):
        if lid not in out:
            out[lid] = (int(np.floor(x / block_size)), int(np.floor(y / block_size)))
    return out


def _splits(s: Samples, cv: str, n_splits: int, block_size: float, test_size: float, seed: int):
    rng = np.random.default_rng(seed)
    labels = np.unique(s.label_id)
    if cv == "holdout":
        # stratified by class, at the level of labels
        test = []
        first_cls = {lid: s.y[np.argmax(s.label_id == lid)] for lid in labels}
        for c in s.classes:
            ids = np.array([lid for lid in labels if first_cls[lid] == c])
            rng.shuffle(ids)
            n_test = int(round(test_size * len(ids)))
            if len(ids) >= 2:
                n_test = min(max(n_test, 1), len(ids) - 1)
            else:
                n_test = 0
            test += list(ids[:n_test])
        if not test:
            raise ClassifierError("too few labels for a hold-out split: every class needs two labels")
        is_test = np.isin(s.label_id, test)
        return [(np.flatnonzero(~is_test), np.flatnonzero(is_test))]
    if cv == "spatial":
        blk = _label_blocks(s, block_size)
        keys = sorted(set(blk.values()))
        if len(keys) < 2:
            raise ClassifierError(
                f"all labels fall in one {block_size:g} m block; use a smaller block_size or spread the labels"
            )
        order = rng.permutation(len(keys))
        group_of_key = {k: int(order[i]) % min(n_splits, len(keys)) for i, k in enumerate(keys)}
        fold = np.array([group_of_key[blk[lid]] for lid in s.label_id])
    else:  # random, by label
        perm = rng.permutation(len(labels))
        k = min(n_splits, len(labels))
        f_of = {lid: int(perm[i]) % k for i, lid in enumerate(labels)}
        fold = np.array([f_of[lid] for lid in s.label_id])
    return [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in np.unique(fold)]


def evaluate(da: Any, labels: Any, *, model: Any = "knn", cv: str = "spatial", n_splits: int = 5,
             block_size: float = 1000.0, test_size: float = 0.3, seed: int = 0, kernel: int = 1) -> Evaluation:
    """Score a classifier recipe on labels it was not trained on.

    Parameters
    ----------
    da : embeddings DataArray or :class:`PreparedArea`.
    labels : anything :func:`sample_labels` takes, or a :class:`Samples`.
    model : ``"knn"``, ``"logreg"``, ``"rf"``, a scikit-learn classifier, or a
        :class:`LabelClassifier` (its recipe is refitted on each fold).
    cv : ``"spatial"`` (default: folds of whole ``block_size`` x ``block_size`` metre
        blocks), ``"holdout"`` (one split, ``test_size`` of each class's labels held out)
        or ``"random"`` (folds of random labels; optimistic where labels are close).
    n_splits : number of folds for ``spatial`` and ``random``.

    Returns an :class:`Evaluation`: pooled accuracy, per-class F1, macro F1, confusion
    matrix (pandas DataFrame) and the accuracy of each fold.
    """
    import pandas as pd
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    if cv not in CV:
        raise ArgumentError(f"cv must be one of {CV}, got {cv!r}")
    if isinstance(model, LabelClassifier):
        model = model.model
    s = labels if isinstance(labels, Samples) else sample_labels(da, labels, kernel=kernel)
    check_training_set(s.y, s.label_id)
    classes = list(s.classes)
    pred = np.empty(len(s), dtype=object)
    done = np.zeros(len(s), bool)
    fold_acc, notes = [], []
    for i, (tr, te) in enumerate(_splits(s, cv, int(n_splits), float(block_size), float(test_size), seed)):
        if len(te) == 0 or len(tr) == 0:
            continue
        if len(np.unique(s.y[tr])) < 2:
            notes.append(f"fold {i}: training part holds one class only; fold skipped")
            continue
        clf = LabelClassifier(model).fit(s.X[tr], s.y[tr])
        p = clf.predict(s.X[te])
        pred[te] = p
        done[te] = True
        fold_acc.append(float(np.mean(p == s.y[te])))
    if not done.any():
        raise ClassifierError("no fold could be evaluated: " + "; ".join(notes))
    yt, yp = s.y[done].astype(str), pred[done].astype(str)
    # per label: the share of its pixels predicted right (1 or 0 for a point label)
    lids = s.label_id[done]
    uniq, first, inv = np.unique(lids, return_index=True, return_inverse=True)
    right = np.bincount(inv, weights=(yt == yp).astype(float)) / np.bincount(inv)
    interval = wilson_interval(float(right.sum()), len(uniq))
    per_class = {c: int(np.sum(yt[first] == str(c))) for c in classes}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes absent from a test part give F1 = 0 by definition
        f1 = f1_score(yt, yp, labels=classes, average=None, zero_division=0)
    cm = confusion_matrix(yt, yp, labels=classes)
    conf = pd.DataFrame(cm, index=pd.Index(classes, name="true"), columns=pd.Index(classes, name="predicted"))
    return Evaluation(
        cv=cv, accuracy=float(accuracy_score(yt, yp)), f1={c: float(v) for c, v in zip(classes, f1)},
        macro_f1=float(np.mean(f1)), confusion=conf, classes=classes, fold_accuracy=fold_acc,
        n_samples=int(done.sum()), n_labels=int(len(np.unique(s.label_id[done]))),
        settings={"model": model if isinstance(model, str) else type(model).__name__, "n_splits": int(n_splits),
                  "block_size": float(block_size), "test_size": float(test_size), "seed": int(seed),
                  "kernel": int(kernel)},
        notes=notes, accuracy_interval=interval, labels_per_class=per_class,
    )
