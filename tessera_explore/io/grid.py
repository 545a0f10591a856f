"""Grids: the one raster-grid value type, and the maths of the geotessera 0.1-degree
tile layout (pure functions, no I/O).

:class:`Grid` (a north-up raster grid: a CRS, an affine transform and a shape) lives
beside the schema in :mod:`tessera_explore._grid`; it is re-exported here, the same
class, for every part of the package that needs "the grid of this array".

Tiles are 0.1 x 0.1 degree cells named by their centre, ``grid_{lon:.2f}_{lat:.2f}``,
with centres ending in .x5.  Each tile is stored on its own UTM grid (EPSG 326xx
north, 327xx south).  These helpers compute tile names, paths and UTM zones from a
bounding box, so no directory is ever walked.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence

import numpy as np

from .._grid import COORD_TOLERANCE, Grid  # noqa: F401  (re-exported: the one Grid)
from ..exceptions import ArgumentError

__all__ = [
    "Grid",
    "TILE_SIZE_DEG",
    "tile_center",
    "tile_name",
    "tile_bounds",
    "tiles_in_bbox",
    "utm_epsg",
    "tile_paths",
    "normalize_bbox",
    "read_metadata",
]

TILE_SIZE_DEG = 0.1

REPRESENTATION_DIR = "global_0.1_degree_representation"
LANDMASK_DIR = "global_0.1_degree_tiff_all"
METADATA_FILE = "tessera_metadata.json"


def _center_1d(v: float) -> float:
    # floor(v * 10) / 10 + 0.05, rounded to 2 decimals; a tiny epsilon keeps exact
    # tile edges (0.1, 52.0) in the tile to their north-east, like geotessera.
    return round(math.floor(round(v * 10, 9)) / 10 + 0.05, 2)


def tile_center(lon: float, lat: float) -> tuple[float, float]:
    """Centre (lon, lat) of the tile that contains a point."""
    return _center_1d(lon), _center_1d(lat)


def tile_name(lon: float, lat: float) -> str:
    """``grid_{lon:.2f}_{lat:.2f}`` for a tile centre (the centre is not snapped here)."""
    return f"grid_{lon:.2f}_{lat:.2f}"


def tile_bounds(lon: float, lat: float) -> tuple[float, float, float, float]:
    """(west, south, east, north) in degrees of the tile with this centre."""
    h = TILE_SIZE_DEG / 2
    return (round(lon - h, 6), round(lat - h, 6), round(lon + h, 6), round(lat + h, 6))


def normalize_bbox(bbox: Sequence[float]) -> tuple[float, float, float, float]:
    """Validate a (west, south, east, north) lon/lat box and return it as floats."""
    try:
        w, s, e, n = (float(v) for v in bbox)
    except (TypeError, ValueError) as err:
        raise ArgumentError(f"bbox must be (west, south, east, north) in degrees, got {bbox!r}") from err
    if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        raise ArgumentError(
            f"bbox {bbox!r} is not (west, south, east, north) with west < east and south < north "
            "inside -180..180, -90..90 (note the order: lon before lat)"
        )
    return w, s, e, n


def tiles_in_bbox(bbox: Sequence[float]) -> list[tuple[float, float]]:
    """Centres of every tile that a (west, south, east, north) box touches.

    A box edge that lies exactly on a tile edge does not pull in the neighbour.
    """
    w, s, e, n = normalize_bbox(bbox)
    eps = 1e-9
    i0, i1 = math.floor(round(w * 10, 9)), math.floor(round(e * 10, 9) - eps)
    j0, j1 = math.floor(round(s * 10, 9)), math.floor(round(n * 10, 9) - eps)
    out = []
    for j in range(j0, max(j0, j1) + 1):
        for i in range(i0, max(i0, i1) + 1):
            out.append((round(i / 10 + 0.05, 2), round(j / 10 + 0.05, 2)))
    return out


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the UTM zone of a point (326xx north, 327xx south).

    Plain 6-degree zones, as used for the tiles (no Norway/Svalbard exceptions).
    """
    zone = int(math.floor((lon + 180.0) / 6.0)) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def tile_paths(root: str | os.PathLike, lon: float, lat: float, year: int) -> dict[str, str]:
    """Paths of one tile's files in a geotessera-layout folder (computed, not searched)."""
    name = tile_name(lon, lat)
    root = os.fspath(root)
    tdir = os.path.join(root, REPRESENTATION_DIR, str(int(year)), name)
    return {
        "codes": os.path.join(tdir, f"{name}.npy"),
        "scales": os.path.join(tdir, f"{name}_scales.npy"),
        "tiff": os.path.join(tdir, f"{name}_{int(year)}.tiff"),
        "landmask": os.path.join(root, LANDMASK_DIR, f"{name}.tiff"),
    }


def read_metadata(root: str | os.PathLike, *, error: type[Exception], advice: str = "") -> dict:
    """The folder's :data:`METADATA_FILE` as it is on disk: ``{}`` when there is none.

    The one reader of the file (opening a folder and fetching into one both use it).
    A file that cannot be read, or holds something other than a JSON object, raises
    ``error`` (the caller's exception class) with ``advice`` appended.
    """
    import json

    path = os.path.join(os.fspath(root), METADATA_FILE)
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as err:
        raise error(f"metadata file {path} cannot be read ({err}){advice}") from err
    if not isinstance(meta, dict):
        raise error(f"metadata file {path} holds a JSON {type(meta).__name__}, not an object of dataset "
                    f"fields{advice}")
    return meta


def parse_tile_name(name: str) -> tuple[float, float]:
    """(lon, lat) of a ``grid_X_Y`` name (with or without extension / suffix)."""
    base = os.path.basename(name)
    parts = base.split("_")
    if len(parts) < 3 or parts[0] != "grid":
        raise ArgumentError(f"{name!r} is not a tile name of the form grid_LON_LAT")
    lon = float(parts[1])
    lat = float(parts[2].split(".npy")[0].split(".tif")[0]) if len(parts) == 3 else float(parts[2])
    return lon, lat


def lonlat_tile_index(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer tile indices (floor(v*10)) of arrays of points; equal indices = same tile."""
    return np.floor(np.round(lon * 10, 9)).astype(np.int64), np.floor(np.round(lat * 10, 9)).astype(np.int64)


def center_index(lon_c: float, lat_c: float) -> tuple[int, int]:
    """Integer tile index of a tile centre."""
    return int(math.floor(round(lon_c * 10, 9))), int(math.floor(round(lat_c * 10, 9)))


def unique_years(years: Iterable[int]) -> list[int]:
    return sorted({int(y) for y in years})
