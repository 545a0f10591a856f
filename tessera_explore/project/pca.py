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

    def __init__(self, n_components: int = 3, *, sample: int | None = None, random_state=None):
        self.n_components = n_components
        self.sample = sample
        self.random_state = random_state

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
