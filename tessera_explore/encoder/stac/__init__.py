"""Sentinel-2 L2A and Sentinel-1 RTC from a STAC API: configuration, search, load, cache.

One object, :class:`StacConfig`, holds everything about *where* and *how*: the API and
collection of each sensor (:class:`Source`), asset names, a URL-signing hook
(``patch_url``), and the retries and timeouts of **both** HTTP clients involved:
pystac-client for the search (:meth:`StacConfig.open_client`) and GDAL for the COG reads
(:meth:`StacConfig.gdal_env`, applied around every ``odc.stac.load``).  Presets:

* :func:`planetary_computer` (the default): ``sentinel-2-l2a`` and ``sentinel-1-rtc``,
  hrefs signed with a SAS token (:class:`PlanetaryComputerSigner`), the +1000 offset rule;
* :func:`earth_search`: Earth Search's ``sentinel-2-l2a`` (asset names ``red``, ``blue``,
  ... ``scl``, already offset-corrected), Sentinel-1 RTC still from Planetary Computer
  (Earth Search has no RTC collection).

:func:`search` returns the items of one area and year per sensor; :func:`load_granules`
reads each item's bands onto the output grid (odc-stac, one time slice per item, bilinear
for the 20 m bands, nearest for SCL) and returns one array per item.  Both keep what they
fetched under a cache folder, so a second run of the same area and year fetches nothing;
a run broken midway keeps the items it finished.

Modules: ``config`` (presets and signing), ``output_grid`` (the area's grid and size
limits), ``catalog`` (search and the cache), ``gdal_cache`` (clearing GDAL's memory of
failed reads), ``loading`` (items onto the grid).  Every name is re-exported here.
"""

from __future__ import annotations

# names the single module had before the split (its imports and helpers included) stay
# importable from here: the F401 below are those re-exports
from ...exceptions import AreaTooLargeError, ArgumentError, StacError  # noqa: F401
from ...io.grid import utm_epsg  # noqa: F401
from ..granules import S1_BANDS, S2_BANDS, S2_RESAMPLING  # noqa: F401
from .catalog import _cache_root, _hash, _search_one, _write_json, default_cache_dir, search  # noqa: F401
from .config import (  # noqa: F401
    _RETRY_STATUS,
    EARTH_SEARCH_S2_ASSETS,
    EARTH_SEARCH_URL,
    PC_S1_ASSETS,
    PC_S2_ASSETS,
    PC_SAS_URL,
    PC_STAC_URL,
    PlanetaryComputerSigner,
    Source,
    StacConfig,
    earth_search,
    planetary_computer,
    resolve_stac,
)
from .gdal_cache import clear_gdal_http_cache
from .loading import (  # noqa: F401
    S2_LOAD_BANDS,
    S2_LOAD_RESAMPLING,
    _by_position,
    _save_npy,
    item_datetime,
    load_granules,
    orbit_state,
)
from .output_grid import Grid, area_grid, check_size

_clear_gdal_http_cache = clear_gdal_http_cache  # its name before the split

__all__ = [
    "PC_STAC_URL",
    "PC_SAS_URL",
    "EARTH_SEARCH_URL",
    "PC_S2_ASSETS",
    "EARTH_SEARCH_S2_ASSETS",
    "Source",
    "StacConfig",
    "PlanetaryComputerSigner",
    "planetary_computer",
    "earth_search",
    "resolve_stac",
    "Grid",
    "area_grid",
    "check_size",
    "item_datetime",
    "orbit_state",
    "S2_LOAD_BANDS",
    "search",
    "load_granules",
    "default_cache_dir",
]
