"""``LabelStore``: classes and labels in lon/lat, with undo/redo and a file that never
loses a click.

The store holds an immutable *state* (labels, classes, next id); every change builds a
new state, writes it to the store's GeoJSON file (temporary file + rename) and only
then makes it current, so the file and the memory agree after every call, and a
failed write leaves both as they were.  Undo and redo swap whole states.

No widget code lives here; the explorer observes changes with :meth:`LabelStore.observe`.
Methods may be called from a background thread: one lock serialises them.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..exceptions import LabelError
from ..io import labels as _io

__all__ = ["Label", "LabelStore"]

#: Two points closer than this (degrees, about 1 cm) are the same point.
_SAME_POINT = 1e-7
_MAX_UNDO = 1000


@dataclass(frozen=True)
class Label:
    """One label: ``id``, class name ``cls``, shapely ``geometry`` in lon/lat."""

    id: int
    cls: str
    geometry: Any
    created: str | None = None

    @property
    def kind(self) -> str:
        """``"point"`` or ``"polygon"``."""
        return "point" if self.geometry.geom_type == "Point" else "polygon"

    @property
    def lon(self) -> float:
        g = self.geometry if self.kind == "point" else self.geometry.centroid
        return float(g.x)

    @property
    def lat(self) -> float:
        g = self.geometry if self.kind == "point" else self.geometry.centroid
        return float(g.y)


@dataclass(frozen=True)
class _State:
    labels: tuple  # of Label, in insertion order
    classes: tuple  # of (name, colour)
    next_id: int


def _point_key(geom) -> tuple:
    return (round(geom.x / _SAME_POINT), round(geom.y / _SAME_POINT))


def _as_geometry(geometry: Any, where: str):
    """A shapely geometry from (lon, lat), a ring of (lon, lat), a GeoJSON dict or shapely."""
    import shapely.geometry

    if hasattr(geometry, "geom_type"):
        geom = geometry
    elif isinstance(geometry, dict):
        try:
            geom = shapely.geometry.shape(geometry)
        except Exception as err:  # shapely raises several types
            raise LabelError(f"{where}: unreadable GeoJSON geometry: {err}") from err
    else:
        try:
            seq = list(geometry)
        except TypeError:
            raise LabelError(f"{where}: expected (lon, lat), a list of (lon, lat) or a shapely geometry, "
                             f"got {geometry!r}") from None
        if len(seq) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seq):
            geom = shapely.geometry.Point(float(seq[0]), float(seq[1]))
        else:
            try:
                geom = shapely.geometry.Polygon([(float(a), float(b)) for a, b in seq])
            except (TypeError, ValueError) as err:
                raise LabelError(f"{where}: a polygon needs at least 3 (lon, lat) pairs: {err}") from err
    return _io.check_geometry(geom, where)


class LabelStore:
    """Classes (with colours) and point/polygon labels in lon/lat, saved after every change.

    Parameters
    ----------
    path : the GeoJSON file that mirrors the store (written after every change), or
        None for a store in memory only (``save(path)`` binds one later).  A new store
        refuses a path that already exists: open it with :meth:`LabelStore.open`.
    classes : class names, or a dict name -> ``"#rrggbb"`` (missing colours are chosen).
    dataset_version, year : provenance of the embeddings the labels were drawn on;
        files of another dataset version are refused when loaded.

    Every mutating method raises :class:`~tessera_explore.exceptions.LabelError` on bad
    input and then leaves the labels exactly as they were.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, classes: Any = None,
                 dataset_version: str | None = None, year: int | None = None):
        self._path = os.path.abspath(os.fspath(path)) if path is not None else None
        if self._path is not None and os.path.exists(self._path):
            raise LabelError(
                f"{self._path} already exists; continue it with LabelStore.open({self._path!r}) "
                "or choose another path (a new store never overwrites a label file)"
            )
        self.dataset_version = None if dataset_version is None else str(dataset_version)
        self.year = None if year is None else int(year)
        self._lock = threading.RLock()
        self._observers: list[Callable] = []
        t = _io.now()
        self._created, self._updated = t, t
        self._undo: list[_State] = []
        self._redo: list[_State] = []
        self._state = _State((), (), 1)
        if classes:
            items = classes.items() if isinstance(classes, dict) else ((c, None) for c in classes)
            st = self._state
            for name, color in items:
                st = self._with_class(st, name, color)
            self._state = st
            if self._path is not None:
                self._write(st)

    # ----------------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: str | os.PathLike, *, dataset_version: str | None = None, year: int | None = None,
             create: bool = False) -> "LabelStore":
        """Open a label file and keep saving to it.

        Any format :func:`tessera_explore.io.labels.read_labels` reads is accepted; a file
        that is not our GeoJSON is converted and saved to ``path`` with a ``.geojson``
        extension beside it.  ``dataset_version`` refuses a file of another version.
        ``create=True`` starts an empty store when ``path`` does not exist.
        """
        path = os.path.abspath(os.fspath(path))
        if not os.path.exists(path):
            if create:
                return cls(path, dataset_version=dataset_version, year=year)
            raise LabelError(f"label file not found: {path} (pass create=True to start a new one)")
        ls = _io.read_labels(path)
        target = path
        if ls.meta.get("kind") != "geojson":
            target = os.path.splitext(path)[0] + ".geojson"
            if os.path.exists(target):
                raise LabelError(f"{path} is not GeoJSON and {target} already exists; open that instead")
        store = cls.__new__(cls)
        store._path = None
        store.dataset_version = dataset_version
        store.year = None if year is None else int(year)
        store._lock = threading.RLock()
        store._observers = []
        store._created = ls.meta.get("created") or _io.now()
        store._updated = ls.meta.get("updated") or store._created
        store._undo, store._redo = [], []
        store._state = _State((), (), 1)
        store._state = store._merged(store._state, ls, path, keep_ids=True)
        store._adopt(ls, path)
        store._path = target
        if target != path:
            store._write(store._state)
        return store

    @classmethod
    def from_file(cls, source: Any, path: str | os.PathLike | None = None, *, format: str | None = None,
                  dataset_version: str | None = None, year: int | None = None) -> "LabelStore":
        """A new store holding the labels of ``source`` (any readable format), saved to
        ``path`` if given."""
        store = cls(path, dataset_version=dataset_version, year=year)
        store.load(source, format=format)
        store._undo.clear()
        return store

    # ----------------------------------------------------------------------- reading
    @property
    def path(self) -> str | None:
        """The GeoJSON file that mirrors the store (None: memory only)."""
        return self._path

    @property
    def classes(self) -> dict:
        """Class name -> colour, in the order the classes were added."""
        return dict(self._state.classes)

    @property
    def labels(self) -> tuple:
        """All labels (:class:`Label`), oldest first."""
        return self._state.labels

    @property
    def created(self) -> str:
        return self._created

    @property
    def updated(self) -> str:
        return self._updated

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def __len__(self) -> int:
        return len(self._state.labels)

    def __iter__(self) -> Iterator[Label]:
        return iter(self._state.labels)

    def __getitem__(self, label_id: int) -> Label:
        for lab in self._state.labels:
            if lab.id == label_id:
                return lab
        raise LabelError(f"no label with id {label_id!r} (ids: {[l.id for l in self._state.labels][:20]})")

    def counts(self) -> dict:
        """Number of labels per class (every class listed, zero included)."""
        out = {name: 0 for name, _ in self._state.classes}
        for lab in self._state.labels:
            out[lab.cls] += 1
        return out

    def __repr__(self) -> str:
        c = ", ".join(f"{k}: {v}" for k, v in self.counts().items())
        return f"LabelStore({len(self)} labels; {c or 'no classes'}; path={self._path!r})"

    def to_geojson(self) -> dict:
        """The store as our GeoJSON FeatureCollection (lon/lat, provenance in properties)."""
        return _io.to_geojson(self._records(self._state), dict(self._state.classes), self._meta())

    def to_geodataframe(self):
        """The labels as a GeoDataFrame (EPSG:4326) with ``id``, ``class`` and ``color``."""
        import geopandas as gpd

        st = self._state
        colors = dict(st.classes)
        return gpd.GeoDataFrame(
            {"id": [l.id for l in st.labels], "class": [l.cls for l in st.labels],
             "color": [colors[l.cls] for l in st.labels]},
            geometry=[l.geometry for l in st.labels], crs="EPSG:4326",
        )

    # ----------------------------------------------------------------------- changing
    def add_class(self, name: str, color: str | None = None) -> None:
        """Add a class (colour ``"#rrggbb"``; one is chosen when left out)."""
        self._change(lambda st: self._with_class(st, name, color, strict=True))

    def set_color(self, name: str, color: str) -> None:
        """Change a class's colour."""
        def f(st):
            self._need_class(st, name)
            c = _io.check_color(color, where=f"class {name!r}: ")
            return replace(st, classes=tuple((n, c if n == name else v) for n, v in st.classes))
        self._change(f)

    def rename_class(self, name: str, new_name: str) -> None:
        """Rename a class; its labels and colour follow it."""
        def f(st):
            self._need_class(st, name)
            if not isinstance(new_name, str) or not new_name.strip():
                raise LabelError(f"a class name must be a non-empty string, got {new_name!r}")
            new = new_name.strip()
            if new == name:
                return st
            if new in dict(st.classes):
                raise LabelError(f"class {new!r} exists already; pick another name")
            return replace(st, classes=tuple((new if n == name else n, c) for n, c in st.classes),
                           labels=tuple(replace(l, cls=new) if l.cls == name else l for l in st.labels))
        self._change(f)

    def remove_class(self, name: str) -> None:
        """Remove a class and every label of it (undo brings both back)."""
        def f(st):
            self._need_class(st, name)
            return replace(st, classes=tuple(p for p in st.classes if p[0] != name),
                           labels=tuple(l for l in st.labels if l.cls != name))
        self._change(f)

    def add(self, geometry: Any, cls: str) -> int:
        """Add a label: ``(lon, lat)``, a list of ``(lon, lat)`` (polygon ring), a GeoJSON
        geometry dict or a shapely Point/Polygon.  Returns its id."""
        out = {}

        def f(st):
            self._need_class(st, cls)
            geom = _as_geometry(geometry, "label")
            if geom.geom_type == "Point":
                self._refuse_duplicate(st, geom.x, geom.y)
            lab = Label(st.next_id, cls, geom, _io.now())
            out["id"] = lab.id
            return replace(st, labels=st.labels + (lab,), next_id=st.next_id + 1)
        self._change(f)
        return out["id"]

    def add_point(self, lon: float, lat: float, cls: str) -> int:
        """Add a point label at lon/lat (GeoJSON order).  Returns its id."""
        return self.add((lon, lat), cls)

    def add_polygon(self, ring: Any, cls: str) -> int:
        """Add a polygon label (a ring of (lon, lat) pairs or a shapely Polygon).  Returns its id."""
        geom = _as_geometry(ring, "polygon label")
        if geom.geom_type == "Point":
            raise LabelError("add_polygon needs a polygon; use add_point for points")
        return self.add(geom, cls)

    def remove(self, label_id: int) -> None:
        """Remove one label."""
        def f(st):
            self._find(st, label_id)
            return replace(st, labels=tuple(l for l in st.labels if l.id != label_id))
        self._change(f)

    def move(self, label_id: int, lon: float, lat: float) -> None:
        """Move a point to lon/lat (a polygon is shifted so its centroid lands there)."""
        import shapely

        def f(st):
            lab = self._find(st, label_id)
            dest = _as_geometry((lon, lat), f"move of label {label_id}")
            if lab.kind == "point":
                self._refuse_duplicate(st, dest.x, dest.y, ignore=label_id)
                geom = dest
            else:
                c = lab.geometry.centroid
                geom = _io.check_geometry(
                    shapely.affinity.translate(lab.geometry, dest.x - c.x, dest.y - c.y), f"label {label_id}")
            return replace(st, labels=tuple(replace(l, geometry=geom) if l.id == label_id else l
                                            for l in st.labels))
        self._change(f)

    def relabel(self, label_id: int, cls: str) -> None:
        """Give a label another class."""
        def f(st):
            self._find(st, label_id)
            self._need_class(st, cls)
            return replace(st, labels=tuple(replace(l, cls=cls) if l.id == label_id else l for l in st.labels))
        self._change(f)

    def clear(self) -> None:
        """Remove every label (classes stay; undo brings the labels back)."""
        self._change(lambda st: replace(st, labels=()))

    def load(self, source: Any, *, format: str | None = None) -> int:
        """Add the labels of a file (GeoJSON, upstream JSON, CSV, vector) or a GeoDataFrame.

        New classes are added.  Refused as a whole (LabelError, store untouched) when the
        file is unreadable, holds a bad feature, is of another dataset version, or repeats a
        point already in the store.  One undo step.  Returns the number of labels added.
        """
        ls = _io.read_labels(source, format=format)
        before = len(self)
        src = ls.meta.get("path", "labels")
        if ls.meta.get("year") is not None:
            try:
                int(ls.meta["year"])
            except (TypeError, ValueError):
                raise LabelError(f"{src}: year {ls.meta['year']!r} is not a number") from None
        self._change(lambda st: self._merged(st, ls, src, keep_ids=False))
        self._adopt(ls, src)
        return len(self) - before

    def undo(self) -> bool:
        """Go back one change; False when there is nothing to undo."""
        with self._lock:
            if not self._undo:
                return False
            prev = self._undo[-1]
            self._write(prev)
            self._undo.pop()
            self._redo.append(self._state)
            self._state = prev
        self._notify("undo")
        return True

    def redo(self) -> bool:
        """Re-apply the last undone change; False when there is none."""
        with self._lock:
            if not self._redo:
                return False
            nxt = self._redo[-1]
            self._write(nxt)
            self._redo.pop()
            self._undo.append(self._state)
            self._state = nxt
        self._notify("redo")
        return True

    def save(self, path: str | os.PathLike | None = None) -> str:
        """Write the store now; with ``path`` (first save of an in-memory store, or a move)
        the store keeps saving there."""
        with self._lock:
            if path is not None:
                self._path = os.path.abspath(os.fspath(path))
            if self._path is None:
                raise LabelError("this store has no file yet: pass save(path)")
            self._write(self._state)
            return self._path

    def export(self, path: str | os.PathLike, *, format: str = "geojson") -> str:
        """Write a copy of the labels: ``"geojson"`` (ours) or ``"upstream"`` (the TESSERA
        notebook's JSON, points only).  The store keeps its own file."""
        if format == "geojson":
            obj = self.to_geojson()
        elif format == "upstream":
            obj = _io.to_upstream_json(self._records(self._state), dict(self._state.classes))
        else:
            raise LabelError(f"unknown export format {format!r}; use 'geojson' or 'upstream'")
        return _io.write_json_atomic(os.fspath(path), obj)

    def observe(self, callback: Callable[["LabelStore", str], None]) -> None:
        """Call ``callback(store, what)`` after every change (``what`` names it)."""
        self._observers.append(callback)

    def unobserve(self, callback: Callable) -> None:
        self._observers.remove(callback)

    # ----------------------------------------------------------------------- internals
    def _change(self, build: Callable[[_State], _State]) -> None:
        with self._lock:
            new = build(self._state)
            if new == self._state:
                return
            self._write(new)  # raises before anything in memory changes
            self._undo.append(self._state)
            del self._undo[:-_MAX_UNDO]
            self._redo.clear()
            self._state = new
        self._notify("change")

    def _notify(self, what: str) -> None:
        for cb in list(self._observers):
            cb(self, what)

    def _meta(self) -> dict:
        return {"dataset_version": self.dataset_version, "year": self.year, "created": self._created,
                "updated": self._updated}

    @staticmethod
    def _records(st: _State) -> list:
        return [_io.LabelRecord(l.geometry, l.cls, l.id, l.created) for l in st.labels]

    def _write(self, st: _State) -> None:
        if self._path is None:
            return
        updated = _io.now()
        meta = {**self._meta(), "updated": updated}
        obj = _io.to_geojson(self._records(st), dict(st.classes), meta)
        try:
            _io.write_json_atomic(self._path, obj)
        except OSError as err:
            raise LabelError(f"could not save labels to {self._path}: {err}; nothing was changed") from err
        self._updated = updated

    @staticmethod
    def _need_class(st: _State, name: str) -> None:
        if name not in dict(st.classes):
            known = [n for n, _ in st.classes]
            raise LabelError(f"unknown class {name!r}; known classes: {known or 'none'} (add it with add_class)")

    @staticmethod
    def _find(st: _State, label_id: int) -> Label:
        for lab in st.labels:
            if lab.id == label_id:
                return lab
        raise LabelError(f"no label with id {label_id!r}")

    @staticmethod
    def _refuse_duplicate(st: _State, lon: float, lat: float, ignore: int | None = None) -> None:
        for lab in st.labels:
            if lab.id != ignore and lab.kind == "point":
                if abs(lab.geometry.x - lon) < _SAME_POINT and abs(lab.geometry.y - lat) < _SAME_POINT:
                    raise LabelError(
                        f"a label is already at ({lon}, {lat}): id {lab.id}, class {lab.cls!r}; "
                        "move, relabel or remove it instead"
                    )

    @staticmethod
    def _with_class(st: _State, name: Any, color: Any, strict: bool = False) -> _State:
        if not isinstance(name, str) or not name.strip():
            raise LabelError(f"a class name must be a non-empty string, got {name!r}")
        name = name.strip()
        have = dict(st.classes)
        if name in have:
            if strict:
                raise LabelError(f"class {name!r} exists already (change its colour with set_color)")
            if color is None or have[name] is not None:
                return st
            return replace(st, classes=tuple((n, _io.check_color(color) if n == name else v)
                                             for n, v in st.classes))
        if len(have) >= 254:
            raise LabelError("at most 254 classes")
        if color is None:
            used = set(have.values())
            color = next((c for c in _io.PALETTE if c not in used), _io.PALETTE[len(have) % len(_io.PALETTE)])
        color = _io.check_color(color, where=f"class {name!r}: ")
        return replace(st, classes=st.classes + ((name, color),))

    def _merged(self, st: _State, ls: "_io.LabelSet", src: str, *, keep_ids: bool) -> _State:
        version = ls.meta.get("dataset_version")
        if version is not None and self.dataset_version is not None and str(version) != self.dataset_version:
            raise LabelError(
                f"{src} holds labels drawn on dataset version {version!r}, but this store is for "
                f"{self.dataset_version!r}; embeddings of different versions live in unrelated feature spaces"
            )
        for name, color in ls.classes.items():
            st = self._with_class(st, name, color)
        labels = list(st.labels)
        next_id = st.next_id
        used = {l.id for l in labels}
        seen = {_point_key(l.geometry): l for l in labels if l.kind == "point"}
        for i, r in enumerate(ls.records):
            if r.geometry.geom_type == "Point":
                key = _point_key(r.geometry)
                if key in seen:
                    other = seen[key]
                    raise LabelError(
                        f"{src}: label {i} ({r.cls!r} at {r.geometry.x}, {r.geometry.y}) repeats the point of "
                        f"{'label ' + str(other.id) if isinstance(other, Label) else 'an earlier label'} "
                        f"({other.cls!r}); remove the duplicate from the file"
                    )
                seen[key] = r
            lid = r.id if keep_ids and r.id is not None and r.id not in used else None
            if lid is None:
                lid = next_id
            next_id = max(next_id, lid + 1)
            used.add(lid)
            labels.append(Label(lid, r.cls, r.geometry, r.created or _io.now()))
        return replace(st, labels=tuple(labels), next_id=next_id)

    def _adopt(self, ls: "_io.LabelSet", src: str) -> None:
        """Take the file's dataset version and year where the store has none."""
        version, year = ls.meta.get("dataset_version"), ls.meta.get("year")
        if year is not None:
            try:
                year = int(year)
            except (TypeError, ValueError):
                raise LabelError(f"{src}: year {year!r} is not a number") from None
        if version is not None and self.dataset_version is None:
            self.dataset_version = str(version)
        if year is not None and self.year is None:
            self.year = year
