"""Explorer controller: the facade that composes the explorer's parts.

The controller makes one :class:`~tessera_explore.widgets.session.Session` (the area, the
labels, the state, the job queue with one worker thread, the events) and gives it to each
part, split by object:

* :class:`~tessera_explore.widgets.colour_map.FalseColour`: PCA components and the false
  colour layer;
* :class:`~tessera_explore.widgets.classifying.Classifying`: training, the class and
  confidence map, cross-validation, the whole map on demand;
* :class:`~tessera_explore.widgets.maps.Maps`: similarity, change and selection maps;
* :class:`~tessera_explore.widgets.guided.Guide`, :class:`~tessera_explore.widgets.quality.Quality`,
  :class:`~tessera_explore.widgets.live.LiveEmbedder`,
  :class:`~tessera_explore.widgets.projection.ProjectionSwitch`,
  :class:`~tessera_explore.widgets.depth.DepthSwitch`.

What is left here is what ties them together: map clicks by mode, label edits, the
reactions to the user's choices (model, year, thresholds, mode), the export, and the
public methods views, scripts and tests call (many of them one-line delegations).
Views call them from widget callbacks (on the kernel's main thread); they check input at
once, change the labels (saved at once by the store), and queue the heavy part.  Queued
work of one kind coalesces: ten fast clicks retrain once or twice, never ten times.
Results reach the views as events (:meth:`on`), progress and messages through the
:class:`~tessera_explore.widgets.state.ExplorerState` traits.

Nothing here imports ipywidgets, ipyleaflet or holoviews: the controller runs (and is
benchmarked) in plain Python.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np
import xarray as xr

from .classifying import MAX_PER_LABEL, Classifying
from .colour_map import FalseColour
from .labelling import Labelling
from .maps import SELECTION_COLOR, Maps
from .session import EVENT_COMPONENTS, EVENT_SCATTER, LAYERS, ExplorerClosedError, Session
from .state import ExplorerState

__all__ = ["ExplorerController", "ExplorerClosedError", "LAYERS", "MAX_PER_LABEL", "SELECTION_COLOR"]

#: state traits the controller acts on
_CHOICES = ("model", "year", "confidence_threshold", "show_confidence", "similarity_threshold", "mode",
            "change_from")


class _Delegated:
    """An attribute of the controller that lives on one of its parts (read and written
    there), so ``controller.classifier`` and ``controller.classifying.classifier`` are one."""

    def __init__(self, part: str, name: str | None = None):
        self.part, self.name = part, name

    def __set_name__(self, owner, name):
        self.name = self.name or name

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        return getattr(getattr(obj, self.part), self.name)

    def __set__(self, obj, value):
        setattr(getattr(obj, self.part), self.name, value)


class ExplorerController:
    """Compute for one explorer session (module docstring).

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
    max_pixels : the pixel budget of a map layer's image.
    live_model, live_stac, live_cache : what :meth:`embed_live` passes to
        :func:`~tessera_explore.embed_area` (no model: live embedding is off).
    export_dir : folder of :meth:`export` (default beside the label file).
    full_depth : a :class:`~tessera_explore.widgets.depth.FullDepth` when ``arrays`` are a
        store's 16-band prefix: full depth is read in the background and replaces them
        (``widgets/depth.py``); None explores the arrays as they are.

    Attributes
    ----------
    session, colour, classifying, maps, guide, quality, live_embedder, umap, depth : the
        parts (module docstring).  The data attributes below are theirs, read and
        written through the controller too.
    """

    # the session's
    arrays = _Delegated("session")
    grid = _Delegated("session")
    label_year = _Delegated("session")
    scatter_year = _Delegated("session")
    projection_sample = _Delegated("session")
    max_pixels = _Delegated("session")
    prepared = _Delegated("session")
    jobs = _Delegated("session")
    # the false colour's
    components = _Delegated("colour")
    rgb = _Delegated("colour")
    projection = _Delegated("colour")
    # the classifier's
    classifier = _Delegated("classifying")
    prediction = _Delegated("classifying")
    prediction_year = _Delegated("classifying")
    evaluation = _Delegated("classifying")
    # the other maps'
    similarity_map = _Delegated("maps")
    similarity_query = _Delegated("maps")
    change_map = _Delegated("maps")
    change_years = _Delegated("maps")
    selection = _Delegated("maps")
    # live embedding's
    live = _Delegated("live_embedder")
    live_model = _Delegated("live_embedder", "model")
    live_stac = _Delegated("live_embedder", "stac")
    live_cache = _Delegated("live_embedder", "cache")

    def __init__(self, state: ExplorerState, arrays: dict, store: Any, *, year: int | None = None,
                 label_year: int | None = None,
                 projection_sample: int = 100_000, max_pixels: int = 1_000_000, live_model: Any = None,
                 live_stac: Any = "planetary-computer", live_cache: Any = None, export_dir: str | None = None,
                 full_depth: Any = None):
        from .depth import DepthSwitch
        from .guided import Guide
        from .live import LiveEmbedder
        from .projection import ProjectionSwitch
        from .quality import Quality

        self.session = s = Session(state, arrays, store, year=year, label_year=label_year,
                                   projection_sample=projection_sample, max_pixels=max_pixels)
        self.state = state
        self.store = store
        self.export_dir = export_dir
        self.colour = FalseColour(s)
        self.classifying = Classifying(s)
        self.maps = Maps(s)
        self.live_embedder = LiveEmbedder(s, model=live_model, stac=live_stac, cache=live_cache)
        self.umap = ProjectionSwitch(s, self.colour)
        self.labelling = Labelling(s, self.colour, self.classifying, self.maps,
                                   scatter_components=self.umap.scatter_components)
        self.guide = Guide(s, self.classifying, self.labelling.label_at)
        self.quality = Quality(s, self.classifying)
        self.depth = DepthSwitch(s, full_depth, colour=self.colour, classifying=self.classifying, maps=self.maps,
                                 redraw=self.redraw)
        state.observe(self._on_choice, names=list(_CHOICES))
        for closer in (lambda: state.unobserve(self._on_choice, names=list(_CHOICES)), self.depth.close,
                       self.umap.close, self.quality.close):
            s.when_closed(closer)

    def __repr__(self) -> str:
        st = self.state
        return (f"ExplorerController(years={sorted(self.arrays)}, year={st.year}, label_year={self.label_year}, "
                f"{st.n_labels} labels, classifier={'yes' if self.classifier is not None else 'none'}, "
                f"closed={self.session.closed})")

    # ------------------------------------------------------------------ the session
    def on(self, event: str, callback: Callable) -> None:
        """Call ``callback(*args)`` on ``event`` (:meth:`Session.on
        <tessera_explore.widgets.session.Session.on>`): ``"layer"`` (name, OverlayImage or
        None), ``"marker"`` (x, y in the scatter, or None), ``"labels"`` (the store),
        ``"trained"`` (the new classifier, or None when it was dropped), ``"evaluated"``,
        ``"walk"`` (the guided walk, or None), ``"scatter"`` (year, other components of the
        shown year), ``"components"`` (year, components of a newly shown year), ``"area"``
        (the arrays were replaced).  Callbacks may run on the worker thread."""
        self.session.on(event, callback)

    def submit(self, key: str, fn: Callable[[], Any], title: str, *, quiet: bool = False,
               supersedes: tuple = ()) -> Future:
        """Queue ``fn`` on the worker thread (:meth:`Session.submit
        <tessera_explore.widgets.session.Session.submit>`)."""
        return self.session.submit(key, fn, title, quiet=quiet, supersedes=supersedes)

    def wait(self, timeout: float | None = 120.0) -> None:
        """Block until every queued job (and any job they queued) has finished."""
        self.session.wait(timeout)

    def close(self) -> None:
        """Stop the worker thread and let go of the label store."""
        self.session.close()

    # ------------------------------------------------------------------ start and redraw
    def start(self) -> None:
        """Project the shown year to false colour now (fast), then prepare the labelling
        year in the background so the first click is quick (and, depth first, read full
        depth on a thread of its own)."""
        s = self.session
        self.colour.show(int(self.state.year))
        s.submit(f"prepare-{s.label_year}", lambda: s.area(s.label_year),
                 f"reading the {s.label_year} embeddings into memory")
        if s.trainable():
            self.retrain()
        self._project_others()
        self.depth.start()  # a store's 16-band prefix: full depth is read in the background

    def _project_others(self) -> None:
        """The other years' projection, so switching year (map and scatter) is quick."""
        others = [y for y in self.arrays if y not in self.components]
        if others:
            self.submit("components", lambda: [self.colour.ensure(y) for y in others],
                        "projecting the other years", quiet=True)

    def redraw(self) -> bool:
        """Redraw every layer of the shown year on this thread (a job's body, e.g. after
        :meth:`Session.replace_arrays <tessera_explore.widgets.session.Session.replace_arrays>`):
        the false colour, the class map (retrained when two classes are labelled: returns
        True then), the similarity to the last query, the change map in change mode, and
        the scatter (new axes: its view resets)."""
        s, st = self.session, self.state
        self.colour.show(int(st.year))
        retrained = s.trainable()
        if retrained:
            self.classifying.retrain_now()
        if self.maps.similarity_query is not None:
            self.maps.similarity(*self.maps.similarity_query)
        if st.mode == "change":
            self.maps.change_now()
        sy = s.scatter_year
        self.colour.ensure(sy)
        s.emit(EVENT_SCATTER, sy, self.umap.scatter_components(sy))
        self._project_others()
        return retrained

    # ------------------------------------------------------------------ components (colour_map.py)
    def ensure_components(self, year: int) -> xr.DataArray:
        """The PCA components of ``year`` (computed once, with the first year's projection)."""
        return self.colour.ensure(year)

    def components_for(self, year: int, timeout: float | None = 30.0) -> xr.DataArray:
        """``ensure_components`` from a script (blocks until ready; views listen for the
        ``"components"`` event instead)."""
        if year in self.components:
            return self.components[year]
        return self.submit(f"components-{year}", lambda: self.colour.ensure(year),
                           f"projecting {year}").result(timeout)

    def show_scatter_year(self, year: int) -> None:
        """Make ``year`` the scatter's year; its components reach the views as the
        ``"components"`` event: at once when ready, else once projected on the worker (a
        UMAP fit of the year starts when UMAP is chosen; PCA is shown meanwhile)."""
        year = int(year)
        self.session.scatter_year = year
        if self.state.projection == "umap" and year not in self.umap.components:
            self.umap.fit(year)
        if year in self.components:  # the PCA components (and the colours) are ready
            self.session.emit(EVENT_COMPONENTS, year, self.umap.scatter_components(year))
            return
        self.submit(f"components-{year}", lambda: self._components_ready(year), f"projecting {year}")

    def _components_ready(self, year: int) -> None:
        self.colour.ensure(year)
        if self.session.scatter_year == year:  # not switched again meanwhile
            self.session.emit(EVENT_COMPONENTS, year, self.umap.scatter_components(year))

    # ------------------------------------------------------------------ choices
    def _on_choice(self, change) -> None:
        name = change["name"]
        if name == "model":
            if self.session.trainable():
                self.retrain()
        elif name == "year":
            year = int(change["new"])
            self.submit("year", lambda: self._switch_year(year), f"showing {year}")
            self.show_scatter_year(year)
        elif name in ("confidence_threshold", "show_confidence"):
            self.classifying.redraw()
        elif name == "similarity_threshold":
            self.submit("render-similarity", self.maps.render_similarity, "redrawing the similarity map")
        elif name in ("mode", "change_from"):
            if self.state.mode == "change":
                self.show_change()

    def _switch_year(self, year: int) -> None:
        self.colour.show(year)
        if self.classifier is not None:
            self.classifying.predict(year)
        if self.maps.similarity_query is not None:
            self.maps.similarity(*self.maps.similarity_query)
        if self.state.mode == "change":
            self.maps.change_now()
        self.state.status = f"showing {year}"

    # ------------------------------------------------------------------ clicks and labels (labelling.py)
    def pixel_at(self, lon: float, lat: float) -> tuple[int, int] | None:
        """(row, col) of the pixel under lon/lat, or None outside the area."""
        return self.session.pixel_at(lon, lat)

    def has_data(self, row: int, col: int) -> bool:
        """True when the shown year has an embedding at (row, col)."""
        return self.labelling.has_data(row, col)

    def click(self, lon: float, lat: float) -> str:
        """A click on the map at lon/lat, acted on according to ``state.mode``; returns
        what happened, in words (also put in ``state.status``)."""
        return self.labelling.click(lon, lat)

    def label_at(self, lon: float, lat: float, cls: str, *, px: tuple | None = None) -> tuple[bool, str]:
        """Add a point label of ``cls`` at lon/lat (the click path); (added, message)."""
        return self.labelling.label_at(lon, lat, cls, px=px)

    def add_polygon(self, ring: list) -> str:
        """Label every pixel inside a polygon (a ring of lon/lat pairs) as the active class."""
        return self.labelling.add_polygon(ring)

    def add_class(self, name: str, color: str | None = None) -> str:
        """Add a class (and make it the active one)."""
        return self.labelling.add_class(name, color)

    def rename_class(self, name: str, new_name: str) -> str:
        """Rename a class (its labels follow)."""
        return self.labelling.rename_class(name, new_name)

    def recolour(self, name: str, color: str) -> str:
        """Give a class another colour (the class map is redrawn)."""
        return self.labelling.recolour(name, color)

    def remove_class(self, name: str) -> str:
        """Remove a class and its labels (undo brings them back)."""
        return self.labelling.remove_class(name)

    def undo(self) -> str:
        """Undo the last label edit."""
        return self.labelling.undo()

    def redo(self) -> str:
        """Redo the last undone label edit."""
        return self.labelling.redo()

    def clear(self) -> str:
        """Remove every label (undo brings them back)."""
        return self.labelling.clear()

    # ------------------------------------------------------------------ classify (classifying.py)
    def retrain(self) -> Future:
        """Queue a refit on the labels and a fresh class map of the shown year."""
        return self.classifying.retrain()

    def class_map(self, *, whole: bool = True) -> xr.DataArray | None:
        """The class map as shown: classes below the confidence threshold are no data.
        ``whole=False``: only the pixels the map's image shows are sure to be classified."""
        return self.classifying.class_map(whole=whole)

    # ------------------------------------------------------------------ similarity, change, selection (maps.py)
    def change_pair(self) -> tuple[int, int] | None:
        """(earlier, later) years of the change map (None with one year open)."""
        return self.maps.change_pair()

    def show_change(self) -> Future | None:
        """Queue the change map between two years."""
        return self.maps.show_change()

    def select_pixels(self, flat_index: np.ndarray, how: str = "selection") -> Future:
        """Highlight pixels (flat indices ``row * width + col``) chosen in the scatter."""
        return self.maps.select_pixels(flat_index, how)

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
        """Skip the current suggestion."""
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
        """Skip the current validation point."""
        return self.guide.skip()

    def stop_walk(self) -> str:
        """Put the guided walk aside."""
        return self.guide.stop()

    # ------------------------------------------------------------------ export
    def save(self) -> str:
        """Save the labels now (every change is saved already; this says where)."""
        self.session.check_open()
        path = self.store.save()
        return self.session.say(f"labels saved to {path}")

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
            written.append(export_map(self.classifying.complete_prediction(),
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
