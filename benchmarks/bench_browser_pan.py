"""Pan -> painted in a real browser: the explorer that follows the map, on the demo store
served over HTTP (directly and behind a latency proxy), in Chromium through Voila.

The demo store (``te.tutorial.demo_path()``: two 10 m tiles, 0.0-0.2 E, 52.1-52.2 N, full
depth only: it has no depth-16 prefix; ``--prefix``: the same scene written with the
prefix, so the first paint is at depth 16) is served by :func:`~tessera_explore.testing.serve_folder`
on 127.0.0.1, directly (0 ms) and through :func:`~tessera_explore.testing.latency_proxy`
(80 ms round trips).  Voila runs a notebook with ``te.explore(<url>, center=, zoom=13)``
on a map of about 1,000 x 800 px (a view of about 12 x 9 km, 1.2 M store pixels); each
Voila server gets an empty disk cache.  The browser labels two classes (6 clicks), then
pans by dragging the map ``--dx`` px (each new view overlaps the first by the rest) and
back, in turn east, west and north.  Per pan, from the mouse button's release (the
``PAN_TIMER`` of ``tests/browser/test_explore_anywhere_browser.py``) to:

* ``false colour``: the first new false-colour image decoded and painted (depth 16 where
  the store has the prefix, else the full depth);
* ``full depth``: the first false-colour image painted with the follower saying the view
  is at the full depth;
* ``class map``: the first new class-map image painted (retrained on every label, those
  outside the view through their stored vectors, and predicted over the view).

Baseline in the same run, without the browser: a :class:`~tessera_explore.io.viewport.ViewLoader`
(fresh store, empty disk cache) loads the first view then times each pan's view
(``load`` + the false colour, ``colour_view``: what the data layer and colours take), and
``te.open_embeddings(url, bbox=view).values`` of the first pan's view from an empty cache
(what a user would otherwise run).

Run: ``.venv/bin/python benchmarks/bench_browser_pan.py [--rtt 0 80] [--pans 3] [--prefix]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "browser"))

YEAR = 2024
CENTER = (0.1, 52.15)
ZOOM = 13
DIRS = [(1, 0), (-1, 0), (0, -1)]  # screen drags: the view goes west, east, north ... (drag dx < 0: east)


def _pans(n: int, dx: int) -> list:
    """``n`` drags of ``dx`` px (screen), each followed by the drag back."""
    out = []
    for i in range(n):
        sx, sy = DIRS[i % len(DIRS)]
        out.append((-sx * dx, -sy * dx))
    return out


def _centre_after(drag: tuple, zoom: float) -> tuple:
    """The map centre (lon, lat) after a drag of ``drag`` screen px from :data:`CENTER`."""
    from tessera_explore.widgets.anywhere import _unmerc, mercator

    x, y = mercator(*CENTER, zoom)
    return _unmerc(x - drag[0], y - drag[1], zoom)


def baseline(url: str, size: tuple, drags: list) -> dict:
    """The data layer alone: a fresh ViewLoader's first view, then each pan's view
    (load + false colour), and ``open_embeddings(...).values`` of the first pan's view."""
    import tessera_explore as te
    from tessera_explore.io import shards, store
    from tessera_explore.io.viewport import ViewLoader
    from tessera_explore.project.store_colours import StoreColours
    from tessera_explore.widgets.anywhere import colour_view, view_bbox_at

    out = {"pan": [], "back": []}
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as cache:  # the cache writer may still write
        store._SOURCES.clear()
        shards._INDEXES.clear()
        t = time.perf_counter()
        loader = ViewLoader(url, year=YEAR, cache=cache)
        colours = StoreColours(loader.store, year=YEAR)
        out["open"] = time.perf_counter() - t
        a = view_bbox_at(CENTER, ZOOM, size)
        t = time.perf_counter()
        for depth in loader.depths:
            colour_view(a, depth, loader.load(a, depth=depth), colours)
        out["first"] = time.perf_counter() - t
        out["pan16"] = []
        for d in drags:
            b = view_bbox_at(_centre_after(d, ZOOM), ZOOM, size)
            for key, bbox in (("pan", b), ("back", a)):
                t = time.perf_counter()
                for depth in loader.depths:  # depth 16 first where the store has it, as the explorer
                    colour_view(bbox, depth, loader.load(bbox, depth=depth), colours)
                    if depth < loader.depths[-1] and key == "pan":
                        out["pan16"].append(time.perf_counter() - t)
                out[key].append(time.perf_counter() - t)
        loader.release()
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as cache:  # the cache writer may still write
        store._SOURCES.clear()
        shards._INDEXES.clear()
        b = view_bbox_at(_centre_after(drags[0], ZOOM), ZOOM, size)
        t = time.perf_counter()
        _ = te.open_embeddings(url, bbox=b, year=YEAR, cache=cache).values
        out["open_embeddings"] = time.perf_counter() - t
    return out


def browser_run(url: str, args, browser) -> dict:
    """One Voila server (empty disk cache) and one page: open, label, pan and pan back."""
    import nbformat
    from browser_waits import scale, wait_idle
    from conftest import VoilaServer
    from test_explore_anywhere_browser import (
        CLASSES,
        FOLLOW_TEXT,
        PAN_TIMER,
        _pick_class,
        drag,
        follow_done,
        label_click,
        notebook,
        open_explorer,
        pan_figures,
    )

    root = tempfile.mkdtemp(prefix="bench_browser_pan_")
    nbformat.write(notebook(url, os.path.join(root, "view.json"), center=CENTER, zoom=ZOOM,
                            labels=os.path.join(root, "labels.geojson"),
                            map_size=(f"{args.width}px", f"{args.height}px"), year=YEAR),
                   os.path.join(root, "anywhere.ipynb"))
    env = dict(os.environ, PYTHONPATH=os.getcwd(), TESSERA_EXPLORE_CACHE=os.path.join(root, "cache"))
    srv = VoilaServer(root, env)
    res = {"pan": [], "back": []}
    try:
        page = browser.new_page(viewport={"width": args.width + 460, "height": args.height + 120})
        page.set_default_timeout(120_000 * scale())
        t = time.perf_counter()
        text = open_explorer(page, srv, CENTER, ZOOM)
        res["open"] = time.perf_counter() - t
        box = page.locator(".te-map").first.bounding_box()
        res["map"] = (round(box["width"]), round(box["height"]))
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        k = 0
        for name, sx in zip(CLASSES, (-1, 1)):
            _pick_class(page, f"label {name}", name)
            for dy in (-120, 0, 120):
                k += 1
                label_click(page, k, cx + sx * (150 + 30 * k), cy + dy, timeout=120)
        for d in _pans(args.pans, args.dx):
            for key, dd in (("pan", d), ("back", (-d[0], -d[1]))):
                page.evaluate(PAN_TIMER)
                drag(page, box, *dd)
                figs = pan_figures(page)
                wait_idle(page, key, follow_done(text), "the follower to show the new view", timeout=120)
                text = page.evaluate(FOLLOW_TEXT)
                res[key].append(figs)
                print(f"  {key} {dd}: false colour {figs['first']:.0f} ms, full depth {figs['full']:.0f} ms, "
                      f"class map {figs['classes']:.0f} ms", flush=True)
        page.close()
    finally:
        srv.stop()
    return res


def _prefix_store() -> str:
    """The demo scene (same tiles, years, seed and difficulty) as a store with the
    ``embeddings_d16`` prefix, written once under ``benchmarks/out/``."""
    from tessera_explore import tutorial
    from tessera_explore.testing.store import make_store

    path = os.path.join(HERE, "out", "demo-d16.zarr")
    if not os.path.exists(os.path.join(path, ".complete")):
        make_store(path, tiles=tutorial.DEMO_TILES, years=tutorial.DEMO_YEARS, seed=tutorial.DEMO_SEED,
                   version=tutorial.DEMO_VERSION, difficulty=tutorial.DEMO_DIFFICULTY, depths=(16,), overwrite=True)
        open(os.path.join(path, ".complete"), "w").close()
    return path


def _med(xs) -> str:
    xs = [x for x in xs if x is not None]
    return f"{statistics.median(xs):.2f}" if xs else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rtt", type=float, nargs="+", default=[0, 80], help="round trips in ms")
    ap.add_argument("--pans", type=int, default=3)
    ap.add_argument("--dx", type=int, default=300, help="screen px of each drag")
    ap.add_argument("--width", type=int, default=1000)
    ap.add_argument("--height", type=int, default=800)
    ap.add_argument("--prefix", action="store_true",
                    help="the demo scene written with a depth-16 prefix (built once under benchmarks/out/)")
    args = ap.parse_args()

    from conftest import CHROMIUM, CHROMIUM_ARGS
    from playwright.sync_api import sync_playwright

    import tessera_explore as te
    from tessera_explore.io.viewport import ViewLoader
    from tessera_explore.testing import latency_proxy
    from tessera_explore.testing.server import serve_folder
    from tessera_explore.widgets.anywhere import view_bbox_at

    path = _prefix_store() if args.prefix else te.tutorial.demo_path()
    plan = ViewLoader(path, year=YEAR).plan(view_bbox_at(CENTER, ZOOM, (args.width, args.height)))
    print(f"demo store {path}; view at zoom {ZOOM}, {args.width} x {args.height} px: {plan.kind}, "
          f"{plan.shape[1]} x {plan.shape[0]} store px, depths {plan.depths}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    rows = []
    with serve_folder(os.path.dirname(path)) as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        direct = f"{srv.url}/{os.path.basename(path)}"
        for rtt in args.rtt:
            with (latency_proxy(direct, rtt=rtt / 1000) if rtt else _nothing(direct)) as px:
                url = px.url
                print(f"RTT {rtt:.0f} ms: browser (load {os.getloadavg()[0]:.1f})", flush=True)
                res = browser_run(url, args, browser)
                print(f"RTT {rtt:.0f} ms: baseline (load {os.getloadavg()[0]:.1f})", flush=True)
                size = res["map"]
                base = baseline(url, size, _pans(args.pans, args.dx))
                print(f"  ViewLoader: open {base['open']:.2f} s, first view {base['first']:.2f} s, pans "
                      f"{[round(v, 2) for v in base['pan']]} s (depth 16: {[round(v, 2) for v in base['pan16']]}), "
                      f"back {[round(v, 2) for v in base['back']]} s; open_embeddings(...).values "
                      f"{base['open_embeddings']:.2f} s", flush=True)
                rows.append((rtt, res, base, os.getloadavg()[0]))
        browser.close()
    print("\nmedians in s (pans of {} px; map {} x {} px)".format(args.dx, *rows[0][1]["map"]))
    print("RTT | open | pan: false colour | full depth | class map | back: false colour | class map | "
          "ViewLoader pan: depth 16 | full | back | open_embeddings | load")
    for rtt, res, base, load in rows:
        def s(key, what, res=res):
            return _med([f[what] / 1000 if f[what] is not None else None for f in res[key]])
        print(f"{rtt:.0f} ms | {res['open']:.1f} | {s('pan', 'first')} | {s('pan', 'full')} | {s('pan', 'classes')} | "
              f"{s('back', 'first')} | {s('back', 'classes')} | {_med(base['pan16'])} | {_med(base['pan'])} | "
              f"{_med(base['back'])} | "
              f"{base['open_embeddings']:.2f} | {load:.1f}")
    return 0


class _nothing:
    def __init__(self, url):
        self.url = url

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    raise SystemExit(main())
