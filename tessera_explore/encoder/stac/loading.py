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
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from ..exceptions import AreaTooLargeError, ArgumentError, StacError
from ..io.grid import Grid, utm_epsg
from .prepare import S1_BANDS, S2_BANDS, S2_RESAMPLING

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

PC_STAC_URL = "https://planetarycomputer.microsoft.com/api/stac/v1"
PC_SAS_URL = "https://planetarycomputer.microsoft.com/api/sas/v1/token"
EARTH_SEARCH_URL = "https://earth-search.aws.element84.com/v1"

#: Canonical band -> asset key, Planetary Computer ``sentinel-2-l2a``.
PC_S2_ASSETS: dict[str, str] = {**{b: b for b in S2_BANDS}, "SCL": "SCL"}
#: Canonical band -> asset key, Earth Search ``sentinel-2-l2a``.
EARTH_SEARCH_S2_ASSETS: dict[str, str] = {
    "B04": "red", "B02": "blue", "B03": "green", "B08": "nir", "B8A": "nir08", "B05": "rededge1",
    "B06": "rededge2", "B07": "rededge3", "B11": "swir16", "B12": "swir22", "SCL": "scl",
}
PC_S1_ASSETS: dict[str, str] = {b: b for b in S1_BANDS}
_RETRY_STATUS = (408, 429, 500, 502, 503, 504)


def default_cache_dir() -> Path:
    """The ``stac`` folder of :func:`tessera_explore.config.cache_dir` (read when called)."""
    from ..config import cache_dir

    return cache_dir("stac")


# --- configuration -----------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where one sensor's items come from.

    ``assets`` maps canonical band names (``B04`` ... ``SCL``; ``vv``, ``vh``) to the
    collection's asset keys.  ``patch_url`` rewrites every asset href before it is read
    (signing, a mirror).  ``pc_offset`` applies the Planetary Computer +1000 rule.
    ``query`` is passed to the STAC search (the ``query`` extension).
    """

    url: str
    collection: str
    assets: Mapping[str, str]
    patch_url: Callable[[str], str] | None = None
    pc_offset: bool = False
    query: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class StacConfig:
    """Sources plus every network setting of the search and the COG reads, in one place.

    ``timeout`` (seconds) bounds each HTTP request of the search and each GDAL request;
    ``retries`` and ``retry_delay`` apply to both (pystac-client through urllib3's
    ``Retry`` on 408/429/5xx, GDAL through ``GDAL_HTTP_MAX_RETRY`` /
    ``GDAL_HTTP_RETRY_DELAY``).  ``threads`` read COGs in parallel; ``batch_items`` items
    go to one ``odc.stac.load`` (and to the cache) at a time.  ``data_source`` (``"mpc"`` or
    ``"aws"``) tells v1.1 models which statistics fit the data.
    """

    s2: Source
    s1: Source | None
    name: str = "custom"
    data_source: str | None = None
    timeout: float = 30.0
    retries: int = 3
    retry_delay: float = 0.5
    max_cloud_cover: float | None = None
    page_size: int = 250
    threads: int = 8
    batch_items: int = 16
    headers: Mapping[str, str] = field(default_factory=dict)
    gdal_options: Mapping[str, str] = field(default_factory=dict)

    def replace(self, **changes: Any) -> StacConfig:
        """A copy with some fields changed (``cfg.replace(retries=0, timeout=5)``)."""
        return dataclasses.replace(self, **changes)

    def open_client(self, url: str):
        """A ``pystac_client.Client`` for ``url`` with this config's timeout and retries."""
        from pystac_client import Client
        from pystac_client.stac_api_io import StacApiIO
        from urllib3.util.retry import Retry

        retry = Retry(total=self.retries, backoff_factor=self.retry_delay, status_forcelist=_RETRY_STATUS,
                      allowed_methods=None, raise_on_status=False)
        io = StacApiIO(headers={"User-Agent": "tessera_explore", **dict(self.headers)}, timeout=self.timeout,
                       max_retries=retry)
        try:
            return Client.open(url, stac_io=io)
        except Exception as err:  # pystac-client raises APIError, requests errors, JSON errors
            raise StacError(f"cannot open the STAC API at {url}: {err}") from err

    def gdal_env(self) -> dict[str, Any]:
        """GDAL configuration for the COG reads (applied with ``rasterio.Env`` around each load)."""
        opts = {
            "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
            "GDAL_HTTP_MAX_RETRY": str(int(self.retries)),
            "GDAL_HTTP_RETRY_DELAY": str(float(self.retry_delay)),
            "GDAL_HTTP_TIMEOUT": str(max(1, int(round(self.timeout)))),
            "GDAL_HTTP_CONNECTTIMEOUT": str(max(1, int(round(min(self.timeout, 10))))),
            "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
            "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
            "VSI_CACHE": "TRUE",
        }
        opts.update({k: str(v) for k, v in self.gdal_options.items()})
        return opts


class PlanetaryComputerSigner:
    """``patch_url`` hook that appends a Planetary Computer SAS token to Azure blob hrefs.

    Tokens are fetched per storage account and container from ``token_url`` (through
    :func:`tessera_explore.io.fetch.download`, the package's HTTP module, with its retries)
    and reused until five minutes before they expire.  Other hrefs pass unchanged.
    """

    def __init__(self, token_url: str = PC_SAS_URL, *, timeout: float = 30.0, retries: int = 3):
        self.token_url = token_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def __call__(self, href: str) -> str:
        parts = urlparse(href)
        if not parts.netloc.endswith(".blob.core.windows.net") or "sig=" in parts.query:
            return href
        account = parts.netloc.split(".", 1)[0]
        container = parts.path.lstrip("/").split("/", 1)[0]
        token = self._token(account, container)
        return f"{href}{'&' if parts.query else '?'}{token}"

    def _token(self, account: str, container: str) -> str:
        from ..io.fetch import download

        with self._lock:
            token, expiry = self._tokens.get((account, container), ("", 0.0))
            if token and expiry - time.time() > 300:
                return token
            with tempfile.TemporaryDirectory() as tmp:
                path = download(f"{self.token_url}/{account}/{container}", os.path.join(tmp, "token.json"),
                                retries=self.retries, timeout=self.timeout, progress=False, overwrite=True)
                with open(path) as f:
                    payload = json.load(f)
            token = payload.get("token")
            if not token:
                raise StacError(f"Planetary Computer token service answered without a token for {account}/{container}")
            expiry = time.time() + 1800
            stamp = payload.get("msft:expiry")
            if stamp:
                try:
                    expiry = _dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
                except ValueError:
                    pass
            self._tokens[(account, container)] = (token, expiry)
            return token


def planetary_computer(*, url: str = PC_STAC_URL, sign: bool | Callable[[str], str] = True, s1: bool = True,
                       **options: Any) -> StacConfig:
    """Microsoft Planetary Computer: ``sentinel-2-l2a`` + ``sentinel-1-rtc``.

    ``sign=True`` signs asset hrefs with :class:`PlanetaryComputerSigner` (needed for
    reads, and for Sentinel-1 RTC a free account is not required); pass your own callable,
    or ``False`` for a server with open hrefs (such as the local test server, which speaks
    Planetary Computer's collections and asset names).  Other keyword arguments are
    :class:`StacConfig` fields.
    """
    patch = (PlanetaryComputerSigner(timeout=options.get("timeout", 30.0), retries=options.get("retries", 3))
             if sign is True else (sign or None))
    s2 = Source(url, "sentinel-2-l2a", PC_S2_ASSETS, patch_url=patch, pc_offset=True)
    s1_src = Source(url, "sentinel-1-rtc", PC_S1_ASSETS, patch_url=patch) if s1 else None
    options.setdefault("name", "planetary-computer")
    options.setdefault("data_source", "mpc")
    return StacConfig(s2, s1_src, **options)


def earth_search(*, url: str = EARTH_SEARCH_URL, s1: bool | Source = True, **options: Any) -> StacConfig:
    """Earth Search (AWS): ``sentinel-2-l2a`` with its asset names, no offset rule.

    Earth Search has no Sentinel-1 RTC: by default Sentinel-1 comes from Planetary
    Computer (signed); pass another :class:`Source`, or ``s1=False`` for none.
    """
    s2 = Source(url, "sentinel-2-l2a", EARTH_SEARCH_S2_ASSETS, pc_offset=False)
    if s1 is True:
        s1_src = Source(PC_STAC_URL, "sentinel-1-rtc", PC_S1_ASSETS,
                        patch_url=PlanetaryComputerSigner(timeout=options.get("timeout", 30.0)))
    else:
        s1_src = s1 or None
    options.setdefault("name", "earth-search")
    options.setdefault("data_source", "aws")
    return StacConfig(s2, s1_src, **options)


def resolve_stac(stac: Any) -> StacConfig:
    """``StacConfig`` from a config, a preset name, or a URL of a Planetary-Computer-like API.

    Names: ``"planetary-computer"`` (``"pc"``, ``"mpc"``) and ``"earth-search"``
    (``"aws"``).  A URL is taken as an API with Planetary Computer's collections and
    asset names and open (unsigned) hrefs.
    """
    if isinstance(stac, StacConfig):
        return stac
    if isinstance(stac, str):
        key = stac.lower().replace("_", "-")
        if key in ("planetary-computer", "pc", "mpc"):
            return planetary_computer()
        if key in ("earth-search", "aws"):
            return earth_search()
        if key.startswith(("http://", "https://")):
            return planetary_computer(url=stac, sign=False, name=stac)
    raise StacError(f"stac= must be a StacConfig, 'planetary-computer', 'earth-search' or an API URL; got {stac!r}")


# --- the output grid ---------------------------------------------------------------------


# The output grid is the package's one grid type, tessera_explore.io.grid.Grid (re-exported
# here as ``Grid``): ``Grid(epsg, transform, (height, width))`` builds it, ``crs`` reads
# ``"EPSG:n"`` and ``geobox()`` hands it to odc-stac.


def area_grid(bbox: Sequence[float] | None, *, like: Any = None, epsg: int | None = None,
              resolution: float = 10.0) -> Grid:
    """The output grid of an area.

    ``bbox`` is ``(min_lon, min_lat, max_lon, max_lat)``.  The grid is in the UTM zone of
    the box's centre (or ``epsg``), snapped to multiples of ``resolution`` metres (which
    lines up with Sentinel-2's own 10 m and 20 m grids).  ``like`` (an array with
    ``.rio`` CRS and transform, e.g. precomputed embeddings) gives its grid instead, cut to
    ``bbox`` when one is given.
    """
    from pyproj import Transformer

    if like is not None:
        import rioxarray  # noqa: F401

        crs = like.rio.crs
        if crs is None or crs.to_epsg() is None:
            raise StacError("like= has no EPSG CRS")
        try:
            grid = Grid.from_coords(like, crs=int(crs.to_epsg()))
        except ArgumentError as err:
            raise StacError(f"like= does not hold a regular grid: {err}") from err
        if bbox is None:
            return grid
        tr = Transformer.from_crs(4326, grid.epsg, always_xy=True)
        rows, cols = grid.window_of_bounds(tr.transform_bounds(*bbox, densify_pts=21))
        if rows.stop <= rows.start or cols.stop <= cols.start:
            raise StacError(f"bbox {tuple(bbox)} does not overlap the grid of like=")
        return grid.window(rows, cols)
    if bbox is None or len(bbox) != 4:
        raise StacError("bbox must be (min_lon, min_lat, max_lon, max_lat)")
    lon0, lat0, lon1, lat1 = (float(v) for v in bbox)
    if not (-180 <= lon0 < lon1 <= 180 and -90 <= lat0 < lat1 <= 90):
        raise StacError(f"bbox {tuple(bbox)} is not (min_lon, min_lat, max_lon, max_lat) in degrees")
    epsg = epsg or utm_epsg((lon0 + lon1) / 2, (lat0 + lat1) / 2)
    tr = Transformer.from_crs(4326, epsg, always_xy=True)
    bounds = tr.transform_bounds(lon0, lat0, lon1, lat1, densify_pts=21)
    return Grid.covering(bounds, int(epsg), float(resolution))


def check_size(grid: Grid, *, max_pixels: int | None, max_area_km2: float | None) -> None:
    """Refuse an area beyond the limits, explaining memory and time instead of running out."""
    n = grid.n_pixels
    km2 = n * abs(grid.transform.a * grid.transform.e) / 1e6
    over = (max_pixels is not None and n > max_pixels) or (max_area_km2 is not None and km2 > max_area_km2)
    if not over:
        return
    # a year: ~150 S2 granules x 11 bands x 2 bytes + ~120 S1 granules x 2 x 4 bytes, per pixel
    gib = n * (150 * 11 * 2 + 120 * 2 * 4) / 2**30
    hours = n / 100 / 3600  # about 100 px/s for the v2 small student on 2 CPU cores
    raise AreaTooLargeError(
        f"the area is {km2:.1f} km2 ({n:,} pixels at 10 m); the limits are max_area_km2={max_area_km2} and "
        f"max_pixels={max_pixels if max_pixels is None else format(max_pixels, ',')}. "
        f"A year of Sentinel-2 and Sentinel-1 for it is about {gib:.1f} GiB of "
        f"imagery to read and hold, and encoding takes about {hours:.1f} h on a 2-core CPU (much less on a GPU). "
        "Split the area into pieces (embeddings of the same model join without seams), or raise the limits "
        "if you have the memory and time."
    )


# --- search ------------------------------------------------------------------------------


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.part")
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def _search_one(cfg: StacConfig, source: Source, bbox, window, bar) -> list[dict]:
    client = cfg.open_client(source.url)
    query = dict(source.query or {})
    if cfg.max_cloud_cover is not None and source.assets.get("SCL"):
        query["eo:cloud_cover"] = {"lt": float(cfg.max_cloud_cover)}
    try:
        found = client.search(
            collections=[source.collection], bbox=[float(v) for v in bbox],
            datetime=window.stac_datetime(),
            query=query or None, limit=cfg.page_size,
        )
        out = []
        for d in found.items_as_dicts():
            out.append(d)
            bar.update(1)
        return out
    except StacError:
        raise
    except Exception as err:  # APIError, requests errors, bad JSON
        raise StacError(f"STAC search of {source.collection} at {source.url} failed: {err}") from err


def search(
    bbox: Sequence[float],
    year: Any = None,
    *,
    start: Any = None,
    end: Any = None,
    stac: Any = "planetary-computer",
    sensors: Sequence[str] = ("s2", "s1"),
    cache: str | os.PathLike | bool | None = None,
    refresh: bool = False,
    progress: bool = True,
) -> dict[str, list]:
    """Items of ``bbox`` (lon/lat) per sensor: ``{"s2": [pystac.Item], "s1": [...]}``, for a
    calendar ``year`` or a window ``start``..``end`` (see :mod:`~tessera_explore.encoder.window`).

    Results are cached (``cache``: a folder, ``None`` for :func:`default_cache_dir`,
    ``False`` for none) under a key of API, collection, box, window and query, so a repeated
    search sends nothing; ``refresh=True`` asks the API again.
    """
    from .window import resolve_window

    window = resolve_window(year, start, end)
    import pystac
    from tqdm.auto import tqdm

    cfg = resolve_stac(stac)
    root = _cache_root(cache)
    out: dict[str, list] = {}
    with tqdm(desc="STAC search", unit="item", disable=not progress) as bar:
        for sensor in sensors:
            source = cfg.s2 if sensor == "s2" else cfg.s1 if sensor == "s1" else None
            if sensor not in ("s2", "s1"):
                raise StacError(f"unknown sensor {sensor!r}; use 's2' and/or 's1'")
            if source is None:
                out[sensor] = []
                continue
            when = window.year if window.is_calendar_year else [window.start.isoformat(), window.end.isoformat()]
            key = _hash(source.url, source.collection, [round(float(v), 7) for v in bbox], when,
                        dict(source.query or {}), cfg.max_cloud_cover)
            path = root / "search" / f"{source.collection}_{window.label}_{key}.json" if root else None
            if path is not None and path.is_file() and not refresh:
                with open(path) as f:
                    dicts = json.load(f)["features"]
                bar.update(len(dicts))
            else:
                bar.set_postfix_str(source.collection)
                dicts = _search_one(cfg, source, bbox, window, bar)
                if path is not None:
                    _write_json(path, {"type": "FeatureCollection", "features": dicts})
            out[sensor] = [pystac.Item.from_dict(d, preserve_dict=False) for d in dicts]
    return out


# --- load --------------------------------------------------------------------------------


def _cache_root(cache) -> Path | None:
    if cache is False:
        return None
    return Path(cache) if cache not in (None, True) else default_cache_dir()


def _clear_gdal_http_cache() -> bool:
    """Forget what GDAL's ``/vsicurl/`` layer remembers of remote files (also failures).

    GDAL keeps, per URL and for the life of the process, what it learnt about a file,
    including that a request failed; without this a run after a server error in the same
    Python session would fail again without asking.  rasterio does not expose
    ``VSICurlClearCache``, so it is called through ctypes on the GDAL rasterio loaded.
    Returns False where that library cannot be found.
    """
    import ctypes
    import glob

    import rasterio

    libs = sorted(glob.glob(os.path.join(os.path.dirname(os.path.dirname(rasterio.__file__)), "rasterio.libs",
                                         "libgdal*.so*")))
    if not libs:
        import ctypes.util

        found = ctypes.util.find_library("gdal")
        libs = [found] if found else []
    for lib in libs:
        try:
            ctypes.CDLL(lib).VSICurlClearCache()
            return True
        except (OSError, AttributeError):
            continue
    return False


def _by_position(item, parsed, idx):  # odc-stac groupby: one time slice per item, in input order
    return idx


def _save_npy(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.{threading.get_ident()}.part")
    with open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)
    os.replace(tmp, path)


def load_granules(
    items: Sequence[Any],
    source: Source,
    grid: Grid,
    *,
    bands: Sequence[str],
    resampling: Mapping[str, str] | None = None,
    stac: StacConfig,
    cache: str | os.PathLike | bool | None = None,
    on_error: str = "raise",
    progress: bool = True,
    desc: str | None = None,
) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """Read ``bands`` (canonical names) of every item onto ``grid``; one ``(C, H, W)`` array per item id.

    Items lacking one of the assets are skipped (with a warning).  A read that fails after
    the configured retries raises :class:`StacError` naming the items (``on_error="raise"``)
    or skips those items with a warning (``"skip"``).  Finished items are written to the
    cache at once, so a later run reads them from disk and fetches only the rest.
    Returns ``(arrays, skipped)`` with ``skipped`` as ``[(item_id, reason)]``.
    """
    import rasterio
    from tqdm.auto import tqdm

    if on_error not in ("raise", "skip"):
        raise StacError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    resampling = dict(resampling or {})
    assets = [source.assets[b] for b in bands]
    root = _cache_root(cache)
    folder = None
    if root is not None:
        sub = _hash(source.url, source.collection, list(bands), resampling)
        folder = root / "granules" / grid.key() / f"{source.collection}_{sub}"
    arrays: dict[str, np.ndarray] = {}
    skipped: list[tuple[str, str]] = []
    todo = []
    for item in items:
        missing = [a for a in assets if a not in item.assets]
        if missing:
            skipped.append((item.id, f"no asset {', '.join(missing)}"))
            warnings.warn(f"{source.collection} item {item.id} has no asset {', '.join(missing)}; skipped",
                          stacklevel=2)
            continue
        path = folder / f"{item.id}.npy" if folder is not None else None
        if path is not None and path.is_file():
            try:
                arrays[item.id] = np.load(path, allow_pickle=False)
                continue
            except (OSError, ValueError):
                path.unlink(missing_ok=True)  # a damaged cache file is fetched again
        todo.append(item)

    def read(batch):
        import odc.stac
        from rasterio.errors import NotGeoreferencedWarning

        with rasterio.Env(**stac.gdal_env()), warnings.catch_warnings():
            # odc's bilinear warp path makes rasterio warn about an internal array; harmless
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = odc.stac.load(
                batch, bands=assets, geobox=grid.geobox(), groupby=_by_position,
                resampling={source.assets[b]: r for b, r in resampling.items() if b in source.assets},
                pool=max(1, int(stac.threads)), patch_url=source.patch_url, fail_on_error=True,
            )
        if ds.sizes.get("time", 0) != len(batch):
            raise StacError(f"odc-stac returned {ds.sizes.get('time', 0)} slices for {len(batch)} items")
        stacked = np.stack([ds[a].values for a in assets], axis=1)  # (T, C, H, W)
        return stacked

    cached = len(arrays)
    with tqdm(total=len(items) - len(skipped), initial=cached, unit="item", disable=not progress,
              desc=desc or f"load {source.collection}") as bar:
        step = max(1, int(stac.batch_items))
        for start in range(0, len(todo), step):
            batch = todo[start : start + step]
            try:
                stacked = read(batch)
                results = list(zip(batch, stacked))
            except Exception as err:  # GDAL/rasterio/odc errors carry the failing URL
                _clear_gdal_http_cache()  # so that the next attempt really asks the server again
                if on_error == "raise":
                    ids = ", ".join(i.id for i in batch)
                    raise StacError(
                        f"reading {source.collection} items failed after {stac.retries} retries "
                        f"({cached + start} of {len(items)} items were done and are cached; running again "
                        f"fetches only the rest). Items in the failed batch: {ids}. Cause: {err}"
                    ) from err
                results = []
                for item in batch:  # find the bad ones
                    try:
                        results.append((item, read([item])[0]))
                    except Exception as one_err:  # noqa: BLE001 - reported as a warning and in `skipped`
                        _clear_gdal_http_cache()
                        skipped.append((item.id, str(one_err)))
                        warnings.warn(f"{source.collection} item {item.id} could not be read; skipped: {one_err}",
                                      stacklevel=2)
            for item, arr in results:
                arr = np.ascontiguousarray(arr)
                arrays[item.id] = arr
                if folder is not None:
                    _save_npy(folder / f"{item.id}.npy", arr)
            bar.update(len(batch))
    return arrays, skipped


def item_datetime(item: Any) -> _dt.datetime:
    """Acquisition time of an item (``datetime``, else ``start_datetime``), in UTC."""
    when = item.datetime or item.common_metadata.start_datetime
    if when is None:
        raise StacError(f"item {item.id} has no datetime")
    return when if when.tzinfo else when.replace(tzinfo=_dt.UTC)


def orbit_state(item: Any) -> str:
    """``sat:orbit_state`` of a Sentinel-1 item (``"ascending"``/``"descending"``)."""
    state = item.properties.get("sat:orbit_state")
    if state not in ("ascending", "descending"):
        raise StacError(f"Sentinel-1 item {item.id} has no usable sat:orbit_state ({state!r})")
    return state


S2_LOAD_BANDS = (*S2_BANDS, "SCL")
S2_LOAD_RESAMPLING = dict(S2_RESAMPLING)
