"""Explore anywhere: the explorer follows the map over a whole published store.

``te.explore("v1.1", center=(0.12, 52.2), zoom=13)`` opens a store (a dataset name, a URL,
a folder, a ``fetch_region`` copy, or a :class:`~tessera_explore.io.viewport.ViewLoader`)
and shows whatever the map looks at.  :class:`MapFollower` is the part that does it:

* it observes the leafmap map's ``center``, ``zoom`` and ``bounds`` and, once the map has
  been still for :data:`DEBOUNCE` seconds, asks :meth:`ViewLoader.plan
  <tessera_explore.io.viewport.ViewLoader.plan>` about the view;
* a view that fits is read on a thread of its own (never the session's worker, so clicks
  on what is shown go on): depth 16 first where the store has it, its false colour
  computed there from the store's statistics (:class:`~tessera_explore.project.store_colours.StoreColours`:
  the same colour for the same embedding in every view and zone), while the full depth
  is read by :meth:`ViewLoader.load_async`; each depth becomes one short job on the
  worker that swaps the area (:meth:`Session.replace_arrays
  <tessera_explore.widgets.session.Session.replace_arrays>`), installs the colours and
  redraws every layer (:meth:`ExplorerController.redraw
  <tessera_explore.widgets.controller.ExplorerController.redraw>`: the class map retrained
  on the labels, those outside the view through their stored vectors, the similarity to
  the last query and the trust layer follow);
* the last views (their arrays, colours and prepared int8 form) are kept, so a pan back
  swaps at once with no read; older ones are let go (the loader releases their blocks);
* a view too large shows the store's coverage footprint and says "zoom in to load
  embeddings"; nothing is read.

Before each swap the labels inside the view being left get their training pixels
stored with them (``LabelStore.attach_samples``, at the view's depth) where they have
none of that year and depth, so the next view trains on them without rereading this one.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ..exceptions import TesseraExploreError
from .anywhere import DEFAULT_ZOOM, View, colour_view, explore_anywhere, follows, mercator, view_bbox_at
from .session import ExplorerClosedError

__all__ = ["MapFollower", "follows", "explore_anywhere", "view_bbox_at", "DEBOUNCE", "DEFAULT_ZOOM"]

log = logging.getLogger(__name__)

#: seconds the map must be still before its view is loaded.  The browser sends the map's
#: centre, zoom and bounds only at the end of a gesture (jupyter-leaflet sets them on
#: Leaflet's ``moveend`` and ``zoomend``, never during a drag), so this only has to gather
#: the few changes of one gesture (a zoom's ``zoomend`` and ``moveend`` come together)
DEBOUNCE = 0.15


class MapFollower:
    """Loads what the map looks at into the explorer (module docstring).

    Parameters
    ----------
    controller : the app's :class:`~tessera_explore.widgets.controller.ExplorerController`.
    map : the leafmap (ipyleaflet) map to follow.
    loader : the :class:`~tessera_explore.io.viewport.ViewLoader` of the store and year.
    colours : its :class:`~tessera_explore.project.store_colours.StoreColours`.
    first : the view the explorer opened on (a ``View`` made by :func:`explore_anywhere`).
    size : the map's size in screen pixels (width, height), until the browser says.
    debounce : seconds the map must be still before a view is loaded.

    Attributes
    ----------
    view_bbox, area : the lon/lat bbox loaded now and the embeddings behind it.
    message : what the map says about the view ("zoom in to load embeddings", progress).
    widget : the message and progress bar (a ``WidgetControl`` on the map shows it).
    """

    def __init__(self, controller, map, loader, colours, first: View, *, size: tuple[int, int],
                 debounce: float = DEBOUNCE):
        import ipyleaflet
        import ipywidgets as W

        from .overlay import map_add

        self.controller = controller
        self.session = controller.session
        self.state = controller.state
        self.map = map
        self.loader = loader
        self.colours = colours
        self.size = (int(size[0]), int(size[1]))
        self.debounce = float(debounce)
        self.view_bbox = first.bbox
        self.area = first.da
        self.message = ""
        self._views: OrderedDict[tuple, dict] = OrderedDict()
        self._remember(first)
        self._shown: View = first  # the view on the map now
        self._lock = threading.Lock()
        self._gen = 0
        self._done: Future = Future()
        self._done.set_result(first.bbox)
        self._asked: tuple | None = first.bbox
        self._timer: threading.Timer | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tessera-follow")
        self._query_vec: tuple | None = None  # (query lon/lat, its embedding vector)
        self._closed = False
        self.footprint = None  # the coverage layer, made when first needed
        self.text = W.HTML("")
        self.bar = W.FloatProgress(value=1.0, min=0.0, max=1.0, layout=W.Layout(width="180px", height="10px"))
        self.widget = W.VBox([self.text, self.bar], layout=W.Layout(max_width="260px"))
        self.widget.add_class("te-follow")
        self.control = ipyleaflet.WidgetControl(widget=self.widget, position="topright")
        map_add(map, self.control)
        self._show_depth(first.depth)
        map.observe(self._moved, names=["center", "zoom", "bounds"])
        self.session.when_closed(self.close)

    def __repr__(self) -> str:
        return f"MapFollower(view_bbox={self.view_bbox}, depth={self.state.depth}, views kept={len(self._views)})"

    # ------------------------------------------------------------------ the map
    def map_bbox(self) -> tuple[float, float, float, float]:
        """The lon/lat bbox the map shows now (from its centre and zoom, at the size the
        browser last reported; ``map.bounds`` lags behind a centre set from code)."""
        lat, lon = self.map.center  # Leaflet order; lon/lat from here on
        return view_bbox_at((float(lon), float(lat)), float(self.map.zoom), self.size)

    def _moved(self, change) -> None:
        if change["name"] == "bounds":
            b = change["new"]
            if b and len(b) == 2:  # ((south, west), (north, east)): learn the map's pixel size
                (s, w), (n, e) = b
                x0, y0 = mercator(w, n, float(self.map.zoom))
                x1, y1 = mercator(e, s, float(self.map.zoom))
                if x1 - x0 >= 16 and y1 - y0 >= 16:
                    self.size = (int(round(x1 - x0)), int(round(y1 - y0)))
        if self._closed:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = threading.Timer(self.debounce, self._settled)
        self._timer.daemon = True
        self._timer.start()

    def _settled(self) -> None:
        bbox = self.map_bbox()
        if bbox == self._asked:
            return
        try:
            self.go(bbox)
        except (TesseraExploreError, ExplorerClosedError) as err:
            if not self._closed:
                self.session.report(err, "loading the view")

    # ------------------------------------------------------------------ loading
    def go(self, bbox) -> Future:
        """Load the view ``bbox`` (west, south, east, north) and show it; the future gives the
        bbox once its last depth is shown (None for a view that shows the footprint).  A
        newer call makes an older one's remaining work moot (it is skipped)."""
        from ..io.grid import normalize_bbox

        if self._closed:
            raise ExplorerClosedError("this explorer is closed")
        bbox = tuple(float(v) for v in normalize_bbox(bbox))
        with self._lock:
            self._gen += 1
            gen = self._gen
            done = self._done = Future()
            self._asked = bbox
        plan = self.loader.plan(bbox)
        if plan.kind != "load":
            self._show_footprint(plan.message)
            done.set_result(None)
            return done
        self._hide_footprint(plan.message)
        kept = self._views.get(bbox, {})
        if plan.depths[-1] in kept:  # a pan back: swap at once, nothing to read
            self._views.move_to_end(bbox)
            self._swap_later(gen, kept[plan.depths[-1]], done, last=True)
            return done
        self._say(f"loading the view ({plan.shape[1]:,} x {plan.shape[0]:,} px, depth {plan.depths[0]})...", 0.0)
        self._pool.submit(self._load, gen, bbox, plan.depths, kept, done)
        return done

    def _current(self, gen: int) -> bool:
        return gen == self._gen and not self._closed

    def _load(self, gen: int, bbox: tuple, depths: tuple, kept: dict, done: Future) -> None:
        """The loader thread: each depth read, coloured and handed to the worker to swap."""
        try:
            fut = None
            for i, depth in enumerate(depths):
                if not self._current(gen):
                    done.set_result(None)
                    return
                last = i == len(depths) - 1
                if depth in kept:
                    if last or self.area is not kept[depth].da:
                        self._swap_later(gen, kept[depth], done if last else None, last=last)
                    continue
                if fut is None:
                    fut = self.loader.load_async(bbox, depth=depth, progress=self._progress(gen, depth))
                da = fut.result()
                # the next depth reads while this one is coloured and shown
                nxt = depths[i + 1] if not last and depths[i + 1] not in kept else None
                fut = (self.loader.load_async(bbox, depth=nxt, progress=self._progress(gen, nxt))
                       if nxt is not None and self._current(gen) else None)
                view = self._coloured(bbox, depth, da)
                self._remember(view)
                self._swap_later(gen, view, done if last else None, last=last)
        except Exception as err:
            if not done.done():
                done.set_exception(err)
            if self._current(gen):
                self.session.report(err, "loading the view")
                self._say(f"the view could not be loaded: {type(err).__name__}", 1.0)

    def _progress(self, gen: int, depth: int):
        def report(n: int, total: int) -> None:
            if self._current(gen) and total:
                self._say(f"loading the view at depth {depth}: {n:,} of {total:,} blocks", n / total)
        return report

    def _coloured(self, bbox: tuple, depth: int, da) -> View:
        """The view's false colour from the store's statistics (the same colours everywhere)."""
        return colour_view(bbox, depth, da, self.colours)

    def _remember(self, view: View) -> None:
        """Keep the last ``loader.keep_views`` views (their prepared form: the last two)."""
        self._views.setdefault(view.bbox, {})[view.depth] = view
        self._views.move_to_end(view.bbox)
        while len(self._views) > self.loader.keep_views:
            self._views.popitem(last=False)
        for key in list(self._views)[:-2]:
            for v in self._views[key].values():
                v.prepared = None

    def _keeps_prepared(self, view: View) -> bool:
        """True for a view kept among the last two (those keep their prepared form)."""
        with self._lock:
            return any(v is view for key in list(self._views)[-2:] for v in self._views[key].values())

    def _swap_later(self, gen: int, view: View, done: Future | None, *, last: bool) -> None:
        def job():
            if self._current(gen):
                self._swap(view)
            if done is not None and not done.done():
                done.set_result(view.bbox if self._current(gen) else None)

        try:
            self.session.submit("follow-view", job, f"showing the view at depth {view.depth}")
        except ExplorerClosedError:
            if done is not None and not done.done():
                done.set_result(None)

    # ------------------------------------------------------------------ the swap (the worker)
    def _swap(self, view: View) -> None:
        s, ctl = self.session, self.controller
        year = self.loader.year
        old = s.prepared.get(year)
        left = self._shown
        # the class map of the view being left, to show again on a pan back with nothing changed
        left.class_map = ctl.classifying.snapshot((left.bbox, left.depth))
        # and its prepared form: made after the view was shown (the first label's refit), it
        # would otherwise be made again on a pan back (a second or more for a 1 M px view)
        if old is not None and left.prepared is None and self._keeps_prepared(left):
            left.prepared = old
        self._store_vectors(old if old is not None else self.area)
        self._keep_query(old if old is not None else self.area)
        s.replace_arrays({year: view.da}, prepared={year: view.prepared} if view.prepared is not None else None)
        ctl.colour.install({year: view.components}, {year: view.rgb}, view.projection)
        query = ctl.maps.similarity_query
        inside = query is not None and s.pixel_at(*query) is not None
        if query is not None and not inside:
            ctl.maps.similarity_query = None  # redraw would look for it in this view
        self.view_bbox, self.area, self._shown = view.bbox, view.da, view
        self._show_depth(view.depth)
        try:
            if view.depth < self._final_depth(view.bbox):
                # a preview: labels stored at full depth cannot train at depth 16; the class
                # map follows with the full depth, a moment later
                ctl.colour.show(year)
            else:
                # a pan back with labels, model and years unchanged shows the class map it
                # had (no refit, no prediction); anything changed refits as always
                ctl.classifying.offer((view.bbox, view.depth), view.class_map)
                try:
                    ctl.redraw()
                finally:
                    ctl.classifying.offer(None, None)  # used or not, it never outlives this redraw
        finally:
            if query is not None and not inside:
                self._similarity_elsewhere(query)
        if str(self.state.status).startswith("showing the view"):  # the job's title: say it is done
            w, so, e, n = view.bbox
            s.say(f"view ({w:.3f}, {so:.3f}) to ({e:.3f}, {n:.3f}) shown at depth {view.depth}")
        view.prepared = s.prepared.get(year)
        with self._lock:
            if self._views.get(view.bbox, {}).get(view.depth) is view:
                self._views.move_to_end(view.bbox)

    def _final_depth(self, bbox: tuple) -> int:
        """The deepest depth the view ``bbox`` loads (its plan's last)."""
        plan = self.loader.plan(bbox)
        return plan.depths[-1] if plan.depths else self.loader.depths[-1]

    def _store_vectors(self, area) -> None:
        """Keep the training pixels of the labels inside the view being left with them,
        at its depth, where they have none of that year and depth."""
        from ..classify import label_sample

        store = self.session.store
        bands = int(self.area.sizes["band"])  # the view being left (``area`` is its prepared form)
        if bands != self.loader.depths[-1]:
            return  # the full depth follows: its vectors serve every view
        w, s, e, n = self.view_bbox
        todo = {}
        for lab in store.labels:
            smp = lab.sample
            if smp is not None and smp.bands == bands and int(smp.year) == int(self.loader.year):
                continue
            x0, y0, x1, y1 = lab.geometry.bounds
            if x1 < w or x0 > e or y1 < s or y0 > n:
                continue
            got = label_sample(area, lab)
            if got is not None:
                todo[lab.id] = got
        if todo:
            store.attach_samples(todo)

    def _keep_query(self, area) -> None:
        """The embedding of the similarity query, while it is in the view being left."""
        from ..classify import label_sample

        q = self.controller.maps.similarity_query
        if q is None or (self._query_vec is not None and self._query_vec[0] == q
                         and len(self._query_vec[1]) >= self.loader.depths[-1]):
            return
        got = label_sample(area, tuple(q))
        if got is not None:
            self._query_vec = (q, (got.codes[0].astype(np.float32) * got.scales[0]))

    def _similarity_elsewhere(self, query) -> None:
        """The similarity to a query left behind: to its stored embedding."""
        from ..classify import similarity

        maps, s = self.controller.maps, self.session
        vec = self._query_vec[1] if self._query_vec is not None and self._query_vec[0] == query else None
        area = s.area(int(self.state.year))
        bands = int(self.area.sizes["band"])
        if vec is None or len(vec) < bands:
            maps.similarity_query = query  # kept for the next view; this one has no vector for it
            return
        maps.similarity_map = similarity(area, vec[:bands])
        maps.similarity_query = query
        maps.render_similarity()

    # ------------------------------------------------------------------ messages and the footprint
    def _say(self, msg: str, fraction: float | None = None) -> None:
        self.message = msg
        self.text.value = f"<span class='te-follow-msg'>{msg}</span>" if msg else ""
        if fraction is not None:
            self.bar.value = max(0.0, min(1.0, float(fraction)))

    def _show_depth(self, depth: int) -> None:
        full = self.loader.depths[-1]
        self.state.depth = int(depth)
        self.state.depth_status = (f"depth {depth} of {full} (loading full depth...)" if depth < full
                                   else f"depth {depth}")
        w, s, e, n = self.view_bbox
        self._say(f"view ({w:.3f}, {s:.3f}, {e:.3f}, {n:.3f}) at depth {depth}"
                  + ("; loading full depth..." if depth < full else ""), 1.0)

    def _show_footprint(self, message: str) -> None:
        import ipyleaflet

        from ..io.viewport import coverage_footprint
        from .overlay import map_add

        if self.footprint is None:
            data = coverage_footprint(self.loader.store, year=self.loader.year)
            self.footprint = ipyleaflet.GeoJSON(data=data, name="store coverage", style={
                "color": "#d81b60", "weight": 2, "fillOpacity": 0.08, "interactive": False})
            map_add(self.map, self.footprint)
        self.footprint.visible = True
        self._say(message or "zoom in to load embeddings", 1.0)

    def _hide_footprint(self, message: str) -> None:
        if self.footprint is not None:
            self.footprint.visible = False
        if message:
            self._say(message)

    # ------------------------------------------------------------------ waiting and closing
    def wait(self, timeout: float | None = 120.0) -> None:
        """Block until the latest view asked for is shown (and the worker is idle)."""
        if self._timer is not None and self._timer.is_alive():
            self._timer.join(timeout)
        try:
            self._done.result(timeout)
        except TimeoutError:
            raise TimeoutError("the view is still loading") from None
        self.session.wait(timeout)

    def close(self) -> None:
        """Stop following the map; views kept in memory are let go."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        try:
            self.map.unobserve(self._moved, names=["center", "zoom", "bounds"])
        except ValueError:
            pass
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._views.clear()
        self.loader.release()
