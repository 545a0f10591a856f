"""Embeddings as colour: PCA / UMAP fitted on a sample, chunked transform, RGB stretch.

``project(da)`` fits a projection on a spatially stratified sample of the area's int8
codes and transforms every pixel block by block; ``to_rgb(components)`` turns the
components into RGBA with a percentile stretch fitted once.  Pass the fitted
projection back (``project(other, fitted=fitted)``) to colour another tile or year
with the same meaning.  ``umap`` is imported only when a UMAP projection is used.
"""

from __future__ import annotations

import sys
import types

import xarray as xr

from ..exceptions import ArgumentError, ArgumentTypeError
from ._base import Projection
from .pca import PCAProjection
from .rgb import RGBStretch, to_rgb
from .sample import PixelSample, stratified_sample
from .umap import UMAPProjection, umap_ready, warm_up_umap

__all__ = [
    "project",
    "to_rgb",
    "Projection",
    "PCAProjection",
    "UMAPProjection",
    "RGBStretch",
    "PixelSample",
    "stratified_sample",
    "warm_up_umap",
    "umap_ready",
    "METHODS",
]

METHODS = {"pca": PCAProjection, "umap": UMAPProjection}


def project(
    da: xr.DataArray,
    *,
    method: str = "pca",
    n_components: int | None = None,
    sample: int | None = None,
    random_state=None,
    fitted: Projection | None = None,
    from_stats: bool = False,
    **options,
) -> tuple[xr.DataArray, Projection]:
    """Project every pixel of an embeddings array to a few components.

    Parameters
    ----------
    da : embeddings DataArray (``open_embeddings``, ``embed_area``, the demo).
    method : ``"pca"`` (default) or ``"umap"``.
    n_components : components to keep (default 3 for PCA, 2 for UMAP).
    sample : pixels in the spatially stratified fitting sample (default 100,000 for
        PCA, 5,000 for UMAP).
    random_state : seed of the sample (and of UMAP's layout); None draws a fresh one.
    fitted : a projection fitted before (on another tile, area or year).  It is applied
        as it is (no refit), so colours mean the same thing everywhere; it must come
        from embeddings of the same dataset version (else ``VersionMismatchError``).
    from_stats : PCA only: fit on the per-zone statistics of the Zarr store ``da`` was
        opened from (mean and covariance of every valid pixel of the zones it touches, for
        its year) instead of a sample: no pixel is read for the fit, and neighbouring areas
        of one zone get the same colours.
    options : further parameters of the estimator, e.g. ``n_neighbors=`` or
        ``min_dist=`` for UMAP; unknown names raise ``TypeError``.

    Returns
    -------
    (components, fitted) : a float32 ``(component, y, x)`` DataArray on ``da``'s grid
    (NaN where there is no data; the projection's colour stretch in its attrs) and the
    fitted estimator (:class:`PCAProjection` or :class:`UMAPProjection`).

    Raises
    ------
    ProjectionError : an all-NaN or constant area, fewer pixels with data than the fit
        needs, or an unknown method.
    VersionMismatchError : ``fitted`` comes from another dataset version.
    """
    if fitted is not None:
        if not isinstance(fitted, Projection):
            raise ArgumentTypeError(f"fitted= must be a projection returned by project(), got {type(fitted).__name__}")
        given = {"n_components": n_components, "sample": sample, "random_state": random_state, **options}
        given = {k: v for k, v in given.items() if v is not None}
        if given:
            raise ArgumentTypeError(f"with fitted= the projection is applied as it is; drop {', '.join(sorted(given))}")
        if method != "pca" and method != fitted.method:
            raise ArgumentError(f"method={method!r} but the fitted projection is {fitted.method!r}")
        return fitted.transform(da), fitted
    cls = METHODS.get(str(method).lower())
    if cls is None:
        from ..exceptions import ProjectionError

        raise ProjectionError(f"unknown projection method {method!r}; choose one of {sorted(METHODS)}")
    params = dict(options)
    if from_stats:
        if cls is not PCAProjection:
            from ..exceptions import ProjectionError

            raise ProjectionError("from_stats=True fits a PCA; UMAP needs pixels")
        params["from_stats"] = True
    if n_components is not None:
        params["n_components"] = n_components
    est = cls(sample=sample, random_state=random_state, **params)
    est.fit(da)
    return est.transform(da), est


class _CallableModule(types.ModuleType):
    """``tessera_explore.project`` is both this package and the ``project`` verb.

    Why it stays this way: importing any submodule (``from tessera_explore.project import
    PCAProjection``, ``import tessera_explore.project.pca``) makes Python bind the package
    module as the attribute ``tessera_explore.project``, replacing the verb
    ``tessera_explore/__init__.py`` resolved.  Renaming the subpackage would not help, as the
    old import path has to keep working and would rebind the name the same way.  So the
    module itself is callable: ``te.project(da, ...)`` runs :func:`project` whichever object
    the attribute holds.  See docs/design/layout.md.
    """

    def __call__(self, da: xr.DataArray, **kwargs) -> tuple[xr.DataArray, Projection]:
        return project(da, **kwargs)

    __call__.__doc__ = project.__doc__


sys.modules[__name__].__class__ = _CallableModule
