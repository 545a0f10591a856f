"""Open and dequantise one full-size tile, against plain NumPy in the same run.

Figures:
- lazy open of a full tile (after the package's modules are imported): must not read
  the codes, and return in well under a second;
- dequantise the whole tile to float32: ``open_embeddings(..., chunks=None).values``
  (band-first, as the schema wants) and the dask path, against the baseline
  ``np.load(codes).astype(float32) * np.load(scales)[..., None]`` (pixel-major);
  target: within 1.5x of the baseline's time, peak traced memory within 1.2x of the
  float32 result.

Run: ``.venv/bin/python benchmarks/bench_open.py``
"""

from __future__ import annotations

import glob
import os
import sys
import tempfile
import time

import numpy as np
from _timing import best, peak_mb


def main() -> int:
    import tessera_explore as te
    from tessera_explore.io import mosaic

    d = tempfile.mkdtemp(prefix="bench-open-")
    te.testing.make_tiles(d, tiles=[(0.15, 52.05)], years=[2024], seed=3)
    codes = glob.glob(os.path.join(d, "global_0.1_degree_representation", "2024", "grid_*", "grid_*[0-9].npy"))[0]
    scales = codes.replace(".npy", "_scales.npy")
    bbox = (0.1, 52.0, 0.2, 52.1)

    # -- lazy open --------------------------------------------------------------------------
    t = time.perf_counter()
    te.open_embeddings(d, bbox=bbox, year=2024)  # first call: imports rasterio, pyproj, dask
    first = time.perf_counter() - t
    reads = []
    orig = mosaic.Mosaic.read_float
    mosaic.Mosaic.read_float = lambda self, *a, **k: reads.append(1) or orig(self, *a, **k)
    warm = best(lambda: te.open_embeddings(d, bbox=bbox, year=2024), n=5)
    mosaic.Mosaic.read_float = orig
    da = te.open_embeddings(d, bbox=bbox, year=2024, chunks=None)
    h, w = da.sizes["y"], da.sizes["x"]
    print(f"full tile {h} x {w} = {h * w} px; codes {os.path.getsize(codes) / 2**20:.0f} MiB")
    print(f"lazy open: {first:.3f} s first call in the process (imports included), {warm * 1000:.1f} ms after; "
          f"codes read while opening: {len(reads)}")

    # -- dequantise ---------------------------------------------------------------------------
    def baseline():
        return np.load(codes).astype(np.float32) * np.load(scales)[..., None]

    def ours():
        return te.open_embeddings(d, bbox=bbox, year=2024, chunks=None).values

    def ours_dask():
        return te.open_embeddings(d, bbox=bbox, year=2024).values

    # alternate so both sides see the same page cache and allocator state
    tb1 = best(baseline)
    to1 = best(ours)
    tb2 = best(baseline)
    to2 = best(ours)
    tdk = best(ours_dask)
    tb, to = min(tb1, tb2), min(to1, to2)
    result_mb = 128 * h * w * 4 / 2**20
    pb, po, pdk = peak_mb(baseline), peak_mb(ours), peak_mb(ours_dask)
    ok_t = to <= 1.5 * tb
    ok_m = po <= 1.2 * result_mb
    print(f"float32 result: {result_mb:.0f} MiB")
    print(f"baseline np.load + multiply : {tb:.3f} s, peak {pb:.0f} MiB")
    print(f"ours (chunks=None).values   : {to:.3f} s ({to / tb:.2f}x baseline), peak {po:.0f} MiB "
          f"({po / result_mb:.2f}x result)")
    print(f"ours dask (256 px chunks)   : {tdk:.3f} s ({tdk / tb:.2f}x baseline), peak {pdk:.0f} MiB "
          f"({pdk / result_mb:.2f}x result; dask concatenates its chunks)")
    print(f"targets: time <= 1.5x baseline: {'OK' if ok_t else 'MISSED'}; peak <= 1.2x result: "
          f"{'OK' if ok_m else 'MISSED'}")
    return 0 if ok_t and ok_m and not reads else 1


if __name__ == "__main__":
    sys.exit(main())
