"""Depth first: the 16-band prefix at once, full depth in the background.

A v2 store holds each embedding's first 16 (and 4) dimensions as arrays of their own
(``embeddings_d16`` beside ``embeddings``): about a sixth of the bytes of full depth
(16 + 4 bytes a pixel against 128 + 4).  When :func:`~tessera_explore.explore` opens
such a store itself, it opens the 16-band prefix (:func:`plan`), so the false colour is
drawn and clicks label and train at once, and :class:`DepthSwitch` reads full depth on
a thread of its own (clicks and retrains carry on at 16 bands meanwhile).  When it is
in, one job on the session's worker switches everything at once: the arrays, their
prepared int8 form, the PCA (refitted at full depth: the false colour and the scatter),
the classifier (retrained on full-depth vectors: its samples are read from the array it
is trained on, so one classifier never mixes depths), the class map, similarity,
change, trust, the learning curve and UMAP.  Then a quiet job measures what the
truncation costs on this area (:func:`truncation_cost`): how many of the 100 pixels most
similar to a query are the same at 16 and at full depth (once, on a seeded sample of
pixels and the last query), and how often the class maps of the same labels agree (again
after each retrain, on a seeded sample of pixels: the prefix of the labelling year, a
sixth of full depth's memory, is kept for it).  ``state.depth`` is the band count in use and
``state.depth_status`` the panel's line about it.

An array given to ``explore`` (a DataArray or a dict) is explored as it is.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..exceptions import SchemaError, TesseraExploreError
from .session import EVENT_TRAINED, ExplorerClosedError

__all__ = ["FIRST_DEPTH", "FullDepth", "DepthSwitch", "plan", "truncation_cost", "similarity_cost", "class_cost",
           "TOP_K"]

#: the prefix opened first
FIRST_DEPTH = 16
#: the similarity overlap compares the ``TOP_K`` most similar pixels at both depths
TOP_K = 100
#: query pixels of the similarity overlap (a seeded sample), besides the last query
N_QUERIES = 8
#: pixels (a seeded sample) on which the class maps of both depths are compared
AGREEMENT_PIXELS = 50_000


@dataclass(frozen=True)
class FullDepth:
    """Where the full-depth embeddings of a depth-first explorer come from: ``source``
    as given to ``explore`` (a dataset name, URL or store folder), the depth opened first
    and the store's full depth."""

    source: Any
    first: int
    bands: int

    def open(self, like):
        """The full-depth embeddings of ``like``'s year on exactly ``like``'s grid."""
        from ..io.open import open_embeddings

        full = open_embeddings(self.source, bbox=like.attrs.get("bbox"), year=int(like.coords["year"]),
                               crs=like.rio.crs, resampling=str(like.attrs.get("resampling", "nearest")))
        if (full.sizes["y"], full.sizes["x"]) != (like.sizes["y"], like.sizes["x"]) or not (
                np.array_equal(full.x.values, like.x.values) and np.array_equal(full.y.values, like.y.values)):
            raise SchemaError(f"the full-depth embeddings of {self.source} open on another grid "
                              f"({dict(full.sizes)}) than the {self.first}-band prefix ({dict(like.sizes)})")
        return full


def plan(source: Any, *, years: Any = None, enabled: bool = True) -> FullDepth | None:
    """The depth-first plan of an ``explore`` source: a store location whose store holds
    the 16-band prefix beside a deeper full array; None for anything else (arrays, tile
    folders, stores without nested depths, or ``years`` given as arrays, which are
    explored as they are)."""
    from ..io.store import is_store_location, open_store

    if not enabled or isinstance(years, dict) or not is_store_location(source):
        return None
    try:
        st = open_store(source)  # metadata only, and kept: open_embeddings reuses it
    except TesseraExploreError:
        return None  # open_embeddings says what is wrong with it
    full = int(st.nbands)
    if FIRST_DEPTH not in st.depths or full not in st.depths or full <= FIRST_DEPTH:
        return None
    return FullDepth(source, FIRST_DEPTH, full)


def _sample(valid: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """A seeded sample of at most ``n`` flat indices of the valid pixels, sorted."""
    idx = np.flatnonzero(valid)
    if idx.size > n:
        idx = np.sort(np.random.default_rng(seed).choice(idx, n, replace=False))
    return idx


def _top(area, flat: int, k: int) -> np.ndarray:
    """The ``k`` pixels (flat indices) most similar to pixel ``flat``, itself left out."""
    from ..classify import similarity
    from ..classify.samples import read_pixels

    w = area.shape[1]
    v = read_pixels(area, np.array([flat // w]), np.array([flat % w]))[0]
    s = np.asarray(similarity(area, v).values, np.float64).ravel()
    s[~np.isfinite(s)] = -np.inf
    s[flat] = -np.inf
    return np.argpartition(-s, k - 1)[:k]


def similarity_overlap(short, full, queries: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """For each query pixel (flat indices), the share of its ``k`` most similar pixels at
    full depth that are also among its ``k`` most similar with the prefix ``short``."""
    out = np.empty(len(queries))
    for i, q in enumerate(queries):
        a, b = _top(short, int(q), k), _top(full, int(q), k)
        out[i] = np.intersect1d(a, b).size / k
    return out


def class_agreement(short, full, clf, pixels: np.ndarray) -> float | None:
    """Share of ``pixels`` given the same class by ``clf`` (trained on ``full``) and by the
    same recipe trained on the same training pixels of ``short``; None when the prefix
    has no data under them."""
    from ..classify import fit_classifier
    from ..classify.samples import read_pixels
    from .classifying import predict_pixels

    s = clf.samples_
    X = read_pixels(short, s.rows, s.cols)
    ok = ~np.isnan(X).any(axis=1)
    s16 = dataclasses.replace(s, X=X[ok], y=s.y[ok], label_id=s.label_id[ok], rows=s.rows[ok], cols=s.cols[ok],
                              xy=s.xy[ok])
    if len(np.unique(s16.y)) < 2:
        return None
    clf16 = fit_classifier(short, s16, model=clf.model)
    a = predict_pixels(short, clf16, pixels)["class"].values.ravel()[pixels]
    b = predict_pixels(full, clf, pixels)["class"].values.ravel()[pixels]
    both = (a != 255) & (b != 255)
    return float(np.mean(a[both] == b[both])) if both.any() else None


def similarity_cost(short, full, *, query: int | None = None, k: int = TOP_K,
                    n_queries: int = N_QUERIES) -> dict:
    """``overlap``: the mean top-``k`` :func:`similarity_overlap` of the prefix ``short``
    against ``full`` (two prepared areas of one grid) over a seeded sample of
    ``n_queries`` pixels and ``query`` (a flat index); ``overlap_query``: that of
    ``query`` alone (None without one); ``k``; ``n_queries``."""
    valid = short.valid & full.valid
    out: dict = {"overlap": None, "overlap_query": None, "k": 0, "n_queries": 0}
    k = min(int(k), int(valid.sum()) - 1)
    if k < 1:
        return out
    qs = _sample(valid, n_queries, seed=0)
    if query is not None and valid[query] and query not in qs:
        qs = np.append(qs, query)
    ov = similarity_overlap(short, full, qs, k)
    out.update(overlap=float(ov.mean()), k=k, n_queries=int(len(qs)))
    if query is not None and valid[query]:
        out["overlap_query"] = float(ov[int(np.flatnonzero(qs == query)[0])])
    return out


def class_cost(short, full, clf, *, n_pixels: int = AGREEMENT_PIXELS) -> dict:
    """``agreement``: :func:`class_agreement` of the prefix ``short`` and ``full`` with the
    labels of ``clf`` (trained on ``full``) on a seeded sample of ``n_pixels`` pixels with
    data; ``n_labels``; ``n_pixels``."""
    pixels = _sample(short.valid & full.valid, n_pixels, seed=1)
    return {"agreement": class_agreement(short, full, clf, pixels),
            "n_labels": int(len(np.unique(clf.samples_.label_id))), "n_pixels": int(pixels.size)}


def truncation_cost(short, full, *, query: int | None = None, clf=None, **kw) -> dict:
    """What the prefix ``short`` costs against ``full``: :func:`similarity_cost` and, with a
    classifier trained on ``full``, :func:`class_cost`."""
    n_pixels = kw.pop("n_pixels", AGREEMENT_PIXELS)
    out = similarity_cost(short, full, query=query, **kw)
    if clf is not None:
        out.update(class_cost(short, full, clf, n_pixels=n_pixels))
    return out


def describe(cost: dict, first: int, full: int) -> str:
    """The panel's words for a :func:`truncation_cost`."""
    parts = []
    if cost.get("overlap") is not None:
        s = (f"top-{cost['k']} similarity overlap {cost['overlap']:.2f} (mean of {cost['n_queries']} pixels"
             + (f"; {cost['overlap_query']:.2f} at the last query" if cost.get("overlap_query") is not None else "")
             + ")")
        parts.append(s)
    if cost.get("agreement") is not None:
        parts.append(f"class map agreement {cost['agreement']:.1%} (the same {cost['n_labels']} labels, "
                     f"{cost['n_pixels']:,} pixels)")
    elif "agreement" not in cost:
        parts.append("class map agreement: measured once two classes are labelled")
    return f"{first} bands against {full}: " + "; ".join(parts) if parts else ""


class DepthSwitch:
    """The depth-first upgrade of one session (module docstring).

    Parameters
    ----------
    session : the :class:`~tessera_explore.widgets.session.Session` whose arrays are replaced
        (:meth:`~tessera_explore.widgets.session.Session.replace_arrays`).
    full : a :class:`FullDepth`, or None to explore the arrays as they are.
    colour : the session's :class:`~tessera_explore.widgets.colour_map.FalseColour` (given
        the full-depth PCA made while loading).
    classifying, maps : the session's
        :class:`~tessera_explore.widgets.classifying.Classifying` (the classifier whose
        class maps are compared) and :class:`~tessera_explore.widgets.maps.Maps` (the last
        similarity query).
    redraw : redraws every layer after the switch; returns True when it retrained
        (:meth:`ExplorerController.redraw
        <tessera_explore.widgets.controller.ExplorerController.redraw>`).
    """

    def __init__(self, session, full: FullDepth | None, *, colour, classifying, maps, redraw):
        self.session = session
        self.state = session.state
        self.colour, self.classifying, self.maps, self.redraw = colour, classifying, maps, redraw
        self.full = full
        self.future: Future | None = None  # the full-depth load, once started
        self.cost: dict | None = None  # the truncation cost, once measured
        self._short = None  # the prefix's prepared labelling year (a sixth of full depth), kept after the
        # switch: the class maps of both depths are compared again after each retrain
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False
        bands = int(next(iter(session.arrays.values())).sizes["band"])
        self.state.depth = bands
        if self.active:
            self.state.depth_status = f"depth {bands} of {full.bands} (loading full depth...)"

    @property
    def active(self) -> bool:
        """True while the explorer shows the prefix and full depth is yet to come."""
        return self.full is not None and int(self.state.depth) < self.full.bands

    def start(self) -> Future | None:
        """Start reading full depth on a thread of its own (None when there is nothing to read)."""
        if not self.active or self.future is not None:
            return self.future
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tessera-depth")
        self.future = self._pool.submit(self._load)
        self.session.on(EVENT_TRAINED, self._on_trained)
        return self.future

    def wait(self, timeout: float | None = 120.0) -> None:
        """Block until full depth is read and its switch queued (TimeoutError after ``timeout``)."""
        fut = self.future
        if fut is None:
            return
        try:
            fut.result(timeout)
        except Exception:
            if not fut.done():
                raise TimeoutError("full depth is still loading") from None
            # the load failed: said in the error line and the depth line already

    def close(self) -> None:
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ the load (its own thread)
    def _say(self, what: str) -> None:
        self.state.depth_status = f"depth {self.state.depth} of {self.full.bands} ({what})"

    def _load(self) -> None:
        from ..classify import prepare
        from ..project import project, to_rgb
        ses, full = self.session, self.full
        try:
            years = list(ses.arrays)
            self._say("loading full depth: opening...")
            arrays = {y: full.open(ses.arrays[y]) for y in years}
            first = ses.label_year
            todo = [first] + [y for y in (int(self.state.year),) if y != first]
            prepared, comps, rgb, fitted = {}, {}, {}, None
            for y in todo:
                if self._closed:
                    return
                self._say(f"loading full depth: reading {y}...")
                prepared[y] = prepare(arrays[y])
                if fitted is None:
                    c, fitted = project(arrays[y], method="pca", n_components=3, sample=ses.projection_sample,
                                        random_state=0)
                else:
                    c, _ = project(arrays[y], fitted=fitted)
                comps[y], rgb[y] = c, to_rgb(c)
            if self._closed:
                return
            loaded = (arrays, prepared, comps, rgb, fitted)
            self._say("loading full depth: read, switching to it...")
            ses.submit("depth", lambda: self._switch(*loaded), f"switching to full depth ({full.bands} bands)")
        except ExplorerClosedError:
            return
        except Exception as err:
            if not self._closed:
                ses.report(err, "loading full depth")
                self._say(f"full depth could not be loaded: {type(err).__name__}; the map stays at "
                          f"{self.state.depth} bands")
            raise

    # ------------------------------------------------------------------ the switch (the session's worker)
    def _switch(self, arrays, prepared, comps, rgb, fitted) -> None:
        ses, st = self.session, self.state
        short = ses.prepared.get(ses.label_year)
        if short is None:  # the start's preparation failed or has not run: measure on a fresh one
            from ..classify import prepare

            short = prepare(ses.arrays[ses.label_year])
        self._short = short
        # one step on the worker: no job sees arrays of one depth with a classifier of another.  The
        # replacement tells the classifier, change map, trust, learning curve and UMAP to let go
        ses.replace_arrays(arrays, prepared=prepared)
        self.colour.install(comps, rgb, fitted)
        st.depth = self.full.bands
        st.depth_status = f"depth {self.full.bands} (full); measuring what {self.full.first} bands cost..."
        retrained = self.redraw()  # samples read from the full-depth area; every layer redrawn
        ses.submit("depth-cost", self._measure, "measuring what the prefix costs", quiet=True)
        st.status = f"switched to full depth ({self.full.bands} bands)" + (f"; {st.status}" if retrained else "")

    def _query(self) -> int | None:
        """The flat index of the last similarity query, else of the last click (None if none)."""
        q = self.maps.similarity_query
        if q is None:
            lon, lat = self.state.last_click
            q = None if not (np.isfinite(lon) and np.isfinite(lat)) else (lon, lat)
        px = self.session.pixel_at(*q) if q is not None else None
        return None if px is None else px[0] * self.session.grid.shape[1] + px[1]

    def _measure(self) -> None:
        """The similarity overlap once (at the switch, with the last query then), the class
        maps' agreement with the labels of the latest classifier."""
        short = self._short
        if short is None:
            return
        full = self.session.area(self.session.label_year)
        if self.cost is None:
            self.cost = similarity_cost(short, full, query=self._query())
        clf = self.classifying.classifier
        for key in ("agreement", "n_labels", "n_pixels"):
            self.cost.pop(key, None)
        if clf is not None:
            self.cost.update(class_cost(short, full, clf))
        words = describe(self.cost, self.full.first, self.full.bands)
        self.state.depth_status = f"depth {self.full.bands} (full)" + (f". {words}" if words else "")

    def _on_trained(self, clf) -> None:
        """After the switch, each retrain (or a dropped classifier) measures the class maps'
        agreement again, as a quiet job (the similarity part stays as measured)."""
        if self._short is not None and self.cost is not None:
            self.session.submit("depth-cost", self._measure, "measuring what the prefix costs", quiet=True)
