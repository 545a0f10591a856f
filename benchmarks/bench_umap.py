"""UMAP on the demo scene as the explorer runs it: a fresh process, compile included.

Each configuration runs in a new Python process (as the explorer's projection process
does): import, open the demo scene (``te.tutorial.open_demo()``, 1168 x 1413 px, two
tiles), fit UMAP on a sample (numba's compile included: nothing is warmed up), place
every pixel, exit.  Reported per configuration: wall time from process start to every
pixel placed (the trustworthiness check after it is not counted),
the stages inside (import, open, fit incl. compile, transform), and the process's peak
resident memory (``ru_maxrss``).  The previous settings run in the same invocation.

Goal (issue: explorer working session): under 30 s from process start to exit on the
2-core machine, moderate peak memory.

Run: ``.venv/bin/python benchmarks/bench_umap.py`` (all configurations) or
``.venv/bin/python benchmarks/bench_umap.py previous new`` (named ones); ``--repeat N``;
``--cold`` deletes the cached UMAP kernels before each process (a machine's first fit;
pynndescent's own cache, written when it is first imported after installation, stays).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

#: name -> options of ``te.project(method="umap", random_state=0, ...)``
CONFIGS: dict[str, dict] = {
    # the code and the explorer's settings before: NN-descent, spectral init, umap-learn's
    # 500 epochs, UMAP's own graph transform (pynndescent queries), 10k sample
    "previous": {"sample": 10_000, "init": "spectral", "n_epochs": None, "legacy": True},
    # the new code with the old spectral init and epochs: what init and epochs buy
    "spectral-500-10k": {"sample": 10_000, "init": "spectral", "n_epochs": None},
    # the new defaults at the old sample size
    "pca-200-10k": {"sample": 10_000, "init": "pca", "n_epochs": 200},
    # the new explorer settings
    "new": {"sample": 5_000, "init": "pca", "n_epochs": 200},
    # a smaller sample still
    "pca-200-3k": {"sample": 3_000, "init": "pca", "n_epochs": 200},
}


def _previous_class():
    """The UMAP fit and transform as they were before (NN-descent, UMAP's graph transform)."""
    import warnings

    import numpy as np

    from tessera_explore.project.pca import PCAProjection
    from tessera_explore.project.umap import UMAPProjection, _import_umap

    class Previous(UMAPProjection):
        _workers = 1

        def _fit_values(self, X):
            umap = _import_umap()
            n = X.shape[0]
            self.pca_ = PCAProjection(min(32, n - 1))
            self.pca_._fit_values(X)
            Z = self._reduce(X)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.umap_ = umap.UMAP(n_components=2, n_neighbors=15, min_dist=0.1, n_epochs=self.n_epochs,
                                       random_state=0, init="spectral").fit(Z)
            self.umap_.transform_mode = "graph"
            self.embedding_ = np.asarray(self.umap_.embedding_, dtype=np.float32)

        def _transform_values(self, X):
            Z = self._reduce(X)
            out = np.empty((Z.shape[0], 2), dtype=np.float32)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for a in range(0, Z.shape[0], 50_000):
                    g = self.umap_.transform(Z[a : a + 50_000]).tocsr()
                    w = np.asarray(g.sum(axis=1)).ravel()
                    pos = np.asarray(g @ self.embedding_, dtype=np.float32)
                    with np.errstate(invalid="ignore", divide="ignore"):
                        pos /= w[:, None].astype(np.float32)
                    out[a : a + 50_000] = pos
            return out

    return Previous


def child(options: dict) -> None:
    """One fit in this process; prints one JSON line of timings."""
    import resource

    t0 = time.perf_counter()
    import tessera_explore as te

    t1 = time.perf_counter()
    da = te.tutorial.open_demo()
    t2 = time.perf_counter()
    import umap  # noqa: F401  (imported here so the RSS below counts the libraries, not the fit)

    from tessera_explore.project import UMAPProjection

    rss_open = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    opts = dict(options)
    sample = opts.pop("sample")
    cls = _previous_class() if opts.pop("legacy", False) else UMAPProjection
    fitted = cls(2, sample=sample, random_state=0, **opts).fit(da)
    t3 = time.perf_counter()
    comps = fitted.transform(da)
    t4 = time.perf_counter()
    done_at = time.time()  # the parent's wall time stops here: the quality check below is not the explorer's
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux; before the check below
    import numpy as np
    from sklearn.manifold import trustworthiness

    # neighbourhood preservation of a fixed subset of pixels (same pixels for every config)
    v = da.isel(y=slice(None, None, 23), x=slice(None, None, 23)).values.reshape(da.sizes["band"], -1).T
    c = comps.values[:, ::23, ::23].reshape(2, -1).T
    ok = np.isfinite(v).all(1) & np.isfinite(c).all(1)
    tw = float(trustworthiness(v[ok][:3000], c[ok][:3000], n_neighbors=10))
    print(json.dumps({"import": t1 - t0, "open": t2 - t1, "fit": t3 - t2, "transform": t4 - t3,
                      "n_fit": fitted.n_samples_fit_, "peak_rss_mb": rss, "rss_open_mb": rss_open, "trust": tw,
                      "pixels": int(np.isfinite(comps.values[0]).sum()), "done_at": done_at}), flush=True)


def drop_kernel_caches() -> list[str]:
    """Delete the on-disk numba cache of the kernels ``enable_umap_cache`` caches and of
    the top-k kernel, so the next process compiles them as a machine's first fit does
    (pynndescent's own cache, written at its first import after installation, stays)."""
    import glob

    import umap

    import tessera_explore.project.umap as tu

    gone = []
    umap_cache = os.path.join(os.path.dirname(umap.__file__), "__pycache__")
    ours = os.path.join(os.path.dirname(tu.__file__), "__pycache__")
    names = [f"{mod.split('.')[-1]}.{name.removeprefix('_nb').removesuffix('_parallel')}"
             for mod, name in tu._KERNELS]
    for pattern in [os.path.join(umap_cache, f"{n}-*.nb[ic]") for n in names] + [os.path.join(ours, "umap._topk_py-*")]:
        for f in glob.glob(pattern):
            os.remove(f)
            gone.append(os.path.basename(f))
    return gone


def run(name: str, cold: bool = False) -> dict:
    env = dict(os.environ)
    if cold:
        drop_kernel_caches()
    t = time.time()
    p = subprocess.run([sys.executable, __file__, "--child", json.dumps(CONFIGS[name])],
                       capture_output=True, text=True, check=False, env=env)
    if p.returncode != 0:
        raise SystemExit(f"{name} failed:\n{p.stderr[-3000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["wall"] = out["done_at"] - t  # process start to every pixel placed
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        child(json.loads(argv[1]))
        return 0
    repeat = 1
    if "--repeat" in argv:
        i = argv.index("--repeat")
        repeat = int(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    cold = "--cold" in argv
    argv = [a for a in argv if a != "--cold"]
    names = argv or list(CONFIGS)
    import tessera_explore as te

    te.tutorial.demo_path()  # written once, outside the timings
    print(f"demo scene, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; fresh process per run; "
          f"UMAP kernels {'compiled in each run (cold)' if cold else 'loaded from the cache'}")
    print("| config | sample | init | epochs | wall s | import | open | fit+compile | transform | RSS after open MB "
          "| peak RSS MB | trustworthiness |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for _ in range(repeat):
        for name in names:
            r = run(name, cold)
            c = CONFIGS[name]
            print(f"| {name} | {r['n_fit']:,} | {c['init']} | {c['n_epochs'] or 'default (500)'} | {r['wall']:.1f} "
                  f"| {r['import']:.1f} | {r['open']:.1f} | {r['fit']:.1f} | {r['transform']:.1f} "
                  f"| {r['rss_open_mb']:,.0f} | {r['peak_rss_mb']:,.0f} | {r['trust']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
