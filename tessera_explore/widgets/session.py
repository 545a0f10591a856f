"""The explorer's session: what every part of the explorer shares, behind public names.

A :class:`Session` holds the explored area (embeddings per year on one grid, their
``prepare``d int8 form), the label store, the app's :class:`ExplorerState`, the job queue
(one worker thread, :class:`~tessera_explore.widgets.jobs.JobQueue`) and the events the
views listen to.  The controller's collaborators (classifying, maps, false colour, guided
walks, quality, live embedding, projection, depth) each receive the session, never the
controller, and talk to each other only through its events or through public methods
passed to them.

The area can be replaced (:meth:`Session.replace_arrays`): full depth replacing a store's
16-band prefix today, a map-following explorer tomorrow.  Every part that keeps something
computed from the arrays listens for :data:`EVENT_AREA` and lets it go.

Nothing here imports ipywidgets, ipyleaflet or holoviews.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from ..exceptions import ArgumentError, LabelError
from .jobs import JobQueue
from .state import ExplorerState

__all__ = ["Session", "ExplorerClosedError", "LAYERS", "plural", "where", "EVENTS", "EVENT_LAYER", "EVENT_MARKER", "EVENT_LABELS",
           "EVENT_TRAINED", "EVENT_EVALUATED", "EVENT_WALK", "EVENT_SCATTER", "EVENT_COMPONENTS", "EVENT_AREA"]

log = logging.getLogger(__name__)

#: map layers the explorer produces, bottom to top
LAYERS = ("false_colour", "live", "change", "classes", "confidence", "trust", "similarity", "selection")

#: ``(name, OverlayImage or None)``: a map layer drawn anew, or withdrawn (None)
EVENT_LAYER = "layer"
#: ``(x, y)``: the clicked pixel's place in the scatter (None, None: not in it)
EVENT_MARKER = "marker"
#: ``(store,)``: the labels changed
EVENT_LABELS = "labels"
#: ``(classifier,)``: a new classifier, or None when it was dropped
EVENT_TRAINED = "trained"
#: ``(classifier, evaluation)``: the classifier's spatial cross-validation is done
EVENT_EVALUATED = "evaluated"
#: ``(walk,)``: the guided walk changed (None: no walk)
EVENT_WALK = "walk"
#: ``(year, components)``: other components of the scatter's year (UMAP ready, back to PCA)
EVENT_SCATTER = "scatter"
#: ``(year, components)``: the components of a newly shown scatter year
EVENT_COMPONENTS = "components"
#: ``(arrays,)``: the explored area was replaced (:meth:`Session.replace_arrays`); what was
#: computed from the old arrays is stale
EVENT_AREA = "area"
#: every event a session emits
EVENTS = (EVENT_LAYER, EVENT_MARKER, EVENT_LABELS, EVENT_TRAINED, EVENT_EVALUATED, EVENT_WALK, EVENT_SCATTER,
          EVENT_COMPONENTS, EVENT_AREA)


def plural(k: int, noun: str) -> str:
    """``1 label``, ``2 labels`` (with thousands separators)."""
    return f"{k:,} {noun}{'' if k == 1 else 's'}"


def where(lon: float, lat: float) -> str:
    """A clicked place for messages: 4 decimals of a degree (about 10 m, one pixel)."""
    return f"({lon:.4f}, {lat:.4f})"


class ExplorerClosedError(LabelError):
    """An action on an explorer after its ``close()``."""


def _checked_arrays(arrays: dict) -> tuple[dict, Any]:
    """``({year: validated array}, grid)`` of arrays that must share one grid."""
    from .._schema import check_compatible, validate
    from ..classify.area import grid_of

    if not arrays:
        raise ArgumentError("the explorer needs at least one embeddings array")
    out = {int(y): validate(a, name=f"embeddings of {y}") for y, a in arrays.items()}
    first = next(iter(out.values()))
    grid = grid_of(first)
    for y, a in out.items():
        check_compatible(first, a)
        if not grid_of(a).same_as(grid):
            raise ArgumentError(f"the embeddings of {y} are on another grid than those of {next(iter(out))}; "
                                "open every year with the same bbox")
    return out, grid


class Session:
    """What the parts of one explorer share.

    Parameters
    ----------
    state : the app's :class:`ExplorerState` (read for choices, written with results).
    arrays : ``{year: embeddings DataArray}`` on one grid.
    store : the :class:`~tessera_explore.LabelStore` that holds the labels.
    year : the year shown at start (default ``state.year`` if open, else the first).
    label_year : year the labels are drawn on and the classifier is trained on (default
        the year shown first).
    projection_sample : pixels in the PCA fitting sample.
    max_pixels : the pixel budget of a map layer's image (the map's size on screen).

    Attributes
    ----------
    arrays, grid : the explored area (replace both with :meth:`replace_arrays`).
    prepared : ``{year: PreparedArea}`` made so far (:meth:`area`).
    label_year, scatter_year : the labelling year and the year the scatter shows.
    jobs : the :class:`~tessera_explore.widgets.jobs.JobQueue` (:meth:`submit`, :meth:`wait`).
    """

    def __init__(self, state: ExplorerState, arrays: dict, store: Any, *, year: int | None = None,
                 label_year: int | None = None, projection_sample: int = 100_000, max_pixels: int = 1_000_000):
        self.arrays, self.grid = _checked_arrays(arrays)
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
        self.scatter_year = self.label_year
        self.projection_sample = int(projection_sample)
        self.max_pixels = int(max_pixels)
        self.prepared: dict[int, Any] = {}
        self._shown: dict[int, np.ndarray | None] = {}  # year -> pixels a layer's image shows
        self._listeners: dict[str, list[Callable]] = {}
        self.jobs = JobQueue(on_busy=self._set_busy, on_start=self._job_started, on_finish=self._job_finished,
                             on_error=self.report)
        self._closed = False
        self._closers: list[Callable[[], Any]] = []
        self._store_cb = lambda store, what: self._labels_changed()
        store.observe(self._store_cb)
        self.sync_labels()

    # ------------------------------------------------------------------ events
    def on(self, event: str, callback: Callable) -> None:
        """Call ``callback(*args)`` on ``event`` (one of :data:`EVENTS`; see the ``EVENT_*``
        constants for the arguments).  Callbacks may run on the worker thread."""
        if event not in EVENTS:
            raise ArgumentError(f"unknown explorer event {event!r}; events are {list(EVENTS)}")
        self._listeners.setdefault(event, []).append(callback)

    def emit(self, event: str, *args) -> None:
        """Call the listeners of ``event``; one that fails is shown in the error line (and
        logged), the others still run."""
        if event not in EVENTS:
            raise ArgumentError(f"unknown explorer event {event!r}; events are {list(EVENTS)}")
        for cb in list(self._listeners.get(event, ())):
            try:
                cb(*args)
            except Exception as err:  # a view failing must not kill the worker; show it
                log.exception("explorer view callback for %s failed", event)
                self.report(err, f"updating the view ({event})")

    # ------------------------------------------------------------------ messages
    def say(self, msg: str) -> str:
        """Put ``msg`` in the status line; returns it."""
        self.state.status = msg
        return msg

    def report(self, err: BaseException, doing: str) -> None:
        """Show a failure in the error line (and say so in the status line)."""
        name = type(err).__name__
        self.state.error = f"{doing} failed: {name}: {err}"
        self.state.status = f"{doing} failed (see the message above)"

    # ------------------------------------------------------------------ the queue (widgets/jobs.py)
    def submit(self, key: str, fn: Callable[[], Any], title: str, *, quiet: bool = False,
               supersedes: tuple = ()) -> Future:
        """Queue ``fn`` on the worker thread (:meth:`JobQueue.submit
        <tessera_explore.widgets.jobs.JobQueue.submit>`: a waiting job of the same ``key`` is
        replaced, those of the keys in ``supersedes`` dropped; a ``quiet`` job leaves the
        status line and progress bar alone).  :class:`ExplorerClosedError` once closed."""
        self.check_open()
        return self.jobs.submit(key, fn, title, quiet=quiet, supersedes=supersedes)

    def wait(self, timeout: float | None = 120.0) -> None:
        """Block until every queued job (and any job they queued) has finished."""
        self.jobs.wait(timeout)

    def _job_started(self, title: str) -> None:
        self.state.status = f"{title}..."
        self.state.progress = 0.0

    def _job_finished(self, title: str) -> None:
        self.state.progress = 1.0

    def _set_busy(self, busy: bool) -> None:
        self.state.busy = busy

    # ------------------------------------------------------------------ open or closed
    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def check_open(self) -> None:
        """:class:`ExplorerClosedError` once the explorer is closed."""
        if self._closed:
            raise ExplorerClosedError("this explorer is closed: its labels can be read, not changed "
                                      "(open the label file in a new explorer to go on)")

    def when_closed(self, fn: Callable[[], Any]) -> None:
        """Call ``fn()`` at :meth:`close`, once closed (no job can be queued any more) and
        before the worker stops; in the order given."""
        self._closers.append(fn)

    def close(self) -> None:
        """Close: no job can be queued from now on, the ``when_closed`` functions run, the
        label store is let go and the worker thread stops (after the running job)."""
        if self._closed:
            return
        self._closed = True
        for fn in self._closers:
            fn()
        try:
            self.store.unobserve(self._store_cb)
        except ValueError:
            pass
        self.jobs.close()

    # ------------------------------------------------------------------ the area
    def area(self, year: int):
        """The :class:`~tessera_explore.classify.area.PreparedArea` of ``year`` (read into
        memory on first use, on the calling thread: call it from a job)."""
        from ..classify import prepare

        year = int(year)
        area = self.prepared.get(year)
        if area is None:
            area = prepare(self.arrays[year])
            self.prepared[year] = area
            self.state.status = f"{year}: {int(area.valid.sum()):,} pixels with data ready"
        return area

    @property
    def render_options(self) -> dict:
        """How map layers are rendered: within ``max_pixels``, nearest neighbour (each screen
        pixel shows one embedding pixel, as the browser would; GDAL's mode and average
        resampling of a downsampled class map cost more than the classifier, and nearest
        reuses the cached warp indices of the area)."""
        return {"max_pixels": self.max_pixels, "resampling": "nearest"}

    def shown_pixels(self, year: int) -> np.ndarray | None:
        """The pixels (flat indices) a layer image of ``year`` shows at :attr:`render_options`
        (:func:`~tessera_explore.widgets.reproject.shown_pixels`; None: every pixel), cached."""
        from .reproject import shown_pixels

        year = int(year)
        if year not in self._shown:
            self._shown[year] = shown_pixels(self.arrays[year], **self.render_options)
        return self._shown[year]

    def replace_arrays(self, arrays: dict, *, prepared: dict | None = None) -> None:
        """Explore other arrays from now on: ``{year: embeddings}`` (full depth for a
        prefix, or another place).  The years must stay the same; the grid may change.
        ``prepared``: their prepared areas when already made (else made on use).  The
        cached shown pixels go, and :data:`EVENT_AREA` tells every part to let go of what it
        computed from the old arrays; redrawing the layers is then up to the caller
        (:meth:`ExplorerController.redraw
        <tessera_explore.widgets.controller.ExplorerController.redraw>`).  Call it from a
        job on the worker, so no job sees half of the switch."""
        new, grid = _checked_arrays(arrays)
        if sorted(new) != sorted(self.arrays):
            raise ArgumentError(f"the new arrays hold the years {sorted(new)}, the explorer {sorted(self.arrays)}")
        self.arrays, self.grid = new, grid
        self.prepared = dict(prepared or {})
        self._shown = {}
        self.emit(EVENT_AREA, new)

    def pixel_at(self, lon: float, lat: float) -> tuple[int, int] | None:
        """(row, col) of the pixel under lon/lat, or None outside the area."""
        r, c = self.grid.lonlat_to_rowcol(np.array([lon], float), np.array([lat], float))
        if not bool(self.grid.inside(r, c)[0]):
            return None
        return int(r[0]), int(c[0])

    # ------------------------------------------------------------------ labels
    def trainable(self) -> bool:
        """True when at least two classes have labels (a classifier can be trained)."""
        counts = self.store.counts()
        return sum(1 for v in counts.values() if v > 0) >= 2

    def sync_labels(self) -> None:
        """Copy the store's classes, colours and counts into the state."""
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

    def _labels_changed(self) -> None:
        self.sync_labels()
        self.emit(EVENT_LABELS, self.store)
