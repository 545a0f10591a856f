"""The explorer's maps besides the classes: similarity to a clicked pixel, change between
two years, and the pixels selected in the scatter.

Each is computed on the worker (:meth:`Session.submit
<tessera_explore.widgets.session.Session.submit>`), drawn as a map layer
(:data:`~tessera_explore.widgets.session.EVENT_LAYER`) and summed up in the status line.
"""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np
import xarray as xr

from .session import EVENT_AREA, EVENT_LAYER, Session, where

__all__ = ["Maps", "change_classes", "SELECTION_COLOR"]

SELECTION_COLOR = "#ff00ff"


def change_classes(change_map: xr.Dataset) -> tuple[list[str], list[str]]:
    """The class names and colours of a change map (its attributes, else those of
    :func:`~tessera_explore.classify.change`)."""
    from ..classify.change import CHANGE_CLASSES, CHANGE_COLORS

    attrs = {**change_map.attrs, **change_map["change_class"].attrs}
    names = list(attrs.get("classes", CHANGE_CLASSES))
    colors = list(attrs.get("colors", CHANGE_COLORS))[: len(names)]
    return names, colors


class Maps:
    """Similarity, change and selection maps of one session (module docstring).

    Attributes
    ----------
    similarity_map, similarity_query : the latest similarity map and its (lon, lat).
    change_map, change_years : the latest change map and its (earlier, later) years.
    selection : ``(y, x)`` uint8 mask of the pixels selected in the scatter.
    """

    def __init__(self, session: Session):
        self.session = session
        self.state = session.state
        self.similarity_map: xr.DataArray | None = None
        self.similarity_query: tuple[float, float] | None = None
        self.change_map: xr.Dataset | None = None
        self.change_years: tuple[int, int] | None = None
        self.selection: np.ndarray | None = None
        session.on(EVENT_AREA, lambda arrays: self._forget_change())

    def _forget_change(self) -> None:
        self.change_map, self.change_years = None, None

    # ------------------------------------------------------------------ similarity
    def similarity(self, lon: float, lat: float) -> None:
        """Compute and draw the similarity of every pixel of the shown year to lon/lat."""
        from ..classify import similarity

        area = self.session.area(int(self.state.year))
        self.similarity_map = similarity(area, (lon, lat))
        self.similarity_query = (lon, lat)
        self.render_similarity()

    def render_similarity(self) -> None:
        """Draw the similarity map above the threshold (nothing without one)."""
        from .overlay import overlay_image

        if self.similarity_map is None:
            return
        thr = float(self.state.similarity_threshold)
        shown = self.similarity_map.where(self.similarity_map >= thr)
        shown.attrs.update(self.similarity_map.attrs, long_name="cosine similarity")
        img = overlay_image(shown, cmap="magma", vmin=thr, vmax=1.0, **self.session.render_options,
                            categorical=False, title="similarity")
        self.session.emit(EVENT_LAYER, "similarity", img)
        n = int(np.count_nonzero(self.similarity_map.values >= thr))
        lon, lat = self.similarity_query
        self.state.status = f"{n:,} pixels have cosine similarity >= {thr:.2f} to {where(lon, lat)}"

    # ------------------------------------------------------------------ change
    def change_pair(self) -> tuple[int, int] | None:
        """(earlier, later) years of the change map: the year shown and ``state.change_from``
        (else the year before, else the nearest other); None with one year open."""
        arrays = self.session.arrays
        years = sorted(arrays)
        if len(years) < 2:
            return None
        b = int(self.state.year)
        a = int(self.state.change_from) if self.state.change_from in arrays else None
        if a is None or a == b:
            a = max((y for y in years if y < b), default=None) or min(y for y in years if y != b)
        return (a, b) if a < b else (b, a)

    def show_change(self) -> Future | None:
        """Queue the change map of :meth:`change_pair` (None, and a message, with one year)."""
        if self.change_pair() is None:
            self.session.say("the change map needs two years: open the explorer with years=[...]")
            return None
        return self.session.submit("change", self.change_now, "computing the change between years")

    def change_now(self) -> None:
        """Compute (once per pair) and draw the change map (a job's body)."""
        from ..classify import change
        from .overlay import overlay_image

        s = self.session
        a, b = self.change_pair()
        if self.change_years != (a, b):
            self.change_map = change(s.area(a), s.area(b))
            self.change_years = (a, b)
        names, colors = change_classes(self.change_map)
        img = overlay_image(self.change_map["change_class"], categories=names, colors=colors, **s.render_options,
                            title=f"change {a} to {b}")
        s.emit(EVENT_LAYER, "change", img)
        counts = np.bincount(self.change_map["change_class"].values.ravel(), minlength=256)
        self.state.status = f"change {a} to {b}: " + ", ".join(f"{n} {counts[i]:,}" for i, n in enumerate(names))

    def change_at(self, px: tuple, place: str) -> str:
        """The change map's value at pixel ``px`` (row, col) of ``place``, in words."""
        if self.change_map is None:
            return "the change map is still being computed"
        d = float(self.change_map["distance"].values[px])
        cls, _ = change_classes(self.change_map)
        k = int(self.change_map["change_class"].values[px])
        name = cls[k] if k < len(cls) else "no data"
        return f"change at {place}: distance {d:.3f} ({name})"

    # ------------------------------------------------------------------ scatter selection
    def select_pixels(self, flat_index: np.ndarray, how: str = "selection") -> Future:
        """Highlight pixels (flat indices ``row * width + col``) chosen in the scatter."""
        h, w = self.session.grid.shape
        mask = np.zeros(h * w, np.uint8)
        idx = np.asarray(flat_index, dtype=np.int64)
        mask[idx] = 1
        self.selection = mask.reshape(h, w)
        self.state.selection_size = int(idx.size)
        return self.session.submit("selection", lambda: self.render_selection(how), "drawing the selection")

    def render_selection(self, how: str = "selection") -> None:
        """Draw the selection (or withdraw the layer when nothing is selected)."""
        from .overlay import overlay_image

        s = self.session
        if self.selection is None or not self.selection.any():
            s.emit(EVENT_LAYER, "selection", None)
            self.state.status = "nothing selected"
            return
        ref = s.arrays[s.label_year]
        sel = xr.DataArray(np.where(self.selection == 1, 1, 255).astype(np.uint8), dims=("y", "x"),
                           coords={"y": ref.y, "x": ref.x}, name="selection")
        sel = sel.rio.write_crs(ref.rio.crs)
        img = overlay_image(sel, categories={1: ("selected", SELECTION_COLOR)}, **s.render_options,
                            title="selection")
        s.emit(EVENT_LAYER, "selection", img)
        self.state.status = f"{how}: {int(self.selection.sum()):,} pixels highlighted on the map"
