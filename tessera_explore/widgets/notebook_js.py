"""BokehJS and Panel's JavaScript for a notebook, run in the page but not stored in it.

The projection scatter (HoloViews + Panel through jupyter_bokeh) needs BokehJS and
Panel's JavaScript in the page.  ``hv.extension("bokeh", inline=True)`` puts them in
the cell's output inline (no CDN: works offline, on Binder, in Voila), but that output
is then saved with the notebook: about 4 MB, twice (HoloViews publishes it under two
mime types), so a quickstart saved after Run All weighed 8 MB.

:func:`load_bokeh_js` shows the same inline JavaScript as a display with an id and, at
once, replaces that display with a stub of a few dozen bytes (``update_display``).  The
front end runs a script when the output is added (JupyterLab, Notebook 7, the classic
notebook, VS Code); the replacement only swaps what the output holds, so BokehJS stays
loaded in the page while the saved notebook (and one executed by nbclient/nbmake)
holds the stub.  Voila renders a cell's outputs after the cell has run (the stub would
be all it sent to the browser) and never saves the notebook: there the JavaScript stays
in the output.  See docs/design/explorer.md, "Notebooks stay small".
"""

from __future__ import annotations

import os
import sys
import uuid

__all__ = ["load_bokeh_js", "STUB"]

#: mime types whose outputs carry the loading JavaScript (HoloViews/Panel publish both)
_JS_MIMES = ("application/javascript", "application/vnd.holoviews_load.v0+json")

#: what a loading output holds once the JavaScript has run: all a saved notebook keeps
STUB = {"text/html": "<!-- BokehJS and Panel JS ran here (te.load_bokeh_js); not stored -->"}

_LOADED = False


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


def _in_voila() -> bool:
    """Whether this kernel was started by Voila (it names itself in the kernel's CGI-style
    environment, as a web server does)."""
    return os.environ.get("SERVER_SOFTWARE", "").startswith("voila/")


def _loaded_already() -> bool:
    """Whether BokehJS went into this kernel's notebook already, by this module,
    ``hv.extension`` or ``pn.extension`` (checked without importing anything new)."""
    if _LOADED:
        return True
    hv_ipython = sys.modules.get("holoviews.ipython")
    if hv_ipython is not None and getattr(hv_ipython.notebook_extension, "_loaded", False):
        return True
    pn = sys.modules.get("panel")
    ext = getattr(pn, "extension", None) if pn is not None else None
    return bool(getattr(ext, "_loaded", False))


def load_bokeh_js(*, once: bool = False, save: bool = False) -> None:
    """Load BokehJS and Panel's JavaScript into the notebook's page from the installed
    packages (no CDN: offline, Binder, Voila), without storing them in the notebook.

    Call it before anything imports ``hvplot`` (hvplot's import loads them from the CDN
    otherwise).  The cell's output keeps only :data:`STUB` once the JavaScript has run,
    so a notebook saved (or autosaved) after Run All stays small.  Running the cell again
    loads the JavaScript again (after the browser page was reloaded, say).

    ``once=True`` does nothing when BokehJS went into this kernel's notebook already
    (by this function, ``hv.extension`` or ``pn.extension``): what :func:`explore` wants.
    ``save=True`` keeps the JavaScript in the output (about 8 MB in the saved notebook),
    for a notebook meant to draw Bokeh figures without a kernel.  Outside a Jupyter kernel
    this does nothing.
    """
    global _LOADED
    if not _in_kernel() or (once and _loaded_already()):
        return
    import holoviews as hv

    if save or _in_voila():
        hv.extension("bokeh", inline=True, logo=False)
        _LOADED = True
        return
    from IPython.display import publish_display_data
    from IPython.utils.capture import capture_output

    with capture_output(stdout=False, stderr=False, display=True) as captured:
        hv.extension("bokeh", inline=True, logo=False)
    shown = []
    for out in captured.outputs:
        if not any(m in out.data for m in _JS_MIMES):  # Panel's stylesheet: small, and needed
            publish_display_data(out.data, out.metadata, transient=out.transient or None)
            continue
        display_id = f"te-bokehjs-{uuid.uuid4().hex}"
        publish_display_data(out.data, out.metadata, transient={**(out.transient or {}), "display_id": display_id})
        shown.append(display_id)
    for display_id in shown:  # the front end ran each script as its output arrived
        publish_display_data(STUB, transient={"display_id": display_id}, update=True)
    _LOADED = True
