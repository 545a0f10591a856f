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

from ..exceptions import ArgumentError, SchemaError, StoreError
from .plan import ZoneSpec

__all__ = ["create_output", "write_chunk", "done_mask", "open_region", "region_to_cog", "REGION_ATTR"]

REGION_ATTR = "tessera_region"

#: what reading damaged metadata or chunks raises (zstd/blosc: RuntimeError; JSON cut
#: short or a wrong size: ValueError); an OSError (unreachable, refused) is not damage
_DECODE_ERRORS = (RuntimeError, ValueError, TypeError, EOFError)


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


#: the parts of a job that make it the same job: a rerun resumes only when all are equal
_SIG = ("verb", "op", "source", "open", "year", "years", "bbox", "chunk", "zones")

#: how a difference is named in the refusal
_LABEL = {"verb": "the verb", "source": "the source", "open": "the reading options (depth, base_url, missing)",
          "year": "the year", "years": "the years", "bbox": "the bbox", "chunk": "the chunk size",
          "zones": "the UTM zones", "classes": "the class names", "probabilities": "probabilities=",
          "classifier": "the classifier (a fingerprint of its fitted state)",
          "query": "the similarity query vectors (a fingerprint)", "n_query": "the number of query vectors",
          "negatives": "the negative query vectors (a fingerprint)", "options": "the verb's options (a fingerprint)",
          "year_b": "the second year of change", "method": "the projection method",
          "n_components": "the number of components", "projection": "the fitted projection (a fingerprint of its "
          "fitted parameters)", "state": "the operation's state (a fingerprint)"}


def _sig(job: dict) -> dict:
    return {k: _jsonable(job.get(k)) for k in _SIG}


def _short(v: Any) -> str:
    t = json.dumps(v) if not isinstance(v, str) else v
    return t if len(t) <= 60 else t[:57] + "..."


def _differences(have: dict, job: dict) -> list[str]:
    """What differs between the job recorded in a store and this one, in words."""
    a, b = _sig(have), _sig(job)
    out = []
    for k in _SIG:
        if a.get(k) == b.get(k):
            continue
        if k == "op" and isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            keys = list(dict.fromkeys([*b[k], *a[k]]))
            for sub in keys:
                if a[k].get(sub) != b[k].get(sub):
                    if sub not in a[k]:
                        out.append(f"{_LABEL.get(sub, sub)}: not recorded in the store (written by an earlier "
                                   f"version), {_short(b[k].get(sub))} now")
                    else:
                        out.append(f"{_LABEL.get(sub, sub)}: {_short(a[k].get(sub))} in the store, "
                                   f"{_short(b[k].get(sub))} now")
            continue
        if k not in have:
            out.append(f"{_LABEL.get(k, k)}: not recorded in the store (written by an earlier version)")
        else:
            out.append(f"{_LABEL.get(k, k)}: {_short(a.get(k))} in the store, {_short(b.get(k))} now")
    return out


def _warn(msg: str) -> None:
    import warnings

    from ..exceptions import TesseraExploreWarning

    warnings.warn(msg, TesseraExploreWarning, stacklevel=3)


def _existing(out: str, *, local: bool):
    """What ``out`` holds: ("absent", None), ("job", (root, job)) or ("foreign", why)."""
    import zarr

    try:
        if local:
            if not os.path.exists(out):
                return "absent", None
            if not os.path.isdir(out):
                raise ArgumentError(f"out={out} is a file, not a folder; choose another out=")
            if not os.listdir(out):
                return "absent", None  # an empty folder (a creation killed before its first write)
        try:
            root = zarr.open_group(out, mode="r", zarr_format=3, use_consolidated=False)
        except (FileNotFoundError, zarr.errors.NodeNotFoundError):
            if local:
                return "foreign", "holds files but no Zarr group (zarr.json)"
            return "absent", None
        except (*_DECODE_ERRORS, zarr.errors.BaseZarrError) as e:  # cut short, or an array: never wiped silently
            where = os.path.join(out, "zarr.json") if local else f"{out}/zarr.json"
            return "foreign", f"has a zarr.json that cannot be read as a group ({where}: {type(e).__name__}: {e})"
        job = dict(root.attrs).get(REGION_ATTR)
    except OSError as e:
        raise StoreError(f"out={out} cannot be read: {e}") from e
    if not isinstance(job, dict):
        return "foreign", "is a Zarr group without a job record"
    return "job", (root, job)


def create_output(out: str, specs: list[ZoneSpec], sample: xr.Dataset, job: dict, *,
                  overwrite: bool = False) -> tuple[bool, str]:
    """Create the output store for ``specs`` with the variables of ``sample`` (one
    chunk's result), or check that an existing one belongs to the same job.

    Returns (resumed, out): ``resumed`` is True when an existing store of the same job
    was found (its finished chunks are kept).  A zone group that a kill during creation
    left missing or half made is made again (nothing of it had been computed).  Another
    job, a folder that is not a regional output, or a ``zarr.json`` that cannot be read
    is refused with an error naming ``out=`` and what differs, unless ``overwrite=True``
    (which deletes what ``out`` holds).
    """
    import zarr

    out = os.fspath(out)
    local = "://" not in out
    kind, what = _existing(out, local=local)
    if kind == "foreign" and not overwrite:
        raise ArgumentError(f"out={out} {what}: it is not the output of a regional job; choose another out= "
                            "or pass overwrite=True to replace it")
    if kind == "job" and not overwrite:
        root, have = what
        diff = _differences(have, job)
        if diff:
            raise ArgumentError(f"out={out} holds another job: " + "; ".join(diff)
                                + ". Choose another out= or pass overwrite=True to start again")
        repaired = [spec.name for spec in specs if _repair_zone(root, out, spec, sample)]
        if repaired:
            mark_incomplete(out)
        return True, out
    prov = {k: _jsonable(v) for k, v in sample.attrs.items() if k not in ("bbox",)}
    # the root and its job record in one write: a kill leaves no root, or a root that says which job
    root = zarr.open_group(out, mode="w", zarr_format=3, attributes={**prov, REGION_ATTR: _jsonable(job)})
    _forget(out)
    for spec in specs:
        _create_zone(root, spec, sample, prov)
    return False, out


def _create_zone(root, spec: ZoneSpec, sample: xr.Dataset, prov: dict) -> None:
    """One zone's group, written so that ``done`` comes last: a zone whose ``done``
    array exists has every other array (and its coordinates) written."""
    from rasterio.crs import CRS
    from zarr.codecs import BloscCodec

    comp = (BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"),)
    crs = CRS.from_epsg(spec.epsg)
    g = root.create_group(spec.name, overwrite=True,
                          attributes={"epsg": spec.epsg, "zone": spec.zone, "transform": list(spec.transform),
                                      "chunk": spec.chunk, **prov, "year": int(spec.year)})
    x, y = spec.coords()
    for name, vals in (("x", x), ("y", y)):
        a = g.create_array(name, shape=vals.shape, dtype="float64", chunks=vals.shape, dimension_names=(name,),
                           attributes={"units": "m", "standard_name": "projection_x_coordinate" if name == "x"
                                       else "projection_y_coordinate"})
        a[:] = vals
    sr = g.create_array("spatial_ref", shape=(), dtype="int64", dimension_names=(),
                        attributes={"crs_wkt": crs.to_wkt(), "spatial_ref": crs.to_wkt(),
                                    "GeoTransform": " ".join(str(v) for v in (
                                        spec.transform[2], spec.transform[0], 0.0,
                                        spec.transform[5], 0.0, spec.transform[4]))})
    sr[...] = 0
    for vname, var in sample.data_vars.items():
        dims = var.dims
        if dims[-2:] != ("y", "x"):
            raise SchemaError(f"variable {vname} has dims {dims}; regional outputs are (..., y, x) maps")
        lead = tuple(var.shape[:-2])
        attrs = {k: _jsonable(v) for k, v in var.attrs.items() if k != "_FillValue"}
        attrs["grid_mapping"] = "spatial_ref"
        g.create_array(vname, shape=lead + spec.shape, dtype=var.dtype, chunks=lead + (spec.chunk, spec.chunk),
                       fill_value=_fill(var.dtype, var.attrs), compressors=comp, dimension_names=dims,
                       attributes=attrs)
        for d in dims[:-2]:  # a labelled leading axis (class_name, component)
            if d in var.coords and d not in g:
                vals = np.asarray(var.coords[d].values)
                dt = str if vals.dtype.kind in "UO" else vals.dtype
                ca = g.create_array(d, shape=vals.shape, dtype=dt, chunks=vals.shape, dimension_names=(d,))
                ca[:] = vals.astype(str) if dt is str else vals
    nr, nc = spec.n_chunks
    g.create_array("done", shape=(nr, nc), dtype="uint8", chunks=(1, 1), fill_value=0,
                   dimension_names=("chunk_row", "chunk_col"))


def _zone_problem(root, spec: ZoneSpec, sample: xr.Dataset) -> str | None:
    """Why a zone group of an existing store is not what the job creates (None when it is)."""
    try:
        g = root[spec.name]
    except KeyError:
        return "its group is missing"
    except _DECODE_ERRORS as e:
        return f"its group cannot be read ({type(e).__name__}: {e})"
    try:
        attrs = dict(g.attrs)
        if attrs.get("epsg") != spec.epsg or attrs.get("transform") != list(spec.transform):
            return "its grid differs from the job's"
        members = {}
        for name in ("x", "y", "spatial_ref", "done", *sample.data_vars):
            try:
                members[name] = g[name]
            except KeyError:
                return f"its array {name!r} is missing"
        if members["done"].shape != spec.n_chunks:
            return "its done array has another shape"
        x, y = spec.coords()
        if not (np.array_equal(members["x"][...], x) and np.array_equal(members["y"][...], y)):
            return "its coordinates were not written"
        for vname, var in sample.data_vars.items():
            a = members[vname]
            lead = tuple(var.shape[:-2])
            if a.shape != lead + spec.shape or tuple(a.chunks) != lead + (spec.chunk, spec.chunk) \
                    or np.dtype(a.dtype) != np.dtype(var.dtype):
                return f"its array {vname!r} has another shape, chunking or type"
            for d in var.dims[:-2]:
                if d in var.coords:
                    if d not in g or list(np.asarray(g[d][...]).astype(str)) != \
                            list(np.asarray(var.coords[d].values).astype(str)):
                        return f"its coordinate {d!r} is missing or differs"
    except _DECODE_ERRORS as e:  # metadata or coordinates cut short: made again (an OSError is raised)
        return f"it cannot be read ({type(e).__name__}: {e})"
    return None


def _repair_zone(root, out: str, spec: ZoneSpec, sample: xr.Dataset) -> bool:
    """Make a zone group again when it is missing or half made (a kill while the store
    was being created leaves this).  True when it was made again."""
    why = _zone_problem(root, spec, sample)
    if why is None:
        return False
    _warn(f"{out}: zone {spec.name} is incomplete ({why}), as a job killed while creating the store leaves it; "
          "it is made again and its chunks are computed")
    import zarr

    prov = {k: v for k, v in dict(root.attrs).items() if k not in (REGION_ATTR, "complete")}
    rw = zarr.open_group(out, mode="r+", zarr_format=3, use_consolidated=False)
    _forget(out)
    _create_zone(rw, spec, sample, prov)  # the group and everything under it are replaced
    return True


def mark_incomplete(out: str) -> None:
    """Drop ``complete`` and the consolidated metadata (both are written again when the
    job finishes): a store being repaired or resumed is not complete."""
    import zarr

    root = zarr.open_group(out, mode="r+", zarr_format=3, use_consolidated=False)
    attrs = dict(root.attrs)
    attrs.pop("complete", None)
    root.attrs.put(attrs)  # written without the consolidated metadata it was opened without


_GROUPS: dict[tuple[str, str], Any] = {}


def _forget(out: str) -> None:
    """Drop this process's open zone groups of ``out`` (the store is being made again)."""
    for key in [k for k in _GROUPS if k[0] == out]:
        del _GROUPS[key]


def _zone_group(out: str, zone: str):
    key = (out, zone)
    g = _GROUPS.get(key)
    if g is None:
        import zarr

        g = zarr.open_group(out, mode="r+", path=zone, zarr_format=3, use_consolidated=False)
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


def done_values(out: str, zone: str) -> np.ndarray:
    """The ``done`` cells of a zone as written (uint8: 0 to do, 1 done; 2 outside for
    live encoding).  A cell that cannot be read (garbage, cut short by a power cut) or
    holds another value counts as 0, with a warning naming its file: a chunk marked done
    is only skipped when its mark is intact, and computing a chunk again writes the same
    values, so recomputing is always safe.  A missing zone is a :class:`StoreError`."""
    import zarr

    try:
        arr = zarr.open_group(out, mode="r", path=zone, zarr_format=3, use_consolidated=False)["done"]
    except (KeyError, FileNotFoundError, zarr.errors.NodeNotFoundError) as e:
        raise StoreError(f"{out}: zone {zone} (its group or its done array) is missing; rerun the same job to "
                         "make it again, or pass overwrite=True") from e
    except _DECODE_ERRORS as e:
        raise StoreError(f"{out}: the done array of zone {zone} cannot be opened ({type(e).__name__}: {e})") from e
    try:
        vals = np.asarray(arr[...])
        if np.isin(vals, (0, 1, 2)).all():
            return vals.astype(np.uint8)
    except OSError as e:
        raise StoreError(f"{out}: the done array of zone {zone} cannot be read ({e})") from e
    except _DECODE_ERRORS:
        pass  # some cell is damaged: find which, cell by cell (each is its own object)
    vals = np.zeros(arr.shape, np.uint8)
    bad = []
    for i, j in np.ndindex(*arr.shape):
        try:
            v = int(arr[i, j])
        except OSError as e:
            raise StoreError(f"{out}: the done cell ({i}, {j}) of zone {zone} cannot be read ({e})") from e
        except _DECODE_ERRORS as e:
            bad.append((i, j, f"{type(e).__name__}: {e}"))
            continue
        if v in (0, 1, 2):
            vals[i, j] = v
        else:
            bad.append((i, j, f"value {v}"))
    if bad:
        sep = "/" if "://" in out else os.sep
        files = [sep.join([out.rstrip(sep), zone, "done", arr.metadata.encode_chunk_key((i, j))]) + f" ({why})"
                 for i, j, why in bad]
        _warn(f"{len(bad)} done cell(s) of zone {zone} cannot be read: {'; '.join(files[:5])}"
              f"{' ...' if len(files) > 5 else ''}; those chunks count as not done and are recomputed by run_region")
    return vals


def done_mask(out: str, zone: str) -> np.ndarray:
    """The ``done`` flags of a zone: (chunk rows, chunk cols) bool (see :func:`done_values`)."""
    return done_values(out, zone).astype(bool)


def open_region(out: str | os.PathLike, zone: str | int | None = None) -> xr.Dataset | dict[str, xr.Dataset]:
    """Read a regional job's output lazily (dask), one Dataset per UTM zone.

    ``zone``: ``"utm31"`` or ``31`` gives that zone's Dataset; None a dict of all of them
    (a region in one zone gives that Dataset directly).  Each Dataset carries the CRS
    (``spatial_ref``), the job's provenance attrs, and ``done`` (which chunks finished;
    a cell that cannot be read counts as not done, with a warning naming its file).
    A path without an output, an unreadable ``zarr.json`` or a missing zone is a
    :class:`~tessera_explore.exceptions.StoreError` naming it.
    """
    import zarr

    from ..io.layout import zone_group

    out = os.fspath(out)
    local = "://" not in out
    if local and not os.path.exists(out):
        raise StoreError(f"no regional output at {out}: the path does not exist")
    try:
        root = zarr.open_group(out, mode="r", zarr_format=3)
    except (FileNotFoundError, zarr.errors.NodeNotFoundError) as e:
        raise StoreError(f"no regional output at {out}: {'no such store' if not local else 'no zarr.json there'}"
                         ) from e
    except _DECODE_ERRORS as e:
        where = os.path.join(out, "zarr.json") if local else f"{out}/zarr.json"
        raise StoreError(f"{where} cannot be read ({type(e).__name__}: {e})") from e
    job = dict(root.attrs).get(REGION_ATTR)
    if not isinstance(job, dict) or not isinstance(job.get("zones"), list):
        raise ArgumentError(f"{out} is not the output of a regional job")
    zones = [z for z in job["zones"]]
    if zone is not None:
        name = zone if isinstance(zone, str) else zone_group(zone)
        if name not in zones:
            raise ArgumentError(f"{out} has zones {zones}, not {name}")
        zones = [name]
    dss = {}
    for z in zones:
        done = done_values(out, z)  # a missing zone is a StoreError naming it; damaged cells read as not done
        try:
            ds = xr.open_zarr(out, group=z, consolidated=False, mask_and_scale=False, zarr_format=3)
            zattrs = dict(zarr.open_group(out, mode="r", path=z, zarr_format=3, use_consolidated=False).attrs)
        except (KeyError, FileNotFoundError, zarr.errors.NodeNotFoundError, *_DECODE_ERRORS) as e:
            raise StoreError(f"{out}: zone {z} cannot be opened ({type(e).__name__}: {e}); rerun the same job "
                             "to repair it") from e
        ds = ds.set_coords([c for c in ("spatial_ref",) if c in ds])
        ds["done"] = (("chunk_row", "chunk_col"), done)
        ds.attrs.update(zattrs)
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
