"""Notebooks stay small when saved: ``te.load_bokeh_js`` runs BokehJS in the page but leaves
only a stub in the notebook, and the ``notebook_size`` plugin fails any notebook nbmake
executes that would be saved at 500 kB or more, or with a library of JavaScript inline."""

from __future__ import annotations

import os
import pathlib
import sys

import nbformat
import pytest

pytest_plugins = ["notebook_size", "pytester"]  # imported as a plugin (assertions rewritten), then used below

TESTS = pathlib.Path(__file__).resolve().parent


def _nb(*sources: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def _with_output(data: dict) -> nbformat.NotebookNode:
    nb = _nb("x")
    nb.cells[0].outputs = [nbformat.v4.new_output("display_data", data=data)]
    return nb


def test_size_problems_name_what_is_too_large():
    from notebook_size import MAX_NOTEBOOK_BYTES, output_sizes, size_problems

    assert size_problems(_with_output({"text/plain": "small"})) == []
    big_js = "var a = 1;\n" * 20_000  # 220 kB of JavaScript in one output
    problems = size_problems(_with_output({"application/javascript": big_js}))
    assert len(problems) == 1 and "JavaScript" in problems[0] and "cell 0" in problems[0]
    html = "<script>" + big_js + "</script>"
    assert size_problems(_with_output({"text/html": html}))
    png = "A" * (MAX_NOTEBOOK_BYTES + 1000)  # a figure too large for the notebook (base64)
    problems = size_problems(_with_output({"image/png": png}))
    assert len(problems) == 1 and "limit 500 kB" in problems[0] and "image/png" in problems[0]
    sizes = output_sizes(_with_output({"image/png": png, "text/plain": "<Figure>"}))
    assert sizes[0][2] == "image/png" and sizes[0][3] > sizes[1][3]


@pytest.mark.slow
def test_nbmake_fails_a_notebook_that_would_be_saved_too_large(pytester, monkeypatch):
    """The plugin checks the notebook nbmake executed (no second run): a small one passes,
    one whose output is 600 kB fails with its size and its largest output named."""
    small = _nb("print('hello')")
    large = _nb("from IPython.display import display\ndisplay({'text/plain': 'x' * 600_000}, raw=True)")
    nbformat.write(small, pytester.path / "small.ipynb")
    nbformat.write(large, pytester.path / "large.ipynb")
    pytester.makeini("[pytest]\n")  # not the project's settings (its testpaths)
    env = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", env)
    result = pytester.runpytest_subprocess("-p", "notebook_size", "--nbmake", "small.ipynb", "large.ipynb",
                                           "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    text = result.stdout.str()
    assert "large.ipynb is too large to save" in text and "cell 0 text/plain 600 kB" in text


@pytest.mark.slow
def test_load_bokeh_js_runs_the_script_but_keeps_a_stub(tmp_path):
    """In a kernel: the loading outputs end as the stub (what nbclient and JupyterLab save);
    hvplot then imports without a CDN load of its own; in Voila the JavaScript stays in the
    output (Voila sends a cell's outputs once it has run, and never saves); once=True does
    nothing when BokehJS is loaded already."""
    from nbclient import NotebookClient
    from notebook_size import output_sizes, size_problems

    from tessera_explore.widgets.notebook_js import STUB

    nb = _nb("import tessera_explore as te\nte.load_bokeh_js()\nimport holoviews as hv\nhv.extension._loaded",
             "te.load_bokeh_js(once=True)",
             "import os\nos.environ['SERVER_SOFTWARE'] = 'voila/0.5.13'\nte.load_bokeh_js()")
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    first, again, voila = (c.outputs for c in nb.cells)
    stubs = [o for o in first if o.get("data") == STUB]
    assert len(stubs) == 2  # BokehJS + Panel, and the comm manager: both replaced
    assert first[-1]["data"]["text/plain"] == "True"  # HoloViews knows it is loaded
    assert size_problems(nbformat.from_dict({**nb, "cells": [nb.cells[0]]})) == []
    assert max(b for *_, b in output_sizes(nbformat.from_dict({**nb, "cells": [nb.cells[0]]}))) < 20_000
    assert again == []
    inline = [o for o in voila if "application/javascript" in o.get("data", {})]
    assert inline and max(len(o["data"]["application/javascript"]) for o in inline) > 1_000_000


def test_load_bokeh_js_outside_a_kernel_does_nothing():
    import tessera_explore as te
    from tessera_explore.widgets import notebook_js

    assert te.load_bokeh_js is notebook_js.load_bokeh_js
    before = set(sys.modules)
    assert te.load_bokeh_js() is None
    assert "holoviews" in before or "holoviews" not in sys.modules  # nothing heavy imported
