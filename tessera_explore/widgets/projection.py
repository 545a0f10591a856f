"""The scatter's projection: PCA (fitted at start) or UMAP, fitted in the background.

Switching ``state.projection`` to ``"umap"`` starts the fit **in a separate process**
when the area can be reopened there (arrays opened from a store or tile folder: the
process opens the same area from the array's ``source``/``bbox`` attrs and sends back
the components and the fitted projection).  numba's compilation of UMAP holds the
interpreter lock for seconds at a time; in another process it cannot delay a click,
a retrain or a redraw.  Other arrays (live embeddings, computed arrays) fit on a thread
of their own (not the controller's worker: retraining after a click must not wait half
a minute behind numba's compilation).  ``state.projection_status`` says where it stands (compiling,
fitting, ready, failed); the scatter keeps showing PCA until the UMAP components are
ready, then switches (the ``"scatter"`` event).  Each fit gets a process of its own that
exits once it has sent its answer, so the fit's memory goes back to the system.  Map clicks mark their pixel in
whichever projection the scatter shows.

numba's workqueue threading layer must not be entered from two threads at once; with
the OpenMP or TBB layers (thread-safe) UMAP runs beside the classifier's kernels,
otherwise it holds the classifier kernels' lock while it runs.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np

from .session import EVENT_AREA, EVENT_SCATTER

__all__ = ["ProjectionSwitch", "UMAP_SAMPLE"]

#: pixels in the UMAP fitting sample (the rest are placed by their neighbours)
UMAP_SAMPLE = 10_000


def _beside_kernels(fn):
    """``fn()``, made safe beside the classifier's numba kernels: run under their lock
    (``classify._kernels.run``) unless numba's threading layer is thread-safe."""
    import numba

    from ..classify import _kernels

    _kernels.warm()  # also fixes which threading layer numba uses
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "workqueue"
    return fn() if layer in ("omp", "tbb") else _kernels.run(fn)


def reopen_spec(arr) -> dict | None:
    """How another process opens the same area as ``arr`` (None when it cannot)."""
    a = arr.attrs
    src = str(a.get("store") or a.get("source") or "")
    bbox = a.get("bbox")
    if not src or ";" in src or bbox is None or "year" not in arr.coords or arr.rio.crs is None:
        return None
    if "://" not in src and not os.path.exists(src):
        return None
    return {"source": src, "bbox": [float(v) for v in bbox], "year": int(arr.year), "crs": arr.rio.crs.to_wkt(),
            "shape": (int(arr.sizes["y"]), int(arr.sizes["x"])), "x0": float(arr.x[0]), "y0": float(arr.y[0]),
            "depth": a.get("depth")}


def umap_in_process(spec: dict, fitted, sample: int, options: dict):
    """Run in the projection process: open the area of ``spec``, fit (or apply) UMAP
    (``fitted``: None, a fitted projection or one pickled to bytes).  Returns (components
    (2, y, x) float32, the fitted projection pickled to bytes, this process's pid, what
    :func:`~tessera_explore.project._base.components_array` reads of the projection).

    The projection travels back pickled and stays so in the explorer's process until it
    is asked for (:attr:`ProjectionSwitch.fitted`): unpickling it imports umap-learn and
    pynndescent, about 120 MB the explorer does not otherwise need."""
    import pickle
    from types import SimpleNamespace

    from ..io.open import open_embeddings
    from ..project import project

    if isinstance(fitted, bytes):
        fitted = pickle.loads(fitted)

    depth = spec.get("depth")
    da = open_embeddings(spec["source"], bbox=spec["bbox"], year=spec["year"], crs=spec["crs"],
                         **({"depth": int(depth)} if depth and int(depth) != 128 else {}))
    if (da.sizes["y"], da.sizes["x"]) != tuple(spec["shape"]) or abs(float(da.x[0]) - spec["x0"]) > 1e-6 \
            or abs(float(da.y[0]) - spec["y0"]) > 1e-6:
        raise RuntimeError("the area reopened in the projection process is not the explorer's grid")
    if fitted is None:
        comps, fitted = project(da, method="umap", n_components=2, sample=sample, random_state=0, **options)
    else:
        comps, _ = project(da, fitted=fitted)
    header = SimpleNamespace(method=fitted.method, source_=fitted.source_, stretch_=fitted.stretch_)
    return np.asarray(comps.values, np.float32), pickle.dumps(fitted), os.getpid(), header


class ProjectionSwitch:
    """PCA or UMAP components for the scatter of one session (module docstring):
    ``session``, a :class:`~tessera_explore.widgets.session.Session`; ``colour``, its
    :class:`~tessera_explore.widgets.colour_map.FalseColour` (the PCA components)."""

    def __init__(self, session, colour, *, sample: int = UMAP_SAMPLE, warm_up: bool = True, process: bool = True,
                 **options):
        self.session = session
        self.colour = colour
        #: fit in a separate process when the area can be reopened there (module docstring)
        self.process = bool(process)
        self._procs: ProcessPoolExecutor | None = None
        #: pid of the process that made the last UMAP components
        self.fitted_in: int | None = None
        self.state = session.state
        self.sample = int(sample)
        #: compile through :func:`~tessera_explore.project.warm_up_umap` first (with its
        #: stages in ``state.projection_status``); a fit compiles what it needs either way
        self.warm_up = bool(warm_up)
        #: further :class:`~tessera_explore.project.UMAPProjection` parameters
        self.options = dict(options)
        self._fitted = None  # the UMAPProjection, once fitted here or asked for
        self._fitted_blob: bytes | None = None  # ... pickled, as a fit in a process sends it
        self.components: dict = {}  # year -> UMAP components
        self.fit_seconds: float | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._futures: dict[int, Future] = {}
        self._lock = threading.Lock()
        self._generation = 0  # bumped by reset(): a fit of the arrays before it is thrown away
        self.state.observe(self._on_projection, names=["projection"])
        session.on(EVENT_AREA, lambda arrays: self.reset())

    @property
    def fitted(self):
        """The fitted :class:`~tessera_explore.project.UMAPProjection` (None before a fit).
        A fit in a separate process sends it pickled; it is unpickled on first access here
        (which imports umap-learn into this process)."""
        if self._fitted is None and self._fitted_blob is not None:
            import pickle

            self._fitted = pickle.loads(self._fitted_blob)
        return self._fitted

    @fitted.setter
    def fitted(self, value) -> None:
        self._fitted, self._fitted_blob = value, None

    def _fitted_to_send(self):
        """The fit for a projection process: its pickled bytes when it came from one."""
        return self._fitted if self._fitted is not None else self._fitted_blob

    def close(self) -> None:
        self.state.unobserve(self._on_projection, names=["projection"])
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            procs, self._procs = self._procs, None
        if procs is not None:
            running = list((getattr(procs, "_processes", None) or {}).values())
            procs.shutdown(wait=False, cancel_futures=True)
            for p in running:  # a fit may still be running: it is not needed any more
                with contextlib.suppress(Exception):
                    p.terminate()

    # ------------------------------------------------------------------ what the scatter shows
    def scatter_components(self, year: int):
        """The components the scatter shows for ``year`` (UMAP when chosen and ready)."""
        if self.state.projection == "umap" and year in self.components:
            return self.components[year]
        return self.colour.components.get(year)

    def _on_projection(self, change) -> None:
        year = self.session.scatter_year
        if change["new"] == "umap":
            self.fit(year)
        else:
            comps = self.colour.components.get(year)
            if comps is not None:
                self.session.emit(EVENT_SCATTER, year, comps)

    def reset(self) -> None:
        """Forget the fit and its components (the explorer's arrays changed, e.g. to full
        depth: a projection of the others cannot place them); a fit still running is thrown
        away when it ends.  Refitted at once when the scatter shows UMAP."""
        with self._lock:
            self._generation += 1
            self.fitted, self.components, self._futures = None, {}, {}
        if self.state.projection == "umap":
            self.fit(self.session.scatter_year)

    # ------------------------------------------------------------------ the fit
    def fit(self, year: int | None = None) -> Future:
        """Fit (or apply) UMAP for ``year`` in the background; the future gives its components."""
        self.session.check_open()
        year = int(self.session.scatter_year if year is None else year)
        with self._lock:
            if year in self.components:
                fut: Future = Future()
                fut.set_result(self.components[year])
                if self.state.projection == "umap":
                    self.session.emit(EVENT_SCATTER, year, self.components[year])
                return fut
            fut = self._futures.get(year)
            if fut is not None and not fut.done():
                return fut
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tessera-umap")
            self.state.projection_status = "UMAP: queued..."
            fut = self._futures[year] = self._pool.submit(self._run, year, self._generation)
            return fut

    def _status(self, text: str) -> None:
        self.state.projection_status = text

    def _run(self, year: int, gen: int = 0):
        from ..project import project
        from ..project.umap import warm_up_umap

        t0 = time.perf_counter()
        arr = self.session.arrays[year]
        spec = reopen_spec(arr) if self.process else None
        if spec is not None:
            try:
                return self._run_in_process(year, arr, spec, t0, gen)
            except Exception as err:  # e.g. a process that cannot start: fit here instead
                if self.session.closed:  # the process was stopped by close(): nothing to fit for
                    raise
                self._status(f"UMAP: the projection process failed ({type(err).__name__}); fitting here...")
        try:
            w = warm_up_umap(background=True) if self.warm_up else None
            if w is not None and not w.done:
                w.on_progress(lambda w: self._status(
                    f"UMAP: {w.stage} (compiled once per process; {w.fraction:.0%})" if not w.done else
                    "UMAP: compiled"))
                w.wait()
            if self.fitted is None:
                self._status(f"UMAP: fitting on a sample of {self.sample:,} pixels, then placing every pixel...")
                comps, fitted = _beside_kernels(lambda: project(arr, method="umap", n_components=2,
                                                                sample=self.sample, random_state=0, **self.options))
                if gen == self._generation:
                    self.fitted = fitted
            else:
                self._status(f"UMAP: placing the pixels of {year}...")
                fitted = self.fitted
                comps, _ = _beside_kernels(lambda: project(arr, fitted=fitted))
            self.fitted_in = os.getpid()
            return self._ready(year, comps, t0, gen)
        except Exception as err:
            self.session.report(err, "fitting UMAP")
            self._status("UMAP failed (see the message above); the scatter stays PCA")
            raise

    def _ready(self, year: int, comps, t0: float, gen: int = 0):
        if gen != self._generation:  # fitted on the arrays before a reset: not shown
            return comps
        self.components[year] = comps
        self.fit_seconds = time.perf_counter() - t0
        self._status(f"UMAP ready ({self.fit_seconds:.0f} s); the scatter shows it"
                     if self.state.projection == "umap" else f"UMAP ready ({self.fit_seconds:.0f} s)")
        if self.state.projection == "umap" and self.session.scatter_year == year:
            self.session.emit(EVENT_SCATTER, year, comps)
        return comps

    def _run_in_process(self, year: int, arr, spec: dict, t0: float, gen: int = 0):
        import multiprocessing

        from ..project._base import components_array

        known = self._fitted_to_send()
        doing = (f"compiling and fitting on a sample of {self.sample:,} pixels" if known is None
                 else f"placing the pixels of {year}")
        self._status(f"UMAP: {doing} in a separate process (clicks carry on)...")
        # a process of its own for each fit, which exits once it has answered (its 0.5-0.7 GB
        # go back to the system; a pool kept between fits held them until the explorer closed)
        procs = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                    max_tasks_per_child=1)
        with self._lock:
            self._procs = procs  # for close() to stop a fit still running
        try:
            fut = procs.submit(umap_in_process, spec, known, self.sample, self.options)
            values, blob, pid, header = fut.result()
        finally:
            procs.shutdown(wait=True)
            with self._lock:
                if self._procs is procs:
                    self._procs = None
        if gen == self._generation and known is None:
            with self._lock:
                self._fitted, self._fitted_blob = None, blob
        self.fitted_in = pid
        return self._ready(year, components_array(values, arr, header), t0, gen)
