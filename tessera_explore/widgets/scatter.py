"""Projection scatter of every pixel of an area, rendered by datashader.

The browser never receives the points: each view (pan, zoom) is aggregated in Python
into a ``width x height`` image by datashader (milliseconds for a million points once
numba has compiled), and HoloViews shows it as an ``hv.RGB`` in a ``DynamicMap`` driven
by a ``RangeXY`` stream.  Three colourings:

* ``color="rgb"`` (default): each screen pixel is the mean colour of the map pixels under
  it, from the same :func:`~tessera_explore.to_rgb` colours as the map;
* a class map (2-D integer DataArray on the same grid): datashader's categorical count,
  one colour per class;
* ``color=None``: point density (histogram-equalised).

HoloViews and datashader are imported inside functions.  In a notebook call
``te.load_bokeh_js()`` before any hvplot import (offline use; see
``docs/design/projections.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from ..exceptions import ArgumentError

__all__ = ["ScatterData", "scatter_points", "scatter_image", "scatter", "set_points"]


@dataclass
class ScatterData:
    """The points of a projection scatter.

    ``xy`` float32 ``(n, 2)``; ``index`` the flat pixel index (row * width + col) of each
    point in the area; ``rgb`` uint8 ``(n, 3)`` or None; ``classes`` int ``(n,)`` or None with
    ``class_names``/``class_colors``; ``shape`` the area's (rows, cols).
    """

    xy: np.ndarray
    index: np.ndarray
    shape: tuple[int, int]
    rgb: np.ndarray | None = None
    classes: np.ndarray | None = None
    class_names: list | None = None
    class_colors: list | None = None
    #: the axis titles, from the projection's name and the chosen components
    axis_labels: tuple[str, str] = ("component 1", "component 2")

    def __len__(self) -> int:
        return int(self.xy.shape[0])

    def frame(self):
        """A pandas DataFrame of the points (``x``, ``y`` and the colour columns)."""
        import pandas as pd

        cols: dict[str, Any] = {"x": self.xy[:, 0], "y": self.xy[:, 1]}
        if self.rgb is not None:
            for i, c in enumerate("rgb"):
                cols[c] = self.rgb[:, i].astype(np.float32)
        if self.classes is not None:
            cols["cls"] = pd.Categorical(self.classes, categories=list(range(len(self.class_names or []))))
        return pd.DataFrame(cols, copy=False)

    def bounds(self, pad: float = 0.02) -> tuple[float, float, float, float]:
        lo, hi = self.xy.min(axis=0), self.xy.max(axis=0)
        span = np.maximum(hi - lo, 1e-9)
        lo, hi = lo - pad * span, hi + pad * span
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def scatter_points(
    components: xr.DataArray,
    *,
    dims: tuple[int, int] = (1, 2),
    color: Any = "rgb",
    rgb: xr.DataArray | None = None,
    class_names: Sequence[str] | None = None,
    class_colors: Sequence[str] | None = None,
) -> ScatterData:
    """Collect every pixel with data of a ``(component, y, x)`` array as scatter points.

    ``dims`` picks the two components (1-based) on the axes.  ``color``: ``"rgb"`` (the
    colours of ``rgb``, default ``to_rgb(components)``), ``None``, or a 2-D class map on
    the same grid (negative or NaN = no class).
    """
    if not isinstance(components, xr.DataArray) or components.ndim != 3:
        raise ArgumentError("scatter needs the (component, y, x) DataArray returned by project()")
    c = np.asarray(components.values)
    if c.shape[0] < 2:
        raise ArgumentError("a projection scatter needs at least 2 components")
    i, j = (int(d) - 1 for d in dims)
    H, W = c.shape[1:]
    ok = np.isfinite(c[i]) & np.isfinite(c[j])
    index = np.flatnonzero(ok)
    xy = np.stack([c[i].ravel()[index], c[j].ravel()[index]], axis=1).astype(np.float32)
    if len(index) == 0:
        raise ArgumentError("no pixel has data to scatter")
    name = str(components.attrs.get("projection", "component")).upper()
    out = ScatterData(xy=xy, index=index, shape=(H, W), axis_labels=(f"{name} {dims[0]}", f"{name} {dims[1]}"))
    if isinstance(color, str) and color == "rgb":
        if rgb is None:
            from ..project.rgb import to_rgb

            rgb = to_rgb(components)
        a = np.asarray(getattr(rgb, "values", rgb))
        if a.shape[1:] != (H, W):
            raise ArgumentError(f"rgb is {a.shape[1:]}, the components {(H, W)}")
        out.rgb = np.stack([a[k].ravel()[index] for k in range(3)], axis=1)
    elif color is not None:
        cls = np.asarray(getattr(color, "values", color))
        if cls.shape != (H, W):
            raise ArgumentError(f"the class map is {cls.shape}, the components {(H, W)}")
        attrs = getattr(color, "attrs", {})
        flat = cls.ravel()[index]
        if np.issubdtype(flat.dtype, np.floating):
            flat = np.where(np.isfinite(flat), flat, -1)
        flat = flat.astype(np.int64)
        names = list(class_names if class_names is not None else attrs.get("classes", []))
        n = max(len(names), int(flat.max()) + 1 if flat.size else 0)
        names += [str(k) for k in range(len(names), n)]
        keep = flat >= 0
        out.xy, out.index, flat = out.xy[keep], out.index[keep], flat[keep]
        from .colours import class_palette

        # the map's colours for the same names (keyword colours, then the palette)
        colors = list(class_colors if class_colors is not None else attrs.get("class_colors", []))
        out.classes, out.class_names, out.class_colors = flat, names, class_palette(names, colors[:n])
    return out


def scatter_image(
    points: ScatterData,
    *,
    width: int = 480,
    height: int = 480,
    x_range: tuple[float, float] | None = None,
    y_range: tuple[float, float] | None = None,
    background_alpha: int = 0,
) -> np.ndarray:
    """Aggregate the points into an RGBA uint8 image ``(height, width, 4)``, row 0 at the top."""
    import datashader as ds
    import datashader.transfer_functions as tf

    x0, y0, x1, y1 = points.bounds()
    x_range = tuple(x_range) if x_range is not None else (x0, x1)
    y_range = tuple(y_range) if y_range is not None else (y0, y1)
    cvs = ds.Canvas(plot_width=int(width), plot_height=int(height), x_range=x_range, y_range=y_range)
    df = points.frame()
    if points.rgb is not None:
        agg = cvs.points(df, "x", "y", agg=ds.summary(n=ds.count(), r=ds.mean("r"), g=ds.mean("g"), b=ds.mean("b")))
        n = agg["n"].values
        img = np.zeros((int(height), int(width), 4), np.uint8)
        hit = n > 0
        for k, ch in enumerate("rgb"):
            img[..., k] = np.where(hit, np.nan_to_num(agg[ch].values), 0).astype(np.uint8)
        # opacity grows with density so single stray points stay visible but faint
        dens = np.log1p(n) / max(np.log1p(n.max()), 1e-9)
        img[..., 3] = np.where(hit, 110 + 145 * dens, background_alpha).astype(np.uint8)
    else:
        if points.classes is not None:
            agg = cvs.points(df, "x", "y", agg=ds.count_cat("cls"))
            key = {k: c for k, c in enumerate(points.class_colors)}
            shaded = tf.shade(agg, color_key=key, how="eq_hist", min_alpha=110)
        else:
            agg = cvs.points(df, "x", "y", agg=ds.count())
            shaded = tf.shade(agg, cmap=["#30123b", "#4686fb", "#1be5b5", "#a2fc3c", "#fb8022", "#7a0403"],
                              how="eq_hist")
        img = np.ascontiguousarray(shaded.values).view(np.uint8).reshape(int(height), int(width), 4)
    return np.ascontiguousarray(img[::-1])


def scatter(
    components: xr.DataArray,
    *,
    color: Any = "rgb",
    rgb: xr.DataArray | None = None,
    dims: tuple[int, int] = (1, 2),
    width: int = 480,
    height: int = 480,
    class_names: Sequence[str] | None = None,
    class_colors: Sequence[str] | None = None,
    tools: Sequence[Any] | None = None,
):
    """A zoomable HoloViews scatter of every pixel's projection, re-aggregated per view.

    Returns an ``hv.DynamicMap`` of ``hv.RGB`` images (attach ``hv.streams.BoundsXY`` or
    ``Lasso`` to it for selections; ``.points`` holds the :class:`ScatterData`, whose
    ``index`` maps points back to map pixels).  Wrap it for ipywidgets with
    ``panel.ipywidget(...)``.
    """
    import holoviews as hv
    import holoviews.plotting.bokeh  # noqa: F401  (registers the bokeh options; prints nothing, loads no JS)

    pts = scatter_points(components, dims=dims, color=color, rgb=rgb, class_names=class_names,
                         class_colors=class_colors)
    x0, y0, x1, y1 = pts.bounds()

    if tools is None:
        tools = ["box_select", "lasso_select"]

    def follow_points(plot, element) -> None:
        """Bokeh hook: the reset range is always the shown points' extent, and after
        ``set_points(..., keep_view=False)`` the view is too (HoloViews keeps a plot's
        first ranges otherwise: UMAP points would sit off-screen behind PCA's axes)."""
        _follow_points(dmap, plot.state.x_range, plot.state.y_range)

    style = dict(width=int(width), height=int(height), tools=list(tools), active_tools=["box_select", "wheel_zoom"],
                 hooks=[follow_points])

    def render(x_range=None, y_range=None):
        p = dmap.points  # swapped by set_points (another year, or UMAP instead of PCA)
        bx0, by0, bx1, by1 = p.bounds()
        xr_ = x_range if x_range is not None else (bx0, bx1)
        yr_ = y_range if y_range is not None else (by0, by1)
        img = scatter_image(p, width=width, height=height, x_range=xr_, y_range=yr_)
        kdims = [hv.Dimension("x", label=p.axis_labels[0]), hv.Dimension("y", label=p.axis_labels[1])]
        return hv.RGB(img, bounds=(xr_[0], yr_[0], xr_[1], yr_[1]), kdims=kdims).opts(backend="bokeh", **style)

    stream = hv.streams.RangeXY(x_range=(x0, x1), y_range=(y0, y1))
    dmap = hv.DynamicMap(render, streams=[stream])
    dmap.points = pts
    dmap.fit_view = False  # set by set_points(keep_view=False), cleared once the plot's ranges follow
    return dmap


def _follow_points(plot, x_range, y_range) -> None:
    """Point a Bokeh plot's ranges at ``plot.points``: reset range always, the view when
    ``plot.fit_view`` is set (see :func:`set_points`)."""
    x0, y0, x1, y1 = plot.points.bounds()
    for rng, lo, hi in ((x_range, x0, x1), (y_range, y0, y1)):
        if rng is None or not hasattr(rng, "reset_start"):
            continue
        if getattr(plot, "fit_view", False):
            rng.update(start=lo, end=hi)
        rng.update(reset_start=lo, reset_end=hi)
    plot.fit_view = False


def set_points(plot, points: ScatterData, *, keep_view: bool = True) -> None:
    """Show other points (e.g. another year of the same projection) in a scatter made by
    :func:`scatter`, re-aggregated at once.  ``keep_view`` keeps the current zoom; else the
    view fits the new points (use it when the projection changes: PCA and UMAP axes have
    nothing in common).  Either way the reset tool goes back to the new points' extent."""
    plot.points = points
    plot.fit_view = not keep_view
    stream = next(s for s in plot.streams if type(s).__name__ == "RangeXY")
    if keep_view and stream.x_range is not None and stream.y_range is not None:
        stream.event(x_range=tuple(stream.x_range), y_range=tuple(stream.y_range))
    else:
        x0, y0, x1, y1 = points.bounds()
        stream.event(x_range=(x0, x1), y_range=(y0, y1))
