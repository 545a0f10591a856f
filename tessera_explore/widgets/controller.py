"""Explorer controller: every computation behind the app, off the main thread.

The controller owns the data (embeddings per year, their in-memory int8 form, the
projection, the label store, the latest classifier and maps) and a job queue with one
worker thread (:class:`~tessera_explore.widgets.jobs.JobQueue`).  Views call its methods
from widget callbacks (on the kernel's main thread); the methods check input at once,
change the labels (saved at once by the store), and queue the heavy part.  Queued work
of one kind coalesces: ten fast clicks retrain once or twice, never ten times.  Results
reach the views as events (:meth:`on`; views never wait on a result), progress and
messages through the :class:`~tessera_explore.widgets.state.ExplorerState` traits.

Nothing here imports ipywidgets, ipyleaflet or holoviews: the controller runs (and is
benchmarked) in plain Python.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np
import xarray as xr

from ..exceptions import ArgumentError, LabelError, TesseraExploreError
from .jobs import JobQueue
from .reproject import shown_pixels
from .state import ExplorerState

__all__ = ["ExplorerController", "LAYERS"]

log = logging.getLogger(__name__)

#: map layers the controller produces, bottom to top
LAYERS = ("false_colour", "live", "change", "classes", "confidence", "trust", "similarity", "selection")

SELECTION_COLOR = "#ff00ff"

#: pixels of one label (a drawn polygon) the classifier trains on: kNN's prediction time
#: grows with the training pixels, and a 1 km polygon holds 10,000 of them
MAX_PER_LABEL = 200


#: state traits the controller acts on
_CHOICES = ("model", "year", "confidence_threshold", "show_confidence", "similarity_threshold", "mode",
            "change_from")


class ExplorerClosedError(LabelError):
    """An action on an explorer after its ``close()``."""


def _predict_pixels(area, clf, flat: np.ndarray) -> xr.Dataset:
    """:func:`~tessera_explore.classify.predict_map` of the pixels ``flat`` (row-major
    indices) of a prepared area only; the others are no data (class 255, confidence NaN).
    ``attrs["partial"]`` says so."""
    from ..classify import predict_map
    from ..classify.area import PreparedArea, _Grid

    g = area.grid
    row = _Grid(np.arange(flat.size, dtype=float), np.zeros(1), g.crs, g.transform, g.attrs, g.year)
    sub = PreparedArea(row, area.codes[flat], area.scales[flat], area.inv_norm[flat], area.valid[flat])
    part = predict_map(sub, clf)
    h, w = area.shape
    cls = np.full(h * w, 255, np.uint8)
    conf = np.full(h * w, np.nan, np.float32)
    cls[flat] = part["class"].values.ravel()
    conf[flat] = part["confidence"].values.ravel()
    coords = {"y": g.y, "x": g.x}
    out = xr.Dataset({"class": (("y", "x"), cls.reshape(h, w), part["class"].attrs),
                      "confidence": (("y", "x"), conf.reshape(h, w), part["confidence"].attrs)},
                     coords=coords, attrs={**part.attrs, "partial": True})
    out["class"].rio.write_nodata(255, encoded=False, inplace=True)
    out["confidence"].rio.write_nodata(np.nan, encoded=False, inplace=True)
    return out.rio.write_crs(g.crs)


def _change_classes(change_map: xr.Dataset) -> tuple[list[str], list[str]]:
    """The class names and colours of a change map (its attributes, else those of
    :func:`~tessera_explore.classify.change`)."""
    from ..classify.change import CHANGE_CLASSES, CHANGE_COLORS

    attrs = {**change_map.attrs, **change_map["change_class"].attrs}
    names = list(attrs.get("classes", CHANGE_CLASSES))
    colors = list(attrs.get("colors", CHANGE_COLORS))[: len(names)]
    return names, colors


def _n(k: int, noun: str) -> str:
    """``1 label``, ``2 labels``."""
    return f"{k:,} {noun}{'' if k == 1 else 's'}"


def _where(lon: float, lat: float) -> str:
    """A clicked place for messages: 4 decimals of a degree (about 10 m, one pixel)."""
    return f"({lon:.4f}, {lat:.4f})"


class ExplorerController:
    """Compute for one explorer session.

    Parameters
    ----------
    state : the app's :class:`ExplorerState` (read for choices, written with results).
    arrays : ``{year: embeddings DataArray}`` on one grid.
    year : the year shown at start (default ``state.year`` if open, else the first).
    store : the :class:`~tessera_explore.LabelStore` that holds the labels (saved on
        every change).
    label_year : year the labels are drawn on and the classifier is trained on (default
        the year shown first); class maps of other years apply that classifier.
    projection_sample : pixels in the PCA fitting sample.
    live_model, live_stac, live_cache : what :meth:`embed_live` passes to
        :func:`~tessera_explore.embed_area` (no model: live embedding is off).
    export_dir : folder of :meth:`export` (default beside the label file).
    full_depth : a :class:`~tessera_explore.widgets.depth.FullDepth` when ``arrays`` are a
        store's 16-band prefix: full depth is read in the background and replaces them
        (``widgets/depth.py``); None explores the arrays as they are.
    """

    def __init__(self, state: ExplorerState, arrays: dict, store: Any, *, year: int | None = None,
                 label_year: int | None = None,
                 projection_sample: int = 100_000, max_pixels: int = 1_000_000, live_model: Any = None,
                 live_stac: Any = "planetary-computer", live_cache: Any = None, export_dir: str | None = None,
                 full_depth: Any = None):
        from .._schema import check_compatible, validate
        from ..classify.area import grid_of

        if not arrays:
            raise ArgumentError("the explorer needs at least one embeddings array")
        self.arrays = {int(y): validate(a, name=f"embeddings of {y}") for y, a in arrays.items()}
        first = next(iter(self.arrays.values()))
        self.grid = grid_of(first)
        for y, a in self.arrays.items():
            check_compatible(first, a)
            if not grid_of(a).same_as(self.grid):
                raise ArgumentError(f"the embeddings of {y} are on another grid than those of {next(iter(self.arrays))}; "
                                 "open every year with the same bbox")
        self.state = state
        self.store = store
        years = sorted(self.arrays)
        state.years = years
        if year is not None:
            if int(year) not in self.arrays:
                raise ArgumentError(f"year {year} is not one of the open years {years}")
            state.year = int(year)
        elif state.year not in self.arrays:
            state.year = next(iter(self.arrays))
        self.label_year = int(label_year) if label_year is not None else int(state.year)
        if self.label_year not in self.arrays:
            raise ArgumentError(f"label_year {self.label_year} is not one of the open years {years}")
        self.scatter_year = self.label_year  # the year whose points the scatter shows
        self.projection_sample = int(projection_sample)
        self.max_pixels = int(max_pixels)
        self.live_model = live_model
        self.live_stac = live_stac
        self.live_cache = live_cache
        self.export_dir = export_dir
        self.prepared: dict[int, Any] = {}
        self.components: dict[int, xr.DataArray] = {}
        self.rgb: dict[int, xr.DataArray] = {}
        self.projection = None
        self.classifier = None
        self.prediction: xr.Dataset | None = None
        self._prediction_inputs: tuple | None = None  # (area, classifier) while only shown pixels are done
        self._pred_lock = threading.RLock()
        self._shown: dict[int, np.ndarray | None] = {}  # year -> pixels the class image shows
        self.prediction_year: int | None = None
        self.similarity_map: xr.DataArray | None = None
        self.similarity_query: tuple[float, float] | None = None
        self.change_map: xr.Dataset | None = None
        self.change_years: tuple[int, int] | None = None
        self.selection: np.ndarray | None = None
        self.live: xr.DataArray | None = None
        self.evaluation = None

        self._listeners: dict[str, list[Callable]] = {}
        self.jobs = JobQueue(on_busy=self._set_busy, on_start=self._job_started, on_finish=self._job_finished,
                             on_error=self._report)
        self._closed = False
        self._store_cb = lambda store, what: self._labels_changed(what)
        store.observe(self._store_cb)
        self._sync_labels()
        state.observe(self._on_choice, names=list(_CHOICES))
        #: what a map click does, by mode
        self._click_handlers: dict[str, Callable[[float, float, tuple, str], str]] = {
            "label": self._click_label, "similarity": self._click_similarity, "draw": self._click_draw,
            "live": self._click_live, "change": self._click_change}
        # guided labelling, validation, trust, learning curve, UMAP and live embedding live in their own
        # modules; the controller only delegates to them
        from .depth import DepthSwitch
        from .guided import Guide
        from .live import LiveEmbedder
        from .projection import ProjectionSwitch
        from .quality import Quality

        self.guide = Guide(self)
        self.live_embedder = LiveEmbedder(self)
        self.quality = Quality(self)
        self.umap = ProjectionSwitch(self)
        self.depth = DepthSwitch(self, full_depth)

    # ------------------------------------------------------------------ events
    def on(self, event: str, callback: Callable) -> None:
        """Call ``callback(*args)`` on ``event``: ``"layer"`` (name, OverlayImage or None),
        ``"marker"`` (x, y in the scatter, or None), ``"labels"`` (the store), ``"trained"``
        (the new classifier, or None when it was dropped), ``"walk"`` (the guided walk, or
        None), ``"scatter"`` (year, other components of the shown year: UMAP ready, or back
        to PCA), ``"components"`` (year, components of a newly shown year).  Callbacks may
        run on the worker thread."""
        self._listeners.setdefault(event, []).append(callback)

    def _emit(self, event: str, *args) -> None:
        for cb in list(self._listeners.get(event, ())):
            try:
                cb(*args)
            except Exception as err:  # a view failing must not kill the worker; show it
                log.exception("explorer view callback for %s failed", event)
                self._report(err, f"updating the view ({event})")

    # ------------------------------------------------------------------ the queue (widgets/jobs.py)
    def submit(self, key: str, fn: Callable[[], Any], title: str, *, quiet: bool = False,
               supersedes: tuple = ()) -> Future:
        """Queue ``fn`` on the worker thread (:meth:`JobQueue.submit
        <tessera_explore.widgets.jobs.JobQueue.submit>`: a waiting job of the same ``key`` is
        replaced, those of the keys in ``supersedes`` dropped; a ``quiet`` job leaves the
        status line and progress bar alone)."""
        self._check_open()
        return self.jobs.submit(key, fn, title, quiet=quiet, supersedes=supersedes)

    def _job_started(self, title: str) -> None:
        self.state.status = f"{title}..."
        self.state.progress = 0.0

    def _job_finished(self, title: str) -> None:
        self.state.progress = 1.0

    def _set_busy(self, busy: bool) -> None:
        self.state.busy = busy

    def _report(self, err: BaseException, doing: str) -> None:
        name = type(err).__name__
        self.state.error = f"{doing} failed: {name}: {err}"
        self.state.status = f"{doing} failed (see the message above)"

    def wait(self, timeout: float | None = 120.0) -> None:
        """Block until every queued job (and any job they queued) has finished."""
        self.jobs.wait(timeout)

    def _check_open(self) -> None:
        if self._closed:
            raise ExplorerClosedError("this explorer is closed: its labels can be read, not changed "
                                      "(open the label file in a new explorer to go on)")

    def close(self) -> None:
        """Stop the worker thread and let go of the label store."""
        if self._closed:
            return
        self._closed = True
        self.state.unobserve(self._on_choice, names=list(_CHOICES))
        self.depth.close()
        self.umap.close()
        self.quality.close()
        try:
            self.store.unobserve(self._store_cb)
        except ValueError:
            pass
        self.jobs.close()

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        """Project the shown year to false colour now (fast), then prepare the labelling
        year in the background so the first click is quick (and, depth first, read full
        depth on a thread of its own)."""
        year = int(self.state.year)
        self._show_false_colour(year)
        self.submit(f"prepare-{self.label_year}", lambda: self._prepare(self.label_year),
                    f"reading the {self.label_year} embeddings into memory")
        if self._trainable():
            self.retrain()
        others = [y for y in self.arrays if y not in self.components]
        if others:  # the other years' projection, so switching year (map and scatter) is quick
            self.submit("components", lambda: [self.ensure_components(y) for y in others],
                        "projecting the other years", quiet=True)
        self.depth.start()  # a store's 16-band prefix: full depth is read in the background

    def _prepare(self, year: int):
        from ..classify import prepare

        area = self.prepared.get(year)
        if area is None:
            area = prepare(self.arrays[year])
            self.prepared[year] = area
            self.state.status = f"{year}: {int(area.valid.sum()):,} pixels with data ready"
        return area

    def ensure_components(self, year: int) -> xr.DataArray:
        """The PCA components of ``year`` (computed once, with the first year's projection)."""
        from ..project import project, to_rgb

        if year not in self.components:
            if self.projection is None:
                comps, fitted = project(self.arrays[year], method="pca", n_components=3,
                                        sample=self.projection_sample, random_state=0)
            else:  # the first year's projection and stretch: colours mean the same in every year
                comps, fitted = project(self.arrays[year], fitted=self.projection)
            if self.projection is None:
                self.projection = fitted
            self.rgb[year] = to_rgb(comps)
            self.components[year] = comps
        return self.components[year]

    def components_for(self, year: int, timeout: float | None = 30.0) -> xr.DataArray:
        """``ensure_components`` from a script (blocks until ready; views listen for the
        ``"components"`` event instead)."""
        if year in self.components:
            return self.components[year]
        return self.submit(f"components-{year}", lambda: self.ensure_components(year),
                           f"projecting {year}").result(timeout)

    def show_scatter_year(self, year: int) -> None:
        """Make ``year`` the scatter's year; its components reach the views as the
        ``"components"`` event: at once when ready, else once projected on the worker (a
        UMAP fit of the year starts when UMAP is chosen; PCA is shown meanwhile)."""
        year = int(year)
        self.scatter_year = year
        if self.state.projection == "umap" and year not in self.umap.components:
            self.umap.fit(year)
        if year in self.components:  # the PCA components (and the colours) are ready
            self._emit("components", year, self.umap.scatter_components(year))
            return
        self.submit(f"components-{year}", lambda: self._components_ready(year), f"projecting {year}")

    def _components_ready(self, year: int) -> None:
        self.ensure_components(year)
        if self.scatter_year == year:  # not switched again meanwhile
            self._emit("components", year, self.umap.scatter_components(year))

    @property
    def _render_options(self) -> dict:
        """How map layers are rendered: within ``max_pixels``, nearest neighbour (each screen
        pixel shows one embedding pixel, as the browser would; GDAL's mode and average
        resampling of a downsampled class map cost more than the classifier, and nearest
        reuses the cached warp indices of the area)."""
        return {"max_pixels": self.max_pixels, "resampling": "nearest"}

    def _show_false_colour(self, year: int) -> None:
        from .overlay import overlay_image

        self.ensure_components(year)
        img = overlay_image(self.rgb[year], **self._render_options)
        self._emit("layer", "false_colour", img)

    # ------------------------------------------------------------------ choices
    def _on_choice(self, change) -> None:
        name = change["name"]
        if name == "model":
            if self._trainable():
                self.retrain()
        elif name == "year":
            year = int(change["new"])
            self.submit("year", lambda: self._switch_year(year), f"showing {year}")
            self.show_scatter_year(year)
        elif name in ("confidence_threshold", "show_confidence"):
            self.submit("render-classes", self._render_classes, "redrawing the class map")
        elif name == "similarity_threshold":
            self.submit("render-similarity", self._render_similarity, "redrawing the similarity map")
        elif name in ("mode", "change_from"):
            if self.state.mode == "change":
                self.show_change()

    def _switch_year(self, year: int) -> None:
        self._show_false_colour(year)
        if self.classifier is not None:
            self._predict(year)
        if self.similarity_query is not None:
            self._similarity(*self.similarity_query)
        if self.state.mode == "change":
            self._change()
        self.state.status = f"showing {year}"

    # ------------------------------------------------------------------ clicks
    def pixel_at(self, lon: float, lat: float) -> tuple[int, int] | None:
        """(row, col) of the pixel under lon/lat, or None outside the area."""
        r, c = self.grid.lonlat_to_rowcol(np.array([lon], float), np.array([lat], float))
        if not bool(self.grid.inside(r, c)[0]):
            return None
        return int(r[0]), int(c[0])

    def has_data(self, row: int, col: int) -> bool:
        year = int(self.state.year)
        comps = self.components.get(year)
        if comps is not None:
            return bool(np.isfinite(comps.values[0, row, col]))
        return bool(np.isfinite(self.arrays[year].isel(band=0, y=row, x=col).values))

    def click(self, lon: float, lat: float) -> str:
        """A click on the map at lon/lat, acted on according to ``state.mode``.

        Returns what happened, in words (also put in ``state.status``).
        """
        self._check_open()
        st = self.state
        st.last_click = (float(lon), float(lat))
        where = _where(lon, lat)
        px = self.pixel_at(lon, lat)
        if px is None:
            return self._say(f"the click at {where} is outside the embeddings; nothing done")
        self._mark(*px)
        if not self.has_data(*px):
            return self._say(f"no data at {where} (water or outside the tiles); nothing done")
        return self._click_handlers[st.mode](float(lon), float(lat), px, where)

    def _click_label(self, lon: float, lat: float, px: tuple, where: str) -> str:
        st = self.state
        if not st.classes:
            return self._say("add a class first (type a name and press 'add class'), then click to label")
        cls = st.active_class or ""
        if cls not in st.classes:
            return self._say("pick the class to label with, then click again")
        return self.label_at(lon, lat, cls, px=px)[1]

    def label_at(self, lon: float, lat: float, cls: str, *, px: tuple | None = None) -> tuple[bool, str]:
        """Add a point label of ``cls`` at lon/lat (the click path); (added, message)."""
        self._check_open()
        where = _where(lon, lat)
        px = px if px is not None else self.pixel_at(lon, lat)
        if px is None:
            return False, self._say(f"{where} is outside the embeddings; nothing done")
        if not self.has_data(*px):
            return False, self._say(f"no data at {where} (water or outside the tiles); nothing done")
        same = self._label_on_pixel(*px)
        if same is not None:
            return False, self._say(f"pixel {where} is labelled already ({same.cls!r}, label {same.id}); "
                                    "undo it or click another pixel")
        try:
            self.store.add_point(float(lon), float(lat), cls)
        except LabelError as err:
            return False, self._say(f"label not added: {err}")
        msg = f"labelled {where} as {cls!r} ({_n(len(self.store), 'label')})"
        if not self._trainable():
            return True, self._say(msg + "; label at least two classes to train a classifier")
        self._say(msg)  # before the retrain is queued, so its "trained" line always comes after
        self.retrain()
        return True, msg

    def _click_similarity(self, lon: float, lat: float, px: tuple, where: str) -> str:
        self.similarity_query = (lon, lat)
        msg = self._say(f"finding pixels similar to {where}")  # before the job, whose result line follows
        self.submit("similarity", lambda: self._similarity(lon, lat), msg)
        return msg

    def _click_draw(self, lon: float, lat: float, px: tuple, where: str) -> str:
        return self._say("draw mode: draw a polygon or rectangle with the map's toolbar to label every pixel "
                         "inside it (switch to 'click' mode to label single pixels)")

    def _click_live(self, lon: float, lat: float, px: tuple, where: str) -> str:
        return self._say("live mode: draw a rectangle with the map's toolbar to embed it live")

    def _click_change(self, lon: float, lat: float, px: tuple, where: str) -> str:
        """Change mode: the value under the click."""
        if self.change_map is not None:
            d = float(self.change_map["distance"].values[px])
            cls, _ = _change_classes(self.change_map)
            k = int(self.change_map["change_class"].values[px])
            name = cls[k] if k < len(cls) else "no data"
            return self._say(f"change at {where}: distance {d:.3f} ({name})")
        return self._say("the change map is still being computed")

    def _label_on_pixel(self, row: int, col: int):
        """The point label on this pixel, if any (two labels of one pixel add nothing)."""
        points = [lab for lab in self.store.labels if lab.kind == "point"]
        if not points:
            return None
        r, c = self.grid.lonlat_to_rowcol(np.array([p.lon for p in points], float),
                                          np.array([p.lat for p in points], float))
        hit = np.flatnonzero((np.asarray(r) == row) & (np.asarray(c) == col))
        return points[int(hit[0])] if hit.size else None

    def add_polygon(self, ring: list) -> str:
        """Label every pixel inside a polygon (a ring of lon/lat pairs) as the active class."""
        self._check_open()
        st = self.state
        if st.mode != "draw":
            return self._say("switch to draw mode to draw labels")
        if not st.active_class or st.active_class not in st.classes:
            return self._say("add and pick a class first, then draw")
        try:
            self.store.add_polygon([(float(x), float(y)) for x, y in ring], st.active_class)
        except LabelError as err:
            return self._say(f"polygon not added: {err}")
        msg = f"polygon labelled as {st.active_class!r} ({_n(len(self.store), 'label')})"
        if self._trainable():
            self.retrain()
        return self._say(msg)

    def _say(self, msg: str) -> str:
        self.state.status = msg
        return msg

    def _mark(self, row: int, col: int) -> None:
        comps = self.umap.scatter_components(self.scatter_year)
        if comps is None:
            return
        x, y = (float(v) for v in comps.values[:2, row, col])
        if np.isfinite(x) and np.isfinite(y):
            self._emit("marker", x, y)
        else:
            self._emit("marker", None, None)

    # ------------------------------------------------------------------ labels
    def _labels_changed(self, what: str) -> None:
        self._sync_labels()
        self._emit("labels", self.store)

    def _sync_labels(self) -> None:
        st = self.state
        classes = self.store.classes
        counts = self.store.counts()
        names = list(classes)
        with st.hold_trait_notifications():
            st.classes = names
            st.colors = dict(classes)
            st.counts = counts
            st.n_labels = len(self.store)
            if st.active_class not in names:
                st.active_class = names[-1] if names else ""

    def _trainable(self) -> bool:
        counts = self.store.counts()
        return sum(1 for v in counts.values() if v > 0) >= 2

    def add_class(self, name: str, color: str | None = None) -> str:
        self._check_open()
        self.store.add_class(name, color)
        self.state.active_class = name.strip()
        return self._say(f"class {name.strip()!r} added; click the map to label it")

    def rename_class(self, name: str, new_name: str) -> str:
        self._check_open()
        self.store.rename_class(name, new_name)
        self.state.active_class = new_name.strip()
        self._after_label_edit()
        return self._say(f"class {name!r} renamed to {new_name.strip()!r}")

    def recolour(self, name: str, color: str) -> str:
        self._check_open()
        self.store.set_color(name, color)
        if self.prediction is not None:
            self.submit("render-classes", self._render_classes, "redrawing the class map")
        return self._say(f"class {name!r} is now {color}")

    def remove_class(self, name: str) -> str:
        self._check_open()
        self.store.remove_class(name)
        self._after_label_edit()
        return self._say(f"class {name!r} and its labels removed (undo brings them back)")

    def undo(self) -> str:
        self._check_open()
        if not self.store.undo():
            return self._say("nothing to undo")
        self._after_label_edit()
        return self._say(f"undone ({_n(len(self.store), 'label')})")

    def redo(self) -> str:
        self._check_open()
        if not self.store.redo():
            return self._say("nothing to redo")
        self._after_label_edit()
        return self._say(f"redone ({_n(len(self.store), 'label')})")

    def clear(self) -> str:
        self._check_open()
        self.store.clear()
        self._after_label_edit()
        return self._say("all labels removed (undo brings them back)")

    def _after_label_edit(self) -> None:
        if self._trainable():
            self.retrain()
        elif self.classifier is not None:
            self.classifier = None
            self.prediction = None
            self.submit("retrain", self._drop_classes, "removing the class map")

    def _drop_classes(self) -> None:
        self._emit("layer", "classes", None)
        self._emit("layer", "confidence", None)
        self._emit("trained", None)
        self.state.accuracy = ""
        self.state.status = "label at least two classes to train a classifier"

    # ------------------------------------------------------------------ classify
    def retrain(self) -> Future:
        """Queue a refit on the labels and a fresh class map of the shown year."""
        return self.submit("retrain", self._retrain, f"training {self.state.model}",
                           supersedes=("evaluate", "learning-curve", "trust"))

    def _retrain(self) -> None:
        from ..classify import fit_classifier

        if not self._trainable():
            return self._drop_classes()
        area = self._prepare(self.label_year)
        t0 = time.perf_counter()
        model = self.state.model
        clf = fit_classifier(area, self.store, model=model, max_per_label=MAX_PER_LABEL)
        t_fit = time.perf_counter() - t0
        skipped = getattr(clf.samples_, "skipped", None) or []
        self.classifier = clf
        self.state.progress = 0.4
        t1 = time.perf_counter()
        self._predict(int(self.state.year))
        t_map = time.perf_counter() - t1
        n = len(np.unique(clf.samples_.label_id))
        msg = f"{model} trained on {_n(n, 'label')} in {t_fit * 1000:.0f} ms; class map in {t_map * 1000:.0f} ms"
        if skipped:
            msg += f"; {_n(len(skipped), 'label')} left out (outside the area or no data)"
        self.state.status = msg
        self.submit("evaluate", self._evaluate, "scoring the classifier on held-out labels", quiet=True)
        self._emit("trained", clf)  # trust layer and learning curve queue their quiet jobs

    def _evaluate(self) -> None:
        """Spatially blocked cross-validation of the current recipe on the labels (run after
        the class map is drawn, so it never delays a redraw)."""
        from ..classify.evaluate import cv_readiness, evaluate

        clf = self.classifier
        if clf is None:
            self.state.accuracy = ""
            return
        s = clf.samples_
        ids, first = np.unique(s.label_id, return_index=True)
        per_class = {str(c): int(np.sum(s.y[first] == c)) for c in clf.classes_}
        why = cv_readiness(per_class)
        if why is not None:
            self.state.accuracy = (f"accuracy: not scored yet: {why}. The map rests on {_n(len(ids), 'label')}.")
            self.evaluation = None
            return
        try:
            ev = evaluate(self._prepare(self.label_year), s, model=self.state.model, cv="spatial")
        except TesseraExploreError as err:
            self.state.accuracy = f"accuracy: not scored yet ({err})"
            return
        self.state.accuracy = f"spatial cross-validation: {ev.summary()}"
        self.evaluation = ev
        self.quality.remember(clf, ev)  # the learning curve's last point

    def _predict(self, year: int) -> None:
        """Classify the pixels the class image shows (at the map's screen resolution they
        are a fraction of the area's), draw it; the other pixels are classified when the
        whole map is asked for (:meth:`class_map`, export).  The image is the same either
        way: a nearest-neighbour render at that size reads only those pixels."""
        from ..classify import predict_map

        area = self._prepare(year)
        clf = self.classifier
        shown = self._shown.get(year, False)
        if shown is False:  # the same for every class map of this year
            shown = self._shown[year] = shown_pixels(self.arrays[year], **self._render_options)
        h, w = area.shape
        if shown is not None and shown.size < 0.8 * h * w:
            pred = _predict_pixels(area, clf, shown)
        else:
            pred = predict_map(area, clf)
        with self._pred_lock:
            self.prediction, self.prediction_year = pred, year
            self._prediction_inputs = (area, clf) if pred.attrs.get("partial") else None
        self.state.progress = 0.8
        self._render_classes()

    def _complete_prediction(self) -> xr.Dataset | None:
        """The prediction of every pixel (computed now if only the shown ones were)."""
        from ..classify import predict_map

        with self._pred_lock:
            inputs, pred = self._prediction_inputs, self.prediction
            if inputs is None:
                return pred
            full = predict_map(*inputs)
            if self.prediction is pred:  # not replaced by a newer one meanwhile
                self.prediction, self._prediction_inputs = full, None
            return full

    def class_map(self, *, whole: bool = True) -> xr.DataArray | None:
        """The class map as shown: classes below the confidence threshold are no data.
        ``whole=False``: only the pixels the map's image shows are sure to be classified."""
        pred = self._complete_prediction() if whole else self.prediction
        if pred is None:
            return None
        cls = pred["class"]
        thr = float(self.state.confidence_threshold)
        if thr > 0:
            cls = cls.where(pred["confidence"] >= thr, 255).astype(np.uint8)
            cls.attrs.update(pred["class"].attrs)
        return cls

    def _render_classes(self) -> None:
        from .overlay import overlay_image

        cls = self.class_map(whole=False)
        if cls is None:
            return
        names = list(self.prediction.attrs.get("classes", ()))
        colors = self.store.classes
        img = overlay_image(cls, categories=names, colors=[colors.get(n, "#888888") for n in names],
                            **self._render_options, title="classes")
        self._emit("layer", "classes", img)
        if self.state.show_confidence:
            conf = self.prediction["confidence"]
            conf = conf.where(cls != 255)
            conf.attrs.update(long_name="confidence")
            self._emit("layer", "confidence", overlay_image(conf, cmap="viridis", vmin=0.0, vmax=1.0,
                                                            categorical=False, **self._render_options,
                                                            title="confidence"))

    # ------------------------------------------------------------------ similarity
    def _similarity(self, lon: float, lat: float) -> None:
        from ..classify import similarity

        area = self._prepare(int(self.state.year))
        self.similarity_map = similarity(area, (lon, lat))
        self.similarity_query = (lon, lat)
        self._render_similarity()

    def _render_similarity(self) -> None:
        from .overlay import overlay_image

        if self.similarity_map is None:
            return
        thr = float(self.state.similarity_threshold)
        shown = self.similarity_map.where(self.similarity_map >= thr)
        shown.attrs.update(self.similarity_map.attrs, long_name="cosine similarity")
        img = overlay_image(shown, cmap="magma", vmin=thr, vmax=1.0, **self._render_options,
                            categorical=False, title="similarity")
        self._emit("layer", "similarity", img)
        n = int(np.count_nonzero(self.similarity_map.values >= thr))
        lon, lat = self.similarity_query
        self.state.status = f"{n:,} pixels have cosine similarity >= {thr:.2f} to {_where(lon, lat)}"

    # ------------------------------------------------------------------ change
    def change_pair(self) -> tuple[int, int] | None:
        years = sorted(self.arrays)
        if len(years) < 2:
            return None
        b = int(self.state.year)
        a = int(self.state.change_from) if self.state.change_from in self.arrays else None
        if a is None or a == b:
            a = max((y for y in years if y < b), default=None) or min(y for y in years if y != b)
        return (a, b) if a < b else (b, a)

    def show_change(self) -> Future | None:
        if self.change_pair() is None:
            self._say("the change map needs two years: open the explorer with years=[...]")
            return None
        return self.submit("change", self._change, "computing the change between years")

    def _change(self) -> None:
        from ..classify import change
        from .overlay import overlay_image

        a, b = self.change_pair()
        if self.change_years != (a, b):
            self.change_map = change(self._prepare(a), self._prepare(b))
            self.change_years = (a, b)
        names, colors = _change_classes(self.change_map)
        img = overlay_image(self.change_map["change_class"], categories=names, colors=colors, **self._render_options,
                            title=f"change {a} to {b}")
        self._emit("layer", "change", img)
        counts = np.bincount(self.change_map["change_class"].values.ravel(), minlength=256)
        self.state.status = f"change {a} to {b}: " + ", ".join(f"{n} {counts[i]:,}" for i, n in enumerate(names))

    # ------------------------------------------------------------------ scatter selection
    def select_pixels(self, flat_index: np.ndarray, how: str = "selection") -> Future:
        """Highlight pixels (flat indices ``row * width + col``) chosen in the scatter."""
        h, w = self.grid.shape
        mask = np.zeros(h * w, np.uint8)
        idx = np.asarray(flat_index, dtype=np.int64)
        mask[idx] = 1
        self.selection = mask.reshape(h, w)
        self.state.selection_size = int(idx.size)
        return self.submit("selection", lambda: self._render_selection(how), "drawing the selection")

    def _render_selection(self, how: str) -> None:
        from .overlay import overlay_image

        if self.selection is None or not self.selection.any():
            self._emit("layer", "selection", None)
            self.state.status = "nothing selected"
            return
        ref = self.rgb[self.label_year]
        sel = xr.DataArray(np.where(self.selection == 1, 1, 255).astype(np.uint8), dims=("y", "x"),
                           coords={"y": ref.y, "x": ref.x}, name="selection")
        sel = sel.rio.write_crs(ref.rio.crs)
        img = overlay_image(sel, categories={1: ("selected", SELECTION_COLOR)}, **self._render_options,
                            title="selection")
        self._emit("layer", "selection", img)
        self.state.status = f"{how}: {int(self.selection.sum()):,} pixels highlighted on the map"

    # ------------------------------------------------------------------ guided labelling (widgets/guided.py)
    def suggest(self, n: int = 10, *, strategy: str | None = None) -> Future | None:
        """Queue ``n`` suggestions (:func:`~tessera_explore.suggest`) and step to the first.
        ``strategy``: ``"uncertainty"``, ``"diverse"`` or ``"mixed"``; default the panel's
        choice (``state.suggest_strategy``, mixed at start)."""
        return self.guide.suggest(n, strategy=strategy)

    def suggest_next(self) -> Future | None:
        """The current suggestion (a future): the open one, or a fresh batch when none is left."""
        return self.guide.suggest_next()

    def label_suggestion(self, cls: str) -> str:
        """Label the current suggestion as ``cls`` (the click path) and step to the next."""
        return self.guide.label(cls)

    def skip_suggestion(self) -> str:
        return self.guide.skip()

    def validate(self, n: int = 30, *, allocation: Any = "proportional", seed: int = 0,
                 new: bool = False) -> Future | None:
        """Queue a validation sample of the class map (:func:`~tessera_explore.validation_sample`);
        an unfinished one is resumed unless ``new``."""
        return self.guide.validate(n, allocation=allocation, seed=seed, new=new)

    def record_reference(self, cls: str) -> str:
        """The reference class of the current validation point (never a training label)."""
        return self.guide.record(cls)

    def skip_reference(self) -> str:
        return self.guide.skip()

    def stop_walk(self) -> str:
        return self.guide.stop()

    # ------------------------------------------------------------------ export
    def save(self) -> str:
        self._check_open()
        path = self.store.save()
        return self._say(f"labels saved to {path}")

    def export(self, folder: str | None = None) -> Future:
        """Write the class, confidence, similarity and change maps as COGs with provenance
        and the labels as GeoJSON into ``folder``."""
        folder = folder or self.export_dir or self._default_export_dir()
        return self.submit("export", lambda: self._export(folder), f"exporting to {folder}")

    def _default_export_dir(self) -> str:
        base = self.store.path
        if base is None:
            return os.path.abspath("tessera_export")
        return os.path.splitext(base)[0] + "_export"

    def _export(self, folder: str) -> list[str]:
        from ..classify import export_map

        os.makedirs(folder, exist_ok=True)
        written = []
        year = int(self.state.year)
        if self.prediction is not None:
            written.append(export_map(self._complete_prediction(),
                                      os.path.join(folder, f"classes_{self.prediction_year}.tif")))
        if self.similarity_map is not None:
            written.append(export_map(self.similarity_map, os.path.join(folder, f"similarity_{year}.tif")))
        if self.change_map is not None:
            a, b = self.change_years
            written.append(export_map(self.change_map, os.path.join(folder, f"change_{a}_{b}.tif")))
        written += self.quality.export(folder)
        written += self.guide.export(folder)
        written.append(self.store.export(os.path.join(folder, "labels.geojson")))
        written = [os.fspath(p) for item in written for p in (item if isinstance(item, (list, tuple)) else [item])]
        self.state.status = f"exported {len(written)} files to {folder}"
        return written

    # ------------------------------------------------------------------ live embedding (widgets/live.py)
    def embed_live(self, bbox: tuple[float, float, float, float], *, start: Any = None,
                   end: Any = None) -> Future | None:
        """Embed a drawn rectangle live (:func:`~tessera_explore.embed_area`) and show it
        beside the precomputed map; needs ``live_model``.  The observations are those of
        ``start`` to ``end`` (dates, a window of at most a year; default
        ``state.live_start``/``live_end``), or of the year shown when both are empty.  A bad
        window is said in the status line (None is returned)."""
        return self.live_embedder.embed(bbox, start=start, end=end)

    def live_window(self, start: Any = None, end: Any = None):
        """The :class:`~tessera_explore.encoder.window.Window` of a live embedding (see
        :meth:`embed_live`); :class:`ArgumentError` for a bad window."""
        return self.live_embedder.window(start, end)
