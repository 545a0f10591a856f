"""``run_region``: a single-area verb over a region far larger than memory, on dask.distributed.

How a job runs:

1. The region is cut per UTM zone and into chunks on the store's chunk grid
   (:func:`~tessera_explore.region.plan.plan_region`).
2. One chunk is computed here, timed: it gives the output variables and the estimate
   (bytes to read, run time) printed before the job starts.
3. The output Zarr store is created (or, when it already holds this job, reopened:
   chunks marked done are skipped).
4. The operation (fitted classifier, projection, query vectors) is scattered to every
   worker once; one task per missing chunk reads its window, calls the verb, writes its
   chunk and marks it done.  Lost workers' tasks are rerun by the scheduler.

Nothing is gathered on the client: results go straight to the store.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..exceptions import ArgumentError, TesseraExploreError
from .ops import RegionOp, as_op
from .output import create_output, done_mask, mark_incomplete, open_region, region_to_cog, write_chunk
from .plan import DEFAULT_CHUNK, ZoneSpec, open_zone, plan_region, thaw_kw

__all__ = ["run_region", "estimate_region", "RegionJob", "Estimate"]


@dataclass
class Estimate:
    """What a job will cost, from one timed chunk (see :func:`estimate_region`)."""

    zones: list[str]
    chunks: int
    chunks_to_do: int
    pixels: int
    bytes_to_read: int
    seconds_per_chunk: float
    workers: int
    seconds: float

    def __str__(self) -> str:
        return (f"{self.chunks_to_do} of {self.chunks} chunks to compute ({self.pixels / 1e6:,.1f} M pixels in "
                f"{', '.join(self.zones)}); about {_size(self.bytes_to_read)} of codes to read; "
                f"{self.seconds_per_chunk:.2f} s a chunk here, so about {_duration(self.seconds)} on "
                f"{self.workers} worker thread{'s' if self.workers != 1 else ''}")


@dataclass
class RegionJob:
    """The result of :func:`run_region`: where the output is and what was done."""

    out: str
    zones: list[str]
    computed: int
    skipped: int
    seconds: float
    estimate: Estimate | None = None
    worker_peak_rss: dict = field(default_factory=dict)
    #: seconds spent planning (opening zones), on the timed first chunk, and in the
    #: distributed phase (first task sent to last result back)
    timings: dict = field(default_factory=dict)

    def open(self, zone: Any = None):
        """The output as lazy Dataset(s): see :func:`~tessera_explore.region.open_region`."""
        return open_region(self.out, zone)

    def to_cog(self, path: str | os.PathLike, **kwargs) -> str:
        """Export a variable as a COG: see :func:`~tessera_explore.region.region_to_cog`."""
        return region_to_cog(self.out, path, **kwargs)

    def __repr__(self) -> str:
        return (f"RegionJob({self.out!r}: {self.computed} chunks computed, {self.skipped} already done, "
                f"{self.seconds:.1f} s, zones {self.zones})")


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def _rss() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # pragma: no cover - psutil is a dependency of distributed
        return 0


def compute_chunk(spec: ZoneSpec, op: RegionOp, i: int, j: int):
    """One chunk's result (a Dataset on the chunk's grid): the verb on the window."""
    areas = [open_zone(spec)] + [open_zone(spec.with_year(y)) for y in op.extra_years]
    rows, cols = spec.chunk_window(i, j)
    wins = [a.isel(y=rows, x=cols) for a in areas]
    try:
        return op(wins)
    finally:
        from ..classify.area import clear_prepared

        clear_prepared()  # a window is never seen again: keep worker memory flat


def run_chunk(spec: ZoneSpec, op: RegionOp, i: int, j: int, out: str) -> dict:
    """The task: compute one chunk, write it to ``out`` and mark it done."""
    t0 = time.perf_counter()
    res = compute_chunk(spec, op, i, j)
    t1 = time.perf_counter()
    write_chunk(out, spec, i, j, res)
    rows, cols = spec.chunk_window(i, j)
    return {"zone": spec.name, "i": i, "j": j, "pixels": (rows.stop - rows.start) * (cols.stop - cols.start),
            "compute_s": t1 - t0, "write_s": time.perf_counter() - t1, "rss": _rss(), "pid": os.getpid()}


def _client(client: Any):
    """(client, owned): an existing Client, one for an address, the current one, or a
    new LocalCluster (closed after the job)."""
    from distributed import Client

    if client is None:
        try:
            from distributed import get_client

            return get_client(), False
        except ValueError:
            from distributed import LocalCluster

            cluster = LocalCluster(processes=True, threads_per_worker=1, dashboard_address=":0")
            return Client(cluster), True
    if isinstance(client, str):
        return Client(client), True
    if not isinstance(client, Client):
        raise ArgumentError(f"client= must be a distributed.Client, a scheduler address or None, got {client!r}")
    return client, False


def _release(client, owned: bool) -> None:
    """Close a client (and its LocalCluster) that the job made for itself."""
    if owned:
        cluster = getattr(client, "cluster", None)
        client.close()
        if cluster is not None:
            cluster.close()


def _sample_chunk(specs: list[ZoneSpec]) -> tuple[ZoneSpec, int, int]:
    spec = max(specs, key=lambda s: s.height * s.width)
    nr, nc = spec.n_chunks
    return spec, nr // 2, nc // 2


def _plan(verb, source, args, kwargs, *, bbox, year, chunk, open_kw):
    op = as_op(verb, args, kwargs)
    if year is None:
        raise ArgumentError("run_region needs year=")
    specs = plan_region(source, bbox, int(year), chunk=chunk, **open_kw)
    src = specs[0].source
    okw = thaw_kw(specs[0].open_kw)

    def open_point(lon, lat):
        from ..io.open import open_embeddings

        d = 0.002
        return open_embeddings(src, bbox=(lon - d, lat - d, lon + d, lat + d), year=int(year), chunks=None, **okw)

    op.resolve(open_point)
    for y in op.extra_years:  # the other year must exist and share the grid
        for s in specs:
            open_zone(s.with_year(y))
    return op, specs


#: reading options that change the values a job reads (cache and http_options do not)
_OPEN_IDENTITY = ("depth", "base_url", "missing")


def _job(op: RegionOp, specs: list[ZoneSpec], bbox, year) -> dict:
    """The job's record in the output's root attrs; a rerun resumes only when it is the
    same (see ``output._SIG``): ``op`` holds the operation's content (the classifier's,
    projection's or query's fingerprint, the options, the second year)."""
    okw = thaw_kw(specs[0].open_kw)
    return {"verb": op.name, "op": op.describe(), "source": specs[0].source,
            "open": {k: okw.get(k) for k in _OPEN_IDENTITY}, "year": int(year),
            "years": [int(year), *op.extra_years], "bbox": [float(v) for v in bbox], "chunk": specs[0].chunk,
            "zones": [s.name for s in specs], "grids": {s.name: {"epsg": s.epsg, "shape": list(s.shape),
                                                                 "transform": list(s.transform)} for s in specs}}


def _estimate(specs, todo: int, seconds: float, workers: int, nbands: int) -> Estimate:
    chunks = sum(s.n_chunks[0] * s.n_chunks[1] for s in specs)
    pixels = sum(s.height * s.width for s in specs)
    px_chunk = pixels / max(chunks, 1)
    return Estimate(zones=[s.name for s in specs], chunks=chunks, chunks_to_do=todo, pixels=pixels,
                    bytes_to_read=int(todo * px_chunk * (nbands + 4)), seconds_per_chunk=seconds,
                    workers=workers, seconds=todo * seconds / max(workers, 1))


def _n_threads(client) -> int:
    try:
        return max(1, sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values()))
    except Exception:  # pragma: no cover
        return 1


def estimate_region(verb: Any, source: Any, *args, bbox: Sequence[float], year: int | None = None,
                    chunk: int = DEFAULT_CHUNK, workers: int | None = None, out: str | os.PathLike | None = None,
                    depth: int | None = None, base_url: str | None = None, http_options: dict | None = None,
                    cache: Any = "auto", missing: str = "nan", **kwargs) -> Estimate:
    """Before a large job: chunks, bytes to read and run time, from one chunk computed
    and timed here.  ``workers``: worker threads to divide by (default: those of the
    current dask client, else this machine's cores).  With ``out`` of an interrupted
    job, only its unfinished chunks count."""
    open_kw = {"depth": depth, "base_url": base_url, "http_options": http_options, "cache": cache,
               "missing": missing}
    op, specs = _plan(verb, source, args, kwargs, bbox=bbox, year=year, chunk=chunk, open_kw=open_kw)
    spec, i, j = _sample_chunk(specs)
    t0 = time.perf_counter()
    compute_chunk(spec, op, i, j)
    sec = time.perf_counter() - t0
    todo = sum(s.n_chunks[0] * s.n_chunks[1] for s in specs)
    if out is not None and os.path.exists(os.fspath(out)):
        try:
            todo = sum(int((~done_mask(os.fspath(out), s.name)).sum()) for s in specs)
        except TesseraExploreError:  # not (all) there yet: every chunk is to do
            pass
    if workers is None:
        try:
            from distributed import get_client

            workers = _n_threads(get_client())
        except (ImportError, ValueError):
            workers = os.cpu_count() or 1
    nb = int(open_zone(spec).sizes["band"])
    return _estimate(specs, todo, sec, int(workers), nb)


def run_region(verb: Any, source: Any, *args, bbox: Sequence[float], year: int | None = None,
               out: str | os.PathLike, client: Any = None, chunk: int = DEFAULT_CHUNK, overwrite: bool = False,
               progress: bool = True, on_chunk: Callable[[dict], Any] | None = None, retries: int = 3,
               depth: int | None = None, base_url: str | None = None, http_options: dict | None = None,
               cache: Any = "auto", missing: str = "nan", **kwargs) -> RegionJob:
    """Run a verb over a region on dask.distributed, writing the result to a Zarr store.

    Parameters
    ----------
    verb : :func:`~tessera_explore.predict_map`, :func:`~tessera_explore.similarity`,
        :func:`~tessera_explore.change`, :func:`~tessera_explore.project` or
        :func:`~tessera_explore.trust` (or its name, or a :class:`RegionOp`).
    source : as for :func:`~tessera_explore.open_embeddings`: a dataset name (``"v1.1"``),
        a store URL or folder, a tile folder.
    args, kwargs : the verb's arguments after the area: ``predict_map``/``trust``: the
        fitted classifier; ``similarity``: the query (points are read once, here);
        ``change``: the second year; ``project``: ``fitted=`` (a projection fitted on a
        sample area).
    bbox, year : the region (lon/lat degrees) and year.
    out : the output Zarr store (a folder, or a URL zarr-python can write).  An existing
        output of the same job is resumed: finished chunks are skipped.
    client : a ``distributed.Client``, a scheduler address (``"tcp://..."``), or None
        (the current client, else a new ``LocalCluster`` for this job).
    chunk : task side in pixels; for stores rounded down to a multiple of the store's inner
        chunk that divides its shard (32 and 4096 px in the Cambridge layout, 256 and 2048 px
        in the dclimate layout; read from the store) (default 1024: 128 MiB of codes).
    overwrite : start again even if ``out`` holds a job.
    progress : print the estimate and the dashboard link, and show a progress bar.
    on_chunk : called on the client with each finished chunk's record (zone, i, j,
        pixels, compute_s, write_s, rss, pid).  An exception raised there stops the job
        (the store keeps what finished).
    retries : reruns of a failed task (a lost worker's tasks are rerun by the scheduler).
    depth, base_url, http_options, cache, missing : as for ``open_embeddings``.

    Returns
    -------
    :class:`RegionJob` with ``open()`` (lazy Datasets per UTM zone) and ``to_cog(path)``.
    """
    from tqdm.auto import tqdm

    open_kw = {"depth": depth, "base_url": base_url, "http_options": http_options, "cache": cache,
               "missing": missing}
    out = os.path.abspath(os.fspath(out)) if "://" not in os.fspath(out) else os.fspath(out)
    t_start = time.perf_counter()
    op, specs = _plan(verb, source, args, kwargs, bbox=bbox, year=year, chunk=chunk, open_kw=open_kw)
    timings = {"plan_s": time.perf_counter() - t_start}
    job = _job(op, specs, bbox, year)
    sspec, si, sj = _sample_chunk(specs)
    t0 = time.perf_counter()
    sample = compute_chunk(sspec, op, si, sj)
    sample_s = time.perf_counter() - t0
    timings["sample_s"] = sample_s
    resumed, out = create_output(out, specs, sample, job, overwrite=overwrite)
    todo = []
    for s in specs:
        done = done_mask(out, s.name)
        todo += [(s, int(i), int(j)) for i, j in zip(*np.nonzero(~done))]
    total = sum(s.n_chunks[0] * s.n_chunks[1] for s in specs)
    if resumed and todo:
        mark_incomplete(out)  # a store marked complete whose done cells were damaged is not
    computed = 0
    if (sspec, si, sj) in todo:  # the timed chunk is a real result: keep it
        write_chunk(out, sspec, si, sj, sample)
        todo.remove((sspec, si, sj))
        computed += 1
    client, owned = _client(client)
    peaks: dict = {}
    try:
        est = _estimate(specs, len(todo), sample_s, _n_threads(client), int(open_zone(sspec).sizes["band"]))
        if progress:
            print(f"{'resuming' if resumed else 'starting'} {op.name} over {len(specs)} zone(s) -> {out}")
            print(f"estimate: {est}")
            link = getattr(client, "dashboard_link", None)
            if link:
                print(f"dask dashboard: {link}")
        t0 = time.perf_counter()
        if todo:
            computed += _submit_all(client, op, todo, out, retries=retries, on_chunk=on_chunk, peaks=peaks,
                                    bar=tqdm(total=len(todo), desc=op.name, unit="chunk", disable=not progress))
        timings["distributed_s"] = time.perf_counter() - t0
    finally:
        _release(client, owned)
    _finish(out)
    return RegionJob(out=out, zones=[s.name for s in specs], computed=computed, skipped=total - computed,
                     seconds=time.perf_counter() - t_start, estimate=est, worker_peak_rss=peaks, timings=timings)


def _submit_all(client, op, todo, out, *, retries, on_chunk, peaks, bar) -> int:
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    op_f = client.scatter(op, broadcast=True, hash=False)  # shipped to each worker once
    futs = [client.submit(run_chunk, s, op_f, i, j, out, key=f"te-region-{token}-{s.name}-{i}-{j}",
                          retries=retries, pure=False) for s, i, j in todo]
    n = 0
    try:
        for fut in as_completed(futs):
            rec = fut.result()
            n += 1
            peaks[rec["pid"]] = max(peaks.get(rec["pid"], 0), rec["rss"])
            bar.update(1)
            if on_chunk is not None:
                on_chunk(rec)
    except BaseException:
        client.cancel(futs)
        raise
    finally:
        bar.close()
        client.cancel(op_f)
    return n


def _finish(out: str) -> None:
    """Consolidate the store's metadata once every chunk is done (readers open it faster)."""
    import zarr

    from .output import REGION_ATTR

    root = zarr.open_group(out, mode="r+", zarr_format=3)
    job = dict(root.attrs).get(REGION_ATTR, {})
    if all(done_mask(out, z).all() for z in job.get("zones", [])):
        root.attrs["complete"] = True
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "consolidated metadata is not part of the v3 spec": xarray reads it
            try:
                zarr.consolidate_metadata(out, zarr_format=3)
            except Exception:  # pragma: no cover - consolidation is an optimisation
                pass
