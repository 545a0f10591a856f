"""What a regional job computes on each chunk: the single-area verbs, unchanged.

An operation holds what the verb needs besides the area (the fitted classifier, the
fitted projection, the query vectors, the second year) and is shipped to every worker
**once** (``Client.scatter(..., broadcast=True)``); each task then calls the same
function a user calls on one tile, on its window.  The verbs are per-pixel, so a
window's result equals the same pixels of the whole-area result exactly.
"""

from __future__ import annotations

import hashlib
import types
from typing import Any

import numpy as np
import xarray as xr

from ..exceptions import ArgumentError

__all__ = ["RegionOp", "as_op", "VERBS", "fingerprint"]

#: attributes of a fitted classifier that record where it came from, not what it
#: computes (the training samples are in the fitted estimator already; the label file's
#: path and the provenance only reach the output's attrs)
_NOT_CONTENT = frozenset({"samples_", "provenance_"})


def fingerprint(obj: Any) -> str:
    """A content hash of ``obj`` (a fitted estimator or pipeline, a projection, query
    vectors, options): equal for objects that compute the same, in any process.

    Arrays count by dtype, shape and bytes (structured arrays field by field, so padding
    never counts); containers by their items (dicts and sets in a sorted order, so hash
    randomisation does not matter); other objects by their type and the state they
    pickle (``__reduce_ex__``), recursively; functions and classes by their qualified
    name.  ``samples_`` and ``provenance_`` of a fitted classifier are left out.
    """
    h = hashlib.sha256()
    _feed(h, obj, set())
    return h.hexdigest()[:20]


def _sub(obj: Any, stack: set) -> bytes:
    h = hashlib.sha256()
    _feed(h, obj, stack)
    return h.digest()


def _name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', repr(obj)))}"


def _feed(h, obj: Any, stack: set) -> None:
    if obj is None or isinstance(obj, (bool, int, float, complex, str)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
        return
    if isinstance(obj, (bytes, bytearray, memoryview)):
        b = bytes(obj)
        h.update(b"bytes:%d:" % len(b) + b)
        return
    if isinstance(obj, np.generic):
        _feed(h, np.asarray(obj), stack)
        return
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.ModuleType, type)):
        h.update(f"callable:{_name(obj)};".encode())
        if isinstance(obj, types.MethodType):
            _feed(h, obj.__self__, stack)
        return
    if id(obj) in stack:
        h.update(b"cycle;")
        return
    stack.add(id(obj))
    try:
        if isinstance(obj, np.ndarray):
            h.update(f"ndarray:{obj.dtype.str}:{obj.shape};".encode())
            if obj.dtype.names:
                for f in obj.dtype.names:
                    _feed(h, np.ascontiguousarray(obj[f]), stack)
            elif obj.dtype.hasobject:
                for v in obj.ravel():
                    _feed(h, v, stack)
            else:
                h.update(np.ascontiguousarray(obj).tobytes())
        elif isinstance(obj, (list, tuple)):
            h.update(f"{type(obj).__name__}:{len(obj)};".encode())
            for v in obj:
                _feed(h, v, stack)
        elif isinstance(obj, dict):
            h.update(f"dict:{len(obj)};".encode())
            for kd, vd in sorted((_sub(k, stack), _sub(v, stack)) for k, v in obj.items()):
                h.update(kd + vd)
        elif isinstance(obj, (set, frozenset)):
            h.update(f"set:{len(obj)};".encode())
            for d in sorted(_sub(v, stack) for v in obj):
                h.update(d)
        elif isinstance(obj, xr.DataArray):
            h.update(b"DataArray;")
            _feed(h, (obj.dims, np.asarray(obj.values)), stack)
        else:
            _feed_object(h, obj, stack)
    finally:
        stack.discard(id(obj))


def _feed_object(h, obj: Any, stack: set) -> None:
    h.update(f"object:{_name(type(obj))};".encode())
    if hasattr(obj, "py_func"):  # a numba dispatcher: its Python function names it
        h.update(f"callable:{_name(obj.py_func)};".encode())
        return
    try:
        red = obj.__reduce_ex__(4)
    except Exception:  # a lock, a thread, an open file: state that computes nothing
        h.update(b"unpicklable;")
        return
    if isinstance(red, str):  # a global singleton, pickled by name
        h.update(f"global:{red};".encode())
        return
    red = tuple(red) + (None,) * (6 - len(red))
    fn, args, state, items, dictitems = red[0], red[1], red[2], red[3], red[4]
    h.update(f"reduce:{_name(fn)};".encode())
    if args and fn is not None and getattr(fn, "__name__", "") == "__newobj__":
        args = args[1:]  # (cls, *args): the class is named above
    _feed(h, args, stack)
    if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
        state = {**(state[0] or {}), **(state[1] or {})}  # (dict, slots)
    if isinstance(state, dict):
        state = {k: v for k, v in state.items() if k not in _NOT_CONTENT}
    _feed(h, state, stack)
    if items is not None:
        _feed(h, list(items), stack)
    if dictitems is not None:
        _feed(h, dict(dictitems), stack)


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
        """What the job computes, recorded in the output and compared on a rerun: the
        verb and the operation's content (fitted state, query, options, years), so a
        rerun with another fit of the same name is another job.  The base class
        fingerprints the whole object; subclasses name the parts."""
        return {"verb": self.name, "state": fingerprint(self.__dict__)}


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
                "probabilities": self.probabilities, "classifier": fingerprint(self.clf)}


class Trust(RegionOp):
    name = "trust"

    def __init__(self, clf: Any, **kwargs):
        self.clf, self.kwargs = clf, kwargs

    def __call__(self, areas):
        from ..classify.trust import trust

        return trust(areas[0], self.clf, **self.kwargs)

    def describe(self):
        return {"verb": self.name, "classes": [str(c) for c in getattr(self.clf, "classes_", [])],
                "classifier": fingerprint(self.clf), "options": fingerprint(self.kwargs)}


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

    def describe(self):
        q = None if self.query is None else np.asarray(self.query)
        n = 0 if q is None else int(np.atleast_2d(q).shape[0])
        return {"verb": self.name, "query": fingerprint(q), "n_query": n,
                "negatives": fingerprint(None if self.negatives is None else np.asarray(self.negatives)),
                "options": fingerprint(self.kwargs)}

    def __call__(self, areas):
        from ..classify.similarity import similarity

        return _ds(similarity(areas[0], self.query, negatives=self.negatives, **self.kwargs), "similarity")


class Change(RegionOp):
    name = "change"

    def __init__(self, year_b: int, **kwargs):
        self.extra_years = (int(year_b),)
        self.kwargs = kwargs

    def describe(self):
        return {"verb": self.name, "year_b": self.extra_years[0], "options": fingerprint(self.kwargs)}

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

    def describe(self):
        return {"verb": self.name, "method": str(getattr(self.fitted, "method", type(self.fitted).__name__)),
                "n_components": getattr(self.fitted, "n_components", None), "projection": fingerprint(self.fitted)}

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
