"""Each executed notebook's run time and its kernel's peak memory, reported after the run.

A pytest plugin (registered from ``tests/conftest.py``; for a notebook run on its own:
``PYTHONPATH=tests pytest -p notebook_figures --nbmake notebooks/...``).  For every nbmake
item it measures the wall time of the item and, by polling the pytest process's child
processes while the item runs, the largest peak resident set size (``VmHWM``, which the
kernel keeps for the life of a process) of any of them: the Jupyter kernel and whatever the
kernel starts.  The figures are printed as a table at the end of the session and nothing
is asserted about them: timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import os
import pathlib
import threading
import time

import pytest

POLL_S = 0.25


def _peak_rss_bytes(pid: int) -> int:
    """The peak resident set size of a live process (0 once it has gone)."""
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss)  # no peak outside Linux: the current size
    except Exception:  # noqa: BLE001 - the process has gone, or psutil is missing: nothing to measure
        return 0


def _children(pid: int) -> list[int]:
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except Exception:  # noqa: BLE001 - psutil missing or the process gone
        found = []
        for task in pathlib.Path(f"/proc/{pid}/task").glob("*/children"):
            try:
                found += [int(c) for c in task.read_text().split()]
            except (OSError, ValueError):
                continue
        return found + [g for c in found for g in _children(c)]


class _Sampler(threading.Thread):
    """Polls the peak memory of the children of this process until stopped."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="notebook-figures")
        self.peak = 0
        self._done = threading.Event()

    def run(self) -> None:
        me = os.getpid()
        while True:
            for pid in _children(me):
                self.peak = max(self.peak, _peak_rss_bytes(pid))
            if self._done.wait(POLL_S):
                break

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak


def _is_notebook(item: pytest.Item) -> bool:
    return type(item).__name__ == "NotebookItem" or str(getattr(item, "path", "")).endswith(".ipynb")


class NotebookFigures:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, float, int]] = []

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):
        if not _is_notebook(item):
            yield
            return
        sampler = _Sampler()
        sampler.start()
        start = time.perf_counter()
        outcome = yield
        seconds = time.perf_counter() - start
        peak = sampler.stop()
        self.rows.append((item.path.name, "failed" if outcome.excinfo else "passed", seconds, peak))

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.rows:
            return
        tr = terminalreporter
        tr.section("notebook run time and kernel peak memory")
        width = max(len(r[0]) for r in self.rows)
        tr.write_line(f"{'notebook':<{width}}  {'result':<6}  {'seconds':>8}  {'peak MiB':>8}")
        for name, result, seconds, peak in self.rows:
            mib = f"{peak / 2**20:8.0f}" if peak else "       -"
            tr.write_line(f"{name:<{width}}  {result:<6}  {seconds:8.1f}  {mib}")


def pytest_configure(config) -> None:
    if not config.pluginmanager.has_plugin("notebook-figures"):
        config.pluginmanager.register(NotebookFigures(), "notebook-figures")
