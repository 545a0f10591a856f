"""The model against the spec: parameter counts, layers and pooling against plain references."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tessera_explore.encoder.model import build_encoder, count_parameters, doy_encoding
from tessera_explore.exceptions import EncoderError


@pytest.mark.parametrize(
    ("generation", "sizes", "count"),
    [
        ("v1.0", {}, 45_828_226),
        ("v1.1", {}, 57_708_738),
        ("v2", {}, 7_112_322),
        ("v2", {"qk_norm": True}, 7_113_346),
    ],
)
def test_published_parameter_counts(generation, sizes, count):
    with torch.device("meta"):  # sizes only; no memory, no random init cost
        model = build_encoder(generation, **sizes)
    assert count_parameters(model) == count


def _inputs(b=5, t2=9, t1=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    s2 = torch.randn(b, t2, 11, generator=g)
    s2[..., -1] = torch.randint(1, 367, (b, t2), generator=g).float()
    s1 = torch.randn(b, t1, 3, generator=g)
    s1[..., -1] = torch.randint(1, 367, (b, t1), generator=g).float()
    return s2, s1


def test_doy_encoding_formula():
    d = 16
    pe = doy_encoding(torch.tensor([[37.0]]), d)[0, 0]
    for k in range(d // 2):
        f = math.exp(-(2 * k) * math.log(10000.0) / d)
        assert pe[2 * k].item() == pytest.approx(math.sin(37 * f), abs=1e-5)
        assert pe[2 * k + 1].item() == pytest.approx(math.cos(37 * f), abs=1e-5)


def test_plain_stack_equals_torch_transformer_encoder(tiny):
    model = tiny("v2")
    enc = model.s2_backbone
    d = enc.d_model
    ref = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(d, 4, 24, dropout=0.0, activation="relu", batch_first=True),
        num_layers=2,
        enable_nested_tensor=False,
    ).eval()
    ref.load_state_dict(enc.transformer_encoder.state_dict(), strict=True)
    x = torch.randn(4, 9, d)
    with torch.no_grad():
        torch.testing.assert_close(enc.transformer_encoder(x), ref(x), atol=1e-5, rtol=1e-5)


def _naive_gru_pool(pool, x):
    c = pool.temporal_context.gru_cell
    h = torch.zeros(x.shape[0], x.shape[2])
    states = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        r = torch.sigmoid(c.W_ir(xt) + c.W_hr(h) + c.b_r)
        z = torch.sigmoid(c.W_iz(xt) + c.W_hz(h) + c.b_z)
        n = torch.tanh(c.W_ih(xt) + c.W_hh(r * h) + c.b_h)
        h = (1 - z) * h + z * n
        states.append(h)
    w = torch.softmax(pool.query(pool.layer_norm(torch.stack(states, 1))), dim=1)
    return (w * x).sum(1)


def test_gru_context_pooling_matches_spec_equations(tiny):
    pool = tiny("v1.0").s2_backbone.attn_pool
    x = torch.randn(3, 11, 32)
    with torch.no_grad():
        torch.testing.assert_close(pool(x), _naive_gru_pool(pool, x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(pool(x[:, :1]), x[:, 0])  # one step returns its row


def test_attention_pooling(tiny):
    pool = tiny("v2").s2_backbone.attn_pool
    x = torch.randn(3, 5, 32)
    with torch.no_grad():
        w = torch.softmax(pool.query(x), dim=1)
        torch.testing.assert_close(pool(x), (w * x).sum(1))
        torch.testing.assert_close(pool(x[:, :1]), x[:, 0])


def test_qk_norm_layer_matches_naive(tiny):
    layer = tiny("v2", qk_norm=True).s2_backbone.transformer_encoder[0]
    x = torch.randn(2, 6, 32)
    h, hd = 4, 8

    def rms(v, w):
        return v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + torch.finfo(v.dtype).eps) * w

    with torch.no_grad():
        q = rms(layer.q_proj(x).view(2, 6, h, hd).transpose(1, 2), layer.q_norm.weight)
        k = rms(layer.k_proj(x).view(2, 6, h, hd).transpose(1, 2), layer.k_norm.weight)
        v = layer.v_proj(x).view(2, 6, h, hd).transpose(1, 2)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1) @ v
        y = layer.norm1(x + layer.out_proj(att.transpose(1, 2).reshape(2, 6, 32)))
        y = layer.norm2(y + layer.linear2(torch.relu(layer.linear1(y))))
        torch.testing.assert_close(layer(x), y, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("generation", ["v1.0", "v1.1", "v2"])
def test_forward_shapes_and_batch_independence(tiny, generation):
    model = tiny(generation)
    s2, s1 = _inputs()
    with torch.no_grad():
        y = model(s2, s1)
        assert y.shape == (5, 128) and y.dtype == torch.float32
        torch.testing.assert_close(model(s2[2:4], s1[2:4]), y[2:4], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(s2, s1), y)  # deterministic


def test_v2_output_is_layer_normalised(tiny):
    s2, s1 = _inputs(b=16)
    with torch.no_grad():
        y = tiny("v2")(s2, s1)
    torch.testing.assert_close(y.mean(1), torch.zeros(16), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(1, unbiased=False), torch.ones(16), atol=1e-3, rtol=0)


def test_v11_returns_first_128_of_192(tiny):
    model = tiny("v1.1")
    s2, s1 = _inputs()
    with torch.no_grad():
        full = model.dim_reducer(torch.cat((model.s2_backbone(s2), model.s1_backbone(s1)), -1))
        assert full.shape[-1] == 192
        torch.testing.assert_close(model(s2, s1), full[:, :128])


def test_forward_refuses_wrong_shapes(tiny):
    model = tiny("v2")
    s2, s1 = _inputs()
    with pytest.raises(EncoderError, match="11"):
        model(s2[..., :10], s1)
    with pytest.raises(EncoderError, match="3"):
        model(s2, s1[..., :2])
    with pytest.raises(EncoderError, match="pixels"):
        model(s2[:2], s1)


@pytest.mark.parametrize("qk_norm", [False, True])
def test_log_counts_equal_repeated_steps(tiny, qk_norm):
    """A sequence with repeated steps equals its distinct steps with log-counts in attention
    and pooling (the exact saving of the v2 CPU path), to float rounding."""
    model = tiny("v2", qk_norm=qk_norm)
    x = torch.randn(6, 7, 11)
    x[..., -1] = torch.randint(1, 366, (6, 7)).float()
    counts = torch.tensor([1, 3, 1, 1, 2, 1, 4])
    full = model.s2_backbone(x.repeat_interleave(counts, dim=1)[:, torch.randperm(int(counts.sum()))])
    folded = model.s2_backbone(x, counts.float().log())
    torch.testing.assert_close(folded, full, rtol=0, atol=2e-6)
    assert not torch.allclose(folded, model.s2_backbone(x), atol=1e-4)  # the counts matter


def test_log_counts_refused_for_gru_pooling(tiny):
    model = tiny("v1.0")
    with pytest.raises(EncoderError, match="order"):
        model.s2_backbone(torch.zeros(2, 4, 11), torch.zeros(4))
