"""``open_embeddings``: precomputed TESSERA embeddings as one lazy DataArray."""

from __future__ import annotations

import itertools
import json
import math
import os
import weakref
from typing import Any, Iterator, Sequence

import numpy as np
import xarray as xr

from .. import _schema
from ..exceptions import (
    CorruptTileError,
    NoTilesInAreaError,
    TileNotFoundError,
    VersionMismatchError,
    YearNotAvailableError,
)
from . import grid
from .mosaic import RESAMPLING, Mosaic
from .quant import quantize
from .tiles import open_npy_tile, open_tiff_tile

__all__ = ["open_embeddings", "iter_blocks", "DEFAULT_CHUNK"]

#: Default spatial chunk (pixels): 128 bands x 256 x 256 float32 is 32 MiB.
DEFAULT_CHUNK = 256

_MOSAICS: "weakref.WeakValueDictionary[str, Mosaic]" = weakref.WeakValueDictionary()
_counter = itertools.count()


from xarray.backends import BackendArray


class _MosaicArray(BackendArray):
    """Array-like (band, y, x) view of a :class:`Mosaic` for xarray and dask.

    Indexing with basic slices reads and dequantises just that window.
    """

    def __init__(self, mosaic: Mosaic):
        self.mosaic = mosaic
        self.shape = (128, *mosaic.shape)
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
            out = np.empty((128, sl[0].stop - sl[0].start, sl[1].stop - sl[1].start), np.float32)
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


def _tokenize_mosaic(mosaic: Mosaic) -> str:
    token = f"tessera-{os.getpid()}-{next(_counter)}"
    _MOSAICS[token] = mosaic
    return token


def _read_metadata(root: str) -> dict:
    path = os.path.join(root, grid.METADATA_FILE)
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise CorruptTileError(f"metadata file {path} cannot be read: {err}") from err
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
        raise ValueError(
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
    raise ValueError(f"cannot tell how to open {path}: expected a folder, a .npy or a .tif/.tiff")


def _output_grid(tiles, bbox, crs, res):
    """(crs, transform, shape) of the output: bbox (or the tiles' union) on the res grid."""
    from affine import Affine
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
        crs = CRS.from_user_input(crs)
    # grid origin aligned with the first tile already in this CRS (exact mosaics)
    ref = next((t for t in tiles if t.crs == crs), None)
    ox, oy = (ref.transform.c, ref.transform.f) if ref is not None else (0.0, 0.0)
    if bbox is not None:
        x0, y0, x1, y1 = transform_bounds("EPSG:4326", crs, *bbox, densify_pts=41)
    else:
        bs = [transform_bounds(t.crs, crs, *t.bounds, densify_pts=21) if t.crs != crs else t.bounds for t in tiles]
        x0, y0 = min(b[0] for b in bs), min(b[1] for b in bs)
        x1, y1 = max(b[2] for b in bs), max(b[3] for b in bs)
    left = ox + math.floor(round((x0 - ox) / res, 6)) * res
    right = ox + math.ceil(round((x1 - ox) / res, 6)) * res
    top = oy + math.ceil(round((y1 - oy) / res, 6)) * res
    bottom = oy + math.floor(round((y0 - oy) / res, 6)) * res
    width, height = int(round((right - left) / res)), int(round((top - bottom) / res))
    return crs, Affine(res, 0.0, left, 0.0, -res, top), (height, width)


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
) -> xr.DataArray:
    """Open precomputed TESSERA embeddings as a lazy ``(band, y, x)`` DataArray.

    Parameters
    ----------
    source : a geotessera-layout folder (``global_0.1_degree_representation/{year}/...``),
        a tile's codes ``.npy`` (its ``_scales.npy`` beside it, the landmask found in the
        layout or given as ``landmask=``), a GeoTIFF export, or a list of these (all of one
        dataset version).
    bbox : ``(west, south, east, north)`` in degrees.  Needed for a folder: the tile paths
        are computed from it (the folder is never walked).  For single files it crops.
    year : the year to open; may be left out when the source holds only one.
    crs : output CRS.  Default: the tiles' UTM zone, or where the area spans zones, the
        zone of the area's centre.
    resampling : how tiles in another zone are put on the output grid: ``"nearest"``
        (default; every pixel a genuine embedding) or ``"bilinear"`` (NaN-aware blend of
        four neighbours).  Tiles in the output zone are never resampled.
    chunks : ``"auto"`` (dask, 256 x 256 pixel chunks with all 128 bands), an int (chunk
        side in pixels), a dict for ``DataArray.chunk``, or ``None`` for xarray's lazy
        indexing without dask (each ``.isel``/``.values`` reads just what it needs).
    missing : ``"raise"`` (default) when a tile the bbox needs is absent, or ``"nan"`` to
        leave its pixels empty.
    dataset_version : override the version recorded in ``tessera_metadata.json`` or the
        GeoTIFF tags (``"v1"`` is assumed when neither says).

    Returns
    -------
    DataArray named ``embedding``, float32, dims ``(band, y, x)``, NaN where there is no
    data (scale 0 or not finite, water in the landmask).  int8 codes stay on disk until a
    chunk is computed; :func:`iter_blocks` reads them without dequantising.
    """
    if missing not in ("raise", "nan"):
        raise ValueError(f"missing must be 'raise' or 'nan', got {missing!r}")
    if resampling not in RESAMPLING:
        raise ValueError(f"resampling must be one of {RESAMPLING}, got {resampling!r}")
    if bbox is not None:
        bbox = grid.normalize_bbox(bbox)
    sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not sources:
        raise ValueError("open_embeddings needs at least one source")
    tiles, metas, years = [], [], set()
    for src in sources:
        path = os.fspath(src)
        if os.path.isdir(path):
            t, y, m = _tiles_from_folder(path, bbox, year, missing)
        elif os.path.exists(path):
            t, y, m = _tiles_from_path(path, year, landmask)
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
    versions = {}
    for path, m in metas:
        versions.setdefault(dataset_version or m.get("dataset_version") or "v1", []).append(path)
    if len(versions) > 1:
        listing = "; ".join(f"{v}: {', '.join(ps)}" for v, ps in versions.items())
        raise VersionMismatchError(
            f"the sources hold different dataset versions ({listing}). Embeddings of different versions "
            "live in unrelated feature spaces; open one version at a time."
        )
    version = next(iter(versions))
    variant = next((m.get("dataset_variant") for _, m in metas if m.get("dataset_variant")), None)
    res = min(t.res for t in tiles)
    out_crs, transform, shape = _output_grid(tiles, bbox, crs, res)
    if shape[0] <= 0 or shape[1] <= 0:
        raise NoTilesInAreaError(f"bbox {bbox} gives an empty area")
    mosaic = Mosaic(tiles, crs=out_crs, transform=transform, shape=shape, resampling=resampling)
    if bbox is not None and not mosaic._candidates(slice(0, shape[0]), slice(0, shape[1])):
        raise NoTilesInAreaError(f"bbox {bbox} lies outside every tile of the source")
    token = _tokenize_mosaic(mosaic)
    arr = _MosaicArray(mosaic)
    if chunks is None:
        from xarray.core import indexing

        data = indexing.LazilyIndexedArray(arr)
    else:
        import dask.array as dsa

        if chunks == "auto":
            chunks = DEFAULT_CHUNK
        if isinstance(chunks, int):
            chunks = (128, chunks, chunks)
        elif isinstance(chunks, dict):
            chunks = (chunks.get("band", 128), chunks.get("y", DEFAULT_CHUNK), chunks.get("x", DEFAULT_CHUNK))
        data = dsa.from_array(arr, chunks=chunks, name=token, asarray=False, meta=np.empty((0, 0, 0), np.float32),
                              lock=False, inline_array=True)
    x = transform.c + (np.arange(shape[1]) + 0.5) * transform.a
    y = transform.f + (np.arange(shape[0]) + 0.5) * transform.e
    src_desc = ";".join(os.path.abspath(os.fspath(s)) for s in sources)
    da = _schema.make_embedding_array(
        data, x=x, y=y, crs=out_crs, year=yr, dataset_version=version, dataset_variant=variant, source=src_desc,
        extra_attrs={"tessera_mosaic": token, "resampling": resampling, "n_tiles": len(tiles),
                     **({"bbox": [float(v) for v in bbox]} if bbox is not None else {})},
    )
    return da


def available_years(da: xr.DataArray) -> list[int]:
    """Years held by the geotessera-layout folder that ``da`` was opened from (one
    directory listing, no walk); ``[year of da]`` for other sources."""
    year = int(da.coords["year"]) if "year" in da.coords else None
    src = str(da.attrs.get("source", ""))
    years = set(_available_years(src)) if ";" not in src and os.path.isdir(src) else set()
    if year is not None:
        years.add(year)
    return sorted(years)


def reopen(da: xr.DataArray, year: int) -> xr.DataArray:
    """Open another year of the source ``da`` came from, on exactly ``da``'s grid.

    Works for arrays made by :func:`open_embeddings` from a geotessera-layout folder (the
    same bbox, CRS and resampling are used).  Raises YearNotAvailableError when the year's
    tiles are missing and SchemaError when the grids would differ.
    """
    from ..exceptions import SchemaError

    src = str(da.attrs.get("source", ""))
    if not src or ";" in src or not os.path.isdir(src):
        raise YearNotAvailableError(
            f"cannot open another year of {src or 'this array'}: only arrays opened from one "
            "geotessera-layout folder can be reopened; open the other year yourself")
    try:
        other = open_embeddings(src, bbox=da.attrs.get("bbox"), year=int(year), crs=da.rio.crs,
                                resampling=str(da.attrs.get("resampling", "nearest")))
    except TileNotFoundError as err:
        raise YearNotAvailableError(f"year {year} is not available for this area: {err}") from err
    if other.sizes != da.sizes or not (np.array_equal(other.x.values, da.x.values)
                                       and np.array_equal(other.y.values, da.y.values)):
        raise SchemaError(f"year {year} of {src} opens on another grid ({dict(other.sizes)} vs {dict(da.sizes)})")
    return other


def _mosaic_window(da: xr.DataArray):
    """(mosaic, row0, col0) if ``da`` is an unresampled window of an opened mosaic, else None."""
    m = _MOSAICS.get(str(da.attrs.get("tessera_mosaic", "")))
    if m is None or da.sizes.get("band") != 128 or da.sizes["y"] == 0 or da.sizes["x"] == 0:
        return None
    if "band" in da.coords and not np.array_equal(da.band.values, np.arange(1, 129)):
        return None
    t = m.transform
    x, y = da.x.values, da.y.values
    c0 = (x[0] - t.c) / t.a - 0.5
    r0 = (y[0] - t.f) / t.e - 0.5
    if abs(c0 - round(c0)) > 1e-6 or abs(r0 - round(r0)) > 1e-6:
        return None
    if (len(x) > 1 and not np.allclose(np.diff(x), t.a)) or (len(y) > 1 and not np.allclose(np.diff(y), t.e)):
        return None
    c0, r0 = int(round(c0)), int(round(r0))
    if r0 < 0 or c0 < 0 or r0 + len(y) > m.shape[0] or c0 + len(x) > m.shape[1]:
        return None
    return m, r0, c0


def iter_blocks(
    da: xr.DataArray, *, block: int = 512, quantized: bool = True
) -> Iterator[tuple[slice, slice, np.ndarray, np.ndarray | None]]:
    """Walk an embeddings array block by block, pixel-major.

    Yields ``(rows, cols, values, scales)`` where ``rows``/``cols`` are slices of ``da``'s
    y/x.  With ``quantized=True`` ``values`` are int8 codes ``(h, w, 128)`` and ``scales``
    float32 ``(h, w)`` (NaN = no data): read straight from the tiles when ``da`` came from
    :func:`open_embeddings` (nothing is dequantised), quantised on the fly otherwise.
    With ``quantized=False`` ``values`` are float32 ``(h, w, 128)`` and ``scales`` is None.
    """
    _schema.validate(da)
    mw = _mosaic_window(da)
    H, W = da.sizes["y"], da.sizes["x"]
    for r0 in range(0, H, block):
        rows = slice(r0, min(H, r0 + block))
        for c0 in range(0, W, block):
            cols = slice(c0, min(W, c0 + block))
            if mw is not None:
                m, rr, cc = mw
                wr = slice(rows.start + rr, rows.stop + rr)
                wc = slice(cols.start + cc, cols.stop + cc)
                if quantized:
                    q, s = m.read_quantized(wr, wc)
                    yield rows, cols, q, s
                else:
                    yield rows, cols, np.moveaxis(m.read_float(wr, wc), 0, -1), None
                continue
            f = np.asarray(da.isel(y=rows, x=cols).transpose("y", "x", "band").values, dtype=np.float32)
            if quantized:
                q, s = quantize(f)
                yield rows, cols, q, s
            else:
                yield rows, cols, f, None
