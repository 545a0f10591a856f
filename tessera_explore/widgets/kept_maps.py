"""A view's class map kept for a pan back (``widgets/follow.py``): what
:meth:`Classifying.snapshot <tessera_explore.widgets.classifying.Classifying.snapshot>`
returns, and the exact key that says whether it still holds."""

from __future__ import annotations

import numpy as np

__all__ = ["ClassMapSnapshot", "labels_key", "pixels_digest"]


class ClassMapSnapshot:
    """The class map of one view as it was last drawn, to show it again without a refit
    (:meth:`Classifying.snapshot`, :meth:`Classifying.offer`).

    ``key`` says exactly what it rests on: the view (given by the caller), the model, the
    labelling and shown years, the classes, every label (id, class, geometry, and its stored
    vectors where the classifier did not sample it from the area), and a digest of the
    shown pixels.  ``images`` are the class and confidence overlays drawn, valid while
    ``render_key`` (threshold, confidence shown, colours) still holds.  No area is kept.
    """

    __slots__ = ("key", "classifier", "prediction", "prediction_year", "evaluation", "accuracy", "area_ids",
                 "images", "render_key")

    def __init__(self, key, classifier, prediction, prediction_year, evaluation, accuracy, area_ids, images,
                 render_key):
        self.key, self.classifier, self.prediction = key, classifier, prediction
        self.prediction_year, self.evaluation, self.accuracy = prediction_year, evaluation, accuracy
        self.area_ids, self.images, self.render_key = area_ids, images, render_key

    @property
    def nbytes(self) -> int:
        """Bytes of its prediction and images (the classifier is shared with the session)."""
        n = 0 if self.prediction is None else int(sum(v.nbytes for v in self.prediction.data_vars.values()))
        for img in self.images.values():
            n += len(getattr(img, "url", "") or "")
        return n

    def __repr__(self) -> str:
        return f"ClassMapSnapshot(year={self.prediction_year}, {self.nbytes / 1e6:.1f} MB)"


def pixels_digest(pixels) -> str | None:
    """A digest of the shown pixels (None: all of them)."""
    import hashlib

    if pixels is None:
        return None
    a = np.ascontiguousarray(pixels)
    return f"{a.dtype}{a.shape}" + hashlib.blake2b(a.tobytes(), digest_size=16).hexdigest()


def labels_key(labels, area_ids: frozenset) -> tuple:
    """Every label as training sees it: its stored vectors count only where the area did
    not give its pixels (``sample_labels`` takes those from the area)."""
    return tuple((lab.id, lab.cls, lab.geometry.wkb, None if lab.id in area_ids else lab.sample)
                 for lab in labels)
