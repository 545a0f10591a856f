"""One tile on disk: lazily opened, validated, read by window.

Two kinds of tile are read:

* :class:`NpyTile`: int8 codes ``(H, W, 128)`` + float32 scales ``(H, W)`` or
  ``(H, W, 128)``, with the landmask GeoTIFF that carries the tile's CRS and
  transform (what ``geotessera download --format npy`` writes);
* :class:`TiffTile`: a float32 128-band GeoTIFF export (``--format tiff``).

Opening reads headers only and checks that each ``.npy`` file is exactly as long as
its header says (a truncated download is caught here), and that the landmask places
the tile where its name says (:func:`check_georeference`).  Reads return
``(codes, scales)`` for a window, with scale NaN wherever there is no data (scale 0
or not finite, or water in the landmask).

Windows are read with ``pread``-style file reads into fresh arrays, never through a
memory map: a file truncated or replaced while a tile is open gives a
:class:`~tessera_explore.exceptions.CorruptTileError`, not a SIGBUS that kills the
kernel.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..exceptions import (
    ArgumentError,
    CorruptTileError,
    GeoreferenceError,
    MissingLandmaskError,
    TileNotFoundError,
    VersionMismatchError,
)
from . import grid
from .quant import bands_first, dequantize_into, quantize

__all__ = [
    "NpyTile",
    "TiffTile",
    "open_npy_tile",
    "open_tiff_tile",
    "read_npy_header",
    "check_georeference",
    "check_output_crs",
    "tile_version",
    "check_tile_versions",
    "resolve_dataset_version",
]


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

    # -- the rest of the mosaic's Tile protocol (io.mosaic.Tile) ----------------------------
    #: a tile file has no chunk grid (reads start at the area's corner)
    inner_chunk = shard = grid_origin = None

    @property
    def nbands(self) -> int:
        return 128  # checked when the tile is opened

    def owns(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray | None:
        """Pixels inside this tile's 0.1 degree cell (None when the tile's cell is unknown)."""
        if self.lon is None or self.lat is None:
            return None
        ii, jj = grid.lonlat_tile_index(np.asarray(lon), np.asarray(lat))
        ci, cj = grid.center_index(self.lon, self.lat)
        return (ii == ci) & (jj == cj)

    def status(self, rows: slice, cols: slice) -> np.ndarray:
        """0 valid, 1 no data (a tile that cannot tell water from not computed)."""
        return np.where(self.valid(rows, cols), 0, 1).astype(np.uint8)

    def read_bands(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`read` with band-first codes ``(bands, h, w)``."""
        codes, scales = self.read(rows, cols)
        return bands_first(codes), scales

    def read_float_into(self, out: np.ndarray, rows: slice, cols: slice) -> None:
        """Dequantised float32 ``(bands, h, w)`` of a window written into ``out`` (NaN where
        there is no data)."""
        codes, scales = self.read(rows, cols)
        dequantize_into(out, codes, scales)

    def release_pages(self) -> None:
        """Windows are read with file reads into fresh arrays: nothing is mapped."""


#: Largest .npy header read (numpy's own default is 10,000 bytes).
_MAX_NPY_HEADER = 100_000


def read_npy_header(path: str, what: str = "file") -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """``(shape, dtype, fortran_order, data offset)`` of a ``.npy`` file, checked.

    Any malformed header (bad magic, unparsable dictionary, absurd shape), a dtype that
    holds Python objects (a pickle), or a file that is shorter or longer than the header
    says raises :class:`CorruptTileError` naming the file; nothing else escapes.
    """
    if not os.path.exists(path):
        raise TileNotFoundError(f"{what} file not found: {path}")
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=_MAX_NPY_HEADER)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=_MAX_NPY_HEADER)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            offset = f.tell()
        shape = tuple(int(n) for n in shape)
        if any(n < 0 for n in shape):
            raise ValueError(f"negative dimension in shape {shape}")
        need = offset + math.prod(shape) * dtype.itemsize
    except OSError as err:
        raise CorruptTileError(f"{what} file {path} cannot be read: {err}") from err
    except Exception as err:  # numpy's header parser raises many types on garbage: name them all here
        raise CorruptTileError(
            f"{what} file {path} is truncated or corrupt: its .npy header cannot be read "
            f"({type(err).__name__}: {err}). Delete it and download it again."
        ) from err
    if dtype.hasobject:
        raise CorruptTileError(f"{what} file {path} holds Python objects ({dtype}); such files are never loaded")
    if size < need:
        raise CorruptTileError(
            f"{what} file {path} is truncated or corrupt ({size} bytes; its header {dtype} {shape} needs {need}). "
            "Delete it and download it again."
        )
    if size > need:
        raise CorruptTileError(
            f"{what} file {path} is corrupt: {size} bytes, {size - need} more than its header {dtype} {shape} "
            "says (two downloads stitched together?). Delete it and download it again."
        )
    return shape, dtype, bool(fortran), int(offset)


class _NpyFile:
    """Array-like view of a ``.npy`` file: ``[rows, cols]`` reads that window into a new
    array with plain file reads (no memory map), after checking the file is still whole."""

    def __init__(self, path: str, what: str):
        self.path, self.what = path, what
        self.shape, self.dtype, self.fortran, self.offset = read_npy_header(path, what)
        self.ndim = len(self.shape)
        st = os.stat(path)
        self._stamp = (st.st_size, st.st_ino, st.st_mtime_ns)
        self._whole: np.ndarray | None = None

    def _check_unchanged(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError as err:
            raise CorruptTileError(f"{self.what} file {self.path} disappeared after it was opened: {err}") from err
        if (st.st_size, st.st_ino, st.st_mtime_ns) != self._stamp:
            raise CorruptTileError(
                f"{self.what} file {self.path} changed on disk after it was opened ({self._stamp[0]} -> "
                f"{st.st_size} bytes); open the embeddings again"
            )

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (2 - len(key))
        rows, cols = key[:2]
        h, w = self.shape[0], self.shape[1]
        r0, r1, rs = rows.indices(h)
        c0, c1, cs = cols.indices(w)
        if rs != 1 or cs != 1:
            raise ArgumentError(f"{self.path}: only unit-step windows can be read")
        r1, c1 = max(r0, r1), max(c0, c1)
        self._check_unchanged()
        if self.fortran:  # never written by TESSERA tools: read the whole (small) array once
            if self._whole is None:
                self._whole = self._read_whole()
            return np.array(self._whole[r0:r1, c0:c1])
        rest = self.shape[2:]
        pix = math.prod(rest) * self.dtype.itemsize
        out = np.empty((r1 - r0, c1 - c0, *rest), dtype=self.dtype)
        if out.size == 0:
            return out
        buf = memoryview(out.reshape(-1).view(np.uint8))
        with open(self.path, "rb", buffering=0) as f:
            if c0 == 0 and c1 == w:
                self._read_into(f, self.offset + r0 * w * pix, buf)
            else:
                n = (c1 - c0) * pix
                for i in range(r1 - r0):
                    self._read_into(f, self.offset + ((r0 + i) * w + c0) * pix, buf[i * n:(i + 1) * n])
        return out

    def _read_into(self, f, offset: int, buf: memoryview) -> None:
        f.seek(offset)
        got = 0
        while got < len(buf):
            n = f.readinto(buf[got:])
            if not n:
                raise CorruptTileError(
                    f"{self.what} file {self.path} ended early while it was read (truncated after it was "
                    "opened?); delete it and download it again"
                )
            got += n

    def _read_whole(self) -> np.ndarray:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            raw = f.read()
        need = math.prod(self.shape) * self.dtype.itemsize
        if len(raw) < need:
            raise CorruptTileError(f"{self.what} file {self.path} ended early while it was read")
        return np.frombuffer(raw[:need], dtype=self.dtype).reshape(self.shape, order="F")


def _load_npy(path: str, what: str) -> _NpyFile:
    return _NpyFile(path, what)


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
                raise GeoreferenceError(f"landmask {path} has no CRS")
            return src.crs, src.transform, (src.height, src.width)
    except rasterio.errors.RasterioIOError as err:
        raise CorruptTileError(f"landmask {path} cannot be read: {err}") from err


# ------------------------------------------------------------------ georeferencing
#: Slack of the placement check: the raster may miss this much of the tile's cell on a
#: side (published tiles are snapped to whole 10 m pixels).
_COVER_SLACK_PIXELS = 2
_COVER_SLACK_FRACTION = 0.03


def _cell_utm_bounds(lon: float, lat: float, crs) -> tuple[float, float, float, float]:
    from pyproj import Transformer

    w, s, e, n = grid.tile_bounds(lon, lat)
    t = np.linspace(0.0, 1.0, 21)
    lons = np.concatenate([w + (e - w) * t, np.full(21, e), e - (e - w) * t, np.full(21, w)])
    lats = np.concatenate([np.full(21, s), s + (n - s) * t, np.full(21, n), n - (n - s) * t])
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lons, lats)
    return float(np.min(x)), float(np.min(y)), float(np.max(x)), float(np.max(y))


def _metre_crs_problem(crs) -> str | None:
    """Why ``crs`` is not a projected CRS in metres (None when it is)."""
    if crs is None:
        return "it has no CRS"
    if not crs.is_projected:
        return f"{crs} is not a projected CRS"
    units = (crs.linear_units or "").lower()
    if units not in ("metre", "meter", "m", "metres", "meters"):
        return f"{crs} has units of {crs.linear_units!r}, not metres"
    return None


def check_output_crs(crs: Any):
    """A rasterio CRS from ``crs`` (anything ``CRS.from_user_input`` takes), refused with
    :class:`ArgumentError` unless it is a projected CRS in metres (embeddings are 10 m
    pixels; a CRS in degrees or feet would make pixels of 10 degrees or 10 feet)."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        out = CRS.from_user_input(crs)
    except (CRSError, ValueError, TypeError) as err:
        raise ArgumentError(f"crs={crs!r} is not a CRS: {err}") from err
    why = _metre_crs_problem(out)
    if why:
        raise ArgumentError(f"crs={crs!r} cannot be used: {why}; pass a projected CRS in metres such as a UTM zone")
    return out


def check_georeference(path: str, crs: Any, transform: Any, shape: tuple[int, int], lon: float | None,
                       lat: float | None, *, what: str = "landmask") -> None:
    """Refuse a CRS/transform that does not put a raster of ``shape`` on tile ``(lon, lat)``.

    Checks: a UTM CRS of the tile's zone (EPSG 326zz/327zz from :func:`grid.utm_epsg`),
    north-up, square pixels, a pixel size that agrees with the tile's extent and
    ``shape`` (10 m for published tiles; coarser for small synthetic tiles), and bounds
    that hold the tile's centre and cover its 0.1 degree cell.  With ``lon``/``lat``
    None only the CRS kind and the pixel shape are checked.  Raises
    :class:`GeoreferenceError` naming ``path``.
    """
    from rasterio.crs import CRS

    crs = CRS.from_user_input(crs) if crs is not None else None
    why = _metre_crs_problem(crs)
    if why:
        raise GeoreferenceError(f"{what} {path} cannot place a tile: {why}; tiles are on a UTM grid in metres")
    a, b, c, d, e, f = (float(v) for v in tuple(transform)[:6])
    if b != 0.0 or d != 0.0 or a <= 0.0 or e >= 0.0:
        raise GeoreferenceError(
            f"{what} {path} is not north-up (transform {tuple(transform)[:6]}); TESSERA tiles are north-up UTM grids")
    if abs(a + e) > 1e-6 * a:
        raise GeoreferenceError(f"{what} {path} has pixels of {a} x {-e} m; TESSERA tiles have square pixels")
    h, w = (int(v) for v in shape)
    if h <= 0 or w <= 0:
        raise GeoreferenceError(f"{what} {path} is {h} x {w} pixels")
    if lon is None or lat is None:
        return
    name = grid.tile_name(lon, lat)
    epsg = grid.utm_epsg(lon, lat)
    got = crs.to_epsg()
    if got != epsg:
        raise GeoreferenceError(
            f"{what} {path} is in {crs.to_string()}, but tile {name} lies in UTM zone {epsg % 100}"
            f"{'N' if epsg < 32700 else 'S'} (EPSG:{epsg}); it is the landmask of another tile or wrongly made. "
            "Delete it and download it again."
        )
    x0, y0, x1, y1 = _cell_utm_bounds(lon, lat, crs)
    need = max((y1 - y0) / h, (x1 - x0) / w)  # the pixel size that just covers the cell with this shape
    if not (0.9 * need <= a <= 1.1 * need + 10.0):
        raise GeoreferenceError(
            f"{what} {path} has {a:g} m pixels, but a {h} x {w} raster of tile {name} (a cell of about "
            f"{(x1 - x0) / 1000:.1f} x {(y1 - y0) / 1000:.1f} km) needs about {need:.1f} m "
            "(published tiles: 10 m). Delete it and download it again."
        )
    left, top = c, f
    right, bottom = c + a * w, f + e * h
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    slack_x = _COVER_SLACK_PIXELS * a + _COVER_SLACK_FRACTION * (x1 - x0)
    slack_y = _COVER_SLACK_PIXELS * a + _COVER_SLACK_FRACTION * (y1 - y0)
    if not (left <= cx <= right and bottom <= cy <= top) or left > x0 + slack_x or right < x1 - slack_x \
            or bottom > y0 + slack_y or top < y1 - slack_y:
        raise GeoreferenceError(
            f"{what} {path} covers x {left:.0f}..{right:.0f}, y {bottom:.0f}..{top:.0f} (EPSG:{epsg}), but tile "
            f"{name} is the cell x {x0:.0f}..{x1:.0f}, y {y0:.0f}..{y1:.0f}: it would be placed "
            f"{math.hypot((left + right) / 2 - cx, (top + bottom) / 2 - cy) / 1000:.1f} km from where it belongs. "
            "It is the landmask of another tile or wrongly made; delete it and download it again."
        )


def _lonlat_from_name(path: str) -> tuple[float | None, float | None]:
    try:
        lon, lat = grid.parse_tile_name(os.path.basename(path))
    except ValueError:
        return None, None
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        return None, None
    return lon, lat


# ------------------------------------------------------------------ dataset versions
def tile_version(tile: Any) -> str | None:
    """The dataset version a tile's own GeoTIFF tags name (None when they name none)."""
    v = (getattr(tile, "tags", None) or {}).get("TESSERA_DATASET_VERSION")
    return str(v) if v else None


def _same_version(a: str, b: str) -> bool:
    from .._schema import DATASET_VERSIONS

    if a == b:
        return True
    return a in DATASET_VERSIONS and b in DATASET_VERSIONS and DATASET_VERSIONS[a] == DATASET_VERSIONS[b]


def check_tile_versions(tiles: Any, *, expected: str | None, source: str) -> None:
    """Refuse tiles whose GeoTIFF tags name another dataset version than ``expected``
    (what the folder's ``tessera_metadata.json`` records) or than each other.

    Raises :class:`VersionMismatchError` naming the file."""
    seen: dict[str, str] = {}
    for t in tiles:
        v = tile_version(t)
        if v is None:
            continue
        if expected is not None and not _same_version(v, str(expected)):
            raise VersionMismatchError(
                f"{t.path} is dataset version {v} (its GeoTIFF tags), but {source} holds {expected}; "
                "versions must not be mixed in one folder. Move that file to a folder of its own version."
            )
        for other_path, other in seen.items():
            if not _same_version(v, other):
                raise VersionMismatchError(
                    f"{t.path} is dataset version {v} but {other_path} is {other} (their GeoTIFF tags); "
                    "open one version at a time")
        seen[t.path] = v


def resolve_dataset_version(recorded: Mapping[str, str | None], dataset_version: str | None = None,
                            *, default: str = "v1") -> str:
    """The one dataset version of several sources.

    ``recorded`` maps each source to the version it records (``None``: it says none).
    Sources that record different versions are refused; ``dataset_version`` stands in
    for sources that record none, and must agree with every source that records one (it
    never hides a mismatch).  ``default`` applies when nothing says.  Raises
    :class:`VersionMismatchError`.
    """
    said = {src: str(v) for src, v in recorded.items() if v}
    groups: dict[str, list[str]] = {}
    for src, v in said.items():
        key = next((k for k in groups if _same_version(k, v)), v)
        groups.setdefault(key, []).append(src)
    if len(groups) > 1:
        listing = "; ".join(f"{v}: {', '.join(ps)}" for v, ps in groups.items())
        raise VersionMismatchError(
            f"the sources hold different dataset versions ({listing}). Embeddings of different versions "
            "live in unrelated feature spaces; open one version at a time."
        )
    found = next(iter(groups), None)
    if dataset_version is not None:
        if found is not None and not _same_version(found, str(dataset_version)):
            raise VersionMismatchError(
                f"dataset_version={dataset_version!r} was asked for, but {', '.join(groups[found])} "
                f"record{'s' if len(groups[found]) == 1 else ''} {found}; the argument only names the version "
                "of sources that record none"
            )
        return str(dataset_version)
    return found if found is not None else default


def _madvise_dontneed(*arrays) -> None:
    """MADV_DONTNEED on the maps behind memory-mapped NumPy arrays (np.load mmap_mode)."""
    import mmap

    if not hasattr(mmap, "MADV_DONTNEED"):
        return
    for arr in arrays:
        mm = getattr(arr, "_mmap", None)
        if mm is not None and hasattr(mm, "madvise"):
            try:
                mm.madvise(mmap.MADV_DONTNEED)
            except (OSError, ValueError):  # a closed map or a platform without it: only memory is at stake
                return


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

    def status(self, rows: slice, cols: slice) -> np.ndarray:
        """0 valid, 1 water (the landmask's), 2 land without an embedding."""
        out = np.where(self.valid(rows, cols), 0, 2).astype(np.uint8)
        out[~self._landmask()[rows, cols]] = 1
        return out

    def release_pages(self) -> None:
        """Drop already-read pages of memory-mapped code and scale arrays (a tile built on
        ``np.load(..., mmap_mode="r")`` arrays) from the resident set."""
        _madvise_dontneed(self._codes, self._scales)

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
    if lon is None or lat is None:
        lon, lat = _lonlat_from_name(codes_path)
    check_georeference(landmask_path, crs, transform, lshape, lon, lat)
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
            why = _metre_crs_problem(src.crs)
            if why:
                raise GeoreferenceError(f"GeoTIFF {path} cannot place a tile: {why}")
            check_georeference(path, src.crs, src.transform, (src.height, src.width), None, None, what="GeoTIFF")
            tags = src.tags()
            tile = TiffTile(path=path, crs=src.crs, transform=src.transform, shape=(src.height, src.width),
                            year=year, tags=tags, nodata=src.nodata)
    except rasterio.errors.RasterioIOError as err:
        raise CorruptTileError(f"GeoTIFF {path} cannot be read: {err}") from err
    try:
        if tile.year is None and "TESSERA_YEAR" in tags:
            tile.year = int(tags["TESSERA_YEAR"])
        for k, attr in (("TESSERA_TILE_LON", "lon"), ("TESSERA_TILE_LAT", "lat")):
            if k in tags:
                setattr(tile, attr, float(tags[k]))
    except ValueError as err:
        raise CorruptTileError(f"GeoTIFF {path} has a malformed TESSERA tag: {err}") from err
    return tile
