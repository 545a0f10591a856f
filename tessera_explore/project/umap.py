"""UMAP of embeddings: fitted on a sample, every pixel placed by its neighbours.

Out of the kernel and fast (``docs/design/projections.md``, "UMAP settings"):

- **Neighbours without pynndescent.**  The sample's exact k nearest neighbours come from
  scikit-learn (a few thousand pixels: under a second) and go to ``umap.UMAP`` as
  ``precomputed_knn``, so the fit never builds or compiles an NN-descent index.
- **The layout starts from PCA**, the principal components already fitted for the
  reduction to 32 dimensions (no spectral eigen-solve), and runs 200 epochs.
- **numba compiles once per machine**, not once per process: the three umap-learn
  kernels a fit uses (``smooth_knn_dist``, ``compute_membership_strengths`` and the
  layout epoch) are switched to numba's on-disk cache before their first call
  (:func:`enable_umap_cache`); later processes load them in about a second.
- **Every pixel is placed in NumPy.**  A pixel goes to the membership-weighted mean of
  the layout positions of its ``n_neighbors`` nearest sample pixels, with UMAP's own
  transform weights (``exp(-d / sigma)``, ``sigma`` such that the weights of all
  neighbours but the nearest add up to ``log2(k)``; the floor on ``sigma`` is taken per
  pixel, not per batch, so a pixel's place never depends on its batch).  The
  neighbours are found through an inverted-file index (:class:`NeighbourIndex`): the
  sample is cut into k-means cells, a pixel is compared with the members of its nearest
  cell and with their sample neighbours only.  UMAP's optimisation epochs after its own
  transform are skipped: identical embeddings get identical places, on every tile and
  in every year.
- :func:`run_in_fresh_process` runs a function (a fit) in a spawned process that exits
  as soon as it has returned its result: no worker lingers, holding its memory.

:func:`warm_up_umap` compiles (or loads) the kernels in a background thread with its
progress in attributes.  ``umap`` is imported only inside functions here.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable

import numpy as np

from ..exceptions import ProjectionError
from ._base import Projection

__all__ = ["UMAPProjection", "UMAPWarmup", "NeighbourIndex", "warm_up_umap", "umap_ready", "enable_umap_cache",
           "run_in_fresh_process"]

#: Pixels per batch when placing pixels (bounds the pixel x candidate distance blocks).
_CHUNK = 16_384
#: umap-learn kernels a fit calls (module, name); their numba cache is switched on.
_KERNELS = (("umap.umap_", "smooth_knn_dist"), ("umap.umap_", "compute_membership_strengths"),
            ("umap.layouts", "_nb_optimize_layout_euclidean_single_epoch"),
            ("umap.layouts", "_nb_optimize_layout_euclidean_single_epoch_parallel"))


def _import_umap():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import umap
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ProjectionError(
            "method='umap' needs the umap-learn package: pip install 'tessera_explore[umap]'"
        ) from err
    enable_umap_cache()
    return umap


_CACHE_ON = False


def enable_umap_cache() -> list[str]:
    """Switch numba's on-disk cache on for the umap-learn kernels a fit uses.

    umap-learn compiles them afresh in every process (they are not declared
    ``cache=True``); with the cache, the first process on a machine compiles them and
    every later one loads them (numba keeps the files next to umap's sources, or in
    ``NUMBA_CACHE_DIR`` / the user cache folder when that is read-only).  Returns the
    names switched on by this call (none after the first).
    """
    global _CACHE_ON
    if _CACHE_ON:
        return []
    import importlib

    from numba.core.caching import NullCache

    done = []
    for mod, name in _KERNELS:
        disp = getattr(importlib.import_module(mod), name, None)
        # only dispatchers that have not compiled yet and cache nothing (umap-learn's as released)
        if disp is not None and hasattr(disp, "enable_caching") and isinstance(getattr(disp, "_cache", None), NullCache) \
                and not disp.signatures:
            disp.enable_caching()
            done.append(f"{mod}.{name}")
    _CACHE_ON = True
    return done


def run_in_fresh_process(fn: Callable, /, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a new spawned process that exits once it has returned.

    The process is joined before this returns (or raises the function's error), so no
    worker lingers with the fit's memory; ``fn`` and its arguments must pickle.  Use it
    (or ``ProcessPoolExecutor(..., max_tasks_per_child=1)``) for a UMAP fit out of the
    kernel.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ex = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1)
    try:
        return ex.submit(fn, *args, **kwargs).result()
    finally:
        ex.shutdown(wait=True)


class UMAPWarmup:
    """The once-per-process UMAP compilation, run in a background thread.

    Attributes: ``stage`` (text), ``fraction`` (0..1), ``error`` (the exception if it
    failed), ``started``/``finished`` (``time.monotonic`` stamps).  ``wait()`` blocks
    until it is done and re-raises its error.
    """

    STAGES = (
        "importing umap",
        "compiling the neighbour graph",
        "compiling the seeded layout",
        "compiling the parallel layout",
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
            x = rng.normal(size=(300, 8)).astype(np.float32)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # the same calls as a fit (precomputed neighbours, an array init), tiny
                self._set(1)
                idx, dist = _exact_knn(x, 5)
                init = x[:, :2].copy()
                self._set(2)
                umap.UMAP(n_neighbors=5, n_epochs=5, init=init, random_state=0,
                          precomputed_knn=(idx, dist, None)).fit(x)
                self._set(3)
                umap.UMAP(n_neighbors=5, n_epochs=5, init=init, random_state=None,
                          precomputed_knn=(idx, dist, None)).fit(x)
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


def _exact_knn(Z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of every row of ``Z`` among the rows (itself first),
    as umap-learn's ``precomputed_knn`` wants them: int64 indices, float32 distances."""
    from sklearn.neighbors import NearestNeighbors

    d, i = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(Z).kneighbors(Z)
    return np.ascontiguousarray(i, np.int64), np.ascontiguousarray(d, np.float32)


def _sq_dist(a: np.ndarray, a2: np.ndarray, b: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """Squared euclidean distances between the rows of ``a`` and ``b`` (row norms given)."""
    d = a @ b.T
    d *= -2.0
    d += a2[:, None]
    d += b2[None, :]
    np.maximum(d, 0.0, out=d)
    return d


def _topk_py(d, cand, k, idx, dist):  # pragma: no cover - compiled by numba
    """Per row of squared distances ``d`` (rows x candidates): the ``k`` smallest, in
    ascending order, as candidate ids ``cand[j]`` and distances (insertion into a
    sorted buffer: most candidates are rejected by one comparison)."""
    m = d.shape[1]
    for r in range(d.shape[0]):
        row = d[r]
        bi = idx[r]
        bd = dist[r]
        for j in range(k):
            bd[j] = np.inf
            bi[j] = -1
        for j in range(m):
            v = row[j]
            if v < bd[k - 1]:
                p = k - 1
                while p > 0 and bd[p - 1] > v:
                    bd[p] = bd[p - 1]
                    bi[p] = bi[p - 1]
                    p -= 1
                bd[p] = v
                bi[p] = cand[j]
        for j in range(k):
            bd[j] = np.sqrt(bd[j])


_TOPK = None


def _topk():
    """The compiled top-k kernel (numba, cached on disk, releases the GIL)."""
    global _TOPK
    if _TOPK is None:
        import numba

        _TOPK = numba.njit(cache=True, nogil=True)(_topk_py)
    return _TOPK


class NeighbourIndex:
    """Approximate nearest sample pixels for many pixels, in NumPy (an inverted file).

    The sample ``S`` (n x d) is cut into about ``2 sqrt(n)`` k-means cells.  A pixel is
    compared with the candidates of its nearest cell: the cell's members, their ``k``
    nearest sample neighbours (``knn``) and the members of the ``probe`` cells nearest
    to it.  Distances are exact for the candidates compared; recall of the true k
    nearest neighbours is measured in ``tests/project/test_umap.py`` and the benchmark.
    """

    def __init__(self, S: np.ndarray, knn: np.ndarray, *, probe: int = 2, random_state: int = 0):
        from sklearn.cluster import KMeans

        S = np.ascontiguousarray(S, np.float32)
        n = S.shape[0]
        m = int(min(max(1, round(2 * np.sqrt(n))), n))
        km = KMeans(n_clusters=m, n_init=1, max_iter=25, random_state=random_state).fit(S)
        self.centres = km.cluster_centers_.astype(np.float32)
        self.c2 = np.einsum("ij,ij->i", self.centres, self.centres)
        self.S, self.s2 = S, np.einsum("ij,ij->i", S, S)
        labels = km.labels_
        cd = _sq_dist(self.centres, self.c2, self.centres, self.c2)
        near = np.argsort(cd, axis=1)[:, 1 : 1 + probe]
        members = [np.flatnonzero(labels == c) for c in range(m)]
        knn = np.asarray(knn)
        self.candidates: list[np.ndarray] = []
        for c in range(m):
            parts = [members[c], knn[members[c]].ravel()] + [members[j] for j in near[c]]
            cand = np.unique(np.concatenate(parts))
            self.candidates.append(cand[cand >= 0])
        # the candidates' coordinates and squared norms, gathered once per cell
        self._cand = [(np.ascontiguousarray(S[c]), self.s2[c]) for c in self.candidates]

    def query(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices (m x k, into the sample) and euclidean distances (ascending) of the
        ``k`` nearest sample pixels found for every row of ``Q``."""
        Q = np.ascontiguousarray(Q, np.float32)
        q2 = np.einsum("ij,ij->i", Q, Q)
        cell = np.argmin(_sq_dist(Q, q2, self.centres, self.c2), axis=1)
        idx = np.empty((Q.shape[0], k), np.int64)
        dist = np.empty((Q.shape[0], k), np.float32)
        order = np.argsort(cell, kind="stable")
        bounds = np.searchsorted(cell[order], np.arange(len(self.centres) + 1))
        topk = _topk()
        for c in range(len(self.centres)):
            rows = order[bounds[c] : bounds[c + 1]]
            if rows.size == 0:
                continue
            cand = self.candidates[c]
            d = _sq_dist(Q[rows], q2[rows], *self._cand[c])
            bi, bd = idx[rows], dist[rows]
            topk(d, cand, k, bi, bd)
            if cand.size < k:  # fewer candidates than k: repeat the farthest (weights stay finite)
                bi[:, cand.size :] = bi[:, cand.size - 1 : cand.size]
                bd[:, cand.size :] = bd[:, cand.size - 1 : cand.size]
            idx[rows], dist[rows] = bi, bd
        return idx, dist


def membership_weights(dist: np.ndarray, *, n_iter: int = 8) -> np.ndarray:
    """UMAP's transform weights for rows of ascending neighbour distances.

    ``exp(-d / sigma)`` (1 where ``d`` is 0), ``sigma`` such that the weights of all
    neighbours but the nearest sum to ``log2(k)`` (umap-learn's ``smooth_knn_dist``
    with the transform's ``rho = 0``), with its floor of 1e-3 times the mean distance
    (of the row: a pixel's weights never depend on its batch).  ``1/sigma`` is found by
    Newton's method from 0: the sum is convex and falling in ``1/sigma``, so the steps
    rise to the root without overshooting (8 steps: relative error below 1e-4 on the
    demo scene, against umap-learn's 64 bisection steps).
    """
    d = np.asarray(dist, np.float32)
    k = d.shape[1]
    target = np.float32(np.log2(k))
    rest = d[:, 1:]
    s = np.zeros(d.shape[0], np.float32)  # 1 / sigma
    for _ in range(n_iter):
        e = np.exp(-rest * s[:, None])
        f = e.sum(axis=1) - target
        e *= rest
        slope = e.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(slope > 0, f / slope, 0.0)
        s += np.maximum(step, 0).astype(np.float32)
    floor = np.maximum(np.float32(1e-3) * d.mean(axis=1), np.float32(1e-30))
    with np.errstate(divide="ignore"):
        sigma = np.where(s > 0, np.float32(1) / s, np.inf)
    sigma = np.maximum(sigma, floor)
    w = np.exp(-d / sigma[:, None])
    w[d <= 0] = 1.0
    return w.astype(np.float32, copy=False)


class UMAPProjection(Projection):
    """UMAP of TESSERA embeddings, fitted on a stratified sample.

    Parameters
    ----------
    n_components : output dimensions (2 for a scatter, 3 for RGB).
    sample : pixels in the fitting sample (default 5,000: as faithful as 10,000 on the demo
        scene and half the time; ``docs/design/projections.md``, "UMAP settings").
    random_state : seed of the sample and of UMAP's layout (a seed makes UMAP run
        single-threaded: reproducible, about 2x slower); None: fresh, parallel.
    n_neighbors, min_dist : passed to :class:`umap.UMAP`.
    metric : ``"euclidean"`` (default) or ``"cosine"`` (rows of the reduced embeddings
        scaled to unit length, then euclidean: the same neighbours).
    n_epochs : layout optimisation epochs (default 200; umap-learn's own default is 500
        below 10,000 pixels).  Started from the PCA layout, the layout has settled by
        then (``docs/design/projections.md``, "UMAP settings").
    init : ``"pca"`` (default): the layout starts from the first principal components
        of the sample (already fitted for the reduction below, so it costs nothing);
        ``"spectral"`` (umap-learn's default: an eigen-solve of the neighbour graph,
        seconds more and its own numba compile), ``"random"``, or an ``(n, k)`` array.
    low_memory : passed to :class:`umap.UMAP` (it only shapes NN-descent, which the
        precomputed exact neighbours of the sample skip).
    pca_components : the embeddings are first reduced to this many principal components
        (fitted on the same sample; 32 keep about 90 % of the variance and make the
        neighbour search several times faster); None uses all 128 bands.

    Learned attributes: ``umap_`` (the fitted :class:`umap.UMAP`), ``pca_`` (or None),
    ``embedding_`` (layout of the sample), ``index_`` (the :class:`NeighbourIndex` of the
    sample that places pixels), ``n_neighbors_``, ``n_samples_fit_``, ``stretch_``,
    ``dataset_version_``, ``model_generation_``.
    """

    method = "umap"
    default_sample = 5_000
    _min_extra = 2
    _workers = 2  # placing pixels is NumPy (BLAS and ufuncs release the interpreter lock)

    def __init__(self, n_components: int = 2, *, sample: int | None = None, random_state=None,
                 n_neighbors: int = 15, min_dist: float = 0.1, metric: str = "euclidean",
                 n_epochs: int | None = 200, init="pca", low_memory: bool = True,
                 pca_components: int | None = 32):
        self.n_components = n_components
        self.sample = sample
        self.random_state = random_state
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.metric = metric
        self.n_epochs = n_epochs
        self.init = init
        self.low_memory = low_memory
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
        if self.metric not in ("euclidean", "cosine"):
            raise ProjectionError(f"metric must be 'euclidean' or 'cosine', got {self.metric!r}")
        if self.metric == "cosine":
            Z = self._unit(Z)
        nn = max(2, min(int(self.n_neighbors), n - 1))
        idx, dist = _exact_knn(Z, nn)
        init = self._initial_layout(Z, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "n_jobs overridden by setting random_state", numba notes
            self.umap_ = umap.UMAP(
                n_components=int(self.n_components), n_neighbors=nn, min_dist=self.min_dist,
                metric="euclidean", n_epochs=self.n_epochs, random_state=seed, init=init,
                low_memory=bool(self.low_memory), precomputed_knn=(idx, dist, None),
                force_approximation_algorithm=True,  # small samples too: our neighbours, no dense matrix
            ).fit(Z)
        self.embedding_ = np.asarray(self.umap_.embedding_, dtype=np.float32)
        self.index_ = NeighbourIndex(Z, idx, random_state=seed if seed is not None else 0)
        self.n_neighbors_ = nn

    @staticmethod
    def _unit(Z: np.ndarray) -> np.ndarray:
        norm = np.linalg.norm(Z, axis=1, keepdims=True)
        return (Z / np.where(norm > 0, norm, 1)).astype(np.float32)

    def _initial_layout(self, Z: np.ndarray, seed):
        """The layout UMAP starts from: ``init`` resolved against the reduced sample ``Z``."""
        init, n, k = self.init, Z.shape[0], int(self.n_components)
        if isinstance(init, str):
            if init not in ("pca", "spectral", "random"):
                raise ProjectionError(f"init must be 'pca', 'spectral', 'random' or an (n, {k}) array, got {init!r}")
            if init == "spectral" and n <= k + 2:  # too few pixels for the eigen-solve
                return "random"
            if init != "pca":
                return init
            # the principal components, scaled as umap-learn scales its own PCA start
            # (largest |coordinate| 10) with its 1e-4 jitter, drawn from the seed
            if self.pca_ is not None and Z.shape[1] >= k:
                coords = np.asarray(Z[:, :k], np.float64)
            else:
                from sklearn.decomposition import PCA

                coords = PCA(k, random_state=0).fit_transform(Z)
            top = float(np.abs(coords).max())
            coords = coords * (10.0 / top) if top > 0 else coords
            rng = np.random.default_rng(seed if seed is not None else 0)
            return (coords + rng.normal(scale=1e-4, size=coords.shape)).astype(np.float32)
        arr = np.asarray(init, np.float32)
        if arr.shape != (n, k):
            raise ProjectionError(f"an init array must have shape ({n}, {k}) (the fitting sample), got {arr.shape}")
        return arr

    def _fit_components(self, values: np.ndarray) -> np.ndarray:
        return self.embedding_

    def _transform_values(self, X: np.ndarray) -> np.ndarray:
        Z = self._reduce(X)
        if self.metric == "cosine":
            Z = self._unit(Z)
        out = np.empty((Z.shape[0], self.embedding_.shape[1]), dtype=np.float32)
        for a in range(0, Z.shape[0], _CHUNK):
            idx, dist = self.index_.query(Z[a : a + _CHUNK], self.n_neighbors_)
            w = membership_weights(dist)
            pos = np.einsum("ij,ijc->ic", w, self.embedding_[idx])
            pos /= w.sum(axis=1, keepdims=True)
            out[a : a + _CHUNK] = pos
        return out
