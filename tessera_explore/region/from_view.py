"""From the map to a region: the "map region" action's back end (no widgets here).

The explorer's current classifier and a drawn or typed lon/lat bbox become a
:func:`~tessera_explore.region.run_region` job of ``predict_map`` that runs in the
background, reports its progress, and gives the class map when it is done::

    job = MapRegionJob(store, bbox, clf, year=2024, progress=lambda f, msg: panel.show(f, msg))
    job.start()            # checks the bbox here (too large, outside the store), then runs
    ...
    class_map = job.result()        # open_region(...)["class"]: on the map when done
    job.cancel()                    # stops after the chunks in flight

Where it runs: ``client=`` a ``distributed.Client`` (or a scheduler address); by
default the current client (``distributed.get_client()``), else a ``LocalCluster`` of
this process sized for the machine (1 worker process on 2 cores, 2 beyond; one thread
each, as ``docs/design/scale-out.md`` recommends), made on first use and kept for later
jobs (:func:`close_local_cluster` releases it).
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from typing import Any

import xarray as xr

from ..exceptions import AreaTooLargeError, ArgumentError, NoTilesInAreaError, TesseraExploreError
from .plan import DEFAULT_CHUNK

__all__ = ["MapRegionJob", "JobCancelledError", "MAX_PIXELS", "STATES", "local_client", "close_local_cluster",
           "region_pixels"]

#: Largest region a map action runs (pixels at 10 m): 100 M px, about 1,000 km2 (a 32 km
#: square); its class map is 500 MB (class + confidence) and a chunk takes a few seconds
#: of one core, so a few minutes on a laptop.  Larger regions: call ``te.run_region``
#: on a cluster.
MAX_PIXELS = 100_000_000

#: The states of a job, in order; it ends in one of the last three.
STATES = ("new", "planning", "running", "done", "failed", "cancelled")

_LOCAL: dict[str, Any] = {}
_LOCAL_LOCK = threading.Lock()


def _local_workers() -> int:
    """Worker processes for this machine: one per core beyond the kernel's, at most two,
    and at most one per GiB of available memory."""
    cores = os.cpu_count() or 1
    n = min(2, max(1, cores - 1))
    try:
        import psutil

        n = min(n, max(1, int(psutil.virtual_memory().available // (1 << 30))))
    except ImportError:  # pragma: no cover - psutil is a dependency of distributed
        pass
    return n


def local_client(*, processes: bool | None = None):
    """A ``distributed.Client`` of a ``LocalCluster`` made on first use for map-region
    jobs and kept (1-2 single-thread workers).  ``processes``: worker processes (True,
    the default for a new cluster) or threads of this process (False: tests, small
    machines); None takes the one already made, whichever it is.  Asking for the other
    kind closes the first one."""
    from distributed import Client, LocalCluster

    with _LOCAL_LOCK:
        c = _LOCAL.get("client")
        if c is not None and c.status == "running" and processes in (None, _LOCAL.get("processes")):
            return c
        _close_locked()
        processes = True if processes is None else bool(processes)
        n = _local_workers()
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=processes, dashboard_address=":0")
        c = Client(cluster)
        _LOCAL.update(client=c, cluster=cluster, processes=processes)
        return c


def close_local_cluster() -> None:
    """Close the ``LocalCluster`` made by :func:`local_client` (if any)."""
    with _LOCAL_LOCK:
        _close_locked()


def _close_locked() -> None:
    c, cluster = _LOCAL.pop("client", None), _LOCAL.pop("cluster", None)
    _LOCAL.pop("processes", None)
    if c is not None:
        c.close()
    if cluster is not None:
        cluster.close()


class _Cancelled(TesseraExploreError):
    """Raised inside the job's thread to stop ``run_region`` (never reaches the caller)."""


class JobCancelledError(TesseraExploreError):
    """The map-region job was cancelled before it finished."""


def _location(source: Any) -> tuple[str, dict]:
    """The store location a worker can reopen, and the opening options it was opened with."""
    from ..io.store import ZarrSource

    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source), {}
    loader_store = getattr(source, "store", None)  # a ViewLoader
    if isinstance(loader_store, ZarrSource):
        source = loader_store
    if isinstance(source, xr.DataArray):
        where = source.attrs.get("store") or source.attrs.get("source")
        if not where:
            raise ArgumentError("this array does not say which store it comes from; pass the store's name, URL or path")
        return str(where), {}
    if isinstance(source, ZarrSource):
        return str(source.url), {}
    raise ArgumentError(f"source= must be a store name, URL or path, a ViewLoader or a view; got {type(source).__name__}")


def _depth_of(clf: Any) -> int | None:
    """The depth the classifier was fitted on, when it is a prefix (16, 32, 64) of the store."""
    n = getattr(clf, "n_features_in_", None)
    return int(n) if n is not None and int(n) < 128 else None


def region_pixels(bbox: Sequence[float], resolution: float = 10.0) -> int:
    """Pixels of a lon/lat bbox at ``resolution`` metres, on the UTM grid of its centre."""
    from rasterio.warp import transform_bounds

    from ..io import grid

    w, s, e, n = grid.normalize_bbox(bbox)
    epsg = grid.utm_epsg((w + e) / 2, 0.0)
    x0, y0, x1, y1 = transform_bounds("EPSG:4326", f"EPSG:{epsg}", w, s, e, n, densify_pts=21)
    return max(1, math.ceil((y1 - y0) / resolution)) * max(1, math.ceil((x1 - x0) / resolution))


class MapRegionJob:
    """A ``predict_map`` of ``classifier`` over ``bbox`` on dask.distributed, in the
    background, for the explorer's "map region" action.

    Parameters
    ----------
    source : a store name (``"v1.1"``), URL or folder, a
        :class:`~tessera_explore.io.viewport.ViewLoader` or one of its views, or an
        opened ``ZarrSource``: where the explorer's embeddings come from.
    bbox : (west, south, east, north) in degrees: drawn on the map or typed.
    classifier : a fitted classifier (:func:`~tessera_explore.fit_classifier`).
    year : the year to map (the view's year).
    out : the output Zarr folder; default a new folder under the temporary directory
        (kept: ``job.out``).  An existing output of the same job resumes.
    client : a ``distributed.Client`` or scheduler address; default the current client,
        else :func:`local_client`.
    progress : ``progress(fraction, message)``, called from the job's thread as it
        plans, as chunks finish (fraction of chunks done) and when it ends.
    chunk : task side in pixels (see :func:`~tessera_explore.run_region`).
    max_pixels : larger regions are refused at :meth:`start` (default :data:`MAX_PIXELS`).
    probabilities : also write the per-class probabilities.
    open_options : ``depth`` (default: the classifier's number of features when it is a
        prefix), ``base_url``, ``http_options``, ``cache``, ``missing``, as for
        :func:`~tessera_explore.open_embeddings`.

    Attributes: ``state`` (one of :data:`STATES`), ``fraction`` (0..1), ``message``,
    ``out``, ``job`` (the :class:`~tessera_explore.region.RegionJob` once done),
    ``error`` (the exception of a failed job).
    """

    def __init__(self, source: Any, bbox: Sequence[float], classifier: Any, *, year: int | None = None,
                 out: str | os.PathLike | None = None, client: Any = None,
                 progress: Callable[[float, str], Any] | None = None, chunk: int = DEFAULT_CHUNK,
                 max_pixels: int = MAX_PIXELS, probabilities: bool = False, **open_options: Any):
        unknown = set(open_options) - {"depth", "base_url", "http_options", "cache", "missing"}
        if unknown:
            raise ArgumentError(f"unknown options {sorted(unknown)}; expected depth, base_url, http_options, cache, "
                                "missing")
        self.source = source
        self.bbox = tuple(bbox)
        self.classifier = classifier
        self.year = year
        self.out = None if out is None else os.fspath(out)
        self.client = client
        self.progress = progress
        self.chunk = chunk
        self.max_pixels = max_pixels
        self.probabilities = probabilities
        self.open_options = open_options
        self.state = "new"
        self.fraction = 0.0
        self.message = ""
        self.job = None
        self.error: BaseException | None = None
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"MapRegionJob({self.bbox}, {self.state}, {self.fraction:.0%}{', ' + self.message if self.message else ''})"

    # -- checks ------------------------------------------------------------------------------
    def check(self) -> tuple[str, dict, int]:
        """Check the request without reading pixels: the store location, the opening
        options and the region's pixels.  Raises :class:`AreaTooLargeError` beyond
        ``max_pixels``, :class:`NoTilesInAreaError` where the store has no zone, and
        :class:`ArgumentError` / :class:`ClassifierError` for bad arguments."""
        from ..exceptions import ClassifierError
        from ..io import grid

        if not hasattr(self.classifier, "classes_") or not hasattr(self.classifier, "predict_proba"):
            raise ClassifierError("map region needs a fitted classifier (from fit_classifier): label some pixels first")
        bbox = grid.normalize_bbox(self.bbox)
        if self.year is None:
            raise ArgumentError("map region needs year= (the year shown)")
        where, opts = _location(self.source)
        opts = {**opts, **self.open_options}
        if opts.get("depth") is None and _depth_of(self.classifier) is not None:
            opts["depth"] = _depth_of(self.classifier)
        n = region_pixels(bbox)
        if n > int(self.max_pixels):
            raise AreaTooLargeError(f"this region is {n / 1e6:,.0f} M pixels; map region takes at most "
                                    f"{int(self.max_pixels) / 1e6:,.0f} M (about {int(self.max_pixels) / 1e4:,.0f} "
                                    "km2): draw a smaller box, or run te.run_region on a cluster")
        self._check_zones(where, bbox, opts)
        return where, opts, n

    def _check_zones(self, where: str, bbox, opts: dict) -> None:
        """Refuse a bbox in no zone of the store (metadata only; tile folders are left to
        the planner)."""
        from ..io.store import is_store_location, open_store, zones_in_bbox

        if not is_store_location(where):
            return
        st = open_store(where, **{k: opts[k] for k in ("cache", "base_url", "http_options") if k in opts})
        year = st.check_year(self.year)
        zones = [z for z in zones_in_bbox(bbox) if z in st.zones and any(year in p.years for p in st._parts[z])]
        if not zones:
            raise NoTilesInAreaError(f"{st.url} has no {year} data in {tuple(bbox)} (its zones: {st.zones}): draw the "
                                     "box over the store's footprint")

    # -- running -----------------------------------------------------------------------------
    def start(self) -> MapRegionJob:
        """Check the request (raising at once for a bad one), then run it in a background
        thread; returns self."""
        if self._thread is not None:
            raise ArgumentError("this job was already started; make a new MapRegionJob to run again")
        where, opts, _ = self.check()
        if self.out is None:
            self.out = tempfile.mkdtemp(prefix="te-map-region-")
        self._thread = threading.Thread(target=self._run, args=(where, opts), name="tessera-explore-map-region",
                                        daemon=True)
        self._set("planning", 0.0, "planning the region")
        self._thread.start()
        return self

    def _set(self, state: str, fraction: float, message: str) -> None:
        self.state, self.fraction, self.message = state, float(fraction), message
        if self.progress is not None:
            self.progress(self.fraction, message)

    def _run(self, where: str, opts: dict) -> None:
        from ..classify.predict import predict_map
        from .plan import plan_region
        from .run import run_region

        try:
            specs = plan_region(where, self.bbox, int(self.year), chunk=self.chunk,
                                **{k: v for k, v in opts.items() if v is not None})
            total = sum(s.n_chunks[0] * s.n_chunks[1] for s in specs)
            done = [0]

            def on_chunk(rec: dict) -> None:
                if self._cancel.is_set():
                    raise _Cancelled("cancelled")
                done[0] += 1
                self._set("running", min(done[0] / total, 0.99), f"{done[0]} of {total} chunks")

            if self._cancel.is_set():
                raise _Cancelled("cancelled")
            client = self.client
            if client is None:
                try:
                    from distributed import get_client

                    client = get_client()
                except ValueError:
                    client = local_client()
            self._set("running", 0.0, f"0 of {total} chunks")
            self.job = run_region(predict_map, where, self.classifier, bbox=self.bbox, year=int(self.year),
                                  out=self.out, client=client, chunk=self.chunk, progress=False, on_chunk=on_chunk,
                                  probabilities=self.probabilities, **opts)
            self._set("done", 1.0, f"done: {total} chunks in {self.job.seconds:.0f} s")
        except _Cancelled:
            self._set("cancelled", self.fraction, "cancelled (finished chunks are kept in the output)")
        except BaseException as err:  # reported to the caller through result(), never swallowed
            self.error = err
            self._set("failed", self.fraction, f"failed: {type(err).__name__}: {err}")
        finally:
            self._done.set()

    def cancel(self) -> None:
        """Stop the job: no chunk is started after the next one finishes (those done stay
        in the output, and the same job resumes them)."""
        self._cancel.set()
        if self._thread is None:
            self.state = "cancelled"
            self._done.set()

    def done(self) -> bool:
        """True once the job has ended (done, failed or cancelled)."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the job to end; False if ``timeout`` passed first."""
        return self._done.wait(timeout)

    def output(self, timeout: float | None = None):
        """The opened output (:func:`~tessera_explore.region.open_region`): one Dataset,
        or a dict of them by zone (``"utm31"``) for a region across zones."""
        from .output import open_region

        if not self._done.wait(timeout):
            raise TimeoutError(f"the map-region job is still {self.state} ({self.message})")
        if self.error is not None:
            raise self.error
        if self.state == "cancelled":
            raise JobCancelledError("the map-region job was cancelled")
        return open_region(self.out)

    def result(self, timeout: float | None = None):
        """The class map (``class``: uint8 index into ``attrs["classes"]``, 255 = no data;
        lazy): a DataArray, or a dict of them by zone for a region across zones.  Waits
        for the job; re-raises its error; :class:`JobCancelledError` if it was cancelled."""
        out = self.output(timeout)
        if isinstance(out, dict):
            return {z: _class_map(ds) for z, ds in out.items()}
        return _class_map(out)


def _class_map(ds: xr.Dataset) -> xr.DataArray:
    da = ds["class"]
    da.attrs = {**ds.attrs, **da.attrs}
    return da
