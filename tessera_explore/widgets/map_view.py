"""The explorer's map: a leafmap map with the controller's layers, label markers, the
guided walk's points and (in draw and live mode) a draw control.

The map is the one place where Leaflet's ``[lat, lon]`` order is met: it is converted to
lon/lat on the way in (clicks, drawn shapes) and back on the way out (label markers),
nowhere else.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .colours import MARKER_OUTLINE, SUGGESTION_COLOUR, VALIDATION_COLOUR
from .controller import ExplorerController
from .guard import guarded, html_widget
from .label_markers import DOT, HALO, LabelMarkers, labels_geojson
from .overlay import map_add, map_remove
from .session import EVENT_LABELS, EVENT_LAYER, EVENT_WALK, LAYERS
from .state import ExplorerState

__all__ = ["MapView", "labels_geojson", "LABEL_COLOR", "LIVE_COLOR", "LAYER_TITLES", "HALO", "DOT", "MAP_MIN",
           "status_html", "MAP_BASIS"]

#: the map's narrowest width in px, and the width from which it grows with the app: the
#: panel stays beside it while both fit (about 800 px), and goes under it below that
MAP_MIN, MAP_BASIS = 300, 480
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
                        map_remove(m, layer)
        _one_attribution(m)
        if basemap:  # shown (in the map's background) only where no tile covers it: offline
            m.add_class("te-basemap")
        # the map takes the width it gets: ``width`` is where it starts (flex basis), it grows
        # and shrinks with the app (down to MAP_MIN px, then the panel wraps under it)
        m.layout.width, m.layout.height = "auto", height
        m.layout.flex, m.layout.min_width = f"1 1 {MAP_BASIS}px", f"{MAP_MIN}px"
        m.add_class("te-map")
        self.map = m
        self.center, self.zoom = center, zoom
        # the map's real size is known once the page shows it: when it is narrower than
        # ``width`` and the area does not fit, zoom out (at most twice), once
        self._area_bounds = ((s, w), (n, e))
        self._fit_steps = 0
        m.observe(self._fit_area, names="bounds")
        self.layers: dict[str, Any] = {}
        self._legends: dict[str, str | None] = {}
        self._palettes: dict[str, Any] = {}
        self._empty: set[str] = set()  # layers the controller has withdrawn
        self._legend = ipyleaflet.WidgetControl(widget=html_widget("", "te-legend"), position="bottomright")
        # what the app says, on the map: the status line, a refusal or an error, in view
        # while one looks at the map (the panel's own lines may be scrolled away)
        self.status_line = html_widget(status_html(state), "te-map-status")
        self._status = ipyleaflet.WidgetControl(widget=self.status_line, position="topright")
        map_add(m, self._status)
        state.observe(lambda ch: setattr(self.status_line, "value", status_html(state)),
                      names=["status", "error", "busy"])
        self.markers = LabelMarkers(m)
        m.on_interaction(self._on_interaction)
        controller.on(EVENT_LAYER, self._on_layer)
        controller.on(EVENT_LABELS, lambda store: self.draw_labels())
        # the guided walk: numbered markers (made once per walk) and a ring on the current one
        self.walk_markers = None
        self.walk_ring = None
        self._walk = None
        controller.on(EVENT_WALK, self.show_walk)
        state.observe(lambda ch: self._visibility(), names=["mode", "show_classes", "show_false_colour",
                                                            "show_confidence", "show_trust"])
        state.observe(self._opacity, names=["class_opacity"])
        # a removed or recoloured class leaves the legend at once (not at the next retrain)
        state.observe(lambda ch: self._visibility(), names=["classes", "colors"])
        # a draw control only in the modes that draw (so that clicks made while drawing are
        # never taken for point labels): polygons and rectangles in draw mode, rectangles in
        # live mode.  leafmap closes a control it removes, so each mode gets a new one.
        self.live = bool(draw)
        self.draw = None
        state.observe(lambda ch: self._draw_tools(), names="mode")
        self._draw_tools()
        self.draw_labels()

    def keep_zoom(self) -> None:
        """Leave the map at the zoom it has: no zooming out to fit the area when the page
        shows the map narrower than asked (the explorer that follows the map loads what the
        map shows, so fitting would load a larger view)."""
        if self._fit_steps >= 0:
            self._fit_steps = -1
            self.map.unobserve(self._fit_area, names="bounds")

    # events from the browser
    def _fit_area(self, change) -> None:
        bounds = change["new"]
        if self._fit_steps < 0 or not bounds or len(bounds) != 2:
            return
        (s, w), (n, e) = bounds
        (s0, w0), (n0, e0) = self._area_bounds
        if (s > s0 or n < n0 or w > w0 or e < e0) and self._fit_steps < 2 and self.map.zoom > 2:
            self._fit_steps += 1
            self.map.zoom = self.map.zoom - 1
            return
        self._fit_steps = -1  # fitted (or the user moved it): the map is theirs from now on
        self.map.unobserve(self._fit_area, names="bounds")

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
                map_remove(self.map, self.draw)
            self.draw = None
        if mode not in ("draw", "live"):
            return
        shape = {"shapeOptions": {"color": LIVE_COLOR if mode == "live" else LABEL_COLOR, "fillOpacity": 0.1}}
        self.draw = ipyleaflet.DrawControl(polygon=shape if mode == "draw" else {}, rectangle=shape, polyline={},
                                           circlemarker={}, circle={}, marker={}, edit=False, remove=False)
        self.draw.on_draw(self._on_draw)
        map_add(self.map, self.draw)

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
            if other in self.markers.layers or (other_name is not None and rank[other_name] > rank[name]):
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
        if cats and name == "classes":  # the classes as they are now (removed ones out, new colours)
            st = self.state
            cats = [(n, st.colors.get(n, c)) for n, c in cats if n in st.classes]
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
                self._legend = ipyleaflet.WidgetControl(widget=html_widget("", "te-legend"), position="bottomright")
            self._legend.widget.value = legend_html
            if self._legend not in self.map.controls:
                map_add(self.map, self._legend)
        elif self._legend is not None and self._legend in self.map.controls:
            map_remove(self.map, self._legend)
            self._legend = None

    @property
    def legend(self) -> str:
        """The HTML of the legend the map shows now ("" when none)."""
        shown = self._legend is not None and self._legend in self.map.controls
        return self._legend.widget.value if shown else ""

    def show_walk(self, walk) -> None:
        """Numbered markers of the walk's points (suggestions in
        :data:`~tessera_explore.widgets.colours.SUGGESTION_COLOUR`, validation points in
        ``VALIDATION_COLOUR``), the current one ringed and centred (``EVENT_WALK``)."""
        import ipyleaflet

        if walk is not self._walk:  # a new walk (or none): replace the markers
            self._clear_walk()
            self._walk = walk
            if walk is None:
                return
            color = SUGGESTION_COLOUR if walk.kind == "suggest" else VALIDATION_COLOUR
            markers = []
            for stop in walk.stops:
                icon = ipyleaflet.DivIcon(html=f"<div class='te-walk-number' style='background:{color}'>{stop.number}</div>",
                                          icon_size=[22, 22], icon_anchor=[11, 11])
                markers.append(ipyleaflet.Marker(location=(stop.lat, stop.lon), icon=icon, draggable=False,
                                                 keyboard=False, title=f"{walk.kind} point {stop.number}"))
            self.walk_markers = ipyleaflet.LayerGroup(layers=markers, name="guided points")
            self.walk_ring = ipyleaflet.CircleMarker(location=(walk.stops[0].lat, walk.stops[0].lon), radius=16,
                                                     color=MARKER_OUTLINE, weight=4, fill=False, name="current point",
                                                     dash_array="6 4")
            map_add(self.map, self.walk_markers)
            map_add(self.map, self.walk_ring)
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
            map_remove(self.map, self.walk_markers)
            for m in markers:
                icon = m.icon
                m.close()
                if icon is not None:
                    icon.close()
            map_remove(self.map, self.walk_ring)
        self.walk_markers = self.walk_ring = None

    def draw_labels(self) -> None:
        """Show the store's labels (:class:`~tessera_explore.widgets.label_markers.LabelMarkers`):
        the chunks of labels that changed are sent, so a new label sends the last chunk
        only and never makes new widgets.  Points are circles with a dark outline and a
        white halo (readable on any class colour), polygons are outlined; none of them
        takes clicks (they go through to the map and the drawing tools)."""
        self.markers.update(self.controller.store)


def status_html(state: ExplorerState) -> str:
    """The map's status line: the error when there is one (red), else the status (with an
    ellipsis while a job runs)."""
    import html

    if state.error:
        return f"<span class='te-map-error'>{html.escape(state.error)}</span>"
    text = html.escape(state.status or "")
    return f"{text} …" if state.busy and text and not text.endswith(("…", "...")) else text


def _one_attribution(m) -> None:
    """leafmap adds an attribution control beside ipyleaflet's own: keep one."""
    import ipyleaflet

    seen = False
    for control in list(m.controls):
        if isinstance(control, ipyleaflet.AttributionControl):
            if seen:
                map_remove(m, control)
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

