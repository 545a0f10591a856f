"""The output store of a regional job: a Zarr v3 group written chunk by chunk.

Layout (``out`` is a local folder or any URL zarr-python can write, e.g. ``s3://``)::

    out/                      root attrs: "tessera_region" (the job: verb, source, bbox,
                              year, chunk, zones, provenance) and the verb's provenance
    out/utmNN/                one group per UTM zone, on that zone's native grid
    out/utmNN/x, y            pixel-centre coordinates (metres, the zone's CRS)
    out/utmNN/spatial_ref     CF grid mapping (crs_wkt, GeoTransform)
    out/utmNN/<variable>      the verb's maps, chunked exactly as the tasks
    out/utmNN/done            uint8 (chunk rows, chunk cols): 1 where a task finished

Every task writes whole chunks of its own and then sets its ``done`` cell, so a job
killed at any moment leaves a valid store: finished chunks are complete, the rest hold
the fill value (no data) and are not marked done, and a rerun computes only those.
Local writes are atomic per chunk file (zarr-python writes to a temporary file and
renames it).  xarray reads a zone with ``xr.open_zarr(out, group="utmNN")``;
:func:`open_region` does it for every zone.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import xarray as xr

from ..exceptions import ArgumentError, SchemaError
from .plan import ZoneSpec

__all__ = ["create_output", "write_chunk", "done_mask", "open_region", "region_to_cog", "REGION_ATTR"]

REGION_ATTR = "tessera_region"


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def _fill(dtype: np.dtype, attrs: dict) -> Any:
    fv = attrs.get("_FillValue")
    if fv is not None:
        return np.array(fv, dtype=dtype)[()]
    return np.nan if np.issubdtype(dtype, np.floating) else 0


def _open_root(out: str, mode: str):
    import zarr

    return zarr.open_group(out, mode=mode, zarr_format=3)


def _sig(job: dict) -> dict:
    return {k: job.get(k) for k in ("verb", "op", "source", "year", "bbox", "chunk", "zones")}


def create_output(out: str, specs: list[ZoneSpec], sample: xr.Dataset, job: dict, *,
                  overwrite: bool = False) -> tuple[bool, str]:
    """Create the output store for ``specs`` with the variables of ``sample`` (one
    chunk's result), or check that an existing one belongs to the same job.

    Returns (resumed, out): ``resumed`` is True when an existing store of the same job
    was found (its finished chunks are kept).
    """
    import zarr
    from zarr.codecs import BloscCodec

    out = os.fspath(out)
    try:
        root = zarr.open_group(out, mode="r")
        have = dict(root.attrs).get(REGION_ATTR)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError, ValueError):
        root, have = None, None
    if root is not None and not overwrite:
        if have is None:
            raise ArgumentError(f"{out} exists and is not the output of a regional job; choose another out= "
                                "or pass overwrite=True")
        if _sig(have) != _sig(job):
            diff = sorted(k for k in _sig(job) if _sig(have).get(k) != _sig(job).get(k))
            raise ArgumentError(f"{out} holds another job (differs in {', '.join(diff)}); choose another out= "
                                "or pass overwrite=True to start again")
        return True, out
    root = zarr.open_group(out, mode="w", zarr_format=3)
    prov = {k: _jsonable(v) for k, v in sample.attrs.items() if k not in ("bbox",)}
    root.attrs.update({**prov, REGION_ATTR: _jsonable(job)})
    comp = (BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"),)
    for spec in specs:
        g = root.create_group(spec.name)
        x, y = spec.coords()
        from rasterio.crs import CRS

        crs = CRS.from_epsg(spec.epsg)
        g.attrs.update({"epsg": spec.epsg, "zone": spec.zone, "transform": list(spec.transform),
                        "chunk": spec.chunk, **prov, "year": int(spec.year)})
        for name, vals in (("x", x), ("y", y)):
            a = g.create_array(name, shape=vals.shape, dtype="float64", chunks=vals.shape, dimension_names=(name,))
            a[:] = vals
            a.attrs.update({"units": "m", "standard_name": "projection_x_coordinate" if name == "x"
                            else "projection_y_coordinate"})
        sr = g.create_array("spatial_ref", shape=(), dtype="int64", dimension_names=())
        sr[...] = 0
        sr.attrs.update({"crs_wkt": crs.to_wkt(), "spatial_ref": crs.to_wkt(),
                         "GeoTransform": " ".join(str(v) for v in (spec.transform[2], spec.transform[0], 0.0,
                                                                     spec.transform[5], 0.0, spec.transform[4]))})
        for vname, var in sample.data_vars.items():
            dims = var.dims
            if dims[-2:] != ("y", "x"):
                raise SchemaError(f"variable {vname} has dims {dims}; regional outputs are (..., y, x) maps")
            lead = tuple(var.shape[:-2])
            shape = lead + spec.shape
            chunks = lead + (spec.chunk, spec.chunk)
            fill = _fill(var.dtype, var.attrs)
            arr = g.create_array(vname, shape=shape, dtype=var.dtype, chunks=chunks, fill_value=fill,
                                 compressors=comp, dimension_names=dims)
            attrs = {k: _jsonable(v) for k, v in var.attrs.items() if k != "_FillValue"}
            attrs["grid_mapping"] = "spatial_ref"
            arr.attrs.update(attrs)
            for d in dims[:-2]:  # a labelled leading axis (class_name, component)
                if d in var.coords and d not in g:
                    vals = np.asarray(var.coords[d].values)
                    dt = str if vals.dtype.kind in "UO" else vals.dtype
                    ca = g.create_array(d, shape=vals.shape, dtype=dt, chunks=vals.shape, dimension_names=(d,))
                    ca[:] = vals.astype(str) if dt is str else vals
        nr, nc = spec.n_chunks
        g.create_array("done", shape=(nr, nc), dtype="uint8", chunks=(1, 1), fill_value=0,
                       dimension_names=("chunk_row", "chunk_col"))
    return False, out


_GROUPS: dict[tuple[str, str], Any] = {}


def _zone_group(out: str, zone: str):
    key = (out, zone)
    g = _GROUPS.get(key)
    if g is None:
        import zarr

        g = zarr.open_group(out, mode="r+", path=zone, zarr_format=3)
        if len(_GROUPS) > 64:
            _GROUPS.clear()
        _GROUPS[key] = g
    return g


def write_chunk(out: str, spec: ZoneSpec, i: int, j: int, result: xr.Dataset) -> None:
    """Write one task's result into its chunk, then mark the chunk done."""
    g = _zone_group(out, spec.name)
    rows, cols = spec.chunk_window(i, j)
    for vname, var in result.data_vars.items():
        if vname not in g:
            raise SchemaError(f"the job's output has no variable {vname!r}")
        g[vname][..., rows, cols] = np.asarray(var.values)
    g["done"][i, j] = 1


def done_mask(out: str, zone: str) -> np.ndarray:
    """The ``done`` flags of a zone: (chunk rows, chunk cols) bool."""
    import zarr

    g = zarr.open_group(out, mode="r", path=zone, zarr_format=3)
    return np.asarray(g["done"][...]).astype(bool)


def open_region(out: str | os.PathLike, zone: str | int | None = None) -> xr.Dataset | dict[str, xr.Dataset]:
    """Read a regional job's output lazily (dask), one Dataset per UTM zone.

    ``zone``: ``"utm31"`` or ``31`` gives that zone's Dataset; None a dict of all of them
    (a region in one zone gives that Dataset directly).  Each Dataset carries the CRS
    (``spatial_ref``), the job's provenance attrs, and ``done`` (which chunks finished).
    """
    import zarr

    from ..io.layout import zone_group

    out = os.fspath(out)
    root = zarr.open_group(out, mode="r", zarr_format=3)
    job = dict(root.attrs).get(REGION_ATTR)
    if job is None:
        raise ArgumentError(f"{out} is not the output of a regional job")
    zones = [z for z in job["zones"]]
    if zone is not None:
        name = zone if isinstance(zone, str) else zone_group(zone)
        if name not in zones:
            raise ArgumentError(f"{out} has zones {zones}, not {name}")
        zones = [name]
    dss = {}
    for z in zones:
        ds = xr.open_zarr(out, group=z, consolidated=False, mask_and_scale=False, zarr_format=3)
        ds = ds.set_coords([c for c in ("spatial_ref",) if c in ds])
        ds.attrs.update({k: v for k, v in dict(root[z].attrs).items()})
        ds.attrs[REGION_ATTR] = job
        dss[z] = ds
    return dss[zones[0]] if len(dss) == 1 else dss


def region_to_cog(out: str | os.PathLike, path: str | os.PathLike, *, variable: str | None = None,
                  crs: Any = None, compress: str = "deflate", progress: bool = False) -> str:
    """Write one variable of a regional output as a Cloud-Optimised GeoTIFF, streaming.

    One zone: its native grid.  Several zones: each zone is written window by window to a
    tiled GeoTIFF, and the zones are merged (nearest neighbour, a zone's own pixels
    first) onto ``crs`` (default: the zone holding most pixels) with bounded memory,
    then converted to a COG.  Nothing is gathered in memory.  The file carries the
    job's provenance tags (as :func:`~tessera_explore.export_map` writes them).
    """
    import tempfile

    import rasterio
    from rasterio.merge import merge
    from rasterio.shutil import copy as rio_copy

    from .._atomic import atomic_target
    from ..classify.export import _TAG_KEYS, _hex_rgba, _tag
    from ..config import version

    dss = open_region(out)
    if isinstance(dss, xr.Dataset):
        dss = {dss.attrs.get("zone", "z"): dss}
    first = next(iter(dss.values()))
    names = [v for v in first.data_vars if v != "done"]
    if variable is None:
        if len(names) != 1:
            raise ArgumentError(f"the output holds {names}; choose one with variable=")
        variable = names[0]
    if variable not in names:
        raise ArgumentError(f"no variable {variable!r}; the output holds {names}")
    var0 = first[variable]
    tags = {}
    for k, v in first.attrs.items():
        if k in _TAG_KEYS and v not in (None, ""):
            tags[_TAG_KEYS[k]] = _tag(v)
    if var0.attrs.get("classes") is not None:
        tags["TESSERA_CLASSES"] = _tag(var0.attrs["classes"])
    tags["TESSERA_VARIABLE"] = variable
    tags["TESSERA_EXPLORE_VERSION"] = version()
    tags["TESSERA_REGION"] = json.dumps({k: first.attrs.get(REGION_ATTR, {}).get(k) if isinstance(
        first.attrs.get(REGION_ATTR), dict) else None for k in ("verb", "bbox", "year")})
    colors = var0.attrs.get("colors")
    path = os.path.abspath(os.fspath(path))
    with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as tmpd:
        parts = []
        for z, ds in dss.items():
            parts.append(_zone_tiff(ds, variable, os.path.join(tmpd, f"{z}.tif")))
        src_path = parts[0]
        if len(parts) > 1:
            src_path = os.path.join(tmpd, "merged.tif")
            with _opened(parts) as srcs:
                if crs is not None:
                    from rasterio.crs import CRS

                    target = CRS.from_user_input(crs)
                else:
                    target = max(srcs, key=lambda s: s.width * s.height).crs
                from rasterio.vrt import WarpedVRT

                vrts = [WarpedVRT(s, crs=target, resampling=rasterio.enums.Resampling.nearest) if s.crs != target
                        else s for s in srcs]
                try:
                    merge(vrts, method="first", dst_path=src_path, mem_limit=256,
                          dst_kwds={"tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate"})
                finally:
                    for v in vrts:
                        if isinstance(v, WarpedVRT):
                            v.close()
        with rasterio.open(src_path, "r+") as dst:  # tags and colours travel with the COG copy
            dst.update_tags(**tags)
            if dst.count == 1:
                dst.set_band_description(1, variable)
            if colors and all(colors) and dst.dtypes[0] == "uint8" and dst.count == 1:
                dst.write_colormap(1, {i: _hex_rgba(c) for i, c in enumerate(colors)})
        with atomic_target(path) as tmp:
            rio_copy(src_path, tmp, driver="COG", compress=compress, blocksize=256,
                     overview_resampling="nearest")
    return path


class _opened:
    def __init__(self, paths):
        self.paths = paths

    def __enter__(self):
        import rasterio

        self.srcs = [rasterio.open(p) for p in self.paths]
        return self.srcs

    def __exit__(self, *exc):
        for s in self.srcs:
            s.close()


def _zone_tiff(ds: xr.Dataset, variable: str, path: str) -> str:
    """One zone's variable as a tiled GeoTIFF, written chunk row by chunk row."""
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS

    var = ds[variable]
    data3 = var if var.ndim == 3 else var.expand_dims("band_", axis=0)
    nb, h, w = data3.shape
    a, _, c, _, e, f = ds.attrs["transform"]
    dtype = np.dtype(var.dtype)
    nodata = np.nan if np.issubdtype(dtype, np.floating) else (255 if dtype == np.uint8 else None)
    step = int(ds.attrs.get("chunk", 1024))
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=nb, dtype=dtype,
                       crs=CRS.from_epsg(int(ds.attrs["epsg"])), transform=Affine(a, 0.0, c, 0.0, e, f),
                       nodata=nodata, tiled=True, blockxsize=256, blockysize=256, compress="deflate",
                       BIGTIFF="IF_SAFER") as dst:
        for r in range(0, h, step):
            block = np.asarray(data3[:, r:r + step, :].values)
            dst.write(block, window=rasterio.windows.Window(0, r, w, block.shape[1]))
    return path
