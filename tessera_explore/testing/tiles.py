"""Write synthetic tiles in the exact geotessera folder layout."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Iterable, Sequence

import numpy as np

from .._schema import variant_of
from ..exceptions import ArgumentError
from ..io import grid
from ..io.quant import quantize
from .scene import scene_embeddings

__all__ = ["make_tiles", "tile_grid"]

_DENSIFY = 41


def _cell_utm_bounds(lon: float, lat: float, epsg: int) -> tuple[float, float, float, float]:
    from pyproj import Transformer

    w, s, e, n = grid.tile_bounds(lon, lat)
    t = np.linspace(0.0, 1.0, _DENSIFY)
    lons = np.concatenate([w + (e - w) * t, np.full(_DENSIFY, e), e - (e - w) * t, np.full(_DENSIFY, w)])
    lats = np.concatenate([np.full(_DENSIFY, s), s + (n - s) * t, np.full(_DENSIFY, n), n - (n - s) * t])
    tr = Transformer.from_crs(4326, epsg, always_xy=True)
    x, y = tr.transform(lons, lats)
    return float(np.min(x)), float(np.min(y)), float(np.max(x)), float(np.max(y))


def tile_grid(lon: float, lat: float, *, res: float = 10.0, shape: tuple[int, int] | None = None):
    """UTM grid of a tile: ``(epsg, affine transform, (height, width))``.

    Full size (``shape=None``): the tile's 0.1 degree cell transformed to its UTM zone,
    snapped outward to the ``res`` grid (about 1,110-1,130 rows).  With ``shape`` the grid
    has exactly that many rows and columns of ``res`` metres, centred on the cell.
    Grids are aligned to multiples of ``res`` (rows in northern coordinates), so tiles in
    one zone mosaic exactly, across the equator too.
    """
    from affine import Affine

    epsg = grid.utm_epsg(lon, lat)
    x0, y0, x1, y1 = _cell_utm_bounds(lon, lat, epsg)
    # rows are aligned in northern coordinates (a southern CRS's 10,000 km false northing
    # taken off), so the grids of a zone's two hemispheres align for any pixel size, as
    # 10 m grids do, and match a Zarr store's zone grid
    off = 10_000_000.0 if epsg >= 32700 else 0.0
    if shape is None:
        left = math.floor(x0 / res) * res
        top = math.ceil((y1 - off) / res) * res + off
        width = int(math.ceil((x1 - left) / res))
        height = int(math.ceil((top - y0) / res))
    else:
        height, width = (int(v) for v in shape)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        left = round((cx - width * res / 2) / res) * res
        top = round((cy - off + height * res / 2) / res) * res + off
    return epsg, Affine(res, 0.0, left, 0.0, -res, top), (height, width)


def _common_res(tiles: Sequence[tuple[float, float]], shape) -> float:
    """Pixel size shared by all tiles of one call (10 m at full size)."""
    if shape is None:
        return 10.0
    h, w = shape
    need = 0.0
    for lon, lat in tiles:
        x0, y0, x1, y1 = _cell_utm_bounds(lon, lat, grid.utm_epsg(lon, lat))
        need = max(need, (y1 - y0) / h, (x1 - x0) / w)
    return max(10.0, math.ceil(need / 10.0) * 10.0)


def _write_landmask(path: str, land: np.ndarray, epsg: int, transform) -> None:
    import rasterio

    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".part"
    with rasterio.open(
        tmp, "w", driver="GTiff", height=land.shape[0], width=land.shape[1], count=1, dtype="uint8",
        crs=f"EPSG:{epsg}", transform=transform, compress="deflate",
    ) as dst:
        dst.write(land.astype(np.uint8), 1)
    os.replace(tmp, path)


def _write_export_tiff(path, emb_hw, epsg, transform, *, version, year, lon, lat):
    import rasterio

    h, w, b = emb_hw.shape
    tmp = path + ".part"
    with rasterio.open(
        tmp, "w", driver="GTiff", height=h, width=w, count=b, dtype="float32", crs=f"EPSG:{epsg}",
        transform=transform, compress="lzw", tiled=True, blockxsize=256, blockysize=256, nodata=np.nan,
    ) as dst:
        dst.write(np.moveaxis(emb_hw, -1, 0))
        dst.descriptions = tuple(f"Tessera_Band_{i}" for i in range(b))
        dst.update_tags(
            TESSERA_DATASET_VERSION=version, TESSERA_DATASET_VARIANT=variant_of(version), TESSERA_YEAR=str(year),
            TESSERA_TILE_LAT=f"{lat:.2f}", TESSERA_TILE_LON=f"{lon:.2f}",
            TESSERA_DESCRIPTION="synthetic TESSERA embeddings made by tessera_explore.testing",
            GEOTESSERA_VERSION="synthetic",
        )
    os.replace(tmp, path)


def _tile_embeddings(lon, lat, year, *, epsg, transform, shape, seed, block_rows=96, difficulty=0.0):
    """(codes int8 (H,W,128), scales float32 (H,W), land uint8 (H,W)) of one tile."""
    from pyproj import Transformer

    h, w = shape
    tr = Transformer.from_crs(epsg, 4326, always_xy=True)
    res = transform.a
    codes = np.empty((h, w, 128), dtype=np.int8)
    scales = np.empty((h, w), dtype=np.float32)
    land = np.empty((h, w), dtype=np.uint8)
    cols = np.arange(w)
    # global pixel indices in the zone grid key the pixel noise (same pixel, same noise)
    col0 = int(round(transform.c / res))
    row0 = int(round(-transform.f / res))
    for r0 in range(0, h, block_rows):
        rows = np.arange(r0, min(h, r0 + block_rows))
        cc, rr = np.meshgrid(cols, rows)
        x = transform.c + (cc + 0.5) * res
        y = transform.f - (rr + 0.5) * res
        lo, la = tr.transform(x.ravel(), y.ravel())
        keys = ((cc + col0).ravel() + epsg * 10_000_000, (rr + row0).ravel())
        emb, _ = scene_embeddings(lo, la, year, seed=seed, pixel_keys=keys, difficulty=difficulty)
        q, s = quantize(emb)
        nod = ~np.isfinite(s)
        s[nod] = 0.0  # geotessera marks no data with a zero scale
        codes[rows[0] : rows[-1] + 1] = q.reshape(len(rows), w, 128)
        scales[rows[0] : rows[-1] + 1] = s.reshape(len(rows), w)
        land[rows[0] : rows[-1] + 1] = (~nod).reshape(len(rows), w)
    return codes, scales, land


def _save_npy_atomic(path: str, arr: np.ndarray) -> None:
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        np.save(f, arr)
    os.replace(tmp, path)


def make_tiles(
    dest: str | os.PathLike,
    *,
    tiles: Iterable[tuple[float, float]],
    years: Iterable[int],
    shape: tuple[int, int] | None = None,
    seed: int = 0,
    version: str = "v1",
    formats: Sequence[str] = ("npy",),
    per_band_scales: bool = False,
    difficulty: float = 0.0,
) -> list[dict]:
    """Write synthetic tiles in the geotessera folder layout under ``dest``.

    Parameters
    ----------
    dest : folder to write (created if needed; existing tiles are overwritten).
    tiles : tile centres ``(lon, lat)``; any point inside a tile names it.
    years : years to write; the scene changes between years (crop rotation, towns grow).
    shape : ``(rows, cols)`` per tile for small test tiles (coarser pixels that still
        cover the whole 0.1 degree cell, so neighbours join); ``None`` for full-size
        10 m tiles (about 1,113 x 690 at 52 N).
    seed : scene seed; the same seed gives the same landscape everywhere.
    version : dataset version recorded in ``tessera_metadata.json`` and the GeoTIFF tags.
    formats : ``"npy"`` (codes + scales, what ``geotessera download --format npy`` writes)
        and/or ``"tiff"`` (float32 128-band GeoTIFF exports with TESSERA tags).
    per_band_scales : write scales of shape (H, W, 128) instead of (H, W).
    difficulty : 0 (default) for the scene as it always was; up to 1 for a scene about as
        hard as real land cover (mixed edge pixels, within-class variation, overlapping
        crops: see :func:`~tessera_explore.testing.scene_embeddings`).  ``scene_classes``
        gives the true classes either way.

    Returns one record per written tile: lon, lat, year, epsg, transform, shape, paths.
    """
    dest = os.fspath(dest)
    centres = [grid.tile_center(lon, lat) for lon, lat in tiles]
    centres = list(dict.fromkeys(centres))
    years = grid.unique_years(years)
    if not centres or not years:
        raise ArgumentError("make_tiles needs at least one tile (tiles=) and one year (years=)")
    unknown = set(formats) - {"npy", "tiff"}
    if unknown:
        raise ArgumentError(f"formats={list(formats)!r}: unknown {sorted(unknown)}; use 'npy' and/or 'tiff'")
    res = _common_res(centres, shape)
    records = []
    for lon, lat in centres:
        epsg, transform, tshape = tile_grid(lon, lat, res=res, shape=shape)
        land_any = None
        for year in years:
            codes, scales, land = _tile_embeddings(lon, lat, year, epsg=epsg, transform=transform, shape=tshape, seed=seed,
                                                     difficulty=difficulty)
            paths = grid.tile_paths(dest, lon, lat, year)
            os.makedirs(os.path.dirname(paths["codes"]), exist_ok=True)
            if "npy" in formats:
                _save_npy_atomic(paths["codes"], codes)
                sc = np.repeat(scales[..., None], 128, axis=-1) if per_band_scales else scales
                _save_npy_atomic(paths["scales"], sc)
            if "tiff" in formats:
                emb = codes.astype(np.float32) * scales[..., None]
                emb[scales == 0] = np.nan
                _write_export_tiff(paths["tiff"], emb, epsg, transform, version=version, year=year, lon=lon, lat=lat)
            land_any = land if land_any is None else np.maximum(land_any, land)
            records.append({"lon": lon, "lat": lat, "year": year, "epsg": epsg, "transform": transform,
                            "shape": tshape, "paths": paths})
        _write_landmask(grid.tile_paths(dest, lon, lat, years[0])["landmask"], land_any, epsg, transform)
    meta = {
        "dataset_version": version,
        "dataset_variant": variant_of(version),
        "description": "synthetic TESSERA embeddings made by tessera_explore.testing.make_tiles",
        "synthetic": True,
        "seed": seed,
        **({"difficulty": float(difficulty)} if difficulty else {}),
        "years": years,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    meta_path = os.path.join(dest, grid.METADATA_FILE)
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            old = json.load(f)
        if old.get("dataset_version") == version:
            meta["years"] = sorted(set(old.get("years", [])) | set(years))
    tmp = meta_path + ".part"
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(tmp, meta_path)
    return records
