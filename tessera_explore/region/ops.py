"""What a regional job computes on each chunk: the single-area verbs, unchanged.

An operation holds what the verb needs besides the area (the fitted classifier, the
fitted projection, the query vectors, the second year) and is shipped to every worker
**once** (``Client.scatter(..., broadcast=True)``); each task then calls the same
function a user calls on one tile, on its window.  The verbs are per-pixel, so a
window's result equals the same pixels of the whole-area result exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from ..exceptions import ArgumentError

__all__ = ["RegionOp", "as_op", "VERBS"]


class RegionOp:
    """Base class: ``years(year)`` to open, ``__call__(areas) -> Dataset`` on one window."""

    name = "op"
    #: extra years opened besides the job's year (change)
    extra_years: tuple[int, ...] = ()

    def __call__(self, areas: list[xr.DataArray]) -> xr.Dataset:  # pragma: no cover - abstract
        raise NotImplementedError

    def resolve(self, open_point) -> None:
        """Called once on the client before the job starts (e.g. query pixels to vectors).
        ``open_point(lon, lat)`` gives a small area around a point."""

    def describe(self) -> dict:
        return {"verb": self.name}


def _ds(result: Any, name: str) -> xr.Dataset:
    if isinstance(result, xr.Dataset):
        return result
    return result.to_dataset(name=result.name or name, promote_attrs=True)


class Classify(RegionOp):
    name = "predict_map"

    def __init__(self, clf: Any, *, probabilities: bool = False):
        if not hasattr(clf, "classes_") or not hasattr(clf, "predict_proba"):
            from ..exceptions import ClassifierError

            raise ClassifierError("predict_map needs a fitted classifier (from fit_classifier)")
        self.clf, self.probabilities = clf, bool(probabilities)

    def __call__(self, areas):
        from ..classify.predict import predict_map

        return predict_map(areas[0], self.clf, probabilities=self.probabilities)

    def describe(self):
        return {"verb": self.name, "classes": [str(c) for c in self.clf.classes_],
                "probabilities": self.probabilities}


class Trust(RegionOp):
    name = "trust"

    def __init__(self, clf: Any, **kwargs):
        self.clf, self.kwargs = clf, kwargs

    def __call__(self, areas):
        from ..classify.trust import trust

        return trust(areas[0], self.clf, **self.kwargs)


class Similarity(RegionOp):
    name = "similarity"

    def __init__(self, query: Any, *, negatives: Any = None, **kwargs):
        self.query, self.negatives, self.kwargs = query, negatives, kwargs

    @staticmethod
    def _vectors(q, open_point) -> Any:
        from ..classify.similarity import _is_lonlat, query_vectors

        if q is None or (isinstance(q, np.ndarray) and q.dtype != object):
            return q
        pts = [q] if _is_lonlat(q) else list(q)
        vecs = []
        for p in pts:
            lon, lat = (float(p.x), float(p.y)) if hasattr(p, "geom_type") else (float(p[0]), float(p[1]))
            v, _ = query_vectors(open_point(lon, lat), (lon, lat))
            vecs.append(v)
        return np.concatenate(vecs, axis=0)

    def resolve(self, open_point):
        # query pixels are read once here, so every chunk compares against the same vectors
        self.query = self._vectors(self.query, open_point)
        self.negatives = self._vectors(self.negatives, open_point)

    def __call__(self, areas):
        from ..classify.similarity import similarity

        return _ds(similarity(areas[0], self.query, negatives=self.negatives, **self.kwargs), "similarity")


class Change(RegionOp):
    name = "change"

    def __init__(self, year_b: int, **kwargs):
        self.extra_years = (int(year_b),)
        self.kwargs = kwargs

    def __call__(self, areas):
        from ..classify.change import change

        return change(areas[0], areas[1], **self.kwargs)


class Project(RegionOp):
    name = "project"

    def __init__(self, fitted: Any):
        from ..project._base import Projection

        if not isinstance(fitted, Projection):
            raise ArgumentError("a regional projection needs fitted= (a projection fitted on a sample area): "
                                "every chunk must be projected by the same fit")
        self.fitted = fitted

    def __call__(self, areas):
        comp = self.fitted.transform(areas[0])
        return _ds(comp, "components")


def _verb_name(verb: Any) -> str:
    if isinstance(verb, str):
        return verb
    name = getattr(verb, "__name__", None) or type(verb).__name__
    return "project" if name in ("project", "tessera_explore.project") else name


#: verb name -> how its arguments become an operation
VERBS = ("predict_map", "similarity", "change", "project", "trust")


def as_op(verb: Any, args: tuple, kwargs: dict) -> RegionOp:
    """The operation for ``verb(area, *args, **kwargs)`` applied per chunk."""
    if isinstance(verb, RegionOp):
        if args or kwargs:
            raise ArgumentError("an operation object takes no further arguments")
        return verb
    name = _verb_name(verb)
    kwargs = dict(kwargs)
    if name == "predict_map":
        if len(args) != 1:
            raise ArgumentError("run_region(predict_map, source, clf, ...) needs the fitted classifier")
        return Classify(args[0], **kwargs)
    if name == "trust":
        if len(args) != 1:
            raise ArgumentError("run_region(trust, source, clf, ...) needs the fitted classifier")
        return Trust(args[0], **kwargs)
    if name == "similarity":
        if len(args) != 1:
            raise ArgumentError("run_region(similarity, source, query, ...) needs the query")
        return Similarity(args[0], **kwargs)
    if name == "change":
        year_b = args[0] if args else kwargs.pop("year_b", None)
        if year_b is None:
            raise ArgumentError("run_region(change, source, year_b, year=year_a, ...) needs the second year")
        return Change(year_b, **kwargs)
    if name == "project":
        fitted = args[0] if args else kwargs.pop("fitted", None)
        if kwargs:
            raise ArgumentError(f"a regional projection takes only fitted=, not {sorted(kwargs)}")
        return Project(fitted)
    raise ArgumentError(f"run_region runs {', '.join(VERBS)} (or a RegionOp); got {name!r}")
