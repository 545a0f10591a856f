"""Published-layout Zarr stores: open, read, HTTP traffic, cache, depths, PCA from statistics.

Figures (each against a baseline in the same run):

1. lazy open of a zone store over HTTP on 127.0.0.1: requests and time
   (target: one metadata request, under 0.5 s);
2. a 1,000 x 1,000 pixel area from a local store computed to float32, against plain
   zarr-python reading the same window and dequantising (target: within 1.3x);
3. over HTTP on 127.0.0.1: bytes fetched against the compressed bytes of the inner
   chunks the area touches (target: at most 1.2x); a second read from the cache
   (target: zero requests); depth 16 against full depth (target: at most 1/5 of the bytes);
4. PCA from the store's per-zone statistics against sklearn's PCA fitted on every
   valid pixel of the zone: time of each, and the largest component difference up to
   sign (target: 1e-6).

The stores are the built-in demo scene (two full-size 10 m tiles, two years) and a
one-tile v2-like store with nested depths, written once into the benchmark cache.

Run: ``.venv/bin/python benchmarks/bench_store.py``
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import numpy as np
from _timing import best


def zone_window(da, store: str):
    """(zone group, rows, cols) of an array opened from a store, in the zone's grid."""
    import zarr

    zone = f"utm{da.rio.crs.to_epsg() % 100:02d}"
    t = zarr.open_group(store, mode="r")[zone].attrs["spatial:transform"]
    r0 = round((t[5] - float(da.y[0])) / t[0] - 0.5)
    c0 = round((float(da.x[0]) - t[2]) / t[0] - 0.5)
    return zone, slice(r0, r0 + da.sizes["y"]), slice(c0, c0 + da.sizes["x"])


def main() -> int:
    import zarr

    import tessera_explore as te
    from tessera_explore.config import cache_dir
    from tessera_explore.io import store as store_mod
    from tessera_explore.testing.server import serve_folder
    from tessera_explore.testing.store import make_store, touched_chunk_bytes

    demo = te.tutorial.demo_path()
    v2 = os.path.join(cache_dir("demo"), "bench-v2-depths.zarr")
    if not os.path.exists(os.path.join(v2, ".complete")):
        shutil.rmtree(v2, ignore_errors=True)
        make_store(v2, tiles=[(0.05, 52.15)], years=[2024], seed=5, version="v2", depths=(4, 16))
        open(os.path.join(v2, ".complete"), "w").close()
    print(f"stores: demo {demo}; v2 with depths {v2}")
    bbox = te.tutorial.DEMO_BBOX
    results = {}

    # 1. lazy open over HTTP ---------------------------------------------------------------
    with serve_folder(os.path.dirname(demo)) as srv:
        url = f"{srv.url}/{os.path.basename(demo)}"
        t = time.perf_counter()
        src = store_mod.ZarrSource(url, cache=None)
        dt = time.perf_counter() - t
        results["open"] = (srv.requests, dt)
        print(f"1. lazy open of the store over HTTP: {srv.requests} request(s), {dt * 1000:.0f} ms "
              f"(zones {src.zones}); target 1 request, < 0.5 s")

    # 2. 1000 x 1000 from a local store vs plain zarr-python ---------------------------------
    full = te.open_embeddings(demo, bbox=bbox, year=2024)
    sub = full.isel(y=slice(50, 1050), x=slice(100, 1100))
    w, s_, e, n = (float(v) for v in sub.rio.transform_bounds("EPSG:4326"))
    da = te.open_embeddings(demo, bbox=(w + 1e-6, s_ + 1e-6, e - 1e-6, n - 1e-6), year=2024)
    da = da.isel(y=slice(0, 1000), x=slice(0, 1000))
    group, rows, cols = zone_window(da, demo)
    g = zarr.open_group(demo, mode="r")[group]
    ti = list(np.asarray(g["time"][:])).index(2024)

    def baseline():
        emb = g["embeddings"][ti, :, rows, cols]
        sc = g["scales"][ti, rows, cols]
        out = emb.astype(np.float32) * sc[None]
        out[:, ~np.isfinite(sc)] = np.nan
        return out

    ref = baseline()
    ours_dask = lambda: da.values  # noqa: E731
    ours_lazy = lambda: te.open_embeddings(demo, bbox=da.attrs["bbox"], year=2024, chunks=None)  # noqa: E731
    got = da.values
    assert np.array_equal(got, ref, equal_nan=True), "the two reads differ"
    tb = best(baseline)
    td = best(ours_dask)
    lazy = ours_lazy().isel(y=slice(0, 1000), x=slice(0, 1000))
    tl = best(lambda: lazy.values)
    results["local"] = (tb, td, tl)
    print(f"2. 1000 x 1000 px to float32 from a local store: plain zarr-python {tb:.3f} s; "
          f"open_embeddings dask {td:.3f} s = {td / tb:.2f}x; chunks=None {tl:.3f} s = {tl / tb:.2f}x; target 1.3x")

    # 3. HTTP traffic, cache, depths ---------------------------------------------------------
    need = sum(touched_chunk_bytes(demo, group, a, ti, rows, cols) for a in ("embeddings", "scales"))
    cache = tempfile.mkdtemp(prefix="bench-store-cache-")
    try:
        with serve_folder(os.path.dirname(demo)) as srv:
            url = f"{srv.url}/{os.path.basename(demo)}"
            store_mod._SOURCES.clear()
            r = te.open_embeddings(url, bbox=da.attrs["bbox"], year=2024, cache=cache)
            r = r.isel(y=slice(0, 1000), x=slice(0, 1000))
            srv.reset_counters()
            t = time.perf_counter()
            v = r.values
            th = time.perf_counter() - t
            sent, reqs = srv.bytes_sent, srv.requests
            assert np.array_equal(v, ref, equal_nan=True)
            store_mod._SOURCES.clear()
            srv.reset_counters()
            again = te.open_embeddings(url, bbox=da.attrs["bbox"], year=2024, cache=cache)
            _ = again.isel(y=slice(0, 1000), x=slice(0, 1000)).values
            second = srv.requests
        results["http"] = (sent, need, second)
        print(f"3a. over HTTP: {reqs} requests, {sent / 2**20:.1f} MiB fetched for {need / 2**20:.1f} MiB of touched "
              f"inner chunks = {sent / need:.3f}x (target <= 1.2x); {th:.2f} s")
        print(f"3b. second open + read from the cache: {second} requests (target 0)")
        with serve_folder(os.path.dirname(v2)) as srv:
            url = f"{srv.url}/{os.path.basename(v2)}"
            b = (0.02, 52.11, 0.08, 52.19)
            store_mod._SOURCES.clear()
            f128 = te.open_embeddings(url, bbox=b, year=2024, cache=None)
            srv.reset_counters()
            _ = f128.values
            b128 = srv.bytes_sent
            f16 = te.open_embeddings(url, bbox=b, year=2024, depth=16, cache=None)
            srv.reset_counters()
            _ = f16.values
            b16 = srv.bytes_sent
            f4 = te.open_embeddings(url, bbox=b, year=2024, depth=4, cache=None)
            srv.reset_counters()
            _ = f4.values
            b4 = srv.bytes_sent
        results["depth"] = (b128, b16, b4)
        print(f"3c. {f128.sizes['y']} x {f128.sizes['x']} px: full depth {b128 / 2**20:.1f} MiB, depth 16 "
              f"{b16 / 2**20:.2f} MiB = 1/{b128 / b16:.1f}, depth 4 {b4 / 2**20:.2f} MiB = 1/{b128 / b4:.1f} "
              "(target: depth 16 <= 1/5)")
    finally:
        shutil.rmtree(cache, ignore_errors=True)

    # 4. PCA from statistics vs from pixels --------------------------------------------------
    from sklearn.decomposition import PCA

    store_mod._SOURCES.clear()
    area = te.open_embeddings(demo, bbox=bbox, year=2024)
    from tessera_explore.project import PCAProjection

    t = time.perf_counter()
    fitted = PCAProjection(from_stats=True).fit(area)  # the fit only: statistics + colour stretch
    ts = time.perf_counter() - t

    def pixels_pca():
        q = np.asarray(g["embeddings"][ti])
        sc = np.asarray(g["scales"][ti])
        ok = np.isfinite(sc)
        X = (q[:, ok].astype(np.float64) * sc[ok]).T  # float64: the reference, exact to rounding
        del q
        return PCA(3).fit(X)

    t = time.perf_counter()
    ref_pca = pixels_pca()
    tp = time.perf_counter() - t
    diff = max(min(np.abs(a - b).max(), np.abs(a + b).max())
               for a, b in zip(ref_pca.components_, fitted.components_))
    results["pca"] = (ts, tp, diff)
    print(f"4. PCA of the zone and year: from statistics {ts:.3f} s, from all {fitted.n_samples_fit_:,} pixels "
          f"{tp:.2f} s ({tp / ts:.0f}x); largest component difference up to sign {diff:.1e} (target 1e-6)")

    ok = (results["open"][0] == 1 and results["open"][1] < 0.5 and td / tb <= 1.3
          and results["http"][0] <= 1.2 * results["http"][1] and results["http"][2] == 0
          and results["depth"][1] * 5 <= results["depth"][0])
    print("targets met" if ok else "some targets missed (see above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
