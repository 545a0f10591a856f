"""similarity: one pixel, several (mean, max), negatives, euclidean, threshold."""

from __future__ import annotations

import numpy as np
import pytest
from pyproj import Transformer

import tessera_explore as te
from tessera_explore.exceptions import LabelError


@pytest.fixture(scope="module")
def flat(area24):
    X = area24.transpose("y", "x", "band").values.reshape(-1, 128).astype(np.float64)
    return X


def _pix(area, n, seed=0):
    rng = np.random.default_rng(seed)
    ok = np.flatnonzero(~np.isnan(area.isel(band=0).values.ravel()))
    idx = rng.choice(ok, n, replace=False)
    W = area.sizes["x"]
    tr = Transformer.from_crs(area.rio.crs, 4326, always_xy=True)
    pts = [tr.transform(float(area.x[i % W]), float(area.y[i // W])) for i in idx]
    return idx, pts


def _cos(X, q):
    with np.errstate(invalid="ignore"):
        return X @ q / np.linalg.norm(X, axis=1) / np.linalg.norm(q)


def test_one_pixel(area24, prepared24, flat):
    (i,), (p,) = _pix(area24, 1)
    sim = te.similarity(prepared24, p)
    assert sim.name == "similarity" and sim.dims == ("y", "x") and sim.rio.crs == area24.rio.crs
    assert sim.values.ravel()[i] == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(sim.values.ravel(), _cos(flat, flat[i]), atol=1e-5)
    assert np.isnan(sim.values.ravel()[np.isnan(flat[:, 0])]).all()
    np.testing.assert_allclose(te.similarity(area24, p, block=40).values, sim.values, atol=1e-6)
    # a vector query gives the same
    np.testing.assert_allclose(te.similarity(prepared24, flat[i].astype(np.float32)).values, sim.values, atol=1e-6)


def test_several_pixels_mean_max_and_negatives(area24, prepared24, flat):
    idx, pts = _pix(area24, 4, seed=1)
    U = flat[idx] / np.linalg.norm(flat[idx], axis=1, keepdims=True)
    mean = te.similarity(prepared24, pts[:3]).values.ravel()
    np.testing.assert_allclose(mean, _cos(flat, U[:3].mean(0)), atol=1e-5)
    mx = te.similarity(prepared24, pts[:3], reduce="max").values.ravel()
    np.testing.assert_allclose(mx, np.max([_cos(flat, u) for u in U[:3]], axis=0), atol=1e-5)
    pn = te.similarity(prepared24, pts[:2], negatives=[pts[3]]).values.ravel()
    ref = _cos(flat, U[:2].mean(0)) - _cos(flat, U[3])
    np.testing.assert_allclose(pn, ref, atol=1e-5)
    pnm = te.similarity(prepared24, pts[:2], negatives=pts[2:], reduce="max").values.ravel()
    ref = np.max([_cos(flat, u) for u in U[:2]], axis=0) - np.max([_cos(flat, u) for u in U[2:]], axis=0)
    np.testing.assert_allclose(pnm, ref, atol=1e-5)


def test_euclidean(area24, prepared24, flat):
    idx, pts = _pix(area24, 2, seed=2)
    d = te.similarity(prepared24, pts[0], metric="euclidean")
    assert d.name == "distance"
    np.testing.assert_allclose(d.values.ravel(), np.linalg.norm(flat - flat[idx[0]], axis=1), atol=2e-3, rtol=1e-4)
    dm = te.similarity(area24, pts, metric="euclidean", reduce="max").values.ravel()
    ref = np.fmin(np.linalg.norm(flat - flat[idx[0]], axis=1), np.linalg.norm(flat - flat[idx[1]], axis=1))
    np.testing.assert_allclose(dm, ref, atol=2e-3, rtol=1e-4)


def test_threshold_mask(area24, prepared24):
    _, (p,) = _pix(area24, 1, seed=3)
    ds = te.similarity(prepared24, p, threshold=0.8)
    s, m = ds["similarity"].values, ds["mask"].values
    assert m.dtype == np.uint8 and ds["mask"].rio.nodata == 255
    np.testing.assert_array_equal(m == 1, s >= 0.8)
    np.testing.assert_array_equal(m == 255, np.isnan(s))
    assert 0 < (m == 1).sum() < (m != 255).sum()
    d = te.similarity(prepared24, p, metric="euclidean", threshold=1.0)
    np.testing.assert_array_equal(d["mask"].values == 1, d["distance"].values <= 1.0)


def test_bad_queries(area24, prepared24):
    water = np.argwhere(np.isnan(area24.isel(band=0).values))[0]
    tr = Transformer.from_crs(area24.rio.crs, 4326, always_xy=True)
    wl = tr.transform(float(area24.x[water[1]]), float(area24.y[water[0]]))
    with pytest.raises(LabelError, match="outside"):
        te.similarity(prepared24, (5.0, 45.0))
    with pytest.raises(LabelError, match="no-data"):
        te.similarity(area24, wl)
    with pytest.raises(LabelError, match="expected"):
        te.similarity(prepared24, "forest")
    with pytest.raises(ValueError, match="metric"):
        te.similarity(prepared24, (0.15, 52.05), metric="manhattan")


def test_query_from_store_labels(area24, prepared24):
    from tessera_explore.classify import LabelStore

    idx, pts = _pix(area24, 3, seed=4)
    store = LabelStore(classes=["x", "y"])
    for p in pts[:2]:
        store.add_point(*p, "x")
    store.add_point(*pts[2], "y")
    xs = [l for l in store if l.cls == "x"]
    np.testing.assert_allclose(te.similarity(prepared24, xs, negatives=[store.labels[2]]).values,
                               te.similarity(prepared24, pts[:2], negatives=[pts[2]]).values, atol=1e-6)
