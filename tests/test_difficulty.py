"""make_tiles / make_store ``difficulty``: 0 keeps the scene bit for bit; higher values
make it harder (mixed edge pixels, within-class variation, overlapping crops) while
scene_classes keeps giving the true class."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tessera_explore.testing import make_tiles, scene_classes, scene_embeddings
from tessera_explore.testing.scene import CEREAL, WATER


def points(n=30000, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.1, 0.2, n), rng.uniform(52.0, 52.1, n)


def test_zero_is_the_scene_as_it_was():
    lon, lat = points(3000)
    a, ca = scene_embeddings(lon, lat, 2024, seed=3)
    b, cb = scene_embeddings(lon, lat, 2024, seed=3, difficulty=0.0)
    assert a.tobytes() == b.tobytes() and ca.tobytes() == cb.tobytes()


def test_tiles_at_zero_are_bit_identical(tmp_path):
    kw = dict(tiles=[(0.15, 52.05)], years=[2024], shape=(40, 30), seed=1)
    r0 = make_tiles(tmp_path / "a", **kw)
    r1 = make_tiles(tmp_path / "b", difficulty=0.0, **kw)
    for key in ("codes", "scales"):
        assert np.load(r0[0]["paths"][key]).tobytes() == np.load(r1[0]["paths"][key]).tobytes()
    with open(tmp_path / "b" / "tessera_metadata.json") as f:
        assert "difficulty" not in json.load(f)
    r2 = make_tiles(tmp_path / "c", difficulty=1.0, **kw)
    assert np.load(r2[0]["paths"]["codes"]).tobytes() != np.load(r0[0]["paths"]["codes"]).tobytes()
    with open(tmp_path / "c" / "tessera_metadata.json") as f:
        assert json.load(f)["difficulty"] == 1.0
    # water stays water (no data) and the land mask is the same
    assert (np.load(r2[0]["paths"]["scales"]) == 0).tolist() == (np.load(r0[0]["paths"]["scales"]) == 0).tolist()


def test_classes_stay_true_and_scene_gets_harder():
    from tessera_explore.classify.models import CosineKNN

    lon, lat = points()
    truth = scene_classes(lon, lat, 2024, seed=3)
    acc = {}
    for d in (0.0, 0.5, 1.0):
        emb, cls = scene_embeddings(lon, lat, 2024, seed=3, difficulty=d)
        assert (cls == truth).all()
        assert np.isnan(emb[cls == WATER]).all() and np.isfinite(emb[cls != WATER]).all()
        land = cls != WATER
        X, y = emb[land], cls[land]
        rng = np.random.default_rng(1)
        scores = []
        for _ in range(3):
            idx = rng.choice(10000, 100, replace=False)
            scores.append((CosineKNN().fit(X[idx], y[idx]).predict(X[10000:]) == y[10000:]).mean())
        acc[d] = float(np.mean(scores))
    assert acc[0.0] > 0.99
    assert acc[0.0] > acc[0.5] > acc[1.0]
    assert acc[1.0] < 0.9  # at 1, 100 random labels are not enough for 90 %


def test_each_ingredient_is_there():
    lon, lat = points(20000, seed=2)
    e0, cls = scene_embeddings(lon, lat, 2024, seed=3)
    e1, _ = scene_embeddings(lon, lat, 2024, seed=3, difficulty=1.0)
    unit = lambda e: e / np.linalg.norm(e, axis=1, keepdims=True)  # noqa: E731
    land = cls != WATER
    # crops overlap more: their class means are closer
    def crop_sep(e):
        m = [unit(e[land & (cls == c)]).mean(axis=0) for c in range(CEREAL, CEREAL + 3)]
        return min(np.linalg.norm(m[i] - m[j]) for i in range(3) for j in range(i + 1, 3))
    assert crop_sep(e1) < 0.8 * crop_sep(e0)
    # within-class spread grows for every land class
    for c in np.unique(cls[land]):
        s0 = np.linalg.norm(unit(e0[cls == c]) - unit(e0[cls == c]).mean(0), axis=1).mean()
        s1 = np.linalg.norm(unit(e1[cls == c]) - unit(e1[cls == c]).mean(0), axis=1).mean()
        assert s1 > s0
    # mixed pixels: the pixels with a neighbour of another class 10 m away change more
    nb = scene_classes(lon + 10 / 68000, lat, 2024, seed=3)  # about 10 m east at 52 N
    edge = land & (nb != cls) & (nb != WATER)
    inner = land & (nb == cls)
    change = np.linalg.norm(unit(e1[land]) - unit(e0[land]), axis=1)
    ch = np.zeros(len(cls))
    ch[land] = change
    assert edge.sum() > 100
    assert np.median(ch[edge]) > np.median(ch[inner])


def test_make_store_takes_difficulty(tmp_path):
    zarr = pytest.importorskip("zarr")
    from tessera_explore.testing.store import make_store

    kw = dict(tiles=[(0.15, 52.05)], years=[2024], shape=(40, 30), seed=1, shard=64, chunk=32)
    p0 = make_store(os.path.join(tmp_path, "a.zarr"), **kw)
    p1 = make_store(os.path.join(tmp_path, "b.zarr"), difficulty=1.0, **kw)
    g0, g1 = zarr.open_group(p0, mode="r"), zarr.open_group(p1, mode="r")
    assert "difficulty" not in g0.attrs and g1.attrs["difficulty"] == 1.0
    z = [k for k in g0.group_keys() if k.startswith("utm")][0]
    a0, a1 = np.asarray(g0[z]["embeddings"][:]), np.asarray(g1[z]["embeddings"][:])
    assert a0.shape == a1.shape and not np.array_equal(a0, a1)
