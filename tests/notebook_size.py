"""Each notebook nbmake executes stays small once saved: a check on the executed notebook.

A pytest plugin (required by ``tests/test_notebooks.py``, so ``make test`` has it for the
notebooks it runs after ``tests``; for a notebook run on its own:
``PYTHONPATH=tests pytest -p notebook_size --nbmake notebooks/...``).  It wraps every
nbmake item, keeps the notebook nbmake executed (nothing is executed twice) and fails
the item when that notebook, serialised as JupyterLab saves it (without widget state), weighs
:data:`MAX_NOTEBOOK_BYTES` or more, or when one output carries more than
:data:`MAX_SCRIPT_BYTES` of JavaScript (BokehJS inline: ``te.load_bokeh_js`` keeps it out
of the saved notebook).  The failure lists the largest outputs.
"""

from __future__ import annotations

import json

import pytest

#: the issue's limit for a notebook saved after Run All
MAX_NOTEBOOK_BYTES = 500_000
#: JavaScript in one output above this is a library inlined (BokehJS is about 3 MB)
MAX_SCRIPT_BYTES = 100_000
_SCRIPT_MIMES = ("application/javascript", "application/vnd.holoviews_load.v0+json")


def output_sizes(nb) -> list[tuple[int, int, str, int]]:
    """``(cell index, output index, mime type or output type, bytes)`` for every output of
    ``nb``, largest first (bytes as JSON writes them)."""
    rows = []
    for ci, cell in enumerate(nb.get("cells", [])):
        for oi, out in enumerate(cell.get("outputs", []) if cell.get("cell_type") == "code" else []):
            data = out.get("data")
            if data:
                rows += [(ci, oi, mime, len(json.dumps(value))) for mime, value in data.items()]
            else:
                rows.append((ci, oi, out.get("output_type", "?"), len(json.dumps(out))))
    return sorted(rows, key=lambda r: -r[3])


def _script_bytes(mime: str, value) -> int:
    text = value if isinstance(value, str) else "".join(value) if isinstance(value, list) else ""
    if mime in _SCRIPT_MIMES:
        return len(text)
    if mime == "text/html" and "<script" in text:
        return len(text)
    return 0


def size_problems(nb, *, max_bytes: int = MAX_NOTEBOOK_BYTES, max_script: int = MAX_SCRIPT_BYTES) -> list[str]:
    """What makes the executed notebook ``nb`` too large to save, as sentences (empty: none)."""
    import nbformat

    problems = []
    # as JupyterLab saves it: without the widget state nbclient stores in the metadata (Lab's
    # "save widget state automatically" is off by default; the explorer's state is megabytes)
    nb = nbformat.from_dict({**nb, "metadata": {k: v for k, v in nb.get("metadata", {}).items() if k != "widgets"}})
    size = len(nbformat.writes(nb).encode())
    if size >= max_bytes:
        top = ", ".join(f"cell {c} {m} {b / 1000:.0f} kB" for c, _, m, b in output_sizes(nb)[:5])
        problems.append(f"saved after running it weighs {size / 1000:.0f} kB (limit {max_bytes / 1000:.0f} kB); "
                        f"largest outputs: {top}")
    for ci, cell in enumerate(nb.get("cells", [])):
        for out in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            for mime, value in (out.get("data") or {}).items():
                n = _script_bytes(mime, value)
                if n > max_script:
                    problems.append(f"cell {ci} keeps {n / 1000:.0f} kB of JavaScript ({mime}) in its output: "
                                    "a library inlined (load BokehJS with te.load_bokeh_js())")
    return problems


class NotebookSize:
    """Holds the notebook each nbmake item executed and checks it after the item ran."""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):
        if type(item).__name__ != "NotebookItem":
            yield
            return
        from nbmake.nb_run import NotebookRun

        executed = []
        original = NotebookRun.execute

        def execute(run):
            result = original(run)
            executed.append(result)
            return result

        NotebookRun.execute = execute
        try:
            outcome = yield
        finally:
            NotebookRun.execute = original
        if outcome.excinfo is not None or not executed or executed[0].error is not None:
            return  # nbmake reports the notebook's own failure
        problems = size_problems(executed[0].nb)
        if problems:  # reported as nbmake reports a failing notebook
            from nbmake.nb_result import NotebookError, NotebookResult
            from nbmake.pytest_items import NotebookFailedException

            summary = f"{item.path.name} is too large to save: " + "; ".join(problems)
            error = NotebookError(summary=summary, trace=summary, failing_cell_index=-1)
            outcome.force_exception(NotebookFailedException(NotebookResult(nb=executed[0].nb, error=error)))


def pytest_configure(config) -> None:
    if not config.pluginmanager.has_plugin("notebook-size"):
        config.pluginmanager.register(NotebookSize(), "notebook-size")
