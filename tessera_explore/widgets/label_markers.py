"""The explorer's label markers, sent to the map in chunks.

Leaflet redraws every feature of a GeoJSON layer whose data changes.  With the labels in
one layer, each click re-sent every label and the browser redrew all of them (600 SVG
circles at 300 labels) before the class image was painted, so a click got slower as the
labels grew.  :class:`LabelMarkers` holds the labels in a fixed pool of GeoJSON layers,
``chunk`` labels each, in the store's order: a new label changes the last chunk only, and
an update sends only the chunks whose features changed (a removed label, a relabel or a
recolour re-send the chunks they touch; removing an early label shifts, and re-sends,
every chunk after it).  The pool is made once, so clicks make no new widgets; when the
labels outgrow it the chunk size doubles (one full redraw).

The features are exactly :func:`labels_geojson`'s, in its order, so the markers look as
they did in one layer; ``LabelMarkers.data`` is their union (what the map shows).
"""

from __future__ import annotations

from typing import Any

import traitlets

from ..exceptions import ArgumentError

__all__ = ["LabelMarkers", "labels_geojson", "label_features", "HALO", "DOT", "CHUNK", "POOL"]

#: how label markers are drawn: a white halo under a dark-outlined dot of the class colour
HALO = {"radius": 9, "color": "#ffffff", "weight": 3, "opacity": 0.95, "fill": False, "interactive": False}
DOT = {"radius": 6, "color": "#1a1a1a", "weight": 2, "opacity": 1.0, "fillOpacity": 1.0, "interactive": False}
#: labels per chunk to start with, and the number of chunk layers: 320 labels before the
#: chunks grow (a click then re-sends at most 20 labels, as many as a map of 20 labels has)
CHUNK, POOL = 20, 16
_NO_CLASS = "#888888"


def label_features(label, color: str) -> list[dict]:
    """The GeoJSON features of one label (a point: a halo and a dot; a polygon: a dark
    outline and the class colour), each with its Leaflet style in ``properties.style``."""
    props = {"class": label.cls, "id": label.id}
    if label.kind == "point":
        geom = {"type": "Point", "coordinates": [float(label.lon), float(label.lat)]}
        return [{"type": "Feature", "geometry": geom, "properties": {**props, "style": HALO}},
                {"type": "Feature", "geometry": geom, "properties": {**props, "style": {**DOT, "fillColor": color}}}]
    ring = [[float(x), float(y)] for x, y in label.geometry.exterior.coords]
    geom = {"type": "Polygon", "coordinates": [ring]}
    outline = {"color": "#1a1a1a", "weight": 4, "opacity": 0.9, "fill": False, "interactive": False}
    fill = {"color": color, "weight": 2, "fillColor": color, "fillOpacity": 0.3, "interactive": False}
    return [{"type": "Feature", "geometry": geom, "properties": {**props, "style": outline}},
            {"type": "Feature", "geometry": geom, "properties": {**props, "style": fill}}]


def _per_label(store) -> list[list[dict]]:
    colors = store.classes
    return [label_features(lab, colors.get(lab.cls, _NO_CLASS)) for lab in store.labels]


def labels_geojson(store) -> dict:
    """The labels of ``store`` as a GeoJSON FeatureCollection with a Leaflet style per
    feature (``properties.style``, which ipyleaflet's GeoJSON layer applies)."""
    return _collection([f for feats in _per_label(store) for f in feats])


def _collection(features: list) -> dict:
    return {"type": "FeatureCollection", "features": features}


class LabelMarkers(traitlets.HasTraits):
    """The labels of a store on a map, in a pool of ``pool`` GeoJSON layers of ``chunk``
    labels each; :meth:`update` sends only the chunks that changed.

    ``data`` (a trait) is the union of the layers' features, equal to
    ``labels_geojson(store)`` after each update; ``layers`` are the GeoJSON layers, in
    the map's order (none of them takes clicks)."""

    data = traitlets.Dict(help="the features every chunk shows, in order (labels_geojson of the store)")

    def __init__(self, m: Any, *, chunk: int = CHUNK, pool: int = POOL):
        import ipyleaflet

        super().__init__()
        if int(chunk) < 1 or int(pool) < 1:
            raise ArgumentError(f"chunk and pool must be at least 1, not {chunk} and {pool}")
        self.map = m
        self.base_chunk = self.chunk = int(chunk)
        self.layers = tuple(ipyleaflet.GeoJSON(data=_collection([]), name="labels" if i == 0 else f"labels {i + 1}",
                                               point_style={"radius": 6}, visible=False) for i in range(int(pool)))
        self._chunks: list[list[list[dict]]] = [[] for _ in self.layers]  # per layer, per label: its features
        self.data = _collection([])
        m.layers = tuple(m.layers) + self.layers  # together, above the layers there are now

    def update(self, store) -> int:
        """Show the labels of ``store``; returns how many layers were re-sent."""
        per_label = _per_label(store)
        n = len(per_label)
        chunk = self.chunk if n else self.base_chunk  # an empty store starts again from the small chunks
        while n > chunk * len(self.layers):
            chunk *= 2
        self.chunk = chunk
        sent = 0
        for i, layer in enumerate(self.layers):
            part = per_label[i * chunk:(i + 1) * chunk]
            if part == self._chunks[i]:
                continue
            self._chunks[i] = part
            layer.data = _collection([f for feats in part for f in feats])
            layer.visible = bool(part)
            sent += 1
        if sent:
            self.data = _collection([f for part in self._chunks for feats in part for f in feats])
        return sent
