"""benchmarks/bench_encoder.py: its same-process stand-in for the reference release's
``encode_pixels`` must compute what ``embed_pixels`` computes (else its speed ratio means
nothing), and its roofline arithmetic must count what each path feeds the model."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_encoder as B  # noqa: E402

from tessera_explore.encoder import embed_pixels  # noqa: E402
from tessera_explore.encoder import preprocess as P  # noqa: E402


@pytest.mark.parametrize("qk_norm", [False, True])
def test_reference_stand_in_equals_ours(tiny, qk_norm):
    model = tiny("v2", qk_norm=qk_norm)
    data = B.synthetic(40, seed=2)
    ref = B.ReferenceStudent(model.config).eval()
    ref.load_state_dict(model.state_dict(), strict=True)
    theirs = B.reference_encode(ref, *B.pixel_first(data))
    ours = embed_pixels(model, **data, progress=False)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)


def test_flops_per_pixel_counts_distinct_and_bucketed_steps(tiny):
    model = tiny("v2")
    data = B.synthetic(30, seed=1)
    ours, ref = B.flops_per_pixel(model, data)
    assert 0 < ours < ref  # 70 % clear of 60 dates: some buckets are padded
    inp = P.PixelInputs(**data)
    steps = sum(p.size * (P.bucket_length(inp.n_s2[p[0]]) + P.bucket_length(inp.n_s1[p[0]])) for *_, p in inp.plan("v2"))
    distinct = int(inp.n_s2.sum() + inp.n_s1.sum())  # fewer than 256 valid: every valid step once
    d, ff, layers = 32, 24, 2
    per_token = layers * 2 * (4 * d * d + 2 * d * ff)  # the projections dominate at these sizes
    assert ref * 30 > steps * per_token and ours * 30 > distinct * per_token
    assert ours / ref == pytest.approx(distinct / steps, rel=0.1)


def test_gemm_peak_is_a_rate():
    assert B.gemm_peak(workers=1, seconds=0.2) > 0.1  # GFLOP/s, any machine
