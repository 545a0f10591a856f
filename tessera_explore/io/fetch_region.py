"""``fetch_region``: copy the chunks an area needs from a store into a local store.

The copy has the published layout (same zone groups, array shapes, shards, inner
chunks, codecs, coordinates, statistics, ``years_complete`` and, where the source has
them, the per-pixel quality arrays; names from :mod:`~tessera_explore.io.layout`),
holds only the chunks the area touches, and opens offline with
:func:`~tessera_explore.open_embeddings` like the original.

* **Resumable**: a manifest (``.tessera_fetch.json`` in the store folder) records each
  block once it is written and verified; a later call skips those blocks.
* **Verified**: every block is read back from the local copy and compared with what
  was fetched before it is recorded as done.
* **One dataset per folder**: the manifest names the source URL, version and variant
  before the first block is written; fetching another dataset into the folder is
  refused.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..exceptions import StoreError, TesseraExploreError, VersionMismatchError
from . import grid, layout
from .store import ZarrSource, open_store, zones_in_bbox

__all__ = ["fetch_region", "MANIFEST"]

MANIFEST = ".tessera_fetch.json"
#: Pixels per side of one copied block (at most 128 MiB of int8 codes at 128 bands).
BLOCK = 1024
_COORDS = (layout.TIME, layout.X, layout.Y, layout.BAND, layout.MONTH)


def _write_json_atomic(path: str, obj: Any) -> None:
    from .._atomic import write_json

    write_json(path, obj)


def _read_manifest(dest: str) -> dict | None:
    path = os.path.join(dest, MANIFEST)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            m = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise StoreError(f"the fetch manifest {path} cannot be read ({err}); delete the folder and fetch again") from err
    if not isinstance(m, dict) or "source" not in m:
        raise StoreError(f"{path} is not a fetch manifest; delete the folder and fetch again")
    return m


def _like(dst_group, name: str, src_arr, **over):
    """Create (or open) ``name`` in ``dst_group`` with ``src_arr``'s layout."""
    if name in set(dst_group.array_keys()):
        return dst_group[name]
    meta = src_arr.metadata
    kwargs = dict(shape=src_arr.shape, dtype=src_arr.dtype, chunks=src_arr.chunks,
                  compressors=src_arr.compressors or None, fill_value=meta.fill_value,
                  dimension_names=meta.dimension_names, attributes=dict(src_arr.attrs))
    if getattr(src_arr, "shards", None):
        kwargs["shards"] = src_arr.shards
    kwargs.update(over)
    return dst_group.create_array(name, **kwargs)


def _window(src: ZarrSource, zone: int, bbox, inner: int) -> tuple[int, int, int, int] | None:
    """(r0, r1, c0, c1) of the zone grid that covers ``bbox``, widened to whole inner chunks."""
    from rasterio.warp import transform_bounds

    part = src._parts[zone][0]
    t = part.transform
    x0, y0, x1, y1 = transform_bounds("EPSG:4326", f"EPSG:{part.epsg}", *bbox, densify_pts=41)
    c0 = max(0, math.floor((x0 - t.c) / t.a) - 2) // inner * inner
    r0 = max(0, math.floor((t.f - y1) / t.a) - 2) // inner * inner
    c1 = min(part.shape[1], -(-(math.ceil((x1 - t.c) / t.a) + 2) // inner) * inner)
    r1 = min(part.shape[0], -(-(math.ceil((t.f - y0) / t.a) + 2) // inner) * inner)
    if r0 >= r1 or c0 >= c1:
        return None
    return r0, r1, c0, c1


def _dims(part, name: str) -> tuple[str, ...]:
    """Dimension names of a per-pixel array (the published ones where it records none)."""
    dims = part.pixel_dims(name)
    if dims:
        return tuple(dims)
    return layout.SCALE_DIMS if name == layout.SCALES else layout.EMBEDDING_DIMS


def _blocks(win, shard: int, block: int):
    """Blocks of a window, never across a shard, at most ``block`` pixels a side."""
    r0, r1, c0, c1 = win
    step = min(block, shard)
    for ra in range(r0, r1, step):
        rb = min(r1, (ra // shard + 1) * shard, ra + step)
        for ca in range(c0, c1, step):
            cb = min(c1, (ca // shard + 1) * shard, ca + step)
            yield ra, rb, ca, cb


def _consolidate(path: str) -> None:
    """Consolidated metadata at the root, as the published stores have (zarr warns that
    consolidation is not part of the v3 spec yet: the published stores use it anyway)."""
    import warnings

    import zarr

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        warnings.filterwarnings("ignore", message=r"Object at \.tessera_fetch\.json is not recognized")
        zarr.consolidate_metadata(path)


def fetch_region(
    bbox: Sequence[float],
    years: int | Iterable[int],
    *,
    dest: str | os.PathLike,
    source: str | os.PathLike = "v1.1",
    depths: Iterable[int] | None = None,
    progress: bool = True,
    cache: Any = None,
    base_url: str | None = None,
    http_options: dict | None = None,
) -> str:
    """Copy what an area needs from a store into a local store of the same layout.

    Parameters
    ----------
    bbox : ``(west, south, east, north)`` in degrees.
    years : a year or several.
    dest : folder of the local store (created; an earlier, interrupted fetch of the same
        dataset into it is resumed).
    source : a published dataset name (``"v1.1"``, ``"v2"`` ...), a store URL, or a path.
    depths : band counts to copy (e.g. ``[16]`` for a v2 store's 16-band prefix only);
        None copies the full embeddings.  Scales are always copied.
    progress : show a progress bar over blocks.
    cache : the HTTP cache of the source (default: none, the copy is the cache).

    Returns the local store's path; open it with ``open_embeddings(dest, bbox=..., year=...)``.
    Raises VersionMismatchError when ``dest`` holds another dataset, StoreError when the
    source cannot be read (nothing unverified is ever recorded as done).
    """
    import zarr
    from tqdm.auto import tqdm

    bbox = grid.normalize_bbox(bbox)
    years = [int(years)] if isinstance(years, (int, np.integer)) else sorted({int(y) for y in years})
    if not years:
        raise TesseraExploreError("fetch_region needs at least one year")
    dest = os.fspath(dest)
    src = open_store(source, cache=cache, base_url=base_url, http_options=http_options)
    if src.icechunk:
        raise StoreError("fetch_region copies from Zarr stores; open the Icechunk copy directly instead")
    want_depths = sorted({int(d) for d in depths}) if depths is not None else [src.nbands]
    names = [src.array_name(d) for d in want_depths]
    zones = [z for z in zones_in_bbox(bbox) if z in src.zones]
    if not zones:
        raise StoreError(f"no zone of {src.url} covers bbox {bbox} (zones in the store: {src.zones})")
    for y in years:
        src.check_year(y, zones)
    # the manifest names the dataset before any byte is written
    ident = {"source": src.url, "dataset_version": src.version, "dataset_variant": src.variant}
    os.makedirs(dest, exist_ok=True)
    manifest = _read_manifest(dest)
    if manifest is None:
        if os.listdir(dest):
            raise StoreError(f"{dest} is not empty and holds no fetch manifest; fetch into a new folder")
        manifest = {**ident, "done": [], "requests": []}
        _write_json_atomic(os.path.join(dest, MANIFEST), manifest)
    elif (manifest.get("dataset_version"), manifest.get("dataset_variant")) != (src.version, src.variant):
        raise VersionMismatchError(
            f"{dest} holds {manifest.get('dataset_version')} (variant {manifest.get('dataset_variant')}) from "
            f"{manifest.get('source')}; it cannot take {src.version} (variant {src.variant}) from {src.url}. "
            "Embeddings of different datasets never share a store; fetch into another folder.")
    done = set(manifest.get("done", []))
    manifest.setdefault("requests", []).append({"bbox": list(bbox), "years": years, "depths": want_depths})

    root = zarr.open_group(dest, mode="a", zarr_format=3)
    if not dict(root.attrs):
        root.attrs.update({**src.attrs, "dataset_version": src.version, "dataset_variant": src.variant,
                           "tessera_explore:fetched_from": src.url})
        depth_list = [{"dimensions": d, "array": src.depths[d]} for d in sorted(src.depths) if d in want_depths]
        if len(depth_list) > 1 or want_depths != [src.nbands]:
            root.attrs[layout.GEOEMB_DEPTHS] = depth_list
    jobs = []
    for z in zones:
        part = src._parts[z][0]
        sg = part.group
        name = layout.zone_group(z)
        dg = root.require_group(name)
        if not dict(dg.attrs):
            dg.attrs.update(dict(sg.attrs))
        members = set(sg.array_keys())
        for c in (*_COORDS, *(layout.depth_band(d) for d in want_depths), *layout.STATS):
            if c in members and c not in set(dg.array_keys()):
                a = sg[c]
                _like(dg, c, a, shards=None, chunks=a.chunks if not getattr(a, "shards", None) else a.shards)[...] = \
                    np.asarray(a[...])
        quality = part.quality_arrays()
        arrays = [(n, sg[n], _like(dg, n, sg[n])) for n in (*names, layout.SCALES, *quality)]
        # blocks of whole inner chunks of every array, never across a shard (sizes from
        # the arrays' own metadata)
        grids = [layout.chunk_grid(a) for _, a, _ in arrays]
        inner, shard = max(g.inner for g in grids), min(g.shard for g in grids)
        win = _window(src, z, bbox, inner)
        if win is None:
            continue
        for y in years:
            if y not in part.years:
                continue
            ti = part.years.index(y)
            for blk in _blocks(win, shard, BLOCK):
                key = f"{name}/{y}/{blk[0]}-{blk[1]}/{blk[2]}-{blk[3]}/{','.join(names)}"
                if key not in done:
                    jobs.append((key, ti, blk, [(n, sa, da, _dims(part, n)) for n, sa, da in arrays]))
    bar = tqdm(total=len(jobs), desc="fetching blocks", unit="block", disable=not progress)
    try:
        for key, ti, (ra, rb, ca, cb), arrays in jobs:
            for n, sa, da, dims in arrays:
                sel = tuple(ti if d == layout.TIME else slice(ra, rb) if d in layout.Y_DIMS
                            else slice(ca, cb) if d in layout.X_DIMS else slice(None) for d in dims)
                data = np.asarray(sa[sel])
                da[sel] = data
                back = np.asarray(da[sel])
                if back.shape != data.shape or not np.array_equal(back, data, equal_nan=True):
                    raise StoreError(f"{dest}: block {key} of {n} reads back differently from what was written; "
                                     "the disk may be full or failing")
            done.add(key)
            manifest["done"] = sorted(done)
            _write_json_atomic(os.path.join(dest, MANIFEST), manifest)
            bar.update(1)
    finally:
        bar.close()
    _consolidate(dest)
    # a later open must see the new consolidated metadata, not a cached one
    from . import store as _store

    with _store._SOURCES_LOCK:
        for k in [k for k in _store._SOURCES if k[0] == dest]:
            del _store._SOURCES[k]
    return dest
