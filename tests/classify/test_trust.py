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
