"""``LabelStore``: classes and labels in lon/lat, with undo/redo and a file that never
loses a click.

The store holds an immutable *state* (labels, classes, next id); every change builds a
new state, writes it to the store's GeoJSON file (temporary file + rename) and only
then makes it current, so the file and the memory agree after every call, and a
failed write leaves both as they were.  Undo and redo swap whole states.

No widget code lives here; the explorer observes changes with :meth:`LabelStore.observe`.
Methods may be called from a background thread: one lock serialises them.

One writer per file: a store bound to a file holds the file's lock (``path + ".lock"``,
created atomically; the explorer uses the same lock) from the moment it is bound until
:meth:`LabelStore.close`, so a second process that opens the file is refused.  A stale
lock (its process is gone) is taken over with a :class:`TesseraExploreWarning`.  Before
every write the store checks that the file is still what it last read or wrote; a change
made by someone else (another store of this process, an editor, a writer that ignored
the lock) is merged into the store's labels, or, where it cannot be merged, the write is
refused with :class:`LabelConflictError`.  It is never overwritten silently.

Symlinks are resolved when a path is bound: the store writes the file a link points to
(a rename over the link would replace the link and leave the shared file without the
labels) and locks that file, so two links to one file take one lock.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import socket
import tempfile
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from .._atomic import write_bytes
from ..exceptions import LabelConflictError, LabelError, TesseraExploreWarning
from ..io import labels as _io

__all__ = ["Label", "LabelStore"]

#: Two points closer than this (degrees, about 1 cm) are the same point.
_SAME_POINT = 1e-7
_MAX_UNDO = 1000


@dataclass(frozen=True)
class Label:
    """One label: ``id``, class name ``cls``, shapely ``geometry`` in lon/lat, and
    ``sample``: its training pixels as stored codes and scales
    (:class:`~tessera_explore.io.labels.LabelSample`), or None."""

    id: int
    cls: str
    geometry: Any
    created: str | None = None
    sample: Any = None

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


def _point_key(x: float, y: float) -> tuple:
    """The one definition of "the same point": two points whose lon/lat fall in one
    :data:`_SAME_POINT` cell share a key (used when adding, moving and merging labels)."""
    return (round(x / _SAME_POINT), round(y / _SAME_POINT))


def _is_number(v: Any) -> bool:
    """A real number, numpy scalars included (bools are not coordinates)."""
    import numpy as np

    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _label_key(lab: Label) -> tuple:
    """What a label is, independent of its id: class, kind and rounded coordinates."""
    import shapely

    xy = shapely.get_coordinates(lab.geometry)
    return (lab.cls, lab.kind, tuple(_point_key(x, y) for x, y in xy))


# ----------------------------------------------------------------------------- file locks
_HOST = socket.gethostname()
_HELD: dict[str, int] = {}  # lock file -> stores of this process bound to its label file
_HELD_GUARD = threading.Lock()


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _read_lock(lock: str) -> tuple[bytes | None, dict]:
    try:
        with open(lock, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None, {}
    except OSError:
        return b"", {}
    try:
        held = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        held = {}
    return raw, held if isinstance(held, dict) else {}


def _create_lock(lock: str) -> bool:
    """Create ``lock`` with its content in one step (hard link of a written temporary);
    False when it exists already."""
    content = json.dumps({"pid": os.getpid(), "host": _HOST, "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
                          "owner": "tessera_explore.LabelStore", "token": uuid.uuid4().hex}).encode()
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(lock) + ".", suffix=".tmp", dir=os.path.dirname(lock))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, lock)
            return True
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive create instead
            try:
                fd2 = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd2, "wb") as f:
                f.write(content)
            return True
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def _set_aside(lock: str, seen: bytes | None) -> None:
    """Remove a stale ``lock`` whose content was ``seen``, unless it changed meanwhile
    (then someone took it first, and it is put back)."""
    aside = f"{lock}.{os.getpid()}.{threading.get_ident()}.stale"
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return
    with open(aside, "rb") as f:
        now = f.read()
    if now != seen:
        try:
            os.link(aside, lock)
        except FileExistsError:
            pass
    os.unlink(aside)


def _acquire(path: str) -> str | None:
    """Take the lock of label file ``path`` for this process; return a notice when a
    stale lock was taken over.  Raises LabelConflictError when a live process holds it."""
    lock = path + ".lock"
    folder = os.path.dirname(path) or "."
    with _HELD_GUARD:
        if lock in _HELD:
            _HELD[lock] += 1
            return None
        if not os.path.isdir(folder):
            raise LabelError(f"cannot keep labels in {path}: the folder {folder} does not exist")
        note = None
        for _ in range(10):
            try:
                if _create_lock(lock):
                    break
            except OSError as err:
                raise LabelError(f"cannot lock {path} ({lock}): {err}") from err
            raw, held = _read_lock(lock)
            if raw is None:
                continue  # removed meanwhile: try again
            try:
                pid = int(held.get("pid", -1))
            except (TypeError, ValueError):
                pid = -1
            host = held.get("host")
            if host == _HOST and pid == os.getpid():
                break  # taken by other code of this process for this file (the explorer): shared
            if host not in (None, _HOST):
                raise LabelConflictError(
                    f"{path} is open on another computer ({host}, process {pid}, since {held.get('since', '?')}); "
                    "two writers would overwrite each other's labels. Close it there, or if that session is "
                    f"gone, delete {lock}.")
            if pid > 0 and pid_alive(pid):
                raise LabelConflictError(
                    f"{path} is open in another process (process {pid}, since {held.get('since', '?')}); two "
                    "writers would overwrite each other's labels. Close it there (LabelStore.close() or the "
                    "explorer's close()), or read it without editing with tessera_explore.io.labels.read_labels. "
                    f"If that process is not editing labels any more, delete {lock}.")
            _set_aside(lock, raw)
            note = f"took over {path} from process {pid}, which did not close it (its lock {lock} was stale)"
        else:
            raise LabelConflictError(f"could not take the lock {lock} of {path}: others keep taking it")
        _HELD[lock] = 1
    if note:
        warnings.warn(note, TesseraExploreWarning, stacklevel=4)
    return note


def _release(lock: str) -> None:
    with _HELD_GUARD:
        n = _HELD.get(lock, 0) - 1
        if n > 0:
            _HELD[lock] = n
            return
        _HELD.pop(lock, None)
        _, held = _read_lock(lock)
        if held.get("host") == _HOST and held.get("pid") == os.getpid():
            try:
                os.unlink(lock)
            except FileNotFoundError:
                pass


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
        if len(seq) == 2 and all(_is_number(v) for v in seq):
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
    dataset_variant : the variant of that version (e.g. ``"dclimate"``); files drawn on
        another variant of the same version are refused too (variants are separate runs).

    Every mutating method raises :class:`~tessera_explore.exceptions.LabelError` on bad
    input and then leaves the labels exactly as they were.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, classes: Any = None,
                 dataset_version: str | None = None, year: int | None = None, dataset_variant: str | None = None):
        path = _io.real_path(path) if path is not None else None
        self._path: str | None = None
        self.dataset_version = None if dataset_version is None else str(dataset_version)
        self.dataset_variant = None if dataset_variant is None else str(dataset_variant)
        try:
            self.year = None if year is None else int(year)
        except (TypeError, ValueError):
            raise LabelError(f"year must be a whole number, got {year!r}") from None
        self._lock = threading.RLock()
        self._observers: list[Callable] = []
        t = _io.now()
        self._created, self._updated = t, t
        self._undo: list[_State] = []
        self._redo: list[_State] = []
        self._state = _State((), (), 1)
        self._closed = False
        self._release_lock: Callable[[], None] | None = None
        self.lock_notice: str | None = None
        # the file as this store last read or wrote it: its digest and its labels
        self._disk_digest: str | None = None
        self._disk_state = _State((), (), 1)
        # a path is bound last: LabelStore.open builds an in-memory store and binds it itself
        if path is not None:
            if os.path.exists(path):
                raise LabelError(
                    f"{path} already exists; continue it with LabelStore.open({path!r}) "
                    "or choose another path (a new store never overwrites a label file)"
                )
            self._bind(path)
            if os.path.exists(path):  # appeared while the lock was taken
                self.close()
                raise LabelError(f"{path} was created by someone else just now; open it with LabelStore.open")
        if classes:
            items = classes.items() if isinstance(classes, dict) else ((c, None) for c in classes)
            st = self._state
            try:
                for name, color in items:
                    st = self._with_class(st, name, color)
                if self._path is not None:
                    st = self._write(st)
            except BaseException:
                self.close()
                raise
            self._state = st

    def _bind(self, path: str) -> None:
        """Make ``path`` this store's file: take its lock (released by close(), or when
        the store is garbage-collected or the process exits)."""
        if path == self._path:
            return
        self.lock_notice = _acquire(path)
        old = self._release_lock
        self._release_lock = weakref.finalize(self, _release, path + ".lock")
        self._path = path
        self._disk_digest, self._disk_state = None, _State((), (), 1)
        if old is not None:
            old()

    # ----------------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: str | os.PathLike, *, dataset_version: str | None = None, year: int | None = None,
             create: bool = False, dataset_variant: str | None = None) -> LabelStore:
        """Open a label file and keep saving to it.

        Any format :func:`tessera_explore.io.labels.read_labels` reads is accepted; a file
        that is not our GeoJSON is converted and saved to ``path`` with a ``.geojson``
        extension beside it.  ``dataset_version`` refuses a file of another version.
        ``create=True`` starts an empty store when ``path`` does not exist.

        The store takes the file's lock until :meth:`close`: a file open in another live
        process is refused with :class:`LabelConflictError`; a stale lock is taken over
        with a warning (also in :attr:`lock_notice`).
        """
        path = _io.real_path(path)
        if not os.path.exists(path):
            if create:
                return cls(path, dataset_version=dataset_version, year=year, dataset_variant=dataset_variant)
            raise LabelError(f"label file not found: {path} (pass create=True to start a new one)")
        store = cls(dataset_version=dataset_version, year=year, dataset_variant=dataset_variant)  # in memory
        ls = _io.read_labels(path)
        target = path
        if ls.meta.get("kind") != "geojson":
            target = os.path.splitext(path)[0] + ".geojson"
            if os.path.exists(target):
                raise LabelError(f"{path} is not GeoJSON and {target} already exists; open that instead")
        store._bind(target)
        try:
            if target == path:
                digest, ls = store._read_file()  # again, under the lock: what the store starts from
            store._created = ls.meta.get("created") or _io.now()
            store._updated = ls.meta.get("updated") or store._created
            store._state = store._merged(store._state, ls, path, keep_ids=True)
            store._adopt(ls, path)
            if target != path:
                store._state = store._write(store._state)
            else:
                store._disk_digest, store._disk_state = digest, store._state
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def from_file(cls, source: Any, path: str | os.PathLike | None = None, *, format: str | None = None,
                  dataset_version: str | None = None, year: int | None = None,
                  dataset_variant: str | None = None) -> LabelStore:
        """A new store holding the labels of ``source`` (any readable format), saved to
        ``path`` if given."""
        store = cls(path, dataset_version=dataset_version, year=year, dataset_variant=dataset_variant)
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
    def closed(self) -> bool:
        """True after :meth:`close`: the labels can still be read, never changed."""
        return self._closed

    def close(self) -> None:
        """Release the label file: later changes are refused and nothing more is written.

        The file keeps every saved label; :meth:`LabelStore.open` continues it."""
        with self._lock:
            self._closed = True
            if self._release_lock is not None:
                self._release_lock()

    def __enter__(self) -> LabelStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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

    def add(self, geometry: Any, cls: str, *, sample: Any = None) -> int:
        """Add a label: ``(lon, lat)``, a list of ``(lon, lat)`` (polygon ring), a GeoJSON
        geometry dict or a shapely Point/Polygon.  Returns its id.

        ``sample``: the label's training pixels
        (:func:`~tessera_explore.classify.samples.label_sample`), kept in the file so the
        label trains a classifier anywhere, with no area open."""
        out = {}
        if sample is not None:
            self._check_sample(sample, "label")

        def f(st):
            self._need_class(st, cls)
            geom = _as_geometry(geometry, "label")
            if geom.geom_type == "Point":
                self._refuse_duplicate(st, geom.x, geom.y)
            lab = Label(st.next_id, cls, geom, _io.now(), sample)
            out["id"] = lab.id
            return replace(st, labels=st.labels + (lab,), next_id=st.next_id + 1)
        self._change(f)
        return out["id"]

    def add_point(self, lon: float, lat: float, cls: str, *, sample: Any = None) -> int:
        """Add a point label at lon/lat (GeoJSON order), with its stored ``sample`` if
        given (see :meth:`add`).  Returns its id."""
        return self.add((lon, lat), cls, sample=sample)

    def add_polygon(self, ring: Any, cls: str, *, sample: Any = None) -> int:
        """Add a polygon label (a ring of (lon, lat) pairs or a shapely Polygon), with its
        stored ``sample`` if given (see :meth:`add`).  Returns its id."""
        geom = _as_geometry(ring, "polygon label")
        if geom.geom_type == "Point":
            raise LabelError("add_polygon needs a polygon; use add_point for points")
        return self.add(geom, cls, sample=sample)

    def attach_sample(self, label_id: int, sample: Any) -> None:
        """Keep ``sample`` (the label's training pixels, from
        :func:`~tessera_explore.classify.samples.label_sample`) with label ``label_id``;
        None drops the stored pixels.  One undo step."""
        self.attach_samples({label_id: sample})

    def attach_samples(self, samples: dict) -> None:
        """:meth:`attach_sample` for many labels (``{label_id: sample or None}``) in one
        undo step; refused as a whole when one id or sample is wrong."""
        if not isinstance(samples, dict):
            raise LabelError(f"attach_samples takes a dict label id -> sample, got {type(samples).__name__}")
        for lid, smp in samples.items():
            if smp is not None:
                self._check_sample(smp, f"label {lid}")

        def f(st):
            for lid in samples:
                self._find(st, lid)
            return replace(st, labels=tuple(replace(l, sample=samples[l.id]) if l.id in samples else l
                                            for l in st.labels))
        self._change(f)

    def remove(self, label_id: int) -> None:
        """Remove one label."""
        def f(st):
            self._find(st, label_id)
            return replace(st, labels=tuple(l for l in st.labels if l.id != label_id))
        self._change(f)

    def move(self, label_id: int, lon: float, lat: float) -> None:
        """Move a point to lon/lat (a polygon is shifted so its centroid lands there).

        The label's stored pixels (its ``sample``) are dropped: they were the pixels under
        its old place."""
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
            # the pixels under the label change: its stored ones no longer describe it
            return replace(st, labels=tuple(replace(l, geometry=geom, sample=None) if l.id == label_id else l
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
            self._check_open()
            if not self._undo:
                return False
            target = self._undo[-1]
            written = self._write(target, history=True)
            self._undo.pop()
            self._redo.append(self._state)
            self._state = written
        self._notify("undo")
        return True

    def redo(self) -> bool:
        """Re-apply the last undone change; False when there is none."""
        with self._lock:
            self._check_open()
            if not self._redo:
                return False
            target = self._redo[-1]
            written = self._write(target, history=True)
            self._redo.pop()
            self._undo.append(self._state)
            self._state = written
        self._notify("redo")
        return True

    def save(self, path: str | os.PathLike | None = None) -> str:
        """Write the store now; with ``path`` (first save of an in-memory store, or a move)
        the store keeps saving there (and holds that file's lock instead)."""
        with self._lock:
            self._check_open()
            if path is not None:
                new = _io.real_path(path)
                if new != self._path:
                    if os.path.exists(new):
                        raise LabelError(f"{new} already exists; a store never overwrites another label file "
                                         "(open it with LabelStore.open, or choose another path)")
                    self._bind(new)
            if self._path is None:
                raise LabelError("this store has no file yet: pass save(path)")
            self._state = self._write(self._state, history=True)
            return self._path

    def refresh(self) -> bool:
        """Take in changes made to the file by someone else since this store last read or
        wrote it (merged as on every write); True when there were any."""
        with self._lock:
            self._check_open()
            ext = self._external()
            if ext is None:
                return False
            digest, base, theirs = ext
            self._state = self._rebase(self._state, base, theirs)
            self._rebase_history(base, theirs)
            self._disk_digest, self._disk_state = digest, theirs
        self._notify("refresh")
        return True

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

    def observe(self, callback: Callable[[LabelStore, str], None]) -> None:
        """Call ``callback(store, what)`` after every change (``what`` names it)."""
        self._observers.append(callback)

    def unobserve(self, callback: Callable) -> None:
        self._observers.remove(callback)

    # ----------------------------------------------------------------------- internals
    def _check_open(self) -> None:
        if self._closed:
            raise LabelError(f"this label store{' of ' + self._path if self._path else ''} is closed; "
                             "nothing is changed or written (open the file again with LabelStore.open)")

    def _change(self, build: Callable[[_State], _State]) -> None:
        with self._lock:
            self._check_open()
            new = build(self._state)
            if new == self._state:
                return
            prev = self._state
            ext = self._external() if self._path is not None else None
            if ext is not None:  # someone else changed the file: build on their labels too
                digest, base, theirs = ext
                prev = self._rebase(prev, base, theirs)
                new = self._rebase(new, base, theirs)
            written = self._write(new, checked=ext)  # raises before anything in memory changes
            if ext is not None:
                self._rebase_history(ext[1], ext[2])
            self._undo.append(prev)
            del self._undo[:-_MAX_UNDO]
            self._redo.clear()
            self._state = written
        self._notify("change")

    def _notify(self, what: str) -> None:
        """Tell the observers; one that raises is reported as a warning, never as a
        failure of the change (which is saved already)."""
        for cb in list(self._observers):
            try:
                cb(self, what)
            except Exception as err:  # reported below; the change stays saved
                warnings.warn(
                    f"a label store observer ({getattr(cb, '__qualname__', cb)!r}) raised {type(err).__name__}: "
                    f"{err}; the {what} itself was saved", TesseraExploreWarning, stacklevel=3)

    def _meta(self) -> dict:
        return {"dataset_version": self.dataset_version, "dataset_variant": self.dataset_variant, "year": self.year,
                "created": self._created,
                "updated": self._updated}

    @staticmethod
    def _records(st: _State) -> list:
        return [_io.LabelRecord(l.geometry, l.cls, l.id, l.created, l.sample) for l in st.labels]

    # -- the file ------------------------------------------------------------------------
    def _read_file(self) -> tuple[str, _io.LabelSet]:
        """(digest, labels) of the store's GeoJSON file as it is now."""
        try:
            with open(self._path, "rb") as f:
                data = f.read()
        except OSError as err:
            raise LabelError(f"cannot read label file {self._path}: {err}") from err
        digest = hashlib.sha256(data).hexdigest()
        obj = _io.parse_json(data, self._path)
        if not isinstance(obj, dict):
            raise LabelError(f"{self._path}: expected a JSON object (GeoJSON FeatureCollection)")
        ls = _io.read_json_object(obj, self._path)
        ls.meta["path"] = self._path
        return digest, ls

    def _external(self) -> tuple[str, _State, _State] | None:
        """``(digest, base, theirs)`` when the file differs from what this store last read
        or wrote (``base``), else None.  Raises LabelConflictError when the file changed
        into something that cannot be merged."""
        try:
            with open(self._path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        except FileNotFoundError:
            if self._disk_digest is not None:
                warnings.warn(f"{self._path} was deleted by someone else; this store writes it again with its "
                              f"{len(self._state.labels)} labels", TesseraExploreWarning, stacklevel=4)
                self._disk_digest, self._disk_state = None, _State((), (), 1)
            return None
        except OSError as err:
            raise LabelError(f"cannot read {self._path} to check it before writing: {err}; nothing was written") from err
        if digest == self._disk_digest:
            return None
        try:
            digest, ls = self._read_file()
            theirs = self._merged(_State((), (), 1), ls, self._path, keep_ids=True)
        except LabelError as err:
            raise LabelConflictError(
                f"{self._path} was changed by someone else since this store last saved it, and cannot be read "
                f"now ({err}); nothing was written, so it is not overwritten. Fix or move that file, then "
                "save() again") from err
        version = ls.meta.get("dataset_version")
        if not self._same_dataset(ls.meta):
            raise LabelConflictError(
                f"{self._path} was rewritten by someone else with labels of dataset version {version!r}; this "
                f"store is for {self.dataset_version!r}; nothing was written")
        return digest, self._disk_state, theirs

    def _rebase(self, ours: _State, base: _State, theirs: _State) -> _State:
        """``ours`` with the changes from ``base`` to ``theirs`` (made by someone else)
        applied: labels they added or removed (by content), classes they added, colours
        they changed.  A point both added at one place with different classes is a
        LabelConflictError."""
        bkeys = {_label_key(l) for l in base.labels}
        tlabels = {_label_key(l): l for l in theirs.labels}
        removed = bkeys - set(tlabels)
        added = [l for k, l in tlabels.items() if k not in bkeys]
        labels = [l for l in ours.labels if _label_key(l) not in removed]
        # stored vectors attached (or dropped) by them on a label both have: taken, unless
        # this store changed that label's vectors too (then ours stay)
        bsample = {_label_key(l): l.sample for l in base.labels}
        for j, lab in enumerate(labels):
            k = _label_key(lab)
            if k in bsample and k in tlabels and tlabels[k].sample != bsample[k] and lab.sample == bsample[k]:
                labels[j] = replace(lab, sample=tlabels[k].sample)
        keys = {_label_key(l) for l in labels}
        points = {_point_key(l.geometry.x, l.geometry.y): l for l in labels if l.kind == "point"}
        used = {l.id for l in labels}
        next_id = max(ours.next_id, theirs.next_id)
        for lab in added:
            if _label_key(lab) in keys:
                continue  # both added the same label
            if lab.kind == "point" and _point_key(lab.geometry.x, lab.geometry.y) in points:
                other = points[_point_key(lab.geometry.x, lab.geometry.y)]
                raise LabelConflictError(
                    f"{self._path}: someone else labelled ({lab.lon}, {lab.lat}) as {lab.cls!r} while this store "
                    f"has it as {other.cls!r} (label {other.id}); nothing was written. Reopen the file to see "
                    "their labels and decide")
            lid = lab.id if lab.id not in used else next_id
            used.add(lid)
            next_id = max(next_id, lid + 1)
            labels.append(lab if lid == lab.id else replace(lab, id=lid))
            keys.add(_label_key(lab))
        bcol, tcol = dict(base.classes), dict(theirs.classes)
        classes = []
        for name, color in ours.classes:
            if name in bcol and name not in tcol and not any(l.cls == name for l in labels):
                continue  # removed by them, and no label of it is left
            if name in bcol and name in tcol and color == bcol[name] and tcol[name] != color:
                color = tcol[name]  # recoloured by them
            classes.append((name, color))
        have = {n for n, _ in classes}
        for name, color in theirs.classes:
            if name not in have and (name not in bcol or any(l.cls == name for l in labels)):
                classes.append((name, color))
                have.add(name)
        return _State(tuple(labels), tuple(classes), next_id)

    def _rebase_history(self, base: _State, theirs: _State) -> None:
        """Carry someone else's changes into the undo and redo history, so that undo never
        takes their labels away; entries that cannot take them are dropped."""
        def carry(states: list, newest_first: bool) -> list:
            out = []
            order = reversed(states) if newest_first else iter(states)
            for st in order:
                try:
                    out.append(self._rebase(st, base, theirs))
                except LabelConflictError:
                    break  # this step and everything beyond it cannot be reached any more
            return list(reversed(out)) if newest_first else out
        self._undo = carry(self._undo, newest_first=True)
        self._redo = carry(self._redo, newest_first=True)

    def _write(self, st: _State, *, checked: Any = False, history: bool = False) -> _State:
        """Write ``st`` (merged with changes made on disk by someone else, unless
        ``checked`` says that was done) and return the state written."""
        if self._path is None:
            return st
        if checked is False:
            ext = self._external()
            if ext is not None:
                st = self._rebase(st, ext[1], ext[2])
                if history:
                    self._rebase_history(ext[1], ext[2])
                    self._state = self._rebase(self._state, ext[1], ext[2])
        updated = _io.now()
        meta = {**self._meta(), "updated": updated}
        obj = _io.to_geojson(self._records(st), dict(st.classes), meta)
        data = json.dumps(obj, indent=1).encode("utf-8")
        try:
            write_bytes(self._path, data)
        except OSError as err:
            raise LabelError(f"could not save labels to {self._path}: {err}; nothing was changed") from err
        self._updated = updated
        self._disk_digest, self._disk_state = hashlib.sha256(data).hexdigest(), st
        return st

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
        key = _point_key(lon, lat)
        for lab in st.labels:
            if lab.id != ignore and lab.kind == "point":
                if _point_key(lab.geometry.x, lab.geometry.y) == key:
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

    def _check_sample(self, sample: Any, where: str) -> None:
        """Refuse what is not a LabelSample, or one of another dataset than the store's."""
        if not isinstance(sample, _io.LabelSample):
            raise LabelError(f"{where}: a stored sample must be a LabelSample (from label_sample), got "
                             f"{type(sample).__name__}")
        if not _io.same_sample_dataset(sample, self.dataset_version, self.dataset_variant):
            raise LabelError(
                f"{where}: the stored pixels are of dataset {sample.dataset_version!r} (variant "
                f"{sample.dataset_variant!r}), this store's labels of {self.dataset_version!r} (variant "
                f"{self.dataset_variant!r}); versions and variants never mix")

    def _same_dataset(self, meta: dict) -> bool:
        """Whether a file's recorded dataset is this store's (version; variant where both say)."""
        version, variant = meta.get("dataset_version"), meta.get("dataset_variant")
        if version is not None and self.dataset_version is not None and str(version) != self.dataset_version:
            return False
        return variant is None or self.dataset_variant is None or str(variant) == self.dataset_variant

    def _merged(self, st: _State, ls: _io.LabelSet, src: str, *, keep_ids: bool) -> _State:
        version = ls.meta.get("dataset_version")
        if not self._same_dataset(ls.meta):
            raise LabelError(
                f"{src} holds labels drawn on dataset version {version!r} (variant "
                f"{ls.meta.get('dataset_variant')!r}), but this store is for {self.dataset_version!r} (variant "
                f"{self.dataset_variant!r}); embeddings of different datasets live in unrelated feature spaces"
            )
        for name, color in ls.classes.items():
            st = self._with_class(st, name, color)
        labels = list(st.labels)
        next_id = st.next_id
        used = {l.id for l in labels}
        seen = {_point_key(l.geometry.x, l.geometry.y): l for l in labels if l.kind == "point"}
        for i, r in enumerate(ls.records):
            if r.geometry.geom_type == "Point":
                key = _point_key(r.geometry.x, r.geometry.y)
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
            if r.sample is not None:
                self._check_sample(r.sample, f"{src}: label {i}")
            labels.append(Label(lid, r.cls, r.geometry, r.created or _io.now(), r.sample))
        return replace(st, labels=tuple(labels), next_id=next_id)

    def _adopt(self, ls: _io.LabelSet, src: str) -> None:
        """Take the file's dataset version and year where the store has none."""
        version, year = ls.meta.get("dataset_version"), ls.meta.get("year")
        if year is not None:
            try:
                year = int(year)
            except (TypeError, ValueError):
                raise LabelError(f"{src}: year {year!r} is not a number") from None
        if version is not None and self.dataset_version is None:
            self.dataset_version = str(version)
        variant = ls.meta.get("dataset_variant")
        if variant is not None and self.dataset_variant is None:
            self.dataset_variant = str(variant)
        if year is not None and self.year is None:
            self.year = year
