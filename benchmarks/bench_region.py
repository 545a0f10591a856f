"""Regional classification on dask.distributed against the single-process path.

A synthetic region of full-size (10 m) tiles is written as a published-layout Zarr
store; a kNN classifier is fitted on one tile; then, for a small and a large region
(4 and 16 tiles by default):

* single process: ``te.predict_map(te.open_embeddings(store, bbox=...), clf)``, what a
  user runs without a cluster (the baseline), timed in this process;
* ``te.run_region(te.predict_map, store, clf, ...)`` on a ``LocalCluster`` of 2 worker
  processes (1 thread each), writing the output store.

Printed: pixels/s of both and their ratio; peak RSS of each worker process (from every
task's record) for both region sizes (it should stay flat); the scheduler's overhead
per chunk (the job's wall time not spent computing or writing chunks, per chunk, and
the round trip of a no-op task).

Run: ``.venv/bin/python benchmarks/bench_region.py [--tiles 16] [--chunk 1024]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np


def _tiles(n: int) -> list[tuple[float, float]]:
    side = int(round(n ** 0.5))
    return [(0.05 + 0.1 * i, 52.05 + 0.1 * j) for j in range(side) for i in range(side)]


def _bbox(tiles) -> tuple[float, float, float, float]:
    lons = [t[0] for t in tiles]
    lats = [t[1] for t in tiles]
    return (min(lons) - 0.05 + 1e-6, min(lats) - 0.05 + 1e-6, max(lons) + 0.05 - 1e-6, max(lats) + 0.05 - 1e-6)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiles", type=int, default=16)
    ap.add_argument("--small", type=int, default=4)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", default=None, help="folder to keep the store in between runs")
    args = ap.parse_args()

    os.environ.setdefault("TESSERA_EXPLORE_CACHE", tempfile.mkdtemp(prefix="bench-region-cache-"))
    from distributed import Client, LocalCluster

    import tessera_explore as te
    from tessera_explore.testing import CLASSES, scene_classes

    d = args.keep or tempfile.mkdtemp(prefix="bench-region-")
    store = os.path.join(d, "s.zarr")
    tiles = _tiles(args.tiles)
    if not os.path.exists(os.path.join(store, "zarr.json")):
        t = time.perf_counter()
        te.testing.make_store(store, tiles=tiles, years=[2024], seed=3, overwrite=True)
        print(f"wrote {len(tiles)} full-size tiles in {time.perf_counter() - t:.0f} s -> {store}")
    one = (0.1 + 1e-6, 52.0 + 1e-6, 0.2 - 1e-6, 52.1 - 1e-6)
    da1 = te.open_embeddings(store, bbox=one, year=2024)
    rng = np.random.default_rng(0)
    lon, lat = rng.uniform(one[0], one[2], 200), rng.uniform(one[1], one[3], 200)
    cls = scene_classes(lon, lat, 2024, seed=3)
    clf = te.fit_classifier(da1, [(float(a), float(b), CLASSES[c]) for a, b, c in zip(lon, lat, cls)])
    te.predict_map(te.prepare(da1.isel(x=slice(0, 64), y=slice(0, 64))), clf)  # compile kernels

    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = Client(cluster)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"{args.workers} workers x 1 thread; chunk {args.chunk} px")

    # the scheduler's round trip for a no-op task (warm)
    client.submit(int, 0, pure=False).result()
    t = time.perf_counter()
    n_noop = 200
    futs = client.map(lambda i: i, range(n_noop), pure=False)
    client.gather(futs)
    noop_ms = (time.perf_counter() - t) / n_noop * 1e3
    print(f"no-op task: {noop_ms:.2f} ms each ({n_noop} tasks)")

    rows = []
    for n in (args.small, args.tiles):
        sub = _tiles(n)
        bbox = _bbox(sub)
        da = te.open_embeddings(store, bbox=bbox, year=2024)
        px = da.sizes["y"] * da.sizes["x"]
        from tessera_explore.classify import area as A

        A.clear_prepared()
        t = time.perf_counter()
        ref = te.predict_map(da, clf)
        single = time.perf_counter() - t
        del ref
        A.clear_prepared()
        out = os.path.join(d, f"out-{n}.zarr")
        shutil.rmtree(out, ignore_errors=True)
        recs = []
        t = time.perf_counter()
        job = te.run_region(te.predict_map, store, clf, bbox=bbox, year=2024, out=out, client=client,
                            chunk=args.chunk, progress=False, on_chunk=recs.append)
        wall = time.perf_counter() - t
        busy = sum(r["compute_s"] + r["write_s"] for r in recs)
        n_chunks = job.computed
        dist = job.timings.get("distributed_s", 0.0)
        overhead = max(dist - busy / args.workers, 0.0) / max(len(recs), 1)
        peaks = {pid: v / 2**20 for pid, v in job.worker_peak_rss.items()}
        out_px = sum(ds.sizes["y"] * ds.sizes["x"] for ds in
                     ([job.open()] if len(job.zones) == 1 else job.open().values()))
        rows.append((n, px, out_px, single, wall, n_chunks, overhead, peaks))
        dist_px = sum(r["pixels"] for r in recs)
        print(f"{n:>3} tiles: single process {px / single / 1e6:.2f} Mpx/s ({px / 1e6:.1f} Mpx in {single:.1f} s)")
        print(f"     run_region {out_px / wall / 1e6:.2f} Mpx/s overall ({out_px / 1e6:.1f} Mpx on the chunk grid, "
              f"{n_chunks} chunks, {wall:.1f} s: planning {job.timings['plan_s']:.1f} s, timed first chunk "
              f"{job.timings['sample_s']:.1f} s); ratio {out_px / wall / (px / single):.2f}x")
        print(f"     distributed phase {dist_px / max(dist, 1e-9) / 1e6:.2f} Mpx/s "
              f"(ratio {dist_px / max(dist, 1e-9) / (px / single):.2f}x); worker peak RSS "
              + ", ".join(f"{v:.0f} MiB" for v in sorted(peaks.values()))
              + f"; scheduler overhead {overhead * 1e3:.0f} ms a chunk")
    client.close()
    cluster.close()
    small, big = rows[0], rows[-1]
    print(f"peak worker RSS, {small[0]} vs {big[0]} tiles: {max(small[7].values()):.0f} vs "
          f"{max(big[7].values()):.0f} MiB (target: flat, under 2048)")
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
