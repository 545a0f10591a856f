"""The "map region" action of an explorer that follows the map.

A button (with a typed bbox, or the view shown when the box is empty) sends the current
classifier to :class:`~tessera_explore.region.from_view.MapRegionJob` (``run_region`` of
``predict_map`` on the current ``distributed`` client, else a ``LocalCluster`` kept for
later jobs), shows its progress and, once it is done, puts its class map on the map as an
overlay (rendered within the map's pixel budget: a large region at about the map's
resolution).  The job runs on threads of its own: the explorer stays usable meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from ..exceptions import ArgumentError, TesseraExploreError

__all__ = ["RegionAction", "parse_bbox"]


def parse_bbox(text: str) -> tuple[float, float, float, float] | None:
    """``"west, south, east, north"`` (commas or spaces) as four floats; None for an empty
    text; :class:`ArgumentError` for anything else."""
    parts = [p for p in str(text).replace(",", " ").split() if p]
    if not parts:
        return None
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        raise ArgumentError(f"a bbox is four numbers west, south, east, north; got {text!r}") from None
    if len(vals) != 4:
        raise ArgumentError(f"a bbox is four numbers west, south, east, north; got {len(vals)}")
    return vals


class RegionAction:
    """The map-region button of a following explorer (module docstring).

    Parameters
    ----------
    controller : the app's controller (its classifier and label colours).
    follower : the app's :class:`~tessera_explore.widgets.follow.MapFollower` (its loader
        names the store; its widget gets the controls; its map the result).

    Attributes
    ----------
    job : the latest :class:`~tessera_explore.region.from_view.MapRegionJob` (None before).
    layers : the overlays of finished jobs on the map.
    """

    def __init__(self, controller, follower):
        import ipywidgets as W

        self.controller = controller
        self.follower = follower
        self.job = None
        self.layers: list = []
        self._watch: threading.Thread | None = None
        self.button = W.Button(description="map region", tooltip="map the typed bbox (or this view) with the "
                               "current classifier, in the background", layout=W.Layout(width="110px"))
        self.bbox = W.Text(placeholder="west, south, east, north (empty: this view)",
                           layout=W.Layout(width="250px"))
        self.status = W.HTML("")
        self.bar = W.FloatProgress(value=0.0, min=0.0, max=1.0, layout=W.Layout(width="180px", height="10px",
                                                                                 display="none"))
        self.widget = W.VBox([W.HBox([self.button]), self.bbox, self.status, self.bar])
        self.widget.add_class("te-region")
        self.button.on_click(lambda _b: self._clicked())
        follower.widget.children = (*follower.widget.children, self.widget)

    def _clicked(self) -> None:
        from .guard import guarded

        guarded(self.controller.state, "map region")(self.start)()

    def start(self, bbox: Sequence[float] | None = None, *, client: Any = None, out: Any = None):
        """Start mapping ``bbox`` (default: the typed one, else the view shown) with the
        current classifier; returns the job.  Refused at once (said in the status line and
        raised) without a classifier, for a region too large or outside the store."""
        from ..region.from_view import MapRegionJob

        clf = self.controller.classifier
        if clf is None:
            raise ArgumentError("label at least two classes first: the region is mapped with the current classifier")
        if bbox is None:
            bbox = parse_bbox(self.bbox.value) or self.follower.view_bbox
        if self.job is not None and not self.job.done():
            raise ArgumentError("a region is being mapped already; wait for it or cancel it (app.region.cancel())")
        loader = self.follower.loader
        job = MapRegionJob(loader, tuple(bbox), clf, year=loader.year, client=client, out=out,
                           progress=self._progress)
        self.bar.layout.display = None
        self._progress(0.0, "starting...")
        try:
            job.start()
        except TesseraExploreError as err:
            self._progress(0.0, f"not started: {err}")
            raise
        self.job = job
        self._watch = threading.Thread(target=self._when_done, args=(job,), daemon=True,
                                       name="tessera-region-watch")
        self._watch.start()
        return job

    def cancel(self) -> None:
        """Stop the running job after the chunk in flight."""
        if self.job is not None:
            self.job.cancel()

    def wait(self, timeout: float | None = None):
        """Wait for the job and its overlay; returns the class map (or the dict by zone)."""
        if self.job is None:
            raise ArgumentError("no region job was started")
        out = self.job.result(timeout)
        if self._watch is not None:
            self._watch.join(timeout)
        return out

    def _progress(self, fraction: float, message: str) -> None:
        self.bar.value = max(0.0, min(1.0, float(fraction)))
        self.status.value = f"map region: {message}"

    def _when_done(self, job) -> None:
        try:
            result = job.result()
        except Exception as err:  # failed or cancelled: said in the line, and job.result() raises it
            self._progress(job.fraction, f"{job.state}: {type(err).__name__}: {err}")
            return
        try:
            self._show(result)
        except Exception as err:
            self.controller.session.report(err, "showing the mapped region")

    def _show(self, result) -> None:
        import ipyleaflet

        from .overlay import map_add, overlay_image

        maps = result if isinstance(result, dict) else {"": result}
        colors = self.controller.store.classes
        session = self.controller.session
        for zone, cls in maps.items():
            names = list(cls.attrs.get("classes", ()))
            img = overlay_image(cls.load(), categories=names, colors=[colors.get(n, "#888888") for n in names],
                                max_pixels=session.max_pixels, resampling="nearest", title="mapped region")
            layer = ipyleaflet.ImageOverlay(url=img.url, bounds=img.bounds, opacity=0.8,
                                            name=f"mapped region {zone}".strip())
            map_add(self.follower.map, layer)
            self.layers.append(layer)
        self._progress(1.0, f"done: on the map ({self.job.out if self.job is not None else ''})")
