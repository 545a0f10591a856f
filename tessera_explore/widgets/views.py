"""Explorer views: widgets that show the state and turn user events into controller calls.

Views hold no data and compute nothing beyond what a widget needs.  The map is the one
place where Leaflet's ``[lat, lon]`` order is met: it is converted to lon/lat on the way
in (clicks, drawn rectangles) and back on the way out (label markers), nowhere else.
Every callback runs through :func:`guarded`, so an exception shows in the app's error
line instead of vanishing into the kernel log.
"""

from __future__ import annotations

import functools
import html
import logging
import threading
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from .controller import LAYERS, ExplorerClosedError, ExplorerController
from .overlay import _map_add, _map_remove
from .state import MODELS, ExplorerState

__all__ = ["MapView", "PanelView", "ScatterView", "guarded"]

log = logging.getLogger(__name__)

LABEL_COLOR = "#ff9800"
LIVE_COLOR = "#00bcd4"

LAYER_TITLES = {
    "false_colour": "embedding false colour (PCA)",
    "live": "live embedding (PCA)",
    "change": "change between years",
    "classes": "classes",
    "confidence": "confidence",
    "trust": "low trust (hatched)",
    "similarity": "similarity",
    "selection": "scatter selection",
}


def guarded(state: ExplorerState, doing: str) -> Callable:
    """Decorator: run a widget callback, showing any exception in ``state.error``."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except ExplorerClosedError:
                raise  # the app is gone: nothing to show it in
            except Exception as err:
                log.debug("explorer callback %s failed", doing, exc_info=True)
                state.error = f"{doing} failed: {type(err).__name__}: {err}"
                return None

        return inner

    return wrap


def on_main_thread(fn: Callable[[], Any]) -> None:
    """Run ``fn`` on the kernel's main thread (its event loop), where Bokeh documents are
    changed; at once when called there or outside a kernel (scripts, tests)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        try:
            from IPython import get_ipython

            loop = getattr(getattr(get_ipython(), "kernel", None), "io_loop", None)
        except ImportError:
            loop = None
        if loop is not None:
            loop.add_callback(fn)  # thread-safe
            return
    fn()


# ---------------------------------------------------------------------------- map
class MapView:
    """A leafmap map with the controller's layers, label markers and (optionally) a
    rectangle tool for live embedding."""

    def __init__(self, state: ExplorerState, controller: ExplorerController, *, m: Any = None,
                 width: str = "620px", height: str = "560px", basemap: bool = True, draw: bool = False):
        import ipyleaflet

        self.state = state
        self.controller = controller
        (s, w), (n, e) = _latlon_bounds(controller)
        center = ((s + n) / 2, (w + e) / 2)
        zoom = _zoom_for(w, s, e, n, width, height)
        if m is None:
            import leafmap.leafmap as leafmap

            with warnings.catch_warnings():  # leafmap passes its own options on to ipyleaflet too
                warnings.filterwarnings("ignore", "Passing unrecognized arguments", DeprecationWarning)
                m = leafmap.Map(center=center, zoom=zoom, draw_control=False, toolbar_control=False,
                                measure_control=False, fullscreen_control=False, attribution_control=True,
                                scroll_wheel_zoom=True)
            if not basemap:  # no tile layer at all (leafmap's OpenStreetMap is the first)
                for layer in list(m.layers):
                    if isinstance(layer, ipyleaflet.TileLayer):
                        _map_remove(m, layer)
        _one_attribution(m)
        if basemap:  # shown (in the map's background) only where no tile covers it: offline
            m.add_class("te-basemap")
        m.layout.width, m.layout.height, m.layout.flex = width, height, "0 0 auto"
        m.add_class("te-map")
        self.map = m
        self.center, self.zoom = center, zoom
        self.layers: dict[str, Any] = {}
        self._legends: dict[str, str | None] = {}
        self._palettes: dict[str, Any] = {}
        self._empty: set[str] = set()  # layers the controller has withdrawn
        self._legend = ipyleaflet.WidgetControl(widget=_html("", "te-legend"), position="bottomright")
        self.markers = ipyleaflet.GeoJSON(data={"type": "FeatureCollection", "features": []}, name="labels",
                                          point_style={"radius": 6}, visible=False)
        _map_add(m, self.markers)
        m.on_interaction(self._on_interaction)
        controller.on("layer", self._on_layer)
        controller.on("labels", lambda store: self.draw_labels())
        # the guided walk: numbered markers (made once per walk) and a ring on the current one
        self.walk_markers = None
        self.walk_ring = None
        self._walk = None
        controller.on("walk", self._on_walk)
        state.observe(lambda ch: self._visibility(), names=["mode", "show_classes", "show_false_colour",
                                                            "show_confidence", "show_trust"])
        state.observe(self._opacity, names=["class_opacity"])
        # a draw control only in the modes that draw (so that clicks made while drawing are
        # never taken for point labels): polygons and rectangles in draw mode, rectangles in
        # live mode.  leafmap closes a control it removes, so each mode gets a new one.
        self.live = bool(draw)
        self.draw = None
        state.observe(lambda ch: self._draw_tools(), names="mode")
        self._draw_tools()
        self.draw_labels()

    # events from the browser
    def _on_interaction(self, **event) -> None:
        if event.get("type") != "click":
            return
        lat, lon = event["coordinates"]  # Leaflet order; from here on lon, lat
        self.click(float(lon), float(lat))

    def click(self, lon: float, lat: float) -> str | None:
        """What a click at lon/lat does (also the way tests click)."""
        return guarded(self.state, "the map click")(self.controller.click)(lon, lat)

    def _draw_tools(self) -> None:
        import ipyleaflet

        mode = self.state.mode
        if self.draw is not None:
            if self.draw in self.map.controls:
                _map_remove(self.map, self.draw)
            self.draw = None
        if mode not in ("draw", "live"):
            return
        shape = {"shapeOptions": {"color": LIVE_COLOR if mode == "live" else LABEL_COLOR, "fillOpacity": 0.1}}
        self.draw = ipyleaflet.DrawControl(polygon=shape if mode == "draw" else {}, rectangle=shape, polyline={},
                                           circlemarker={}, circle={}, marker={}, edit=False, remove=False)
        self.draw.on_draw(self._on_draw)
        _map_add(self.map, self.draw)

    def _on_draw(self, control, action, geo_json) -> None:
        @guarded(self.state, "the drawn shape")
        def go():
            if action != "created":
                return
            ring = np.asarray(geo_json["geometry"]["coordinates"][0], float)  # GeoJSON: lon, lat
            control.clear()
            if self.state.mode == "live":
                bbox = (ring[:, 0].min(), ring[:, 1].min(), ring[:, 0].max(), ring[:, 1].max())
                self.controller.embed_live(bbox)
            else:
                self.controller.add_polygon(ring.tolist())

        go()

    # events from the controller (any thread)
    def _on_layer(self, name: str, img) -> None:
        import ipyleaflet

        layer = self.layers.get(name)
        if img is None:
            self._empty.add(name)
            if layer is not None:
                layer.visible = False
            self._legends.pop(name, None)
            self._visibility()
            return
        self._empty.discard(name)
        self._palettes[name] = img.info.get("legend_categories")
        if layer is None:
            layer = ipyleaflet.ImageOverlay(url=img.url, bounds=img.bounds, name=LAYER_TITLES.get(name, name),
                                            opacity=self._opacity_of(name))
            self.layers[name] = layer
            self._insert(name, layer)
        else:
            layer.bounds = img.bounds
            layer.url = img.url
            layer.visible = True
        self._legends[name] = img.legend
        self._visibility()

    def _insert(self, name: str, layer) -> None:
        """Add ``layer`` under every layer that LAYERS puts above it (markers stay on top)."""
        m = self.map
        rank = {n: i for i, n in enumerate(LAYERS)}
        layers = list(m.layers)
        pos = len(layers)
        for i, other in enumerate(layers):
            other_name = next((n for n, l in self.layers.items() if l is other), None)
            if other is self.markers or (other_name is not None and rank[other_name] > rank[name]):
                pos = i
                break
        m.layers = tuple(layers[:pos] + [layer] + layers[pos:])

    def _opacity_of(self, name: str) -> float:
        if name in ("classes", "confidence"):
            return float(self.state.class_opacity)
        return {"false_colour": 1.0, "selection": 0.8, "similarity": 0.85, "change": 0.7, "live": 1.0,
                "trust": 0.85}.get(name, 1.0)

    def _opacity(self, change) -> None:
        for name in ("classes", "confidence"):
            layer = self.layers.get(name)
            if layer is not None:
                layer.opacity = float(change["new"])
        self._visibility()

    def _legend_of(self, name: str) -> str | None:
        """The legend of a layer, class swatches painted at the layer's opacity over the
        mid grey of the false colour, so they look like the map."""
        from .legend import legend_html

        cats = self._palettes.get(name)
        if cats and name in ("classes", "change"):
            return legend_html(title=LAYER_TITLES.get(name, name), categories=cats,
                               swatch_opacity=self._opacity_of(name))
        return self._legends.get(name)

    def _visibility(self) -> None:
        st = self.state
        want = {
            "false_colour": st.show_false_colour,
            "classes": st.show_classes and st.mode in ("label", "draw") and not st.show_confidence,
            "confidence": st.show_classes and st.mode in ("label", "draw") and st.show_confidence,
            "similarity": st.mode == "similarity",
            "change": st.mode == "change",
            "trust": st.show_trust,
        }
        for name, layer in self.layers.items():
            if name in want:
                layer.visible = bool(want[name]) and name not in self._empty
        # the legend of the layer that the mode is about
        classes = "confidence" if st.show_confidence else "classes"
        shown = {"label": classes, "draw": classes, "similarity": "similarity", "change": "change",
                 "live": "live"}[st.mode]
        legend = self._legend_of(shown) if want.get(shown) else None
        trust = self._legends.get("trust")
        if want["trust"] and trust and "trust" not in self._empty:  # the hatching's greys, below
            legend = (legend or "") + trust
        self._set_legend(legend)

    def _set_legend(self, legend_html: str | None) -> None:
        import ipyleaflet

        if legend_html:
            if self._legend is None:  # a removed control is closed: make a new one
                self._legend = ipyleaflet.WidgetControl(widget=_html("", "te-legend"), position="bottomright")
            self._legend.widget.value = legend_html
            if self._legend not in self.map.controls:
                _map_add(self.map, self._legend)
        elif self._legend is not None and self._legend in self.map.controls:
            _map_remove(self.map, self._legend)
            self._legend = None

    def _on_walk(self, walk) -> None:
        """Numbered markers of the walk's points, the current one ringed and centred."""
        import ipyleaflet

        if walk is not self._walk:  # a new walk (or none): replace the markers
            self._clear_walk()
            self._walk = walk
            if walk is None:
                return
            color = "#1565c0" if walk.kind == "suggest" else "#6a1b9a"
            markers = []
            for stop in walk.stops:
                icon = ipyleaflet.DivIcon(html=f"<div class='te-walk-number' style='background:{color}'>{stop.number}</div>",
                                          icon_size=[22, 22], icon_anchor=[11, 11])
                markers.append(ipyleaflet.Marker(location=(stop.lat, stop.lon), icon=icon, draggable=False,
                                                 keyboard=False, title=f"{walk.kind} point {stop.number}"))
            self.walk_markers = ipyleaflet.LayerGroup(layers=markers, name="guided points")
            self.walk_ring = ipyleaflet.CircleMarker(location=(walk.stops[0].lat, walk.stops[0].lon), radius=16,
                                                     color="#ff00ff", weight=3, fill=False, name="current point")
            _map_add(self.map, self.walk_markers)
            _map_add(self.map, self.walk_ring)
        if walk is None:
            return
        for stop, marker in zip(walk.stops, self.walk_markers.layers):
            marker.opacity = 1.0 if stop.open else 0.45
        cur = walk.current
        self.walk_ring.visible = cur is not None
        if cur is not None:
            self.walk_ring.location = (cur.lat, cur.lon)
            self.map.center = (cur.lat, cur.lon)

    def _clear_walk(self) -> None:
        if self.walk_markers is not None:
            markers = list(self.walk_markers.layers)
            _map_remove(self.map, self.walk_markers)
            for m in markers:
                icon = m.icon
                m.close()
                if icon is not None:
                    icon.close()
            _map_remove(self.map, self.walk_ring)
        self.walk_markers = self.walk_ring = None

    def draw_labels(self) -> None:
        """Show the store's labels: one GeoJSON layer whose data is replaced in place, so a
        label change sends one message and never makes new widgets.  Points are circles
        with a dark outline and a white halo (readable on any class colour), polygons are
        outlined; none of them takes clicks (they go through to the map and the drawing
        tools)."""
        self.markers.data = labels_geojson(self.controller.store)
        self.markers.visible = bool(self.markers.data["features"])


#: how label markers are drawn: a white halo under a dark-outlined dot of the class colour
HALO = {"radius": 9, "color": "#ffffff", "weight": 3, "opacity": 0.95, "fill": False, "interactive": False}
DOT = {"radius": 6, "color": "#1a1a1a", "weight": 2, "opacity": 1.0, "fillOpacity": 1.0, "interactive": False}


def labels_geojson(store) -> dict:
    """The labels of ``store`` as a GeoJSON FeatureCollection with a Leaflet style per
    feature (``properties.style``, which ipyleaflet's GeoJSON layer applies)."""
    colors = store.classes
    feats = []
    for lab in store.labels:
        color = colors.get(lab.cls, "#888888")
        props = {"class": lab.cls, "id": lab.id}
        if lab.kind == "point":
            geom = {"type": "Point", "coordinates": [float(lab.lon), float(lab.lat)]}
            feats.append({"type": "Feature", "geometry": geom, "properties": {**props, "style": HALO}})
            feats.append({"type": "Feature", "geometry": geom,
                          "properties": {**props, "style": {**DOT, "fillColor": color}}})
        else:
            ring = [[float(x), float(y)] for x, y in lab.geometry.exterior.coords]
            style = {"color": "#1a1a1a", "weight": 4, "opacity": 0.9, "fill": False, "interactive": False}
            feats.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                          "properties": {**props, "style": style}})
            feats.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                          "properties": {**props, "style": {"color": color, "weight": 2, "fillColor": color,
                                                            "fillOpacity": 0.3, "interactive": False}}})
    return {"type": "FeatureCollection", "features": feats}


def _one_attribution(m) -> None:
    """leafmap adds an attribution control beside ipyleaflet's own: keep one."""
    import ipyleaflet

    seen = False
    for control in list(m.controls):
        if isinstance(control, ipyleaflet.AttributionControl):
            if seen:
                _map_remove(m, control)
            seen = True



def _latlon_bounds(controller: ExplorerController):
    """((south, west), (north, east)) of the area, as Leaflet wants it."""
    da = next(iter(controller.arrays.values()))
    west, south, east, north = da.rio.transform_bounds("EPSG:4326")
    return (south, west), (north, east)


def _zoom_for(west: float, south: float, east: float, north: float, width: str, height: str) -> int:
    """The largest whole zoom at which the box fits the map's pixel size."""
    def px(v: str, default: int) -> int:
        try:
            return int(str(v).replace("px", ""))
        except ValueError:
            return default

    w, h = px(width, 600), px(height, 500)

    def merc_y(lat):
        return np.log(np.tan(np.pi / 4 + np.radians(lat) / 2))

    for z in range(18, 1, -1):
        scale = 256 * 2**z
        dx = (east - west) / 360 * scale
        dy = (merc_y(north) - merc_y(south)) / (2 * np.pi) * scale
        if dx <= w * 0.95 and dy <= h * 0.95:
            return z
    return 2


def _html(value: str, css: str):
    import ipywidgets as W

    w = W.HTML(value)
    w.add_class(css)
    return w


# ---------------------------------------------------------------------------- panel
class PanelView:
    """The side panel: mode, classes, classifier, year, thresholds, actions, status."""

    def __init__(self, state: ExplorerState, controller: ExplorerController):
        self.state, self.controller = state, controller
        self._build_mode()
        self._build_classes()
        self._build_view()
        self._build_actions()
        self._build_status()
        self._wire()
        self.widget = self._layout()

    def _build_mode(self) -> None:
        """What the map does (a toggle per mode; live only with a live model)."""
        import ipywidgets as W

        modes = [("click", "label"), ("draw", "draw"), ("similar", "similarity"), ("change", "change")]
        tips = ["a click adds a point label of the active class",
                "a polygon or rectangle drawn with the map's toolbar labels every pixel inside it",
                "a click finds the pixels similar to the clicked one",
                "show the change between two years"]
        if self.controller.live_model is not None:
            modes.append(("live", "live"))
            tips.append("a rectangle drawn with the map's toolbar is embedded live from STAC imagery")
        self.mode = W.ToggleButtons(options=modes, value=self.state.mode, layout=W.Layout(width="310px"),
                                    style={"button_width": "56px" if len(modes) > 4 else "70px"}, tooltips=tips)
        self.mode.add_class("te-mode")
        W.link((self.state, "mode"), (self.mode, "value"))
        self.live_box = self._build_live_window() if self.controller.live_model is not None else None

    def _build_live_window(self):
        """Live mode's observation window: two dates (both empty: the year shown), shown in
        live mode only."""
        import ipywidgets as W

        st = self.state
        tip = "empty: the calendar year shown; else a window of at most one year"
        self.live_start = W.Text(value=st.live_start, placeholder="YYYY-MM-DD", description="live from",
                                 tooltip=tip, layout=W.Layout(width="300px"), style={"description_width": "110px"})
        self.live_end = W.Text(value=st.live_end, placeholder="YYYY-MM-DD", description="to", tooltip=tip,
                               layout=W.Layout(width="300px"), style={"description_width": "110px"})
        self.live_start.add_class("te-live-start")
        self.live_end.add_class("te-live-end")
        W.link((st, "live_start"), (self.live_start, "value"))
        W.link((st, "live_end"), (self.live_end, "value"))
        box = W.VBox([self.live_start, self.live_end, _html(f"<small>{tip}</small>", "te-live-note")])

        def show(_change=None):
            box.layout.display = "" if st.mode == "live" else "none"

        st.observe(show, names="mode")
        show()
        return box

    def _build_classes(self) -> None:
        """The classes: the active one, counts, add / rename / recolour / remove, the model."""
        import ipywidgets as W

        st = self.state
        self.active = W.ToggleButtons(options=list(st.classes), value=st.active_class or None,
                                      layout=W.Layout(width="300px"), style={"button_width": "140px"})
        self.active.add_class("te-classes")
        self.counts = _html("", "te-counts")
        self.new_name = W.Text(placeholder="class name", layout=W.Layout(width="150px"))
        self.new_name.add_class("te-new-class")
        self.add_btn = W.Button(description="add class", layout=W.Layout(width="90px"))
        self.add_btn.add_class("te-add-class")
        self.rename_btn = W.Button(description="rename", layout=W.Layout(width="70px"),
                                   tooltip="rename the active class to the name typed")
        self.color = W.ColorPicker(concise=True, value="#888888", layout=W.Layout(width="40px"),
                                   tooltip="colour of the active class")
        self.remove_btn = W.Button(description="remove class", layout=W.Layout(width="110px"))
        self.model = W.Dropdown(options=list(MODELS), value=st.model, description="classifier",
                                layout=W.Layout(width="300px"), style={"description_width": "110px"})
        W.link((st, "model"), (self.model, "value"))

    def _build_view(self) -> None:
        """Year, change year, opacity, thresholds and what is shown, linked to the state."""
        import ipywidgets as W

        st = self.state
        lay = W.Layout(width="300px")
        wide = {"description_width": "110px"}
        self.year = W.Dropdown(options=list(st.years), value=st.year, description="year", layout=lay, style=wide)
        self.year.add_class("te-year")
        self.change_from = W.Dropdown(options=[("other year", 0)] + [(str(y), y) for y in st.years],
                                      value=0, description="change from", layout=lay, style=wide)
        self.opacity = W.FloatSlider(value=st.class_opacity, min=0, max=1, step=0.05, description="class opacity",
                                     layout=lay, style=wide)
        self.confidence = W.FloatSlider(value=st.confidence_threshold, min=0, max=1, step=0.05,
                                        description="min confidence", layout=lay, style=wide,
                                        continuous_update=False)
        self.sim_thr = W.FloatSlider(value=st.similarity_threshold, min=-1, max=1, step=0.01,
                                     description="similarity ≥", layout=lay, style=wide, continuous_update=False)
        self.show_classes = W.Checkbox(value=st.show_classes, description="show classes", indent=False,
                                       layout=W.Layout(width="140px"))
        self.show_conf = W.Checkbox(value=st.show_confidence, description="show confidence", indent=False,
                                    layout=W.Layout(width="150px"))
        self.show_colour = W.Checkbox(value=st.show_false_colour, description="show false colour", indent=False,
                                      layout=W.Layout(width="150px"))
        for a, b in ((self.year, "year"), (self.change_from, "change_from"), (self.opacity, "class_opacity"),
                     (self.confidence, "confidence_threshold"), (self.sim_thr, "similarity_threshold"),
                     (self.show_classes, "show_classes"), (self.show_colour, "show_false_colour"),
                     (self.show_conf, "show_confidence")):
            W.link((st, b), (a, "value"))

    def _build_actions(self) -> None:
        """Undo, redo, clear, save, export; the guided walks."""
        import ipywidgets as W

        from .guided_panel import GuidedPanel

        self.undo_btn = W.Button(description="undo", layout=W.Layout(width="70px"))
        self.redo_btn = W.Button(description="redo", layout=W.Layout(width="70px"))
        self.clear_btn = W.Button(description="clear", layout=W.Layout(width="70px"))
        self.save_btn = W.Button(description="save", layout=W.Layout(width="70px"))
        self.export_btn = W.Button(description="export maps", layout=W.Layout(width="110px"))
        self.export_btn.add_class("te-export")
        self.guided = GuidedPanel(self.state, self.controller)

    def _build_status(self) -> None:
        """Progress, status, accuracy, the error line and the session's notice."""
        import ipywidgets as W

        self.status = _html("", "te-status")
        self.accuracy = _html("", "te-accuracy")
        self.notice = _html("", "te-notice")
        self.depth = _html("", "te-depth")  # which depth is shown, what the prefix costs (depth.py)
        self.progress = W.FloatProgress(value=0, min=0, max=1, layout=W.Layout(width="300px", height="12px"))
        self.error = _html("", "te-error")
        self.dismiss = W.Button(description="dismiss", layout=W.Layout(width="80px", display="none"))

    def _wire(self) -> None:
        """Buttons call the controller; state changes update the status widgets."""
        st, controller = self.state, self.controller
        g = functools.partial(guarded, st)
        self.add_btn.on_click(g("adding a class")(lambda _: self._add()))
        self.rename_btn.on_click(g("renaming the class")(lambda _: self._rename()))
        self.remove_btn.on_click(g("removing the class")(
            lambda _: controller.remove_class(st.active_class) if st.active_class else None))
        self.color.observe(g("recolouring")(self._recolour), names="value")
        self.active.observe(g("picking a class")(self._pick), names="value")
        self.undo_btn.on_click(g("undo")(lambda _: controller.undo()))
        self.redo_btn.on_click(g("redo")(lambda _: controller.redo()))
        self.clear_btn.on_click(g("clear")(lambda _: controller.clear()))
        self.save_btn.on_click(g("save")(lambda _: controller.save()))
        self.export_btn.on_click(g("export")(lambda _: controller.export()))
        self.dismiss.on_click(lambda _: setattr(st, "error", ""))

        st.observe(self._classes_changed, names=["classes", "colors", "counts", "active_class"])
        st.observe(lambda ch: setattr(self.status, "value", html.escape(ch["new"])), names="status")
        st.observe(lambda ch: setattr(self.accuracy, "value", html.escape(ch["new"])), names="accuracy")
        st.observe(lambda ch: setattr(self.notice, "value", f"<small>{html.escape(ch['new'])}</small>"),
                   names="notice")
        st.observe(lambda ch: setattr(self.progress, "value", ch["new"]), names="progress")
        st.observe(lambda ch: setattr(self.depth, "value", html.escape(ch["new"])), names="depth_status")
        self.depth.value = html.escape(st.depth_status)
        st.observe(self._busy, names="busy")
        st.observe(self._error, names="error")
        self._classes_changed(None)
        self.status.value = html.escape(st.status)

    def _layout(self):
        import ipywidgets as W

        row = W.HBox
        panel = W.VBox([
            _html("<b>on the map</b>", "te-h"), self.mode, *([self.live_box] if self.live_box is not None else []),
            _html("<b>classes</b>", "te-h"), self.active, self.counts,
            row([self.new_name, self.add_btn]), row([self.rename_btn, self.color, self.remove_btn]),
            self.model, row([self.undo_btn, self.redo_btn, self.clear_btn, self.save_btn]), self.export_btn,
            _html("<b>view</b>", "te-h"), self.year, self.change_from, row([self.show_classes, self.show_conf]),
            self.show_colour, self.opacity, self.confidence, self.sim_thr,
            self.guided.widget,
            self.progress, self.status, self.depth, self.accuracy, row([self.error, self.dismiss]), self.notice,
        ], layout=W.Layout(width="320px"))
        panel.add_class("te-panel")
        panel.add_class("te-busy" if self.state.busy else "te-idle")  # the app's idle signal (see _busy)
        return panel

    def _add(self) -> None:
        name = self.new_name.value.strip()
        if not name:
            self.state.status = "type a class name first"
            return
        self.controller.add_class(name)
        self.new_name.value = ""

    def _rename(self) -> None:
        new = self.new_name.value.strip()
        if not self.state.active_class or not new:
            self.state.status = "pick a class and type its new name first"
            return
        self.controller.rename_class(self.state.active_class, new)
        self.new_name.value = ""

    def _recolour(self, change) -> None:
        name = self.state.active_class
        if name and self.state.colors.get(name) != change["new"]:
            self.controller.recolour(name, change["new"])

    def _pick(self, change) -> None:
        if change["new"] is not None and change["new"] != self.state.active_class:
            self.state.active_class = change["new"]

    def _classes_changed(self, _change) -> None:
        st = self.state
        if tuple(self.active.options) != tuple(st.classes):
            self.active.options = list(st.classes)
        if st.active_class and self.active.value != st.active_class:
            self.active.value = st.active_class
        if st.active_class:
            self.color.value = st.colors.get(st.active_class, "#888888")
        rows = "".join(
            f"<span style='display:inline-block;width:10px;height:10px;background:{html.escape(st.colors.get(c, ''))};"
            f"margin-right:4px'></span>{html.escape(c)}: {st.counts.get(c, 0)}<br>" for c in st.classes)
        self.counts.value = rows or "<i>no classes yet: type a name and press 'add class'</i>"

    _busy_lock = threading.Lock()

    def _busy(self, change) -> None:
        # the value now, not the one notified: the main and the worker thread may set it in turn;
        # the panel's class te-busy / te-idle (no job queued or running) is what browser tests wait on
        with self._busy_lock:
            busy = bool(self.state.busy)
            self.progress.bar_style = "info" if busy else "success"
            if hasattr(self, "widget"):
                keep = [c for c in self.widget._dom_classes if c not in ("te-busy", "te-idle")]
                self.widget._dom_classes = (*keep, "te-busy" if busy else "te-idle")

    def _error(self, change) -> None:
        msg = change["new"]
        self.error.value = f"<span style='color:#b00020'>{html.escape(msg)}</span>" if msg else ""
        self.dismiss.layout.display = "" if msg else "none"


# ---------------------------------------------------------------------------- scatter
class ScatterView:
    """The projection scatter (rasterised by datashader) linked to the map both ways:
    a box or lasso selects pixels, a map click marks its pixel."""

    def __init__(self, state: ExplorerState, controller: ExplorerController, *, width: int = 420,
                 height: int = 420):
        import holoviews as hv
        import panel as pn
        from bokeh.models import LassoSelectTool

        from .scatter import scatter

        self.state, self.controller = state, controller
        comps = controller.components[controller.label_year]
        rgb = controller.rgb[controller.label_year]
        self.plot = scatter(comps, rgb=rgb, width=width, height=height,
                            tools=["box_select", LassoSelectTool(continuous=False)])
        self.points = self.plot.points
        self.xy = self.points.xy
        self.pipe = hv.streams.Pipe(data={"x": [], "y": []})
        marker = hv.DynamicMap(lambda data: hv.Points(data, ["x", "y"]), streams=[self.pipe]).opts(
            color="red", size=14, line_color="white", tools=[])
        hv.streams.BoundsXY(source=self.plot).add_subscriber(guarded(state, "the box selection")(self._on_box))
        hv.streams.Lasso(source=self.plot).add_subscriber(guarded(state, "the lasso selection")(self._on_lasso))
        controller.on("marker", self._on_marker)
        controller.on("scatter", guarded(state, "switching the scatter's projection")(self._on_scatter))
        controller.on("components", guarded(state, "showing the year in the scatter")(self._on_year))
        self.widget = pn.ipywidget(self.plot * marker)
        self.widget.add_class("te-scatter")

    def _on_year(self, year, comps) -> None:
        """Show the points of a newly shown year (same projection, so positions compare)."""
        self._show(year, comps, keep_view=True, doing="showing the year in the scatter")

    def _on_scatter(self, year, comps) -> None:
        """Show other components of the shown year (UMAP ready, or back to PCA)."""
        self._show(year, comps, keep_view=False, doing="switching the scatter's projection")

    def _show(self, year, comps, *, keep_view: bool, doing: str) -> None:
        """The points are gathered here (any thread), the Bokeh document is changed on the
        kernel's main thread."""
        from .scatter import scatter_points, set_points

        ctl = self.controller
        if int(year) != int(ctl.scatter_year):
            return
        pts = scatter_points(comps, rgb=ctl.rgb[year])

        @guarded(self.state, doing)
        def show():
            self.points, self.xy = pts, pts.xy
            set_points(self.plot, pts, keep_view=keep_view)
            self.pipe.send({"x": [], "y": []})

        on_main_thread(show)

    def _on_box(self, bounds=None) -> None:
        if not bounds:
            return
        x0, y0, x1, y1 = bounds
        xy = self.xy
        mask = (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)
        self.controller.select_pixels(self.points.index[mask], "box")

    def _on_lasso(self, geometry=None) -> None:
        if geometry is None or len(geometry) < 3:
            return
        from matplotlib.path import Path

        g = np.asarray(geometry, float)
        lo, hi = g.min(axis=0), g.max(axis=0)
        xy = self.xy
        pre = np.flatnonzero(np.all((xy >= lo) & (xy <= hi), axis=1))
        inside = Path(g).contains_points(xy[pre])
        self.controller.select_pixels(self.points.index[pre[inside]], "lasso")

    def _on_marker(self, x, y) -> None:
        self.pipe.send({"x": [] if x is None else [x], "y": [] if y is None else [y]})
