"""The numpy-only rules: buckets, resampling (hand-computed), v1.0 draws, standardisation."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tessera_explore.encoder import preprocess as P
from tessera_explore.exceptions import EncoderError


@pytest.mark.parametrize(
    ("n", "bucket"), [(0, 8), (1, 8), (7, 8), (8, 8), (9, 16), (16, 16), (17, 24), (255, 256), (256, 256), (300, 256)]
)
def test_bucket_length(n, bucket):
    assert P.bucket_length(n) == bucket


def test_bucket_length_vectorised():
    assert P.bucket_length(np.array([1, 9, 300])).tolist() == [8, 16, 256]


V2_CASES = {
    1: [0] * 8,  # B - n = 7 > n: i mod n
    3: [0, 1, 2, 0, 1, 2, 0, 1],  # B - n = 5 > 3
    7: [0, 1, 2, 3, 4, 5, 6, 3],  # one group 0..6, middle 3
    8: list(range(8)),
    # B = 16, 7 extra: array_split(0..8, 7) = [0,1] [2,3] [4] [5] [6] [7] [8] -> middles 1 3 4 5 6 7 8
    9: list(range(9)) + [1, 3, 4, 5, 6, 7, 8],
}

V11_CASES = {
    1: [0] * 8,
    4: [0, 1, 2, 3, 1, 1, 2, 2],  # rint([0.6, 1.2, 1.8, 2.4])
    5: [0, 1, 2, 3, 4, 1, 2, 3],
    7: [0, 1, 2, 3, 4, 5, 6, 3],
    8: list(range(8)),
    9: list(range(9)) + [1, 2, 3, 4, 5, 6, 7],  # rint(linspace(0, 8, 9)[1:-1])
}


@pytest.mark.parametrize("n", sorted(V2_CASES))
def test_resample_v2_hand_cases(n):
    assert P.resample_indices("v2", n).tolist() == V2_CASES[n]


@pytest.mark.parametrize("n", sorted(V11_CASES))
def test_resample_v11_hand_cases(n):
    assert P.resample_indices("v1.1", n).tolist() == V11_CASES[n]


def test_resample_v2_300():
    idx = P.resample_indices("v2", 300)
    assert idx.size == 256
    # linspace(0, 299, 256) truncated: step 299/255 = 1.1725...
    assert idx[:8].tolist() == [0, 1, 2, 3, 4, 5, 7, 8]
    assert idx[-1] == 299 and np.all(np.diff(idx) >= 1)


def test_resample_v11_300():
    idx = P.resample_indices("v1.1", 300)
    # array_split(0..299, 256): 44 groups of 2 (middle = second), then 212 singles 88..299
    expected = [2 * i + 1 for i in range(44)] + list(range(88, 300))
    assert idx.tolist() == expected


def test_resample_v2_and_v11_differ_where_spec_says():
    assert P.resample_indices("v2", 300).tolist() != P.resample_indices("v1.1", 300).tolist()
    assert P.resample_indices("v2", 4).tolist() != P.resample_indices("v1.1", 4).tolist()


@pytest.mark.parametrize("gen", ["v2", "v1.1"])
def test_index_table_matches_rules(gen):
    table = P.index_table(gen, 16, 20)
    for n in range(9, 17):
        assert table[n].tolist() == P.resample_indices(gen, n).tolist()
    assert not table.flags.writeable


def test_resample_refuses_zero_and_v10():
    with pytest.raises(EncoderError):
        P.resample_indices_v2(0, 8)
    with pytest.raises(EncoderError):
        P.resample_indices("v1.0", 5)


def test_standardise_formula():
    st = P.band_stats("v2")
    x = np.full((3, 10), 2000, np.uint16)
    z = P.standardise(x, st.s2_mean, st.s2_std)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z[0], (2000 - st.s2_mean) / (st.s2_std + 1e-9), rtol=1e-6)


def test_band_stats_per_generation():
    assert P.band_stats("v1.0").s1a_mean.tolist() == P.band_stats("v1.0").s1d_mean.tolist()
    assert P.band_stats("v2").s1a_mean.tolist() != P.band_stats("v2").s1d_mean.tolist()
    assert P.band_stats("v1.1", "mpc").s2_mean[0] != P.band_stats("v1.1", "aws").s2_mean[0]
    with pytest.raises(EncoderError, match="data_source"):
        P.band_stats("v1.1")
    with pytest.raises(EncoderError):
        P.band_stats("v3")


def test_draw_v10_rules():
    t = 60
    doy = np.arange(1, t + 1) * 5
    mask = np.zeros((4, t), bool)
    mask[0, :50] = True  # >= 40 valid: without replacement
    mask[1, ::6] = True  # 10 valid: with replacement
    mask[2, 7] = True  # one valid: all draws the same
    # pixel 3: none valid -> all count
    idx = P.draw_v10(mask, doy, np.arange(4), seed=1)
    assert idx.shape == (4, 40)
    assert len(set(idx[0])) == 40 and mask[0, idx[0]].all()
    assert mask[1, idx[1]].all()
    assert set(idx[2]) == {7}
    assert idx[3].min() >= 0 and idx[3].max() < t
    assert np.all(np.diff(doy[idx], axis=1) >= 0)  # sorted by time


def test_draw_v10_reproducible_and_batch_independent():
    rng = np.random.default_rng(0)
    mask = rng.random((30, 70)) < 0.5
    doy = np.arange(1, 71)
    ids = np.arange(100, 130)
    a = P.draw_v10(mask, doy, ids, seed=3)
    b = P.draw_v10(mask[10:20], doy, ids[10:20], seed=3)
    np.testing.assert_array_equal(a[10:20], b)
    np.testing.assert_array_equal(a, P.draw_v10(mask, doy, ids, seed=3))
    assert not np.array_equal(a, P.draw_v10(mask, doy, ids, seed=4))
    assert not np.array_equal(a, P.draw_v10(mask, doy, ids, seed=3, stream=2))


def _inputs(**kw):
    n = kw.pop("n", 1)
    base = dict(
        s2=np.zeros((3, n, 10), np.uint16),
        s2_doy=np.array([10, 20, 30]),
        s2_mask=np.ones((3, n), bool),
    )
    base.update(kw)
    return P.PixelInputs(**base)


def test_batch_rows_by_hand():
    s2 = np.arange(30, dtype=np.uint16).reshape(3, 1, 10) * 100
    mask = np.array([[True], [False], [True]])
    s1a = np.array([[[5000, 3000]], [[0, 0]]], np.int16)  # second pass missing
    s1d = np.array([[[6000, 2000]]], np.int16)
    inp = P.PixelInputs(s2, [10, 20, 30], mask, s1a, [15, 25], s1d, [40])
    st = P.band_stats("v2")
    s2_x, s1_x = inp.batch("v2", np.array([0]), 8, 8)
    assert s2_x.shape == (1, 8, 11) and s1_x.shape == (1, 8, 3)
    # valid S2 dates 0 and 2, n = 2 < 8, extra 6 > 2 -> 0 1 0 1 0 1 0 1 over (date 0, date 2)
    assert s2_x[0, :, 10].tolist() == [10, 30] * 4
    np.testing.assert_allclose(s2_x[0, 1, :10], (s2[2, 0] - st.s2_mean) / (st.s2_std + np.float32(1e-9)), rtol=1e-6)
    # S1: ascending valid rows first (own stats), then descending (own stats)
    assert s1_x[0, :2, 2].tolist() == [15, 40]
    np.testing.assert_allclose(s1_x[0, 0, :2], (np.array([5000, 3000]) - st.s1a_mean) / st.s1a_std, rtol=1e-5)
    np.testing.assert_allclose(s1_x[0, 1, :2], (np.array([6000, 2000]) - st.s1d_mean) / st.s1d_std, rtol=1e-5)
    # v1.0 shares one set of S1 statistics
    st10 = P.band_stats("v1.0")
    _, s1_10 = inp.batch("v1.0", np.array([0]), 40, 40)
    row = s1_10[0][s1_10[0, :, 2] == 40][0]
    np.testing.assert_allclose(row[:2], (np.array([6000, 2000]) - st10.s1d_mean) / st10.s1d_std, rtol=1e-5)


def test_empty_modality_gets_zero_rows_and_plan_skips_no_data():
    inp = _inputs(n=3, s2_mask=np.array([[1, 0, 0], [1, 0, 0], [0, 0, 0]], bool),
                  s1_asc=np.array([[[0, 0], [100, 5], [0, 0]]], np.int16), s1_asc_doy=[5])
    plan = inp.plan("v2")
    planned = sorted(int(p) for _, _, g in plan for p in g)
    assert planned == [0, 1]  # pixel 2 has nothing at all
    s2_x, s1_x = inp.batch("v2", np.array([1]), 8, 8)
    assert np.all(s2_x == 0)  # no valid S2: zero rows, day 0
    assert np.all(s1_x[0, :, 2] == 5)
    _, s1_x0 = inp.batch("v2", np.array([0]), 8, 8)
    assert np.all(s1_x0 == 0)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"s2_doy": np.array([0, 20, 30])}, "outside 1..366"),
        ({"s2_doy": np.array([10, 20, 367])}, "outside 1..366"),
        ({"s2_doy": np.array([10, 20])}, "shape"),
        ({"s2": np.zeros((3, 1, 11), np.uint16)}, "10 bands"),
        ({"s2_mask": np.ones((3, 2), bool)}, "s2_mask"),
        ({"s1_asc": np.zeros((1, 1, 3), np.int16), "s1_asc_doy": [3]}, "2 bands"),
        ({"s1_asc": np.zeros((1, 1, 2), np.int16), "s1_asc_doy": [400]}, "outside"),
        ({"s2": np.full((3, 1, 10), np.nan, np.float32)}, "NaN"),
    ],
)
def test_bad_input_is_refused(kw, match):
    with pytest.raises(EncoderError, match=match):
        _inputs(**kw)


def test_preprocess_does_not_import_torch():
    code = ("import sys, tessera_explore, tessera_explore.encoder.preprocess as p; p.bucket_length(3); "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("n", [1, 3, 5, 8, 9, 13, 20, 41, 47, 48, 100, 256, 300])
def test_distinct_steps_are_the_resampled_multiset(n):
    """The distinct steps and their counts rebuild exactly the multiset of the v2 rule."""
    steps, log_counts = P.distinct_steps(n)
    idx = P.resample_indices_v2(n, P.bucket_length(n))
    counts = np.ones(steps.size) if log_counts is None else np.exp(log_counts.astype(np.float64))
    np.testing.assert_array_equal(np.repeat(steps, np.rint(counts).astype(int)), np.sort(idx))
    assert (log_counts is None) == (np.unique(idx).size == idx.size)
    assert not steps.flags.writeable


def test_series_plan_and_batch_match_the_bucketed_rows():
    rng = np.random.default_rng(4)
    t2, n = 30, 50
    s2 = rng.integers(0, 8000, (t2, n, 10)).astype(np.uint16)
    mask = rng.random((t2, n)) < 0.5
    mask[:, 0] = False  # no S2 at all: S1 only
    s1a = rng.integers(1000, 9000, (6, n, 2)).astype(np.int16)
    s1a[:, 1] = 0  # no S1 at all: S2 only
    s1a[:, 2] = 0
    mask[:, 2] = False  # no data at all
    inp = P.PixelInputs(s2, np.arange(1, t2 + 1) * 10, mask, s1a, np.arange(6) * 50 + 3)
    rows, groups = inp.series_plan()
    np.testing.assert_array_equal(rows, np.flatnonzero(inp.has_data()))
    assert 2 not in rows
    for sensor, counts in (("s2", inp.n_s2), ("s1", inp.n_s1)):
        mine = [(c, p) for s, c, p in groups if s == sensor]
        covered = np.sort(np.concatenate([p for _, p in mine]))
        np.testing.assert_array_equal(covered, rows[counts[rows] > 0])
        for c, p in mine:
            assert (counts[p] == c).all()
    sel_rows, _ = inp.series_plan(np.array([0, 1, 2, 3]))
    np.testing.assert_array_equal(sel_rows, [0, 1, 3])
    # the series rows are the distinct rows of the bucketed batch, in order
    for sensor, c, p in groups:
        x = inp.series_batch(sensor, p, c)
        b2, b1 = P.bucket_length(inp.n_s2[p[0]]), P.bucket_length(inp.n_s1[p[0]])
        s2_x, s1_x = inp.batch("v2", p, int(b2), int(b1))
        full = s2_x if sensor == "s2" else s1_x
        steps, _ = P.distinct_steps(c)
        np.testing.assert_array_equal(x, full[:, steps])
    with pytest.raises(EncoderError, match="exactly n"):
        inp.series_batch("s2", np.array([0]), 3)
