"""``open_embeddings``: precomputed TESSERA embeddings as one lazy DataArray.

Sources: the published Zarr stores (a dataset name, an ``http(s)://`` URL, a local
store folder, or the Icechunk copy), geotessera-layout NPY tile folders, single tiles
and GeoTIFF exports.  Every source becomes tile-like windows placed on one output grid
by :class:`~tessera_explore.io.mosaic.Mosaic`; the int8 codes stay in the source until
a chunk is computed (see :mod:`tessera_explore.io.codes`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr
from xarray.backends import BackendArray

from .. import _schema
from ..exceptions import (
    ArgumentError,
    CorruptTileError,
    NoTilesInAreaError,
    SchemaError,
    TesseraExploreError,
    TileNotFoundError,
    VersionMismatchError,
    YearNotAvailableError,
)
from . import grid
from .codes import ATTR as _MOSAIC_ATTR
from .codes import codes_window, iter_blocks, register
from .mosaic import RESAMPLING, Mosaic
from .tiles import check_output_crs, check_tile_versions, open_npy_tile, open_tiff_tile

__all__ = ["open_embeddings", "iter_blocks", "available_years", "reopen", "data_mask", "DEFAULT_CHUNK"]

#: Default spatial chunk (pixels): 128 bands x 256 x 256 float32 is 32 MiB.  It is a
#: multiple of the stores' 32-pixel inner chunks and divides their 4096-pixel shards.
DEFAULT_CHUNK = 256


class _MosaicArray(BackendArray):
    """Array-like (band, y, x) view of a :class:`Mosaic` for xarray and dask.

    Indexing with basic slices reads and dequantises just that window.
    """

    def __init__(self, mosaic: Mosaic):
        self.mosaic = mosaic
        self.shape = (mosaic.nbands, *mosaic.shape)
        self.dtype = np.dtype("float32")

    def __deepcopy__(self, memo):
        # a read-only view of files on disk: copying it must never load the tiles
        return self

    def __copy__(self):
        return self

    def __getitem__(self, key):
        from xarray.core import indexing

        if isinstance(key, indexing.ExplicitIndexer):
            return indexing.explicit_indexing_adapter(
                key, self.shape, indexing.IndexingSupport.BASIC, self._getitem_basic
            )
        return self._getitem_basic(key)

    def _getitem_basic(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (3 - len(key))
        bk, yk, xk = key
        squeeze, sl, steps = [], [], []
        for ax, k in enumerate((yk, xk)):
            n = self.shape[ax + 1]
            if isinstance(k, (int, np.integer)):
                k = int(k) + (n if k < 0 else 0)
                sl.append(slice(k, k + 1))
                steps.append(1)
                squeeze.append(ax + 1)
            else:
                start, stop, step = k.indices(n)
                if step < 0:
                    raise IndexError("negative steps are not supported")
                # read the unit-step window that holds the strided pixels, then stride
                last = start + max(0, (stop - start + step - 1) // step - 1) * step
                sl.append(slice(start, max(start, last + 1) if stop > start else start))
                steps.append(step)
        if sl[0].stop == sl[0].start or sl[1].stop == sl[1].start:
            out = np.empty((self.shape[0], sl[0].stop - sl[0].start, sl[1].stop - sl[1].start), np.float32)
        else:
            out = self.mosaic.read_float(sl[0], sl[1])
        if steps != [1, 1]:
            out = out[:, :: steps[0], :: steps[1]]
        out = out[bk]
        if squeeze:
            # integer band index already removed its axis
            off = 0 if not isinstance(bk, (int, np.integer)) else 1
            out = np.squeeze(out, axis=tuple(a - off for a in squeeze))
        return out


def _read_metadata(root: str) -> dict:
    meta = grid.read_metadata(root, error=CorruptTileError)
    # geotessera's own downloads record a bare number ("1.0") as dataset_version and the
    # dataset's name (our version string) as dataset_path
    if meta.get("dataset_path") and meta.get("dataset_version") not in _schema.DATASET_VERSIONS:
        meta["dataset_version"] = str(meta["dataset_path"])
    return meta


def _available_years(root: str) -> list[int]:
    rep = os.path.join(root, grid.REPRESENTATION_DIR)
    if not os.path.isdir(rep):
        return []
    return sorted(int(d) for d in os.listdir(rep) if d.isdigit())


def _tiles_from_folder(root: str, bbox, year, missing: str):
    years = _available_years(root)
    if not years:
        raise TileNotFoundError(
            f"{root} is not a geotessera-layout folder: no {grid.REPRESENTATION_DIR}/<year>/ inside"
        )
    if year is None:
        if len(years) > 1:
            raise YearNotAvailableError(f"{root} holds several years {years}; pass year=")
        year = years[0]
    year = int(year)
    if year not in years:
        raise YearNotAvailableError(f"year {year} is not in {root}; available years: {years}")
    if bbox is None:
        raise ArgumentError(
            f"bbox= is needed to open tiles from the folder {root} (tile paths are computed from the "
            "bounding box, never by walking the folder)"
        )
    centres = grid.tiles_in_bbox(bbox)
    tiles, absent = [], []
    for lon, lat in centres:
        p = grid.tile_paths(root, lon, lat, year)
        if os.path.exists(p["codes"]) or os.path.exists(p["scales"]):
            tiles.append(open_npy_tile(p["codes"], scales_path=p["scales"], landmask_path=p["landmask"],
                                       year=year, lon=lon, lat=lat))
        elif os.path.exists(p["tiff"]):
            t = open_tiff_tile(p["tiff"], year=year)
            t.lon, t.lat = lon, lat
            tiles.append(t)
        else:
            absent.append((lon, lat, p["codes"]))
    if not tiles:
        raise NoTilesInAreaError(
            f"no tile of year {year} covers bbox {tuple(bbox)} in {root}; looked for "
            + ", ".join(a[2] for a in absent[:4])
            + (" ..." if len(absent) > 4 else "")
            + ". Download them with tessera_explore.fetch_tiles(bbox, year, dest=...)."
        )
    if absent and missing == "raise":
        names = ", ".join(grid.tile_name(a[0], a[1]) for a in absent)
        raise TileNotFoundError(
            f"{len(absent)} of {len(centres)} tiles that bbox {tuple(bbox)} needs are missing for {year} in "
            f"{root}: {names}. Download them with fetch_tiles, or pass missing='nan' to leave them empty."
        )
    meta = _read_metadata(root)
    check_tile_versions(tiles, expected=meta.get("dataset_version"), source=root)
    return tiles, year, meta


def _tiles_from_path(path: str, year, landmask):
    if path.endswith(".npy"):
        codes = path[: -len("_scales.npy")] + ".npy" if path.endswith("_scales.npy") else path
        name = os.path.basename(codes)[: -len(".npy")]
        try:
            lon, lat = grid.parse_tile_name(name)
        except ValueError:
            lon = lat = None
        if year is None:
            parent = os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(codes))))
            year = int(parent) if parent.isdigit() else None
        if landmask is None:
            cands = [
                os.path.join(os.path.dirname(codes), name + ".tiff"),
                os.path.join(os.path.dirname(codes), "..", "..", "..", grid.LANDMASK_DIR, name + ".tiff"),
            ]
            landmask = next((c for c in cands if os.path.exists(c)), cands[-1])
        tile = open_npy_tile(codes, landmask_path=os.path.normpath(landmask), year=year, lon=lon, lat=lat)
        root = os.path.normpath(os.path.join(os.path.dirname(codes), "..", "..", ".."))
        return [tile], year, _read_metadata(root)
    if path.lower().endswith((".tif", ".tiff")):
        tile = open_tiff_tile(path, year=year)
        tags = tile.tags
        meta = {}
        if "TESSERA_DATASET_VERSION" in tags:
            meta["dataset_version"] = tags["TESSERA_DATASET_VERSION"]
        if "TESSERA_DATASET_VARIANT" in tags:
            meta["dataset_variant"] = tags["TESSERA_DATASET_VARIANT"]
        return [tile], tile.year if year is None else int(year), meta
    raise ArgumentError(f"cannot tell how to open {path}: expected a folder, a .npy or a .tif/.tiff")


def output_grid(tiles, bbox, crs, res):
    """``(crs, Grid)`` of the output: bbox (or the tiles' union) on the res grid."""
    from rasterio.crs import CRS
    from rasterio.warp import transform_bounds

    if crs is None:
        crss = {t.crs for t in tiles}
        if len(crss) == 1:
            crs = tiles[0].crs
        else:
            if bbox is not None:
                cx, cy = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
            else:
                lons = [t.lon for t in tiles if t.lon is not None] or [0.0]
                lats = [t.lat for t in tiles if t.lat is not None] or [0.0]
                cx, cy = float(np.mean(lons)), float(np.mean(lats))
            crs = CRS.from_epsg(grid.utm_epsg(cx, cy))
    else:
        crs = check_output_crs(crs)
    # grid origin aligned with the first tile already in this CRS (exact mosaics)
    ref = next((t for t in tiles if t.crs == crs), None)
    origin = (ref.transform.c, ref.transform.f) if ref is not None else (0.0, 0.0)
    if bbox is not None:
        bounds = transform_bounds("EPSG:4326", crs, *bbox, densify_pts=41)
    else:
        bs = [transform_bounds(t.crs, crs, *t.bounds, densify_pts=21) if t.crs != crs else t.bounds for t in tiles]
        bounds = (min(b[0] for b in bs), min(b[1] for b in bs), max(b[2] for b in bs), max(b[3] for b in bs))
    return crs, grid.Grid.covering(bounds, crs, res, origin=origin)


def open_embeddings(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    bbox: Sequence[float] | None = None,
    year: int | None = None,
    crs: Any = None,
    resampling: str = "nearest",
    chunks: int | dict | None | str = "auto",
    landmask: str | os.PathLike | None = None,
    missing: str = "raise",
    dataset_version: str | None = None,
    depth: int | None = None,
    cache: Any = "auto",
    base_url: str | None = None,
    http_options: dict | None = None,
) -> xr.DataArray:
    """Open precomputed TESSERA embeddings as a lazy ``(band, y, x)`` DataArray.

    Parameters
    ----------
    source : where the embeddings are:

        * a published dataset name: ``"v1"``, ``"v1.1"`` (= ``"v1.1-dclimate"``, the
          complete global run 2017-2025), ``"v1.1-cambridge"``, ``"v2"`` (=
          ``"v2-2B-L~beta1"``), ``"v2-2B-L~beta2"``;
        * a Zarr store in the published layout: an ``http(s)://`` URL or a local folder
          (e.g. one written by :func:`~tessera_explore.io.fetch_region.fetch_region`);
        * an Icechunk repository (``*.icechunk``, local or ``s3://``; needs ``icechunk``);
        * a geotessera-layout NPY tile folder (``global_0.1_degree_representation/{year}/...``),
          a tile's codes ``.npy`` (its ``_scales.npy`` beside it, the landmask found in
          the layout or given as ``landmask=``), a GeoTIFF export;
        * or a list of these (all of one dataset).
    bbox : ``(west, south, east, north)`` in degrees.  Needed for stores and tile folders
        (tile paths and store windows are computed from it; nothing is listed or walked).
        For single files it crops.
    year : the year to open; may be left out when the source holds only one.
    crs : output CRS (a projected CRS in metres).  Default: the UTM zone of the area's
        centre (for stores its northern EPSG 326NN, southern rows with negative
        northings, as stored; for tiles the tiles' own zone).
    resampling : how data in another zone is put on the output grid: ``"nearest"``
        (default; every pixel a genuine embedding) or ``"bilinear"``.  Data in the
        output zone is never resampled.
    chunks : ``"auto"`` (dask, 256 x 256 pixel chunks with all bands), an int (chunk
        side in pixels), a dict for ``DataArray.chunk``, or ``None`` for xarray's lazy
        indexing without dask.  For stores, chunk edges follow the store's chunk grid:
        sides are multiples of its 32-pixel inner chunks that divide its 4096-pixel
        shards (an int is rounded down to one), so a dask chunk never straddles a shard.
    missing : ``"raise"`` (default) when a tile the bbox needs is absent, or ``"nan"``.
    dataset_version : the version of sources that do not record one (``"v1"`` is assumed
        when nothing says).  A source that records another version is refused.
    depth : for stores with nested prefixes (v2): ``4`` or ``16`` reads the first 4 or 16
        dimensions of every embedding (a fraction of the bytes); ``None`` all of them.
    cache : for stores over HTTP: ``"auto"`` (the ``zarr`` folder of
        :func:`tessera_explore.config.cache_dir`), a folder, or ``None`` for no cache.
    base_url : replaces the published stores' base URL for dataset names (mirrors, tests).
    http_options : keyword arguments of :class:`~tessera_explore.io.http.RemoteStore`
        (``retries``, ``timeout``, ``concurrency``, ``backoff``).

    Returns
    -------
    DataArray named ``embedding``, float32, dims ``(band, y, x)``, NaN where there is no
    data (water, or not computed; :func:`data_mask` tells them apart).  int8 codes stay
    in the source until a chunk is computed; :func:`~tessera_explore.io.codes.iter_blocks`
    reads them without dequantising.
    """
    from .store import is_store_location, open_store

    if missing not in ("raise", "nan"):
        raise TesseraExploreError(f"missing must be 'raise' or 'nan', got {missing!r}")
    if resampling not in RESAMPLING:
        raise TesseraExploreError(f"resampling must be one of {RESAMPLING}, got {resampling!r}")
    if bbox is not None:
        bbox = grid.normalize_bbox(bbox)
    if depth is not None and int(depth) not in (4, 16, 128):
        raise TesseraExploreError(f"depth must be 4, 16, 128 or None, got {depth!r}")
    sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not sources:
        raise TesseraExploreError("open_embeddings needs at least one source")
    tiles, metas, years, descs, stores = [], [], set(), [], []
    for src in sources:
        path = os.fspath(src)
        if is_store_location(path):
            if bbox is None:
                raise TesseraExploreError(f"bbox= is needed to open the store {path} (stores cover whole UTM zones)")
            st = open_store(path, cache=cache, base_url=base_url, http_options=http_options)
            from .store import zones_in_bbox

            y = st.check_year(year, [z for z in zones_in_bbox(bbox) if z in st.zones] or None)
            t = st.windows(bbox, y, depth=None if depth in (None, st.nbands) else depth)
            m = {"dataset_version": st.version, "dataset_variant": st.variant}
            stores.append(st)
            descs.append(st.url)
        elif depth not in (None, 128):
            raise TesseraExploreError(
                f"depth={depth} needs a Zarr store with nested-depth arrays (the v2 stores); {path} is not one")
        elif os.path.isdir(path):
            t, y, m = _tiles_from_folder(path, bbox, year, missing)
            descs.append(os.path.abspath(path))
        elif os.path.exists(path):
            t, y, m = _tiles_from_path(path, year, landmask)
            descs.append(os.path.abspath(path))
        else:
            raise TileNotFoundError(f"source not found: {path}")
        tiles += t
        metas.append((path, m))
        years.add(y)
    years.discard(None)
    if len(years) > 1:
        raise YearNotAvailableError(f"the sources hold different years {sorted(years)}; open one year at a time")
    yr = years.pop() if years else (int(year) if year is not None else None)
    if yr is None:
        raise YearNotAvailableError("cannot tell the year of the source; pass year=")
    if year is not None and int(year) != yr:
        raise YearNotAvailableError(f"the source holds year {yr}, not {year}")
    version, variant = _one_dataset(metas, dataset_version)
    res = min(t.res for t in tiles)
    if crs is None and stores:
        from rasterio.crs import CRS

        # the stores keep 326NN south of the equator too (negative northings)
        crs = CRS.from_epsg(grid.utm_epsg((bbox[0] + bbox[2]) / 2, 0.0))
    out_crs, out_grid = output_grid(tiles, bbox, crs, res)
    transform, shape = out_grid.transform, out_grid.shape
    if shape[0] <= 0 or shape[1] <= 0:
        raise NoTilesInAreaError(f"bbox {bbox} gives an empty area")
    mosaic = Mosaic(tiles, crs=out_crs, transform=transform, shape=shape, resampling=resampling)
    if bbox is not None and not mosaic._candidates(slice(0, shape[0]), slice(0, shape[1])):
        raise NoTilesInAreaError(f"bbox {bbox} lies outside every tile of the source")
    token = register(mosaic)
    data = lazy_data(mosaic, chunks, token, tiles, out_crs, transform)
    centres = out_grid.coords()
    x, y = centres["x"], centres["y"]
    extra = {_MOSAIC_ATTR: token, "resampling": resampling, "n_tiles": len(tiles),
             **({"bbox": [float(v) for v in bbox]} if bbox is not None else {})}
    if stores:
        extra["store"] = ";".join(st.url for st in stores)
        extra["depth"] = int(mosaic.nbands)
    da = _schema.make_embedding_array(
        data, x=x, y=y, crs=out_crs, year=yr, dataset_version=version, dataset_variant=variant,
        source=";".join(descs), extra_attrs=extra,
    )
    return da


def _one_dataset(metas: list[tuple[str, dict]], dataset_version: str | None) -> tuple[str, str | None]:
    """The one (version, variant) of all sources, or VersionMismatchError naming them."""
    recorded = [(p, m) for p, m in metas if m.get("dataset_version")]
    if dataset_version is not None:
        for p, m in recorded:
            if not _schema.same_dataset({"dataset_version": dataset_version},
                                        {"dataset_version": m["dataset_version"],
                                         "dataset_variant": m.get("dataset_variant")}):
                raise VersionMismatchError(
                    f"dataset_version={dataset_version!r} was given, but {p} holds "
                    f"{_schema.describe_dataset(m)}; embeddings of different datasets never mix")
    if not recorded:
        version = dataset_version or "v1"
        return version, None
    first_path, first = recorded[0]
    for p, m in recorded[1:]:
        if not _schema.same_dataset(first, m):
            raise VersionMismatchError(
                f"the sources hold different datasets: {_schema.describe_dataset(first)} in {first_path} and "
                f"{_schema.describe_dataset(m)} in {p}. Embeddings of different versions, or of different "
                "variants of one version, live in unrelated feature spaces; open one dataset at a time.")
    variant = next((m.get("dataset_variant") for _, m in recorded if m.get("dataset_variant")), None)
    return str(first["dataset_version"]), variant


def chunk_side(want: int, inner: int, shard: int) -> int:
    """The largest multiple of ``inner`` that divides ``shard`` and is at most ``want``."""
    side = inner
    while side * 2 <= max(want, inner) and shard % (side * 2) == 0:
        side *= 2
    return side


def _aligned_chunks(n: int, offset: int, side: int) -> tuple[int, ...]:
    """Chunk sizes along an axis of ``n`` pixels whose first pixel is pixel ``offset``
    of the chunk grid: edges fall on multiples of ``side``."""
    out, pos = [], 0
    first = side - (offset % side)
    while pos < n:
        step = min(first if pos == 0 else side, n - pos)
        out.append(step)
        pos += step
    return tuple(out)


def lazy_data(mosaic: Mosaic, chunks, token: str, tiles, out_crs, transform):
    arr = _MosaicArray(mosaic)
    if chunks is None:
        from xarray.core import indexing

        return indexing.LazilyIndexedArray(arr)
    import dask.array as dsa

    nb = mosaic.nbands
    if isinstance(chunks, dict):
        band = chunks.get("band", nb)
        want = (chunks.get("y", DEFAULT_CHUNK), chunks.get("x", DEFAULT_CHUNK))
    elif chunks == "auto":
        band, want = nb, (DEFAULT_CHUNK, DEFAULT_CHUNK)
    elif isinstance(chunks, (int, np.integer)) and int(chunks) > 0:
        band, want = nb, (int(chunks), int(chunks))
    else:
        raise TesseraExploreError(f"chunks must be 'auto', a positive int, a dict or None, got {chunks!r}")
    ref = next((t for t in tiles if t.inner_chunk and t.crs == out_crs), None)
    if ref is not None:
        # follow the store's chunk grid: edges on inner-chunk multiples, never across a shard
        gx, gy = ref.grid_origin
        off_c = int(round((transform.c - gx) / transform.a))
        off_r = int(round((gy - transform.f) / transform.a))
        sides = [chunk_side(int(w), ref.inner_chunk, ref.shard) for w in want]
        spec = ((band,) if isinstance(band, int) and band >= nb else band,
                _aligned_chunks(mosaic.shape[0], off_r, sides[0]),
                _aligned_chunks(mosaic.shape[1], off_c, sides[1]))
        if isinstance(spec[0], int):
            spec = ((nb,),) + spec[1:]
    else:
        spec = (band, want[0], want[1])
    d = dsa.from_array(arr, chunks=spec, name=token, asarray=False, meta=np.empty((0, 0, 0), np.float32),
                       lock=False, inline_array=True)
    return _whole_read_array(d, arr)


def _whole_read_array(d, arr: _MosaicArray):
    """``d`` as a dask array that, converted to NumPy whole (``DataArray.values``,
    ``np.asarray``), reads its source in one call into one output array: every request
    of the window in flight at once, each chunk decoded straight into the result, and
    no second copy for dask to concatenate.  Anything derived from it (a slice, a sum,
    ``.compute()``) is an ordinary dask array."""
    w = _whole_read_class()(d.dask, d.name, d.chunks, meta=d._meta)
    w._whole_source, w._whole_name = arr, d.name
    return w


@functools.cache
def _whole_read_class():
    import dask.array as dsa

    class WholeReadArray(dsa.Array):
        """A dask array whose whole NumPy conversion is one read of its source."""

        def __array__(self, dtype=None, copy=None):
            if self.name != self._whole_name:  # changed in place (dask's __setitem__)
                return super().__array__(dtype)
            m = self._whole_source.mosaic
            out = m.read_float(slice(0, m.shape[0]), slice(0, m.shape[1]))
            return out if dtype is None else out.astype(dtype, copy=False)

        def copy(self):  # xarray copies the arrays it wraps (rio.write_crs, assign_coords ...)
            return _whole_read_array(self, self._whole_source)

    return WholeReadArray


def data_mask(da: xr.DataArray) -> xr.DataArray:
    """Why each pixel of ``da`` has or lacks an embedding: uint8 ``(y, x)``.

    ``0`` valid, ``1`` water (a NaN scale in a store, water in a tile's landmask),
    ``2`` not computed (a +inf scale: land without data; every pixel of a year that the
    store's ``years_complete`` leaves out, whatever its chunks hold; land without an
    embedding in a tile), ``3`` outside every source.  Reads only scales.  ``da`` must
    come from :func:`open_embeddings` (a window of it is fine); float arrays have no such
    record and get 0 where finite, 2 elsewhere.  The observations behind each pixel
    (where the store records them) come from :func:`~tessera_explore.quality`.
    """
    from .mosaic import STATUS

    cw = codes_window(da)
    if cw is not None:
        h, w = da.sizes["y"], da.sizes["x"]
        data = cw.source.read_status(slice(cw.row0, cw.row0 + h), slice(cw.col0, cw.col0 + w))
    else:
        data = np.where(np.isfinite(da.isel(band=0).values), 0, 2).astype(np.uint8)
    out = xr.DataArray(data, dims=("y", "x"), coords={"y": da.y, "x": da.x}, name="data_mask",
                       attrs={"flag_values": list(STATUS), "flag_meanings": " ".join(STATUS.values())})
    if da.rio.crs is not None:
        out = out.rio.write_crs(da.rio.crs)
    return out


def store_of(da: xr.DataArray):
    """The opened store ``da`` came from (with the options it was opened with: cache,
    time-outs), or None when it comes from no single store."""
    from .codes import source_of
    from .store import StoreTile, open_store

    url = str(da.attrs.get("store", ""))
    if not url or ";" in url:
        return None
    mosaic = source_of(da)
    for t in getattr(mosaic, "tiles", ()):
        if isinstance(t, StoreTile) and t.source.url == url:
            return t.source
    return open_store(url)


def available_years(da: xr.DataArray) -> list[int]:
    """Years the source of ``da`` holds for its area: the store's time axis, or the
    year folders of a geotessera-layout folder (one listing, no walk); ``[year of da]``
    for other sources."""
    year = int(da.coords["year"]) if "year" in da.coords else None
    st = store_of(da)
    if st is not None:
        from .store import zones_in_bbox

        bbox = da.attrs.get("bbox")
        zones = [z for z in zones_in_bbox(bbox) if z in st.zones] if bbox else st.zones
        years = {y for z in zones for p in st._parts[z] for y in p.years}
    else:
        src = str(da.attrs.get("source", ""))
        years = set(_available_years(src)) if ";" not in src and os.path.isdir(src) else set()
    if year is not None:
        years.add(year)
    return sorted(years)


def reopen(da: xr.DataArray, year: int) -> xr.DataArray:
    """Open another year of the source ``da`` came from, on exactly ``da``'s grid.

    Works for arrays made by :func:`open_embeddings` from one store or one
    geotessera-layout folder (the same bbox, CRS, depth and resampling are used).
    Raises YearNotAvailableError when the year is missing and SchemaError when the
    grids would differ.
    """
    st_url = str(da.attrs.get("store", ""))
    src = st_url or str(da.attrs.get("source", ""))
    if not src or ";" in src or not (st_url or os.path.isdir(src)):
        raise YearNotAvailableError(
            f"cannot open another year of {src or 'this array'}: only arrays opened from one store or one "
            "geotessera-layout folder can be reopened; open the other year yourself")
    kwargs = {"depth": int(da.attrs["depth"])} if st_url and int(da.attrs.get("depth", 128)) != 128 else {}
    st = store_of(da) if st_url else None
    if st is not None:
        src = st.url
        kwargs.update(st.options)
    try:
        other = open_embeddings(src, bbox=da.attrs.get("bbox"), year=int(year), crs=da.rio.crs,
                                resampling=str(da.attrs.get("resampling", "nearest")), **kwargs)
    except TileNotFoundError as err:
        raise YearNotAvailableError(f"year {year} is not available for this area: {err}") from err
    if other.sizes != da.sizes or not (np.array_equal(other.x.values, da.x.values)
                                       and np.array_equal(other.y.values, da.y.values)):
        raise SchemaError(f"year {year} of {src} opens on another grid ({dict(other.sizes)} vs {dict(da.sizes)})")
    return other
