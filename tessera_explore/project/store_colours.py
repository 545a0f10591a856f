"""False colour that holds everywhere on a store: the colours of "explore anywhere".

:class:`StoreColours` fits one PCA per (year, depth) from a store's per-zone statistics
(``stretch_stats_*``, summed over every zone: no pixel read), with its colour stretch
fitted on the stored pixel sample, so every view of every zone gets the same colour for
the same embedding; :func:`false_colour` applies a fitted projection and its stretch, and
:func:`view_components` projects a view of a
:class:`~tessera_explore.io.viewport.ViewLoader` straight from its int8 blocks.

See ``docs/design/explore-anywhere.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from ..exceptions import StoreError
from ..io.viewport import resolve_store

__all__ = ["StoreColours", "false_colour", "view_components"]


class StoreColours:
    """False colour that holds everywhere: one PCA per depth for a store and year, fitted
    from the per-zone statistics of every zone of the store (no pixel read), with its
    colour stretch fitted on the store's pixel sample.

    ``projection(depth)`` gives the fitted
    :class:`~tessera_explore.project.pca.PCAProjection`; ``rgb(da)`` the RGBA of a view.
    """

    def __init__(self, store: Any, *, year: int | None = None, zones: Sequence[int] | None = None):
        self.store = resolve_store(store)
        self.year = self.store.check_year(year)
        self.zones = list(zones) if zones is not None else None
        self._fitted: dict[int, Any] = {}
        self._sums: tuple | None = None

    def _statistics(self):
        if self._sums is None:
            st, n, tot, prod, samples = self.store, 0, None, None, []
            for z in self.zones if self.zones is not None else st.zones:
                if z not in st.zones or not any(self.year in p.years for p in st._parts[z]):
                    continue
                try:
                    c, s, m = st.stats(z, self.year)
                except StoreError:
                    continue  # a zone without statistics: the others still fit
                if c <= 0:
                    continue
                n += c
                tot = s.copy() if tot is None else tot + s
                prod = m.copy() if prod is None else prod + m
                samples.append(st.sample(z, self.year))
            if n < 2:
                raise StoreError(f"{st.url} has no per-zone statistics (stretch_stats_*) for {self.year}: colours "
                                 "that hold everywhere need them")
            self._sums = (n, tot, prod, np.concatenate(samples) if samples else None)
        return self._sums

    def projection(self, depth: int | None = None):
        """The PCA (3 components) of the leading ``depth`` bands (default: all)."""
        from .. import _schema
        from .pca import PCAProjection

        n, tot, prod, smp = self._statistics()
        d = len(tot) if depth is None else int(depth)
        if d not in self._fitted:
            p = PCAProjection(3, from_stats=True).fit_stats(
                n, tot[:d], prod[:d, :d], sample=None if smp is None or len(smp) < 2 else smp[:, :d])
            p.dataset_version_ = self.store.version
            p.dataset_variant_ = self.store.variant
            p.model_generation_ = _schema.generation_of(self.store.version)
            p.source_ = f"{self.store.url} statistics ({self.year})"
            self._fitted[d] = p
        return self._fitted[d]

    def rgb(self, da: xr.DataArray) -> xr.DataArray:
        """RGBA uint8 ``(band, y, x)`` of a view (alpha 0 where there is no data)."""
        return false_colour(da, self.projection(int(da.sizes["band"])))


def false_colour(da: xr.DataArray, projection) -> xr.DataArray:
    """RGBA uint8 ``(band, y, x)`` of ``da`` through a fitted projection and its own
    stretch (``projection.stretch_``): the same embedding gets the same colour in every
    view (the stretch does not depend on the view).

    A view of a :class:`ViewLoader` through a PCA is projected straight from the int8
    blocks in memory, band-major (a ``(3 x d) @ (d x n)`` product per block, no pixel-major
    copy of the codes); anything else goes through ``projection.transform``.  Both give
    the same components up to float rounding."""
    from ._base import components_array
    from .rgb import to_rgb

    comps = view_components(da, projection)
    comps = projection.transform(da) if comps is None else components_array(comps, da, projection)
    return to_rgb(comps, stretch=projection)


def view_components(da: xr.DataArray, projection) -> np.ndarray | None:
    """The ``(component, y, x)`` float32 components (NaN where there is no data) of a view
    loaded by a :class:`~tessera_explore.io.viewport.ViewLoader`, through a fitted
    :class:`~tessera_explore.project.pca.PCAProjection`, computed from the int8 blocks in
    memory (:func:`~tessera_explore.io.viewport.project_view`, one BLAS thread per
    worker); None when ``da`` or ``projection`` is of another kind (use
    ``projection.transform``)."""
    from .. import _schema
    from ..io.viewport import project_view
    from ._base import _blas_single_thread
    from .pca import PCAProjection

    if not isinstance(projection, PCAProjection) or getattr(projection, "_wt", None) is None:
        return None
    if type(projection)._transform_codes is not PCAProjection._transform_codes:
        return None
    w = np.ascontiguousarray(projection._wt.T)  # (k, d)
    offset = projection._offset.astype(np.float32)

    def checked() -> None:
        _schema.validate(da)
        projection.check_compatible(da)

    with _blas_single_thread():
        return project_view(da, w, offset, projection._transform_codes, check=checked)
