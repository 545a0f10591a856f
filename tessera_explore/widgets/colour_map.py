"""The false colour: PCA components of every open year, and the map layer they colour.

The projection is fitted once, on the first year projected (a sample of
``session.projection_sample`` pixels), and applied to the others with ``fitted=`` so that a
colour means the same in every year.  The scatter shows the same components.
"""

from __future__ import annotations

from typing import Any

import xarray as xr

from .session import EVENT_AREA, EVENT_LAYER, Session

__all__ = ["FalseColour"]


class FalseColour:
    """PCA components and RGB of each year of one session (module docstring).

    Attributes
    ----------
    components : ``{year: (3, y, x) components}`` made so far.
    rgb : ``{year: RGB DataArray}`` (the stretch of the first year's projection).
    projection : the fitted PCA projection (None until the first year is projected).
    """

    def __init__(self, session: Session):
        self.session = session
        self.components: dict[int, xr.DataArray] = {}
        self.rgb: dict[int, xr.DataArray] = {}
        self.projection: Any = None
        session.on(EVENT_AREA, lambda arrays: self.install({}, {}, None))

    def install(self, components: dict, rgb: dict, projection: Any) -> None:
        """Use components made elsewhere (e.g. with the arrays of
        :meth:`Session.replace_arrays <tessera_explore.widgets.session.Session.replace_arrays>`)."""
        self.components, self.rgb, self.projection = dict(components), dict(rgb), projection

    def ensure(self, year: int) -> xr.DataArray:
        """The PCA components of ``year`` (computed once, with the first year's projection)."""
        from ..project import project, to_rgb

        s = self.session
        if year not in self.components:
            if self.projection is None:
                comps, fitted = project(s.arrays[year], method="pca", n_components=3, sample=s.projection_sample,
                                        random_state=0)
                self.projection = fitted
            else:  # the first year's projection and stretch: colours mean the same in every year
                comps, _ = project(s.arrays[year], fitted=self.projection)
            self.rgb[year] = to_rgb(comps)
            self.components[year] = comps
        return self.components[year]

    def show(self, year: int) -> None:
        """Draw the false colour layer of ``year`` (projected first if needed)."""
        from .overlay import overlay_image

        self.ensure(year)
        self.session.emit(EVENT_LAYER, "false_colour", overlay_image(self.rgb[year], **self.session.render_options))
