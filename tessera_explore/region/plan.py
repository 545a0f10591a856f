"""Cut a region into UTM-zone grids and chunks that follow the store's chunk grid.

A region (a lon/lat bbox, any size) is processed **per UTM zone, each on its native
grid**: the part of the bbox inside zone ``NN`` is opened on that zone's CRS (for the
Zarr stores the zone's northern EPSG 326NN, as stored; for tile folders the tiles' own
zone), so no pixel is resampled on the way in.  Zones are merged only at export
(:func:`~tessera_explore.region.output.region_to_cog`).

Within a zone the grid is the bbox part **snapped outwards to the store's chunk grid**
in steps of the task chunk (a multiple of the store's inner chunk that divides its shard,
both read from the store's metadata: 32 px in 4096 px in the Cambridge layout, 256 px in
2048 px in the dclimate layout), so every task reads whole inner chunks of one shard and writes
whole chunks of the output store.  Tile folders have no chunk grid: their chunks start
at the area's top-left pixel.

A :class:`ZoneSpec` is small and picklable: a worker reopens its zone from it with
:func:`open_zone` (once per process) and takes windows with ``isel``.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..exceptions import ArgumentError, NoTilesInAreaError

__all__ = ["ZoneSpec", "plan_region", "open_zone", "zone_bbox", "chunk_side"]

#: Default task chunk side in pixels (1024 x 1024 x 128 int8 codes = 128 MiB read per task).
DEFAULT_CHUNK = 1024


def zone_bbox(bbox: Sequence[float], zone: int) -> tuple[float, float, float, float] | None:
    """The part of a lon/lat bbox inside UTM zone ``zone`` (None when empty)."""
    zw = -180.0 + 6.0 * (zone - 1)
    w, s, e, n = (float(v) for v in bbox)
    lo, hi = max(w, zw), min(e, zw + 6.0)
    if hi - lo <= 1e-9:
        return None
    return (lo, s, hi, n)


def chunk_side(want: int, inner: int, shard: int) -> int:
    """The largest multiple of ``inner`` dividing ``shard`` that is at most ``want`` (at
    least ``inner``)."""
    if int(want) < 1:
        raise ArgumentError(f"chunk must be a positive number of pixels, got {want!r}")
    side = inner
    while side * 2 <= max(int(want), inner) and shard % (side * 2) == 0:
        side *= 2
    return side


@dataclass(frozen=True)
class ZoneSpec:
    """Everything a worker needs to reopen one zone of a region (picklable, small)."""

    source: str
    year: int
    zone: int
    open_bbox: tuple[float, float, float, float]
    row0: int
    col0: int
    height: int
    width: int
    chunk: int
    epsg: int
    transform: tuple[float, ...]  # a, b, c, d, e, f of the zone grid (after snapping)
    open_kw: tuple = field(default_factory=tuple)  # sorted (key, value) pairs for open_embeddings

    @property
    def name(self) -> str:
        from ..io.layout import zone_group

        return zone_group(self.zone)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def n_chunks(self) -> tuple[int, int]:
        return (math.ceil(self.height / self.chunk), math.ceil(self.width / self.chunk))

    def chunk_window(self, i: int, j: int) -> tuple[slice, slice]:
        c = self.chunk
        return slice(i * c, min((i + 1) * c, self.height)), slice(j * c, min((j + 1) * c, self.width))

    def with_year(self, year: int) -> ZoneSpec:
        from dataclasses import replace

        return replace(self, year=int(year))

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        a, _, c, _, e, f = self.transform
        x = c + (np.arange(self.width) + 0.5) * a
        y = f + (np.arange(self.height) + 0.5) * e
        return x, y


_OPEN_LOCK = threading.Lock()
_OPENED: dict[ZoneSpec, Any] = {}


def _open(source: str, bbox, year: int, open_kw: dict, epsg: int | None = None):
    from ..io.open import open_embeddings

    crs = None if epsg is None else f"EPSG:{int(epsg)}"
    return open_embeddings(source, bbox=bbox, year=year, crs=crs, chunks=None, **open_kw)


def open_zone(spec: ZoneSpec):
    """The zone's lazy embeddings DataArray (no dask; lazy indexing), opened once per
    process and kept: a task takes its window with ``isel``, reading only that window."""
    with _OPEN_LOCK:
        da = _OPENED.get(spec)
        if da is None:
            da = _open(spec.source, spec.open_bbox, spec.year, thaw_kw(spec.open_kw), spec.epsg)
            da = da.isel(y=slice(spec.row0, spec.row0 + spec.height), x=slice(spec.col0, spec.col0 + spec.width))
            if da.sizes["y"] != spec.height or da.sizes["x"] != spec.width:  # pragma: no cover - defensive
                raise NoTilesInAreaError(f"zone {spec.zone}: reopened grid is {dict(da.sizes)}, planned {spec.shape}")
            if len(_OPENED) > 32:
                _OPENED.clear()
            _OPENED[spec] = da
    return da


def _store_grid(da) -> tuple[float, float, int, int] | None:
    """(x origin, y origin, inner chunk, shard) of the store behind ``da`` in its CRS, or None."""
    from ..io.codes import codes_window

    cw = codes_window(da)
    if cw is None:
        return None
    for t in getattr(cw.source, "tiles", []):
        if t.inner_chunk and t.crs == cw.source.crs:
            gx, gy = t.grid_origin
            return float(gx), float(gy), int(t.inner_chunk), int(t.shard)
    return None


def _abs_source(source: Any) -> str:
    s = os.fspath(source)
    if "://" in s or os.path.isabs(s) or not os.path.exists(s):
        return s  # URL, dataset name, or already absolute
    return os.path.abspath(s)


def plan_region(source: Any, bbox: Sequence[float], year: int, *, chunk: int = DEFAULT_CHUNK,
                **open_kw) -> list[ZoneSpec]:
    """One :class:`ZoneSpec` per UTM zone the bbox touches that holds data.

    ``open_kw`` go to :func:`~tessera_explore.open_embeddings` (``depth``, ``base_url``,
    ``http_options``, ``cache``, ``missing``, ``dataset_version``).
    """
    from rasterio.warp import transform_bounds

    from ..io import grid
    from ..io.store import zones_in_bbox

    bbox = grid.normalize_bbox(bbox)
    src = _abs_source(source)
    kw = tuple(sorted((k, _freeze(v)) for k, v in open_kw.items() if v is not None))
    specs = []
    for zone in zones_in_bbox(bbox):
        zb = zone_bbox(bbox, zone)
        if zb is None:
            continue
        try:
            da0 = _open(src, zb, year, thaw_kw(kw))
        except NoTilesInAreaError:
            continue
        t = da0.rio.transform()
        res = float(t.a)
        h0, w0 = da0.sizes["y"], da0.sizes["x"]
        sg = _store_grid(da0)
        if sg is None:  # tiles: chunks from the area's corner
            side = int(chunk)
            specs.append(ZoneSpec(src, int(year), zone, zb, 0, 0, h0, w0, side, int(da0.rio.crs.to_epsg()),
                                  tuple(t)[:6], kw))
            continue
        gx, gy, inner, shard = sg
        side = chunk_side(chunk, inner, shard)
        c0 = int(round((t.c - gx) / res))
        r0 = int(round((gy - t.f) / res))
        sc0, sr0 = (c0 // side) * side, (r0 // side) * side
        sc1, sr1 = -(-(c0 + w0) // side) * side, -(-(r0 + h0) // side) * side
        left, top = gx + sc0 * res, gy - sr0 * res
        right, bottom = gx + sc1 * res, gy - sr1 * res
        crs = da0.rio.crs
        obox = transform_bounds(crs, "EPSG:4326", left, bottom, right, top, densify_pts=41)
        pad = 2 * res / 100_000.0  # a couple of pixels in degrees, so the reopened grid covers the snap
        obox = (obox[0] - pad, max(obox[1] - pad, -90.0), obox[2] + pad, min(obox[3] + pad, 90.0))
        da1 = _open(src, obox, year, thaw_kw(kw), int(crs.to_epsg()))
        t1 = da1.rio.transform()
        row0 = int(round((t1.f - top) / res))
        col0 = int(round((left - t1.c) / res))
        h, w = sr1 - sr0, sc1 - sc0
        if row0 < 0 or col0 < 0 or row0 + h > da1.sizes["y"] or col0 + w > da1.sizes["x"]:  # pragma: no cover
            raise NoTilesInAreaError(f"zone {zone}: the snapped grid does not fit the reopened area")
        from affine import Affine

        specs.append(ZoneSpec(src, int(year), zone, tuple(float(v) for v in obox), row0, col0, h, w, side,
                              int(crs.to_epsg()), tuple(Affine(res, 0.0, left, 0.0, -res, top))[:6], kw))
    if not specs:
        raise NoTilesInAreaError(f"no data of {source} in {bbox} for {year}")
    return specs


def _freeze(v: Any) -> Any:
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return v


def thaw_kw(kw: tuple) -> dict:
    """open_embeddings keywords back from a ZoneSpec (``http_options`` as a dict)."""
    out = {}
    for k, v in kw:
        out[k] = dict(v) if k == "http_options" and isinstance(v, tuple) else v
    return out
