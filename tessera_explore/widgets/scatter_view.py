"""The explorer's projection scatter (rasterised by datashader) linked to the map both
ways: a box or lasso selects pixels, a map click marks its pixel."""

from __future__ import annotations

import numpy as np

from .controller import ExplorerController
from .guard import guarded, on_main_thread
from .session import EVENT_COMPONENTS, EVENT_MARKER, EVENT_SCATTER
from .state import ExplorerState

__all__ = ["ScatterView"]


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
        controller.on(EVENT_MARKER, self._on_marker)
        controller.on(EVENT_SCATTER, guarded(state, "switching the scatter's projection")(self._on_scatter))
        controller.on(EVENT_COMPONENTS, guarded(state, "showing the year in the scatter")(self._on_year))
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

