"""``explore()``: the explorer app, composed of state, controller and views."""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from typing import Any

from ..exceptions import TesseraExploreError
from .controller import ExplorerController
from .notebook_js import load_bokeh_js
from .state import ExplorerState

__all__ = ["Explorer", "explore"]

DEFAULT_LABELS = "tessera_labels.geojson"

# label files open in this process -> their store, so two apps on one file share it
_STORES: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
# stores opened by explore() -> number of open apps using each (the last one closes it)
_USERS: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


class Explorer:
    """One explorer session: ``state`` (traits), ``controller`` (compute), ``labels`` (the
    :class:`~tessera_explore.LabelStore`), and the views; displays as its ``widget``.

    Made by :func:`explore`.  Everything a user does with the mouse has a method here
    too, for scripts and tests: ``click(lon, lat)``, ``add_class``, ``undo``, ``export``...
    """

    def __init__(self, state: ExplorerState, controller: ExplorerController, map_view, panel, scatter_view,
                 widget, owns_store: bool):
        self.state = state
        self.controller = controller
        self.labels = controller.store
        self.map_view = map_view
        self.map = map_view.map
        self.panel = panel
        self.scatter = scatter_view
        self.widget = widget
        self._owns_store = owns_store
        self._closed = False
        self.follower = None  # explore anywhere: the MapFollower (widgets/follow.py)
        self.region = None  # and its map-region action (widgets/region_panel.py)

    @property
    def view_bbox(self) -> tuple:
        """The lon/lat bbox (west, south, east, north) of the embeddings explored now."""
        if self.follower is not None:
            return self.follower.view_bbox
        return tuple(float(v) for v in self.area.rio.transform_bounds("EPSG:4326"))

    @property
    def area(self):
        """The embeddings DataArray explored now (of the year shown)."""
        return self.controller.arrays[int(self.state.year)]

    # display
    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        st = self.state
        return (f"Explorer(years={list(st.years)}, year={st.year}, mode={st.mode!r}, {st.n_labels} labels, "
                f"classes={list(st.classes)}, labels file={self.labels.path!r})")

    # the same actions as the widgets
    def click(self, lon: float, lat: float) -> str | None:
        """Act as a map click at lon/lat (in the current mode)."""
        return self.map_view.click(lon, lat)

    def add_class(self, name: str, color: str | None = None) -> str:
        """Add a class and make it the active one; ``color`` defaults to the class's colour
        by name (:func:`~tessera_explore.widgets.colours.class_colour`)."""
        from .colours import class_colour

        if color is None and isinstance(name, str):
            color = class_colour(name, self.state.colors.values())
        return self.controller.add_class(name, color)

    def undo(self) -> str:
        return self.controller.undo()

    def redo(self) -> str:
        return self.controller.redo()

    def clear(self) -> str:
        return self.controller.clear()

    def save(self) -> str:
        return self.controller.save()

    def export(self, folder: str | None = None) -> list[str]:
        """Export the maps and labels (waits for the files)."""
        return self.controller.export(folder).result()

    @property
    def class_map(self):
        """The latest class map (a DataArray of class indices), or None."""
        return self.controller.class_map()

    def wait(self, timeout: float | None = 120.0, *, full_depth: bool = True) -> Explorer:
        """Wait until the app has finished the work queued so far: with ``full_depth``
        (default) also the background read of full depth and the switch to it, when the
        app opened a store's 16-band prefix first.  After :meth:`close` there is nothing
        left to wait for."""
        if self._closed:
            return self
        if self.follower is not None:
            self.follower.wait(timeout)
        if full_depth:
            self.controller.depth.wait(timeout)
        self.controller.wait(timeout)
        return self

    @property
    def closed(self) -> bool:
        """True after :meth:`close`: the labels can still be read, never changed."""
        return self._closed

    def close(self) -> None:
        """Stop the worker thread, close the widgets and, when this is the last open app
        on a label store that :func:`explore` opened, close the store (which releases the
        label file's lock).  Label edits, saving and the panel's buttons raise
        :class:`~tessera_explore.exceptions.LabelError` afterwards."""
        if self._closed:
            return
        self._closed = True
        self.controller.close()
        self.widget.close()
        if self._owns_store:
            release_label_store(self.labels)


def _share_store(store) -> None:
    _USERS[store] = _USERS.get(store, 0) + 1


def release_label_store(store) -> None:
    """One app fewer on ``store``; the last one closes it (and its file lock)."""
    n = _USERS.get(store, 0) - 1
    if n > 0:
        _USERS[store] = n
        return
    _USERS.pop(store, None)
    for path, other in list(_STORES.items()):
        if other is store:
            _STORES.pop(path, None)
    store.close()


#: how the app looks: status lines wrap instead of being cut, sizes readable on a
#: projector, and a note in the map's background that shows only where no basemap tile
#: covers it (offline)
_OFFLINE_NOTE = ("data:image/svg+xml;utf8,<svg xmlns='http://www.w3.org/2000/svg' width='360' height='40'>"
                 "<text x='8' y='24' font-family='sans-serif' font-size='15' fill='%23555'>"
                 "basemap: no tiles (the OpenStreetMap basemap needs the network)</text></svg>")
CSS = f"""<style>
.te-explorer .te-panel .widget-html-content, .te-explorer .te-panel .jupyter-widget-html-content,
.te-explorer .te-help .widget-html-content, .te-explorer .te-help .jupyter-widget-html-content {{
  white-space: normal; overflow-wrap: anywhere; line-height: 1.35; overflow: visible; }}
.te-explorer .te-panel .widget-html, .te-explorer .te-panel .jupyter-widget-html {{ height: auto; }}
.te-explorer .te-panel {{ font-size: 14px; box-sizing: border-box; padding-left: 6px; }}
.te-explorer .te-panel .widget-hbox, .te-explorer .te-panel .jupyter-widget-hbox {{ max-width: 100%; }}
.te-explorer .te-panel button {{ min-width: max-content; }}
.te-explorer .te-panel .te-more {{ box-sizing: border-box; max-width: 100%; margin-right: 2px; }}
.te-explorer .te-top {{ display: flex; flex-flow: row wrap; align-items: flex-start; width: 100%;
  max-width: 100%; box-sizing: border-box; gap: 4px 0; }}
.te-explorer .te-bottom {{ display: flex; flex-flow: row wrap; max-width: 100%; }}
.te-explorer .te-area-table table, .te-explorer .te-learning-curve table {{ overflow-wrap: normal;
  word-break: normal; }}
.te-explorer .te-area-table td, .te-explorer .te-learning-curve td {{ white-space: nowrap; padding: 0 4px; }}
.te-explorer .te-area-table th {{ padding: 0 4px; vertical-align: bottom; }}
.te-explorer .te-area-table .widget-html-content, .te-explorer .te-area-table .jupyter-widget-html-content {{
  overflow-x: auto; }}
.te-explorer .te-map-status {{ margin: 0; width: auto; }}
.te-explorer .te-map-status .widget-html-content, .te-explorer .te-map-status .jupyter-widget-html-content {{
  font: 13px/1.3 sans-serif; background: rgba(255,255,255,0.9); padding: 3px 8px; border-radius: 4px;
  white-space: normal; max-width: min(420px, 55vw); box-shadow: 0 0 3px rgba(0,0,0,0.35); height: auto; }}
.te-explorer .te-map-status .widget-html-content:empty,
.te-explorer .te-map-status .jupyter-widget-html-content:empty {{ display: none; }}
.te-explorer .te-map-error {{ color: #b00020; font-weight: bold; }}
.te-explorer .te-status, .te-explorer .te-depth, .te-explorer .te-accuracy, .te-explorer .te-notice,
.te-explorer .te-error {{
  margin: 2px 0; }}
.te-explorer .te-map.te-basemap.leaflet-container {{
  background: #e4e4e4 url("{_OFFLINE_NOTE}") no-repeat 8px 8px; }}
</style>"""


def _arrays(source: Any, *, year, years, bbox, depth: int | None = None) -> tuple[dict, list[str]]:
    """``({year: embeddings}, notes)``: the arrays to explore and what was said about them
    (``depth``: the nested prefix of a store source to open; other years follow it)."""
    import xarray as xr

    from ..io.open import available_years, open_embeddings, reopen

    if isinstance(source, dict):
        return {int(y): a for y, a in source.items()}, []
    if isinstance(source, xr.DataArray):
        first = source
    else:
        first = open_embeddings(source, bbox=bbox, year=year, **({"depth": depth} if depth else {}))
    out = {int(first.coords["year"]) if "year" in first.coords else int(year or 0): first}
    notes = []
    auto = years is None
    if auto:
        want = available_years(first)
    elif isinstance(years, dict):
        out.update({int(y): a for y, a in years.items()})
        want = []
    else:
        want = [int(y) for y in years]
    for y in want:
        if y in out:
            continue
        try:
            out[y] = reopen(first, y)
        except TesseraExploreError as err:
            if not auto:  # asked for by name: say so
                raise
            notes.append(f"{y} left out ({err})")
    return out, notes


def explore(
    source: Any,
    *,
    center: Sequence[float] | None = None,
    zoom: float | None = None,
    year: int | None = None,
    years: Any = None,
    bbox: Sequence[float] | None = None,
    labels: Any = None,
    classes: Any = None,
    model: str = "knn",
    scatter: bool = True,
    basemap: bool = True,
    live_model: Any = None,
    live_stac: Any = "planetary-computer",
    live_cache: Any = None,
    export_dir: str | None = None,
    map_size: tuple[str, str] = ("700px", "560px"),
    depth_first: bool = True,
) -> Explorer:
    """Open the explorer: a map to label by clicking, with classes, similarity, change and
    a projection scatter linked to the map.

    Parameters
    ----------
    source : a store to explore anywhere (a dataset name such as ``"v1.1"``, a store URL or
        folder, a ``fetch_region`` copy, or a :class:`~tessera_explore.io.viewport.ViewLoader`)
        without ``bbox``: the explorer follows the map (``widgets/follow.py``; ``center``
        (lon, lat) and ``zoom`` place it; ``app.view_bbox`` and ``app.area`` are what is
        loaded now); or an embeddings DataArray (``open_embeddings``, the demo, ``embed_area``), a
        ``{year: DataArray}`` dict on one grid, or a source for
        :func:`~tessera_explore.open_embeddings` (with ``bbox`` and ``year``).
    year : the year shown first (default the source's).
    years : other years to open for the year selector and change mode: a list of years
        (reopened from the same folder on the same grid), a ``{year: DataArray}`` dict, or
        None for every year the source folder holds.  ``[]`` opens none.
    labels : the label file (GeoJSON; the upstream JSON, CSV or vector files are converted),
        or a :class:`~tessera_explore.LabelStore`.  Every click is saved to it at once, and
        opening the app on it again brings the labels back.  Default
        ``./tessera_labels.geojson``.  A second app on the same file in this kernel shares
        its labels; one in another process is refused.
    classes : class names (or ``{name: colour}``) to start a label file that has no classes
        yet (a name without a colour gets its default by name: woods green, water blue,
        fields yellow...).  A file with classes keeps its own: classes removed in an earlier
        session stay removed (the notice line names any of ``classes`` not added).
    model : the classifier, ``"knn"``, ``"logreg"`` or ``"rf"``.
    scatter : show the projection scatter (HoloViews, datashader).
    basemap : show the OpenStreetMap basemap (needs the network; overlays work without).
    live_model, live_stac, live_cache : enable live embedding of a rectangle drawn on the
        map (:func:`~tessera_explore.embed_area` with this model, STAC source and cache).
    export_dir : folder of the export button (default beside the label file).
    depth_first : when ``source`` is a store with nested prefixes (the v2 stores), open its
        16-band prefix first (about a sixth of the bytes): the map is drawn and clicks label
        and train at once, while full depth is read in the background and then replaces it
        in every layer (the classifier retrained on full-depth vectors).  The panel says
        which depth is shown and, once both are in, what the prefix cost on this area.
        ``False`` opens full depth at once.  Arrays are always explored as they are.
    """
    from .depth import plan
    from .follow import explore_anywhere, follows

    if follows(source, bbox=bbox, years=years) or center is not None or zoom is not None:
        return explore_anywhere(source, center=center, zoom=zoom, year=year, labels=labels, classes=classes,
                                model=model, scatter=scatter, basemap=basemap, export_dir=export_dir,
                                map_size=map_size)
    full = plan(source, years=years, enabled=depth_first)
    arrays, notes = _arrays(source, year=year, years=years, bbox=bbox, depth=full.first if full else None)
    shown = int(year) if year is not None and int(year) in arrays else next(iter(arrays))
    store, owns = open_label_store(labels, arrays[shown], shown, notes)
    try:
        add_classes(store, classes, notes)
        state = ExplorerState(model=model)
        controller = ExplorerController(state, arrays, store, year=shown, label_year=shown, live_model=live_model,
                                        live_stac=live_stac, live_cache=live_cache, export_dir=export_dir,
                                        max_pixels=screen_pixels(map_size), full_depth=full)
    except Exception:
        if owns:
            release_label_store(store)
        raise
    try:
        return build_app(state, controller, owns, notes, scatter=scatter, basemap=basemap, map_size=map_size,
                      draw=live_model is not None)
    except Exception:
        controller.close()
        if owns:
            release_label_store(store)
        raise


def open_label_store(labels: Any, first, shown: int, notes: list[str]):
    """``(store, owns)``: the label store of ``labels`` (a store, or a file opened or shared
    with another explorer of this kernel), and whether the explorer must release it."""
    from ..classify import LabelStore

    if isinstance(labels, LabelStore):
        return labels, False
    path = os.path.abspath(os.fspath(labels if labels is not None else DEFAULT_LABELS))
    store = _STORES.get(path)
    if store is not None and not store.closed:
        notes.append(f"{path} is also open in another explorer of this kernel: both show the same labels")
    else:
        # takes the file's lock (path + ".lock"): refused while another live process
        # holds it; a stale lock is taken over, with a notice
        store = LabelStore.open(path, dataset_version=first.attrs.get("dataset_version"), year=shown, create=True,
                                dataset_variant=first.attrs.get("dataset_variant"))
        if store.lock_notice:
            notes.append(store.lock_notice)
        _STORES[path] = store
        if store.path != path:
            _STORES[store.path] = store
    _share_store(store)
    return store, True


def add_classes(store, classes: Any, notes: list[str] | None = None) -> None:
    """Start a label file without classes with ``classes`` (names, or ``{name: colour}``;
    a name without a colour gets its default by name,
    :func:`~tessera_explore.widgets.colours.class_colour`).

    A label file that has classes keeps its own: a class removed in an earlier session
    stays removed, and a name of ``classes`` the file lacks is not added (``notes`` says
    which; the panel's "add class" or ``Explorer.add_class`` adds it)."""
    from .colours import class_colour

    if not classes:
        return
    items = list(classes.items()) if isinstance(classes, dict) else [(c, None) for c in classes]
    have = store.classes
    if have:
        missing = [name for name, _ in items if name not in have]
        if missing and notes is not None:
            notes.append(f"classes {missing} not added: the label file has its own classes ({list(have)}), and "
                         "classes removed before stay removed; add them with 'add class'")
        return
    for name, color in items:
        if name not in store.classes:
            store.add_class(name, color if color is not None else class_colour(name, store.classes.values()))


def screen_pixels(map_size) -> int:
    """The map's size on screen in pixels: the budget of its overlay images (an image
    with more pixels than the screen shows only costs time to compute, send and decode)."""
    def px(v, default):
        try:
            return int(str(v).strip().replace("px", ""))
        except ValueError:  # "100%" and the like: a generous laptop screen
            return default

    return max(px(map_size[0], 1000), 200) * max(px(map_size[1], 800), 200)


def build_app(state, controller, owns, notes, *, scatter, basemap, map_size, draw) -> Explorer:
    import ipywidgets as W

    from .views import MapView, PanelView, ScatterView

    if scatter:
        load_bokeh_js(once=True)
    map_view = MapView(state, controller, basemap=basemap, draw=draw, width=map_size[0], height=map_size[1])
    panel = PanelView(state, controller)
    controller.start()  # false colour now; labels and classifier in the background
    scatter_view = ScatterView(state, controller) if scatter else None
    if scatter_view is None:  # no scatter: nothing for the PCA/UMAP toggle to switch
        panel.guided.projection.layout.display = "none"
    # the map grows and shrinks with the width the app gets, the panel keeps 320-420 px
    # beside it, and goes under the map where both do not fit on one row (below about
    # 800 px: MapView.MAP_BASIS + PanelView.PANEL_MIN; CSS .te-top)
    top = W.Box([map_view.map, panel.widget], layout=W.Layout(display="flex", flex_flow="row wrap",
                                                               align_items="flex-start", width="100%"))
    top.add_class("te-top")
    help_text = W.HTML(
        CSS + "<div style='max-width:420px;font-size:95%'><b>How to use</b><br>"
        "Add a class, pick it, and click the map to label pixels: the classifier retrains after every click "
        "and the class map redraws. In <i>draw</i> mode, a polygon or rectangle drawn with the map's toolbar "
        "labels every pixel inside it. <i>similar</i> mode colours pixels like the clicked one; <i>change</i> "
        "mode shows how much each pixel changed between two years. Box or lasso select in the scatter "
        "highlights those pixels on the map; a map click marks its pixel in the scatter. "
        "<i>suggest</i> steps the map through pixels whose labels would help most: pick each one's class or skip. "
        "<i>validate</i> steps through a random sample of the class map; your answers stay apart from the training "
        "labels and give error-adjusted areas. <i>hatch low trust</i> marks where the map is unsure or extrapolates."
        + (" In <i>live</i> mode, a rectangle drawn on the map is embedded live from Sentinel-1/2 imagery."
           if draw else "") + "</div>")
    help_text.add_class("te-help")
    bottom = W.Box([scatter_view.widget, help_text] if scatter_view is not None else [help_text],
                   layout=W.Layout(display="flex", flex_flow="row wrap", width="100%"))
    bottom.add_class("te-bottom")
    widget = W.VBox([top, bottom], layout=W.Layout(width="100%"))
    widget.add_class("te-explorer")
    app = Explorer(state, controller, map_view, panel, scatter_view, widget, owns)
    saved = (f"labels are saved to {controller.store.path}" if controller.store.path
             else "labels are kept in memory (pass labels= to save them)")
    state.notice = "; ".join([*notes, saved])
    return app
