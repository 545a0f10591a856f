"""UMAP projection (tiny: numba compiles on first use), the NumPy placement of pixels,
the fit's process exiting after the fit, and the once-per-process warm-up."""

from __future__ import annotations

import time

import numpy as np
import pytest

import tessera_explore as te
from tessera_explore.exceptions import ProjectionError, VersionMismatchError
from tessera_explore.project import UMAPProjection, umap_ready, warm_up_umap
from tessera_explore.project.umap import NeighbourIndex, membership_weights, run_in_fresh_process


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
    # the layout started from the principal components (init="pca", the default), and the
    # kernels umap-learn compiles are cached on disk for the next process
    import umap.layouts

    assert fitted.init == "pca" and UMAPProjection().n_epochs == 200
    assert type(umap.layouts._nb_optimize_layout_euclidean_single_epoch._cache).__name__ == "FunctionCache"
    # options it cannot honour are refused with a clear error (before any work)
    for bad in ({"init": "umap"}, {"metric": "manhattan"}, {"init": np.zeros((3, 2))}):
        with pytest.raises(ProjectionError):
            te.project(da, method="umap", sample=300, random_state=0, n_epochs=5, **bad)


def test_neighbour_index_finds_the_nearest_sample_pixels():
    """The inverted-file search against exact neighbours, on clustered data like embeddings."""
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(12, 16)) * 4
    S = (centres[rng.integers(0, 12, 3000)] + rng.normal(size=(3000, 16))).astype(np.float32)
    Q = (centres[rng.integers(0, 12, 4000)] + rng.normal(size=(4000, 16))).astype(np.float32)
    nn = NearestNeighbors(n_neighbors=15).fit(S)
    _, knn = nn.kneighbors(S)
    idx, dist = NeighbourIndex(S, knn).query(Q, 15)
    d_true, i_true = nn.kneighbors(Q)
    assert idx.shape == (4000, 15) and (np.diff(dist, axis=1) >= 0).all()
    np.testing.assert_allclose(dist, np.linalg.norm(Q[:, None, :] - S[idx], axis=2), rtol=1e-4, atol=1e-4)
    recall = (idx[:, :, None] == i_true[:, None, :]).any(axis=2).mean()
    assert recall > 0.85
    assert np.mean(dist[:, 0] <= d_true[:, 0] + 1e-4) > 0.9  # the nearest one almost always exact
    # a query that is a sample pixel finds itself first
    i0, d0 = NeighbourIndex(S, knn).query(S[:50], 15)
    assert (i0[:, 0] == np.arange(50)).all() and (d0[:, 0] < 0.05 * d0[:, 1]).all()  # float32 round-off only


def test_membership_weights_are_umaps_transform_weights():
    """Weights of all neighbours but the nearest sum to log2(k); the nearest weighs most;
    a pixel's weights do not depend on the other rows of its batch."""
    rng = np.random.default_rng(1)
    d = np.sort(rng.gamma(2.0, 1.0, size=(500, 15)).astype(np.float32), axis=1)
    w = membership_weights(d)
    np.testing.assert_allclose(w[:, 1:].sum(axis=1), np.log2(15), rtol=1e-3)
    assert (np.diff(w, axis=1) <= 1e-7).all() and (w > 0).all() and (w <= 1).all()
    np.testing.assert_array_equal(membership_weights(d[:7]), w[:7])
    d0 = d.copy()
    d0[:, 0] = 0  # a pixel identical to a sample pixel: weight 1 for it
    assert (membership_weights(d0)[:, 0] == 1).all()


def test_the_fitting_process_exits_after_the_fit():
    """run_in_fresh_process: the result comes back, and the process that made it is gone
    (no pool worker left holding the fit's memory); its errors come back too."""
    import os

    import psutil

    pid = run_in_fresh_process(os.getpid)
    assert pid != os.getpid()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not any(c.pid == pid for c in psutil.Process().children(recursive=True))
    with pytest.raises(ValueError):
        run_in_fresh_process(int, "not a number")


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
