"""Shared machinery of the projections: fit on a sample, transform block by block.

A projection is a scikit-learn style estimator (``__init__`` stores parameters, ``fit``
returns ``self``, learned attributes end in ``_``).  ``fit`` accepts an embeddings
DataArray (it draws a spatially stratified sample from the int8 codes) or an
``(n, 128)`` array; ``transform`` accepts the same and returns a ``(component, y, x)``
DataArray on the input's grid, or an ``(n, k)`` array.

The transform never holds the area as float32: it walks the int8 codes in blocks
(:func:`tessera_explore.io.codes.iter_blocks`) and keeps only the float32 output.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import xarray as xr
from sklearn.base import BaseEstimator, TransformerMixin

from .. import _schema
from ..exceptions import ProjectionError, VersionMismatchError
from .rgb import RGBStretch
from .sample import PixelSample, stratified_sample

__all__ = ["Projection", "components_array"]

#: Reading block (pixels per side) for the transform: 8 MiB of codes.
TRANSFORM_BLOCK = 256


def _blas_single_thread():
    """One BLAS thread for the small, skinny products here.

    A 128 x 128 covariance or an (n x 128) @ (128 x 3) product gains nothing from more
    threads, and OpenBLAS's spinning threads are 50-100x slower when another process
    holds a core (measured on the 2-core machine).
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


class Projection(TransformerMixin, BaseEstimator):
    """Base class; subclasses implement ``_fit_values``, ``_transform_values`` and may
    override ``_transform_codes`` to work on int8 codes directly."""

    #: name recorded in the output's attrs
    method = "projection"
    #: the smallest number of pixels a fit needs, beyond n_components
    _min_extra = 0
    #: threads that project blocks in ``transform``
    _workers = 2

    # -- to implement ---------------------------------------------------------------
    def _fit_values(self, X: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _transform_values(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _transform_codes(self, codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
        X = codes.astype(np.float32)
        X *= scales[:, None]
        return self._transform_values(X)

    def _default_sample(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- fitting --------------------------------------------------------------------
    def fit(self, X, y=None) -> Projection:
        """Fit on an embeddings DataArray (a stratified sample of ``sample`` pixels) or on
        an ``(n, 128)`` array of embeddings (rows with NaN are dropped)."""
        n_comp = int(self.n_components)
        if n_comp < 1:
            raise ProjectionError(f"n_components must be at least 1, got {self.n_components}")
        if isinstance(X, xr.DataArray):
            _schema.validate(X)
            n = self.sample if self.sample is not None else self._default_sample()
            smp = stratified_sample(X, int(n), random_state=self.random_state)
            what = f"the area ({X.sizes['y']} x {X.sizes['x']} px)"
            values = smp.values()
            self.dataset_version_ = str(X.attrs.get("dataset_version"))
            self.model_generation_ = str(X.attrs.get("model_generation"))
            self.dataset_variant_ = X.attrs.get("dataset_variant")
            self.source_ = str(X.attrs.get("source", ""))
            self.sample_rows_, self.sample_cols_ = smp.rows, smp.cols
        elif isinstance(X, PixelSample):
            values, what = X.values(), "the sample"
            self.dataset_version_ = self.model_generation_ = None
            self.source_ = ""
        else:
            values = np.asarray(X, dtype=np.float32)
            if values.ndim != 2:
                raise ProjectionError(f"expected an embeddings DataArray or an (n, bands) array, got shape {values.shape}")
            values = values[np.isfinite(values).all(axis=1)]
            what = "the array"
            self.dataset_version_ = self.model_generation_ = None
            self.source_ = ""
        self._check_values(values, n_comp, what)
        self.n_features_in_ = values.shape[1]
        with _blas_single_thread():
            self._fit_values(values)
            self.n_samples_fit_ = int(values.shape[0])
            self.stretch_ = RGBStretch().fit(self._fit_components(values))
        return self

    def _fit_components(self, values: np.ndarray) -> np.ndarray:
        """Components of the fitting sample (the colour stretch is fitted on them)."""
        return self._transform_values(values)

    def _check_values(self, values: np.ndarray, n_comp: int, what: str) -> None:
        n = values.shape[0]
        if n == 0:
            raise ProjectionError(f"cannot fit a {self.method} projection: {what} has no pixel with data (all NaN)")
        need = n_comp + 1 + self._min_extra
        if n < need:
            raise ProjectionError(
                f"cannot fit a {n_comp}-component {self.method} projection on {n} pixels with data in {what}; "
                f"it needs at least {need}"
            )
        if n_comp > values.shape[1]:
            raise ProjectionError(f"n_components={n_comp} exceeds the {values.shape[1]} embedding bands")
        def varies(v: np.ndarray) -> bool:
            scale = float(np.max(np.abs(v))) or 1.0
            return float(np.max(np.ptp(v, axis=0))) > 1e-6 * scale

        # a strided subset answers almost always; the full check only when it looks constant
        if not varies(values[:: max(1, n // 4096)]) and not varies(values):
            raise ProjectionError(
                f"cannot fit a {self.method} projection: every pixel with data in {what} holds the same embedding "
                "(a constant area has no directions of variation to show)"
            )

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_samples_fit_"):
            raise ProjectionError(f"this {type(self).__name__} is not fitted yet; call fit() or project() first")

    def check_compatible(self, da: xr.DataArray) -> None:
        """Refuse ``da`` if it is of another dataset (model generation or variant) than the
        embeddings this projection was fitted on (their feature spaces are unrelated), or
        has another number of bands."""
        self._check_fitted()
        nb = da.sizes.get("band")
        if nb is not None and nb != self.n_features_in_:
            raise ProjectionError(f"this {self.method} projection was fitted on {self.n_features_in_} bands, but the "
                                  f"embeddings have {nb}; fit a new projection on these embeddings")
        if self.dataset_version_ is None:
            return
        fitted = {"dataset_version": self.dataset_version_, "model_generation": self.model_generation_,
                  "dataset_variant": getattr(self, "dataset_variant_", None)}
        if not _schema.same_dataset(fitted, da.attrs):
            raise VersionMismatchError(
                f"this {self.method} projection was fitted on dataset {_schema.describe_dataset(fitted)}, but the "
                f"embeddings are {_schema.describe_dataset(da.attrs)}. Embeddings of different datasets live in "
                "unrelated feature spaces, so the colours would be meaningless; fit a new projection on these "
                "embeddings."
            )

    # -- transforming ---------------------------------------------------------------
    def transform(self, X):
        """Components of every pixel: a ``(component, y, x)`` float32 DataArray (NaN where
        there is no data) for an embeddings DataArray, an ``(n, k)`` array otherwise."""
        self._check_fitted()
        if not isinstance(X, xr.DataArray):
            values = np.asarray(X, dtype=np.float32)
            if values.ndim != 2 or values.shape[1] != self.n_features_in_:
                raise ProjectionError(f"expected an (n, {self.n_features_in_}) array, got shape {values.shape}")
            out = np.full((values.shape[0], int(self.n_components)), np.nan, np.float32)
            ok = np.isfinite(values).all(axis=1)
            if ok.any():
                out[ok] = self._transform_values(values[ok])
            return out
        _schema.validate(X)
        self.check_compatible(X)
        return components_array(self._transform_area(X), X, self)

    def _transform_area(self, da: xr.DataArray) -> np.ndarray:
        from ..io.codes import codes_window, iter_blocks

        # int8 codes straight from the tiles where there are tiles; float arrays (live
        # encoder output, computed arrays) are projected as they are, never re-quantised
        quantized = codes_window(da) is not None
        k = int(self.n_components)
        out = np.full((k, da.sizes["y"], da.sizes["x"]), np.nan, dtype=np.float32)

        def work(rows, cols, v, s):
            valid = (np.isfinite(s) & (s != 0)) if quantized else np.isfinite(v).all(axis=-1)
            if not valid.any():
                return
            if quantized:
                comps = self._transform_codes(v[valid], s[valid])
            else:
                comps = self._transform_values(v[valid])
            view = out[:, rows, cols]
            for i in range(k):
                view[i][valid] = comps[:, i]

        # blocks are read in this thread and projected in two workers (NumPy releases the
        # GIL in the casts and products); at most 3 blocks (24 MiB of codes) are in flight
        with _blas_single_thread(), ThreadPoolExecutor(max_workers=self._workers) as pool:
            pending: list = []
            for block in iter_blocks(da, block=TRANSFORM_BLOCK, quantized=quantized):
                pending.append(pool.submit(work, *block))
                if len(pending) > self._workers:
                    pending.pop(0).result()
            for f in pending:
                f.result()
        return out

    # sklearn: the transform output is not a plain feature table for DataArrays
    def fit_transform(self, X, y=None, **fit_params):
        return self.fit(X, y).transform(X)


def components_array(data: np.ndarray, like: xr.DataArray, proj: Projection) -> xr.DataArray:
    """Wrap ``(k, y, x)`` components on ``like``'s grid, with CRS and provenance."""
    import rioxarray  # noqa: F401  (registers .rio)

    k = data.shape[0]
    coords: dict[str, Any] = {"component": np.arange(1, k + 1, dtype=np.int16), "y": like.y, "x": like.x}
    if "year" in like.coords:
        coords["year"] = like.coords["year"]
    attrs = {
        "long_name": f"{proj.method.upper()} components of TESSERA embeddings",
        "projection": proj.method,
        "dataset_version": str(like.attrs.get("dataset_version")),
        "model_generation": str(like.attrs.get("model_generation")),
        "source": str(like.attrs.get("source", "")),
        "fitted_on": proj.source_ or "array",
    }
    attrs.update(proj.stretch_.to_attrs())
    out = xr.DataArray(data, dims=("component", "y", "x"), coords=coords, name="components", attrs=attrs)
    crs = like.rio.crs
    if crs is not None:
        out = out.rio.write_crs(crs)
        out = out.rio.write_transform(like.rio.transform())
    return out
