"""Views that follow a map (``io/viewport.py``) over a far network, against opening each view afresh.

The store is bench_remote's synthetic Cambridge-layout store (v2, 32 px inner chunks in
4,096 px shards, an ``embeddings_d16`` prefix, built once under ``benchmarks/out/``),
served by the test server on 127.0.0.1 behind
:func:`~tessera_explore.testing.latency_proxy` (0 and 80 ms round trips).  The view is
a 10 km square (1,000 x 1,000 px) centred on a shard corner (it touches four shards);
the pan moves it 300 px east (70 % overlap).

Per RTT, each measure from an empty disk cache and a fresh opened store:

* ``baseline``: ``te.open_embeddings(url, bbox=view).values`` (full depth, then
  ``depth=16`` in its own fresh run): what a user would otherwise run per view;
* ``ours``: one :class:`~tessera_explore.io.viewport.ViewLoader` and its
  :class:`~tessera_explore.project.store_colours.StoreColours` (``open``: the store opened and the
  PCAs fitted from its statistics, as the explorer does before the first view); per view,
  depth 16 is loaded, the full depth is started (``load_async``) and depth 16 painted
  while it reads, then the full depth is painted: the view, the pan, the pan back.
  Times are cumulative from the pan; ``*_blocks_read``: blocks read (from the network or
  the disk cache) for the view.

A 20-view walk (1,000 px views on a 5 x 4 grid of 250 px steps, full depth, false
colour each) runs at 0 ms in a subprocess; its peak resident memory (VmHWM) is reported.

Run::

    .venv/bin/python benchmarks/bench_viewport.py               # 0 and 80 ms, the walk
    .venv/bin/python benchmarks/bench_viewport.py --rtt 80 --no-walk
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_remote  # noqa: E402  (the store and the window of the remote-read benchmark)

from tessera_explore.io.http import flush_cache  # noqa: E402

YEAR = bench_remote.YEAR
VIEW = 1000
PAN = 300


def _fresh() -> None:
    from tessera_explore.io import shards, store

    store._SOURCES.clear()
    shards._INDEXES.clear()


def _shift(bbox, info, px: int, dy: int = 0):
    """``bbox`` moved ``px`` pixels east and ``dy`` south (degrees per pixel near the view)."""
    w, s, e, n = bbox
    per_x = (e - w) / VIEW
    per_y = (n - s) / VIEW
    return (w + px * per_x, s - dy * per_y, e + px * per_x, n - dy * per_y)


def _timed(f):
    t = time.perf_counter()
    r = f()
    return time.perf_counter() - t, r


def baseline(url: str, bbox, depth: int | None) -> float:
    import tessera_explore as te

    _fresh()
    with tempfile.TemporaryDirectory() as cache:
        t, _ = _timed(lambda: te.open_embeddings(url, bbox=bbox, year=YEAR, cache=cache, depth=depth).values)
        flush_cache()  # cache entries are written in the background: done before the folder goes
    return t


def ours(url: str, bbox) -> dict:
    from tessera_explore.io.viewport import ViewLoader
    from tessera_explore.project.store_colours import StoreColours

    _fresh()
    out = {}
    pan = _shift(bbox, None, PAN)
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        loader = ViewLoader(url, year=YEAR, cache=cache)
        colours = StoreColours(loader.store, year=YEAR)
        for d in loader.depths:  # when the explorer opens the store, before the first view
            colours.projection(d)
        out["open"] = time.perf_counter() - t0
        *first, full = loader.depths
        for name, box in (("view", bbox), ("pan", pan), ("back", bbox)):
            read = loader.counters.blocks_read
            t = time.perf_counter()
            for d in first:  # depth 16: loaded, then painted while the full depth reads
                da = loader.load(box, depth=d)
                out[f"{name}_load_d{d}"] = time.perf_counter() - t
                nxt = loader.load_async(box, depth=full)
                colours.rgb(da)
                out[f"{name}_painted_d{d}"] = time.perf_counter() - t
            da = nxt.result() if first else loader.load(box, depth=full)
            out[f"{name}_load_d{full}"] = time.perf_counter() - t
            colours.rgb(da)
            out[f"{name}_painted_d{full}"] = time.perf_counter() - t
            out[f"{name}_blocks_read"] = loader.counters.blocks_read - read
        out["cache_mb"] = loader.cache.peak / 1e6
        flush_cache()
    return out


def walk(url: str, bbox) -> dict:
    """20 views at full depth with false colour; peak RSS of this process."""
    import numpy as np

    from tessera_explore.io.viewport import ViewLoader
    from tessera_explore.project.store_colours import StoreColours

    with tempfile.TemporaryDirectory() as cache:
        loader = ViewLoader(url, year=YEAR, cache=cache)
        colours = StoreColours(loader.store, year=YEAR)
        t = time.perf_counter()
        steps = [(dx, dy) for dy in (-375, -125, 125, 375) for dx in (-500, -250, 0, 250, 500)]
        for dx, dy in steps:
            da = loader.load(_shift(bbox, None, dx, dy))
            rgb = colours.rgb(da)
            assert int(np.asarray(rgb.values[3]).max()) == 255
            del da, rgb
        flush_cache()
        return {"views": len(steps), "seconds": time.perf_counter() - t, "peak_rss_mb": bench_remote.peak_rss() / 1e6,
                "cache_peak_mb": loader.cache.peak / 1e6}


@contextlib.contextmanager
def _served(info: dict, rtt_ms: int):
    from tessera_explore.testing import latency_proxy
    from tessera_explore.testing.server import serve_folder

    with serve_folder(info["root"]) as server:
        direct = f"{server.url}/{info['name']}"
        with (latency_proxy(direct, rtt=rtt_ms / 1000) if rtt_ms else contextlib.nullcontext()) as proxy:
            yield proxy.url if proxy is not None else direct


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rtt", type=int, nargs="*", default=[0, 80])
    ap.add_argument("--no-walk", action="store_true")
    ap.add_argument("--walk-job", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.walk_job:
        job = json.loads(a.walk_job)
        print(json.dumps(walk(job["url"], tuple(job["bbox"]))))
        return
    info = bench_remote.build_store()
    bbox = bench_remote.window_bbox(info, VIEW)["bbox"]
    print(f"load average at start: {os.getloadavg()}  (machine: {os.cpu_count()} cores)")
    results = {}
    for rtt in a.rtt:
        with _served(info, rtt) as url:
            r = {"baseline_d128": baseline(url, bbox, None), "baseline_d16": baseline(url, bbox, 16)}
            r.update(ours(url, bbox))
            results[rtt] = r
            print(f"RTT {rtt} ms: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()), flush=True)
    if not a.no_walk:
        with _served(info, 0) as url:
            cmd = [sys.executable, __file__, "--walk-job", json.dumps({"url": url, "bbox": bbox})]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if out.returncode:
                raise RuntimeError(out.stderr[-3000:])
            results["walk"] = json.loads(out.stdout.strip().splitlines()[-1])
            print("walk:", results["walk"])
    print(f"load average at end: {os.getloadavg()}")
    (bench_remote.OUT / f"bench_viewport-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main()
