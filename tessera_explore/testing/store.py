"""Write the synthetic scene as a published-layout TESSERA Zarr store (and an Icechunk copy).

``make_store`` writes what the published stores hold, at a small scale, with the names
of :mod:`tessera_explore.io.layout`: a Zarr v3 root with consolidated metadata and the
``geoemb:`` attributes, one ``utmNN`` group per UTM zone on the zone's northern CRS
(southern rows with negative northings), ``embeddings`` int8 ``(time, band, y, x)`` in
shards of inner chunks, ``scales`` float32 ``(time, y, x)`` with NaN = water and +inf =
not computed, optional nested depth prefixes ``embeddings_dN``, coordinates, and the
per-(zone, year) statistics ``stretch_stats_*`` / ``stretch_sample*``.  Two layouts:

* ``"cambridge"`` (default): 32 px inner chunks in 4096 px shards;
* ``"dclimate"``: the v1.1 global run's 256 px inner chunks in 2048 px shards, with the
  per-pixel quality arrays (``s2_obs_count``, ``s1_asc_obs_count``,
  ``s1_desc_obs_count``, ``*_month_covered``) and ``years_complete``; a year can be
  left unfilled (``unfilled_years``).

The pixel values are exactly those :func:`~tessera_explore.testing.make_tiles` writes
for the same tiles, seed and ``shape``: one scene, read from NPY tiles, a local store of
either layout, the store over HTTP or the Icechunk copy, gives identical embeddings.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .._schema import variant_of
from ..exceptions import ArgumentError
from ..io import grid, layout
from ..io.quant import quantize
from .scene import _hash, scene_embeddings
from .tiles import _cell_utm_bounds, _common_res

__all__ = ["make_store", "make_icechunk", "touched_chunk_bytes", "STORE_VARIANTS", "LAYOUTS"]

#: Default variant of each version label, as published (the schema's table).
STORE_VARIANTS = {v: variant_of(v) for v in ("v1", "v1.1", "v2")}
#: The layouts make_store writes: their chunk grids.
LAYOUTS = layout.CHUNK_GRIDS
FALSE_NORTHING = layout.FALSE_NORTHING
SAMPLE_K = 512


@dataclass
class _ZoneGrid:
    zone: int
    res: float
    x0: float  # left edge
    y0: float  # top edge (northern CRS, may be negative)
    height: int
    width: int
    cells: set  # integer tile indices (i, j) whose cells are computed
    data: tuple  # (row0, row1, col0, col1): the pixels that can hold data

    @property
    def epsg(self) -> int:
        return layout.zone_epsg(self.zone)


def _zone_of(lon: float) -> int:
    return int(math.floor((lon + 180.0) / 6.0)) % 60 + 1


def _zone_grids(centres, res: float, shard: int) -> list[_ZoneGrid]:
    by_zone: dict[int, list] = {}
    for lon, lat in centres:
        by_zone.setdefault(_zone_of(lon), []).append((lon, lat))
    out = []
    for zone, cs in sorted(by_zone.items()):
        epsg = layout.zone_epsg(zone)
        bs = [_cell_utm_bounds(lon, lat, epsg) for lon, lat in cs]
        x0 = math.floor(min(b[0] for b in bs) / res) * res
        top = math.ceil(max(b[3] for b in bs) / res) * res
        right = math.ceil(max(b[2] for b in bs) / res) * res
        bottom = math.floor(min(b[1] for b in bs) / res) * res
        w = math.ceil(round((right - x0) / res) / shard) * shard
        h = math.ceil(round((top - bottom) / res) / shard) * shard
        cells = {grid.center_index(lon, lat) for lon, lat in cs}
        data = (0, int(round((top - bottom) / res)), 0, int(round((right - x0) / res)))
        out.append(_ZoneGrid(zone, res, x0, top, h, w, cells, data))
    return out


def _zone_block(zg: _ZoneGrid, rows: slice, cols: slice, year: int, seed: int, difficulty: float = 0.0):
    """(codes (128, h, w) int8, scales (h, w) float32) of a window of a zone grid.

    Pixels outside the tiles' cells are not computed (+inf); water is NaN.  Values and
    pixel-noise keys are those of the NPY tile that owns each pixel.
    """
    from pyproj import Transformer

    res = zg.res
    cc, rr = np.meshgrid(np.arange(cols.start, cols.stop), np.arange(rows.start, rows.stop))
    left = zg.x0 + cc * res
    top = zg.y0 - rr * res
    x, y = left + res / 2, top - res / 2
    south = y < 0
    lon = np.empty(x.shape)
    lat = np.empty(x.shape)
    for is_south, epsg, shift in ((False, zg.epsg, 0.0), (True, zg.epsg + 100, FALSE_NORTHING)):
        m = south == is_south
        if m.any():
            tr = Transformer.from_crs(epsg, 4326, always_xy=True)
            lon[m], lat[m] = tr.transform(x[m], y[m] + shift)
    ii, jj = grid.lonlat_tile_index(lon, lat)
    inside = np.zeros(x.shape, bool)
    for ci, cj in zg.cells:
        inside |= (ii == ci) & (jj == cj)
    h, w = x.shape
    codes = np.zeros((h * w, 128), np.int8)
    scales = np.full(h * w, np.inf, np.float32)
    sel = inside.ravel()
    if sel.any():
        key_epsg = np.where(south, zg.epsg + 100, zg.epsg).ravel()[sel]
        key_col = np.round(left / res).astype(np.int64).ravel()[sel] + key_epsg.astype(np.int64) * 10_000_000
        key_row = np.round(-(top + np.where(south, FALSE_NORTHING, 0.0)) / res).astype(np.int64).ravel()[sel]
        emb, _ = scene_embeddings(lon.ravel()[sel], lat.ravel()[sel], year, seed=seed, pixel_keys=(key_col, key_row),
                                  difficulty=difficulty)
        q, s = quantize(emb)
        codes[sel] = q
        scales[sel] = s  # NaN where the scene has water
    return np.ascontiguousarray(codes.reshape(h, w, 128).transpose(2, 0, 1)), scales.reshape(h, w)


def _zone_window(zg: _ZoneGrid, rows: slice, cols: slice, year: int, seed: int, block_rows: int = 96,
                 difficulty: float = 0.0):
    """:func:`_zone_block` of a large window, computed a few rows at a time (bounded memory)."""
    h, w = rows.stop - rows.start, cols.stop - cols.start
    codes = np.empty((128, h, w), np.int8)
    scales = np.empty((h, w), np.float32)
    for r0 in range(0, h, block_rows):
        r1 = min(h, r0 + block_rows)
        codes[:, r0:r1], scales[r0:r1] = _zone_block(zg, slice(rows.start + r0, rows.start + r1), cols, year, seed,
                                                      difficulty)
    return codes, scales


def _stats_update(acc: dict, t: int, codes: np.ndarray, scales: np.ndarray, rng) -> None:
    valid = np.isfinite(scales)
    if not valid.any():
        return
    flat = codes.reshape(codes.shape[0], -1)
    sflat = scales.ravel()
    idx_all = np.flatnonzero(valid.ravel())
    for i in range(0, len(idx_all), 131072):  # float64 sums of float32 block products, bounded memory
        idx = idx_all[i : i + 131072]
        x = flat[:, idx].astype(np.float32) * sflat[idx]  # (128, n)
        acc["count"][t] += x.shape[1]
        acc["sum"][t] += x.sum(axis=1, dtype=np.float64)
        acc["prod"][t] += (x @ x.T).astype(np.float64)
    # reservoir of raw codes for quantiles
    idx = np.flatnonzero(valid.ravel())
    pick = rng.choice(idx, size=min(len(idx), SAMPLE_K), replace=False)
    acc["sample"][t].append((codes.reshape(128, -1)[:, pick].T, scales.ravel()[pick]))


def _quality_block(rows: slice, cols: slice, year: int, seed: int, scales: np.ndarray) -> dict:
    """Synthetic per-pixel quality arrays of a window of a zone grid (keyed by the zone
    pixel, so every window agrees): pixels that were processed (valid or water) have at
    least :data:`~tessera_explore.io.layout.MIN_S2_OBS` optical observations and some
    radar ones (possibly none); pixels never computed (+inf) have none."""
    rr, cc = np.meshgrid(np.arange(rows.start, rows.stop), np.arange(cols.start, cols.stop), indexing="ij")
    seen = ~np.isposinf(scales)
    out = {}
    for k, name in enumerate(layout.OBS_COUNTS):
        h = _hash(rr, cc, year, k, seed=seed)
        base, span = (layout.MIN_S2_OBS, 40) if k == 0 else (0, 25)
        out[name] = np.where(seen, base + (h % np.uint64(span)).astype(np.uint16), 0).astype(np.uint16)
    for k, name in enumerate(layout.MONTH_COVERED):
        h = _hash(rr, cc, year, 10 + k, seed=seed)
        months = (h[None] >> np.arange(12, dtype=np.uint64)[:, None, None]) & np.uint64(1)
        out[name] = (months.astype(bool) | (k == 0)) & seen[None]  # optical: every month seen
    return out


def make_store(
    dest: str | os.PathLike,
    *,
    tiles: Iterable[tuple[float, float]],
    years: Iterable[int],
    shape: tuple[int, int] | None = None,
    seed: int = 0,
    version: str = "v1.1",
    variant: str | None = None,
    depths: Sequence[int] = (),
    layout: str = "cambridge",
    shard: int | None = None,
    chunk: int | None = None,
    quality: bool | None = None,
    unfilled_years: Iterable[int] = (),
    overwrite: bool = False,
    difficulty: float = 0.0,
) -> str:
    """Write the synthetic scene under ``dest`` as a published-layout Zarr v3 store.

    Parameters
    ----------
    dest : folder of the store (must not exist unless ``overwrite=True``).
    tiles : tile centres ``(lon, lat)`` whose 0.1 degree cells are computed; the rest of
        each zone grid (padded to whole shards) holds +inf scales (not computed).
    years : the store's time axis.
    shape : per-tile ``(rows, cols)`` as for :func:`make_tiles` (coarser pixels for quick
        tests); ``None`` for 10 m pixels.
    seed : scene seed (the same seed gives the same landscape as ``make_tiles``).
    version, variant : recorded in the root attributes (``dataset_version``,
        ``dataset_variant``); the variant defaults to the version's published default.
    depths : nested prefix depths to write (``embeddings_d4`` ...), e.g. ``(4, 16)``.
    layout : ``"cambridge"`` (32 px inner chunks in 4096 px shards) or ``"dclimate"``
        (256 px in 2048 px, with the quality arrays and ``years_complete``).
    shard, chunk : shard and inner-chunk side in pixels, replacing the layout's.
    quality : write the per-pixel quality arrays (default: for the dclimate layout).
    unfilled_years : years of the time axis that were never completely filled: only
        their first shard of data is written (an interrupted fill), they are left out of
        the zone groups' ``years_complete`` attribute and of the statistics.  Readers
        must show them as not computed.
    difficulty : as for :func:`make_tiles` (0 = the scene as it always was, bit for bit).

    Returns the store's path.
    """
    import zarr

    from ..io import layout as lay

    if layout not in lay.CHUNK_GRIDS:
        raise ArgumentError(f"layout must be one of {sorted(lay.CHUNK_GRIDS)}, got {layout!r}")
    dest = os.fspath(dest)
    if os.path.exists(dest):
        if not overwrite:
            from ..exceptions import TesseraExploreError

            raise TesseraExploreError(f"{dest} exists; pass overwrite=True to replace it")
        shutil.rmtree(dest)
    centres = list(dict.fromkeys(grid.tile_center(lon, lat) for lon, lat in tiles))
    years = grid.unique_years(years)
    if not centres or not years:
        raise ArgumentError("make_store needs at least one tile and one year")
    base = lay.CHUNK_GRIDS[layout]
    try:
        cg = lay.ChunkGrid(int(chunk or base.inner), int(shard or base.shard))
    except ValueError as err:
        raise ArgumentError(str(err)) from None
    unfilled = {int(y) for y in unfilled_years}
    if not unfilled <= set(years):
        raise ArgumentError(f"unfilled_years {sorted(unfilled)} are not all in years {years}")
    quality = (layout == "dclimate") if quality is None else bool(quality)
    depths = sorted({int(d) for d in depths})
    if any(not 0 < d < 128 for d in depths):
        raise ArgumentError(f"depths must lie in 1..127, got {depths}")
    variant = variant or STORE_VARIANTS.get(version, "unknown")
    res = _common_res(centres, shape)
    T = len(years)
    root = zarr.open_group(dest, mode="w", zarr_format=3)
    root.attrs.update(lay.root_attrs(
        version=version, variant=variant, gsd=res, build_version="synthetic", depths=depths, synthetic=True,
        seed=int(seed), layout=layout, **({"difficulty": float(difficulty)} if difficulty else {})))
    rng = np.random.default_rng(seed)
    complete = [y for y in years if y not in unfilled]
    for zg in _zone_grids(centres, res, cg.shard):
        g = root.create_group(lay.zone_group(zg.zone))
        g.attrs.update(lay.zone_attrs(zg.zone, res=res, x0=zg.x0, y0=zg.y0, shape=(zg.height, zg.width)))
        if layout == "dclimate" or unfilled:
            g.attrs[lay.YEARS_COMPLETE] = complete
        arrays = lay.create_zone_arrays(g, years=years, shape=(zg.height, zg.width), res=res, x0=zg.x0, y0=zg.y0,
                                        grid=cg, depths=depths, quality=quality)
        H, W, shard = zg.height, zg.width, cg.shard
        acc = {"count": np.zeros(T, np.int64), "sum": np.zeros((T, 128)), "prod": np.zeros((T, 128, 128)),
               "sample": [[] for _ in range(T)]}
        done = np.zeros((T, H // shard, W // shard), np.uint8)
        for t, year in enumerate(years):
            written = 0
            for sr in range(0, H, shard):
                for scol in range(0, W, shard):
                    d0, d1, e0, e1 = zg.data
                    rows = slice(max(sr, d0), min(sr + shard, d1))
                    cols = slice(max(scol, e0), min(scol + shard, e1))
                    if rows.start >= rows.stop or cols.start >= cols.stop:
                        continue
                    if year in unfilled and written:
                        continue  # the fill of this year stopped after its first shard
                    codes, scales = _zone_window(zg, rows, cols, year, seed, difficulty=difficulty)
                    if np.isposinf(scales).all():
                        continue  # nothing computed: the shard stays absent (fill values)
                    written += 1
                    arrays[lay.EMBEDDINGS][t, :, rows, cols] = codes
                    arrays[lay.SCALES][t, rows, cols] = scales
                    for d in depths:
                        arrays[lay.depth_array(d)][t, :, rows, cols] = codes[:d]
                    if quality:
                        for name, values in _quality_block(rows, cols, year, seed, scales).items():
                            arrays[name][(t, *([slice(None)] * (values.ndim - 2)), rows, cols)] = values
                    if year not in unfilled:
                        _stats_update(acc, t, codes, scales, rng)
                        done[t, sr // shard, scol // shard] = 1
        _write_stats(g, acc, done)
    from ..io.fetch_region import _consolidate

    _consolidate(dest)
    return dest


def _write_stats(g, acc: dict, done: np.ndarray) -> None:
    T = len(acc["count"])
    samples, sample_scales, counts = [], [], []
    for t in range(T):
        parts = acc["sample"][t]
        if parts:
            q = np.concatenate([p[0] for p in parts])[:SAMPLE_K]
            s = np.concatenate([p[1] for p in parts])[:SAMPLE_K]
        else:
            q, s = np.zeros((0, 128), np.int8), np.zeros(0, np.float32)
        counts.append(len(q))
        samples.append(np.pad(q, ((0, SAMPLE_K - len(q)), (0, 0))))
        sample_scales.append(np.pad(s, (0, SAMPLE_K - len(s)), constant_values=np.inf))
    arrays = {
        "stretch_stats_count": (acc["count"], ["time"]),
        "stretch_stats_sum": (acc["sum"], ["time", "band"]),
        "stretch_stats_prod": (acc["prod"], ["time", "band", "band_j"]),
        "stretch_sample": (np.stack(samples), ["time", "sample", "band"]),
        "stretch_sample_scales": (np.stack(sample_scales).astype(np.float32), ["time", "sample"]),
        "stretch_sample_count": (np.asarray(counts, np.int64), ["time"]),
        "stretch_stats_shards": (done, ["time", "shard_row", "shard_col"]),
    }
    for name, (values, dims) in arrays.items():
        a = g.create_array(name, shape=values.shape, dtype=values.dtype, chunks=values.shape,
                           dimension_names=tuple(dims))
        a[...] = values


def make_icechunk(
    dest: str | os.PathLike,
    *,
    tiles: Iterable[tuple[float, float]],
    years: Iterable[int],
    shape: tuple[int, int] | None = None,
    seed: int = 0,
    shard: int | None = None,
    chunk: int | None = None,
    quality: bool = True,
    unfilled_years: Iterable[int] = (),
) -> str:
    """Write the synthetic scene as an Icechunk repository in the v1.1 dclimate layout,
    with the installed icechunk (2.x writes the Icechunk v2 format, as the published
    repository is).

    One group per zone and hemisphere (``30N``, ``30S``), each on its own CRS (326NN /
    327NN), arrays ``embeddings`` int8 ``(time, northing, easting, band)`` in shards of
    ``shard`` (default 2048) of inner chunks of ``chunk`` (default 256) pixels,
    ``scales`` float32 ``(time, northing, easting)`` (NaN = no embedding), with
    ``quality`` the observation counts ``(time, northing, easting)`` and month coverage
    ``(time, northing, easting, month)``, coordinates ``time``, ``northing``,
    ``easting``, ``band`` (and ``month``), and the group attribute ``years_complete``
    (without ``unfilled_years``).  Needs the ``icechunk`` package.
    """
    import tempfile

    import icechunk
    import zarr

    dest = os.fspath(dest)
    cg = layout.ChunkGrid(int(chunk or layout.DCLIMATE.inner), int(shard or layout.DCLIMATE.shard))
    chunk, shard = cg.inner, cg.shard
    tmp = tempfile.mkdtemp(prefix="store-")
    try:
        src = zarr.open_group(make_store(os.path.join(tmp, "s.zarr"), tiles=tiles, years=years, shape=shape,
                                         seed=seed, shard=shard, chunk=chunk, quality=quality,
                                         unfilled_years=unfilled_years), mode="r")
        repo = icechunk.Repository.create(icechunk.local_filesystem_storage(dest))
        session = repo.writable_session("main")
        root = zarr.open_group(session.store, mode="w", zarr_format=3)
        root.attrs.update({k: v for k, v in src.attrs.items() if k.startswith("geoemb:")})
        for zname in sorted(k for k in src.group_keys() if layout.parse_zone_group(k)):
            zg = src[zname]
            zone = layout.parse_zone_group(zname)
            res, _, x0, _, _, top = (float(v) for v in zg.attrs[layout.SPATIAL_TRANSFORM])
            sc = np.asarray(zg[layout.SCALES][:])
            fin = np.isfinite(sc).any(axis=0) | np.isnan(sc).any(axis=0)
            rr, cc = np.flatnonzero(fin.any(axis=1)), np.flatnonzero(fin.any(axis=0))
            if not len(rr):
                continue
            # only the computed window is copied (whole chunks), so x0/top move with it
            wr0, wc0 = int(rr[0]) // chunk * chunk, int(cc[0]) // chunk * chunk
            wr1, wc1 = -(-(int(rr[-1]) + 1) // chunk) * chunk, -(-(int(cc[-1]) + 1) // chunk) * chunk
            emb = np.asarray(zg[layout.EMBEDDINGS][:, :, wr0:wr1, wc0:wc1])
            sc = sc[:, wr0:wr1, wc0:wc1]
            sc[np.isposinf(sc)] = np.nan  # the copy marks every pixel without an embedding NaN
            qual = {n: np.asarray(zg[n][..., wr0:wr1, wc0:wc1]) for n in (*layout.OBS_COUNTS, *layout.MONTH_COVERED)
                    if n in zg}
            x0, top = x0 + wc0 * res, top - wr0 * res
            y = np.asarray(zg[layout.Y][wr0:wr1])
            complete = zg.attrs.get(layout.YEARS_COMPLETE, [int(v) for v in zg[layout.TIME][:]])
            for hemi, keep in (("N", y > 0), ("S", y < 0)):
                rows = np.flatnonzero(keep)
                if not len(rows) or not np.isfinite(sc[:, rows]).any():
                    continue
                r0, r1 = int(rows[0]), int(rows[-1]) + 1
                g_top = top - r0 * res + (FALSE_NORTHING if hemi == "S" else 0.0)
                h, w = r1 - r0, emb.shape[-1]
                g = root.create_group(layout.hemisphere_group(zone, hemi))
                g.attrs.update(layout.zone_attrs(zone, res=res, x0=x0, y0=g_top, shape=(h, w), south=hemi == "S"))
                g.attrs[layout.YEARS_COMPLETE] = [int(v) for v in complete]
                T = len(emb)
                e = g.create_array(layout.EMBEDDINGS, shape=(T, h, w, 128), dtype="int8", shards=(1, shard, shard, 128),
                                   chunks=(1, chunk, chunk, 128), fill_value=0,
                                   dimension_names=("time", "northing", "easting", "band"))
                e[:] = np.ascontiguousarray(emb[:, :, r0:r1].transpose(0, 2, 3, 1))
                s = g.create_array(layout.SCALES, shape=(T, h, w), dtype="float32", shards=(1, shard, shard),
                                   chunks=(1, chunk, chunk), fill_value=np.nan,
                                   dimension_names=("time", "northing", "easting"))
                s[:] = sc[:, r0:r1]
                for n, v in qual.items():
                    if v.ndim == 3:
                        a = g.create_array(n, shape=(T, h, w), dtype=v.dtype, shards=(1, shard, shard),
                                           chunks=(1, chunk, chunk), fill_value=0,
                                           dimension_names=("time", "northing", "easting"))
                        a[:] = v[:, r0:r1]
                    else:  # (time, month, y, x) -> (time, northing, easting, month), as the embeddings
                        a = g.create_array(n, shape=(T, h, w, v.shape[1]), dtype=v.dtype,
                                           shards=(1, shard, shard, v.shape[1]), chunks=(1, chunk, chunk, v.shape[1]),
                                           fill_value=False, dimension_names=("time", "northing", "easting", "month"))
                        a[:] = np.ascontiguousarray(v[:, :, r0:r1].transpose(0, 2, 3, 1))
                coords = [("time", np.asarray(zg[layout.TIME][:], np.int32)),
                          ("northing", g_top - (np.arange(h) + 0.5) * res),
                          ("easting", x0 + (np.arange(w) + 0.5) * res),
                          ("band", np.arange(128, dtype=np.int32))]
                if layout.MONTH in zg:
                    coords.append(("month", np.asarray(zg[layout.MONTH][:], np.int32)))
                for name, values in coords:
                    a = g.create_array(name, shape=values.shape, dtype=values.dtype, chunks=values.shape,
                                       dimension_names=(name,))
                    a[:] = values
        session.commit("synthetic TESSERA scene")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def touched_chunk_bytes(store: str | os.PathLike, group: str, array: str, t: int, rows: slice, cols: slice) -> int:
    """Compressed bytes of the inner chunks of ``store/group/array`` (time index ``t``)
    that a window of the zone grid touches, read from the shard indexes on disk (16 bytes
    per inner chunk: offset, length).  What a perfect reader of that window must fetch."""
    import zarr

    store = os.fspath(store)
    a = zarr.open_group(store, mode="r")[group][array]
    shard, inner = a.shards[-1], a.chunks[-1]
    per = shard // inner
    total = 0
    for sr in range(rows.start // shard, (rows.stop - 1) // shard + 1):
        for sc in range(cols.start // shard, (cols.stop - 1) // shard + 1):
            key = [str(t), *(["0"] if a.ndim == 4 else []), str(sr), str(sc)]
            path = os.path.join(store, group, array, "c", *key)
            if not os.path.exists(path):
                continue
            with open(path, "rb") as f:
                f.seek(-(per * per * 16 + 4), os.SEEK_END)
                index = np.frombuffer(f.read(per * per * 16), "<u8").reshape(per, per, 2)
            i0, i1 = max(rows.start, sr * shard), min(rows.stop, (sr + 1) * shard)
            j0, j1 = max(cols.start, sc * shard), min(cols.stop, (sc + 1) * shard)
            sub = index[(i0 - sr * shard) // inner:(i1 - 1 - sr * shard) // inner + 1,
                        (j0 - sc * shard) // inner:(j1 - 1 - sc * shard) // inner + 1]
            present = sub[..., 0] != np.iinfo(np.uint64).max
            total += int(sub[..., 1][present].sum())
    return total
