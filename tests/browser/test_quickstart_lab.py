"""The README's first command in a real browser: JupyterLab runs the quickstart notebook
top to bottom on the demo scene (no network), and the explorer at its end appears with
its map and scatter, with BokehJS loaded inline (no script from a CDN) and no error."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.browser

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "..", "notebooks", "01_quickstart.ipynb")
CDN = ("cdn.bokeh.org", "cdn.holoviz.org/panel")


def test_quickstart_runs_in_jupyterlab(lab, playwright_browser, tmp_path):
    srv = lab([NOTEBOOK])
    page = playwright_browser.new_page(viewport={"width": 1500, "height": 1100})
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    try:
        page.goto(f"{srv.url}/lab/tree/01_quickstart.ipynb?reset", timeout=120_000)
        page.wait_for_function(
            "window.jupyterapp?.shell?.currentWidget?.context?.path === '01_quickstart.ipynb' && "
            "window.jupyterapp.shell.currentWidget.sessionContext?.session?.kernel?.status === 'idle'",
            timeout=120_000)
        page.evaluate("window.jupyterapp.shell.collapseLeft(); "
                      "window.jupyterapp.commands.execute('notebook:run-all-cells')")
        # the last code cell has run when the explorer's class layer is drawn
        page.wait_for_selector(".te-map img.leaflet-image-layer", timeout=240_000)
        page.wait_for_function(
            "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle' && "
            "[...document.querySelectorAll('.jp-Cell')].every(c => !c.querySelector('.jp-InputArea-prompt')"
            "  || !c.querySelector('.jp-InputArea-prompt').textContent.includes('[*]'))", timeout=240_000)
        errors = page.locator("[data-mime-type='application/vnd.jupyter.error']")
        assert errors.count() == 0, errors.first.inner_text()
        page.locator(".te-scatter canvas").first.wait_for(timeout=60_000)
        assert page.locator(".te-map img.leaflet-image-layer").count() >= 2  # false colour and classes
        assert page.locator(".te-error").first.inner_text().strip() == ""
        assert "trained" in page.locator(".te-status").first.inner_text()
        # BokehJS and Panel's JavaScript must be inline (offline they would fail and leave the
        # scatter empty); Panel's optional stylesheets and module shim may be asked for and fail
        cdn_js = sorted({u for u in requests if any(c in u for c in CDN) and u.split("?")[0].endswith(".js")
                         and "es-module-shims" not in u})
        assert not cdn_js, cdn_js
        (tmp_path / "quickstart-lab.png").write_bytes(page.screenshot(full_page=True))
    finally:
        page.close()
