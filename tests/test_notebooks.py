"""The tutorial notebooks: each .ipynb (outputs stripped, executed in CI by nbmake) is
paired with a jupytext percent-format .py holding the same cells (notebooks/jupytext.toml),
BokehJS is loaded by ``te.load_bokeh_js()`` before hvplot (offline, and not kept in the saved
notebook), and the live-embedding notebook passes where the local STAC servers cannot run.
Running every notebook is ``pytest --nbmake notebooks``; this module requires the
``notebook_size`` plugin, so each notebook nbmake runs after it in the same session (as
``make test`` runs them) must also stay under 500 kB once executed."""

from __future__ import annotations

import pathlib

import nbformat
import pytest

pytest_plugins = ["notebook_size"]  # tests/notebook_size.py: checks every notebook nbmake executes

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
NAMES = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
WORKSHOP = ROOT / "workshop"
WORKSHOP_NAMES = sorted(p.name for p in WORKSHOP.glob("*.ipynb"))
# every notebook pair, as (folder, name): the tutorials and the workshop
PAIRS = [(NOTEBOOKS, n) for n in NAMES] + [(WORKSHOP, n) for n in WORKSHOP_NAMES]


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


@pytest.fixture(scope="module")
def notebooks() -> dict[str, nbformat.NotebookNode]:
    return {name: nbformat.read(NOTEBOOKS / name, as_version=4) for name in NAMES}


@pytest.fixture(scope="module")
def all_notebooks() -> dict[str, nbformat.NotebookNode]:
    """The tutorials and the workshop notebooks, keyed by their path relative to the root."""
    return {f"{folder.name}/{name}": nbformat.read(folder / name, as_version=4) for folder, name in PAIRS}


def test_every_notebook_has_its_py_pair():
    assert {"01_quickstart.ipynb", "02_projections.ipynb", "03_labelling_and_evaluation.ipynb", "04_real_data.ipynb",
            "05_live_encoder.ipynb", "06_scale_out.ipynb"} <= set(NAMES)
    pairs = sorted(p.name for p in NOTEBOOKS.glob("*.py"))
    assert pairs == [n.replace(".ipynb", ".py") for n in NAMES]
    config = (NOTEBOOKS / "jupytext.toml").read_text()
    assert 'formats = "ipynb,py:percent"' in config


def test_every_workshop_notebook_has_its_py_pair():
    assert WORKSHOP_NAMES == ["exercises.ipynb", "solutions.ipynb"]
    pairs = sorted(p.name for p in WORKSHOP.glob("*.py"))
    assert pairs == [n.replace(".ipynb", ".py") for n in WORKSHOP_NAMES]
    assert 'formats = "ipynb,py:percent"' in (WORKSHOP / "jupytext.toml").read_text()
    assert (WORKSHOP / "TEACHER.md").is_file()


@pytest.mark.parametrize("folder,name", PAIRS, ids=[f"{f.name}/{n}" for f, n in PAIRS])
def test_ipynb_and_py_hold_the_same_cells(folder, name, all_notebooks):
    jupytext = pytest.importorskip("jupytext")
    nb = all_notebooks[f"{folder.name}/{name}"]
    py = folder / name.replace(".ipynb", ".py")
    assert py.read_text().count("# %%") >= len(nb.cells)  # percent format, one marker a cell
    paired = jupytext.read(py)
    assert _cells(paired) == _cells(nb), (
        f"{name} and {py.name} differ; run `jupytext --sync {folder.name}/{py.name}` (or save the notebook "
        "in JupyterLab with jupytext installed) and commit both")


def test_a_pair_out_of_sync_is_caught(notebooks):
    """The comparison above sees a one-line edit made to the .py alone."""
    jupytext = pytest.importorskip("jupytext")
    name = NAMES[0]
    text = (NOTEBOOKS / name.replace(".ipynb", ".py")).read_text()
    edited = text.replace("da = te.tutorial.open_demo()", "da = te.tutorial.open_demo(year=2023)", 1)
    assert edited != text
    assert _cells(jupytext.reads(text, fmt="py:percent")) == _cells(notebooks[name])
    assert _cells(jupytext.reads(edited, fmt="py:percent")) != _cells(notebooks[name])


def test_committed_notebooks_have_no_outputs(all_notebooks):
    for name, nb in all_notebooks.items():
        nbformat.validate(nb)
        assert nb.metadata["kernelspec"]["name"] == "python3", name
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{name} {cell.id} has outputs"


def test_notebooks_follow_the_skeleton(all_notebooks):
    for name, nb in all_notebooks.items():
        text = [c.source for c in nb.cells if c.cell_type == "markdown"]
        assert text[0].startswith("# ") and "## Overview" in text[0] and "## Prerequisites" in text[0], name
        assert any(t.startswith("## Imports") for t in text), name
        assert any("## Summary" in t for t in text), name


def test_bokeh_is_loaded_before_any_hvplot_import(all_notebooks):
    """The first code cell loads BokehJS with te.load_bokeh_js (from the installed packages,
    not kept in the saved notebook) before anything imports hvplot or panel; no notebook
    puts BokehJS inline with hv.extension (it would be saved with the outputs: 8 MB)."""
    checked = 0
    for name, nb in all_notebooks.items():
        code = [c.source for c in nb.cells if c.cell_type == "code"]
        assert not any("inline=True" in s for s in code), f"{name}: BokehJS inline would be saved with the notebook"
        uses_holoviz = any("hvplot" in s or "te.scatter" in s or "pn.ipywidget" in s for s in code)
        if not uses_holoviz:
            continue
        checked += 1
        first = code[0]
        call = "te.load_bokeh_js()"
        assert call in first, f"{name}: the first code cell must call {call}"
        before = first.split(call)[0]
        assert "hvplot" not in before and "panel" not in before and "holoviews" not in before, name
    assert checked >= 2  # the quickstart and the projections notebook draw a projection scatter


def test_the_size_check_runs_on_every_executed_notebook(pytestconfig):
    assert pytestconfig.pluginmanager.has_plugin("notebook-size")


def test_the_workshop_solutions_fill_every_blank_of_the_exercises(all_notebooks):
    """The exercises hold blanks (`...`) where the solutions hold code, under the same headings;
    the solutions run in the test suite (the Makefile copies workshop/solutions.ipynb), the
    exercises are not run."""
    exercises, solutions = all_notebooks["workshop/exercises.ipynb"], all_notebooks["workshop/solutions.ipynb"]

    def heads(nb):
        return [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## ")]

    assert heads(exercises) == heads(solutions)
    blanks = [c.source for c in exercises.cells if c.cell_type == "code" and "..." in c.source]
    assert len(blanks) >= 7
    assert not any("..." in c.source for c in solutions.cells if c.cell_type == "code")
    makefile = (ROOT / "Makefile").read_text()
    assert "workshop/solutions.ipynb" in makefile and "workshop/exercises.ipynb" not in makefile


def test_quickstart_opens_the_explorer(notebooks):
    cells = notebooks["01_quickstart.ipynb"].cells
    heads = [c.source.splitlines()[0] for c in cells if c.cell_type == "markdown" and c.source.strip()]
    assert "## The explorer" in heads
    src = "\n".join(c.source for c in cells if c.cell_type == "code")
    assert "app = te.explore(da" in src and "app.click(" in src and "# app" not in src


def test_live_notebook_skips_cleanly_without_servers():
    """Where PostgreSQL (or the STAC packages) are missing, the notebook says so and passes."""
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / "05_live_encoder.ipynb", as_version=4)
    patch = nbformat.v4.new_code_cell(
        "import tessera_explore.testing.stac_server as _s\n"
        "_s.unavailable_reason = lambda: 'PostgreSQL is not installed (simulated by the test)'"
    )
    nb.cells.insert(0, patch)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "SKIPPED" in text and "simulated by the test" in text
    assert "started in" not in text and "servers stopped" not in text
