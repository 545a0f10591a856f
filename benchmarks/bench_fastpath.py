"""The fast path is the default path: fit + predict on an opened DataArray, without and
with ``te.prepare``, on one full-size tile.

Figures: the first call on a DataArray (prepares automatically), a second call (uses the
kept preparation), the explicit ``te.prepare`` path, and block-by-block walking with
automatic preparation turned off (what every call cost before).

Run: ``.venv/bin/python benchmarks/bench_fastpath.py``
"""

from __future__ import annotations

import sys
import tempfile
import time

import numpy as np


def main() -> int:
    import tessera_explore as te
    from tessera_explore.classify import area as A

    d = tempfile.mkdtemp(prefix="bench-fast-")
    te.testing.make_store(f"{d}/s.zarr", tiles=[(0.15, 52.05)], years=[2024], seed=3)
    bbox = (0.1, 52.0, 0.2, 52.1)
    da = te.open_embeddings(f"{d}/s.zarr", bbox=bbox, year=2024)
    rng = np.random.default_rng(0)
    lon = rng.uniform(0.11, 0.19, 30)
    lat = rng.uniform(52.01, 52.09, 30)
    from tessera_explore.testing import scene_classes

    cls = scene_classes(lon, lat, 2024, seed=3)
    labels = [(float(a), float(b), str(c)) for a, b, c in zip(lon, lat, cls)]

    def run(area):
        clf = te.fit_classifier(area, labels)
        return te.predict_map(area, clf)

    run(te.prepare(da))  # compile the kernels once, outside the timings
    A.clear_prepared()
    t = time.perf_counter()
    run(da)
    first = time.perf_counter() - t
    t = time.perf_counter()
    run(da)
    second = time.perf_counter() - t
    t = time.perf_counter()
    p = te.prepare(da)
    prep = time.perf_counter() - t
    t = time.perf_counter()
    run(p)
    explicit = time.perf_counter() - t
    A.clear_prepared()
    A.AUTO_PREPARE_BYTES, old = 0, A.AUTO_PREPARE_BYTES
    t = time.perf_counter()
    run(da)
    walked = time.perf_counter() - t
    A.AUTO_PREPARE_BYTES = old
    print(f"tile {da.sizes['y']} x {da.sizes['x']} px, 30 labels, kNN")
    print(f"DataArray, first call (prepares automatically): {first:.2f} s")
    print(f"DataArray, second call (kept preparation):      {second:.2f} s")
    print(f"te.prepare once {prep:.2f} s, then a call:        {explicit:.2f} s")
    print(f"DataArray walked block by block (auto off):     {walked:.2f} s = {walked / second:.1f}x the second call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
