"""Synthetic Sentinel-2 L2A and Sentinel-1 RTC scenes as Cloud-Optimised GeoTIFFs plus STAC items.

:func:`make_stac_scene` writes, for one small area and year, what Planetary Computer serves:

* ``sentinel-2-l2a`` items with assets ``B02`` ... ``B12`` (uint16, 10 m for B02/B03/B04/B08,
  20 m for the others) and ``SCL`` (uint8, 20 m), Planetary Computer's +1000 offset on
  acquisitions from 2022-01-25, ``s2:processing_baseline`` accordingly;
* ``sentinel-1-rtc`` items with ``vv`` and ``vh`` (float32 linear backscatter, nodata
  -32768) and ``sat:orbit_state`` ascending or descending.

Reflectance follows the land cover of :func:`~tessera_explore.testing.scene_classes` with
a seasonal green-up per crop, plus clouds (SCL 8/9), their shadows (3), thin cirrus (10),
winter snow (11), dark pixels (2) and no-data swaths (0).  Some dates have two overlapping
granules (the first with a no-data swath), so a per-date mosaic is needed; one date is
almost entirely cloudy.  Backscatter follows the same land cover with seasonal crops and
speckle.  Everything is seeded: the same call writes the same bytes.

Tests read the written files back as the truth (:meth:`SyntheticStac.read`).
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .scene import BUILT, CEREAL, FOREST, GRASS, MAIZE, RAPE, WATER, _fbm, lonlat_to_metres, scene_classes

__all__ = ["SyntheticStac", "make_stac_scene", "S2_ASSET_BANDS", "S2_COLLECTION", "S1_COLLECTION"]

S2_COLLECTION = "sentinel-2-l2a"
S1_COLLECTION = "sentinel-1-rtc"
#: Asset key -> (resolution m, common name); the order files are written in.
S2_ASSET_BANDS = {
    "B02": (10, "blue"), "B03": (10, "green"), "B04": (10, "red"), "B08": (10, "nir"),
    "B05": (20, "rededge"), "B06": (20, "rededge"), "B07": (20, "rededge"), "B8A": (20, "nir08"),
    "B11": (20, "swir16"), "B12": (20, "swir22"),
}
_COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
_CUTOFF = _dt.datetime(2022, 1, 25, tzinfo=_dt.UTC)
_S1_NODATA = -32768.0

# surface reflectance x 10000 per asset band: bare soil, green vegetation, water, built-up, cloud
_ORDER = tuple(S2_ASSET_BANDS)
_SPECTRA = {
    "soil": dict(zip(_ORDER, (900, 1200, 1500, 2100, 1700, 1900, 2000, 2200, 2900, 2500))),
    "veg": dict(zip(_ORDER, (300, 600, 350, 4200, 900, 2600, 3600, 4300, 2100, 1000))),
    "water": dict(zip(_ORDER, (700, 600, 400, 200, 350, 250, 220, 200, 120, 90))),
    "built": dict(zip(_ORDER, (1100, 1200, 1300, 1900, 1400, 1700, 1800, 1950, 2300, 2100))),
    "forest": dict(zip(_ORDER, (250, 450, 250, 3300, 600, 1800, 2800, 3400, 1500, 700))),
    "cloud": dict(zip(_ORDER, (6500, 6400, 6300, 6600, 6300, 6400, 6500, 6600, 4800, 3600))),
    "snow": dict(zip(_ORDER, (8500, 8400, 8200, 7500, 8000, 7800, 7600, 7400, 900, 600))),
}


def _greenness(cls: np.ndarray, doy: int) -> np.ndarray:
    """Seasonal green cover 0..1 per class on a day of year."""
    def bump(peak, width):
        return float(np.exp(-0.5 * ((doy - peak) / width) ** 2))

    g = np.zeros(cls.shape, np.float32)
    g[cls == GRASS] = 0.45 + 0.35 * bump(160, 70)
    g[cls == CEREAL] = 0.05 + 0.85 * bump(135, 35)
    g[cls == MAIZE] = 0.05 + 0.85 * bump(215, 30)
    g[cls == RAPE] = 0.15 + 0.75 * bump(110, 40)
    g[cls == FOREST] = 0.55 + 0.4 * bump(180, 60)
    return g


@dataclass
class SyntheticStac:
    """A synthetic catalog on disk: COGs under ``root`` and the item/collection JSON.

    Hrefs in :attr:`items` are relative to ``root``; :meth:`stac_items` makes them absolute
    for a server's base URL.  ``bbox`` (lon/lat) is an area every granule covers with a
    margin; ``area_shape`` its size in 10 m pixels.
    """

    root: Path
    year: int
    epsg: int
    bbox: tuple[float, float, float, float]
    area_shape: tuple[int, int]
    collections: list[dict]
    items: list[dict]
    files: dict[tuple[str, str], Path] = field(default_factory=dict)
    truth: dict[str, dict] = field(default_factory=dict)

    def stac_items(self, base_url: str) -> list[dict]:
        """The items with hrefs under ``base_url`` (the COG server's URL of ``root``)."""
        base = base_url.rstrip("/")
        out = []
        for item in self.items:
            item = json.loads(json.dumps(item))
            for asset in item["assets"].values():
                if not asset["href"].startswith(("http://", "https://")):
                    asset["href"] = f"{base}/{asset['href']}"
            out.append(item)
        return out

    def by_collection(self, base_url: str) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {c["id"]: [] for c in self.collections}
        for item in self.stac_items(base_url):
            out[item["collection"]].append(item)
        return out

    def read(self, item_id: str, asset: str) -> tuple[np.ndarray, object]:
        """The array written for an asset and its affine transform (the truth for tests)."""
        import rasterio

        with rasterio.open(self.files[(item_id, asset)]) as src:
            return src.read(1), src.transform

    def items_of(self, collection: str) -> list[dict]:
        return [i for i in self.items if i["collection"] == collection]


def _footprint(epsg: int, x0: float, y0: float, x1: float, y1: float, n: int = 8) -> tuple[dict, list[float]]:
    from pyproj import Transformer

    tr = Transformer.from_crs(epsg, 4326, always_xy=True)
    t = np.linspace(0, 1, n, endpoint=False)
    xs = np.concatenate([x0 + (x1 - x0) * t, np.full(n, x1), x1 - (x1 - x0) * t, np.full(n, x0)])
    ys = np.concatenate([np.full(n, y1), y1 - (y1 - y0) * t, np.full(n, y0), y0 + (y1 - y0) * t])
    lon, lat = tr.transform(xs, ys)
    ring = [[round(float(a), 8), round(float(b), 8)] for a, b in zip(lon, lat)]
    ring.append(ring[0])
    bbox = [min(p[0] for p in ring), min(p[1] for p in ring), max(p[0] for p in ring), max(p[1] for p in ring)]
    return {"type": "Polygon", "coordinates": [ring]}, bbox


def _write_cog(path: Path, arr: np.ndarray, transform, epsg: int, nodata) -> None:
    import rasterio

    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path, "w", driver="COG", height=arr.shape[0], width=arr.shape[1], count=1, dtype=arr.dtype.name,
        crs=f"EPSG:{epsg}", transform=transform, nodata=nodata, blocksize=128, compress="deflate",
        overview_resampling="nearest",
    ) as dst:
        dst.write(arr, 1)


def _centres(epsg: int, x0: float, y1: float, res: float, shape: tuple[int, int]):
    from pyproj import Transformer

    h, w = shape
    xs = x0 + res * (np.arange(w) + 0.5)
    ys = y1 - res * (np.arange(h) + 0.5)
    xx, yy = np.meshgrid(xs, ys)
    lon, lat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(xx, yy)
    return lon, lat


def _s2_arrays(cls, lon, lat, doy, res, date_idx, granule, cloud_frac, nodata_cols, seed, offset):
    """Bands (dict asset -> uint16) and SCL on one grid (10 m or 20 m)."""
    u, v = lonlat_to_metres(lon, lat)
    rng = np.random.default_rng([seed, date_idx, granule, int(res)])
    g = _greenness(cls, doy)[..., None]
    soil = np.array([_SPECTRA["soil"][b] for b in _ORDER], np.float32)
    veg = np.array([_SPECTRA["veg"][b] for b in _ORDER], np.float32)
    refl = (1 - g) * soil + g * veg
    for name, c in (("water", WATER), ("built", BUILT)):
        refl[cls == c] = np.array([_SPECTRA[name][b] for b in _ORDER], np.float32)
    forest = cls == FOREST
    refl[forest] = (1 - 0.3 * (1 - g[forest])) * np.array([_SPECTRA["forest"][b] for b in _ORDER], np.float32)
    refl *= 1 + 0.03 * rng.standard_normal(refl.shape[:2] + (1,)).astype(np.float32)
    scl = np.where(cls == WATER, 6, np.where((g[..., 0] > 0.3) & (cls != BUILT), 4, 5)).astype(np.uint8)
    # clouds: one smooth field per date (shared by granules of the date), thresholded
    field_ = _fbm(u, v, 450.0, seed * 1000 + date_idx * 7 + 1, octaves=3)
    if cloud_frac >= 0.97:
        field_ = 0.5 + 0.5 * field_  # nearly all cloud
    thr = np.quantile(field_, 1 - cloud_frac) if cloud_frac > 0 else np.inf
    cloud = field_ >= thr
    core = field_ >= thr + 0.05
    cirrus = (field_ >= thr - 0.04) & ~cloud
    shift = max(1, int(round(60 / res)))
    shadow = np.zeros_like(cloud)
    shadow[shift:, shift:] = cloud[:-shift, :-shift]
    shadow &= ~cloud
    snow = np.zeros_like(cloud)
    if doy < 45 or doy > 335:
        snow = (_fbm(u, v, 300.0, seed + 77 + date_idx, octaves=2) > 0.62) & ~cloud & ~shadow & (cls != WATER)
    dark = (rng.random(cls.shape) < 0.004) & ~cloud
    cloud_s = np.array([_SPECTRA["cloud"][b] for b in _ORDER], np.float32)
    snow_s = np.array([_SPECTRA["snow"][b] for b in _ORDER], np.float32)
    refl[cloud] = cloud_s * (0.8 + 0.2 * field_[cloud, None])
    refl[cirrus] += 600
    refl[shadow] *= 0.35
    refl[snow] = snow_s
    refl[dark] *= 0.1
    scl[cirrus] = 10
    scl[shadow] = 3
    scl[cloud] = 8
    scl[core] = 9
    scl[snow] = 11
    scl[dark] = 2
    dn = np.clip(np.rint(refl), 1, 20000).astype(np.int32) + (1000 if offset else 0)
    dn = np.clip(dn, 1, 65535).astype(np.uint16)
    if nodata_cols is not None:
        c0 = int(nodata_cols * cls.shape[1])
        dn[:, c0:] = 0
        scl[:, c0:] = 0
    return {b: dn[..., i] for i, b in enumerate(_ORDER)}, scl


def _s1_arrays(cls, doy, orbit, date_idx, granule, nodata_rows, seed):
    rng = np.random.default_rng([seed, 1000 + date_idx, granule])
    g = _greenness(cls, doy)
    vv = np.full(cls.shape, 0.04, np.float32)
    vv[cls == WATER] = 0.006
    vv[cls == BUILT] = 0.35 if orbit == "ascending" else 0.25
    vv[cls == FOREST] = 0.11
    crops = (cls == CEREAL) | (cls == MAIZE) | (cls == RAPE)
    vv[crops] = 0.02 + 0.09 * g[crops]
    ratio = np.full(cls.shape, 0.2, np.float32)
    ratio[cls == FOREST] = 0.3
    ratio[crops] = 0.12 + 0.18 * g[crops]
    ratio[cls == WATER] = 0.1
    vh = vv * ratio
    speckle = rng.gamma(4.0, 0.25, (2,) + cls.shape).astype(np.float32)
    vv, vh = vv * speckle[0], vh * speckle[1]
    holes = rng.random(cls.shape) < 0.002  # radar shadow: exactly zero
    vv[holes] = 0
    vh[holes] = 0
    if nodata_rows is not None:
        r0 = int(nodata_rows * cls.shape[0])
        vv[r0:] = _S1_NODATA
        vh[r0:] = _S1_NODATA
    return vv.astype(np.float32), vh.astype(np.float32)


def _collection(cid: str, desc: str, bbox, year: int) -> dict:
    return {
        "type": "Collection", "stac_version": "1.0.0", "id": cid, "description": desc, "license": "proprietary",
        "links": [], "stac_extensions": [],
        "extent": {"spatial": {"bbox": [list(bbox)]},
                   "temporal": {"interval": [[f"{year}-01-01T00:00:00Z", f"{year}-12-31T23:59:59Z"]]}},
    }


def make_stac_scene(
    root: str | Path,
    *,
    year: int = 2022,
    lon: float = 0.2,
    lat: float = 52.05,
    shape: tuple[int, int] = (32, 32),
    margin: int = 8,
    n_s2_dates: int = 8,
    n_s1_dates: int = 6,
    double_granule_every: int = 3,
    cloudy_date: int | None = 1,
    missing_asset: bool = False,
    missing_file: bool = False,
    seed: int = 0,
) -> SyntheticStac:
    """Write a synthetic year of S2 L2A + S1 RTC for a ``shape`` (10 m pixels) area at lon/lat.

    Granules cover the area plus ``margin`` pixels all round (20 m aligned).  S2 dates are
    spread over the year from 5 January; every ``double_granule_every``-th date has a second
    granule, and the first granule of such a date has no data over its eastern third.
    Date ``cloudy_date`` is ~99 % cloud (dropped by the 5 % rule).  S1 dates alternate
    ascending/descending; the last one has two granules, the first with a no-data strip.
    ``missing_asset`` leaves ``B8A`` out of the metadata of one extra S2 item;
    ``missing_file`` lists an extra S2 item whose ``B05`` file is not on disk.
    """
    root = Path(root)
    from pyproj import Transformer

    epsg = (32600 if lat >= 0 else 32700) + int((lon + 180) // 6) % 60 + 1
    h, w = shape
    cx, cy = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
    ax0 = np.floor(cx / 20) * 20 - (w // 2) * 10
    ay1 = np.floor(cy / 20) * 20 + (h // 2) * 10
    ax0, ay1 = np.floor(ax0 / 20) * 20, np.ceil(ay1 / 20) * 20
    m = int(np.ceil(margin / 2) * 2)
    gx0, gy1 = ax0 - 10 * m, ay1 + 10 * m
    gh, gw = h + 2 * m, w + 2 * m
    gh += gh % 2
    gw += gw % 2
    gx1, gy0 = gx0 + 10 * gw, gy1 - 10 * gh
    # the area: inside by half a pixel so that snapping lands on the area's pixels
    a_lon0, a_lat0, a_lon1, a_lat1 = Transformer.from_crs(epsg, 4326, always_xy=True).transform_bounds(
        ax0 + 5, ay1 - 10 * h + 5, ax0 + 10 * w - 5, ay1 - 5)
    from affine import Affine

    tr10 = Affine(10, 0, gx0, 0, -10, gy1)
    tr20 = Affine(20, 0, gx0, 0, -20, gy1)
    lon10, lat10 = _centres(epsg, gx0, gy1, 10, (gh, gw))
    lon20, lat20 = _centres(epsg, gx0, gy1, 20, (gh // 2, gw // 2))
    cls10 = scene_classes(lon10, lat10, year, seed=seed)
    cls20 = scene_classes(lon20, lat20, year, seed=seed)
    geom, gbbox = _footprint(epsg, gx0, gy0, gx1, gy1)
    cat = SyntheticStac(root, year, epsg, (a_lon0, a_lat0, a_lon1, a_lat1), (h, w), [], [])
    cat.collections = [
        _collection(S2_COLLECTION, "Synthetic Sentinel-2 Level-2A (Planetary Computer layout)", gbbox, year),
        _collection(S1_COLLECTION, "Synthetic Sentinel-1 RTC (Planetary Computer layout)", gbbox, year),
    ]
    rng = np.random.default_rng([seed, year])
    step = max(1, 360 // max(n_s2_dates, 1))
    s2_days = [5 + i * step for i in range(n_s2_dates)]
    extra = []
    if missing_asset:
        extra.append(("missing_asset", s2_days[-1] + 2 if s2_days else 10))
    if missing_file:
        extra.append(("missing_file", s2_days[-1] + 3 if s2_days else 11))
    plan = [(i, d, None) for i, d in enumerate(s2_days)] + [(n_s2_dates + k, d, kind) for k, (kind, d) in enumerate(extra)]
    for date_idx, doy, kind in plan:
        date = _dt.datetime(year, 1, 1, 10, 56, 21, tzinfo=_dt.UTC) + _dt.timedelta(days=doy - 1)
        offset = date >= _CUTOFF
        frac = 0.99 if date_idx == cloudy_date else float(rng.uniform(0.0, 0.5))
        double = kind is None and double_granule_every and date_idx % double_granule_every == 2
        granules = [("T31UCU", 0.66 if double else None), ("T31UDU", None)] if double else [("T31UCU", None)]
        for gi, (tile, nodata_cols) in enumerate(granules):
            when = date + _dt.timedelta(seconds=5 * gi)
            item_id = f"S2B_MSIL2A_{when:%Y%m%dT%H%M%S}_R051_{tile}_{when:%Y%m%dT%H%M%S}"
            b10, scl10 = _s2_arrays(cls10, lon10, lat10, doy, 10, date_idx, gi, frac, nodata_cols, seed, offset)
            b20, scl20 = _s2_arrays(cls20, lon20, lat20, doy, 20, date_idx, gi, frac, nodata_cols, seed, offset)
            assets = {}
            valid = 0.0
            for band, (res, common) in S2_ASSET_BANDS.items():
                arr, tr = (b10[band], tr10) if res == 10 else (b20[band], tr20)
                rel = f"cogs/{S2_COLLECTION}/{item_id}/{band}.tif"
                if not (kind == "missing_file" and band == "B05"):
                    _write_cog(root / rel, arr, tr, epsg, 0)
                cat.files[(item_id, band)] = root / rel
                assets[band] = {
                    "href": rel, "type": _COG_TYPE, "roles": ["data"], "title": f"Band {band}", "gsd": res,
                    "proj:shape": list(arr.shape), "proj:transform": [tr.a, tr.b, tr.c, tr.d, tr.e, tr.f, 0, 0, 1],
                    "raster:bands": [{"nodata": 0, "data_type": "uint16", "spatial_resolution": res, "scale": 0.0001,
                                      "offset": -0.1 if offset else 0.0}],
                    "eo:bands": [{"name": band, "common_name": common}],
                }
            rel = f"cogs/{S2_COLLECTION}/{item_id}/SCL.tif"
            _write_cog(root / rel, scl20, tr20, epsg, 0)
            cat.files[(item_id, "SCL")] = root / rel
            assets["SCL"] = {
                "href": rel, "type": _COG_TYPE, "roles": ["data"], "title": "Scene classification map", "gsd": 20,
                "proj:shape": list(scl20.shape), "proj:transform": [tr20.a, 0, tr20.c, 0, tr20.e, tr20.f, 0, 0, 1],
                "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20}],
            }
            valid = float(np.isin(scl20, (4, 5, 6, 7, 10, 11)).mean())
            if kind == "missing_asset":
                del assets["B8A"]
            cat.items.append({
                "type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": S2_COLLECTION,
                "stac_extensions": [
                    "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
                    "https://stac-extensions.github.io/projection/v1.0.0/schema.json",
                    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
                ],
                "geometry": geom, "bbox": gbbox, "links": [],
                "properties": {
                    "datetime": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "platform": "Sentinel-2B",
                    "constellation": "Sentinel 2", "instruments": ["msi"], "eo:cloud_cover": round(100 * (1 - valid), 2),
                    "s2:mgrs_tile": tile[1:], "s2:processing_baseline": "04.00" if offset else "03.01",
                    "proj:epsg": epsg,
                },
                "assets": assets,
            })
            cat.truth[item_id] = {"offset": offset, "date": when, "kind": kind, "granule": gi}
    # Sentinel-1
    s1_step = max(1, 360 // max(n_s1_dates, 1))
    for k in range(n_s1_dates):
        doy = 3 + k * s1_step
        orbit = "ascending" if k % 2 == 0 else "descending"
        hour = 17 if orbit == "ascending" else 6
        date = _dt.datetime(year, 1, 1, hour, 25, 9, tzinfo=_dt.UTC) + _dt.timedelta(days=doy - 1)
        double = k == n_s1_dates - 1 and n_s1_dates > 1
        granules = [0.5, None] if double else [None]
        for gi, nodata_rows in enumerate(granules):
            when = date + _dt.timedelta(seconds=24 * gi)
            item_id = f"S1A_IW_GRDH_1SDV_{when:%Y%m%dT%H%M%S}_{orbit[:3].upper()}_rtc"
            vv, vh = _s1_arrays(cls10, doy, orbit, k, gi, nodata_rows, seed)
            assets = {}
            for band, arr in (("vv", vv), ("vh", vh)):
                rel = f"cogs/{S1_COLLECTION}/{item_id}/{band}.tif"
                _write_cog(root / rel, arr, tr10, epsg, _S1_NODATA)
                cat.files[(item_id, band)] = root / rel
                assets[band] = {
                    "href": rel, "type": _COG_TYPE, "roles": ["data"], "title": f"{band.upper()}: gamma0 terrain",
                    "proj:shape": list(arr.shape), "proj:transform": [10, 0, gx0, 0, -10, gy1, 0, 0, 1],
                    "raster:bands": [{"nodata": _S1_NODATA, "data_type": "float32", "spatial_resolution": 10}],
                }
            cat.items.append({
                "type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": S1_COLLECTION,
                "stac_extensions": [
                    "https://stac-extensions.github.io/sar/v1.0.0/schema.json",
                    "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
                    "https://stac-extensions.github.io/projection/v1.0.0/schema.json",
                    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
                ],
                "geometry": geom, "bbox": gbbox, "links": [],
                "properties": {
                    "datetime": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "platform": "SENTINEL-1A",
                    "constellation": "Sentinel-1", "sat:orbit_state": orbit, "sar:instrument_mode": "IW",
                    "sar:polarizations": ["VV", "VH"], "sar:frequency_band": "C", "proj:epsg": epsg,
                },
                "assets": assets,
            })
            cat.truth[item_id] = {"orbit": orbit, "date": when, "granule": gi}
    return cat

