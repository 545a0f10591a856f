"""Explorer views: widgets that show the state and turn user events into controller calls.

Views hold no data and compute nothing beyond what a widget needs.  One module per view:

* :mod:`~tessera_explore.widgets.map_view`: :class:`MapView` (the one place that meets
  Leaflet's ``[lat, lon]`` order);
* :mod:`~tessera_explore.widgets.panel`: :class:`PanelView`, the side panel (its guided
  section is :mod:`~tessera_explore.widgets.guided_panel`);
* :mod:`~tessera_explore.widgets.scatter_view`: :class:`ScatterView`;
* :mod:`~tessera_explore.widgets.guard`: :func:`guarded` (every callback runs through it,
  so an exception shows in the app's error line instead of vanishing into the kernel
  log), :func:`on_main_thread`.

Every name is importable from here too.
"""

from __future__ import annotations

from .guard import guarded, html_widget, on_main_thread
from .map_view import DOT, HALO, LABEL_COLOR, LAYER_TITLES, LIVE_COLOR, MapView, labels_geojson
from .panel import PanelView
from .scatter_view import ScatterView

__all__ = ["MapView", "PanelView", "ScatterView", "guarded", "on_main_thread", "html_widget", "labels_geojson",
           "LABEL_COLOR", "LIVE_COLOR", "LAYER_TITLES", "HALO", "DOT"]
