"""The README's first command in a real browser: JupyterLab runs the quickstart notebook
top to bottom on the demo scene (no network), and the explorer at its end appears with
its map and scatter, with BokehJS loaded from the installed packages (no script from a CDN)
and no error; saved after Run All, the notebook holds no copy of BokehJS and stays under
500 kB (te.load_bokeh_js leaves a stub in place of the JavaScript once it has run).

Also measured here and printed (figures for benchmarks/RESULTS.md, not assertions except
where the issue sets a limit): seconds from Run All to the first map, peak resident
memory of the kernel, and the size of the notebook saved after Run All.  Every file the
quickstart writes must be one the repository's .gitignore ignores.

Every wait is on a signal of JupyterLab or of the app (browser_waits.py), none on a fixed
time; a wait that times out names its step, what it awaited and what the app showed.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from browser_waits import LAYOUT_PROBLEMS, SCREENSHOTS, poll, scale, status_has, wait_for, wait_for_element, wait_idle

pytestmark = pytest.mark.browser

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "..", "notebooks", "01_quickstart.ipynb")
CDN = ("cdn.bokeh.org", "cdn.holoviz.org/panel")
MAX_SAVED_BYTES = 500_000  # the limit for a notebook saved after Run All


def test_quickstart_runs_in_jupyterlab(lab, playwright_browser, tmp_path, demo_cache):
    import tessera_explore as te

    te.tutorial.open_demo()  # the demo's cache built, as Binder's postBuild leaves it
    srv = lab([NOTEBOOK])
    page = playwright_browser.new_page(viewport={"width": 1500, "height": 1100})
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    before = set(os.listdir(srv.root))
    try:
        page.set_default_timeout(120_000 * scale())  # Playwright's own waits
        page.goto(f"{srv.url}/lab/tree/01_quickstart.ipynb?reset", wait_until="commit")
        wait_for(page, "open the quickstart in JupyterLab",
                 "window.jupyterapp?.shell?.currentWidget?.context?.path === '01_quickstart.ipynb' && "
                 "window.jupyterapp.shell.currentWidget.sessionContext?.session?.kernel?.status === 'idle'",
                 "the notebook open with its kernel idle", timeout=240)
        t0 = time.monotonic()
        # not awaited (the command's promise resolves when every cell has run)
        page.evaluate("window.jupyterapp.shell.collapseLeft(); "
                      "void window.jupyterapp.commands.execute('notebook:run-all-cells')")
        wait_for(page, "run all: the first map", "document.querySelector('.leaflet-container img.leaflet-image-layer')"
                 " !== null", "an image layer on the notebook's first map", timeout=240)
        first_map = time.monotonic() - t0
        wait_for(page, "run all: the explorer", "document.querySelector('.te-map img.leaflet-image-layer') !== null",
                 "the explorer's false-colour image on its map", timeout=240)
        explorer_map = time.monotonic() - t0
        # the kernel has run every cell (no '[*]' prompt left) or stopped at an error
        error_output = "document.querySelector(\"[data-mime-type='application/vnd.jupyter.error']\") !== null"
        wait_for(page, "run all: every cell",
                 "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle' && "
                 "([...document.querySelectorAll('.jp-Cell')].every(c => !c.querySelector('.jp-InputArea-prompt')"
                 f"  || !c.querySelector('.jp-InputArea-prompt').textContent.includes('[*]')) || {error_output})",
                 "the kernel idle with every cell run", timeout=480)
        errors = page.locator("[data-mime-type='application/vnd.jupyter.error']")
        assert errors.count() == 0, errors.first.inner_text()
        # the notebook's labels trained the classifier (app.wait() in the notebook) and the app is idle
        wait_idle(page, "run all: the explorer trained", status_has("trained"),
                  "the explorer's status line to say 'trained'")
        wait_for_element(page, "run all: the scatter", ".te-scatter canvas", "the scatter's canvas")
        assert page.locator(".te-map img.leaflet-image-layer").count() >= 2  # false colour and classes
        assert page.locator(".te-error").first.inner_text().strip() == ""
        # the notebook's own scatter (pn.ipywidget) drew too: BokehJS ran although its output
        # was replaced by a stub
        poll("run all: the notebook's scatter", lambda: page.locator(".bk-Canvas").count() >= 2,
             "two Bokeh canvases (the notebook's scatter and the explorer's)", timeout=60)
        # BokehJS and Panel's JavaScript must come from the page, not a CDN (offline it would fail
        # and leave the scatter empty); Panel's optional stylesheets and module shim may be asked
        # for and fail
        cdn_js = sorted({u for u in requests if any(c in u for c in CDN) and u.split("?")[0].endswith(".js")
                         and "es-module-shims" not in u})
        assert not cdn_js, cdn_js
        (tmp_path / "quickstart-lab.png").write_bytes(page.screenshot(full_page=True))
        _check_layout_in_lab(page)
        peak = _kernel_peak_mib(srv.proc.pid)
        # saved after Run All, the notebook stays small: no copy of BokehJS (te.load_bokeh_js
        # left a stub), figures as JPEG, no widget state (JupyterLab's default).
        # The command's promise resolves once the server has written the file; then the
        # document is clean and the file on disk holds the outputs.
        path = os.path.join(srv.root, "01_quickstart.ipynb")
        page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
        wait_for(page, "save the notebook", "window.jupyterapp.shell.currentWidget.context.model.dirty === false",
                 "the notebook saved (its document no longer dirty)")
        poll("save the notebook", lambda: os.path.getsize(path) != os.path.getsize(NOTEBOOK),
             f"{path} to differ in size from the committed notebook (outputs written)", timeout=30)
        size_bytes = os.path.getsize(path)
        size = size_bytes / 2**20
        with open(path) as f:
            saved = f.read()
        figures = {"first_map_s": round(first_map, 1), "explorer_map_s": round(explorer_map, 1),
                   "kernel_peak_mib": peak, "saved_notebook_mib": round(size, 2),
                   "bokehjs_loads": _bokehjs_loads(saved)}
        (tmp_path / "figures.json").write_text(json.dumps(figures))
        print("\nquickstart in JupyterLab:", figures)
        assert figures["bokehjs_loads"] == 0 and size_bytes < MAX_SAVED_BYTES, figures
        assert "te.load_bokeh_js" in saved  # the stub the loading outputs left
        # target 1.2 GiB (Binder gives about 2 GB); measured 1,083 MiB with two malloc arenas
        # as make lab and Binder start the kernel; this guards a regression (benchmarks/RESULTS.md)
        assert peak is None or peak < 1.5 * 1024, figures
        # every file the quickstart wrote is one git ignores
        new = sorted(set(os.listdir(srv.root)) - before - {".jupyter", ".runtime", "lab.log",
                                                         ".ipynb_checkpoints", "figures.json",
                                                         "quickstart-lab.png"})  # (this test's own)
        repo = os.path.dirname(os.path.dirname(NOTEBOOK))
        for name in new:
            probe = os.path.join("notebooks", name)
            ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", probe], cwd=repo).returncode == 0
            assert ignored, f"the quickstart wrote {name}, which git does not ignore"
    finally:
        page.close()


def _check_layout_in_lab(page) -> None:
    """The explorer at 1280 x 800 with JupyterLab's file browser open, then closed: every
    panel control shown whole and in view, and the map's status line (LAYOUT_PROBLEMS);
    a screenshot of each in tests/browser/screenshots/."""
    page.set_viewport_size({"width": 1280, "height": 800})
    os.makedirs(SCREENSHOTS, exist_ok=True)
    for sidebar in ("open", "closed"):
        step = f"the explorer at 1280 x 800, file browser {sidebar}"
        if sidebar == "open":
            page.evaluate("window.jupyterapp.commands.execute('filebrowser:activate')")
            wait_for(page, step, "!window.jupyterapp.shell.leftCollapsed", "the left sidebar open")
        else:
            page.evaluate("window.jupyterapp.shell.collapseLeft()")
            wait_for(page, step, "window.jupyterapp.shell.leftCollapsed", "the left sidebar closed")
        page.locator(".te-map").first.scroll_into_view_if_needed()
        # two frames after the resize, then the layout as measured
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        problems = page.evaluate(LAYOUT_PROBLEMS)
        page.screenshot(path=os.path.join(SCREENSHOTS, f"lab-1280x800-sidebar-{sidebar}.png"))
        assert not problems, f"step {step!r}: " + "; ".join(problems)


def _kernel_peak_mib(server_pid: int):
    """Peak resident memory (VmHWM, MiB) of the kernel started by the server, or None."""
    import psutil

    for child in psutil.Process(server_pid).children(recursive=True):
        if "ipykernel" in " ".join(child.cmdline()):
            with open(f"/proc/{child.pid}/status") as f:
                hwm = next(line for line in f if line.startswith("VmHWM"))
            return round(int(hwm.split()[1]) / 1024)
    return None


def _bokehjs_loads(saved: str) -> int:
    """Code cells of a saved notebook whose outputs hold BokehJS inline (HoloViews puts
    each load in two mime types of one output, so copies are counted per cell)."""
    probe = _bokehjs_probe()
    cells = json.loads(saved)["cells"]
    return sum(probe in json.dumps(c.get("outputs", [])) for c in cells if c["cell_type"] == "code")


def _bokehjs_probe() -> str:
    """60 characters from the middle of bokeh.min.js that JSON leaves as they are: counted in
    a saved notebook, they say how many inline copies of BokehJS it holds."""
    import re

    import bokeh

    path = os.path.join(os.path.dirname(bokeh.__file__), "server", "static", "js", "bokeh.min.js")
    with open(path, encoding="utf-8") as f:
        js = f.read()
    m = re.compile(r"[A-Za-z0-9_.(),=:;{} ]{60}").search(js, len(js) // 2)
    return m.group(0)
