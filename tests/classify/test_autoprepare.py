"""The fast path is the default path: an opened DataArray is prepared once, kept for the
next call, keyed so another window or year never gets stale codes, and bounded in memory."""

from __future__ import annotations

import numpy as np
import pytest

import tessera_explore as te
from tessera_explore.classify import area as A


@pytest.fixture()
def opened(tmp_path):
    from tessera_explore.testing import make_store

    make_store(tmp_path / "s.zarr", tiles=[(0.05, 52.15)], years=[2023, 2024], shape=(60, 60), seed=4,
               shard=64, chunk=32)
    A.clear_prepared()
    yield lambda year: te.open_embeddings(str(tmp_path / "s.zarr"), bbox=(0.01, 52.11, 0.09, 52.19), year=year)
    A.clear_prepared()


def test_prepared_once_and_kept(opened, monkeypatch):
    calls = []
    real = A.prepare
    monkeypatch.setattr(A, "prepare", lambda da, **kw: calls.append(1) or real(da, **kw))
    da = opened(2024)
    labels = [(0.03, 52.13, "a"), (0.07, 52.17, "b"), (0.05, 52.15, "a"), (0.04, 52.17, "b")]
    clf = te.fit_classifier(da, labels)
    m1 = te.predict_map(da, clf)
    m2 = te.predict_map(da, clf)
    assert len(calls) == 1  # one preparation serves fit, predict and the next predict
    assert np.array_equal(m1["class"].values, m2["class"].values)
    # the same result as walking block by block
    monkeypatch.setattr(A, "AUTO_PREPARE_BYTES", 0)
    m3 = te.predict_map(da, clf)
    assert np.array_equal(m1["class"].values, m3["class"].values)


def test_keys_follow_window_and_year(opened):
    da24, da23 = opened(2024), opened(2023)
    p24, p23 = A.auto_prepared(da24), A.auto_prepared(da23)
    assert p24 is not p23 and not np.array_equal(p24.codes, p23.codes)
    sub = da24.isel(y=slice(5, 20), x=slice(3, 30))
    ps = A.auto_prepared(sub)
    assert ps.shape == (15, 27)
    assert np.array_equal(ps.codes.reshape(15, 27, -1), p24.codes.reshape(*p24.shape, -1)[5:20, 3:30])
    assert A.auto_prepared(da24) is p24
    # float arrays have no codes: never prepared automatically
    assert A.auto_prepared(da24.compute() * 1.0) is None


def test_memory_is_bounded(opened, monkeypatch):
    da24, da23 = opened(2024), opened(2023)
    one = A.auto_prepared(da24).nbytes
    monkeypatch.setattr(A, "AUTO_PREPARE_BYTES", int(one * 1.5))
    A.clear_prepared()
    A.auto_prepared(da24)
    A.auto_prepared(da23)
    assert len(A._AUTO) == 1  # the older area was dropped
