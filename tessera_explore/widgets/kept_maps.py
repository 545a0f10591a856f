"""A view's class map kept for a pan back (``widgets/follow.py``): what
:meth:`Classifying.snapshot <tessera_explore.widgets.classifying.Classifying.snapshot>`
returns, and the exact key that says whether it still holds."""

from __future__ import annotations

__all__ = ["ClassMapSnapshot", "labels_key", "pixels_key"]


class ClassMapSnapshot:
    """The class map of one view as it was last drawn, to show it again without a refit
    (:meth:`Classifying.snapshot`, :meth:`Classifying.offer`).

    ``key`` says exactly what it rests on: the view (given by the caller), the model, the
    labelling and shown years, the classes, every label (id, class, geometry, and its stored
    vectors where the classifier did not sample it from the area), and what the shown
    pixels rest on (:func:`pixels_key`).  ``images`` are the class and confidence overlays
    drawn, valid while ``render_key`` (threshold, confidence shown, colours) still holds.
    No area is kept.
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


def pixels_key(da, options: dict) -> tuple:
    """What the pixels a layer image of ``da`` shows rest on: its grid (CRS, transform,
    shape) and the render options (:func:`~tessera_explore.widgets.reproject.shown_pixels`
    is a function of these alone).  Unlike the pixels, it needs no warp: a pan back finds
    the session's cache of shown pixels emptied, and the warp of a 1 M px view takes
    0.3-0.7 s on 2 cores."""
    from .reproject import crs_of, raster_grid_of, spatial_of

    da = spatial_of(da)
    crs = crs_of(da)
    return (crs.to_wkt(), tuple(raster_grid_of(da, crs)), (int(da.sizes["y"]), int(da.sizes["x"])),
            tuple(sorted((k, repr(v)) for k, v in options.items())))


def labels_key(labels, area_ids: frozenset) -> tuple:
    """Every label as training sees it: its stored vectors count only where the area did
    not give its pixels (``sample_labels`` takes those from the area)."""
    return tuple((lab.id, lab.cls, lab.geometry.wkb, None if lab.id in area_ids else lab.sample)
                 for lab in labels)
