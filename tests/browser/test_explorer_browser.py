"""The explorer in a real browser: Voila on 127.0.0.1 serves a notebook that opens the
explorer on the demo scene; the system Chromium (driven by Playwright) labels two
land-cover types by clicking the map, and the test checks the class overlay, the label
file on disk, the linked scatter and that no error is shown.

Set TESSERA_EXPLORE_SCREENSHOTS to a folder to keep the screenshots (the README's image
comes from here).

Every wait is on a signal of the app (browser_waits.py): its panel's idle class, its status
line, its label counts, the map's layers; none is a fixed time.  A wait that times out names
its step, what it awaited and what the app showed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal

import numpy as np
import pytest
from browser_waits import (
    LAYOUT_PROBLEMS,
    SCREENSHOTS,
    poll,
    scale,
    screen,
    status_has,
    total_labels,
    wait_for,
    wait_for_element,
    wait_idle,
)

pytestmark = pytest.mark.browser

CLASS_POINTS = ("forest", "cereal")


def _pure_points(demo_cache, n=1):
    """lon/lat deep inside forests and cereal fields of the demo (2024), the ``n`` nearest
    the middle of the area of each (so they are well inside the map view); one (lon, lat)
    per class for ``n=1``, else a list."""
    from pyproj import Transformer

    import tessera_explore as te
    from tessera_explore.testing.scene import CLASSES, scene_classes
    from tessera_explore.tutorial import DEMO_SEED

    da = te.tutorial.open_demo()
    tr = Transformer.from_crs(da.rio.crs, "EPSG:4326", always_xy=True)
    x, y = da.x.values, da.y.values
    xs, ys = np.meshgrid(x[200:-200:10], y[200:-200:10])
    lon, lat = (np.asarray(v) for v in tr.transform(xs.ravel(), ys.ravel()))
    out = {}
    for name in CLASS_POINTS:
        k = CLASSES.index(name)
        ok = np.ones(lon.size, bool)
        for dx in (-60, 0, 60):  # 60 m around the point is the same class
            for dy in (-60, 0, 60):
                lo, la = tr.transform(xs.ravel() + dx, ys.ravel() + dy)
                ok &= scene_classes(np.asarray(lo), np.asarray(la), 2024, seed=DEMO_SEED) == k
        idx = np.flatnonzero(ok)
        assert idx.size, f"no pure {name} pixel in the demo"
        mid = np.array([lon.mean(), lat.mean()])
        near = idx[np.argsort(np.hypot(lon[idx] - mid[0], lat[idx] - mid[1]))]
        pts = [(float(lon[b]), float(lat[b])) for b in near[::7][:n]]  # every 7th: not neighbours
        out[name] = pts[0] if n == 1 else pts
    return out


#: JavaScript: ``{changed, done}``: ``done`` is a promise of the milliseconds from the next click on the
#: map to the moment a new or changed overlay image of the map has loaded, decoded and been painted (two
#: frames); ``changed`` says whether such an image came (a label that changes no shown pixel's class
#: leaves the class image as it was)
PAINT_TIMER = """() => { const t = {changed: false}; t.done = new Promise(resolve => {
  const map = document.querySelector('.te-map');
  let t0 = null;
  map.addEventListener('click', () => { t0 = performance.now(); }, {capture: true, once: true});
  const done = img => img.decode().catch(() => null).then(() => requestAnimationFrame(() =>
      requestAnimationFrame(() => resolve(performance.now() - t0))));
  const obs = new MutationObserver(muts => {
    if (t0 === null) return;
    for (const m of muts) {
      const img = m.type === 'attributes' ? m.target : [...m.addedNodes].find(n => n.tagName === 'IMG');
      if (img && img.tagName === 'IMG' && img.classList.contains('leaflet-image-layer')) {
        obs.disconnect(); t.changed = true; done(img); return;
      }
    }
  });
  obs.observe(map, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
}); return t; }"""


def _n(k: int) -> str:
    return f"{k} label{'' if k == 1 else 's'}"


def _pick_class(page, step: str, name: str) -> None:
    """Make ``name`` the active class (the button shows it before the map's next click is sent)."""
    page.locator(".te-classes button", has_text=name).first.click()
    wait_for(page, step, f"[...document.querySelectorAll('.te-classes button')].some("
                         f"b => b.textContent.trim() === {json.dumps(name)} && b.classList.contains('mod-active'))",
             f"the class button {name!r} to be active")


def _label_click(page, step: str, x: float, y: float, n: int) -> None:
    """Click the map to add the ``n``-th label; return once the app said so (the status line
    names ``n`` labels: 'labelled ... (n labels)' or '... trained on n labels') and is idle
    (retrained, class map drawn, scored)."""
    page.mouse.click(x, y)
    wait_idle(page, step, f"{total_labels(n)} && {status_has(f'({_n(n)})', f'trained on {_n(n)}')}",
              f"the label counts to add up to {n} and the status line to say '({_n(n)})' or 'trained on {_n(n)}'")


def _timed_clicks(page, img, bounds, points, n, first):
    """Click ``n`` new pixels, alternating classes (the labels ``first``, ``first + 1``, ...);
    the click -> painted time of each (ms; None where the class image did not change)."""
    out = []
    names = list(points)
    for i in range(n):
        name = names[i % len(names)]
        step = f"timed click {i + 1} of {n} ({name})"
        _pick_class(page, step, name)
        timer = page.evaluate_handle(PAINT_TIMER)
        x, y = _screen_xy(img, bounds, *points[name][1 + i // len(names)])
        _label_click(page, step, x, y, first + i)
        # idle: the new class image (if any) was sent before; wait for it to be decoded and painted
        limit = 60_000 * scale()
        ms = page.evaluate(f"t => t.changed ? Promise.race([t.done, new Promise(r => setTimeout(() => r(-1), "
                           f"{limit:.0f}))]) : null", timer)
        assert ms is None or ms >= 0, (f"step {step!r}: the new class image was not painted within "
                                       f"{limit / 1000:.0f} s; {screen(page)}")
        out.append(ms)
    return out


def _notebook(labels: str, info: str):
    import nbformat

    src = f"""
import faulthandler, json, os, signal
faulthandler.register(signal.SIGUSR1, file=open({info!r} + ".stacks", "w"), all_threads=True)
import tessera_explore as te
app = te.explore(te.tutorial.open_demo(), labels={labels!r}, classes={{"forest": "#1f6b2e", "cereal": "#e3c75a"}},
                 basemap=False)
with open({info!r}, "w") as f:
    json.dump({{"bounds": app.map_view.layers["false_colour"].bounds, "pid": os.getpid()}}, f)
app
"""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def _merc(lon, lat):
    return math.radians(lon), math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))


def _screen_xy(img_box, bounds, lon, lat):
    """Screen position of lon/lat, from where the false-colour overlay image (whose lat/lon
    ``bounds`` are known) sits on the page: Web Mercator is linear in screen space."""
    (s, w), (n, e) = bounds
    x0, y0 = _merc(w, s)
    x1, y1 = _merc(e, n)
    x, y = _merc(lon, lat)
    return (img_box["x"] + (x - x0) / (x1 - x0) * img_box["width"],
            img_box["y"] + (y1 - y) / (y1 - y0) * img_box["height"])


def _draw_vertex(page, x: float, y: float, n: int) -> None:
    """Click a vertex of the polygon being drawn with leaflet-draw, until the map shows ``n``
    vertex handles (0: the click closed the polygon).  leaflet-draw ignores a click within 50 ms
    of the last vertex; such a click changes nothing and is made again."""
    step = "draw a polygon" + (f" (vertex {n})" if n else " (closing it)")
    handles = "document.querySelectorAll('.te-map .leaflet-editing-icon').length"
    before = page.evaluate(handles)
    for _ in range(5):
        page.mouse.click(x, y)
        try:  # the handles change in the click's own event handler: a short wait says whether it counted
            wait_for(page, step, f"{handles} !== {before}", f"the vertex handles to change from {before}", timeout=2)
            break
        except AssertionError:
            continue
    wait_for(page, step, f"{handles} === {n}", f"{n} vertex handles on the map", timeout=10)


def _painted(page, step: str) -> None:
    """Wait until the page has painted twice more (after a resize) and the app is idle."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    wait_idle(page, step, "true", "the page to settle")


def _check_layout(page, step: str, shots: list) -> None:
    """At 1280 x 800 (JupyterLab's file browser closed) and 960 x 800 (about the width it
    leaves when open): every panel control shown whole, in view, and the map's status line;
    a screenshot of each."""
    for width, what in ((1280, "sidebar-closed"), (960, "sidebar-open")):
        page.set_viewport_size({"width": width, "height": 800})
        _painted(page, f"{step} at {width} px")
        problems = page.evaluate(LAYOUT_PROBLEMS)
        png = page.screenshot()
        os.makedirs(SCREENSHOTS, exist_ok=True)
        with open(os.path.join(SCREENSHOTS, f"{step}-{width}x800-{what}.png"), "wb") as f:
            f.write(png)
        shots.append((f"{step}-{width}", png))
        assert not problems, f"step {step!r} at {width} x 800 px: " + "; ".join(problems)
    page.set_viewport_size({"width": 1280, "height": 800})
    _painted(page, f"{step}: back at 1280 px")


def _text(page, css):
    return page.locator(css).first.inner_text()


def _red_centre(png: bytes):
    """(count, centre) of the red marker's pixels in a screenshot of the scatter."""
    import io

    from PIL import Image

    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    r = (a[..., 0] > 200) & (a[..., 1] < 60) & (a[..., 2] < 60)
    if not r.any():
        return 0, None
    yy, xx = np.nonzero(r)
    return int(r.sum()), (float(xx.mean()), float(yy.mean()))


def test_explorer_click_to_label_in_voila(voila, playwright_browser, tmp_path, demo_cache):
    many = _pure_points(demo_cache, n=7)
    points = {k: v[0] for k, v in many.items()}
    labels = tmp_path / "labels.geojson"
    info = tmp_path / "view.json"
    srv = voila({"explorer.ipynb": _notebook(str(labels), str(info))})
    page = playwright_browser.new_page(viewport={"width": 1280, "height": 800})  # a projector
    errors, requests = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    shots = []
    try:
        page.set_default_timeout(120_000 * scale())  # Playwright's own waits (a click waits for its target)
        # Voila runs the notebook, then the page renders the explorer: the false colour is on the map
        # and the first jobs (reading the labelling year into memory) have finished
        page.goto(f"{srv.url}/voila/render/explorer.ipynb", wait_until="commit")
        wait_idle(page, "open the explorer", "document.querySelector('.te-map img.leaflet-image-layer') !== null",
                  "the false-colour image on the map", timeout=300)
        view = json.loads(info.read_text())
        img = page.locator(".te-map img.leaflet-image-layer").first.bounding_box()
        (south, west), (north, east) = view["bounds"]
        tol = 2.5 * (east - west) / img["width"]  # two and a half screen pixels, in degrees
        n_layers0 = page.locator(".te-map .leaflet-image-layer").count()

        for k, name in enumerate(CLASS_POINTS, 1):
            _pick_class(page, f"label {name}", name)
            x, y = _screen_xy(img, view["bounds"], *points[name])
            _label_click(page, f"label {name}", x, y, k)

        # the classifier retrained by itself (the second label) and the class overlay appeared
        wait_for(page, "the class map after two labels",
                 f"document.querySelectorAll('.te-map .leaflet-image-layer').length > {n_layers0} && "
                 "document.querySelectorAll('.te-map .leaflet-overlay-pane path').length >= 4",
                 "a class image on the map and the two label markers")
        # the two label markers (a halo and a dot each), letting clicks through to the map
        assert page.locator(".te-map .leaflet-overlay-pane path").count() >= 4
        assert page.locator(".te-map .leaflet-overlay-pane path.leaflet-interactive").count() == 0
        assert _text(page, ".te-error").strip() == ""
        # status and notice lines wrap (none is cut off), and there is one attribution
        for css in (".te-status", ".te-notice", ".te-accuracy"):
            cut = page.evaluate(f"(() => {{ const e = document.querySelector('{css} .widget-html-content, "
                                f"{css} .jupyter-widget-html-content'); return e.scrollWidth > e.clientWidth + 1; }})()")
            assert not cut, f"{css} is cut off"
        assert page.locator(".te-map .leaflet-control-attribution").count() == 1
        shots.append(("explorer", page.screenshot(full_page=True)))
        _check_layout(page, "layout", shots)
        img = page.locator(".te-map img.leaflet-image-layer").first.bounding_box()  # where it is now

        # click -> new class image painted, on the two-tile demo (a figure, not an assertion)
        paint_ms = _timed_clicks(page, img, view["bounds"], many, 10, first=3)
        (tmp_path / "paint_ms.json").write_text(json.dumps(paint_ms))
        painted = [t for t in paint_ms if t is not None]
        print(f"\nclick -> class image painted in Chromium (ms): {[t if t is None else round(t) for t in paint_ms]}; "
              f"median {np.median(painted) if painted else float('nan'):.0f}")
        assert _text(page, ".te-error").strip() == ""

        # the label file on disk holds every point, the first two at the clicked places
        doc = json.loads(labels.read_text())
        feats = [f for f in doc["features"] if f["geometry"]["type"] == "Point"]
        assert len(feats) == 12 and {f["properties"]["class"] for f in feats} == set(CLASS_POINTS)
        for f in feats[:2]:
            lon, lat = f["geometry"]["coordinates"]
            want = points[f["properties"]["class"]]
            assert abs(lon - want[0]) < tol and abs(lat - want[1]) < tol, (f, want, tol)

        # in draw mode, a polygon drawn with the map's toolbar labels every pixel inside it
        _pick_class(page, "draw a polygon", "forest")
        page.locator(".te-mode button", has_text="draw").first.click()
        wait_for(page, "draw a polygon", "[...document.querySelectorAll('.te-mode button')].some("
                                         "b => b.textContent.trim() === 'draw' && b.classList.contains('mod-active'))",
                 "the mode button 'draw' to be active")
        page.locator(".leaflet-draw-draw-polygon").first.click()
        x, y = _screen_xy(img, view["bounds"], *points["forest"])
        ring = [(x - 30, y - 30), (x + 30, y - 30), (x + 30, y + 30), (x - 30, y + 30)]
        for k, (vx, vy) in enumerate(ring, 1):
            _draw_vertex(page, vx, vy, k)
        _draw_vertex(page, *ring[0], 0)  # clicking the first vertex again closes the polygon
        wait_idle(page, "draw a polygon", f"{total_labels(13)} && {status_has('polygon labelled', f'trained on {_n(13)}')}",
                  f"the label counts to add up to 13 and the status line to say 'polygon labelled' or "
                  f"'trained on {_n(13)}'")
        doc = json.loads(labels.read_text())
        polys = [f for f in doc["features"] if f["geometry"]["type"] == "Polygon"]
        assert len(polys) == 1 and polys[0]["properties"]["class"] == "forest"

        # the scatter is linked both ways: a map click marks the pixel in the scatter ...
        wait_for_element(page, "the linked scatter", ".te-scatter canvas", "the scatter's canvas")
        sc = page.locator(".te-scatter").first
        sc.scroll_into_view_if_needed()
        # the timed clicks marked their pixels; a click on the forest pixel moves the mark
        n0, c0 = poll("the linked scatter", lambda: (lambda r: r if r[0] > 20 else None)(_red_centre(sc.screenshot())),
                      "the red marker of the last clicked pixel in the scatter")
        n_layers = page.locator(".te-map .leaflet-image-layer").count()
        page.locator(".te-mode button", has_text="similar").first.click()
        wait_for(page, "similar mode", "[...document.querySelectorAll('.te-mode button')].some("
                                       "b => b.textContent.trim() === 'similar' && b.classList.contains('mod-active'))",
                 "the mode button 'similar' to be active")
        x, y = _screen_xy(img, view["bounds"], *points["forest"])
        page.mouse.click(x, y)
        # 'finding pixels similar to', then 'N pixels have cosine similarity >= ...'
        wait_idle(page, "similar mode", f"document.querySelectorAll('.te-map .leaflet-image-layer').length > "
                                        f"{n_layers} && {status_has('similar')}",
                  "the similarity image on the map and the status line to say 'similar'")

        def marker_moved():
            _, c = _red_centre(sc.screenshot())
            return c if c is not None and math.hypot(c[0] - c0[0], c[1] - c0[1]) >= 10 else None

        c1 = poll("the linked scatter", marker_moved,
                  f"the scatter's red marker to move at least 10 px from {c0} (to the clicked forest pixel)")

        # ... and a box drawn in the scatter highlights those pixels on the map
        n_layers = page.locator(".te-map .leaflet-image-layer").count()
        # a box around the marker: points of the forest cluster for sure
        sb = sc.bounding_box()
        mx, my = sb["x"] + c1[0], sb["y"] + c1[1]
        page.mouse.move(mx - 30, my - 30)
        page.mouse.down()
        page.mouse.move(mx + 30, my + 30, steps=12)
        page.mouse.up()
        wait_idle(page, "box select in the scatter",
                  f"document.querySelectorAll('.te-map .leaflet-image-layer').length > {n_layers} && "
                  f"{status_has('highlighted on the map')}",
                  "the selection image on the map and the status line to say 'highlighted on the map'")
        assert _text(page, ".te-error").strip() == ""
        # the drag scrolled the page's scroll container: back to the top, so the picture shows the map
        page.evaluate("document.querySelectorAll('*').forEach(e => { if (e.scrollTop) e.scrollTop = 0; }); "
                      "window.scrollTo(0, 0)")
        shots.append(("explorer-linked", page.screenshot(full_page=True)))
        # the whole app in one picture (the README's): a window as tall as the page's content
        tall = page.evaluate("Math.max(...[...document.querySelectorAll('*')].map(e => e.scrollHeight))")
        page.set_viewport_size({"width": 1280, "height": min(int(tall) + 40, 2400)})
        _painted(page, "the whole app in one picture")
        shots.append(("explorer-full", page.screenshot(full_page=True)))
        page.set_viewport_size({"width": 1280, "height": 800})
        assert not [e for e in errors if "tessera" in e.lower()], errors
        # explore() put BokehJS and Panel's JavaScript inline: no script from a CDN
        cdn_js = sorted({u for u in requests if ("cdn.bokeh.org" in u or "cdn.holoviz.org/panel" in u)
                         and u.split("?")[0].endswith(".js") and "es-module-shims" not in u})
        assert not cdn_js, cdn_js
    finally:
        try:  # for diagnosis when something timed out: the kernel's threads and the page
            pid = json.loads(info.read_text())["pid"]
            os.kill(pid, signal.SIGUSR1)
            stacks = f"{info}.stacks"
            poll("diagnosis", lambda: os.path.getsize(stacks) > 0, f"the kernel's stacks in {stacks}", timeout=5)
        except (OSError, ValueError, KeyError, AssertionError):
            pass
        try:
            (tmp_path / "last.png").write_bytes(page.screenshot(full_page=True))
            (tmp_path / "last-status.txt").write_text(_text(page, ".te-status") + "\n" + _text(page, ".te-error"))
        except Exception:  # the page may be gone; the screenshot is only for diagnosis
            pass
        for name, png in shots:
            (tmp_path / f"{name}.png").write_bytes(png)
        keep = os.environ.get("TESSERA_EXPLORE_SCREENSHOTS")
        if keep:
            os.makedirs(keep, exist_ok=True)
            for name, _ in shots:
                shutil.copy(tmp_path / f"{name}.png", os.path.join(keep, f"{name}.png"))
        page.close()
