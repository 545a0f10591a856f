"""Any 2-D or RGB DataArray as an exactly placed, in-band PNG overlay on a web map.

The PNG travels in the widget state as a ``data:`` URL, so no tile server is needed
(Binder, remote JupyterHubs, offline).  This module holds the ipyleaflet layers
(:func:`overlay`, :func:`update_overlay`, :func:`remove_overlay`) and the map helpers the
explorer adds and removes layers with; the work is done in

* :mod:`~tessera_explore.widgets.reproject`: the array's grid, the Web Mercator grid of
  the PNG and the exact warp between them (:func:`shown_pixels`);
* :mod:`~tessera_explore.widgets.colours`: class palettes, colour tables, PNG encoding;
* :mod:`~tessera_explore.widgets.legend`: :func:`legend_html`;
* :mod:`~tessera_explore.widgets.render`: :class:`OverlayImage` and :func:`overlay_image`.

Every name is importable from here as well.  ipyleaflet and ipywidgets are imported only
inside :func:`overlay` and its helpers.
"""

from __future__ import annotations

import weakref
from typing import Any

import xarray as xr

from .colours import MAP_PALETTE, colour_lut, encode_indexed, encode_png, hex_to_rgb  # noqa: F401
from .legend import legend_html
from .render import OverlayImage, overlay_image
from .reproject import DEFAULT_MAX_PIXELS, WEB_MERCATOR, shown_pixels  # noqa: F401

__all__ = [
    "OverlayImage",
    "overlay_image",
    "overlay",
    "update_overlay",
    "remove_overlay",
    "legend_html",
    "DEFAULT_MAX_PIXELS",
    "map_add",
    "map_remove",
]

_LEGENDS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def overlay(
    da: xr.DataArray,
    *,
    m: Any = None,
    name: str | None = None,
    opacity: float = 1.0,
    legend: bool = True,
    legend_position: str = "bottomright",
    **image_options,
):
    """An ``ipyleaflet.ImageOverlay`` of ``da``, placed exactly (see :func:`overlay_image`).

    With ``m`` (an ``ipyleaflet.Map``, e.g. ``leafmap.leafmap.Map``) the layer is added to
    the map, with its legend as a ``WidgetControl`` where the values have meaning (class
    maps, continuous values; not RGB embedding colour).  Returns the layer; its legend
    control, if any, is removed with it by :func:`remove_overlay`.
    ``image_options`` go to :func:`overlay_image` (``max_pixels``, ``cmap``, ``vmin``, ...).
    """
    import ipyleaflet

    img = overlay_image(da, **image_options)
    layer = ipyleaflet.ImageOverlay(url=img.url, bounds=img.bounds, opacity=float(opacity),
                                    name=name or str(da.attrs.get("long_name") or da.name or "overlay"))
    control = None
    if legend and img.legend:
        import ipywidgets

        control = ipyleaflet.WidgetControl(widget=ipywidgets.HTML(img.legend), position=legend_position)
        _LEGENDS[layer] = control
    if m is not None:
        m.add(layer)
        if control is not None:
            m.add(control)
    return layer

def update_overlay(layer, da: xr.DataArray, **image_options):
    """Re-render ``da`` into an existing ImageOverlay (its URL, bounds and legend), so a
    map shows new values without removing and re-adding layers."""
    img = overlay_image(da, **image_options)
    layer.url = img.url
    layer.bounds = img.bounds
    control = _LEGENDS.get(layer)
    if control is not None and img.legend:
        control.widget.value = img.legend
    return layer

def remove_overlay(m, layer) -> None:
    """Remove an overlay layer and its legend control from the map."""
    if layer in m.layers:
        map_remove(m, layer)
    control = _LEGENDS.pop(layer, None)
    if control is not None and control in m.controls:
        map_remove(m, control)

def map_add(m, obj) -> None:
    """Add a layer or control with ipyleaflet's own ``Map.add``: leafmap's rebuilds its
    layer manager on every add (new checkboxes, sliders and links for every layer, never
    closed), which the explorer does not show."""
    import ipyleaflet

    ipyleaflet.Map.add(m, obj)

def map_remove(m, obj) -> None:
    """Remove a layer or control from the map and close it, with the widget links that
    point at it (leafmap's layer manager links a checkbox and a slider to each layer).

    A link left pointing at a closed widget cannot be serialised, and one such widget
    makes the kernel's answer to the front end's request for all widget states fail: in
    Voila no widget of the notebook renders ("Loading widget..." forever)."""
    import ipyleaflet
    import ipywidgets as W

    ipyleaflet.Map.remove(m, obj)
    for widget in list(_live_widgets()):
        ends = (widget.source, widget.target) if isinstance(widget, W.widgets.widget_link.Link) else ()
        if any(end[0] is obj for end in ends):
            widget.close()
    if isinstance(obj, W.Widget):
        obj.close()

def _live_widgets():
    """The widgets of this kernel that are open (ipywidgets' registry)."""
    from ipywidgets.widgets import widget

    return getattr(widget, "_instances", {}).values()
