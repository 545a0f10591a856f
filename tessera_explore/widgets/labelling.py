"""Labelling in the explorer: map clicks by mode, point and polygon labels, and the edits
of classes and labels (add, rename, recolour, remove, undo, redo, clear).

Labels go to the session's :class:`~tessera_explore.LabelStore` (saved at once); a
change that leaves two labelled classes queues a retrain
(:meth:`~tessera_explore.widgets.classifying.Classifying.retrain`).  A click in
similarity mode queues the similarity map, one in change mode reads the change map
(:class:`~tessera_explore.widgets.maps.Maps`); every click marks its pixel in the scatter
(:data:`~tessera_explore.widgets.session.EVENT_MARKER`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..exceptions import LabelError
from .session import EVENT_MARKER, Session, plural, where

__all__ = ["Labelling"]


class Labelling:
    """Clicks and label edits of one session (module docstring).

    Parameters
    ----------
    session : the :class:`~tessera_explore.widgets.session.Session`.
    colour : its :class:`~tessera_explore.widgets.colour_map.FalseColour` (whether a pixel
        has data, read from the components when they are made).
    classifying : its :class:`~tessera_explore.widgets.classifying.Classifying`.
    maps : its :class:`~tessera_explore.widgets.maps.Maps`.
    scatter_components : ``scatter_components(year)``, the components the scatter shows
        (:meth:`~tessera_explore.widgets.projection.ProjectionSwitch.scatter_components`).
    """

    def __init__(self, session: Session, colour, classifying, maps, *,
                 scatter_components: Callable[[int], Any]):
        self.session = session
        self.state = session.state
        self.store = session.store
        self.colour, self.classifying, self.maps = colour, classifying, maps
        self.scatter_components = scatter_components
        #: what a map click does, by mode
        self._click_handlers: dict[str, Callable[[float, float, tuple, str], str]] = {
            "label": self._click_label, "similarity": self._click_similarity, "draw": self._click_draw,
            "live": self._click_live, "change": self._click_change}

    # ------------------------------------------------------------------ clicks
    def has_data(self, row: int, col: int) -> bool:
        """True when the shown year has an embedding at (row, col)."""
        year = int(self.state.year)
        comps = self.colour.components.get(year)
        if comps is not None:
            return bool(np.isfinite(comps.values[0, row, col]))
        return bool(np.isfinite(self.session.arrays[year].isel(band=0, y=row, x=col).values))

    def click(self, lon: float, lat: float) -> str:
        """A click on the map at lon/lat, acted on according to ``state.mode``.

        Returns what happened, in words (also put in ``state.status``).
        """
        s = self.session
        s.check_open()
        st = self.state
        st.last_click = (float(lon), float(lat))
        place = where(lon, lat)
        px = self.session.pixel_at(lon, lat)
        if px is None:
            return s.say(f"the click at {place} is outside the embeddings; nothing done")
        self._mark(*px)
        if not self.has_data(*px):
            return s.say(f"no data at {place} (water or outside the tiles); nothing done")
        return self._click_handlers[st.mode](float(lon), float(lat), px, place)

    def _click_label(self, lon: float, lat: float, px: tuple, place: str) -> str:
        st = self.state
        if not st.classes:
            return self.session.say("add a class first (type a name and press 'add class'), then click to label")
        cls = st.active_class or ""
        if cls not in st.classes:
            return self.session.say("pick the class to label with, then click again")
        return self.label_at(lon, lat, cls, px=px)[1]

    def label_at(self, lon: float, lat: float, cls: str, *, px: tuple | None = None) -> tuple[bool, str]:
        """Add a point label of ``cls`` at lon/lat (the click path); (added, message)."""
        s = self.session
        s.check_open()
        place = where(lon, lat)
        px = px if px is not None else self.session.pixel_at(lon, lat)
        if px is None:
            return False, s.say(f"{place} is outside the embeddings; nothing done")
        if not self.has_data(*px):
            return False, s.say(f"no data at {place} (water or outside the tiles); nothing done")
        same = self._label_on_pixel(*px)
        if same is not None:
            return False, s.say(f"pixel {place} is labelled already ({same.cls!r}, label {same.id}); "
                                "undo it or click another pixel")
        try:
            self.store.add_point(float(lon), float(lat), cls, sample=self.label_sample((float(lon), float(lat))))
        except LabelError as err:
            return False, s.say(f"label not added: {err}")
        msg = f"labelled {place} as {cls!r} ({plural(len(self.store), 'label')})"
        if not s.trainable():
            return True, s.say(msg + "; label at least two classes to train a classifier")
        s.say(msg)  # before the retrain is queued, so its "trained" line always comes after
        self.classifying.retrain()
        return True, msg

    def label_sample(self, geometry: Any) -> Any:
        """The label's vectors to keep with it (:func:`~tessera_explore.classify.label_sample`
        of the labelling year: the pixel under a point, at most
        :data:`~tessera_explore.widgets.classifying.MAX_PER_LABEL` of a polygon's), so the
        label file trains a classifier without the area; None outside the area or on no
        data.  Read from the prepared area when there is one (no second read)."""
        from ..classify import label_sample
        from .classifying import MAX_PER_LABEL

        s = self.session
        area = s.prepared.get(s.label_year)
        return label_sample(area if area is not None else s.arrays[s.label_year], geometry,
                            max_pixels=MAX_PER_LABEL)

    def _click_similarity(self, lon: float, lat: float, px: tuple, place: str) -> str:
        self.maps.similarity_query = (lon, lat)
        msg = self.session.say(f"finding pixels similar to {place}")  # before the job, whose result line follows
        self.session.submit("similarity", lambda: self.maps.similarity(lon, lat), msg)
        return msg

    def _click_draw(self, lon: float, lat: float, px: tuple, place: str) -> str:
        return self.session.say("draw mode: draw a polygon or rectangle with the map's toolbar to label every "
                                "pixel inside it (switch to 'click' mode to label single pixels)")

    def _click_live(self, lon: float, lat: float, px: tuple, place: str) -> str:
        return self.session.say("live mode: draw a rectangle with the map's toolbar to embed it live")

    def _click_change(self, lon: float, lat: float, px: tuple, place: str) -> str:
        """Change mode: the value under the click."""
        return self.session.say(self.maps.change_at(px, place))

    def _label_on_pixel(self, row: int, col: int):
        """The point label on this pixel, if any (two labels of one pixel add nothing)."""
        points = [lab for lab in self.store.labels if lab.kind == "point"]
        if not points:
            return None
        r, c = self.session.grid.lonlat_to_rowcol(np.array([p.lon for p in points], float),
                                          np.array([p.lat for p in points], float))
        hit = np.flatnonzero((np.asarray(r) == row) & (np.asarray(c) == col))
        return points[int(hit[0])] if hit.size else None

    def add_polygon(self, ring: list) -> str:
        """Label every pixel inside a polygon (a ring of lon/lat pairs) as the active class."""
        s = self.session
        s.check_open()
        st = self.state
        if st.mode != "draw":
            return s.say("switch to draw mode to draw labels")
        if not st.active_class or st.active_class not in st.classes:
            return s.say("add and pick a class first, then draw")
        try:
            ring = [(float(x), float(y)) for x, y in ring]
            self.store.add_polygon(ring, st.active_class, sample=self.label_sample(ring))
        except LabelError as err:
            return s.say(f"polygon not added: {err}")
        msg = f"polygon labelled as {st.active_class!r} ({plural(len(self.store), 'label')})"
        if s.trainable():
            self.classifying.retrain()
        return s.say(msg)

    def _mark(self, row: int, col: int) -> None:
        comps = self.scatter_components(self.session.scatter_year)
        if comps is None:
            return
        x, y = (float(v) for v in comps.values[:2, row, col])
        if np.isfinite(x) and np.isfinite(y):
            self.session.emit(EVENT_MARKER, x, y)
        else:
            self.session.emit(EVENT_MARKER, None, None)

    # ------------------------------------------------------------------ labels
    def add_class(self, name: str, color: str | None = None) -> str:
        """Add a class (and make it the active one); ``color`` defaults to the colour of
        its name (:func:`~tessera_explore.widgets.colours.class_colour`: woods green, water
        blue...) apart from the colours of the other classes."""
        from .colours import class_colour

        self.session.check_open()
        if color is None:
            color = class_colour(name, self.store.classes.values())
        self.store.add_class(name, color)
        self.state.active_class = name.strip()
        return self.session.say(f"class {name.strip()!r} added; click the map to label it")

    def rename_class(self, name: str, new_name: str) -> str:
        """Rename a class (its labels follow)."""
        self.session.check_open()
        self.store.rename_class(name, new_name)
        self.state.active_class = new_name.strip()
        self.classifying.after_label_edit()
        return self.session.say(f"class {name!r} renamed to {new_name.strip()!r}")

    def recolour(self, name: str, color: str) -> str:
        """Give a class another colour (the class map is redrawn)."""
        self.session.check_open()
        self.store.set_color(name, color)
        if self.classifying.prediction is not None:
            self.classifying.redraw()
        return self.session.say(f"class {name!r} is now {color}")

    def remove_class(self, name: str) -> str:
        """Remove a class and its labels (undo brings them back)."""
        self.session.check_open()
        self.store.remove_class(name)
        self.classifying.after_label_edit()
        return self.session.say(f"class {name!r} and its labels removed (undo brings them back)")

    def undo(self) -> str:
        """Undo the last label edit."""
        self.session.check_open()
        if not self.store.undo():
            return self.session.say("nothing to undo")
        self.classifying.after_label_edit()
        return self.session.say(f"undone ({plural(len(self.store), 'label')})")

    def redo(self) -> str:
        """Redo the last undone label edit."""
        self.session.check_open()
        if not self.store.redo():
            return self.session.say("nothing to redo")
        self.classifying.after_label_edit()
        return self.session.say(f"redone ({plural(len(self.store), 'label')})")

    def clear(self) -> str:
        """Remove every label (undo brings them back)."""
        self.session.check_open()
        self.store.clear()
        self.classifying.after_label_edit()
        return self.session.say("all labels removed (undo brings them back)")
