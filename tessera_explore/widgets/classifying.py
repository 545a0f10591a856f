"""Classifying in the explorer: training on the labels, the class and confidence map,
its spatial cross-validation, and the whole map on demand.

A retrain fits the chosen recipe on the labelling year's labels, then classifies only the
pixels the class image shows (at the map's screen resolution a fraction of the area's):
the image is the same as that of the whole map, since a nearest-neighbour render at that
size reads only those pixels.  The other pixels are classified when the whole map is
asked for (:meth:`Classifying.class_map`, the export, a validation sample).  Then a
quiet job scores the recipe by spatially blocked cross-validation
(:data:`~tessera_explore.widgets.session.EVENT_EVALUATED`).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Any

import numpy as np
import xarray as xr

from ..exceptions import TesseraExploreError
from .kept_maps import ClassMapSnapshot, labels_key, pixels_key
from .session import EVENT_AREA, EVENT_EVALUATED, EVENT_LAYER, EVENT_TRAINED, Session, plural

__all__ = ["Classifying", "ClassMapSnapshot", "LabelSamples", "predict_pixels", "MAX_PER_LABEL"]

#: pixels of one label (a drawn polygon) the classifier trains on: kNN's prediction time
#: grows with the training pixels, and a 1 km polygon holds 10,000 of them
MAX_PER_LABEL = 200


def predict_pixels(area, clf, flat: np.ndarray) -> xr.Dataset:
    """:func:`~tessera_explore.classify.predict_map` of the pixels ``flat`` (row-major
    indices) of a prepared area only; the others are no data (class 255, confidence NaN).
    ``attrs["partial"]`` says so."""
    from ..classify import predict_map
    from ..classify.area import AreaGrid, PreparedArea

    g = area.grid
    row = AreaGrid(np.arange(flat.size, dtype=float), np.zeros(1), g.crs, g.transform, g.attrs, g.year)
    sub = PreparedArea(row, area.codes[flat], area.scales[flat], area.inv_norm[flat], area.valid[flat])
    part = predict_map(sub, clf)
    h, w = area.shape
    cls = np.full(h * w, 255, np.uint8)
    conf = np.full(h * w, np.nan, np.float32)
    cls[flat] = part["class"].values.ravel()
    conf[flat] = part["confidence"].values.ravel()
    coords = {"y": g.y, "x": g.x}
    out = xr.Dataset({"class": (("y", "x"), cls.reshape(h, w), part["class"].attrs),
                      "confidence": (("y", "x"), conf.reshape(h, w), part["confidence"].attrs)},
                     coords=coords, attrs={**part.attrs, "partial": True})
    out["class"].rio.write_nodata(255, encoded=False, inplace=True)
    out["confidence"].rio.write_nodata(np.nan, encoded=False, inplace=True)
    return out.rio.write_crs(g.crs)


def _is_knn(clf) -> bool:
    """True for a classifier whose map :class:`IncrementalKNNMap` updates exactly."""
    from ..classify import CosineKNN

    return isinstance(getattr(clf, "estimator_", clf), CosineKNN)


class LabelSamples:
    """The training samples of the labels, kept per label between refits, so a click
    samples the new label alone (:func:`~tessera_explore.classify.sample_labels` of every
    label on each click grows with the labels).

    :meth:`samples` returns what ``sample_labels(area, store)`` returns (same samples,
    order, skipped labels, classes and meta): labels already sampled from this area keep
    their samples while their class and geometry are unchanged; the others are sampled
    together.  Labels that interact (two point labels on one pixel: duplicates and
    conflicts are decided over all labels) or new labels the area gives no sample (left
    out, or taken from their stored vectors) go through the full ``sample_labels`` of the
    store, whose result is kept in turn.  ``sampled`` counts the labels sampled so far
    (what a click costs; tests read it).
    """

    def __init__(self):
        self.area: Any = None
        self.sampled = 0
        self._parts: dict[int, tuple] = {}  # label id -> (key, (X, rows, cols, xy) or None, skip reason)

    def forget(self) -> None:
        """Drop every sample kept (the area changed)."""
        self.area, self._parts = None, {}

    def samples(self, area: Any, store: Any):
        """The :class:`~tessera_explore.classify.Samples` of every label of ``store`` in
        ``area`` (see the class docstring)."""
        from ..classify import sample_labels
        from ..exceptions import LabelError

        if area is not self.area:
            self.forget()
            self.area = area
        labs = store.labels
        keys = {lab.id: (lab.cls, lab.geometry.wkb) for lab in labs}
        for lid in [i for i, p in self._parts.items() if keys.get(i) != p[0]]:
            del self._parts[lid]
        new = [lab for lab in labs if lab.id not in self._parts]
        if new:
            try:
                got = sample_labels(area, _feature_collection(new), warn=False, stored=False)
            except LabelError:
                got = None
            if got is None or got.skipped:
                return self._full(area, store, keys)
            self.sampled += len(new)
            self._keep(got, keys)
        if _shared_pixels(labs, self._parts):
            return self._full(area, store, keys)
        return self._assemble(labs, store)

    def _full(self, area: Any, store: Any, keys: dict):
        from ..classify import sample_labels

        self._parts = {}
        out = sample_labels(area, store, warn=False)  # labels added meanwhile (a click) are kept next time
        self.sampled += len(keys)
        if not _shared_pixels(store.labels, {}, samples=out):
            self._keep(out, keys)
            for sk in out.skipped:
                if sk["id"] in keys:
                    self._parts[sk["id"]] = (keys[sk["id"]], None, sk["reason"])
        return out

    def _keep(self, got: Any, keys: dict) -> None:
        lid = np.asarray(got.label_id)
        order = np.argsort(lid, kind="stable")
        ids, starts = np.unique(lid[order], return_index=True)
        for i, (label, a) in enumerate(zip(ids.tolist(), starts.tolist())):
            b = starts[i + 1] if i + 1 < len(starts) else len(order)
            sel = order[a:b]
            if label in keys:
                self._parts[label] = (keys[label], (got.X[sel], got.rows[sel], got.cols[sel], got.xy[sel]), "")

    def _assemble(self, labs: tuple, store: Any):
        from ..classify import Samples

        X, y, lid, rows, cols, xy, skipped = [], [], [], [], [], [], []
        for lab in labs:
            _, part, why = self._parts[lab.id]
            if part is None:
                skipped.append({"id": lab.id, "class": lab.cls, "reason": why})
                continue
            m = len(part[0])
            X.append(part[0])
            y.extend([lab.cls] * m)
            lid.extend([lab.id] * m)
            rows.append(part[1])
            cols.append(part[2])
            xy.append(part[3])
        if not X:
            return self._full(self.area, store, {lab.id: (lab.cls, lab.geometry.wkb) for lab in labs})
        y = np.array(y, dtype=object)
        used = [c for c in store.classes if (y == c).any()]
        used += sorted(set(y.tolist()) - set(used))
        meta = {"dataset_version": store.dataset_version, "dataset_variant": getattr(store, "dataset_variant", None),
                "year": store.year, "label_file": store.path}
        n_stored = sum(1 for lab in labs if self._parts[lab.id][1] is not None
                       and len(self._parts[lab.id][1][1]) and self._parts[lab.id][1][1][0] < 0)
        if n_stored:
            meta["stored_labels"] = n_stored
        return Samples(X=np.ascontiguousarray(np.concatenate(X), np.float32), y=y, label_id=np.array(lid),
                       rows=np.concatenate(rows).astype(np.int64), cols=np.concatenate(cols).astype(np.int64),
                       xy=np.concatenate(xy).astype(np.float64).reshape(-1, 2), skipped=skipped, classes=used,
                       colors={c: store.classes.get(c) for c in used}, meta=meta)


def _feature_collection(labels: list) -> dict:
    """GeoJSON of some labels (their ids and classes), for :func:`sample_labels`."""
    import shapely.geometry

    return {"type": "FeatureCollection",
            "features": [{"type": "Feature", "properties": {"class": lab.cls, "id": int(lab.id)},
                          "geometry": shapely.geometry.mapping(lab.geometry)} for lab in labels]}


def _shared_pixels(labels, parts: dict, *, samples: Any = None) -> bool:
    """True when two point labels sit on one pixel (``sample_labels`` decides duplicates
    and conflicts over all labels, so they are not sampled label by label)."""
    points = {lab.id for lab in labels if lab.geometry.geom_type == "Point"}
    if samples is not None:
        if any(str(sk.get("reason", "")).startswith(("same pixel", "shares its pixel")) for sk in samples.skipped):
            return True
        sel = np.isin(samples.label_id, list(points)) & (samples.rows >= 0)
        px = list(zip(samples.rows[sel].tolist(), samples.cols[sel].tolist()))
    else:
        px = [(int(p[1][1][0]), int(p[1][2][0])) for i, p in parts.items()
              if i in points and p[1] is not None and p[1][1][0] >= 0]
    return len(px) != len(set(px))


class Classifying:
    """The classifier and class map of one session (module docstring).

    Attributes
    ----------
    classifier : the latest fitted classifier (None without two labelled classes).
    prediction : its latest prediction (a Dataset of ``class`` and ``confidence``; only the
        shown pixels while ``attrs["partial"]``), of ``prediction_year``.
    evaluation : the latest spatial cross-validation (None until scored).
    """

    def __init__(self, session: Session):
        self.session = session
        self.state = session.state
        self.classifier: Any = None
        self.prediction: xr.Dataset | None = None
        self.prediction_year: int | None = None
        self.evaluation: Any = None
        self._inputs: tuple | None = None  # (area, classifier) while only shown pixels are done
        self._lock = threading.RLock()
        #: the labels' samples, kept per label between refits
        self.samples = LabelSamples()
        #: the kNN class map of the shown pixels, updated label by label (None until the first kNN map)
        self.incremental: Any = None
        #: refits done, and class maps shown again from a snapshot instead (tests read them)
        self.fits = 0
        self.restored = 0
        self._trained: tuple | None = None  # (labels, classes, model, label year, classifier) of the last refit
        self._offered: tuple | None = None  # (view, ClassMapSnapshot) the next retrain_now may show
        self._images: dict = {}  # the overlays render() drew last, and what they rest on
        self._render_key: tuple | None = None
        session.on(EVENT_AREA, lambda arrays: self._forget_classifier())

    def _forget_classifier(self) -> None:
        """The arrays changed: a classifier of the others must not classify these."""
        with self._lock:
            self.classifier, self.evaluation, self._inputs = None, None, None
            self.incremental = None
            self._trained, self._offered = None, None
            self.samples.forget()

    # ------------------------------------------------------------------ training
    def retrain(self) -> Future:
        """Queue a refit on the labels and a fresh class map of the shown year."""
        return self.session.submit("retrain", self.retrain_now, f"training {self.state.model}",
                                   supersedes=("evaluate", "learning-curve", "trust"))

    def retrain_now(self) -> None:
        """Refit and redraw on this thread (a job's body; :meth:`retrain` queues it)."""
        from ..classify import fit_classifier

        s = self.session
        offered, self._offered = self._offered, None
        if not s.trainable():
            return self.drop_now()
        if offered is not None and self._restore(*offered):
            return None
        area = s.area(s.label_year)
        t0 = time.perf_counter()
        model = self.state.model
        labels, classes = s.store.labels, tuple(s.store.classes.items())  # before sampling: a later edit misses
        clf = fit_classifier(area, self.samples.samples(area, s.store), model=model, max_per_label=MAX_PER_LABEL)
        t_fit = time.perf_counter() - t0
        self.fits += 1
        self._trained = (labels, classes, model, int(s.label_year), clf)
        skipped = getattr(clf.samples_, "skipped", None) or []
        self.classifier = clf
        self.state.progress = 0.4
        t1 = time.perf_counter()
        self.predict(int(self.state.year))
        t_map = time.perf_counter() - t1
        n = len(np.unique(clf.samples_.label_id))
        msg = (f"{model} trained on {plural(n, 'label')} in {t_fit * 1000:.0f} ms; "
               f"class map in {t_map * 1000:.0f} ms")
        if skipped:
            msg += f"; {plural(len(skipped), 'label')} left out (outside the area or no data)"
        self.state.status = msg
        s.submit("evaluate", self.evaluate_now, "scoring the classifier on held-out labels", quiet=True)
        s.emit(EVENT_TRAINED, clf)  # trust layer and learning curve queue their quiet jobs

    def evaluate_now(self) -> None:
        """Spatially blocked cross-validation of the current recipe on the labels (run after
        the class map is drawn, so it never delays a redraw)."""
        from ..classify.evaluate import cv_readiness, evaluate

        clf = self.classifier
        if clf is None:
            self.state.accuracy = ""
            return
        s = clf.samples_
        ids, first = np.unique(s.label_id, return_index=True)
        per_class = {str(c): int(np.sum(s.y[first] == c)) for c in clf.classes_}
        why = cv_readiness(per_class)
        if why is not None:
            self.state.accuracy = f"accuracy: not scored yet: {why}. The map rests on {plural(len(ids), 'label')}."
            self.evaluation = None
            return
        try:
            ev = evaluate(self.session.area(self.session.label_year), s, model=self.state.model, cv="spatial")
        except TesseraExploreError as err:
            self.state.accuracy = f"accuracy: not scored yet ({err})"
            return
        self.state.accuracy = f"spatial cross-validation: {ev.summary()}"
        self.evaluation = ev
        self.session.emit(EVENT_EVALUATED, clf, ev)  # the learning curve's last point

    def after_label_edit(self) -> None:
        """Labels were edited (not added by a click): retrain, or drop the classifier when
        fewer than two classes are left."""
        if self.session.trainable():
            self.retrain()
        elif self.classifier is not None:
            self.classifier = None
            self.prediction = None
            self.session.submit("retrain", self.drop_now, "removing the class map")

    def drop_now(self) -> None:
        """Withdraw the class and confidence layers (no classifier any more)."""
        s = self.session
        s.emit(EVENT_LAYER, "classes", None)
        s.emit(EVENT_LAYER, "confidence", None)
        s.emit(EVENT_TRAINED, None)
        self.state.accuracy = ""
        self.state.status = "label at least two classes to train a classifier"

    # ------------------------------------------------------------------ the class map
    def predict(self, year: int) -> None:
        """Classify the pixels the class image of ``year`` shows with the latest classifier
        and draw it (module docstring)."""
        from ..classify import predict_map

        area = self.session.area(year)
        clf = self.classifier
        shown = self.session.shown_pixels(year)
        h, w = area.shape
        partial = shown is not None and shown.size < 0.8 * h * w
        if _is_knn(clf):
            pred = self._incremental_map(area, shown if partial else None, clf)
        elif partial:
            pred = predict_pixels(area, clf, shown)
        else:
            pred = predict_map(area, clf)
        with self._lock:
            self.prediction, self.prediction_year = pred, year
            self._inputs = (area, clf) if pred.attrs.get("partial") else None
        self.state.progress = 0.8
        self.render()

    def _incremental_map(self, area, pixels, clf) -> xr.Dataset:
        """The kNN map of ``pixels`` (None: all) through the :class:`IncrementalKNNMap`
        kept between refits (made anew for another area or other pixels): equal to
        :func:`predict_pixels` / ``predict_map``, at a cost of the pixels x the samples
        added or removed since the last map."""
        from ..classify import IncrementalKNNMap

        inc = self.incremental
        if inc is None or inc.area is not area or inc.pixels is not pixels:
            inc = self.incremental = IncrementalKNNMap(area, pixels=pixels)
        pred = inc.dataset(clf)
        if pixels is not None:
            pred.attrs["partial"] = True
        return pred

    def complete_prediction(self) -> xr.Dataset | None:
        """The prediction of every pixel (computed now if only the shown ones were)."""
        from ..classify import predict_map

        with self._lock:
            inputs, pred = self._inputs, self.prediction
            if inputs is None:
                return pred
            full = predict_map(*inputs)
            if self.prediction is pred:  # not replaced by a newer one meanwhile
                self.prediction, self._inputs = full, None
            return full

    def class_map(self, *, whole: bool = True) -> xr.DataArray | None:
        """The class map as shown: classes below the confidence threshold are no data.
        ``whole=False``: only the pixels the map's image shows are sure to be classified."""
        pred = self.complete_prediction() if whole else self.prediction
        if pred is None:
            return None
        cls = pred["class"]
        thr = float(self.state.confidence_threshold)
        if thr > 0:
            cls = cls.where(pred["confidence"] >= thr, 255).astype(np.uint8)
            cls.attrs.update(pred["class"].attrs)
        return cls

    def render(self) -> xr.DataArray | None:
        """Draw the class (and, when shown, confidence) layer of the latest prediction;
        returns the class map drawn (None without one)."""
        from .overlay import overlay_image

        s = self.session
        pred = self.prediction
        cls = self.class_map(whole=False)
        if cls is None or pred is None:
            return None
        names = list(pred.attrs.get("classes", ()))
        colors = s.store.classes
        img = overlay_image(cls, categories=names, colors=[colors.get(n, "#888888") for n in names],
                            **s.render_options, title="classes")
        images = {"classes": img}
        s.emit(EVENT_LAYER, "classes", img)
        if self.state.show_confidence:
            conf = pred["confidence"]
            conf = conf.where(cls != 255)
            conf.attrs.update(long_name="confidence")
            images["confidence"] = overlay_image(conf, cmap="viridis", vmin=0.0, vmax=1.0, categorical=False,
                                                 **s.render_options, title="confidence")
            s.emit(EVENT_LAYER, "confidence", images["confidence"])
        self._images, self._render_key = images, (pred, self._render_state())
        return cls

    def _render_state(self) -> tuple:
        """What the overlays drawn depend on besides the prediction."""
        opts = self.session.render_options
        return (float(self.state.confidence_threshold), bool(self.state.show_confidence),
                tuple(self.session.store.classes.items()), tuple(sorted((k, repr(v)) for k, v in opts.items())))

    # ------------------------------------------------------------------ a view's class map kept
    def _key(self, view: Any, labels: tuple, classes: tuple, model: str, label_year: int, area_ids: frozenset,
             year: int) -> tuple:
        return (view, model, int(label_year), int(year), classes, labels_key(labels, area_ids),
                pixels_key(self.session.arrays[year], self.session.render_options))

    def snapshot(self, view: Any) -> ClassMapSnapshot | None:
        """The class map drawn now, as the view ``view`` (any hashable the caller names
        the shown area by) shows it, or None when there is none made by the latest refit on
        these arrays (a classifier dropped, the arrays replaced since).  Call it on the
        worker (a job), before the arrays are replaced."""
        with self._lock:
            trained, pred, year = self._trained, self.prediction, self.prediction_year
            if trained is None or pred is None or year is None or trained[4] is not self.classifier:
                return None
            labels, classes, model, label_year, clf = trained
            smp = clf.samples_
            area_ids = frozenset(np.asarray(smp.label_id)[np.asarray(smp.rows) >= 0].tolist())
            key = self._key(view, labels, classes, model, label_year, area_ids, year)
            images = dict(self._images) if self._render_key is not None and self._render_key[0] is pred else {}
            return ClassMapSnapshot(key, clf, pred, year, self.evaluation, str(self.state.accuracy), area_ids,
                                    images, self._render_key[1] if images else None)

    def offer(self, view: Any, snap: ClassMapSnapshot | None) -> None:
        """Let the next :meth:`retrain_now` show ``snap`` instead of refitting, if its key
        still holds exactly for ``view`` (else it refits as always).  The offer is used
        or dropped by that next call."""
        self._offered = None if snap is None else (view, snap)

    def _restore(self, view: Any, snap: ClassMapSnapshot) -> bool:
        """Show ``snap`` when nothing it rests on changed; True when shown."""
        s = self.session
        year = int(self.state.year)
        if snap.prediction_year != year:
            return False
        key = self._key(view, s.store.labels, tuple(s.store.classes.items()), self.state.model, s.label_year,
                        snap.area_ids, year)
        if key != snap.key:
            return False
        clf, pred = snap.classifier, snap.prediction
        area = s.area(year)
        with self._lock:
            self.classifier, self.evaluation = clf, snap.evaluation
            self.prediction, self.prediction_year = pred, year
            self._inputs = (area, clf) if pred.attrs.get("partial") else None
            self._trained = (s.store.labels, key[4], key[1], key[2], clf)
        self.restored += 1
        if snap.images and snap.render_key == self._render_state():
            for name, img in snap.images.items():
                s.emit(EVENT_LAYER, name, img)
            self._images, self._render_key = dict(snap.images), (pred, snap.render_key)
        else:
            self.render()
        self.state.accuracy = snap.accuracy
        self.state.status = "class map of this view shown again (labels and classifier unchanged)"
        s.emit(EVENT_TRAINED, clf)  # trust layer and learning curve follow the classifier, as after a refit
        return True

    def redraw(self) -> Future:
        """Queue a redraw of the class map as it stands (a new colour, threshold or
        confidence view); the status line says what was drawn."""
        return self.session.submit("render-classes", self._redraw, "redrawing the class map")

    def _redraw(self) -> str:
        pred = self.prediction
        cls = self.render()
        if cls is None or pred is None:
            return self.session.say("no class map to redraw: label at least two classes first")
        what = "confidence" if self.state.show_confidence else "classes"
        thr = float(self.state.confidence_threshold)
        msg = f"class map redrawn: showing {what}"
        if thr > 0:
            hidden = int(np.count_nonzero((pred["class"].values != 255) & (cls.values == 255)))
            msg += f"; {hidden:,} classified pixels below confidence {thr:.2f} hidden"
        return self.session.say(msg)
