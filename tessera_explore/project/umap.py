"""UMAP of embeddings: fitted on a sample, every pixel placed by its neighbours.

``umap-learn`` compiles its numba kernels on first use (tens of seconds on 2 cores).
:func:`warm_up_umap` does that once per process in a background thread, with its
progress in attributes (and a tqdm bar on request); nothing else waits for it except
a UMAP fit started while it runs, which joins it (without a warm-up, the first fit
compiles what it needs itself).  ``umap`` is imported only inside functions here.

Transforming the area: every pixel is put at the membership-weighted mean of the
layout positions of its ``n_neighbors`` nearest sample pixels, from UMAP's own
transform graph (``transform_mode="graph"``; the same weights UMAP uses to start its
transform).  UMAP's further optimisation epochs are skipped: they cost about 4x more,
are not reproducible in parallel, and for pixels of the area the sample was drawn from
they move points little.  Identical embeddings therefore get identical positions, on
every tile and in every year.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable

import numpy as np

from ..exceptions import ProjectionError
from ._base import Projection

__all__ = ["UMAPProjection", "UMAPWarmup", "warm_up_umap", "umap_ready"]

#: Pixels per chunk in the transform (graph rows are built chunk by chunk).
_CHUNK = 50_000
#: Below this many fitted pixels UMAP uses exact distances (a dense chunk x n matrix).
_SMALL = 4096


def _import_umap():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import umap
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ProjectionError(
            "method='umap' needs the umap-learn package: pip install 'tessera_explore[umap]'"
        ) from err
    return umap


class UMAPWarmup:
    """The once-per-process UMAP compilation, run in a background thread.

    Attributes: ``stage`` (text), ``fraction`` (0..1), ``error`` (the exception if it
    failed), ``started``/``finished`` (``time.monotonic`` stamps).  ``wait()`` blocks
    until it is done and re-raises its error.
    """

    STAGES = (
        "importing umap",
        "compiling nearest-neighbour search",
        "compiling the transform",
        "compiling the seeded layout",
        "ready",
    )

    def __init__(self):
        self.stage = "not started"
        self.fraction = 0.0
        self.error: BaseException | None = None
        self.started: float | None = None
        self.finished: float | None = None
        self._done = threading.Event()
        self._callbacks: list[Callable[[UMAPWarmup], None]] = []
        self._thread: threading.Thread | None = None

    # -- state ----------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.monotonic()) - self.started

    def on_progress(self, callback: Callable[[UMAPWarmup], None]) -> None:
        """Call ``callback(self)`` at every stage change (from the worker thread)."""
        self._callbacks.append(callback)
        if self.done:
            callback(self)

    def _set(self, i: int) -> None:
        self.stage = self.STAGES[i]
        self.fraction = i / (len(self.STAGES) - 1)
        for cb in list(self._callbacks):
            cb(self)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the warm-up ends (True) or ``timeout`` passes (False)."""
        ok = self._done.wait(timeout)
        if ok and self.error is not None:
            raise ProjectionError(f"UMAP warm-up failed: {self.error}") from self.error
        return ok

    def __repr__(self) -> str:
        state = "failed: " + str(self.error) if self.error is not None else self.stage
        return f"<UMAPWarmup {state} ({self.elapsed:.0f} s)>"

    # -- work -----------------------------------------------------------------------
    def _run(self) -> None:
        self.started = time.monotonic()
        try:
            self._set(0)
            umap = _import_umap()
            rng = np.random.default_rng(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._set(1)
                # > _SMALL rows: the NN-descent path that real fits take; parallel layout
                x = rng.normal(size=(_SMALL + 200, 8)).astype(np.float32)
                u = umap.UMAP(n_neighbors=10, n_epochs=5, init="random").fit(x)
                self._set(2)
                u.transform_mode = "graph"
                u.transform(x[:64])
                self._set(3)
                # small data, seeded: exact distances and the single-threaded layout
                umap.UMAP(n_neighbors=5, n_epochs=5, init="random", random_state=0).fit(x[:300])
            self._set(4)
        except BaseException as err:  # reported through .error and wait(); never swallowed
            self.error = err
            self.stage = "failed"
        finally:
            self.finished = time.monotonic()
            self._done.set()
            for cb in list(self._callbacks):
                cb(self)

    def start(self, *, background: bool = True) -> UMAPWarmup:
        if self._thread is None:
            if background:
                self._thread = threading.Thread(target=self._run, name="tessera-umap-warmup", daemon=True)
                self._thread.start()
            else:
                self._thread = threading.current_thread()
                self._run()
        return self


_WARMUP: UMAPWarmup | None = None
_WARMUP_LOCK = threading.Lock()


def _tqdm_progress(w: UMAPWarmup) -> None:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(w.STAGES) - 1, desc="UMAP compile (once per process)", leave=True)
    last = [0]

    def update(w: UMAPWarmup) -> None:
        i = int(round(w.fraction * (len(w.STAGES) - 1)))
        if i > last[0]:
            bar.update(i - last[0])
            last[0] = i
        bar.set_postfix_str(w.stage, refresh=True)
        if w.done:
            bar.close()

    w.on_progress(update)


def warm_up_umap(*, background: bool = True, progress: bool = False) -> UMAPWarmup:
    """Compile UMAP's kernels once per process, off the interactive path.

    Returns the process-wide :class:`UMAPWarmup` (a second call returns the same one).
    ``background=True`` runs it in a daemon thread and returns at once; ``progress=True``
    shows a tqdm bar (a widget in Jupyter) that moves stage by stage.  A UMAP fit waits
    for it; maps, overlays and PCA never do.
    """
    global _WARMUP
    with _WARMUP_LOCK:
        if _WARMUP is None:
            _WARMUP = UMAPWarmup()
            if progress:
                _tqdm_progress(_WARMUP)
            _WARMUP.start(background=background)
        elif progress and not _WARMUP.done and not _WARMUP._callbacks:
            _tqdm_progress(_WARMUP)
    if not background:
        _WARMUP.wait()
    return _WARMUP


def umap_ready() -> bool:
    """True once UMAP's one-off compilation has finished in this process."""
    return _WARMUP is not None and _WARMUP.done and _WARMUP.error is None


class UMAPProjection(Projection):
    """UMAP of TESSERA embeddings, fitted on a stratified sample.

    Parameters
    ----------
    n_components : output dimensions (2 for a scatter, 3 for RGB).
    sample : pixels in the fitting sample (default 25,000).
    random_state : seed of the sample and of UMAP's layout (a seed makes UMAP run
        single-threaded: reproducible, about 2x slower); None: fresh, parallel.
    n_neighbors, min_dist, metric, n_epochs : passed to :class:`umap.UMAP`.
    pca_components : the embeddings are first reduced to this many principal components
        (fitted on the same sample; 32 keep about 90 % of the variance and make the
        neighbour search several times faster); None uses all 128 bands.

    Learned attributes: ``umap_`` (the fitted :class:`umap.UMAP`), ``pca_`` (or None),
    ``embedding_`` (layout of the sample), ``n_samples_fit_``, ``stretch_``,
    ``dataset_version_``, ``model_generation_``.
    """

    method = "umap"
    default_sample = 25_000
    _min_extra = 2
    _workers = 1  # numba's parallel kernels must not be entered from two threads at once

    def __init__(self, n_components: int = 2, *, sample: int | None = None, random_state=None,
                 n_neighbors: int = 15, min_dist: float = 0.1, metric: str = "euclidean",
                 n_epochs: int | None = None, pca_components: int | None = 32):
        self.n_components = n_components
        self.sample = sample
        self.random_state = random_state
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.metric = metric
        self.n_epochs = n_epochs
        self.pca_components = pca_components

    def _default_sample(self) -> int:
        return self.default_sample

    def _reduce(self, X: np.ndarray) -> np.ndarray:
        if self.pca_ is None:
            return np.asarray(X, dtype=np.float32)
        return self.pca_._transform_values(X)

    def _fit_values(self, X: np.ndarray) -> None:
        from .pca import PCAProjection

        if _WARMUP is not None:  # a warm-up under way: join it rather than compile twice
            _WARMUP.wait()
        umap = _import_umap()
        n = X.shape[0]
        if self.pca_components is not None and int(self.pca_components) < X.shape[1]:
            k = min(int(self.pca_components), n - 1)
            self.pca_ = PCAProjection(k)
            self.pca_._fit_values(X)
        else:
            self.pca_ = None
        Z = self._reduce(X)
        seed = self.random_state if isinstance(self.random_state, (int, np.integer)) else None
        nn = max(2, min(int(self.n_neighbors), n - 1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "n_jobs overridden by setting random_state", numba notes
            self.umap_ = umap.UMAP(
                n_components=int(self.n_components), n_neighbors=nn, min_dist=self.min_dist,
                metric=self.metric, n_epochs=self.n_epochs, random_state=seed,
                init="spectral" if n > int(self.n_components) + 2 else "random",
            ).fit(Z)
        self.umap_.transform_mode = "graph"
        self.embedding_ = np.asarray(self.umap_.embedding_, dtype=np.float32)

    def _fit_components(self, values: np.ndarray) -> np.ndarray:
        return self.embedding_

    def _transform_values(self, X: np.ndarray) -> np.ndarray:
        Z = self._reduce(X)
        step = _CHUNK if self.umap_._raw_data.shape[0] >= _SMALL else 2048
        out = np.empty((Z.shape[0], self.embedding_.shape[1]), dtype=np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for a in range(0, Z.shape[0], step):
                g = self.umap_.transform(Z[a : a + step]).tocsr()
                w = np.asarray(g.sum(axis=1)).ravel()
                pos = np.asarray(g @ self.embedding_, dtype=np.float32)
                with np.errstate(invalid="ignore", divide="ignore"):
                    pos /= w[:, None].astype(np.float32)
                pos[w == 0] = np.nan
                out[a : a + step] = pos
        return out
