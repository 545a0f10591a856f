"""Legends of overlays: class swatches or a colour bar, as small self-contained HTML."""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

from .colours import _blend, _lut

__all__ = ["legend_html"]


def _fmt(v: float) -> str:
    return f"{v:.3g}"

def legend_html(*, title: str = "", categories: Sequence[tuple[str, str]] | None = None,
                cmap: np.ndarray | str | Sequence[str] | None = None, vmin: float | None = None,
                vmax: float | None = None, units: str = "", swatch_opacity: float = 1.0) -> str:
    """A small self-contained HTML legend: class swatches, or a colour bar with its range.

    ``swatch_opacity`` below 1 paints each swatch as the layer shows it at that opacity
    over a mid grey (beside the full colour, as a thin bar), so the legend looks like the map."""
    box = ("font: 14px sans-serif; background: rgba(255,255,255,0.85); padding: 6px 8px; "
           "border-radius: 4px; line-height: 1.4")
    head = f"<div style='font-weight:bold'>{html.escape(title)}</div>" if title else ""
    if categories is not None:
        def swatch(c):
            if swatch_opacity >= 1:
                return (f"<span class='tessera-swatch' style='display:inline-block;width:14px;height:14px;"
                        f"margin-right:6px;vertical-align:middle;background:{html.escape(c)}'></span>")
            return (f"<span class='tessera-swatch' style='display:inline-block;width:14px;height:14px;"
                    f"margin-right:6px;vertical-align:middle;background:{_blend(c, swatch_opacity)};"
                    f"border-left:4px solid {html.escape(c)}'></span>")

        rows = "".join(f"<div>{swatch(c)}{html.escape(n)}</div>" for n, c in categories)
        return f"<div class='tessera-legend' style='{box}'>{head}{rows}</div>"
    lut = cmap if isinstance(cmap, np.ndarray) else _lut(cmap if cmap is not None else "viridis")
    stops = ", ".join(f"rgb({r},{g},{b}) {100 * i / 10:.0f}%" for i, (r, g, b) in
                      enumerate(lut[np.linspace(0, 255, 11).round().astype(int)]))
    unit = f" {html.escape(units)}" if units else ""
    bar = (f"<div style='width:160px;height:12px;background:linear-gradient(to right, {stops})'></div>"
           f"<div style='display:flex;justify-content:space-between;width:160px'>"
           f"<span>{_fmt(vmin if vmin is not None else 0)}{unit}</span>"
           f"<span>{_fmt(vmax if vmax is not None else 1)}{unit}</span></div>")
    return f"<div class='tessera-legend' style='{box}'>{head}{bar}</div>"
