"""``embed_region``: live encoding of a region far larger than one area, on dask.distributed.

How a job runs:

1. The region is cut **per UTM zone** into square pixel tiles (``tile`` x ``tile`` pixels
   of 10 m) on a fixed grid of the zone's northern CRS (EPSG 326NN, as the published
   stores): tile edges fall on multiples of ``tile`` x 10 m, so two regions share their
   tiles.  Tiles whose outline misses the bbox are left out.
2. The encoder goes to the workers once, as a :class:`EncoderPlugin` (a
   ``distributed.WorkerPlugin``): each worker process loads the model once, on its GPU
   when torch sees one there, else on the CPU with torch limited to the worker's threads,
   and keeps it for every task (and for later jobs on the same client).
3. The output store is created in the **published store layout**, so the result opens like
   the precomputed maps with :func:`~tessera_explore.open_embeddings`: a ``utmNN`` group
   per zone with ``embeddings`` int8 ``(time, band, y, x)``, ``scales`` float32
   ``(time, y, x)`` (+inf where nothing was computed or no pixel was observed), the
   coordinates and the ``geoemb:`` / ``proj:`` / ``spatial:`` attributes.  One shard is one
   tile, so tasks never write the same file.  A ``done`` array (tile rows, tile cols)
   says which tiles finished (1), are left to do (0) or lie outside the region (2).
4. One task per unfinished tile: :func:`~tessera_explore.embed_area` on the tile's grid with
   the worker's model, quantised (:func:`~tessera_explore.io.quant.quantize`) and written,
   then the tile is marked done.  A rerun of the same job skips finished tiles; a killed
   worker's tiles are rerun by the scheduler, and a restarted worker gets the plugin again.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..exceptions import ArgumentError, SchemaError
from ..io import layout
from .output import REGION_ATTR, done_mask
from .plan import zone_bbox

__all__ = ["embed_region", "EncoderPlugin", "EncodeZone", "plan_tiles", "EmbedJob", "EmbedEstimate",
           "DEFAULT_TILE"]

#: Default tile side in pixels (512 x 512 px = 5.12 km x 5.12 km, about what one
#: ``embed_area`` call is sized for).
DEFAULT_TILE = 512
RES = 10.0
#: bytes of imagery read per pixel for a year (as ``encoder.stac.check_size`` reckons it)
_IMAGERY_BYTES_PER_PX = 150 * 11 * 2 + 120 * 2 * 4
OUTSIDE = 2


# --- the tiling ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodeZone:
    """One UTM zone of a region: a grid of ``nrows`` x ``ncols`` tiles (picklable, small)."""

    zone: int
    tile: int
    x0: float  # left edge of the grid (metres, EPSG 326NN)
    y0: float  # top edge
    nrows: int
    ncols: int
    res: float = RES
    outside: tuple = ()  # (i, j) of tiles that miss the region

    @property
    def name(self) -> str:
        return layout.zone_group(self.zone)

    @property
    def epsg(self) -> int:
        return layout.zone_epsg(self.zone)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.nrows * self.tile, self.ncols * self.tile)

    @property
    def transform(self) -> list[float]:
        return [self.res, 0.0, self.x0, 0.0, -self.res, self.y0]

    @property
    def n_tiles(self) -> int:
        return self.nrows * self.ncols - len(self.outside)

    def tiles(self) -> list[tuple[int, int]]:
        out = set(self.outside)
        return [(i, j) for i in range(self.nrows) for j in range(self.ncols) if (i, j) not in out]

    def window(self, i: int, j: int) -> tuple[slice, slice]:
        t = self.tile
        return slice(i * t, (i + 1) * t), slice(j * t, (j + 1) * t)

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre ``x``, ``y`` of the whole zone grid."""
        h, w = self.shape
        return self.x0 + (np.arange(w) + 0.5) * self.res, self.y0 - (np.arange(h) + 0.5) * self.res

    def tile_like(self, i: int, j: int):
        """A weightless array on tile (i, j)'s grid: ``embed_area(like=...)`` embeds exactly it."""
        import rioxarray  # noqa: F401
        import xarray as xr

        x, y = self.coords()
        rows, cols = self.window(i, j)
        xs, ys = x[cols], y[rows]
        da = xr.DataArray(np.broadcast_to(np.float32(0), (len(ys), len(xs))), dims=("y", "x"),
                          coords={"y": ys, "x": xs})
        return da.rio.write_crs(f"EPSG:{self.epsg}")

    def tile_lonlat(self, i: int, j: int) -> tuple[float, float, float, float]:
        from pyproj import Transformer

        t = self.tile * self.res
        left, top = self.x0 + j * t, self.y0 - i * t
        tr = Transformer.from_crs(self.epsg, 4326, always_xy=True)
        return tuple(float(v) for v in tr.transform_bounds(left, top - t, left + t, top, densify_pts=21))


def plan_tiles(bbox: Sequence[float], tile: int = DEFAULT_TILE) -> list[EncodeZone]:
    """One :class:`EncodeZone` per UTM zone the lon/lat ``bbox`` touches: the zone's part of
    the bbox covered by ``tile``-pixel tiles on the zone's fixed tile grid."""
    from pyproj import Transformer

    from ..io import grid
    from ..io.store import zones_in_bbox

    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or int(tile) < 1:
        raise ArgumentError(f"tile must be a positive number of pixels, got {tile!r}")
    tile = int(tile)
    bbox = grid.normalize_bbox(bbox)
    step = tile * RES
    zones = []
    for zone in zones_in_bbox(bbox):
        zb = zone_bbox(bbox, zone)
        if zb is None:
            continue
        tr = Transformer.from_crs(4326, 32600 + zone, always_xy=True)
        left, bottom, right, top = tr.transform_bounds(*zb, densify_pts=21)
        c0, c1 = math.floor(left / step + 1e-9), math.ceil(right / step - 1e-9)
        r0, r1 = math.floor(bottom / step + 1e-9), math.ceil(top / step - 1e-9)
        z = EncodeZone(zone, tile, c0 * step, r1 * step, max(r1 - r0, 1), max(c1 - c0, 1))
        outside = tuple((i, j) for i in range(z.nrows) for j in range(z.ncols)
                        if not _overlaps(z.tile_lonlat(i, j), zb))
        if len(outside) == z.nrows * z.ncols:
            continue
        zones.append(EncodeZone(zone, tile, z.x0, z.y0, z.nrows, z.ncols, RES, outside))
    if not zones:
        raise ArgumentError(f"bbox {bbox} holds no tile")
    return zones


def _overlaps(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _inner_chunk(tile: int) -> int:
    """The Cambridge layout's inner chunk (32 px), halved until it divides the tile (one
    tile is one shard)."""
    c = layout.CAMBRIDGE.inner
    while tile % c:
        c //= 2
    return c


# --- the model on the workers --------------------------------------------------------------


def _distributed_plugin_base():
    from distributed.diagnostics.plugin import WorkerPlugin

    return WorkerPlugin


class EncoderPlugin(_distributed_plugin_base()):
    """The encoder on every worker, loaded once per worker process.

    ``checkpoint``: a checkpoint path or registry name (each worker loads it with
    :func:`~tessera_explore.encoder.load_encoder`; the path must be readable there), or an
    encoder already loaded here (shipped to each worker once, with the plugin).
    ``device``: ``"cuda"``, ``"cpu"``... or None: the worker's GPU when torch sees one, else
    its CPU.  On the CPU torch is limited to the worker's threads.

    Register it with ``client.register_plugin(plugin, name=plugin.name)`` (what
    :func:`embed_region` does); a task gets the model with :meth:`model_on_worker`.
    Registering it again under the same name does nothing (``idempotent``): the model
    stays loaded across jobs.  ``loads`` counts the loads in this worker process.
    """

    idempotent = True

    def __init__(self, checkpoint: Any, device: Any = None, **load_kw):
        self.checkpoint = checkpoint if hasattr(checkpoint, "generation") else os.fspath(checkpoint)
        self.device = None if device is None else str(device)
        self.load_kw = dict(load_kw)
        self.model = None
        self.loads = 0
        self.nthreads = None
        self._lock = None

    @property
    def name(self) -> str:
        """Plugin name: the same checkpoint (path, size, mtime) and device give the same name."""
        c = self.checkpoint
        if hasattr(c, "generation"):
            ident = ("object", getattr(c, "name", ""), c.generation, id(c), os.getpid())
        elif os.path.exists(c):
            st = os.stat(c)
            ident = ("file", os.path.abspath(c), st.st_size, st.st_mtime_ns)
        else:
            ident = ("name", c)
        key = repr((ident, self.device, sorted(self.load_kw.items())))
        return "tessera-encoder-" + hashlib.sha256(key.encode()).hexdigest()[:12]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_lock"] = None
        if not hasattr(self.checkpoint, "generation"):
            state["model"] = None  # a path travels as a path; the model is loaded there
        return state

    def setup(self, worker=None):
        self.nthreads = int(getattr(getattr(worker, "state", None), "nthreads", 0) or
                            getattr(worker, "nthreads", 0) or 1)
        self._lock = threading.Lock()
        self.model = None
        self.loads = 0

    def teardown(self, worker=None):
        self.model = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass

    def target_device(self) -> str:
        if self.device is not None:
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def model_on_worker(self):
        """The model, loaded on first use (in a task thread, not the worker's event loop)."""
        if self._lock is None:  # used outside a worker
            self.setup(None)
        with self._lock:
            if self.model is None:
                import torch

                dev = self.target_device()
                if dev == "cpu":
                    torch.set_num_threads(max(1, int(self.nthreads or 1)))
                if hasattr(self.checkpoint, "generation"):
                    model = self.checkpoint.to(dev)
                else:
                    from ..encoder import load_encoder

                    model = load_encoder(self.checkpoint, device=dev, **self.load_kw)
                model.eval()
                self.model = model
                self.loads += 1
            return self.model


def _plugin(name: str) -> EncoderPlugin:
    from distributed import get_worker

    worker = get_worker()
    plugin = worker.plugins.get(name)
    if plugin is None:
        raise ArgumentError(f"worker {worker.address} has no encoder plugin {name!r}; register it with "
                            "client.register_plugin(EncoderPlugin(...))")
    return plugin


def model_info(name: str, dims: int | None) -> dict:
    """Run on a worker: the model's generation, name, data source and the output depth."""
    model = _plugin(name).model_on_worker()
    return _info(model, dims)


def _info(model, dims) -> dict:
    from ..encoder.embed import check_dims

    return {"generation": str(model.generation), "name": str(getattr(model, "name", "") or "live"),
            "data_source": getattr(model, "data_source", None), "depth": int(check_dims(model, dims))}


def worker_loads(name: str, dask_worker=None) -> dict:
    """For ``client.run``: how often this worker process loaded the model, and its pid."""
    plugin = dask_worker.plugins.get(name) if dask_worker is not None else None
    return {"registered": plugin is not None, "loads": getattr(plugin, "loads", 0), "pid": os.getpid(),
            "device": None if plugin is None or plugin.model is None else str(next(plugin.model.parameters()).device)}


# --- the output store ----------------------------------------------------------------------


def _sig(job: dict) -> dict:
    return {k: job.get(k) for k in ("verb", "bbox", "year", "start", "end", "tile", "zones", "model",
                                    "generation", "depth")}


def _consolidate(out: str) -> None:
    import warnings

    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "consolidated metadata is not part of the v3 spec": the stores use it
        zarr.consolidate_metadata(out, zarr_format=3)


def create_store(out: str, zones: list[EncodeZone], job: dict, *, overwrite: bool = False) -> bool:
    """Create the published-layout store for ``zones``, or check that an existing one holds
    the same job.  Returns True when an existing store of the job was found (resume)."""
    import zarr

    try:
        have = dict(zarr.open_group(out, mode="r").attrs).get(REGION_ATTR, False)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError, ValueError):
        have = None
    if have is not None and not overwrite:
        if not have:
            raise ArgumentError(f"{out} exists and is not the output of a regional job; choose another out= "
                                "or pass overwrite=True")
        if _sig(have) != _sig(job):
            diff = sorted(k for k in _sig(job) if _sig(have).get(k) != _sig(job).get(k))
            raise ArgumentError(f"{out} holds another job (differs in {', '.join(diff)}); choose another out= "
                                "or pass overwrite=True to start again")
        return True
    from ..config import version as pkg_version

    gen, depth = job["generation"], int(job["depth"])
    root = zarr.open_group(out, mode="w", zarr_format=3)
    root.attrs.update(layout.root_attrs(
        # "<generation>-live": read back as this generation (what embed_area records), with
        # the checkpoint's name as the variant, so live tiles and the region combine
        version=job["dataset_version"], variant=job["model"], generation=gen, dimensions=depth, gsd=RES,
        build_version=f"tessera_explore {pkg_version()} live", model_generation=gen, live=True, **{REGION_ATTR: job}))
    for z in zones:
        g = root.create_group(z.name)
        h, w = z.shape
        g.attrs.update(layout.zone_attrs(z.zone, res=z.res, x0=z.x0, y0=z.y0, shape=(h, w), tile=z.tile, epsg=z.epsg,
                                         zone=z.zone))
        # one shard is one tile, so tasks never write the same file
        layout.create_zone_arrays(g, years=[job["year"]], shape=(h, w), res=z.res, x0=z.x0, y0=z.y0,
                                  grid=layout.ChunkGrid(_inner_chunk(z.tile), z.tile), nbands=depth)
        done = np.zeros((z.nrows, z.ncols), np.uint8)
        for i, j in z.outside:
            done[i, j] = OUTSIDE
        d = g.create_array("done", shape=done.shape, dtype="uint8", chunks=(1, 1), fill_value=0,
                           dimension_names=("tile_row", "tile_col"))
        d[...] = done
    _consolidate(out)  # readers open the store (consolidated) while it is being filled
    return False


def write_tile(out: str, zone: EncodeZone, i: int, j: int, da) -> int:
    """Quantise one tile's embeddings into its shard, then mark the tile done.
    Returns the number of pixels with an embedding."""
    import zarr

    from ..io.quant import quantize

    rows, cols = zone.window(i, j)
    x, y = zone.coords()
    if (da.sizes["y"], da.sizes["x"]) != (zone.tile, zone.tile) or not (
            np.allclose(da.x.values, x[cols], atol=1e-3) and np.allclose(da.y.values, y[rows], atol=1e-3)):
        raise SchemaError(f"tile ({i}, {j}) of {zone.name} came back on another grid")  # pragma: no cover
    # opened per tile, from the arrays' own metadata (a store rewritten with overwrite=True
    # must not be written through metadata cached from its previous job)
    g = zarr.open_group(out, mode="r+", path=zone.name, zarr_format=3, use_consolidated=False)
    q, s = quantize(np.moveaxis(np.asarray(da.values, np.float32), 0, -1))
    s[~np.isfinite(s)] = np.inf  # no observation: land without data, as the stores mark it
    g["embeddings"][0, :, rows, cols] = np.ascontiguousarray(np.moveaxis(q, -1, 0))
    g["scales"][0, rows, cols] = s
    g["done"][i, j] = 1
    return int(np.isfinite(s).sum())


# --- the task ------------------------------------------------------------------------------


def encode_tile(zone: EncodeZone, i: int, j: int, out: str, plugin_name: str, year: Any, kw: dict) -> dict:
    """The task: embed tile (i, j) with the worker's model, write it and mark it done."""
    from ..encoder.area import embed_area
    from .run import _rss

    plugin = _plugin(plugin_name)
    t0 = time.perf_counter()
    model = plugin.model_on_worker()
    t1 = time.perf_counter()
    kw = dict(kw)
    if plugin.target_device() == "cpu":
        kw.setdefault("num_threads", plugin.nthreads)
    da, prep = embed_area(None, year, model=model, like=zone.tile_like(i, j), return_prepared=True, **kw)
    t2 = time.perf_counter()
    valid = write_tile(out, zone, i, j, da)
    return {"zone": zone.name, "i": i, "j": j, "pixels": zone.tile * zone.tile, "valid": valid,
            "s2_dates": int(da.attrs.get("s2_dates", 0)), "timings": dict(prep.timings),
            "load_s": t1 - t0, "compute_s": t2 - t1, "write_s": time.perf_counter() - t2, "rss": _rss(),
            "pid": os.getpid(), "model_id": id(model), "loads": plugin.loads,
            "device": str(next(model.parameters()).device)}


# --- the verb ------------------------------------------------------------------------------


@dataclass
class EmbedEstimate:
    """What a live-encoding job will read and (once a tile has run) how long it takes."""

    zones: list[str]
    tiles: int
    tiles_to_do: int
    pixels: int
    imagery_bytes: int
    workers: int
    seconds_per_tile: float | None = None

    @property
    def seconds(self) -> float | None:
        if self.seconds_per_tile is None:
            return None
        return self.tiles_to_do * self.seconds_per_tile / max(self.workers, 1)

    def __str__(self) -> str:
        from .run import _duration, _size

        s = (f"{self.tiles_to_do} of {self.tiles} tiles to embed ({self.pixels:,} pixels in "
             f"{', '.join(self.zones)}); about {_size(self.imagery_bytes)} of Sentinel-2/1 imagery to read; ")
        if self.seconds is None:
            return s + "run time: measured on the first tiles"
        return s + (f"{self.seconds_per_tile:.1f} s a tile, so about {_duration(self.seconds)} on "
                    f"{self.workers} worker{'s' if self.workers != 1 else ''}")


@dataclass
class EmbedJob:
    """The result of :func:`embed_region`: the store and what was done."""

    out: str
    bbox: tuple
    year: int
    zones: list[str]
    computed: int
    skipped: int
    seconds: float
    estimate: EmbedEstimate | None = None
    records: list = field(default_factory=list)

    def open(self, bbox: Sequence[float] | None = None, **kwargs):
        """The embeddings (lazy) of ``bbox`` (default: the job's), as
        :func:`~tessera_explore.open_embeddings` opens a published store."""
        from ..io.open import open_embeddings

        return open_embeddings(self.out, bbox=tuple(bbox or self.bbox), year=self.year, **kwargs)

    def __repr__(self) -> str:
        return (f"EmbedJob({self.out!r}: {self.computed} tiles embedded, {self.skipped} already done, "
                f"{self.seconds:.1f} s, zones {self.zones})")


def embed_region(bbox: Sequence[float], year: Any = None, *, model: Any, out: str | os.PathLike,
                 client: Any = None, tile: int = DEFAULT_TILE, stac: Any = "planetary-computer",
                 dims: int | None = None, device: Any = None, overwrite: bool = False, progress: bool = True,
                 on_tile: Callable[[dict], Any] | None = None, retries: int = 3, **embed_kwargs) -> EmbedJob:
    """Embed a region live, tile by tile, on dask.distributed, into a published-layout Zarr store.

    Parameters
    ----------
    bbox, year : the region (lon/lat degrees) and the calendar year (or ``start=``/``end=``
        in ``embed_kwargs``, as for :func:`~tessera_explore.embed_area`).
    model : a checkpoint path (readable on the workers) or registry name, or an encoder
        loaded here (shipped to each worker once).  Each worker loads it once
        (:class:`EncoderPlugin`) and keeps it.
    out : the output store (a folder).  An existing output of the same job is resumed:
        finished tiles are skipped.
    client : a ``distributed.Client``, a scheduler address, or None (the current client,
        else a new ``LocalCluster`` for this job).
    tile : tile side in pixels (default 512: 5.12 km); one task and one store shard each.
    stac : as for :func:`~tessera_explore.embed_area` (a :class:`StacConfig`, a name or URL);
        it is pickled to the workers.
    dims : output depth (a Matryoshka prefix of the model; default all 128 values).
    device : where the workers run the encoder (default: their GPU if torch sees one).
    overwrite : start again even if ``out`` holds a job.
    progress : print the estimate and the dashboard link, and show a progress bar.
    on_tile : called on the client with each finished tile's record (zone, i, j, pixels,
        valid, timings, compute_s, pid, loads...).  An exception raised there stops the job
        (the store keeps the finished tiles).
    retries : reruns of a failed task.
    embed_kwargs : passed to :func:`~tessera_explore.embed_area` on each tile (``start``,
        ``end``, ``s1``, ``cache``, ``min_s2_cover``, ``on_error``, ``batch_size``, ``amp``,
        ``seed``, ``dataset_version``...).  The size limits default to off: the tile is the unit.

    Returns
    -------
    :class:`EmbedJob`; ``job.open()`` (or ``open_embeddings(out, bbox=..., year=...)``) reads
    the result as the embeddings schema, like a precomputed store.
    """
    from tqdm.auto import tqdm

    from ..encoder.window import resolve_window
    from .run import _client, _finish, _n_threads, _release

    for bad in ("bbox", "like", "epsg", "model", "progress", "return_prepared"):
        if bad in embed_kwargs:
            raise ArgumentError(f"embed_region sets {bad}= itself for every tile")
    window = resolve_window(year, embed_kwargs.get("start"), embed_kwargs.get("end"))
    t_start = time.perf_counter()
    out = os.path.abspath(os.fspath(out))
    zones = plan_tiles(bbox, tile)
    plugin = EncoderPlugin(model, device=device)
    pname = plugin.name
    client, owned = _client(client)
    records: list = []
    try:
        client.register_plugin(plugin, name=pname)
        if hasattr(plugin.checkpoint, "generation"):
            info = _info(plugin.checkpoint, dims)
        else:  # the model is loaded on a worker (where it stays), never here
            info = client.submit(model_info, pname, dims, pure=False, key=f"te-model-info-{uuid.uuid4().hex[:8]}"
                                 ).result()
        gen = info["generation"]
        job = {"verb": "embed_area", "bbox": [float(v) for v in bbox], "year": int(window.year),
               "start": str(window.start), "end": str(window.end), "tile": int(tile),
               "zones": [z.name for z in zones], "model": info["name"], "generation": gen, "depth": info["depth"],
               "dataset_version": embed_kwargs.get("dataset_version") or f"{gen}-live",
               "stac": str(getattr(stac, "url", None) or getattr(getattr(stac, "s2", None), "url", None) or stac),
               "grids": {z.name: {"epsg": z.epsg, "shape": list(z.shape), "transform": z.transform} for z in zones}}
        resumed = create_store(out, zones, job, overwrite=overwrite)
        todo = []
        for z in zones:
            done = done_mask(out, z.name)
            todo += [(z, int(i), int(j)) for i, j in z.tiles() if not done[i, j]]
        total = sum(z.n_tiles for z in zones)
        px = sum(z.tile * z.tile * z.n_tiles for z in zones)
        est = EmbedEstimate(zones=[z.name for z in zones], tiles=total, tiles_to_do=len(todo), pixels=px,
                            imagery_bytes=len(todo) * tile * tile * _IMAGERY_BYTES_PER_PX,
                            workers=len(client.scheduler_info()["workers"]) or _n_threads(client))
        if progress:
            print(f"{'resuming' if resumed else 'starting'} live encoding ({info['name']}, {gen}, depth "
                  f"{info['depth']}) over {len(zones)} zone(s) -> {out}")
            print(f"estimate: {est}")
            link = getattr(client, "dashboard_link", None)
            if link:
                print(f"dask dashboard: {link}")
        kw = {"stac": stac, "dims": dims, "max_pixels": None, "max_area_km2": None, "progress": False,
              **embed_kwargs}
        if todo:
            bar = tqdm(total=len(todo), desc="embed_region", unit="tile", disable=not progress)
            _submit(client, todo, out, pname, year, kw, retries=retries, on_tile=on_tile, records=records,
                    bar=bar, est=est)
    finally:
        _release(client, owned)
    _finish(out)
    return EmbedJob(out=out, bbox=tuple(float(v) for v in bbox), year=int(window.year),
                    zones=[z.name for z in zones], computed=len(records), skipped=total - len(records),
                    seconds=time.perf_counter() - t_start, estimate=est, records=records)


def _submit(client, todo, out, pname, year, kw, *, retries, on_tile, records, bar, est) -> None:
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    futs = [client.submit(encode_tile, z, i, j, out, pname, year, kw, key=f"te-embed-{token}-{z.name}-{i}-{j}",
                          retries=retries, pure=False) for z, i, j in todo]
    try:
        for fut in as_completed(futs):
            rec = fut.result()
            records.append(rec)
            # the median so far: a worker's first tile also pays its imports and connections
            est.seconds_per_tile = float(np.median([r["compute_s"] for r in records]))
            bar.update(1)
            if on_tile is not None:
                on_tile(rec)
    except BaseException:
        client.cancel(futs)
        raise
    finally:
        bar.close()
