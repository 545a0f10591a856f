"""trust: confidence x familiarity, no-data pixels, reasons, export."""

from __future__ import annotations

import numpy as np

import tessera_explore as te
from tessera_explore.testing import CLASSES


def test_trust_components(prepared24, scene24, draw, tmp_path):
    lon, lat, truth = scene24
    labels = draw(("built-up", "grassland", "cereal", "maize"), 4, seed=3)  # no forest labels
    clf = te.fit_classifier(prepared24, labels)
    ds = te.trust(prepared24, clf)
    valid = prepared24.valid.reshape(prepared24.shape)
    t = ds["trust"].values
    assert set(ds.data_vars) == {"trust", "confidence", "novelty", "familiarity", "has_data", "reason"}
    assert ((t >= 0) & (t <= 1)).all()
    assert (t[~valid] == 0).all() and (ds["reason"].values[~valid] == 4).all()
    assert (ds["has_data"].values == valid).all()
    assert np.isnan(ds["novelty"].values[~valid]).all()
    # trust is the product of its parts
    assert np.allclose(t[valid], (ds["confidence"].values * ds["familiarity"].values)[valid], atol=1e-6)
    # novelty matches a direct computation against the training pixels
    X = clf.samples_.X / np.linalg.norm(clf.samples_.X, axis=1, keepdims=True)
    flat = np.flatnonzero(valid.ravel())[:200]
    V = prepared24.codes[flat].astype(np.float32) * prepared24.inv_norm[flat, None]
    assert np.allclose(ds["novelty"].values.ravel()[flat], 1 - (V @ X.T).max(axis=1), atol=2e-2)
    # an unlabelled class (forest) is out of distribution: further from the labels
    forest = valid & (truth == CLASSES.index("forest"))
    labelled = valid & np.isin(truth, [CLASSES.index(c) for c in ("built-up", "grassland", "cereal", "maize")])
    nov = ds["novelty"].values
    assert np.median(nov[forest]) > np.median(nov[labelled])
    assert ds["familiarity"].values[forest].mean() < ds["familiarity"].values[labelled].mean()
    # trusted pixels are right more often than untrusted ones
    pred = te.predict_map(prepared24, clf)
    names = np.array(pred["class"].attrs["classes"])
    right = names[np.minimum(pred["class"].values, len(names) - 1)] == np.array(CLASSES)[truth]
    hi, lo = valid & (t >= 0.5), valid & (t < 0.5)
    assert hi.sum() > 50 and lo.sum() > 50
    assert right[hi].mean() > right[lo].mean() + 0.2
    # exportable as GeoTIFFs
    paths = te.export_map(ds, tmp_path / "trust.tif", variables=["trust", "reason"])
    import rasterio

    with rasterio.open(paths[0]) as src:
        assert np.allclose(src.read(1), t, equal_nan=True)


def test_knn_kernel_nearest_matches_numpy():
    """The kNN kernel's nearest-training-pixel similarity (one scan for the vote and the
    novelty) equals a plain numpy computation, and leaves the vote unchanged."""
    from tessera_explore.classify import _kernels

    rng = np.random.default_rng(0)
    n, m, nb = 700, 37, 128
    codes = rng.integers(-127, 128, (n, nb)).astype(np.int8)
    codes[5] = 0  # a valid pixel whose code is all zeros
    valid = rng.random(n) > 0.1
    valid[5] = True
    T = rng.integers(-127, 128, (m, nb)).astype(np.int16)
    t_inv = (1.0 / np.sqrt((T.astype(np.int64) ** 2).sum(axis=1))).astype(np.float32)
    t_cls = rng.integers(0, 3, m).astype(np.int64)
    outs = []
    for want_near in (False, True):
        cls, conf = np.empty(n, np.uint8), np.empty(n, np.float32)
        prob, near = np.empty((3, n), np.float32), np.full(n, -9.0, np.float32)
        _kernels.run(_kernels.knn_classify, codes, valid, T, t_inv, t_cls, 3, 4, True,
                     cls, conf, prob, True, near, want_near)
        outs.append((cls, conf, prob, near))
    for a, b in zip(outs[0][:3], outs[1][:3], strict=True):
        assert np.array_equal(a, b, equal_nan=True)
    assert (outs[0][3] == -9.0).all()  # not asked: not written
    near = outs[1][3]
    C = codes.astype(np.float64)
    nrm = np.linalg.norm(C, axis=1)
    U = C / np.where(nrm == 0, 1, nrm)[:, None]
    Tu = T / np.linalg.norm(T.astype(np.float64), axis=1)[:, None]
    expect = (U @ Tu.T).max(axis=1)
    assert np.isnan(near[~valid]).all()
    assert np.allclose(near[valid], expect[valid], atol=1e-5)
    assert near[5] == 0.0


def test_trust_novelty_same_with_and_without_the_knn_scan(prepared24, draw):
    """Novelty from the kNN scan (merged) equals the separate nearest-pixel scan."""
    import importlib

    from tessera_explore.classify import _kernels
    from tessera_explore.io.quant import quantize

    trust_mod = importlib.import_module("tessera_explore.classify.trust")

    clf = te.fit_classifier(prepared24, draw(("built-up", "forest", "cereal"), 5, seed=2))
    merged = te.trust(prepared24, clf)["novelty"].values.ravel()
    T = np.ascontiguousarray(quantize(np.asarray(clf.samples_.X, np.float32))[0], np.int16)
    t_inv = (1.0 / np.sqrt((T.astype(np.int64) ** 2).sum(axis=1))).astype(np.float32)
    sim = np.empty(prepared24.codes.shape[0], np.float32)
    _kernels.run(trust_mod._nearest_kernel(), prepared24.codes, prepared24.inv_norm, prepared24.valid, T, t_inv, sim)
    assert np.allclose(merged, 1.0 - sim, atol=1e-6, equal_nan=True)
