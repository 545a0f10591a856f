"""fit_classifier and predict_map: fast paths against scikit-learn, maps, bad input."""

from __future__ import annotations

import numpy as np
import pytest

import tessera_explore as te
from tessera_explore.classify import CosineKNN, LabelClassifier
from tessera_explore.exceptions import ClassifierError, VersionMismatchError
from tessera_explore.testing import CLASSES


def _valid_features(area):
    X = area.transpose("y", "x", "band").values.reshape(-1, 128)
    ok = ~np.isnan(X[:, 0])
    return X, ok


def _accuracy(res, scene):
    _, _, truth = scene
    names = res.attrs["classes"]
    cl = res["class"].values
    known = np.isin(truth, [CLASSES.index(n) for n in names]) & (cl != 255)
    lut = np.array([CLASSES.index(n) for n in names])
    return float((lut[cl[known]] == truth[known]).mean())


@pytest.mark.parametrize("model", ["knn", "logreg", "rf"])
def test_maps_find_the_true_classes(area24, prepared24, labels5, scene24, model):
    clf = te.fit_classifier(prepared24, labels5, model=model)
    res = te.predict_map(prepared24, clf, probabilities=True)
    assert res.attrs["fast_path"] == {"knn": "knn", "logreg": "linear", "rf": "generic"}[model]
    assert _accuracy(res, scene24) > 0.9
    nod = np.isnan(area24.isel(band=0).values)
    assert (res["class"].values[nod] == 255).all() and np.isnan(res.confidence.values[nod]).all()
    assert (res["class"].values[~nod] < 5).all()
    conf = res.confidence.values[~nod]
    assert ((conf > 0) & (conf <= 1 + 1e-6)).all()
    np.testing.assert_allclose(res.probability.sum("class_name").values[~nod], 1, atol=1e-5)
    np.testing.assert_allclose(res.probability.max("class_name").values[~nod], conf, atol=1e-6)
    assert res.rio.crs == area24.rio.crs and res["class"].rio.nodata == 255
    assert res.attrs["dataset_version"] == "v1" and res.attrs["year"] == 2024 and res.attrs["n_labels"] == 40
    # the DataArray path (block by block) gives the same map
    res2 = te.predict_map(area24, clf, block=32)
    np.testing.assert_array_equal(res2["class"].values, res["class"].values)
    np.testing.assert_allclose(res2.confidence.values, res.confidence.values, rtol=1e-5)


def test_knn_on_codes_matches_sklearn_cosine_knn(area24, prepared24, labels5):
    from sklearn.neighbors import KNeighborsClassifier

    s = te.sample_labels(prepared24, labels5)
    X, ok = _valid_features(area24)
    ref = KNeighborsClassifier(n_neighbors=5, metric="cosine", algorithm="brute").fit(s.X, s.y)
    clf = te.fit_classifier(prepared24, s, model=CosineKNN(weights="uniform"))  # 8 labels a class: k stays 5
    res = te.predict_map(prepared24, clf, probabilities=True)
    ours = np.array(res.attrs["classes"])[res["class"].values.ravel()[ok]]
    assert (ours == ref.predict(X[ok])).mean() > 0.999
    np.testing.assert_allclose(res.probability.values.reshape(5, -1)[:, ok].T, ref.predict_proba(X[ok]), atol=1e-6)
    # the numpy predict_proba of the estimator agrees with the kernel
    np.testing.assert_allclose(clf.predict_proba(X[ok]), ref.predict_proba(X[ok]), atol=1e-6)
    # similarity-weighted votes
    w = te.fit_classifier(prepared24, s, model=CosineKNN(n_neighbors=7, weights="similarity"))
    rw = te.predict_map(prepared24, w, probabilities=True)
    np.testing.assert_allclose(rw.probability.values.reshape(5, -1)[:, ok].T, w.predict_proba(X[ok]), atol=1e-4)


@pytest.mark.parametrize("classes", [("forest", "maize"), ("built-up", "forest", "grassland", "cereal", "maize")])
def test_linear_fast_path_matches_predict_proba(area24, prepared24, draw, classes):
    labels = draw(classes, 6, seed=3)
    clf = te.fit_classifier(prepared24, labels, model="logreg")
    res = te.predict_map(prepared24, clf, probabilities=True)
    X, ok = _valid_features(area24)
    np.testing.assert_allclose(res.probability.values.reshape(len(classes), -1)[:, ok].T,
                               clf.predict_proba(X[ok]), atol=2e-5)


def test_any_sklearn_classifier(prepared24, labels5, scene24):
    from sklearn.naive_bayes import GaussianNB

    clf = te.fit_classifier(prepared24, labels5, model=GaussianNB())
    assert isinstance(clf, LabelClassifier) and isinstance(clf.estimator_, GaussianNB)
    res = te.predict_map(prepared24, clf)
    assert res.attrs["fast_path"] == "generic" and res.attrs["model"] == "GaussianNB"
    assert _accuracy(res, scene24) > 0.8
    # a plain fitted estimator works too
    s = te.sample_labels(prepared24, labels5)
    res2 = te.predict_map(prepared24, GaussianNB().fit(s.X, s.y))
    np.testing.assert_array_equal(res2["class"].values, res["class"].values)


def test_bad_training_sets(prepared24, area24, labels5, scene24):
    one = [l for l in labels5 if l[2] == "forest"]
    with pytest.raises(ClassifierError, match="one class"):
        te.fit_classifier(prepared24, one)
    with pytest.raises(ClassifierError, match="only 1 label"):
        te.fit_classifier(prepared24, labels5[:1])
    with pytest.raises(ClassifierError, match="unknown model"):
        te.fit_classifier(prepared24, labels5, model="svm")
    with pytest.raises(ClassifierError, match="not a scikit-learn classifier"):
        te.fit_classifier(prepared24, labels5, model=object())
    # two labels, two classes: kNN with k > labels still works
    two = [labels5[0], labels5[-1]]
    res = te.predict_map(prepared24, te.fit_classifier(prepared24, two))
    assert set(np.unique(res["class"].values)) <= {0, 1, 255}
    # a classifier of another dataset version
    clf = te.fit_classifier(prepared24, labels5)
    other = area24.assign_attrs(dataset_version="v2-2B-L~beta1", model_generation="v2")
    with pytest.raises(VersionMismatchError, match="v2-2B-L~beta1"):
        te.predict_map(other, clf)
    with pytest.raises(ClassifierError, match="fitted"):
        te.predict_map(prepared24, object())


def test_map_writes_with_rioxarray(prepared24, labels5, tmp_path):
    import rasterio

    res = te.predict_map(prepared24, te.fit_classifier(prepared24, labels5))
    res["confidence"].rio.to_raster(tmp_path / "c.tif")
    with rasterio.open(tmp_path / "c.tif") as src:
        assert src.crs == prepared24.grid.crs and src.transform == prepared24.grid.transform
        np.testing.assert_array_equal(np.isnan(src.read(1)), np.isnan(res.confidence.values))


def test_large_polygons_are_thinned_for_training(area24, scene24):
    from tessera_explore import LabelStore, fit_classifier
    from tessera_explore.classify import sample_labels

    lon, lat, k = scene24
    store = LabelStore(classes=["forest", "cereal"])
    # a polygon over a quarter of the area, and points of the other class
    x0, x1 = np.quantile(lon, [0.2, 0.45])
    y0, y1 = np.quantile(lat, [0.2, 0.45])
    store.add_polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], "forest")
    for i in np.flatnonzero(k.ravel() == 4)[:3]:
        store.add_point(float(lon.ravel()[i]), float(lat.ravel()[i]), "cereal")
    full = sample_labels(area24, store)
    poly_id = store.labels[0].id
    assert (full.label_id == poly_id).sum() > 50
    thin = full.thin(50, seed=1)
    assert (thin.label_id == poly_id).sum() == 50 and (thin.label_id != poly_id).sum() == 3
    assert set(map(tuple, thin.xy)) <= set(map(tuple, full.xy))
    np.testing.assert_array_equal(thin.thin(50).y, thin.y)  # already thin: unchanged
    clf = fit_classifier(area24, store, max_per_label=50)
    assert len(clf.samples_) == 53 and clf.samples_.meta["max_per_label"] == 50
    with pytest.raises(ValueError, match="at least 1"):
        full.thin(0)


def test_knn_defaults_give_the_best_map_from_two_labels_a_class(prepared24, scene24, draw):
    """A simulated user clicks 2 pixels of each of 3 true classes (10 times, other pixels
    each time).  The default kNN must map the area as well as the best of the plain
    alternatives on those same labels; the old fixed k=5 could not (with 2 labels a class,
    3 of 5 neighbours are of another class)."""
    classes = ("forest", "cereal", "grassland")
    candidates = {"k=1": CosineKNN(1, "uniform", adaptive=False), "k=3": CosineKNN(3, "uniform", adaptive=False),
                  "k=5 fixed": CosineKNN(5, "uniform", adaptive=False),
                  "k=2 similarity": CosineKNN(2, "similarity", adaptive=False),
                  "all similarity": CosineKNN(100, "similarity", adaptive=False)}
    acc = {name: [] for name in ["default", *candidates]}
    for seed in range(10):
        labels = draw(classes, 2, seed=seed)
        s = te.sample_labels(prepared24, labels)
        for name, est in [("default", "knn"), *candidates.items()]:
            res = te.predict_map(prepared24, te.fit_classifier(prepared24, s, model=est))
            acc[name].append(_accuracy(res, scene24))
        smallest = np.unique(s.y, return_counts=True)[1].min()  # 2, or 1 where a pixel had no data
        assert te.fit_classifier(prepared24, s).estimator_.n_neighbors_ == smallest
    mean = {k: float(np.mean(v)) for k, v in acc.items()}
    best = max(v for k, v in mean.items() if k != "default")
    assert mean["default"] >= best - 0.01, mean
    assert mean["default"] > 0.9 and mean["k=5 fixed"] < 0.8, mean


def test_knn_k_adapts_to_the_smallest_class():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(9, 16)).astype(np.float32)
    y = np.array(["a"] * 7 + ["b"] * 2)
    assert CosineKNN().fit(X, y).n_neighbors_ == 2
    assert CosineKNN(adaptive=False).fit(X, y).n_neighbors_ == 5
    assert CosineKNN(n_neighbors=1).fit(X, y).n_neighbors_ == 1
    y = np.array(["a"] * 3 + ["b"] * 6)
    assert CosineKNN().fit(X, y).n_neighbors_ == 3
    # similarity weights break the tie an even k makes: the closer label wins
    p = CosineKNN(weights="similarity").fit(X[:2], ["a", "b"]).predict(X[:2] + 0.01)
    assert list(p) == ["a", "b"]
