"""UMAP projection (tiny: numba compiles on first use) and the once-per-process warm-up."""

from __future__ import annotations

import time

import numpy as np
import pytest

import tessera_explore as te
from tessera_explore.exceptions import VersionMismatchError
from tessera_explore.project import UMAPProjection, umap_ready, warm_up_umap


def test_umap_fits_a_sample_and_places_every_pixel(area, make_embeddings):
    _, open_ = area
    da = open_()
    t = time.perf_counter()
    comp, fitted = te.project(da, method="umap", sample=600, random_state=0, n_epochs=30, n_neighbors=8)
    assert isinstance(fitted, UMAPProjection) and time.perf_counter() - t < 120
    assert comp.dims == ("component", "y", "x") and comp.shape[0] == 2
    valid = np.isfinite(da.values).all(axis=0)
    np.testing.assert_array_equal(np.isfinite(comp.values).all(axis=0), valid)
    assert fitted.embedding_.shape == (fitted.n_samples_fit_, 2) and 300 < fitted.n_samples_fit_ <= 800
    # sampled pixels sit near their own layout position (a neighbour-weighted mean)
    pos = comp.values[:, fitted.sample_rows_, fitted.sample_cols_].T
    spread = np.ptp(fitted.embedding_, axis=0).max()
    assert np.median(np.linalg.norm(pos - fitted.embedding_, axis=1)) < 0.1 * spread
    # neighbourhoods survive: trustworthiness of the pixels' 2-D places
    from sklearn.manifold import trustworthiness

    x = da.values.reshape(128, -1).T[valid.ravel()][::7]
    y = comp.values.reshape(2, -1).T[valid.ravel()][::7]
    assert trustworthiness(x, y, n_neighbors=5) > 0.8
    # the same embeddings under another year give the same places; RGB works
    comp2, _ = te.project(da.assign_coords(year=2030), fitted=fitted)
    np.testing.assert_array_equal(comp2.values, comp.values)
    assert te.to_rgb(comp).shape == (4, *valid.shape)
    # another dataset version is refused
    other = make_embeddings(np.random.default_rng(0).normal(size=(128, 8, 8)), version="v2-2B-L~beta1")
    with pytest.raises(VersionMismatchError):
        te.project(other, fitted=fitted)


@pytest.mark.slow
def test_warm_up_runs_once_in_the_background_with_progress():
    seen = []
    t = time.perf_counter()
    w = warm_up_umap()
    assert time.perf_counter() - t < 1.0  # returns at once; the compile runs in a thread
    w.on_progress(lambda w: seen.append(w.stage))
    assert warm_up_umap() is w  # once per process
    assert w.wait(timeout=300)
    assert w.error is None and w.fraction == 1.0 and w.stage == "ready" and umap_ready()
    assert seen[-1] == "ready" and "ready" in repr(w)
