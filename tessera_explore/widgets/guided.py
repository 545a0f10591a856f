"""Guided walks in the explorer: suggestions to label, and a validation sample to check
the class map against.

Both are a *walk*: numbered points on the map, one of them current (the map centres on
it); the user answers with a class or skips, and the walk steps to the next open point.

* **suggest**: :func:`~tessera_explore.suggest` on the labelling year with the latest
  classifier, keeping away from every label and from the validation points.  An answer
  goes through the controller's click path (:meth:`ExplorerController.label_at`): a
  training label like any other, saved and retrained on.
* **validate**: :func:`~tessera_explore.validation_sample` of the whole class map as it
  is when the sample is drawn (kept, so a retrain does not move the strata).  An answer
  is the point's *reference* class: it is kept here and in ``<labels>_reference.geojson``
  beside the label file, never in the :class:`~tessera_explore.LabelStore` (the
  classifier must not see its own test).  That file is a
  :class:`~tessera_explore.io.labels.ValidationFile`: an earlier sample's file, a file
  that cannot be read and a file tessera_explore did not write are moved aside
  (``<labels>_reference.previous[-N].geojson``, ``.unreadable[-N].geojson``), never
  overwritten, and the status line says where they went.  Once every stratum holds two
  answered points (or all of its points), :func:`~tessera_explore.area_estimate` runs and its table goes
  to ``state.area_table``.

Nothing here imports ipywidgets or ipyleaflet: the views draw the walk from the
session's ``"walk"`` event (:data:`~tessera_explore.widgets.session.EVENT_WALK`).
"""

from __future__ import annotations

import html
import os
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..exceptions import ArgumentError, LabelError, TesseraExploreError
from ..io.labels import ValidationFile
from .session import EVENT_WALK

__all__ = ["Guide", "Stop", "Walk", "area_table_html"]

#: answered points a stratum needs before the area table is computed (its variance
#: needs two; a stratum of one point counts when that point is answered)
MIN_PER_STRATUM = 2


@dataclass
class Stop:
    """One point of a walk: ``number`` (1-based, as on the map), lon/lat, the pixel, what
    the map says there (``info``) and the answer (None while open; ``"skipped"``, or the
    class)."""

    number: int
    lon: float
    lat: float
    row: int
    col: int
    info: dict = field(default_factory=dict)
    answer: str | None = None
    skipped: bool = False

    @property
    def open(self) -> bool:
        return self.answer is None and not self.skipped


@dataclass
class Walk:
    """Numbered points and the current one (``index``; ``len(stops)`` when none is open)."""

    kind: str  # "suggest" | "validate"
    stops: list
    index: int = 0

    @property
    def current(self) -> Stop | None:
        return self.stops[self.index] if 0 <= self.index < len(self.stops) else None

    def advance(self) -> Stop | None:
        """Step to the next open point after the current one (then from the start)."""
        n = len(self.stops)
        for k in list(range(self.index + 1, n)) + list(range(0, self.index + 1)):
            if self.stops[k].open:
                self.index = k
                return self.stops[k]
        self.index = n
        return None

    @property
    def answered(self) -> int:
        return sum(1 for s in self.stops if s.answer is not None)

    @property
    def skipped(self) -> int:
        return sum(1 for s in self.stops if s.skipped)

    def describe(self) -> str:
        noun = "suggestion" if self.kind == "suggest" else "validation point"
        done = "labelled" if self.kind == "suggest" else "answered"
        tally = f"{self.answered} {done}, {self.skipped} skipped"
        cur = self.current
        if cur is None:
            return f"all {len(self.stops)} {noun}s seen ({tally})"
        what = (f"the map says {cur.info.get('predicted')!r}" if self.kind == "suggest"
                else "what class is it? (the map's answer is hidden)")
        return f"{noun} {cur.number} of {len(self.stops)} at ({cur.lon:.5f}, {cur.lat:.5f}): {what} ({tally})"


def _stops(gdf, info_cols) -> list:
    return [Stop(i + 1, float(r.lon), float(r.lat), int(r.row), int(r.col),
                 {c: (v.item() if hasattr(v, "item") else v) for c in info_cols for v in [getattr(r, c)]})
            for i, r in enumerate(gdf.itertuples(index=False))]


def area_table_html(est) -> str:
    """An :class:`~tessera_explore.classify.AreaEstimate` as a small HTML table (ha)."""
    t = est.table
    rows = []
    for name, r in t.iterrows():
        def pct(v):
            return "-" if not np.isfinite(v) else f"{v:.2f}"

        rows.append(f"<tr><td>{html.escape(str(name))}</td><td>{r.mapped_ha:,.1f}</td>"
                    f"<td>{r.area_ha:,.1f}</td><td>{r.area_ci_low_ha:,.1f}-{r.area_ci_high_ha:,.1f}</td>"
                    f"<td>{pct(r.users_accuracy)}</td><td>{pct(r.producers_accuracy)}</td></tr>")
    lo, hi = est.overall_ci
    n = int(est.error_matrix.to_numpy().sum())
    return ("<table class='te-area' style='border-collapse:collapse;font-size:90%'>"
            "<tr><th>class</th><th>mapped ha</th><th>adjusted ha</th><th>95 % CI ha</th><th>UA</th><th>PA</th></tr>"
            + "".join(rows) + "</table>"
            f"<div>overall accuracy {est.overall_accuracy:.2f} (95 % CI {lo:.2f}-{hi:.2f}) on {n} reference points"
            + (f"; {html.escape('; '.join(est.notes))}" if est.notes else "") + "</div>")


class Guide:
    """The guided walks of one session (see the module docstring).

    Parameters
    ----------
    session : the :class:`~tessera_explore.widgets.session.Session`.
    classifying : its :class:`~tessera_explore.widgets.classifying.Classifying` (the
        classifier suggestions use, the class map a validation sample is drawn from).
    label_at : the click path, ``label_at(lon, lat, cls) -> (added, message)``
        (:meth:`ExplorerController.label_at
        <tessera_explore.widgets.controller.ExplorerController.label_at>`).
    """

    def __init__(self, session, classifying, label_at):
        self.session = session
        self.classifying = classifying
        self.label_at = label_at
        self.state = session.state
        self.walk: Walk | None = None
        self.suggestions = None  # GeoDataFrame of the latest batch
        self._seed = 0
        # validation
        self.sample = None  # validation_sample's GeoDataFrame, reference filled in as answered
        self.validation_map = None  # the prediction (Dataset) the sample was drawn from
        self.validation_year: int | None = None
        self.estimate = None  # the latest AreaEstimate
        self._validation_walk: Walk | None = None
        self._reference: ValidationFile | None = None  # the file of reference_path

    # ------------------------------------------------------------------ common
    def _emit(self) -> None:
        st = self.state
        w = self.walk
        with st.hold_trait_notifications():
            st.walk = w.kind if w is not None else ""
            st.guide = w.describe() if w is not None else ""
        self.session.emit(EVENT_WALK, w)

    def _need_classifier(self, what: str) -> str | None:
        if self.classifying.classifier is None and not self.session.trainable():
            return self.session.say(f"{what} needs a classifier: label at least two classes first")
        return None

    def skip(self) -> str:
        """Skip the current point (it stays unanswered) and step to the next."""
        self.session.check_open()
        w = self.walk
        cur = w.current if w is not None else None
        if cur is None:
            return self.session.say("no point to skip: press 'suggest' or 'validate' first")
        cur.skipped = True
        w.advance()
        self._emit()
        return self.session.say(f"skipped point {cur.number}; {self.state.guide}")

    def stop(self) -> str:
        if self.walk is None:
            return self.session.say("no walk to stop")
        kind = self.walk.kind
        self.walk = None
        self._emit()
        return self.session.say(f"{'suggestions' if kind == 'suggest' else 'validation'} put aside"
                             + (" (the reference answers are kept)" if kind == "validate" else ""))

    def answer(self, cls: str) -> str:
        """The class buttons of the walk: a label (suggest) or a reference class (validate)."""
        if self.walk is not None and self.walk.kind == "validate":
            return self.record(cls)
        return self.label(cls)

    # ------------------------------------------------------------------ suggestions
    def suggest(self, n: int = 10, *, strategy: str | None = None) -> Future | None:
        self.session.check_open()
        n = int(n)
        if n < 1:
            raise ArgumentError(f"n must be at least 1, got {n}")
        from ..classify.suggest import STRATEGIES

        strategy = self.state.suggest_strategy if strategy is None else strategy
        if strategy not in STRATEGIES:
            raise ArgumentError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        why = self._need_classifier("suggesting pixels")
        if why:
            return None
        return self.session.submit("suggest", lambda: self._suggest(n, strategy),
                               f"finding {n} pixels worth labelling")

    def _exclude(self) -> list | None:
        """Point labels not yet trained on and validation points: suggestions keep away."""
        pts = [(lab.lon, lab.lat, lab.cls) for lab in self.session.store.labels if lab.kind == "point"]
        if self.sample is not None:
            pts += [(float(lo), float(la), "validation") for lo, la in zip(self.sample.lon, self.sample.lat)]
        return pts or None

    def _suggest(self, n: int, strategy: str) -> Stop | None:
        from ..classify import suggest

        clf = self.classifying.classifier
        if clf is None:
            self.session.say("suggesting pixels needs a classifier: label at least two classes first")
            return None
        area = self.session.area(self.session.label_year)
        gdf = suggest(area, clf, n, strategy=strategy, exclude=self._exclude(), seed=self._seed)
        self._seed += 1
        self.suggestions = gdf
        self.walk = Walk("suggest", _stops(gdf, ("predicted", "confidence", "score")))
        self._emit()
        self.state.status = (f"{len(gdf)} pixels worth labelling ({strategy}); the map is at the first: pick its "
                             "class or skip")
        return self.walk.current

    def suggest_next(self) -> Future | None:
        w = self.walk
        if w is not None and w.kind == "suggest" and w.current is not None:
            fut: Future = Future()
            fut.set_result(w.current)
            self._emit()  # centres the map on it again
            return fut
        return self.suggest()

    def label(self, cls: str) -> str:
        """Label the current suggestion as ``cls`` through the click path, step on."""
        self.session.check_open()
        w = self.walk
        cur = w.current if w is not None and w.kind == "suggest" else None
        if cur is None:
            return self.session.say("no suggestion to label: press 'suggest' first")
        if cls not in self.state.classes:
            return self.session.say(f"unknown class {cls!r}; classes are {list(self.state.classes)}")
        self.state.active_class = cls
        added, msg = self.label_at(cur.lon, cur.lat, cls)
        if added:
            cur.answer = cls
        else:
            cur.skipped = True
        nxt = w.advance()
        self._emit()
        tail = (f"; next: suggestion {nxt.number}" if nxt is not None
                else "; batch done: press 'suggest' for more (they use the retrained classifier)")
        return self.session.say(msg + tail)

    # ------------------------------------------------------------------ validation
    def validate(self, n: int = 30, *, allocation: Any = "proportional", seed: int = 0,
                 new: bool = False) -> Future | None:
        """Draw a validation sample and walk through it; an unfinished sample is resumed
        (its map kept) unless ``new``."""
        self.session.check_open()
        old = self._validation_walk
        if not new and old is not None and any(s.open for s in old.stops):
            if self.walk is not old:
                old.index = -1
                old.advance()
            self.walk = old
            self._emit()
            self.session.say(f"validation resumed: {self.state.guide}")
            fut: Future = Future()
            fut.set_result(old.current)
            return fut
        if self._need_classifier("a validation sample"):
            return None
        return self.session.submit("validate", lambda: self._validate(int(n), allocation, int(seed), resume=not new),
                               f"drawing {n} validation points from the class map")

    def _validate(self, n: int, allocation: Any, seed: int, resume: bool = True) -> Stop | None:
        from ..classify import validation_sample

        pred = self.classifying.complete_prediction()
        if pred is None:
            self.session.say("a validation sample needs a class map: label at least two classes first")
            return None
        year = self.classifying.prediction_year
        saved, why = self._load_reference(pred, year) if resume and self.sample is None else (None, None)
        self.validation_map, self.validation_year = pred, year
        self.estimate = None
        self.state.area_table = ""
        if saved is not None:
            self.sample = saved
            stops = _stops(saved, ("map_class",))
            for stop, ref in zip(stops, saved["reference"]):
                stop.answer = None if ref is None or (isinstance(ref, float) and np.isnan(ref)) else str(ref)
            self.walk = self._validation_walk = Walk("validate", stops, index=-1)
            self.walk.advance()
            self.update_estimate()
            self._emit()
            self.state.status = (f"validation resumed from {self.reference_path}: {self.walk.answered} of "
                                 f"{len(stops)} points answered")
            return self.walk.current
        kept = self._set_aside_reference()
        gdf = validation_sample(pred, n, allocation=allocation, seed=seed)
        self.sample = gdf
        self.walk = self._validation_walk = Walk("validate", _stops(gdf, ("map_class",)))
        self._emit()
        note = self._save_reference()
        notes = [m for m in (why, kept and f"the earlier sample's answers are kept in {os.path.basename(kept)}", note)
                 if m]
        self.state.status = (f"{len(gdf)} validation points drawn from the {year} class map "
                             "(kept apart from the training labels); pick the class you see at each"
                             + (f" ({'; '.join(notes)})" if notes else ""))
        return self.walk.current

    def _reference_file(self) -> ValidationFile | None:
        path = self.reference_path
        if path is None:
            return None
        if self._reference is None or self._reference.name != os.path.abspath(path):
            self._reference = ValidationFile(path)
        return self._reference

    def _load_reference(self, pred, year) -> tuple:
        """The saved sample of this class map (a GeoDataFrame), or (None, why not).  A
        saved sample of another map, or a file that cannot be read, is moved aside (never
        lost) and the reason returned."""
        ref = self._reference_file()
        if ref is None:
            return None, None
        try:
            gdf = ref.read()
        except LabelError as err:
            kept = os.path.basename(ref.set_aside("unreadable"))
            return None, (f"{err}; that file is kept as {kept} (fix it and rename it back to "
                          f"{os.path.basename(ref.name)} to resume its answers)")
        if gdf is None:
            return None, None
        design = gdf.attrs["tessera_validation"]
        classes = list(pred.attrs.get("classes", ()))
        values = np.asarray(pred["class"].values)
        counts = np.bincount(values.ravel(), minlength=256)[: len(classes)]
        if (design.get("year") != year or list(design["classes"]) != classes
                or list(design["mapped_pixels"]) != counts.tolist()
                or (len(gdf) and (gdf["row"].max() >= values.shape[0] or gdf["col"].max() >= values.shape[1]))):
            return None, "the saved validation sample belongs to another class map: it is kept as " + \
                os.path.basename(ref.set_aside("previous"))
        return gdf, None

    def _set_aside_reference(self) -> str | None:
        """Keep a saved sample of another map (or one replaced with ``new=True``) beside it,
        under the next free ``.previous[-N].geojson`` name; returns that path."""
        ref = self._reference_file()
        return None if ref is None else ref.set_aside("previous")

    def record(self, cls: str) -> str:
        """Record the reference class of the current validation point and step on."""
        self.session.check_open()
        w = self.walk
        cur = w.current if w is not None and w.kind == "validate" else None
        if cur is None:
            return self.session.say("no validation point to answer: press 'validate' first")
        cls = str(cls).strip()
        if not cls:
            raise ArgumentError("the reference class must be a non-empty name")
        cur.answer = cls
        self.sample.loc[self.sample.index[cur.number - 1], "reference"] = cls
        note = self._save_reference()
        w.advance()
        msg = f"reference of point {cur.number}: {cls!r}" + (f" ({note})" if note else "")
        est = self.update_estimate()
        self._emit()
        if est is not None:
            msg += f"; overall accuracy {est.overall_accuracy:.2f} on {w.answered} points"
        else:
            msg += f"; {self._missing()}"
        return self.session.say(msg)

    def _strata_ready(self) -> bool:
        s = self.sample
        answered = s["reference"].notna()
        for _cls, grp in s.groupby("map_class"):
            need = min(MIN_PER_STRATUM, len(grp))
            if int(answered[grp.index].sum()) < need:
                return False
        return True

    def _missing(self) -> str:
        s = self.sample
        answered = s["reference"].notna()
        short = {str(c): min(MIN_PER_STRATUM, len(g)) - int(answered[g.index].sum())
                 for c, g in s.groupby("map_class")}
        short = {c: k for c, k in short.items() if k > 0}
        return "the area table needs " + ", ".join(f"{k} more of map class {c!r}" for c, k in short.items())

    def update_estimate(self):
        """:func:`~tessera_explore.area_estimate` of the answered points, once every stratum
        holds enough of them; also shown in ``state.area_table``."""
        from ..classify import area_estimate

        if self.sample is None or not self._strata_ready():
            return None
        done = self.sample[self.sample["reference"].notna()]
        done.attrs.update(self.sample.attrs)
        try:
            est = area_estimate(self.validation_map, done)
        except TesseraExploreError as err:
            self.state.area_table = f"<i>no area table yet: {html.escape(str(err))}</i>"
            return None
        self.estimate = est
        self.state.area_table = area_table_html(est)
        return est

    @property
    def reference_path(self) -> str | None:
        """``<labels>_reference.geojson`` beside the label file (None for labels in memory)."""
        base = self.session.store.path
        return None if base is None else os.path.splitext(base)[0] + "_reference.geojson"

    def _save_reference(self) -> str | None:
        """Save the answers; a note when a file in the way was moved aside first."""
        ref = self._reference_file()
        if ref is None or self.sample is None:
            return None
        return ref.save(self.sample, year=self.validation_year)

    def export(self, folder: str) -> list:
        """The reference points (when a validation sample was drawn) for the export."""
        if self.sample is None:
            return []
        out = ValidationFile(os.path.join(folder, "reference.geojson"))
        out.save(self.sample, year=self.validation_year, replace_ours=True)
        return [out.name]
