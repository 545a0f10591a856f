"""embed_pixels: shapes, determinism, bucket rules end to end, NaN rules, quantisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tessera_explore.encoder import embed_pixels
from tessera_explore.encoder import preprocess as P
from tessera_explore.exceptions import EncoderError
from tessera_explore.io.quant import dequantize


@pytest.mark.parametrize("generation", ["v1.0", "v1.1", "v2"])
def test_shapes_dtype_determinism_and_batching(tiny, make_series, generation):
    model = tiny(generation)
    data = make_series(40)
    a = embed_pixels(model, **data, progress=False)
    assert a.shape == (40, 128) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, embed_pixels(model, **data, progress=False))
    b = embed_pixels(model, **data, batch_size=7, progress=False)
    np.testing.assert_allclose(a, b, atol=1e-5)


def _manual(model, gen, s2, s2_doy, s2_mask, s1, s1_doy, source=None):
    """One pixel, built from the spec by hand: valid rows, resampled, standardised."""
    st = P.band_stats(gen, source)
    eps = np.float32(1e-9)
    v2 = np.flatnonzero(s2_mask)
    v1 = np.flatnonzero(np.any(s1 != 0, axis=-1))
    rule = P.resample_indices_v2 if gen == "v2" else P.resample_indices_v11

    def rows(values, doys, valid, mean, std):
        if valid.size == 0:
            return np.zeros((8, values.shape[-1] + 1), np.float32)
        sel = valid[rule(valid.size, P.bucket_length(valid.size))]
        z = (values[sel].astype(np.float32) - mean) / (std + eps)
        return np.concatenate([z, doys[sel, None].astype(np.float32)], axis=1)

    x2 = rows(s2, s2_doy, v2, st.s2_mean, st.s2_std)
    x1 = rows(s1, s1_doy, v1, st.s1a_mean, st.s1a_std)  # ascending only here
    with torch.no_grad():
        return model(torch.from_numpy(x2[None]), torch.from_numpy(x1[None])).numpy()[0]


@pytest.mark.parametrize("generation", ["v2", "v1.1"])
@pytest.mark.parametrize("n_clear", [1, 7, 8, 9, 300])
def test_bucket_rules_end_to_end(tiny, generation, n_clear):
    model = tiny(generation)
    rng = np.random.default_rng(n_clear)
    t = 320
    s2 = rng.integers(0, 6000, (t, 1, 10)).astype(np.uint16)
    doy = (np.arange(t) % 366 + 1).astype(np.uint16)
    mask = np.zeros((t, 1), bool)
    mask[np.sort(rng.choice(t, n_clear, replace=False)), 0] = True
    s1 = rng.integers(1, 9000, (5, 1, 2)).astype(np.int16)
    s1_doy = np.array([3, 50, 100, 200, 300])
    got = embed_pixels(model, s2, doy, mask, s1, s1_doy, progress=False)[0]
    want = _manual(model, generation, s2[:, 0], doy, mask[:, 0], s1[:, 0], s1_doy, model.data_source)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("generation", ["v2", "v1.1", "v1.0"])
def test_no_s1_no_s2_and_nothing(tiny, make_series, generation):
    model = tiny(generation)
    d = make_series(6)
    d["s2_mask"][:, 1] = False  # pixel 1: all cloud, SAR only
    d["s1_asc"][:, 2] = 0  # pixel 2: optical only
    d["s1_desc"][:, 2] = 0
    d["s2_mask"][:, 3] = False  # pixel 3: nothing at all
    d["s1_asc"][:, 3] = 0
    d["s1_desc"][:, 3] = 0
    out = embed_pixels(model, **d, progress=False)
    assert np.isfinite(out[[0, 1, 2, 4, 5]]).all()
    assert np.isnan(out[3]).all()  # documented NaN, never a made-up vector
    # no S1 at all (None): S2 alone, the same as S1 with no valid observation
    no_s1 = embed_pixels(model, d["s2"], d["s2_doy"], d["s2_mask"], progress=False)
    assert np.isnan(no_s1[3]).all() and np.isnan(no_s1[1]).all()
    if generation != "v1.0":  # v1.0 draws from a pixel's missing (zero) SAR rows, as upstream
        np.testing.assert_allclose(no_s1[2], out[2], atol=1e-5)
    # no S2 date at all
    empty = {**d, "s2": d["s2"][:0], "s2_doy": d["s2_doy"][:0], "s2_mask": d["s2_mask"][:0]}
    no_s2 = embed_pixels(model, **empty, progress=False)
    assert np.isfinite(no_s2[[0, 1, 4, 5]]).all() and np.isnan(no_s2[[2, 3]]).all()
    if generation != "v1.0":  # all-cloud S2 = no S2 (v1.0 draws from cloudy dates instead, as upstream)
        np.testing.assert_allclose(no_s2[1], out[1], atol=1e-5)


def test_v10_seed_draws_and_pixel_ids(tiny, make_series):
    model = tiny("v1.0")
    d = make_series(12, t2=60, ta=30, td=30)
    a = embed_pixels(model, **d, seed=1, progress=False)
    np.testing.assert_array_equal(a, embed_pixels(model, **d, seed=1, progress=False))
    assert not np.allclose(a, embed_pixels(model, **d, seed=2, progress=False))
    avg = embed_pixels(model, **d, seed=1, n_draws=3, progress=False)
    assert np.isfinite(avg).all() and not np.allclose(avg, a)
    # a piece embedded with its global pixel ids gets the same draw as in the whole
    sub = {k: (v[:, 4:8] if v.ndim >= 2 else v) for k, v in d.items()}
    piece = embed_pixels(model, **sub, seed=1, pixel_ids=np.arange(4, 8), progress=False)
    np.testing.assert_allclose(piece, a[4:8], atol=1e-5)


def test_pixels_selection_leaves_others_nan(tiny, make_series):
    model = tiny("v2")
    d = make_series(10)
    full = embed_pixels(model, **d, progress=False)
    sel = np.zeros(10, bool)
    sel[[1, 5]] = True
    part = embed_pixels(model, **d, pixels=sel, progress=False)
    np.testing.assert_allclose(part[[1, 5]], full[[1, 5]], atol=1e-5)
    assert np.isnan(np.delete(part, [1, 5], axis=0)).all()


def test_v2_mean_zero_std_one_and_matryoshka(tiny, make_series):
    model = tiny("v2")
    d = make_series(20)
    out = embed_pixels(model, **d, progress=False)
    np.testing.assert_allclose(out.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(1), 1, atol=1e-3)
    for k in (16, 32, 64):
        np.testing.assert_array_equal(embed_pixels(model, **d, dims=k, progress=False), out[:, :k])
    with pytest.raises(EncoderError, match="prefix"):
        embed_pixels(model, **d, dims=10, progress=False)
    with pytest.raises(EncoderError, match="prefix"):
        embed_pixels(tiny("v1.0"), **d, dims=16, progress=False)


def test_quantise_round_trip(tiny, make_series):
    model = tiny("v1.1")
    d = make_series(15)
    d["s2_mask"][:, 0] = False
    d["s1_asc"][:, 0] = 0
    d["s1_desc"][:, 0] = 0
    out = embed_pixels(model, **d, progress=False)
    codes, scales = embed_pixels(model, **d, quantize=True, progress=False)
    assert codes.dtype == np.int8 and codes.shape == (15, 128) and scales.dtype == np.float32
    assert np.isnan(scales[0]) and np.isnan(dequantize(codes, scales)[0]).all()
    np.testing.assert_allclose(scales[1:], np.abs(out[1:]).max(1) / 127, rtol=1e-6)
    back = dequantize(codes, scales)
    assert np.all(np.abs(back[1:] - out[1:]) <= scales[1:, None] / 2 + 1e-6)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d.update(s2_doy=d["s2_doy"] * 0), "outside 1..366"),
        (lambda d: d.update(s1_desc_doy=d["s1_desc_doy"] + 400), "outside 1..366"),
        (lambda d: d.update(s2=d["s2"][..., :9]), "10 bands"),
        (lambda d: d.update(s1_asc=d["s1_asc"][..., :1]), "2 bands"),
        (lambda d: d.update(s2_mask=d["s2_mask"][:, :3]), "s2_mask"),
        (lambda d: d.update(s1_asc=d["s1_asc"][:, :3]), "pixels"),
    ],
)
def test_bad_input(tiny, make_series, change, match):
    d = make_series(8)
    change(d)
    with pytest.raises(EncoderError, match=match):
        embed_pixels(tiny("v2"), **d, progress=False)


def test_bad_options(tiny, make_series):
    d = make_series(4)
    with pytest.raises(EncoderError, match="generation"):
        embed_pixels(torch.nn.Linear(2, 2), **d, progress=False)
    with pytest.raises(EncoderError, match="n_draws"):
        embed_pixels(tiny("v2"), **d, n_draws=2, progress=False)
    v11 = tiny("v1.1", data_source=None)
    with pytest.raises(EncoderError, match="data_source"):
        embed_pixels(v11, **d, progress=False)
    assert np.isfinite(embed_pixels(v11, **d, data_source="aws", progress=False)).all()


def test_float_inputs_with_nan_in_valid_rows_are_refused(tiny, make_series):
    d = make_series(4)
    s2 = d["s2"].astype(np.float32)
    s2[0, 0, 0] = np.nan
    d["s2_mask"][0, 0] = True
    with pytest.raises(EncoderError, match="NaN"):
        embed_pixels(tiny("v2"), **{**d, "s2": s2}, progress=False)
    d["s2_mask"][0, 0] = False  # NaN under the cloud mask is ignored
    assert np.isfinite(embed_pixels(tiny("v2"), **{**d, "s2": s2}, progress=False)).all()


@pytest.mark.gpu
@pytest.mark.parametrize("generation", ["v1.0", "v2"])
def test_cuda_matches_cpu(tiny, make_series, generation):
    """On a CUDA machine the GPU agrees with the CPU; elsewhere asking for CUDA is a clear
    DeviceError before any work (never a skip: each machine checks what it can)."""
    from tessera_explore.exceptions import DeviceError

    model = tiny(generation)
    d = make_series(300)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            embed_pixels(model, **d, device="cuda", progress=False)
        return
    cpu = embed_pixels(model, **d, device="cpu", progress=False)
    fp32 = embed_pixels(model, **d, device="cuda", amp=False, progress=False)
    np.testing.assert_allclose(fp32, cpu, atol=1e-4)
    bf16 = embed_pixels(model, **d, device="cuda", progress=False)
    cos = (bf16 * cpu).sum(1) / np.linalg.norm(bf16, axis=1) / np.linalg.norm(cpu, axis=1)
    assert cos.min() > 0.99


@pytest.mark.parametrize("generation", ["v1.0", "v2"])
def test_worker_threads_same_result_and_threads_restored(tiny, make_series, generation):
    """CPU batches on one worker thread per core give the single-thread result (to float
    rounding), every pixel in its place, and leave torch's thread setting as it was."""
    model = tiny(generation)
    d = make_series(90, seed=3)
    before = torch.get_num_threads()
    one = embed_pixels(model, **d, num_threads=1, batch_size=7, progress=False)
    assert torch.get_num_threads() == before
    for workers in (2, 3):
        many = embed_pixels(model, **d, num_threads=workers, batch_size=7, progress=False)
        np.testing.assert_allclose(many, one, rtol=0, atol=1e-5)
        assert torch.get_num_threads() == before
    big = embed_pixels(model, **d, num_threads=2, progress=False)  # default batch size
    np.testing.assert_allclose(big, one, rtol=0, atol=1e-5)
    with pytest.raises(EncoderError, match="num_threads"):
        embed_pixels(model, **d, num_threads=0, progress=False)


@pytest.mark.parametrize("generation", ["v1.0", "v2"])
def test_worker_errors_propagate(tiny, make_series, monkeypatch, generation):
    """An error inside a worker thread reaches the caller (v1.0: the bucketed forward;
    v2: the per-sensor series batches)."""
    from tessera_explore.encoder.preprocess import PixelInputs

    model = tiny(generation)
    d = make_series(30)

    def boom(*a, **k):
        raise RuntimeError("forward failed")

    if generation == "v2":
        monkeypatch.setattr(PixelInputs, "series_batch", boom)
    else:
        monkeypatch.setattr(model, "forward", boom)
    with pytest.raises(RuntimeError, match="forward failed"):
        embed_pixels(model, **d, num_threads=2, batch_size=4, progress=False)


@pytest.mark.parametrize("generation", ["v1.0", "v2"])
def test_int8_mode_agrees_and_is_opt_in(tiny, make_series, generation):
    model = tiny(generation)
    d = make_series(60, seed=5)
    ref = embed_pixels(model, **d, progress=False)
    q = embed_pixels(model, **d, int8=True, progress=False)
    assert not np.array_equal(q, ref)  # really another computation
    cos = (q * ref).sum(1) / (np.linalg.norm(q, axis=1) * np.linalg.norm(ref, axis=1))
    assert np.percentile(cos, 1) >= 0.99
    np.testing.assert_array_equal(embed_pixels(model, **d, progress=False), ref)  # the model is untouched
    assert set(model.state_dict()) == set(tiny(generation).state_dict())
    with pytest.raises(EncoderError, match="CPU only"):
        embed_pixels(model, **d, int8=True, device="meta", progress=False)


def test_v2_series_path_equals_the_bucketed_path(tiny, make_series, monkeypatch):
    """v2 on CPU encodes each sensor from its distinct steps; it must give the bucketed
    sequences' result to float rounding, also for S2-only, S1-only and no-data pixels, a
    pixel selection, worker threads and a Matryoshka depth."""
    from tessera_explore.encoder import embed as E

    model = tiny("v2", qk_norm=True)
    d = make_series(70, t2=25, ta=10, td=5, clear=0.5, seed=11)
    d["s2_mask"][:, :3] = False  # S1 only
    d["s1_asc"][:, 3:6] = 0
    d["s1_desc"][:, 3:6] = 0  # S2 only
    d["s2_mask"][:, 6] = False
    d["s1_asc"][:, 6] = 0
    d["s1_desc"][:, 6] = 0  # nothing
    calls = []
    real = P.PixelInputs.series_batch
    monkeypatch.setattr(P.PixelInputs, "series_batch", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    series = embed_pixels(model, **d, progress=False)
    assert calls  # the series path really ran
    some = embed_pixels(model, **d, pixels=np.arange(0, 70, 3), num_threads=2, batch_size=5, progress=False)
    shallow = embed_pixels(model, **d, dims=32, progress=False)
    monkeypatch.setattr(E, "_SERIES_PIXELS", 16)  # pieces of 16 pixels (memory bound for large areas)
    pieces = embed_pixels(model, **d, num_threads=2, progress=False)
    monkeypatch.setattr(E, "_padded_only", lambda m: True)
    calls.clear()
    bucketed = embed_pixels(model, **d, progress=False)
    assert not calls
    np.testing.assert_allclose(series, bucketed, rtol=0, atol=1e-5)
    assert np.isnan(series[6]).all() and np.isfinite(series[np.r_[0:6, 7:70]]).all()
    np.testing.assert_allclose(some[::3], bucketed[::3], rtol=0, atol=1e-5)
    assert np.isnan(np.delete(some, np.arange(0, 70, 3), axis=0)).all()
    np.testing.assert_allclose(shallow, bucketed[:, :32], rtol=0, atol=1e-5)
    np.testing.assert_allclose(pieces, bucketed, rtol=0, atol=1e-5)
