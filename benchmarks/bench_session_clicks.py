"""Click -> painted through the explorer's public API, to 300 labels, with the kernel's
memory: the headless half of the per-click benchmark (the browser half is
``bench_browser_clicks.py``).

Setting: ``te.explore(te.tutorial.open_demo(), classes=5 classes)`` (the demo scene, two
tiles, 2024; the default map size, so the class map holds the pixels a 700 x 560 map
shows), the scatter on, UMAP shown once before the clicks (``state.projection = "umap"``,
then back to PCA), in label mode.  Then ``app.click(lon, lat)`` at ``N`` pixels with data
of the scene's true classes (5 classes in turn), one after another: a click's time is
from ``app.click`` to the ``"classes"`` layer event of a classifier trained on that many
labels (the image encoded, ready for the map).  The next click follows ``--pace`` seconds
after the paint (default 0.3 s, a fast labeller): the quiet jobs queued after each retrain
(cross-validation, learning curve) then run between clicks, and a click that finds one
running waits for it, as in the app.

Printed: the median (and max) click -> painted over the clicks around 20, 100 and 300
labels and the ratio 300 / 20; the time ``app.click`` takes on the calling thread (label
vectors and the label file written); the spatial cross-validation at 20, 100 and 300
labels; the label file's size; the resident memory (RSS) after UMAP, at 20, 100 and 300
labels and the peak (``ru_maxrss``), and the highest RSS sampled in each phase
(start-up, UMAP, clicks); with ``--trace``, the growth of Python allocations
between the 100th and the 300th click (tracemalloc, top lines).  Whether the UMAP
process is gone after its fit is printed too.

Run: ``.venv/bin/python benchmarks/bench_session_clicks.py [--n 300] [--pace 0.3] [--trace]``
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import tempfile
import threading
import time

import numpy as np

CLASSES5 = ("built-up", "forest", "grassland", "cereal", "maize")
AT = (20, 100, 300)


def _points(n, seed=0):
    """``n`` (lon, lat, class) at pixels with data of 5 true classes of the demo, in turn,
    at most one per pixel.  Run in a process of its own (:func:`main`): reading a band of
    the whole scene and the true classes of every pixel would count in this process's
    peak memory."""
    from pyproj import Transformer

    import tessera_explore as te
    from tessera_explore.testing import CLASSES, scene_classes
    from tessera_explore.tutorial import DEMO_SEED

    da = te.tutorial.open_demo()
    X, Y = np.meshgrid(da.x.values, da.y.values)
    lon, lat = Transformer.from_crs(da.rio.crs, 4326, always_xy=True).transform(X, Y)
    truth = scene_classes(lon, lat, int(da.year), seed=DEMO_SEED).ravel()
    valid = np.isfinite(da.isel(band=0).values).ravel()
    rng = np.random.default_rng(seed)
    per = n // len(CLASSES5) + 1
    picks = [rng.choice(np.flatnonzero((truth == CLASSES.index(c)) & valid), per, replace=False) for c in CLASSES5]
    order = [p[i] for i in range(per) for p in picks][:n]
    return [(float(lon.ravel()[j]), float(lat.ravel()[j]), CLASSES5[i % 5]) for i, j in enumerate(order)]


def _rss() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


class _Sampler:
    """Resident memory sampled every ``every`` seconds on a thread: the highest per phase
    (``phase`` is set by the caller)."""

    def __init__(self, every: float = 0.1):
        import psutil

        self.phase = "start"
        self.peaks: dict[str, float] = {}
        self._me = psutil.Process()
        self._every = every
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self._stop.is_set():
            r = self._me.memory_info().rss / 2**20
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), r)
            self._stop.wait(self._every)

    def stop(self):
        self._stop.set()


def _children(me) -> list:
    """(pid, RSS MiB) of this process's children, but multiprocessing's resource tracker
    (one per interpreter, kept on purpose)."""
    import psutil

    out = []
    for c in me.children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(c.cmdline()):
                out.append((c.pid, round(c.memory_info().rss / 2**20)))
        except psutil.Error:
            continue
    return out


def _window(times: dict, n: int, half: int = 5) -> list:
    return [times[k] for k in range(max(n - half + 1, 1), n + half + 1) if k in times] or \
        [times[k] for k in sorted(times)[-2 * half:]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--pace", type=float, default=0.3, help="seconds between a paint and the next click")
    ap.add_argument("--trace", action="store_true", help="tracemalloc between click 100 and the last")
    ap.add_argument("--no-umap", action="store_true")
    ap.add_argument("--no-scatter", action="store_true")
    args = ap.parse_args()

    import psutil

    import tessera_explore as te
    from tessera_explore.classify.evaluate import evaluate

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    sampler = _Sampler()
    sampler.phase = "start-up"
    tmp = tempfile.mkdtemp(prefix="bench_session_clicks_")
    path = os.path.join(tmp, "labels.geojson")
    from tessera_explore.project.umap import run_in_fresh_process

    pts = run_in_fresh_process(_points, args.n)  # its memory is not the explorer's
    da = te.tutorial.open_demo()
    t = time.perf_counter()
    app = te.explore(da, labels=path, classes=list(CLASSES5), basemap=False, scatter=not args.no_scatter)
    app.wait(600)
    print(f"explorer ready in {time.perf_counter() - t:.1f} s; RSS {_rss():.0f} MiB")
    ctl = app.controller
    me = psutil.Process()
    if not args.no_umap:
        sampler.phase = "UMAP"
        t = time.perf_counter()
        app.state.projection = "umap"
        fut = ctl.umap.fit()
        fut.result(timeout=600)
        pid = ctl.umap.fitted_in
        time.sleep(1.0)
        alive = pid is not None and pid != os.getpid() and psutil.pid_exists(pid)
        kids = _children(me)
        print(f"UMAP shown in {time.perf_counter() - t:.1f} s (fitted in pid {pid}, this process {os.getpid()}); "
              f"fit process still alive 1 s after: {alive}; children now {kids}; RSS {_rss():.0f} MiB")
        app.state.projection = "pca"

    painted: dict[int, float] = {}
    cond = threading.Condition()

    def on_layer(name, img):
        if name != "classes" or img is None:
            return
        clf = ctl.classifier
        n = int(clf.provenance_["n_labels"]) if clf is not None else 0
        with cond:
            painted.setdefault(n, time.perf_counter())
            cond.notify_all()

    ctl.on("layer", on_layer)
    sampler.phase = "clicks"
    times, calls, rss, cv = {}, {}, {}, {}
    snap = None
    for i, (lon, lat, cls) in enumerate(pts, start=1):
        app.state.active_class = cls
        t0 = time.perf_counter()
        msg = app.click(lon, lat)
        calls[i] = time.perf_counter() - t0
        if "labelled" not in msg:
            raise SystemExit(f"click {i} did not label: {msg}")
        if i >= 2:
            with cond:
                if not cond.wait_for(lambda i=i: i in painted, timeout=120):
                    raise SystemExit(f"click {i}: no class map in 120 s ({app.state.status!r}, {app.state.error!r})")
            times[i] = painted[i] - t0
        if i in AT or i == args.n:
            app.wait(600)
            gc.collect()
            rss[i] = _rss()
            s = ctl.classifying.classifier.samples_
            t = time.perf_counter()
            evaluate(ctl.session.area(ctl.session.label_year), s, model="knn", cv="spatial")
            cv[i] = time.perf_counter() - t
        if args.trace and i == 100:
            import tracemalloc

            app.wait(600)
            gc.collect()
            tracemalloc.start(10)
            snap = tracemalloc.take_snapshot()
        time.sleep(args.pace)
    app.wait(600)
    print(f"{args.n} clicks, pace {args.pace} s; load average now {os.getloadavg()[0]:.1f}")
    print("labels   click->painted median (max) ms   app.click ms   spatial CV ms   RSS MiB")
    for n in sorted(set(AT) & set(times) | {max(times)}):
        w = _window(times, n)
        c = _window(calls, n)
        print(f"{n:6d}   {1000 * statistics.median(w):10.0f} ({1000 * max(w):5.0f})"
              f"   {1000 * statistics.median(c):10.1f}   {1000 * cv.get(n, float('nan')):10.0f}"
              f"   {rss.get(n, float('nan')):8.0f}")
    lo, hi = min(AT[0], max(times)), max(times)
    ratio = statistics.median(_window(times, hi)) / statistics.median(_window(times, lo))
    print(f"ratio {hi} / {lo} labels: {ratio:.2f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    print(f"peak RSS (ru_maxrss) {peak:.2f} GiB; label file {os.path.getsize(path) / 1024:.0f} KiB; "
          f"samples re-read by clicks: {ctl.classifying.samples.sampled} for {args.n} labels")
    if len(rss) >= 2:
        ks = sorted(rss)
        a, b = ks[1] if len(ks) > 2 else ks[0], ks[-1]
        print(f"RSS growth {a} -> {b} labels: {(rss[b] - rss[a]) / max(b - a, 1) * 1024:.0f} KiB per click")
    if snap is not None:
        import tracemalloc

        gc.collect()
        after = tracemalloc.take_snapshot()
        stats = after.compare_to(snap, "traceback")
        total = sum(s.size_diff for s in stats)
        print(f"tracemalloc growth click 100 -> {args.n}: {total / 2**20:.2f} MiB "
              f"({total / max(args.n - 100, 1) / 1024:.1f} KiB per click); top:")
        for s in stats[:8]:
            print(f"  {s.size_diff / 1024:9.0f} KiB  {s.count_diff:6d} blocks  {s.traceback.format()[-1].strip()}")
        tracemalloc.stop()
    sampler.stop()
    print("highest RSS sampled (every 0.1 s) per phase: "
          + ", ".join(f"{k} {v:.0f} MiB" for k, v in sampler.peaks.items()))
    print(f"child processes at the end (but the resource tracker): {_children(me)}")
    app.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
