"""Opening an explorer over a whole store: where the map starts, its first view, and the
map geometry (Web Mercator) that :class:`~tessera_explore.widgets.follow.MapFollower`
shares.  ``te.explore(store, center=, zoom=)`` comes here (``explore_anywhere``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..exceptions import ArgumentError

__all__ = ["follows", "explore_anywhere", "view_bbox_at", "mercator", "colour_view", "View", "DEFAULT_ZOOM"]

#: zoom of a map opened without one (about 2.6 km across a 700 px map at 52 N)
DEFAULT_ZOOM = 14


def follows(source: Any, *, bbox: Any = None, years: Any = None) -> bool:
    """True when ``explore(source)`` follows the map: a store location (name, URL, folder),
    an opened store or a :class:`~tessera_explore.io.viewport.ViewLoader`, with no
    ``bbox`` and no ``years`` (those open one area, as before)."""
    from ..io.store import ZarrSource, is_store_location
    from ..io.viewport import ViewLoader

    if bbox is not None or years is not None:
        return False
    return isinstance(source, (ViewLoader, ZarrSource)) or is_store_location(source)


def _px(v: Any, default: int) -> int:
    try:
        return int(str(v).strip().replace("px", ""))
    except ValueError:  # "100%" and the like
        return default


def mercator(lon: float, lat: float, zoom: float) -> tuple[float, float]:
    """Web Mercator pixel coordinates (x, y) of lon/lat at ``zoom`` (256 px tiles)."""
    n = 256.0 * 2.0 ** zoom
    lat = max(min(lat, 85.05), -85.05)
    y = (1 - math.log(math.tan(math.pi / 4 + math.radians(lat) / 2)) / math.pi) / 2 * n
    return (lon + 180.0) / 360.0 * n, y


def _unmerc(x: float, y: float, zoom: float) -> tuple[float, float]:
    n = 256.0 * 2.0 ** zoom
    lat = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * y / n))))
    return x / n * 360.0 - 180.0, lat


def view_bbox_at(center: tuple[float, float], zoom: float, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The lon/lat bbox (west, south, east, north) a Web Mercator map of ``size`` (width,
    height) pixels shows around ``center`` (lon, lat) at ``zoom``."""
    x, y = mercator(float(center[0]), float(center[1]), float(zoom))
    w, h = size
    west, north = _unmerc(x - w / 2, y - h / 2, zoom)
    east, south = _unmerc(x + w / 2, y + h / 2, zoom)
    return (round(west, 6), round(south, 6), round(east, 6), round(north, 6))


@dataclass
class View:
    """One loaded view at one depth: the arrays and what was computed from them
    (``class_map``: its :class:`~tessera_explore.widgets.classifying.ClassMapSnapshot`
    as last shown, for a pan back with nothing changed)."""

    bbox: tuple
    depth: int
    da: Any
    components: Any
    rgb: Any
    projection: Any
    prepared: Any = None
    class_map: Any = None


def colour_view(bbox: tuple, depth: int, da, colours) -> View:
    """A loaded view with its false colour from the store's statistics."""
    from ..project._base import components_array
    from ..project.rgb import to_rgb
    from ..project.store_colours import view_components

    proj = colours.projection(int(da.sizes["band"]))
    c = view_components(da, proj)
    comps = proj.transform(da) if c is None else components_array(c, da, proj)
    return View(tuple(bbox), int(depth), da, comps, to_rgb(comps, stretch=proj), proj)


def _first_view(loader, center, zoom, size) -> tuple[tuple, Any, str]:
    """``(bbox, DataArray, message)`` of the view to open on: the map's view, or, when it
    is too large, a small one at its centre (the map then shows the footprint)."""
    from ..io.viewport import coverage_footprint

    if center is None:
        feats = coverage_footprint(loader.store, year=loader.year)["features"]
        if not feats:
            raise ArgumentError(f"{loader.store.url} has no data for {loader.year}: nothing to explore")
        ring = np.asarray(feats[0]["geometry"]["coordinates"][0], float)
        center = (float(ring[:, 0].mean()), float(ring[:, 1].mean()))
    bbox = view_bbox_at(center, zoom, size)
    plan = loader.plan(bbox)
    if plan.kind == "load":
        return bbox, loader.load(bbox, depth=plan.depths[0]), plan.message
    small = view_bbox_at(center, 17, (64, 64))
    return small, loader.load(small, depth=loader.plan(small).depths[0]), plan.message


def explore_anywhere(source: Any, *, center=None, zoom=None, year=None, labels=None, classes=None,
                     model: str = "knn", scatter: bool = True, basemap: bool = True, export_dir=None,
                     map_size=("700px", "560px")):
    """:func:`~tessera_explore.explore` over a whole store: the explorer follows the map
    (module docstring).  ``center`` is (lon, lat) (default: the middle of the store's
    first covered stretch), ``zoom`` the map's zoom (default :data:`DEFAULT_ZOOM`)."""
    from ..io.viewport import ViewLoader
    from ..project.store_colours import StoreColours
    from .app import add_classes, build_app, open_label_store, release_label_store, screen_pixels
    from .controller import ExplorerController
    from .follow import MapFollower
    from .state import ExplorerState

    if center is not None and (len(center) != 2 or not all(np.isfinite(center))):
        raise ArgumentError(f"center must be (lon, lat), got {center!r}")
    loader = source if isinstance(source, ViewLoader) else ViewLoader(source, year=year)
    if year is not None and int(year) != loader.year:
        raise ArgumentError(f"year {year} asked for, the loader shows {loader.year}")
    zoom = DEFAULT_ZOOM if zoom is None else float(zoom)
    size = (_px(map_size[0], 1000), _px(map_size[1], 800))
    colours = StoreColours(loader.store, year=loader.year)
    bbox, da, msg = _first_view(loader, center, zoom, size)
    first = colour_view(bbox, int(da.sizes["band"]), da, colours)
    notes: list[str] = []
    store, owns = open_label_store(labels, da, loader.year, notes)
    try:
        add_classes(store, classes)
        state = ExplorerState(model=model)
        controller = ExplorerController(state, {loader.year: da}, store, year=loader.year, export_dir=export_dir,
                                        max_pixels=screen_pixels(map_size))
        controller.colour.install({loader.year: first.components}, {loader.year: first.rgb}, first.projection)
    except Exception:
        if owns:
            release_label_store(store)
        raise
    try:
        app = build_app(state, controller, owns, notes, scatter=scatter, basemap=basemap, map_size=map_size, draw=False)
        # the map keeps the zoom asked for: an explorer of one area zooms out once the page
        # shows a map narrower than ``map_size`` (to fit the area), but here the area is
        # whatever the map shows, and a zoom out would load a view four times as large
        app.map_view.keep_zoom()
        if center is not None:
            app.map.center = (float(center[1]), float(center[0]))
        app.map.zoom = zoom
        follower = MapFollower(controller, app.map, loader, colours, first, size=size)
        app.follower = follower
        from .region_panel import RegionAction

        app.region = RegionAction(controller, follower)
        if msg:
            follower.go(view_bbox_at(center or _centre(bbox), zoom, size))
        else:
            follower.go(bbox)  # the full depth (the first view opened at depth 16)
    except Exception:
        controller.close()
        if owns:
            release_label_store(store)
        raise
    return app


def _centre(bbox) -> tuple[float, float]:
    return ((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2)
