"""Live embedding in the explorer: a rectangle drawn in live mode is embedded from STAC
imagery (:func:`~tessera_explore.embed_area`), shown as a layer and compared with the
precomputed map of the year shown.

The observation window is the calendar year shown, or the two dates of the panel
(``state.live_start``/``live_end``, at most a year apart).  A bad window is said in the
status line before anything is queued.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import xarray as xr

from ..exceptions import ArgumentError, TesseraExploreError
from .session import EVENT_LAYER

__all__ = ["LiveEmbedder"]


class LiveEmbedder:
    """Live embedding for one session (module docstring).

    Parameters
    ----------
    session : the :class:`~tessera_explore.widgets.session.Session`.
    model, stac, cache : what :func:`~tessera_explore.embed_area` is given (no model: live
        embedding is off).

    ``live`` is the latest live embedding (None before the first).
    """

    def __init__(self, session, *, model: Any = None, stac: Any = "planetary-computer", cache: Any = None):
        self.session = session
        self.state = session.state
        self.model, self.stac, self.cache = model, stac, cache
        self.live: xr.DataArray | None = None

    def window(self, start: Any = None, end: Any = None):
        """The :class:`~tessera_explore.encoder.window.Window`: ``start`` to ``end``
        (default the state's ``live_start``/``live_end``), or the calendar year shown when
        both are empty.  :class:`ArgumentError` for a bad window."""
        from ..encoder.window import resolve_window

        start = self.state.live_start if start is None else start
        end = self.state.live_end if end is None else end
        start = start.strip() if isinstance(start, str) else start
        end = end.strip() if isinstance(end, str) else end
        if not start and not end:
            return resolve_window(int(self.state.year))
        return resolve_window(None, start or None, end or None)

    def embed(self, bbox, *, start: Any = None, end: Any = None) -> Future | None:
        """Queue the live embedding of ``bbox`` (lon/lat); None (and a message) without a
        model or with a bad window."""
        s = self.session
        if self.model is None:
            s.say("live embedding needs a model: te.explore(..., live_model=te.encoder.load_encoder(...))")
            return None
        bbox = tuple(float(v) for v in bbox)
        try:
            window = self.window(start, end)
        except ArgumentError as err:
            s.say(f"live embedding not started: {err}")
            return None
        return s.submit("live", lambda: self._embed(bbox, window), f"embedding the rectangle live ({window})")

    def _embed(self, bbox, window) -> xr.DataArray:
        from ..encoder.area import embed_area
        from ..project import project, to_rgb
        from .overlay import overlay_image

        s = self.session
        year = int(self.state.year)
        when = {"year": window.start.year} if window.is_calendar_year else {"start": window.start, "end": window.end}
        live = embed_area(bbox, **when, model=self.model, stac=self.stac, cache=self.cache,
                          progress=False)
        self.live = live
        comps, _ = project(live, method="pca", n_components=3, random_state=0)
        s.emit(EVENT_LAYER, "live", overlay_image(to_rgb(comps), **s.render_options))
        msg = (f"embedded {live.sizes['x']} x {live.sizes['y']} px live ({live.attrs.get('model_generation')}, "
               f"{window})")
        self.state.status = msg + self._comparison(live, s.arrays[year])
        return live

    @staticmethod
    def _comparison(live: xr.DataArray, pre: xr.DataArray) -> str:
        """How the live embedding compares with the precomputed map, in words."""
        from ..encoder.area import compare

        if live.attrs.get("model_generation") != pre.attrs.get("model_generation"):
            return (f"; not compared with the precomputed map (generation {pre.attrs.get('model_generation')}: "
                    "different generations live in unrelated feature spaces)")
        try:
            cos = compare(live, pre)
        except TesseraExploreError as err:
            return f"; not compared: {err}"
        return f"; cosine agreement with the precomputed map: median {cos.attrs['median']:.3f}"
