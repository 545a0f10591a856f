"""Explore anywhere in a real browser: Voila serves a notebook that runs
``te.explore(<store URL>, center=, zoom=)`` on a small synthetic store (3 x 3 tiles across
the 6 E zone edge, with a depth-16 prefix) served over HTTP on 127.0.0.1 by the test
process; the system Chromium (driven by Playwright) waits for the false colour, labels two
classes by clicking the map, drags the map into the other UTM zone, waits for the false
colour and the class map of the new view, and drags back.

Every wait is on a signal of the app (``browser_waits.py``): the panel's idle class, the
status line, the follower's progress line on the map (``.te-follow-msg``: "view (w, s, e,
n) at depth D"), the map's image layers.  :data:`PAN_TIMER` times each pan (from the mouse
button's release) to the new images painted: ``benchmarks/bench_browser_pan.py`` uses it
on the demo store.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
from browser_waits import poll, scale, screen, status_has, total_labels, wait_for, wait_idle

pytestmark = pytest.mark.browser

TILES = [(lon, lat) for lon in (5.85, 5.95, 6.05) for lat in (52.05, 52.15, 52.25)]
YEAR = 2024
CENTER = (5.92, 52.15)  # zone 31; a 500 px drag at zoom 13 (0.086 deg) lands in zone 32
ZOOM = 13
DRAG = 500
CLASSES = {"water": "#1f77b4", "field": "#e3c75a"}

#: JavaScript: the follower's progress line on the map
FOLLOW_TEXT = "(document.querySelector('.te-map .te-follow-msg')?.innerText || '')"

#: JavaScript: install a recorder of the next pan on ``window.__tePan``: ``t0`` is the
#: moment the mouse button is released (the drag's end; a key press for a keyboard pan),
#: ``paints`` each map image layer whose picture changed after it: ``{ms, opacity, text}``,
#: ``ms`` from ``t0`` to the new image decoded and painted (two frames), ``text`` the
#: follower's progress line when the image changed; ``texts`` each change of that line.
PAN_TIMER = """() => {
  if (window.__tePan) window.__tePan.obs.disconnect();
  const map = document.querySelector('.te-map');
  const rec = window.__tePan = {t0: null, paints: [], texts: []};
  const mark = () => { if (rec.t0 === null) rec.t0 = performance.now(); };
  document.addEventListener('mouseup', mark, {capture: true, once: true});
  document.addEventListener('keydown', mark, {capture: true, once: true});
  const text = () => (map.querySelector('.te-follow-msg')?.innerText || '');
  let last = text();
  rec.obs = new MutationObserver(muts => {
    if (rec.t0 === null) return;
    const now = text();
    if (now !== last) { rec.texts.push({ms: performance.now() - rec.t0, text: now}); last = now; }
    for (const m of muts) {
      const img = m.type === 'attributes' ? m.target : [...m.addedNodes].find(n => n.tagName === 'IMG');
      if (!img || img.tagName !== 'IMG' || !img.classList.contains('leaflet-image-layer')) continue;
      const p = {ms: null, opacity: Number(img.style.opacity || 1), text: now};
      rec.paints.push(p);
      img.decode().catch(() => null).then(() => requestAnimationFrame(() => requestAnimationFrame(() => {
        p.ms = performance.now() - rec.t0; })));
    }
  });
  rec.obs.observe(map, {subtree: true, childList: true, characterData: true, attributes: true,
                        attributeFilter: ['src']});
}"""

#: JavaScript: the recorder's figures once painted: ``{first, full, classes, texts}`` (ms;
#: null where there was no such paint): ``first`` the first false-colour image, ``full`` the
#: first false-colour image shown with the follower saying the full depth (``arg``) is in,
#: ``classes`` the first class-map image (the layer drawn at the class opacity)
PAN_FIGURES = """([full, classOpacity]) => {
  const r = window.__tePan, fc = r.paints.filter(p => p.opacity === 1 && p.ms !== null);
  const at = t => t.includes(`at depth ${full}`) && !t.includes('loading');
  const cls = r.paints.filter(p => Math.abs(p.opacity - classOpacity) < 1e-6 && p.ms !== null);
  return {first: fc.length ? fc[0].ms : null, first_text: fc.length ? fc[0].text : null,
          full: (fc.find(p => at(p.text)) || {ms: null}).ms, classes: cls.length ? cls[0].ms : null,
          texts: r.texts.map(t => [Math.round(t.ms), t.text]), n: r.paints.length};
}"""


def follow_done(before: str, full: int = 128) -> str:
    """JavaScript: the follower shows a view other than the one its line named ``before``,
    at the full depth ``full``."""
    return (f"(t => t !== {json.dumps(before)} && t.includes('at depth {full}') && !t.includes('loading'))"
            f"({FOLLOW_TEXT})")


def drag(page, box: dict, dx: float, dy: float = 0.0) -> None:
    """Drag the map by (dx, dy) screen pixels across its centre, holding still before the
    release (no inertia: the map moves by exactly the drag)."""
    x, y = box["x"] + box["width"] / 2 - dx / 2, box["y"] + box["height"] / 2 - dy / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y + dy, steps=15)
    page.wait_for_timeout(120)  # Leaflet's inertia looks at the last 50 ms of the drag
    page.mouse.up()


def pan_figures(page, full: int = 128, class_opacity: float = 0.6, *, classes: bool = True) -> dict:
    """Wait until the recorder has the paints of the pan (the false colour at the full depth
    and, where ``classes``, the class map), then return :data:`PAN_FIGURES`."""
    done = ("(() => { const r = window.__tePan; const ok = p => p.ms !== null; "
            f"const at = t => t.includes('at depth {full}') && !t.includes('loading'); "
            "return r.paints.some(p => ok(p) && p.opacity === 1 && at(p.text))"
            + (f" && r.paints.some(p => ok(p) && Math.abs(p.opacity - {class_opacity}) < 1e-6)" if classes else "")
            + "; })()")
    wait_for(page, "the pan's paints", done, "the new view's false colour at the full depth"
             + (" and its class map" if classes else "") + " painted", timeout=120)
    return page.evaluate(PAN_FIGURES, [full, class_opacity])


def notebook(url: str, info: str, *, center, zoom, labels: str | None = None, map_size=("900px", "560px"),
             scatter: bool = False, year: int | None = None):
    """A notebook that opens the explorer following the map on the store at ``url``."""
    import nbformat

    src = f"""
import faulthandler, json, os, signal
faulthandler.register(signal.SIGUSR1, file=open({info!r} + ".stacks", "w"), all_threads=True)
import tessera_explore as te
app = te.explore({url!r}, center={tuple(center)!r}, zoom={zoom}, year={year!r}, labels={labels!r}, classes={CLASSES!r},
                 basemap=False, scatter={scatter!r}, map_size={tuple(map_size)!r})
with open({info!r}, "w") as f:
    json.dump({{"pid": os.getpid(), "view": app.view_bbox}}, f)
app
"""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


#: JavaScript, a function of ``[bbox, tol, full]``: the follower's line names the view
#: ``bbox`` (each bound within ``tol`` degrees) at the full depth ``full``
SHOWS_VIEW = """([bbox, tol, full]) => {
  const t = document.querySelector('.te-map .te-follow-msg')?.innerText || '';
  const m = t.match(/view \\(([^)]*)\\) at depth (\\d+)/);
  if (!m || Number(m[2]) !== full || t.includes('loading')) return false;
  const v = m[1].split(',').map(Number);
  return v.length === 4 && v.every((x, i) => Math.abs(x - bbox[i]) <= tol);
}"""


def view_bbox(text: str) -> list:
    """The bbox named by the follower's line ("view (w, s, e, n) at depth D")."""
    return [float(v) for v in text.split("view (")[1].split(")")[0].split(",")]


def open_explorer(page, srv, center, zoom, name: str = "anywhere.ipynb", *, full: int = 128) -> str:
    """Load the Voila page; wait for the false colour of the view the map shows in the page
    (the map's size there, at ``center`` and ``zoom``) at the full depth, with the app
    idle; return the follower's line.  (The kernel opens on the view of ``map_size``; the
    page's map is narrower or wider, and the follower loads its real view once the browser
    reports its bounds.)"""
    from tessera_explore.widgets.anywhere import view_bbox_at

    failed = ("[...document.querySelectorAll('.jp-OutputArea-output, .voila-error')]"
              ".map(e => e.innerText).filter(t => /Error|Traceback/.test(t)).join('\\n')")
    page.goto(f"{srv.url}/voila/render/{name}", wait_until="commit")
    wait_for(page, "open the explorer", f"document.querySelector('.te-map img.leaflet-image-layer') !== null || "
                                        f"{failed} !== ''", "the false-colour image on the map", timeout=300)
    err = page.evaluate(failed)
    assert not err, f"the notebook failed: {err[-2000:]}"
    box = page.locator(".te-map").first.bounding_box()
    want = view_bbox_at(center, zoom, (round(box["width"]), round(box["height"])))
    tol = 4 * 360 / (256 * 2 ** zoom)  # four screen pixels, in degrees
    wait_for(page, "open the explorer", SHOWS_VIEW, f"the follower to show the map's view {want} at depth {full}",
             timeout=120, arg=[list(want), tol, full])
    wait_idle(page, "open the explorer", "true", "the first view shown")
    return page.evaluate(FOLLOW_TEXT)


@pytest.fixture(scope="module")
def edge_store(tmp_path_factory):
    from tessera_explore.testing.store import make_store

    root = tmp_path_factory.mktemp("edge-browser")
    make_store(root / "e.zarr", tiles=TILES, years=[YEAR], shape=(40, 40), seed=11, depths=(16,), shard=64,
               chunk=16)
    return root


def _n(k: int) -> str:
    return f"{k} label{'' if k == 1 else 's'}"


def _pick_class(page, step: str, name: str) -> None:
    page.locator(".te-classes button", has_text=name).first.click()
    wait_for(page, step, f"[...document.querySelectorAll('.te-classes button')].some("
                         f"b => b.textContent.trim() === {json.dumps(name)} && b.classList.contains('mod-active'))",
             f"the class button {name!r} to be active")


def label_click(page, k: int, x: float, y: float, *, timeout: float = 60) -> None:
    """Click the map at (x, y) to add the ``k``-th label, and wait until the app has it and
    is idle; where the pixel has no data (the app says so), try 12 px further right, up to
    five times."""
    n = f"{k} label{'' if k == 1 else 's'}"
    got = f"{total_labels(k)} && {status_has(f'({n})', f'trained on {n}')}"
    for i in range(5):
        page.evaluate("document.querySelector('.te-status').dataset.teSeen = "
                      "document.querySelector('.te-status').innerText")
        page.mouse.click(x + 12 * i, y)
        wait_idle(page, f"label {k}", f"({got}) || ({status_has('no data at')} && document.querySelector("
                                      "'.te-status').innerText !== document.querySelector('.te-status').dataset.teSeen)",
                  f"the label counts to add up to {k} and the status line to say so (or 'no data')", timeout=timeout)
        if page.evaluate(got):
            return
    raise AssertionError(f"label {k}: five clicks from ({x:.0f}, {y:.0f}) found no pixel with data; {screen(page)}")


def _images(page) -> list:
    return page.evaluate("[...document.querySelectorAll('.te-map img.leaflet-image-layer')]"
                         ".map(i => [i.src, Number(i.style.opacity || 1)])")


def test_pan_loads_the_new_view_in_voila(voila, playwright_browser, edge_store, tmp_path):
    from tessera_explore.testing.server import serve_folder

    info = tmp_path / "view.json"
    with serve_folder(edge_store) as store_srv:
        url = store_srv.url + "/e.zarr"
        srv = voila({"anywhere.ipynb": notebook(url, str(info), center=CENTER, zoom=ZOOM,
                                                labels=str(tmp_path / "labels.geojson"))})
        page = playwright_browser.new_page(viewport={"width": 1280, "height": 800})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.set_default_timeout(120_000 * scale())
            text_a = open_explorer(page, srv, CENTER, ZOOM)
            assert "view (" in text_a, text_a
            box = page.locator(".te-map").first.bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

            # two classes, three labels each, left and right of the map's centre (all data)
            k = 0
            for name, sx in (("water", -1), ("field", 1)):
                _pick_class(page, f"label {name}", name)
                for dy in (-60, 0, 60):
                    k += 1
                    label_click(page, k, cx + sx * (80 + 20 * k), cy + dy)
            wait_for(page, "the class map of view A",
                     "[...document.querySelectorAll('.te-map img.leaflet-image-layer')]"
                     ".some(i => Math.abs(Number(i.style.opacity || 1) - 0.6) < 1e-6)",
                     "a class-map image on the map")
            before = {src for src, _ in _images(page)}

            # drag the map 500 px west: the view moves into zone 32
            page.evaluate(PAN_TIMER)
            drag(page, box, -DRAG)
            figs = pan_figures(page)
            wait_idle(page, "pan to B", follow_done(text_a), "the follower to show view B at depth 128")
            text_b = page.evaluate(FOLLOW_TEXT)
            wa, wb = view_bbox(text_a), view_bbox(text_b)
            shift = DRAG * 360 / (256 * 2 ** ZOOM)  # degrees of longitude the drag moved
            assert abs((wb[0] - wa[0]) - shift) < 0.002 and abs(wb[1] - wa[1]) < 0.002, (text_a, text_b)
            assert (wb[0] + wb[2]) / 2 > 6.0  # zone 32
            # a depth-16 preview first (the store has the prefix), then the full depth
            assert figs["first_text"] and "depth 16" in figs["first_text"], figs
            assert figs["first"] <= figs["full"] and figs["classes"] is not None, figs
            imgs = _images(page)
            new = [op for src, op in imgs if src not in before]
            assert any(op == 1 for op in new) and any(abs(op - 0.6) < 1e-6 for op in new), (imgs, before)
            assert page.locator(".te-error").first.inner_text().strip() == ""
            print(f"\npan -> painted (ms): false colour {figs['first']:.0f} (depth 16), full depth "
                  f"{figs['full']:.0f}, class map {figs['classes']:.0f}")

            # drag back: view A again, from memory
            page.evaluate(PAN_TIMER)
            drag(page, box, DRAG)
            back = pan_figures(page)
            wait_idle(page, "pan back to A", follow_done(text_b), "the follower to show view A again")
            assert page.evaluate(FOLLOW_TEXT) == text_a
            assert back["classes"] is not None, back
            assert not [e for e in errors if "tessera" in e.lower()], errors
            print(f"pan back -> painted (ms): false colour {back['first']:.0f}, class map {back['classes']:.0f}")
        finally:
            try:  # for diagnosis when something timed out: the kernel's threads and the page
                os.kill(json.loads(info.read_text())["pid"], signal.SIGUSR1)
                poll("diagnosis", lambda: os.path.getsize(f"{info}.stacks") > 0, "the kernel's stacks", timeout=5)
            except (OSError, ValueError, KeyError, AssertionError):
                pass
            try:
                (tmp_path / "last.png").write_bytes(page.screenshot(full_page=True))
                (tmp_path / "last-screen.txt").write_text(screen(page))
            except Exception:  # the page may be gone; only for diagnosis
                pass
            page.close()
