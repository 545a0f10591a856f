"""Where and how Sentinel-2 and Sentinel-1 are read: :class:`StacConfig`, the presets,
and the Planetary Computer URL signer.

One object, :class:`StacConfig`, holds everything about *where* and *how*: the API and
collection of each sensor (:class:`Source`), asset names, a URL-signing hook
(``patch_url``), and the retries and timeouts of **both** HTTP clients involved:
pystac-client for the search (:meth:`StacConfig.open_client`) and GDAL for the COG reads
(:meth:`StacConfig.gdal_env`, applied around every ``odc.stac.load``).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from ...exceptions import StacError
from ..granules import S1_BANDS, S2_BANDS

__all__ = [
    "PC_STAC_URL",
    "PC_SAS_URL",
    "EARTH_SEARCH_URL",
    "PC_S2_ASSETS",
    "EARTH_SEARCH_S2_ASSETS",
    "PC_S1_ASSETS",
    "Source",
    "StacConfig",
    "PlanetaryComputerSigner",
    "planetary_computer",
    "earth_search",
    "resolve_stac",
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
        from ...io.fetch import download

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
