"""The published TESSERA Zarr stores (and the Icechunk copy), read lazily.

A store holds one group per UTM zone (``utm01`` ... ``utm60``), each one grid in the
zone's northern CRS (southern rows have negative northings), with ``embeddings`` int8
``(time, band, y, x)`` and ``scales`` float32 ``(time, y, x)`` (NaN = water, +inf =
not computed) in shards of inner chunks whose sides every array's metadata gives (the
Cambridge layout 32 px in 4096 px, the dclimate layout 256 px in 2048 px); the names
are :mod:`~tessera_explore.io.layout`'s.  See ``shared/spec/zarr-store.md`` and
``docs/design/zarr-stores.md``.

:class:`ZarrSource` opens a store (local path, ``http(s)://`` URL, published dataset
name, or an Icechunk repository) reading only its consolidated metadata.
:meth:`ZarrSource.windows` cuts the parts of the zones that an area needs into
tile-like :class:`StoreTile` objects, which :class:`~tessera_explore.io.mosaic.Mosaic`
places on the output grid exactly as it places NPY tiles.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..exceptions import (
    NoTilesInAreaError,
    StoreError,
    TesseraExploreError,
    TesseraExploreWarning,
    YearNotAvailableError,
)
from . import layout

__all__ = [
    "Dataset",
    "DATASETS",
    "PUBLISHED_BASE",
    "dataset_url",
    "is_store_location",
    "open_store",
    "ZarrSource",
    "StoreTile",
    "UnfilledTile",
    "zone_statistics",
]

#: Where the published stores live: the public mirror's bucket, read over anonymous
#: HTTPS from the bucket's own endpoint (the mirror's gateway drops requests under the
#: load of a region read).
PUBLISHED_BASE = "https://s3.us-west-2.amazonaws.com/us-west-2.opendata.source.coop/tessera/tessera/zarr"
#: The same objects through the mirror's gateway.
GATEWAY_BASE = "https://data.source.coop/tessera/tessera/zarr"
#: The v1.1 dclimate Icechunk repository.
ICECHUNK_V11 = "s3://tessera-embeddings/v1.1/dclimate.icechunk"
#: The icechunk package that reads it (the Icechunk v2 format; needs Python 3.12+).
ICECHUNK_REQUIREMENT = "icechunk>=2.3"

FALSE_NORTHING = layout.FALSE_NORTHING


@dataclass(frozen=True)
class Dataset:
    """One published dataset: its store folder, version label and variant."""

    path: str
    version: str
    variant: str
    description: str = ""


#: Published datasets by name.  Variants of one version are separate runs whose
#: embeddings never mix.
DATASETS: dict[str, Dataset] = {
    "v1": Dataset("v1", "v1", "vultr", "legacy v1 model"),
    "v1.1": Dataset("v1.1-dclimate", "v1.1", "dclimate", "complete global run 2017-2025"),
    "v1.1-dclimate": Dataset("v1.1-dclimate", "v1.1", "dclimate", "complete global run 2017-2025"),
    "v1.1-cambridge": Dataset("v1.1", "v1.1", "cambridge", "Cambridge test run"),
    "v2": Dataset("v2-2B-L~beta1", "v2", "2B-L~beta1", "v2 beta (Large student)"),
    "v2-2B-L~beta1": Dataset("v2-2B-L~beta1", "v2", "2B-L~beta1", "v2 beta (Large student)"),
    "v2-2B-L~beta2": Dataset("v2-2B-L~beta2", "v2", "2B-L~beta2", "v2 beta 2 (Large student)"),
}


def dataset_url(name: str, *, base_url: str | None = None) -> str:
    """URL of a published dataset's store (``base_url`` replaces :data:`PUBLISHED_BASE`)."""
    if name not in DATASETS:
        raise StoreError(f"unknown dataset {name!r}; published datasets: {', '.join(DATASETS)}")
    return f"{(base_url or PUBLISHED_BASE).rstrip('/')}/{DATASETS[name].path}"


def is_store_location(source: Any) -> bool:
    """True for a dataset name, an http(s) URL, an Icechunk path or a local Zarr folder."""
    if not isinstance(source, (str, os.PathLike)):
        return False
    s = os.fspath(source)
    if s in DATASETS or re.match(r"^(https?|s3)://", s):
        return True
    s = s.rstrip("/")
    if s.endswith((".icechunk", ".zarr")):
        return True
    return os.path.isfile(os.path.join(s, "zarr.json"))


def _dataset_from_url(url: str) -> Dataset | None:
    tail = url.rstrip("/").rsplit("/", 1)[-1]
    for base in (PUBLISHED_BASE, GATEWAY_BASE):
        if url.rstrip("/").startswith(base + "/"):
            return next((d for d in DATASETS.values() if d.path == tail), None)
    return None


def _zone_of(lon: float) -> int:
    return int(math.floor((lon + 180.0) / 6.0)) % 60 + 1


def zones_in_bbox(bbox: Sequence[float]) -> list[int]:
    """UTM zones that a (west, south, east, north) box touches."""
    w, _, e, _ = bbox
    first, last = _zone_of(w), _zone_of(min(e, 179.999999))
    return list(range(first, last + 1))


@dataclass
class _Part:
    """One grid of a zone in the zone's northern CRS: a Zarr zone group, or one
    hemisphere group of the Icechunk copy."""

    zone: int
    group: Any
    transform: Any  # affine, northern CRS
    shape: tuple[int, int]
    where: str
    _years: list[int] | None = None  # read on first use: one small request
    band_last: bool = False
    nan_is_nodata: bool = False
    row_clip: tuple[int, int] | None = None  # rows of the group that this part keeps
    arrays: dict = field(default_factory=dict)  # depth -> array name
    _complete: tuple = ()  # (years_complete,) once read
    _coords_checked: bool = False
    _arrays: dict = field(default_factory=dict)  # name -> (array, pixel dims or None), opened once
    _quality: list | None = None  # names of the quality arrays, once listed

    @property
    def epsg(self) -> int:
        return layout.zone_epsg(self.zone)

    @property
    def years(self) -> list[int]:
        if self._years is None:
            try:
                arr = self.group[layout.TIME]
            except KeyError as err:
                raise StoreError(f"{self.where}: no time coordinate") from err
            with decoding(f"{self.where}/{layout.TIME}"):
                self._years = _icechunk_years(arr)
        return self._years

    @property
    def years_complete(self) -> set[int] | None:
        """The years the group says were completely filled (its ``years_complete``);
        None when it says nothing (every year of the time axis counts)."""
        if not self._complete:
            self._complete = (layout.years_complete(self.group, self.years),)
        return self._complete[0]

    def check_coordinates(self) -> None:
        """Once per part: the group's own ``x``/``y`` pixel-centre arrays must sit where its
        ``spatial:transform`` puts them (a bad store would shift the zone silently)."""
        if self._coords_checked or self.band_last:
            return
        members = set(self.group.array_keys())
        t = self.transform
        for name, n, first, step in (("x", self.shape[1], t.c + 0.5 * t.a, t.a),
                                     ("y", self.shape[0], t.f - 0.5 * t.a, -t.a)):
            if name not in members:
                continue
            arr = self.group[name]
            if arr.shape != (n,):
                raise StoreError(f"{self.where}/{name}: {arr.shape[0] if arr.ndim else 0} values for {n} pixels")
            with decoding(f"{self.where}/{name}"):
                got = (float(arr[0]), float(arr[n - 1]))
            want = (first, first + (n - 1) * step)
            if any(abs(g - w) > 1e-3 * abs(step) for g, w in zip(got, want)):
                raise StoreError(f"{self.where}: the {name} coordinates run {got[0]:.2f} .. {got[1]:.2f} m, but "
                                 f"spatial:transform puts the pixel centres at {want[0]:.2f} .. {want[1]:.2f} m")
        self._coords_checked = True

    def filled(self, year: int) -> bool:
        """False for a year of the time axis that was never completely filled: its pixels
        are not computed, whatever its chunks hold."""
        done = self.years_complete
        return done is None or int(year) in done

    def _array(self, name: str):
        """``(array, pixel dims or None)``, opened once (an Icechunk group reads each
        array's metadata on every access)."""
        hit = self._arrays.get(name)
        if hit is None:
            arr = self.group[name]
            dims = list(getattr(arr.metadata, "dimension_names", None) or ())
            ok = layout.TIME in dims and any(d in layout.Y_DIMS for d in dims) and any(d in layout.X_DIMS for d in dims)
            hit = self._arrays[name] = (arr, dims if ok else None)
        return hit

    def pixel_dims(self, name: str) -> list[str] | None:
        """The dimension names of a per-pixel array (one with time, y and x axes), else None."""
        return self._array(name)[1]

    def quality_arrays(self) -> list[str]:
        """Names of the per-pixel quality arrays the group holds (observation counts,
        month coverage; see :func:`~tessera_explore.io.layout.is_quality_array`)."""
        if self._quality is None:
            self._quality = sorted(n for n in self.group.array_keys()
                                   if layout.is_quality_array(n) and self.pixel_dims(n))
        return list(self._quality)

    def read_layer(self, name: str, ti: int, rows: slice, cols: slice) -> np.ndarray:
        """A window (``rows``, ``cols`` of this part) of the per-pixel array ``name`` at time
        index ``ti``: ``(*other axes, h, w)``, the other axes (``month``...) in the array's
        order, whatever the array's own axis order."""
        dims = self.pixel_dims(name)
        if dims is None:
            raise StoreError(f"{self.where}/{name} is not a per-pixel array (no time, y and x dimensions)")
        off = self.row_clip[0] if self.row_clip else 0
        key = tuple(ti if d == layout.TIME else slice(rows.start + off, rows.stop + off) if d in layout.Y_DIMS
                    else slice(cols.start, cols.stop) if d in layout.X_DIMS else slice(None) for d in dims)
        v = np.asarray(self._array(name)[0][key])
        rest = [d for d in dims if d != layout.TIME]
        yi = next(i for i, d in enumerate(rest) if d in layout.Y_DIMS)
        xi = next(i for i, d in enumerate(rest) if d in layout.X_DIMS)
        return np.moveaxis(v, (yi, xi), (-2, -1))


class ZarrSource:
    """An opened store: metadata only.

    Attributes: ``location`` (as given), ``url`` (what was opened), ``version``,
    ``variant``, ``depths`` (band count -> array name), ``years``, ``zones``.
    """

    def __init__(self, location: str | os.PathLike, *, cache: Any = "auto", base_url: str | None = None,
                 http_options: dict | None = None):
        import zarr

        self.location = os.fspath(location)
        #: the options it was opened with: arrays reopened from it (other years, statistics) keep them
        self.options = {"cache": cache, "http_options": dict(http_options) if http_options else None}
        ds = DATASETS.get(self.location)
        self.url = dataset_url(self.location, base_url=base_url) if ds else self.location.rstrip("/")
        if ds is None and re.match(r"^https?://", self.url):
            ds = _dataset_from_url(self.url)
        self.icechunk = self.url.endswith(".icechunk")
        self.store = None
        try:
            if self.icechunk:
                self.store = _icechunk_store(self.url)
                self.root = zarr.open_group(self.store, mode="r", use_consolidated=False)
            else:
                self.store = _zarr_store(self.url, cache=cache, http_options=http_options)
                self.root = zarr.open_group(self.store, mode="r", zarr_format=3, use_consolidated=True)
        except StoreError:
            raise
        except Exception as err:  # zarr raises several classes for a missing or broken root
            raise StoreError(f"cannot open the Zarr store at {self.url}: {type(err).__name__}: {err}") from err
        attrs = dict(self.root.attrs)
        self.attrs = attrs
        self.version, self.variant = _version_variant(attrs, ds, self.icechunk)
        self.nbands = int(attrs.get(layout.GEOEMB_DIMENSIONS, 128))
        self.depths = {int(d["dimensions"]): str(d["array"]) for d in attrs.get(layout.GEOEMB_DEPTHS, [])}
        self.depths.setdefault(self.nbands, layout.EMBEDDINGS)
        self._parts: dict[int, list[_Part]] = {}
        self._lock = threading.Lock()
        self._build_zones()
        from .fetch_region import held_extent

        #: what a fetch_region copy holds (its manifest); None for any other store
        self.held = None if self.icechunk else held_extent(self.url)

    def __repr__(self) -> str:
        return (f"ZarrSource({self.url!r}, version={self.version!r}, variant={self.variant!r}, "
                f"zones={self.zones}, years={self.years})")

    # -- zones ---------------------------------------------------------------------------
    def _build_zones(self) -> None:
        names = sorted(self.root.group_keys())
        if self.icechunk:
            for name in names:
                zh = layout.parse_hemisphere_group(name)
                if zh:
                    self._add_hemisphere(zh[0], zh[1], self.root[name])
        else:
            for name in names:
                zone = layout.parse_zone_group(name)
                if zone:
                    try:
                        self._add_zone(zone, self.root[name])
                    except ValueError as err:  # zarr refuses member names such as '..' (no traversal)
                        raise StoreError(f"{self.url}/{name}: the group lists a member zarr refuses to open "
                                         f"({err})") from err
        if not self._parts:
            raise StoreError(f"{self.url} holds no UTM zone groups (utm01..utm60): not a TESSERA store")
        # the depths the zones really hold (a local copy may hold a prefix only)
        held = {n for ps in self._parts.values() for p in ps for n in p.arrays}
        self.depths = {n: a for n, a in self.depths.items() if n in held}

    @property
    def years(self) -> list[int]:
        """Every year of every zone (reads each zone's small time array once)."""
        return sorted({y for ps in self._parts.values() for p in ps for y in p.years})

    @staticmethod
    def _grid(group, where: str):
        from affine import Affine

        try:
            t = [float(v) for v in group.attrs[layout.SPATIAL_TRANSFORM]]
            shape = tuple(int(v) for v in group.attrs[layout.SPATIAL_SHAPE])
        except (KeyError, TypeError, ValueError) as err:
            raise StoreError(f"{where}: the group's spatial:transform / spatial:shape are missing or broken "
                             f"({err})") from err
        if t[1] or t[3] or t[0] <= 0 or t[4] != -t[0]:
            raise StoreError(f"{where}: expected a north-up square-pixel grid, got spatial:transform {t}")
        return Affine(*t), shape

    def _check_pixel(self, tr, where: str) -> None:
        """The pixel size a zone's transform gives must be the store's declared one
        (``geoemb:gsd``, TESSERA's 10 m when it says none) and at least a metre: a wrong
        transform would otherwise open a lazy array of any size."""
        gsd = float(self.attrs.get(layout.GEOEMB_GSD, 10.0))
        if tr.a < 1.0:
            raise StoreError(f"{where}: spatial:transform gives {tr.a:g} m pixels (TESSERA pixels are 10 m); "
                             "refusing a grid that fine")
        if not math.isclose(tr.a, gsd, rel_tol=1e-6):
            raise StoreError(f"{where}: spatial:transform gives {tr.a:g} m pixels, but the store declares "
                             f"{layout.GEOEMB_GSD} = {gsd:g} m")

    def _add_zone(self, zone: int, group) -> None:
        where = f"{self.url}/{layout.zone_group(zone)}"
        tr, shape = self._grid(group, where)
        self._check_pixel(tr, where)
        epsg = layout.zone_epsg(zone)
        code = str(group.attrs.get(layout.PROJ_CODE, f"EPSG:{epsg}"))
        if code != f"EPSG:{epsg}":
            raise StoreError(f"{where}: proj:code is {code}, expected EPSG:{epsg} (the zone's northern CRS)")
        members = set(group.array_keys())
        arrays = {n: a for n, a in self.depths.items() if a in members}
        if not arrays or layout.SCALES not in members:
            raise StoreError(f"{where}: the embeddings or scales array is missing")
        self._parts[zone] = [_Part(zone, group, tr, shape, where, arrays=arrays)]

    def _add_hemisphere(self, zone: int, hemi: str, group) -> None:
        from affine import Affine

        where = f"{self.url}/{layout.hemisphere_group(zone, hemi)}"
        tr, shape = self._grid(group, where)
        top = tr.f - (FALSE_NORTHING if hemi == "S" else 0.0)
        centres = top - (np.arange(shape[0]) + 0.5) * tr.a
        kept = np.flatnonzero(centres > 0 if hemi == "N" else centres < 0)
        if not len(kept):
            return
        r0, r1 = int(kept[0]), int(kept[-1]) + 1
        ttop = top - r0 * tr.a
        part = _Part(zone, group, Affine(tr.a, 0.0, tr.c, 0.0, -tr.a, ttop), (r1 - r0, shape[1]), where,
                     band_last=True, nan_is_nodata=True, row_clip=(r0, r1), arrays={128: layout.EMBEDDINGS})
        self._parts.setdefault(zone, []).append(part)

    @property
    def zones(self) -> list[int]:
        return sorted(self._parts)

    def incomplete_years(self) -> dict[str, list[int]]:
        """Years of each zone part's time axis that its ``years_complete`` leaves out (they
        read as not computed), by part: ``{"<url>/utm31": [2024]}``; empty when none."""
        out = {}
        for ps in self._parts.values():
            for p in ps:
                missing = [y for y in p.years if not p.filled(y)]
                if missing:
                    out[p.where] = missing
        return out

    def crs_of(self, zone: int):
        from rasterio.crs import CRS

        return CRS.from_epsg(layout.zone_epsg(zone))

    # -- reading -------------------------------------------------------------------------
    def array_name(self, depth: int | None) -> str:
        n = (self.nbands if self.nbands in self.depths else max(self.depths)) if depth is None else int(depth)
        if n not in self.depths:
            raise StoreError(
                f"{self.url} has no depth-{n} array; it holds depths {sorted(self.depths)}"
                + ("" if len(self.depths) > 1 else " (nested depths are published with the v2 stores only)"))
        return self.depths[n]

    def check_year(self, year: int | None, zones: Sequence[int] | None = None) -> int:
        """The year to read: ``year`` if the zones (default: all) hold it, or the only one."""
        parts = [p for z in (zones if zones is not None else self.zones) for p in self._parts.get(z, [])]
        years = sorted({y for p in parts for y in p.years})
        if year is None:
            if len(years) != 1:
                raise YearNotAvailableError(f"{self.url} holds the years {years}; pass year=")
            return years[0]
        if int(year) not in years:
            raise YearNotAvailableError(f"year {year} is not in {self.url}; available years: {years}")
        return int(year)

    def windows(self, bbox: Sequence[float], year: int, *, depth: int | None = None, margin: int = 2
                ) -> list[StoreTile]:
        """Tile-like windows of every zone part that ``bbox`` (lon/lat) touches."""
        from rasterio.warp import transform_bounds

        self.array_name(depth)
        out = []
        for zone in zones_in_bbox(bbox):
            for part in self._parts.get(zone, []):
                if year not in part.years:
                    continue
                name = part.arrays.get(int(depth) if depth is not None else
                                       (self.nbands if self.nbands in part.arrays else max(part.arrays)))
                if name is None:
                    raise StoreError(f"{self.url} zone {zone}: no depth-{depth} array")
                x0, y0, x1, y1 = transform_bounds("EPSG:4326", f"EPSG:{part.epsg}", *bbox, densify_pts=41)
                t = part.transform
                # a window is only a view (nothing is read until the mosaic maps pixels to
                # it), so a wide margin costs nothing and covers the output grid's snapping
                # and its rotation against another zone's grid
                margin = max(margin, 16 + int(max(x1 - x0, y1 - y0) / t.a) // 8)
                c0 = max(0, int(math.floor((x0 - t.c) / t.a)) - margin)
                c1 = min(part.shape[1], int(math.ceil((x1 - t.c) / t.a)) + margin)
                r0 = max(0, int(math.floor((t.f - y1) / t.a)) - margin)
                r1 = min(part.shape[0], int(math.ceil((t.f - y0) / t.a)) + margin)
                if r0 >= r1 or c0 >= c1:
                    continue
                part.check_coordinates()
                # a year the group says was never completely filled reads as not computed
                kind = StoreTile if part.filled(year) else UnfilledTile
                out.append(kind(self, part, name, part.years.index(year), year, r0, r1, c0, c1))
        if not out:
            raise NoTilesInAreaError(
                f"no zone of {self.url} covers bbox {tuple(bbox)} in {year} (zones in the store: {self.zones})")
        if self.held is not None:  # a fetch_region copy: outside the blocks it holds is outside (3)
            out = self.held.restrict(out, bbox, year)
        return out

    def sample(self, zone: int, year: int) -> np.ndarray:
        """The store's weighted raw-pixel sample of a zone and year as float32 ``(k, 128)``
        (``stretch_sample`` codes times ``stretch_sample_scales``; empty when absent)."""
        g = self._parts[int(zone)][0].group
        if "stretch_sample" not in g:
            return np.empty((0, self.nbands), np.float32)
        ti = self._parts[int(zone)][0].years.index(self.check_year(year, [int(zone)]))
        with decoding(f"{self.url}/{layout.zone_group(zone)}/stretch_sample"):
            n = int(np.asarray(g["stretch_sample_count"][ti])) if "stretch_sample_count" in g else None
            q = np.asarray(g["stretch_sample"][ti][:n])
            sc = np.asarray(g["stretch_sample_scales"][ti][:n], np.float32)
        ok = np.isfinite(sc)
        return q[ok].astype(np.float32) * sc[ok, None]

    def stats(self, zone: int, year: int) -> tuple[int, np.ndarray, np.ndarray]:
        """``(count, sum (128,), sum of products (128, 128))`` of every valid pixel of a
        zone and year, from the store's ``stretch_stats_*`` arrays (no pixel is read)."""
        parts = self._parts.get(int(zone))
        if not parts:
            raise StoreError(f"{self.url} has no zone {zone}")
        g = parts[0].group
        where = f"{self.url}/{layout.zone_group(zone)}"
        if "stretch_stats_count" not in g:
            raise StoreError(f"{where} has no per-zone statistics (stretch_stats_*)")
        ti = parts[0].years.index(self.check_year(year, [int(zone)]))
        with decoding(f"{where}/stretch_stats_*"):
            n = int(np.asarray(g["stretch_stats_count"][ti]))
            tot = np.asarray(g["stretch_stats_sum"][ti], np.float64)
            prod = np.asarray(g["stretch_stats_prod"][ti], np.float64)
        if n < 0:
            raise StoreError(f"{where}: the statistics of {year} are being rebuilt (count {n})")
        return n, tot, prod


class _ZoneWindow:
    """The geometry of a window of one zone part for one year (what :class:`StoreTile`
    and :class:`UnfilledTile` share): transform, CRS, shape, bands, chunk grid."""

    def __init__(self, source: ZarrSource, part: _Part, array: str, ti: int, year: int, r0: int, r1: int,
                 c0: int, c1: int):
        from affine import Affine

        self.source, self.part, self.array, self.ti, self.year = source, part, array, ti, year
        self.zone = part.zone
        self.r0, self.c0 = r0, c0
        self.shape = (r1 - r0, c1 - c0)
        t = part.transform
        self.transform = Affine(t.a, 0.0, t.c + c0 * t.a, 0.0, t.e, t.f + r0 * t.e)
        self.crs = source.crs_of(part.zone)
        self.path = f"{source.url}#{layout.zone_group(part.zone)}"
        self.lon = self.lat = None
        arr = part.group[array]
        self._emb = arr
        self.nbands = int(arr.shape[-1] if part.band_last else arr.shape[1])
        # the zone's chunk grid (for chunk-aligned dask chunks), from the array's own metadata:
        # rows/cols of the part's origin, the inner chunk and shard sides
        cg = layout.chunk_grid(arr)
        self.inner_chunk, self.shard = cg.inner, cg.shard
        self.grid_origin = (t.c, t.f - (part.row_clip[0] if part.row_clip else 0) * t.e)

    @property
    def res(self) -> float:
        return float(self.transform.a)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        t, (h, w) = self.transform, self.shape
        return (t.c, t.f + t.e * h, t.c + t.a * w, t.f)

    def owns(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Pixels whose longitude lies in this tile's UTM zone."""
        zones = (np.floor((np.asarray(lon) + 180.0) / 6.0).astype(np.int64) % 60) + 1
        return zones == self.zone


class StoreTile(_ZoneWindow):
    """A window of one zone part for one year, read like a tile by :class:`Mosaic`.

    ``read(rows, cols)`` gives codes ``(h, w, bands)`` and scales ``(h, w)`` with NaN
    where there is no data; ``read_bands`` the same band-first (no transpose);
    ``status`` 0 valid / 1 water / 2 not computed.
    """

    def __init__(self, *args):
        super().__init__(*args)
        self._scales = self.part.group["scales"]
        self._memo: OrderedDict = OrderedDict()
        self._memo_lock = threading.Lock()
        # coalesced, concurrent reads of whole windows where the layout allows (else zarr's own)
        from .shards import window_reader

        url = self.source.url
        self._emb_reader = window_reader(self._emb, where=f"{url}/{self._emb.path}")
        self._scales_reader = window_reader(self._scales, where=f"{url}/{self._scales.path}")
        #: pixels whose scale was finite but implausible (masked as no data), counted as read
        self.absurd_scales = 0

    # -- raw reads (window coordinates) ----------------------------------------------------
    def _rows(self, rows: slice) -> slice:
        off = self.r0 + (self.part.row_clip[0] if self.part.row_clip else 0)
        return slice(rows.start + off, rows.stop + off)

    def _cols(self, cols: slice) -> slice:
        return slice(cols.start + self.c0, cols.stop + self.c0)

    def _raw_scales(self, rows: slice, cols: slice) -> np.ndarray:
        key = (rows.start, rows.stop, cols.start, cols.stop)
        with self._memo_lock:
            hit = self._memo.get(key)
        if hit is not None:
            return hit
        if self._scales_reader is not None:
            s = self._scales_reader.read_array((slice(self.ti, self.ti + 1), self._rows(rows), self._cols(cols)))[0]
            s = s.astype(np.float32, copy=False)
        else:
            with decoding(f"{self.source.url}/{self._scales.path}"):
                s = np.asarray(self._scales[self.ti, self._rows(rows), self._cols(cols)], dtype=np.float32)
        with self._memo_lock:
            self._memo[key] = s
            while len(self._memo) > 16:
                self._memo.popitem(last=False)
        return s

    def _codes_bands(self, rows: slice, cols: slice) -> np.ndarray:
        if self.part.band_last:
            q = self._codes_raw(rows, cols)
            return np.ascontiguousarray(np.moveaxis(q, -1, 0))
        return self._codes_raw(rows, cols)

    def _selection(self, rows: slice, cols: slice) -> tuple[slice, ...]:
        """The window of the zone array (time, band, y, x), or (time, y, x, band)."""
        t, b = slice(self.ti, self.ti + 1), slice(0, self.nbands)
        r, c = self._rows(rows), self._cols(cols)
        return (t, r, c, b) if self.part.band_last else (t, b, r, c)

    def _codes_raw(self, rows: slice, cols: slice) -> np.ndarray:
        if self._emb_reader is not None:
            return self._emb_reader.read_array(self._selection(rows, cols))[0]
        with decoding(f"{self.source.url}/{self._emb.path}"):
            if self.part.band_last:
                return np.asarray(self._emb[self.ti, self._rows(rows), self._cols(cols), :])
            return np.asarray(self._emb[self.ti, :, self._rows(rows), self._cols(cols)])

    def _codes_pixels(self, rows: slice, cols: slice) -> np.ndarray:
        if self.part.band_last:
            return np.asarray(self._emb[self.ti, self._rows(rows), self._cols(cols), :])
        return np.ascontiguousarray(np.moveaxis(self._codes_bands(rows, cols), 0, -1))

    # -- the tile interface ----------------------------------------------------------------
    def valid(self, rows: slice, cols: slice) -> np.ndarray:
        return np.isfinite(self._raw_scales(rows, cols))

    def status(self, rows: slice, cols: slice) -> np.ndarray:
        s = self._raw_scales(rows, cols)
        out = np.zeros(s.shape, np.uint8)
        out[np.isinf(s) | _absurd(s)] = 2
        out[np.isnan(s)] = 2 if self.part.nan_is_nodata else 1
        return out

    def _clean(self, s: np.ndarray) -> np.ndarray:
        """Scales with NaN wherever there is no embedding: water, not computed, and
        finite scales outside (0, :data:`MAX_VALID_SCALE`) (counted, with a warning)."""
        bad = _absurd(s)
        s = s.copy()
        s[~np.isfinite(s)] = np.nan
        n = int(bad.sum())
        if n:
            s[bad] = np.nan
            self.absurd_scales += n
            warnings.warn(f"{n} pixel(s) of {self.path} ({self.year}) have implausible scales (not in 0 < scale < "
                          f"{MAX_VALID_SCALE:g}): masked as no data", TesseraExploreWarning, stacklevel=3)
        return s

    def read(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        return self._codes_pixels(rows, cols), self._clean(self._raw_scales(rows, cols))

    def read_bands(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        return self._codes_bands(rows, cols), self._clean(self._raw_scales(rows, cols))

    def read_float_into(self, out: np.ndarray, rows: slice, cols: slice) -> None:
        """Dequantised float32 ``(bands, h, w)`` of a window written into ``out`` (NaN where
        there is no data), each inner chunk as it arrives: no int8 copy of the window."""
        s = self._clean(self._raw_scales(rows, cols))
        if self._emb_reader is None or self.part.band_last:
            np.multiply(self._codes_bands(rows, cols), s[None], out=out, casting="unsafe")
            return

        def sink(dst, block):
            _, _, r, c = dst
            np.multiply(block[0], s[None, r, c], out=out[:, r, c], casting="unsafe")

        from .shards import run

        run(self._emb_reader.read(self._selection(rows, cols), sink))

    def release_pages(self) -> None:
        """Nothing is memory-mapped (the mosaic's Tile protocol)."""


#: Scales at or above this (or at or below zero) are no data: published stores hold some
#: finite ones far above it, while real scales run median 0.064, p99.99 0.137.
MAX_VALID_SCALE = 1.0


def _absurd(s: np.ndarray) -> np.ndarray:
    """Finite scales that cannot be real (``<= 0`` or ``>= MAX_VALID_SCALE``)."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(s) & ((s <= 0) | (s >= MAX_VALID_SCALE))


class UnfilledTile(_ZoneWindow):
    """A window of a zone part for a year that the group's ``years_complete`` leaves out:
    the year was never completely filled, so every pixel reads as not computed (NaN,
    status 2) whatever its chunks hold, and nothing is read.  It has the geometry and
    chunk grid of the :class:`StoreTile` it stands in for."""

    @staticmethod
    def _size(rows: slice, cols: slice) -> tuple[int, int]:
        return rows.stop - rows.start, cols.stop - cols.start

    def valid(self, rows: slice, cols: slice) -> np.ndarray:
        return np.zeros(self._size(rows, cols), bool)

    def status(self, rows: slice, cols: slice) -> np.ndarray:
        return np.full(self._size(rows, cols), 2, np.uint8)

    def read(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        h, w = self._size(rows, cols)
        return np.zeros((h, w, self.nbands), np.int8), np.full((h, w), np.nan, np.float32)

    def read_bands(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        h, w = self._size(rows, cols)
        return np.zeros((self.nbands, h, w), np.int8), np.full((h, w), np.nan, np.float32)

    def read_float_into(self, out: np.ndarray, rows: slice, cols: slice) -> None:
        out.fill(np.nan)

    def release_pages(self) -> None:
        """Nothing is held."""


# -- opening ---------------------------------------------------------------------------------
_SOURCES: OrderedDict[tuple, ZarrSource] = OrderedDict()
_SOURCES_LOCK = threading.Lock()


def open_store(location: str | os.PathLike, *, cache: Any = "auto", base_url: str | None = None,
               http_options: dict | None = None) -> ZarrSource:
    """Open a store (metadata only), reusing one already opened in this process."""
    key = (os.fspath(location), str(cache), base_url, repr(sorted((http_options or {}).items())))
    with _SOURCES_LOCK:
        src = _SOURCES.get(key)
        if src is not None:
            _SOURCES.move_to_end(key)
            return src
    src = ZarrSource(location, cache=cache, base_url=base_url, http_options=http_options)
    with _SOURCES_LOCK:
        _SOURCES[key] = src
        while len(_SOURCES) > 8:
            _SOURCES.popitem(last=False)
    return src


def _zarr_store(url: str, *, cache: Any, http_options: dict | None):
    if re.match(r"^https?://", url):
        from ..config import cache_dir
        from .http import RemoteStore

        if cache == "auto" or cache is True:
            cdir = cache_dir("zarr")
        elif cache in (None, False):
            cdir = None
        else:
            cdir = os.fspath(cache)
        return RemoteStore(url, cache_dir=cdir, **(http_options or {}))
    if re.match(r"^[a-z0-9]+://", url):
        raise StoreError(f"{url}: only local paths and http(s):// URLs are supported for Zarr stores")
    from zarr.storage import LocalStore

    if not os.path.isdir(url):
        raise StoreError(f"Zarr store not found: {url}")
    if not os.path.isfile(os.path.join(url, "zarr.json")):
        raise StoreError(f"{url} is not a Zarr v3 store (no zarr.json at its root)")
    return LocalStore(url, read_only=True)


def _icechunk_store(url: str):
    try:
        import icechunk
    except ImportError as err:
        raise StoreError(
            f"{url} is an Icechunk repository; reading it needs the icechunk package "
            f"(pip install '{ICECHUNK_REQUIREMENT}', on Python 3.12 or newer)") from err
    try:
        if url.startswith("s3://"):
            bucket, _, prefix = url[5:].partition("/")
            storage = icechunk.s3_storage(bucket=bucket, prefix=prefix, region="us-west-2", anonymous=True)
        elif "://" in url:
            raise StoreError(f"{url}: Icechunk repositories are read from s3:// or a local path")
        else:
            if not os.path.isdir(url):
                raise StoreError(f"Icechunk repository not found: {url}")
            storage = icechunk.local_filesystem_storage(url)
        repo = icechunk.Repository.open(storage, config=_icechunk_config(icechunk))
        return repo.readonly_session(branch="main").store
    except StoreError:
        raise
    except Exception as err:
        hint = ""
        if "v2 format" in str(err) or "upgrade" in str(err).lower():
            hint = (f" (icechunk {getattr(icechunk, '__version__', '?')} is installed; repositories in the Icechunk "
                    f"v2 format need pip install '{ICECHUNK_REQUIREMENT}', on Python 3.12 or newer)")
        raise StoreError(f"cannot open the Icechunk repository {url}: {type(err).__name__}: {err}{hint}") from err


def _icechunk_config(icechunk):
    """The reader's repository settings, merged over the repository's own: no manifest is
    preloaded when a session opens (about 0.2 s instead of 2.7 s on the published
    repository, whose writer's settings preload coordinate manifests); manifests are read
    as the arrays that need them are read."""
    preload = icechunk.ManifestPreloadConfig(max_total_refs=0, max_arrays_to_scan=0)
    return icechunk.RepositoryConfig(manifest=icechunk.ManifestConfig(preload=preload))


@contextlib.contextmanager
def decoding(where: str):
    """Turn what zarr-python and numcodecs raise for an object that does not decode
    (``ValueError``, ``RuntimeError``, ``TypeError``) into a StoreError naming it; the
    package's own errors pass unchanged."""
    try:
        yield
    except TesseraExploreError:
        raise
    except (ValueError, RuntimeError, TypeError) as err:
        raise StoreError(f"{where} does not decode ({type(err).__name__}: {err})") from err


def _icechunk_years(arr) -> list[int]:
    values = np.asarray(arr[:])
    if np.issubdtype(values.dtype, np.datetime64):
        return [int(y) + 1970 for y in values.astype("datetime64[Y]").astype(int)]
    units = str(arr.attrs.get("units", ""))
    if units.startswith("nanoseconds since 1970-01-01"):
        return [int(y) + 1970 for y in values.astype("datetime64[ns]").astype("datetime64[Y]").astype(int)]
    return [int(v) for v in values]


def _version_variant(attrs: dict, ds: Dataset | None, icechunk: bool) -> tuple[str, str]:
    """Version label and variant: the root attributes first, then the published name."""
    version = attrs.get(layout.DATASET_VERSION)
    variant = attrs.get(layout.DATASET_VARIANT)
    if version is None:
        version = ds.version if ds is not None else layout.version_from_model(attrs.get(layout.GEOEMB_MODEL, ""))
    if variant is None:
        if ds is not None and ds.version == version:
            variant = ds.variant
        elif icechunk and version == "v1.1":
            variant = "dclimate"  # the Icechunk copy is published for v1.1 dclimate only
        else:
            variant = "unknown"
    return str(version), str(variant)


def zone_statistics(da) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Sums over every valid pixel of the zones that ``da`` (opened from a store) touches,
    for its year: ``(count, sum (b,), sum of products (b, b), sample (k, b))``, where
    ``b`` is ``da``'s band count (a depth prefix takes the leading block).  Zones add up
    (the sums are additive), so one projection fits a whole zone, or several.  No pixel
    of the area is read.
    """
    url = str(da.attrs.get("store", ""))
    if not url or ";" in url:
        raise StoreError("per-zone statistics need an array opened from one Zarr store "
                         f"(this one comes from {da.attrs.get('source', '?')})")
    from .open import store_of

    st = store_of(da)
    bbox = da.attrs.get("bbox")
    zones = [z for z in (zones_in_bbox(bbox) if bbox else st.zones) if z in st.zones]
    year = int(da.coords["year"])
    b = int(da.sizes["band"])
    n, tot, prod, samples = 0, np.zeros(b), np.zeros((b, b)), []
    for z in zones:
        c, s, m = st.stats(z, year)
        n += c
        tot += s[:b]
        prod += m[:b, :b]
        samples.append(st.sample(z, year)[:, :b])
    if n <= 0:
        raise StoreError(f"{url}: the statistics of zones {zones} in {year} hold no pixel")
    return n, tot, prod, np.concatenate(samples) if samples else np.empty((0, b), np.float32)
