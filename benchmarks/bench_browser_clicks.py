"""Click -> painted in a real browser at 20, 100 and 300 labels: Voila serves a small
notebook that opens the explorer on the demo, Playwright drives /usr/bin/chromium.

Each click is on a new pixel with data of the demo's true classes (5 classes in turn; the
class button is picked first, as a user would).  Its time is from the mouse click on the
map to the moment the changed class image has loaded, decoded and been painted (two
animation frames): the ``PAINT_TIMER`` of ``tests/browser/test_explorer_browser.py``.
The next click waits for the app to say it has the label (the label counts and the status
line) and to be idle (the panel's ``te-idle`` class), the waits of
``tests/browser/browser_waits.py``.  Clicks whose label changed no shown pixel's class
have no paint and are not counted.

Printed: the median (and max) click -> painted of the clicks around 20, 100 and 300
labels, the ratio 300 / 20, and the load average.  Not a test: 300 clicks take minutes.

Run: ``.venv/bin/python benchmarks/bench_browser_clicks.py [--n 300] [--no-markers | --one-layer]``
(``--no-markers``: the label markers are not sent to the map, to see what they cost a
click; ``--one-layer``: every label in one marker layer, re-sent on each click, as before
the markers were sent in chunks).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "browser"))

CLASSES5 = {"built-up": "#d62728", "forest": "#1f6b2e", "grassland": "#98df8a", "cereal": "#e3c75a",
            "maize": "#ff7f0e"}
AT = (20, 100, 300)


def _notebook(labels: str, info: str, markers: bool = True, one_layer: bool = False):
    import nbformat

    off = "" if markers else "app.map_view.draw_labels = lambda: None  # diagnosis: no label markers sent\n"
    if one_layer:  # chunks larger than any session: every label in the first layer
        off += "app.map_view.markers.chunk = app.map_view.markers.base_chunk = 10**9\n"
    src = f"""
import json, os
import tessera_explore as te
app = te.explore(te.tutorial.open_demo(), labels={labels!r}, classes={CLASSES5!r}, basemap=False)
{off}with open({info!r}, "w") as f:
    json.dump({{"bounds": app.map_view.layers["false_colour"].bounds, "pid": os.getpid()}}, f)
app
"""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def _candidates() -> dict:
    """``{class: [(lon, lat), ...]}``: pixels of each of the 5 classes, shuffled, with data
    in 5 pixels around them and 40 pixels away from the scene's edges (a screen pixel is
    2-3 of the scene's at the first zoom: a pixel at the edge of the data is missed)."""
    from pyproj import Transformer
    from scipy.ndimage import binary_erosion

    import tessera_explore as te
    from tessera_explore.io.open import data_mask
    from tessera_explore.testing import CLASSES, scene_classes
    from tessera_explore.tutorial import DEMO_SEED

    da = te.tutorial.open_demo()
    tr = Transformer.from_crs(da.rio.crs, "EPSG:4326", always_xy=True)
    xs, ys = np.meshgrid(da.x.values[40:-40:6], da.y.values[40:-40:6])
    lon, lat = (np.asarray(v).ravel() for v in tr.transform(xs.ravel(), ys.ravel()))
    truth = scene_classes(lon, lat, 2024, seed=DEMO_SEED)
    valid = binary_erosion(data_mask(da).values == 0, iterations=5)[40:-40:6, 40:-40:6].ravel()
    rng = np.random.default_rng(0)
    out = {}
    for name in CLASSES5:
        idx = rng.permutation(np.flatnonzero((truth == CLASSES.index(name)) & valid))
        out[name] = [(float(lon[j]), float(lat[j])) for j in idx]
    return out


def _next_point(cands: list, taken: set, box: dict, bounds, viewport: tuple) -> tuple[float, float]:
    """The screen position of the next candidate of a class that lies inside the visible
    part of the map image (where the image is *now*: the map zooms out once after it is
    first shown too narrow for the area), at least 4 screen pixels from every earlier click."""
    from test_explorer_browser import _screen_xy

    x0, x1 = max(box["x"], 0) + 4, min(box["x"] + box["width"], viewport[0]) - 4
    y0, y1 = max(box["y"], 0) + 4, min(box["y"] + box["height"], viewport[1]) - 4
    while cands:
        lon, lat = cands.pop()
        x, y = _screen_xy(box, bounds, lon, lat)
        key = (round(x / 4), round(y / 4))
        if x0 <= x <= x1 and y0 <= y <= y1 and key not in taken:
            taken.add(key)
            return x, y
    raise SystemExit("not enough visible pixels of a class for the clicks asked for")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=800)
    ap.add_argument("--no-markers", action="store_true",
                    help="diagnosis: do not send the label markers to the map (what do they cost a click?)")
    ap.add_argument("--one-layer", action="store_true",
                    help="every label in one marker layer, re-sent on each click (the markers before chunks)")
    args = ap.parse_args()

    import nbformat
    from browser_waits import scale, screen, status_has, total_labels, wait_idle
    from conftest import CHROMIUM, CHROMIUM_ARGS, VoilaServer
    from playwright.sync_api import sync_playwright
    from test_explorer_browser import PAINT_TIMER, _pick_class

    root = tempfile.mkdtemp(prefix="bench_browser_clicks_")
    labels, info = os.path.join(root, "labels.geojson"), os.path.join(root, "view.json")
    nb = _notebook(labels, info, markers=not args.no_markers, one_layer=args.one_layer)
    nbformat.write(nb, os.path.join(root, "explorer.ipynb"))
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    srv = VoilaServer(root, env)
    times: dict[int, float] = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.set_default_timeout(120_000 * scale())
            t = time.perf_counter()
            page.goto(f"{srv.url}/voila/render/explorer.ipynb", wait_until="commit")
            wait_idle(page, "open the explorer", "document.querySelector('.te-map img.leaflet-image-layer') !== null",
                      "the false-colour image on the map", timeout=300)
            print(f"explorer on screen in {time.perf_counter() - t:.0f} s")
            view = json.loads(open(info).read())
            cands, taken, names = _candidates(), set(), list(CLASSES5)
            img = page.locator(".te-map img.leaflet-image-layer").first
            for i in range(1, args.n + 1):
                name = names[(i - 1) % len(names)]
                step = f"click {i} of {args.n} ({name})"
                _pick_class(page, step, name)
                box = img.bounding_box()
                x, y = _next_point(cands[name], taken, box, view["bounds"], (args.width, args.height))
                if os.environ.get("BENCH_DEBUG"):
                    print(step, box, view["bounds"], x, y, flush=True)
                timer = page.evaluate_handle(PAINT_TIMER)
                page.mouse.click(x, y)
                what = (f"{total_labels(i)} && " +
                        (status_has(f"trained on {i} label") if i >= 2 else status_has("(1 label)")))
                wait_idle(page, step, what, f"the label counts to add up to {i} and the status line to say so")
                limit = 60_000 * scale()
                ms = page.evaluate(f"t => t.changed ? Promise.race([t.done, new Promise(r => setTimeout(() => "
                                   f"r(-1), {limit:.0f}))]) : null", timer)
                if ms is not None and ms < 0:
                    raise SystemExit(f"{step}: no paint within {limit / 1000:.0f} s; {screen(page)}")
                if ms is not None:
                    times[i] = ms
                if i in AT or i % 25 == 0:
                    w = [times[k] for k in range(max(i - 9, 2), i + 1) if k in times]
                    med = f"{statistics.median(w):.0f}" if w else "-"
                    print(f"  {i} labels: click -> painted median of the last 10 {med} ms", flush=True)
            browser.close()
    finally:
        srv.stop()
    print(f"{args.n} clicks at {args.width} x {args.height}; load average now {os.getloadavg()[0]:.1f}")
    print("labels   click->painted median (max) ms   clicks counted")
    meds = {}
    for n in [a for a in AT if a <= args.n] or [args.n]:
        w = [times[k] for k in range(max(n - 9, 2), n + 1) if k in times]
        if w:
            meds[n] = statistics.median(w)
            print(f"{n:6d}   {meds[n]:10.0f} ({max(w):5.0f})   {len(w)}")
    if len(meds) >= 2:
        lo, hi = min(meds), max(meds)
        print(f"ratio {hi} / {lo} labels: {meds[hi] / meds[lo]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
