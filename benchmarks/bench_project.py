"""Projection to colour on one full-size tile, against a naive baseline in the same run.

Figures (2 cores; numpy's traced peak memory, tracemalloc, beside each time):
- PCA RGB: ``open_embeddings`` + ``project(method="pca")`` + ``to_rgb``, against the
  baseline ``np.load`` codes, dequantise everything to float32, sklearn PCA fitted on
  every pixel, transform, percentile stretch.  Goal: at least 2x faster, peak < 250 MB.
- UMAP: fit on a sample, transform every pixel, after the one-off compile (timed apart).
  Goal: under 60 s.
- Scatter: datashader aggregation of every pixel's 2-D projection (mean RGB), after
  numba's first call (timed apart).  Goal: under 1 s.
- Overlay: full tile RGB -> Web Mercator PNG.

Run: ``.venv/bin/python benchmarks/bench_project.py`` (``--no-umap`` to skip UMAP).
"""

from __future__ import annotations

import gc
import glob
import os
import sys
import tempfile
import time
import tracemalloc

import numpy as np


def timed(f, *, trace=False):
    gc.collect()
    if trace:
        tracemalloc.start()
    t = time.perf_counter()
    r = f()
    dt = time.perf_counter() - t
    peak = None
    if trace:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return dt, peak, r


def main() -> int:
    from sklearn.decomposition import PCA

    import tessera_explore as te

    d = tempfile.mkdtemp(prefix="bench-project-")
    te.testing.make_tiles(d, tiles=[(0.15, 52.05)], years=[2024], seed=3)
    codes = glob.glob(os.path.join(d, "global_0.1_degree_representation", "2024", "grid_*", "grid_*[0-9].npy"))[0]
    bbox = (0.1, 52.0, 0.2, 52.1)

    def baseline():
        q = np.load(codes)
        s = np.load(codes.replace(".npy", "_scales.npy"))
        x = (q.astype(np.float32) * s[..., None]).reshape(-1, q.shape[-1])
        ok = np.isfinite(x).all(1) & (s.reshape(-1) > 0)
        c = PCA(3).fit(x[ok]).transform(x[ok])
        lo, hi = np.percentile(c, [2, 98], axis=0)
        return (np.clip((c - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)

    def ours():
        da = te.open_embeddings(d, year=2024, bbox=bbox)
        comp, _ = te.project(da, method="pca", n_components=3)
        return te.to_rgb(comp).values

    da = te.open_embeddings(d, year=2024, bbox=bbox)
    npx = da.sizes["y"] * da.sizes["x"]
    print(f"full tile {da.sizes['y']} x {da.sizes['x']} = {npx} px; 2 cores")
    # warm both (imports, page cache), then alternate; peak memory in separate traced runs
    timed(baseline)
    timed(ours)
    tb = min(timed(baseline)[0] for _ in range(2))
    to = min(timed(ours)[0] for _ in range(2))
    _, pb, _ = timed(baseline, trace=True)
    _, po, _ = timed(ours, trace=True)
    print(f"PCA RGB  ours {to:.2f} s (peak {po:.0f} MB)   baseline {tb:.2f} s (peak {pb:.0f} MB)   "
          f"-> {tb / to:.1f}x faster   [goal >= 2x, peak < 250 MB]")

    comp, fitted = te.project(da, method="pca", random_state=0)
    rgb = te.to_rgb(comp)

    # overlay of the full tile
    from tessera_explore.widgets.overlay import overlay_image

    t_ov, p_ov, img = timed(lambda: overlay_image(rgb), trace=True)
    print(f"overlay  full tile RGB -> {img.shape[1]} x {img.shape[0]} Web Mercator PNG "
          f"({len(img.png) / 2**20:.1f} MiB) in {t_ov:.2f} s (peak {p_ov:.0f} MB)")

    # scatter
    from tessera_explore.widgets.scatter import scatter_image, scatter_points

    pts = scatter_points(comp, rgb=rgb)
    t_first, _, _ = timed(lambda: scatter_image(pts))
    t_sc = min(timed(lambda: scatter_image(pts))[0] for _ in range(3))
    t_cnt = min(timed(lambda: scatter_image(scatter_points(comp, color=None)))[0] for _ in range(3))
    print(f"scatter  {len(pts)} points, 480 x 480, mean RGB: {t_sc:.3f} s (first call with numba compile "
          f"{t_first:.2f} s); density: {t_cnt:.3f} s   [goal < 1 s]")

    if "--no-umap" not in sys.argv:
        from tessera_explore.project import warm_up_umap

        t_w, _, w = timed(lambda: warm_up_umap(background=False))
        print(f"UMAP     one-off compile (warm_up_umap): {t_w:.1f} s")
        t_u, p_u, (ucomp, ufit) = timed(lambda: te.project(da, method="umap"), trace=True)
        print(f"UMAP     full tile: fit on {ufit.n_samples_fit_} sampled px + transform all {npx} px: "
              f"{t_u:.1f} s (peak {p_u:.0f} MB)   [goal < 60 s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
