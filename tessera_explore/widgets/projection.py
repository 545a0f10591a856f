"""The scatter's projection: PCA (fitted at start) or UMAP, fitted in the background.

Switching ``state.projection`` to ``"umap"`` starts the fit on a thread of its own (not
the controller's worker: retraining after a click must not wait half a minute behind
numba's compilation).  ``state.projection_status`` says where it stands (compiling,
fitting, ready, failed); the scatter keeps showing PCA until the UMAP components are
ready, then switches (the ``"scatter"`` event).  Map clicks mark their pixel in
whichever projection the scatter shows.

numba's workqueue threading layer must not be entered from two threads at once; with
the OpenMP or TBB layers (thread-safe) UMAP runs beside the classifier's kernels,
otherwise it holds the classifier kernels' lock while it runs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["ProjectionSwitch", "UMAP_SAMPLE"]

#: pixels in the UMAP fitting sample (the rest are placed by their neighbours)
UMAP_SAMPLE = 10_000


def _numba_guard():
    """A context that makes a UMAP fit safe beside the classifier's numba kernels."""
    import numba

    from ..classify import _kernels

    _kernels.warm()  # also fixes which threading layer numba uses
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "workqueue"
    return contextlib.nullcontext() if layer in ("omp", "tbb") else _kernels._LOCK


class ProjectionSwitch:
    """PCA or UMAP components for the scatter of one controller (module docstring)."""

    def __init__(self, controller, *, sample: int = UMAP_SAMPLE, warm_up: bool = True, **options):
        self.ctl = controller
        self.state = controller.state
        self.sample = int(sample)
        #: compile through :func:`~tessera_explore.project.warm_up_umap` first (with its
        #: stages in ``state.projection_status``); a fit compiles what it needs either way
        self.warm_up = bool(warm_up)
        #: further :class:`~tessera_explore.project.UMAPProjection` parameters
        self.options = dict(options)
        self.fitted = None  # the UMAPProjection, once fitted
        self.components: dict = {}  # year -> UMAP components
        self.fit_seconds: float | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._futures: dict[int, Future] = {}
        self._lock = threading.Lock()
        self.state.observe(self._on_projection, names=["projection"])

    def close(self) -> None:
        self.state.unobserve(self._on_projection, names=["projection"])
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ what the scatter shows
    def scatter_components(self, year: int):
        """The components the scatter shows for ``year`` (UMAP when chosen and ready)."""
        if self.state.projection == "umap" and year in self.components:
            return self.components[year]
        return self.ctl.components.get(year)

    def _on_projection(self, change) -> None:
        year = self.ctl.scatter_year
        if change["new"] == "umap":
            self.fit(year)
        else:
            comps = self.ctl.components.get(year)
            if comps is not None:
                self.ctl._emit("scatter", year, comps)

    # ------------------------------------------------------------------ the fit
    def fit(self, year: int | None = None) -> Future:
        """Fit (or apply) UMAP for ``year`` in the background; the future gives its components."""
        self.ctl._check_open()
        year = int(self.ctl.scatter_year if year is None else year)
        with self._lock:
            if year in self.components:
                fut: Future = Future()
                fut.set_result(self.components[year])
                if self.state.projection == "umap":
                    self.ctl._emit("scatter", year, self.components[year])
                return fut
            fut = self._futures.get(year)
            if fut is not None and not fut.done():
                return fut
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tessera-umap")
            self.state.projection_status = "UMAP: queued..."
            fut = self._futures[year] = self._pool.submit(self._run, year)
            return fut

    def _status(self, text: str) -> None:
        self.state.projection_status = text

    def _run(self, year: int):
        from ..project import project
        from ..project.umap import warm_up_umap

        t0 = time.perf_counter()
        try:
            w = warm_up_umap(background=True) if self.warm_up else None
            if w is not None and not w.done:
                w.on_progress(lambda w: self._status(
                    f"UMAP: {w.stage} (compiled once per process; {w.fraction:.0%})" if not w.done else
                    "UMAP: compiled"))
                w.wait()
            arr = self.ctl.arrays[year]
            with _numba_guard():
                if self.fitted is None:
                    self._status(f"UMAP: fitting on a sample of {self.sample:,} pixels, then placing every pixel...")
                    comps, fitted = project(arr, method="umap", n_components=2, sample=self.sample, random_state=0,
                                            **self.options)
                    self.fitted = fitted
                else:
                    self._status(f"UMAP: placing the pixels of {year}...")
                    comps, _ = project(arr, fitted=self.fitted)
            self.components[year] = comps
            self.fit_seconds = time.perf_counter() - t0
            self._status(f"UMAP ready ({self.fit_seconds:.0f} s); the scatter shows it"
                         if self.state.projection == "umap" else f"UMAP ready ({self.fit_seconds:.0f} s)")
            if self.state.projection == "umap" and self.ctl.scatter_year == year:
                self.ctl._emit("scatter", year, comps)
            return comps
        except Exception as err:
            self.ctl._report(err, "fitting UMAP")
            self._status("UMAP failed (see the message above); the scatter stays PCA")
            raise
