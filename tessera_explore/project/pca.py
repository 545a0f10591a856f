"""PCA of embeddings: fitted on a stratified sample, applied straight to int8 codes.

A pixel's embedding is ``codes * scale``, so its components are
``(codes @ W) * scale - mean @ W``: the transform multiplies the int8 codes (cast to
float32 a few thousand pixels at a time) by the 128 x k loading matrix and never
builds the dequantised area.
"""

from __future__ import annotations

import numpy as np

from ._base import Projection

__all__ = ["PCAProjection"]

#: Pixels cast to float32 at a time in the transform (4 MiB).
_CHUNK = 8192


class PCAProjection(Projection):
    """Principal components of TESSERA embeddings.

    Parameters
    ----------
    n_components : number of components (3 for RGB).
    sample : pixels in the stratified fitting sample (default 100,000).
    random_state : seed of the sample (None: a fresh one each fit).

    Learned attributes: ``pca_`` (the fitted :class:`sklearn.decomposition.PCA`),
    ``components_`` (k x 128), ``mean_``, ``explained_variance_ratio_``,
    ``n_samples_fit_``, ``stretch_`` (an :class:`RGBStretch` fitted on the sample's
    components), ``dataset_version_`` and ``model_generation_`` of the fitted embeddings.
    """

    method = "pca"
    default_sample = 100_000

    def __init__(self, n_components: int = 3, *, sample: int | None = None, random_state=None,
                 from_stats: bool = False):
        self.n_components = n_components
        self.sample = sample
        self.random_state = random_state
        self.from_stats = from_stats

    def fit(self, X, y=None) -> PCAProjection:
        """Fit on a sample of ``X`` (see :meth:`Projection.fit`), or with ``from_stats=True``
        on the per-zone statistics of the store ``X`` was opened from (no pixel read)."""
        import xarray as xr

        if self.from_stats and isinstance(X, xr.DataArray):
            from .. import _schema
            from ..io.store import zone_statistics

            _schema.validate(X)
            n, s, m, smp = zone_statistics(X)
            self.fit_stats(n, s, m, sample=smp)
            self.dataset_version_ = str(X.attrs.get("dataset_version"))
            self.model_generation_ = str(X.attrs.get("model_generation"))
            self.dataset_variant_ = X.attrs.get("dataset_variant")
            self.source_ = str(X.attrs.get("store", X.attrs.get("source", "")))
            return self
        return super().fit(X, y)

    def fit_stats(self, count: int, total: np.ndarray, products: np.ndarray, *,
                  sample: np.ndarray | None = None) -> PCAProjection:
        """Fit from sums over pixels: ``count``, ``total`` (b,) and ``products`` (b, b) =
        sum of x x^T.  Sums of several zones or years add up.  The colour stretch is
        fitted on ``sample`` (a few hundred pixel embeddings), else on the components of
        points spread by the covariance.
        """
        from ..exceptions import ProjectionError

        n = float(count)
        total = np.asarray(total, np.float64)
        products = np.asarray(products, np.float64)
        k = int(self.n_components)
        if n < 2 or total.ndim != 1 or products.shape != (len(total), len(total)):
            raise ProjectionError(f"statistics need count >= 2, a (b,) sum and a (b, b) product sum; got count "
                                  f"{count}, {total.shape}, {products.shape}")
        if not 1 <= k <= len(total):
            raise ProjectionError(f"n_components={k} must lie in 1..{len(total)}")
        mean = total / n
        cov = (products - n * np.outer(mean, mean)) / (n - 1)  # the sample covariance, as sklearn's PCA
        cov = (cov + cov.T) / 2
        evals, evecs = np.linalg.eigh(cov)
        order = np.argsort(evals)[::-1]
        evals, evecs = np.clip(evals[order], 0, None), evecs[:, order]
        comps = evecs[:, :k].T
        # sklearn's sign convention (svd_flip on components): the largest |loading| positive
        signs = np.sign(comps[np.arange(k), np.argmax(np.abs(comps), axis=1)])
        comps *= np.where(signs == 0, 1, signs)[:, None]
        self.components_ = comps.astype(np.float32)
        self.mean_ = mean.astype(np.float32)
        self.explained_variance_ = evals[:k]
        self.explained_variance_ratio_ = evals[:k] / max(evals.sum(), 1e-30)
        self.pca_ = None
        self._wt = np.ascontiguousarray(self.components_.T)
        self._offset = (self.mean_ @ self._wt).astype(np.float32)
        self.n_features_in_ = len(total)
        self.n_samples_fit_ = int(count)
        self.dataset_version_ = self.model_generation_ = None
        self.source_ = "statistics"
        from .rgb import RGBStretch

        if sample is None or len(sample) < 2:
            rng = np.random.default_rng(0)
            sample = rng.multivariate_normal(mean, cov, size=2000, method="eigh").astype(np.float32)
        self.stretch_ = RGBStretch().fit(self._transform_values(np.asarray(sample, np.float32)))
        return self

    def _default_sample(self) -> int:
        return self.default_sample

    def _fit_values(self, X: np.ndarray) -> None:
        from sklearn.decomposition import PCA

        seed = self.random_state if isinstance(self.random_state, (int, np.integer)) else 0
        self.pca_ = PCA(n_components=int(self.n_components), random_state=seed).fit(X)
        self.components_ = self.pca_.components_.astype(np.float32)
        self.mean_ = self.pca_.mean_.astype(np.float32)
        self.explained_variance_ratio_ = self.pca_.explained_variance_ratio_
        self._wt = np.ascontiguousarray(self.components_.T)  # (128, k)
        self._offset = (self.mean_ @ self._wt).astype(np.float32)  # (k,)

    def _transform_values(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, np.float32) @ self._wt) - self._offset

    def _transform_codes(self, codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
        n, k = codes.shape[0], self._wt.shape[1]
        out = np.empty((n, k), dtype=np.float32)
        buf = np.empty((min(n, _CHUNK), codes.shape[1]), dtype=np.float32)
        for a in range(0, n, _CHUNK):
            b = min(n, a + _CHUNK)
            f = buf[: b - a]
            f[...] = codes[a:b]
            np.matmul(f, self._wt, out=out[a:b])
        out *= scales[:, None]
        out -= self._offset
        return out
