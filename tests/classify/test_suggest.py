"""suggest: where to click next; a simulated user labels the suggested pixels with the
scene's true class."""

from __future__ import annotations

import numpy as np
import pytest

import tessera_explore as te
from tessera_explore.exceptions import ArgumentError
from tessera_explore.testing import CLASSES

LAND = ("built-up", "forest", "grassland", "cereal", "maize", "rapeseed")


def accuracy(area, clf, truth):
    pred = te.predict_map(area, clf)
    names = np.array(pred["class"].attrs["classes"])
    cls = pred["class"].values.ravel()
    ok = area.valid
    return float((names[cls[ok]] == np.array(CLASSES)[truth.ravel()[ok]]).mean())


def test_suggest_shape_spacing_exclusion(prepared24, draw):
    labels = draw(LAND, 2, seed=0)
    clf = te.fit_classifier(prepared24, labels)
    res = float(prepared24.grid.transform.a)
    for strategy in ("uncertainty", "diverse", "mixed"):
        g = te.suggest(prepared24, clf, 8, strategy=strategy, spacing=3 * res)
        assert len(g) == 8 and g.crs.to_epsg() == 4326
        assert list(g["rank"]) == list(range(8))
        w = prepared24.shape[1]
        pix = g["row"].to_numpy() * w + g["col"].to_numpy()
        assert prepared24.valid[pix].all()
        # not on a training pixel, and at least `spacing` from each other and from labels
        s = clf.samples_
        rows = np.concatenate([g["row"], s.rows])
        cols = np.concatenate([g["col"], s.cols])
        d2 = (rows[:, None] - rows[None]) ** 2 + (cols[:, None] - cols[None]) ** 2
        np.fill_diagonal(d2, 10**6)
        assert d2[:8].min() >= 9
        assert {"lon", "lat", "predicted", "confidence", "uncertainty", "novelty", "score"} <= set(g.columns)
        assert g["uncertainty"].between(0, 1).all()
        # seeded: the same call gives the same points
        again = te.suggest(prepared24, clf, 8, strategy=strategy, spacing=3 * res)
        assert (again["row"].to_numpy() == g["row"].to_numpy()).all()


def test_strategies_do_what_they_say(prepared24, draw):
    from tessera_explore.classify.suggest import uncertainty

    clf = te.fit_classifier(prepared24, draw(LAND, 2, seed=1))
    prob = te.predict_map(prepared24, clf, probabilities=True)["probability"].values
    u = uncertainty(prob.reshape(prob.shape[0], -1))[prepared24.valid]
    unc = te.suggest(prepared24, clf, 10, strategy="uncertainty", spacing=0)
    # the most uncertain pixels of the area, in decreasing order
    assert unc["uncertainty"].min() >= np.sort(u)[-10] - 1e-5
    assert (np.diff(unc["uncertainty"].to_numpy()) <= 1e-5).all()
    div = te.suggest(prepared24, clf, 10, strategy="diverse", spacing=0)
    # diverse suggestions are further apart in embedding space than the most uncertain ones
    def spread(g):
        w = prepared24.shape[1]
        pix = g["row"].to_numpy() * w + g["col"].to_numpy()
        V = prepared24.codes[pix].astype(np.float32) * prepared24.inv_norm[pix, None]
        S = V @ V.T
        np.fill_diagonal(S, -1)
        return float((1 - S.max(axis=1)).mean())
    assert spread(div) > spread(unc)
    # entropy works too; bad arguments are refused
    assert len(te.suggest(prepared24, clf, 5, measure="entropy")) == 5
    with pytest.raises(ArgumentError, match="strategy"):
        te.suggest(prepared24, clf, 5, strategy="random")
    with pytest.raises(ArgumentError, match="measure"):
        te.suggest(prepared24, clf, 5, measure="gini")


def test_exclude_keeps_away_from_other_labels(prepared24, draw):
    clf = te.fit_classifier(prepared24, draw(LAND, 2, seed=2))
    first = te.suggest(prepared24, clf, 5, spacing=0)
    pending = [(lon, lat, "forest") for lon, lat in zip(first["lon"], first["lat"], strict=True)]
    second = te.suggest(prepared24, clf, 5, spacing=0, exclude=pending)
    assert not set(zip(first["row"], first["col"], strict=True)) & set(zip(second["row"], second["col"],
                                                                           strict=True))


def test_simulated_user_learns_faster_than_random_clicks(prepared24, scene24, draw):
    """A user who labels the suggested pixels with their true class reaches a better map
    than one who labels as many random pixels (mean over seeds)."""
    lon, lat, truth = scene24
    valid_idx = np.flatnonzero(prepared24.valid)
    gain = []
    for seed in range(3):
        start = draw(LAND, 2, seed=10 + seed)
        guided, rand = list(start), list(start)
        rng = np.random.default_rng(seed)
        for _ in range(4):
            clf = te.fit_classifier(prepared24, guided)
            g = te.suggest(prepared24, clf, 5, seed=seed)
            guided += [(float(lon[r, c]), float(lat[r, c]), CLASSES[truth[r, c]])
                       for r, c in zip(g["row"], g["col"], strict=True)]
            for j in rng.choice(valid_idx, 5, replace=False):
                rand.append((float(lon.ravel()[j]), float(lat.ravel()[j]), CLASSES[truth.ravel()[j]]))
        a_g = accuracy(prepared24, te.fit_classifier(prepared24, guided), truth)
        a_r = accuracy(prepared24, te.fit_classifier(prepared24, rand), truth)
        gain.append(a_g - a_r)
    assert np.mean(gain) > 0
