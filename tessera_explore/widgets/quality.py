"""How far to trust the explorer's class map: the trust layer and the learning curve.

* **Trust layer** (``state.show_trust``): :func:`~tessera_explore.trust` of the shown
  year with the latest classifier, computed on the worker after each retrain (a quiet
  job, only while the layer is on) and drawn as diagonal grey hatching over the pixels
  that are not trusted, darker by reason (uncertain, unfamiliar, both), so the class
  colours still show between the stripes.  The export writes its ``trust`` and
  ``reason`` maps (computed then if the layer was never shown).
* **Learning curve** (``state.learning_curve``): spatially blocked cross-validated
  accuracy (:func:`~tessera_explore.classify.evaluate.evaluate`, ``cv="spatial"``) of
  the first ``n`` labels in the order they were made, at the first ``n`` that can be
  scored, round numbers of labels (:data:`CURVE_GRID`) and all of them, at most
  :data:`CURVE_POINTS` points; recomputed after each retrain as a quiet job.  Points
  already scored are kept (keyed by the classifier recipe and a digest of the labels they
  rest on, :func:`prefix_digests`: a fixed 20 bytes a point, where a key holding the
  labels themselves made the cache grow with the square of the labels), and the grid
  does not move as labels are added, so a new label costs one more cross-validation,
  not six.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np

from ..exceptions import TesseraExploreError
from .session import EVENT_AREA, EVENT_EVALUATED, EVENT_LAYER, EVENT_TRAINED

__all__ = ["Quality", "hatch", "curve_html", "prefix_digests", "TRUST_COLORS", "CURVE_POINTS"]

#: reasons a pixel is not trusted (``trust``'s ``reason`` 1-3) and their hatch colours
TRUST_COLORS = {1: ("uncertain", "#9e9e9e"), 2: ("unfamiliar", "#616161"), 3: ("uncertain and unfamiliar", "#262626")}
#: points of the learning curve, at most
CURVE_POINTS = 8
#: numbers of labels the learning curve is scored at (besides its first and last point)
CURVE_GRID = (10, 15, 20, 30, 40, 50, 60, 80, 100, 125, 150, 200, 250, 300, 400, 500, 600, 800, 1000, 1500, 2000)
#: hatch period and stripe width, in image pixels (about screen pixels)
HATCH_PERIOD, HATCH_WIDTH = 6, 3


def prefix_digests(order: list, first: dict) -> list:
    """One digest (20 bytes) per prefix of ``order``: the ``k``-th digest names the first
    ``k`` labels, each by its id, class and geometry (``first[id] = (class, wkb)``).
    Chained, so all prefixes cost one pass over the labels."""
    h = hashlib.blake2b(digest_size=20)
    out = []
    for lid in order:
        cls, wkb = first[lid]
        for part in (str(lid).encode(), str(cls).encode(), bytes(wkb)):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
        out.append(h.copy().digest())
    return out


def hatch(img, period: int = HATCH_PERIOD, width: int = HATCH_WIDTH):
    """The overlay image with diagonal stripes: pixels off the stripes become transparent."""
    from .colours import encode_png

    rgba = img.rgba.copy()
    h, w = rgba.shape[:2]
    i, j = np.ogrid[:h, :w]
    off = ((i + j) % period) >= width
    rgba[off, 3] = 0
    return dataclasses.replace(img, rgba=rgba, png=encode_png(rgba))


def curve_html(points: list) -> str:
    """The learning curve as a small inline SVG and a table (no plotting library)."""
    if not points:
        return ""
    W, H, pad = 260, 90, 22
    ns = [p["n"] for p in points]
    n0, n1 = min(ns), max(ns)

    def sx(n):  # one point (or one size): in the middle
        return W / 2 if n1 == n0 else pad + (W - 2 * pad) * (n - n0) / (n1 - n0)

    def sy(a):
        return H - 14 - (H - 24) * a

    band = " ".join(f"{sx(p['n']):.1f},{sy(p['high']):.1f}" for p in points) + " " + " ".join(
        f"{sx(p['n']):.1f},{sy(p['low']):.1f}" for p in reversed(points))
    line = " ".join(f"{sx(p['n']):.1f},{sy(p['accuracy']):.1f}" for p in points)
    dots = "".join(f"<circle cx='{sx(p['n']):.1f}' cy='{sy(p['accuracy']):.1f}' r='2.5' fill='#1565c0'/>"
                   for p in points)
    if n1 == n0:  # one point: its interval as an error bar, one axis label under it
        p = points[-1]
        shape = (f"<line x1='{sx(n0):.1f}' x2='{sx(n0):.1f}' y1='{sy(p['low']):.1f}' y2='{sy(p['high']):.1f}' "
                 f"stroke='#90caf9' stroke-width='6'/>")
        axis = f"<text x='{W / 2:.0f}' y='{H - 2}' font-size='9' text-anchor='middle'>{n0} labels</text>"
    else:
        shape = (f"<polygon points='{band}' fill='#90caf9' fill-opacity='0.5'/>"
                 f"<polyline points='{line}' fill='none' stroke='#1565c0' stroke-width='1.5'/>")
        axis = (f"<text x='{pad}' y='{H - 2}' font-size='9' text-anchor='middle'>{n0}</text>"
                f"<text x='{W / 2:.0f}' y='{H - 2}' font-size='9' text-anchor='middle'>labels</text>"
                f"<text x='{W - pad}' y='{H - 2}' font-size='9' text-anchor='middle'>{n1}</text>")
    svg = (f"<svg width='{W}' height='{H}' style='background:#fafafa'>{shape}{dots}"
           f"<text x='2' y='{sy(1.0) + 4:.0f}' font-size='9'>1.0</text><text x='2' y='{sy(0.5) + 4:.0f}' "
           f"font-size='9'>0.5</text>{axis}</svg>")
    rows = "".join(f"<tr><td>{p['n']}</td><td>{p['accuracy']:.2f}</td><td>{p['low']:.2f}-{p['high']:.2f}</td></tr>"
                   for p in points)
    return (f"<div><b>learning curve</b> (spatial CV)</div>{svg}<table style='font-size:85%'>"
            f"<tr><th>labels</th><th>accuracy</th><th>95 % interval</th></tr>{rows}</table>")


def curve_sizes(first: int, last: int, points: int = CURVE_POINTS) -> list:
    """Numbers of labels of the learning curve: ``first``, the grid values between, ``last``
    (thinned evenly to ``points``; the grid values kept change only when one is added)."""
    mid = [g for g in CURVE_GRID if first < g < last]
    if len(mid) > points - 2:
        keep = np.unique(np.round(np.linspace(0, len(mid) - 1, max(points - 2, 1))).astype(int))
        mid = [mid[i] for i in keep]
    return sorted({first, *mid, last})


class Quality:
    """Trust layer and learning curve of one session (module docstring): ``session``, a
    :class:`~tessera_explore.widgets.session.Session`; ``classifying``, its
    :class:`~tessera_explore.widgets.classifying.Classifying` (the classifier judged)."""

    def __init__(self, session, classifying):
        self.session = session
        self.classifying = classifying
        self.state = session.state
        self.trust_map = None  # the latest trust Dataset
        self._trust_key: tuple | None = None  # (classifier, year) it was computed for (the object, not its id:
        # an id can be reused once the old classifier is freed)
        self._curve_cache: dict = {}
        session.on(EVENT_TRAINED, self._on_trained)
        session.on(EVENT_EVALUATED, self.remember)
        session.on(EVENT_AREA, lambda arrays: self.forget_scores())
        self.state.observe(self._on_toggle, names=["show_trust"])
        self.state.observe(self._on_year, names=["year"])

    def close(self) -> None:
        self.state.unobserve(self._on_toggle, names=["show_trust"])
        self.state.unobserve(self._on_year, names=["year"])

    def forget_scores(self) -> None:
        """Drop the learning curve's scores and the trust map (the embeddings changed, e.g.
        to full depth: what was scored on the others says nothing of them)."""
        self._curve_cache.clear()
        self.trust_map, self._trust_key = None, None

    # ------------------------------------------------------------------ events
    def _on_trained(self, clf) -> None:
        if clf is None:
            self.trust_map, self._trust_key = None, None
            self.session.emit(EVENT_LAYER, "trust", None)
            self.state.learning_curve = []
            return
        if self.state.show_trust:
            self.session.submit("trust", self._show_trust, "computing where to trust the map", quiet=True)
        self.session.submit("learning-curve", self._learning_curve, "scoring the learning curve", quiet=True)

    def _on_toggle(self, change) -> None:
        if change["new"]:
            self.show()
        else:
            self.session.emit(EVENT_LAYER, "trust", None)

    def _on_year(self, change) -> None:
        if self.state.show_trust and self.classifying.classifier is not None:
            self.session.submit("trust", self._show_trust, "computing where to trust the map", quiet=True)

    # ------------------------------------------------------------------ trust
    def show(self):
        """Compute (if needed) and draw the trust layer; None without a classifier."""
        if self.classifying.classifier is None and not self.session.trainable():
            self.session.say("the trust layer needs a classifier: label at least two classes first")
            return None
        return self.session.submit("trust", self._show_trust, "computing where to trust the map")

    def compute(self):
        """The trust Dataset of the shown year and the latest classifier (cached)."""
        from ..classify import trust

        clf = self.classifying.classifier
        if clf is None:
            return None
        year = int(self.state.year)
        key = (clf, year)
        if self._trust_key is None or self._trust_key[0] is not clf or self._trust_key[1] != year \
                or self.trust_map is None:
            self.trust_map = trust(self.session.area(year), clf)
            self._trust_key = key
        return self.trust_map

    def _show_trust(self) -> None:
        from .overlay import overlay_image

        ds = self.compute()
        if ds is None or not self.state.show_trust:
            return
        reason = ds["reason"]
        shown = reason.where((reason >= 1) & (reason <= 3), 255).astype(np.uint8)
        shown.attrs.clear()
        img = overlay_image(shown, categories={k: v for k, v in TRUST_COLORS.items()}, **self.session.render_options,
                            title="low trust")
        self.session.emit(EVENT_LAYER, "trust", hatch(img))
        valid = ds["has_data"].values == 1
        low = int(np.count_nonzero(valid & (ds["reason"].values >= 1) & (ds["reason"].values <= 3)))
        share = low / max(int(valid.sum()), 1)
        self.state.status = (f"low trust (hatched) on {low:,} pixels ({share:.0%} of those with data); "
                             "label there to improve the map")

    def export(self, folder: str) -> list:
        """The trust and reason maps as COGs (computed now if needed); [] without a classifier."""
        from ..classify import export_map

        ds = self.compute()
        if ds is None:
            return []
        return list(export_map(ds, os.path.join(folder, f"trust_{self._trust_key[1]}.tif"),
                               variables=["trust", "reason"], labels=self.session.store))

    # ------------------------------------------------------------------ learning curve
    def _order(self, clf) -> tuple[list, dict]:
        """The classifier's label ids in the order they were made, and for each its key
        part: class and geometry (an id freed by an undo may come back on another place)."""
        s = clf.samples_
        ids_in = set(np.unique(s.label_id).tolist())
        labs = [lab for lab in self.session.store.labels if lab.id in ids_in]
        order = [lab.id for lab in labs]
        cls: dict = {}
        for lid, y in zip(s.label_id, s.y):
            cls.setdefault(lid, str(y))
        first = {lab.id: (cls[lab.id], lab.geometry.wkb) for lab in labs}
        return order, first

    def remember(self, clf, ev) -> None:
        """The classifier's score on all the labels (the same spatial CV, the
        ``EVENT_EVALUATED`` event) is the curve's last point: kept, so the curve does not
        score it again."""
        order, first = self._order(clf)
        if not order:
            return
        lo, hi = ev.accuracy_interval
        key = (self.state.model, prefix_digests(order, first)[-1])
        self._curve_cache[key] = {"n": len(order), "accuracy": float(ev.accuracy), "low": float(lo),
                                  "high": float(hi)}

    def _learning_curve(self) -> list:
        from ..classify.evaluate import cv_readiness, evaluate

        clf = self.classifying.classifier
        if clf is None:
            self.state.learning_curve = []
            return []
        s = clf.samples_
        order, first = self._order(clf)
        # the first prefix that can be scored
        counts: dict = {}
        k0 = None
        for k, lid in enumerate(order, start=1):
            c = first[lid][0]
            counts[c] = counts.get(c, 0) + 1
            if cv_readiness(counts) is None:
                k0 = k
                break
        if k0 is None:
            self.state.learning_curve = []
            return []
        n = len(order)
        ks = curve_sizes(k0, n)
        area = self.session.area(self.session.label_year)
        model = self.state.model
        points = []
        digests = prefix_digests(order, first)
        for k in ks:
            key = (model, digests[k - 1])
            if key not in self._curve_cache:
                keep = np.isin(s.label_id, order[:k])
                sub = dataclasses.replace(s, X=s.X[keep], y=s.y[keep], label_id=s.label_id[keep], rows=s.rows[keep],
                                          cols=s.cols[keep], xy=s.xy[keep],
                                          classes=[c for c in s.classes if np.any(s.y[keep] == c)])
                try:
                    ev = evaluate(area, sub, model=model, cv="spatial")
                except TesseraExploreError:
                    self._curve_cache[key] = None
                else:
                    lo, hi = ev.accuracy_interval
                    self._curve_cache[key] = {"n": k, "accuracy": float(ev.accuracy), "low": float(lo),
                                              "high": float(hi)}
            if self._curve_cache[key] is not None:
                points.append(self._curve_cache[key])
        if self.classifying.classifier is clf:  # not replaced by a newer one meanwhile
            self.state.learning_curve = points
        return points
