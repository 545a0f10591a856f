"""Legends of overlays: class swatches or a colour bar, as small self-contained HTML.

A colour bar has three ticks (low end, middle, high end) with their unit once, after
the high end; CF's dimensionless unit ``"1"`` (probabilities, confidences) is not
written, so a confidence bar reads ``0  0.5  1``, never ``0 1 ... 1 1``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

from .colours import blend_colours, colour_lut

__all__ = ["legend_html", "tick_labels"]

#: Units that mean "a plain number" (CF's "1" and friends): not written on a legend.
_DIMENSIONLESS = {"", "1", "-", "none", "dimensionless", "unitless"}


def _fmt(v: float) -> str:
    """A short tick label: 0, 0.5, 1, -0.25, 1200, 3.14e+05 (no trailing zeros)."""
    v = float(v)
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.3g}"
    return f"{v:.3f}".rstrip("0").rstrip(".")


def tick_labels(vmin: float, vmax: float, units: str = "", *, n: int = 3) -> list[str]:
    """``n`` evenly spaced tick labels from ``vmin`` to ``vmax``, the unit after the last
    one only, and none for dimensionless units (``"1"``)."""
    unit = str(units or "").strip()
    show = unit.lower() not in _DIMENSIONLESS
    labels = [_fmt(v) for v in np.linspace(float(vmin), float(vmax), max(2, int(n)))]
    if show:
        labels[-1] = f"{labels[-1]} {unit}"
    return labels

def legend_html(*, title: str = "", categories: Sequence[tuple[str, str]] | None = None,
                cmap: np.ndarray | str | Sequence[str] | None = None, vmin: float | None = None,
                vmax: float | None = None, units: str = "", swatch_opacity: float = 1.0,
                ticks: Sequence[str] | None = None) -> str:
    """A small self-contained HTML legend: class swatches, or a colour bar with its range.

    ``swatch_opacity`` below 1 paints each swatch as the layer shows it at that opacity
    over a mid grey (beside the full colour, as a thin bar), so the legend looks like the
    map (:func:`~tessera_explore.widgets.colours.painted_colour`).  A colour bar is
    labelled by :func:`tick_labels` (low, middle, high; ``units`` once, none for ``"1"``),
    or by ``ticks`` given here (e.g. ``("low", "high")``), spread evenly under the bar."""
    box = ("font: 14px sans-serif; background: rgba(255,255,255,0.85); padding: 6px 8px; "
           "border-radius: 4px; line-height: 1.4")
    head = f"<div style='font-weight:bold'>{html.escape(title)}</div>" if title else ""
    if categories is not None:
        def swatch(c):
            if swatch_opacity >= 1:
                return (f"<span class='tessera-swatch' style='display:inline-block;width:14px;height:14px;"
                        f"margin-right:6px;vertical-align:middle;background:{html.escape(c)}'></span>")
            return (f"<span class='tessera-swatch' style='display:inline-block;width:14px;height:14px;"
                    f"margin-right:6px;vertical-align:middle;background:{blend_colours(c, swatch_opacity)};"
                    f"border-left:4px solid {html.escape(c)}'></span>")

        rows = "".join(f"<div>{swatch(c)}{html.escape(n)}</div>" for n, c in categories)
        return f"<div class='tessera-legend' style='{box}'>{head}{rows}</div>"
    lut = cmap if isinstance(cmap, np.ndarray) else colour_lut(cmap if cmap is not None else "viridis")
    stops = ", ".join(f"rgb({r},{g},{b}) {100 * i / 10:.0f}%" for i, (r, g, b) in
                      enumerate(lut[np.linspace(0, 255, 11).round().astype(int)]))
    labels = list(ticks) if ticks is not None else tick_labels(vmin if vmin is not None else 0,
                                                               vmax if vmax is not None else 1, units)
    spans = "".join(f"<span class='tessera-tick'>{html.escape(str(t))}</span>" for t in labels)
    bar = (f"<div style='width:160px;height:12px;background:linear-gradient(to right, {stops})'></div>"
           f"<div style='display:flex;justify-content:space-between;width:160px;gap:6px;"
           f"white-space:nowrap'>{spans}</div>")
    return f"<div class='tessera-legend' style='{box}'>{head}{bar}</div>"
