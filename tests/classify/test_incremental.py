"""IncrementalKNNMap: the map updated label by label equals a full refit + predict_map."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import tessera_explore as te
from tessera_explore.classify import CosineKNN, IncrementalKNNMap, LabelStore, _kernels
from tessera_explore.classify.area import PreparedArea
from tessera_explore.exceptions import ArgumentError, ClassifierError


def _full(area, clf, pixels=None):
    res = te.predict_map(area, clf)
    cls, conf = res["class"].values.ravel(), res["confidence"].values.ravel()
    if pixels is not None:
        cls, conf = cls[pixels], conf[pixels]
    return cls, conf


def _same(inc_result, full_result):
    (c1, f1), (c2, f2) = inc_result, full_result
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_allclose(f1, f2, rtol=0, atol=1e-6, equal_nan=True)


def _fit(area, store, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # labels on no-data pixels are skipped
        return te.fit_classifier(area, store, **kw)


def _pixel_lonlat(scene, cls_index, n, seed):
    lon, lat, truth = scene
    idx = np.random.default_rng(seed).choice(np.flatnonzero(truth.ravel() == cls_index), n, replace=False)
    return [(float(lon.ravel()[i]), float(lat.ravel()[i])) for i in idx]


def _box(scene, qx, qy):
    lon, lat, _ = scene
    x0, x1 = np.quantile(lon, qx)
    y0, y1 = np.quantile(lat, qy)
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def test_a_session_of_clicks_matches_a_full_refit_at_every_step(prepared24, scene24):
    """Points one by one (one class below 5 samples for a while: k changes), a polygon of
    many pixels, undo, removing a label, renaming and removing a class: after every
    change the incremental map equals predict_map of a classifier refit on all labels."""
    store = LabelStore(classes=["forest", "cereal", "maize"])
    inc = IncrementalKNNMap(prepared24)
    forest = [(*p, "forest") for p in _pixel_lonlat(scene24, 2, 8, seed=1)]
    cereal = [(*p, "cereal") for p in _pixel_lonlat(scene24, 4, 8, seed=2)]
    maize = [(*p, "maize") for p in _pixel_lonlat(scene24, 5, 5, seed=3)]
    # two classes grow to 6 samples each (k = 1 ... 5), then a third class starts with 1
    # sample (k drops to 1) and grows to 5 (k back to 5)
    clicks = [c for pair in zip(forest[:6], cereal[:6]) for c in pair]
    clicks += [maize[0], cereal[6], maize[1], forest[6], forest[7], maize[2], cereal[7], maize[3], maize[4]]
    ks, modes = [], []

    def step():
        clf = _fit(prepared24, store)
        _same(inc.update(clf), _full(prepared24, clf))
        ks.append(clf.estimator_.n_neighbors_)
        modes.append(inc.last_update["mode"])
        return clf

    for i, (lon, lat, name) in enumerate(clicks):
        store.add_point(lon, lat, name)
        if i >= 1:
            step()
            if i >= 2:
                assert inc.last_update["added"] == 1 and inc.last_update["removed"] == 0
    assert ks == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 5, 1, 1, 2, 2, 2, 3, 3, 4, 5]  # k crossed 5 both ways
    # a polygon of many pixels, added in one batch
    store.add_polygon(_box(scene24, [0.2, 0.4], [0.2, 0.4]), "forest")
    clf = step()
    assert inc.last_update["added"] > 50 and len(clf.samples_) == inc.n_samples
    # undo the polygon, remove a point label (only pixels that had them as neighbours are rescanned)
    store.undo()
    step()
    assert inc.last_update["removed"] > 50 and inc.last_update["added"] == 0
    store.remove(store.labels[3].id)
    step()
    assert inc.last_update["removed"] == 1
    assert 0 < inc.last_update["pixels_rescanned"] < prepared24.valid.sum()
    # rename a class (its index moves: "zea" sorts last), then remove one
    store.rename_class("maize", "zea")
    step()
    assert list(inc.classes) == ["cereal", "forest", "zea"]
    store.remove_class("zea")
    step()
    assert list(inc.classes) == ["cereal", "forest"]
    assert set(modes) == {"incremental"}


def _tie_area(prepared24, n_codes=6, seed=0):
    """The grid of prepared24 with every pixel one of a few code vectors (so that many
    similarities tie exactly), a few pixels without data."""
    rng = np.random.default_rng(seed)
    n, nb = prepared24.codes.shape
    pool = rng.integers(-127, 128, (n_codes, nb)).astype(np.int8)
    codes = np.ascontiguousarray(pool[rng.integers(0, n_codes, n)])
    scales = rng.uniform(0.01, 0.02, n).astype(np.float32)
    scales[rng.random(n) < 0.03] = np.nan
    valid = np.isfinite(scales)
    inv = (1.0 / np.sqrt((codes.astype(np.int64) ** 2).sum(axis=1))).astype(np.float32)
    inv[~valid] = 0
    return PreparedArea(prepared24.grid, codes, scales, inv, valid)


def _pixels_X(area, idx):
    return area.codes[idx].astype(np.float32) * area.scales[idx, None]


@pytest.mark.parametrize("weights", ["similarity", "uniform"])
def test_ties_are_broken_as_the_full_path_breaks_them(prepared24, weights):
    """On an area of six distinct codes nearly every pixel has exact ties in similarity
    between classes at its k-th neighbour: samples added in batches and removed, in an
    order unrelated to their classes, still give predict_map's map, and predict_map's
    map does not depend on the order of the training samples."""
    area = _tie_area(prepared24)
    rng = np.random.default_rng(1)
    pool = rng.choice(np.flatnonzero(area.valid), 60, replace=False)
    names = np.array(["b", "c", "a"], object)[rng.integers(0, 3, 60)]
    inc = IncrementalKNNMap(area, n_neighbors=4, weights=weights)
    held: list[int] = []
    ids: dict[int, int] = {}
    for batch in (slice(0, 7), slice(7, 8), slice(8, 30), slice(30, 31), slice(31, 60)):
        sel = pool[batch]
        new = inc.add(_pixels_X(area, sel), names[batch])
        ids.update(zip(range(batch.start, batch.stop), new.tolist()))
        held.extend(range(batch.start, batch.stop))
        est = CosineKNN(n_neighbors=4, weights=weights).fit(_pixels_X(area, pool[held]), names[held])
        _same(inc.predict(), _full(area, est))
    # the ties are real: many pixels have equal similarities at the 4th and 5th neighbour across classes
    top_s, top_id = inc._top_s, inc._top_id
    assert inc._K == 4 and (top_s[area.valid, 3] == top_s[area.valid, 2]).mean() > 0.5
    # the full path ignores the order of the samples
    perm = rng.permutation(held)
    est2 = CosineKNN(n_neighbors=4, weights=weights).fit(_pixels_X(area, pool[perm]), names[perm])
    _same(_full(area, est2), _full(area, est))
    # removal in several steps
    for drop in (held[5:6], held[10:30], held[:3]):
        inc.remove([ids[i] for i in drop])
        held = [i for i in held if i not in drop]
        est = CosineKNN(n_neighbors=4, weights=weights).fit(_pixels_X(area, pool[held]), names[held])
        _same(inc.predict(), _full(area, est))
    assert top_id is inc._top_id  # lists updated in place, not rebuilt


def test_a_subset_of_pixels_and_moving_the_view(prepared24, scene24):
    """Only the pixels on screen are held; moving the view keeps the lists of pixels
    still shown and computes the others."""
    h, w = prepared24.shape
    view = (np.arange(5, 30)[:, None] * w + np.arange(3, 40)[None, :]).ravel()
    store = LabelStore(classes=["forest", "cereal", "built-up"])
    for (lon, lat), name in zip(_pixel_lonlat(scene24, 2, 4, 5) + _pixel_lonlat(scene24, 4, 4, 6)
                                + _pixel_lonlat(scene24, 1, 2, 7), ["forest"] * 4 + ["cereal"] * 4 + ["built-up"] * 2):
        store.add_point(lon, lat, name)
    inc = IncrementalKNNMap(prepared24, pixels=view)
    clf = _fit(prepared24, store)
    out = inc.update(clf)
    assert out[0].shape == (view.size,)
    _same(out, _full(prepared24, clf, view))
    store.add_point(*_pixel_lonlat(scene24, 1, 1, 8)[0], "built-up")
    clf = _fit(prepared24, store)
    _same(inc.update(clf), _full(prepared24, clf, view))
    assert inc.last_update["dot_products"] == prepared24.valid[view].sum()
    moved = view + 9 * w + 2  # 9 rows down, 2 columns right: most pixels still shown
    inc.set_pixels(moved)
    assert 0 < inc.last_update["pixels_rescanned"] < moved.size / 2
    _same(inc.predict(), _full(prepared24, clf, moved))
    # the Dataset of a subset: the held pixels as predict_map has them, the rest 255 / NaN
    ds = inc.dataset(clf)
    full = te.predict_map(prepared24, clf)
    np.testing.assert_array_equal(ds["class"].values.ravel()[moved], full["class"].values.ravel()[moved])
    rest = np.setdiff1d(np.arange(h * w), moved)
    assert (ds["class"].values.ravel()[rest] == 255).all() and ds.attrs["classes"] == full.attrs["classes"]


def test_an_update_compares_only_the_new_samples_with_each_pixel(prepared24, scene24, monkeypatch):
    """The work of a click is pixels x new samples, whatever the number of labels held:
    counted on the kernel calls themselves."""
    calls = []
    real_run = _kernels.run

    def spy(kernel, *args):
        if kernel is _kernels.knn_merge:
            calls.append((len(args[2]), args[3].shape[0]))  # pixels scanned, samples compared
        return real_run(kernel, *args)

    store = LabelStore(classes=["forest", "cereal"])
    for (lon, lat), name in zip(_pixel_lonlat(scene24, 2, 30, 9) + _pixel_lonlat(scene24, 4, 30, 10),
                                ["forest"] * 30 + ["cereal"] * 30):
        store.add_point(lon, lat, name)
    inc = IncrementalKNNMap(prepared24)
    inc.update(_fit(prepared24, store))
    n_valid = int(prepared24.valid.sum())
    monkeypatch.setattr(_kernels, "run", spy)
    per_click = []
    for lon, lat in _pixel_lonlat(scene24, 2, 3, 11):
        store.add_point(lon, lat, "forest")
        calls.clear()
        clf = _fit(prepared24, store)
        _same(inc.update(clf), _full(prepared24, clf))
        per_click.append(list(calls))
    assert len(store.labels) == 63
    for merged in per_click:
        assert merged == [(n_valid, 1)]  # every pixel against the one new sample, not the 60 others
    assert inc.last_update["dot_products"] == n_valid
    # k, weighting and classes unchanged: only the pixels whose neighbours changed are voted again
    assert 0 < inc.last_update["pixels_voted"] < n_valid / 4


def test_other_models_and_a_larger_k_fall_back_to_a_full_prediction(prepared24, labels5):
    inc = IncrementalKNNMap(prepared24)
    knn = _fit(prepared24, labels5[:20])
    _same(inc.update(knn), _full(prepared24, knn))
    logreg = _fit(prepared24, labels5, model="logreg")
    _same(inc.update(logreg), _full(prepared24, logreg))
    assert inc.last_update["mode"] == "full" and inc.last_update["fast_path"] == "linear"
    # back to kNN: the lists kept from before catch up with the labels added meanwhile
    knn = _fit(prepared24, labels5)
    _same(inc.update(knn), _full(prepared24, knn))
    assert inc.last_update["mode"] == "incremental" and inc.last_update["added"] == 20
    # k above the K held: rebuilt; below: the lists serve, and so does a change of weighting
    big = _fit(prepared24, labels5, model=CosineKNN(n_neighbors=7))
    _same(inc.update(big), _full(prepared24, big))
    assert inc.last_update["mode"] == "rebuilt" and inc._K == 7
    small = _fit(prepared24, labels5, model=CosineKNN(n_neighbors=3, weights="uniform"))
    _same(inc.update(small), _full(prepared24, small))
    assert inc.last_update["mode"] == "incremental" and inc.last_update["dot_products"] == 0


def test_nearest_matches_the_knn_scan(prepared24, labels5):
    clf = _fit(prepared24, labels5)
    near = np.empty(prepared24.shape, np.float32)
    te.predict_map(prepared24, clf, _nearest=near)
    inc = IncrementalKNNMap(prepared24)
    inc.update(clf)
    np.testing.assert_allclose(inc.nearest(), near.ravel(), rtol=0, atol=1e-6, equal_nan=True)


def test_bad_input(prepared24, labels5):
    n = prepared24.codes.shape[0]
    with pytest.raises(ArgumentError, match="must lie in"):
        IncrementalKNNMap(prepared24, pixels=[0, n]).predict()
    with pytest.raises(ArgumentError, match="integer"):
        IncrementalKNNMap(prepared24, pixels=np.array([0.5])).predict()
    inc = IncrementalKNNMap(prepared24)
    with pytest.raises(ClassifierError, match="no training samples"):
        inc.predict()
    with pytest.raises(ClassifierError, match="X must be"):
        inc.add(np.ones((2, 3), np.float32), ["a", "b"])
    ids = inc.add(_pixels_X(prepared24, np.flatnonzero(prepared24.valid)[:2]), ["a", "b"])
    with pytest.raises(ArgumentError, match="no sample with id"):
        inc.remove([int(ids.max()) + 1])
    with pytest.raises(ClassifierError, match="fitted classifier"):
        inc.update(object())
