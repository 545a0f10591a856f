"""One tile on disk: lazily opened, validated, read by window.

Two kinds of tile are read:

* :class:`NpyTile`: int8 codes ``(H, W, 128)`` + float32 scales ``(H, W)`` or
  ``(H, W, 128)``, with the landmask GeoTIFF that carries the tile's CRS and
  transform (what ``geotessera download --format npy`` writes);
* :class:`TiffTile`: a float32 128-band GeoTIFF export (``--format tiff``).

Opening reads headers only (``np.load(mmap_mode="r")`` checks that the file is as
long as its header says, so a truncated download is caught here).  Reads return
``(codes, scales)`` for a window, with scale NaN wherever there is no data (scale 0
or not finite, or water in the landmask).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..exceptions import CorruptTileError, MissingLandmaskError, TileNotFoundError
from .quant import quantize

__all__ = ["NpyTile", "TiffTile", "open_npy_tile", "open_tiff_tile"]


@dataclass
class _TileBase:
    path: str
    crs: Any
    transform: Any
    shape: tuple[int, int]
    year: int | None = None
    lon: float | None = None
    lat: float | None = None
    tags: dict = field(default_factory=dict)

    @property
    def res(self) -> float:
        return float(self.transform.a)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        t = self.transform
        h, w = self.shape
        return (t.c, t.f + t.e * h, t.c + t.a * w, t.f)


def _load_npy(path: str, what: str) -> np.ndarray:
    if not os.path.exists(path):
        raise TileNotFoundError(f"{what} file not found: {path}")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        size = os.path.getsize(path)
        raise CorruptTileError(
            f"{what} file {path} is truncated or corrupt ({size} bytes; {err}). "
            "Delete it and download it again."
        ) from err
    except (OSError, EOFError) as err:
        raise CorruptTileError(f"{what} file {path} cannot be read as .npy: {err}") from err


def _read_landmask_meta(path: str):
    import rasterio

    if not os.path.exists(path):
        raise MissingLandmaskError(
            f"landmask GeoTIFF not found: {path}. It carries the tile's CRS and transform; "
            "download it with fetch_tiles (or geotessera) or pass landmask=."
        )
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise CorruptTileError(f"landmask {path} has no CRS")
            return src.crs, src.transform, (src.height, src.width)
    except rasterio.errors.RasterioIOError as err:
        raise CorruptTileError(f"landmask {path} cannot be read: {err}") from err


@dataclass
class NpyTile(_TileBase):
    """A tile stored as int8 codes + float32 scales + landmask GeoTIFF."""

    scales_path: str = ""
    landmask_path: str = ""
    _codes: np.ndarray | None = None
    _scales: np.ndarray | None = None
    _land: np.ndarray | None = None

    def _landmask(self) -> np.ndarray:
        if self._land is None:
            import rasterio

            with rasterio.open(self.landmask_path) as src:
                self._land = src.read(1) != 0
        return self._land

    def valid(self, rows: slice, cols: slice) -> np.ndarray:
        s = self._scales[rows, cols]
        if s.ndim == 3:
            s = s[..., 0]
        return np.isfinite(s) & (s != 0) & self._landmask()[rows, cols]

    def read(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        codes = np.asarray(self._codes[rows, cols])
        s = np.asarray(self._scales[rows, cols], dtype=np.float32)
        if s.ndim == 3:  # per-band scales: fold into the codes' float values on demand
            f = codes.astype(np.float32) * s
            f[~self.valid(rows, cols)] = np.nan
            return quantize(f)
        s = s.copy()
        s[~self.valid(rows, cols)] = np.nan
        return codes, s


def open_npy_tile(codes_path: str, *, scales_path: str | None = None, landmask_path: str,
                  year: int | None = None, lon: float | None = None, lat: float | None = None) -> NpyTile:
    """Open (headers only) and validate one codes/scales/landmask triple."""
    if scales_path is None:
        scales_path = codes_path[: -len(".npy")] + "_scales.npy"
    codes = _load_npy(codes_path, "codes")
    scales = _load_npy(scales_path, "scales")
    if codes.dtype != np.int8 or codes.ndim != 3 or codes.shape[-1] != 128:
        raise CorruptTileError(
            f"codes file {codes_path} holds {codes.dtype} {codes.shape}; expected int8 (H, W, 128)"
        )
    if scales.shape not in (codes.shape[:2], codes.shape) or not np.issubdtype(scales.dtype, np.floating):
        raise CorruptTileError(
            f"codes {codes_path} {codes.shape} and scales {scales_path} {scales.dtype} {scales.shape} do not "
            f"match; expected float scales of shape {codes.shape[:2]} or {codes.shape}"
        )
    crs, transform, lshape = _read_landmask_meta(landmask_path)
    if lshape != codes.shape[:2]:
        raise CorruptTileError(
            f"landmask {landmask_path} is {lshape[0]} x {lshape[1]} but codes {codes_path} are "
            f"{codes.shape[0]} x {codes.shape[1]}"
        )
    return NpyTile(path=codes_path, crs=crs, transform=transform, shape=codes.shape[:2], year=year, lon=lon,
                   lat=lat, scales_path=scales_path, landmask_path=landmask_path, _codes=codes, _scales=scales)


@dataclass
class TiffTile(_TileBase):
    """A float32 128-band GeoTIFF export; NaN (or the file's nodata) marks no data."""

    nodata: float | None = None

    def _read_float(self, rows: slice, cols: slice, bands=None) -> np.ndarray:
        import rasterio
        from rasterio.windows import Window

        win = Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
        try:
            with rasterio.open(self.path) as src:
                arr = src.read(bands, window=win, out_dtype="float32")
        except rasterio.errors.RasterioIOError as err:
            raise CorruptTileError(f"GeoTIFF {self.path} cannot be read: {err}") from err
        if self.nodata is not None and np.isfinite(self.nodata):
            arr[arr == self.nodata] = np.nan
        return arr

    def valid(self, rows: slice, cols: slice) -> np.ndarray:
        return np.isfinite(self._read_float(rows, cols, bands=1))

    def read(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        f = self._read_float(rows, cols)  # (128, h, w)
        return quantize(np.moveaxis(f, 0, -1))


def open_tiff_tile(path: str, *, year: int | None = None) -> TiffTile:
    """Open (metadata only) and validate one GeoTIFF export."""
    import rasterio

    if not os.path.exists(path):
        raise TileNotFoundError(f"GeoTIFF export not found: {path}")
    try:
        with rasterio.open(path) as src:
            if src.count != 128:
                raise CorruptTileError(f"GeoTIFF {path} has {src.count} bands; a TESSERA export has 128")
            if src.crs is None:
                raise CorruptTileError(f"GeoTIFF {path} has no CRS")
            tags = src.tags()
            tile = TiffTile(path=path, crs=src.crs, transform=src.transform, shape=(src.height, src.width),
                            year=year, tags=tags, nodata=src.nodata)
    except rasterio.errors.RasterioIOError as err:
        raise CorruptTileError(f"GeoTIFF {path} cannot be read: {err}") from err
    if tile.year is None and "TESSERA_YEAR" in tags:
        tile.year = int(tags["TESSERA_YEAR"])
    for k, attr in (("TESSERA_TILE_LON", "lon"), ("TESSERA_TILE_LAT", "lat")):
        if k in tags:
            setattr(tile, attr, float(tags[k]))
    return tile
