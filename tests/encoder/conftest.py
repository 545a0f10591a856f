"""Fixtures for the encoder tests: tiny models, synthetic time series, checkpoints saved in
every published layout (random weights, loaded back through the real path)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tessera_explore.encoder.model import build_encoder  # noqa: E402

#: Small sizes so every forward in the tests is cheap.
TINY = {"latent_dim": 8, "num_layers": 2, "nhead": 4, "dim_feedforward": 24}


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)


@pytest.fixture
def tiny():
    """``tiny(generation, **overrides)`` -> a randomly initialised small encoder."""

    def make(generation: str, **overrides):
        sizes = {**TINY, **overrides}
        if generation == "v1.1":
            sizes.setdefault("data_source", "mpc")
        model = build_encoder(generation, **sizes)
        # non-zero biases everywhere, so a missed bias term would show
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.ndim == 1 and "norm" not in name:
                    p.add_(0.1 * torch.randn_like(p))
        return model.eval()

    return make


def _doys(rng, t):
    return np.sort(rng.choice(np.arange(1, 367), size=t, replace=False)).astype(np.uint16)


@pytest.fixture
def make_series():
    """``make_series(n, t2=..., ta=..., td=..., clear=..., seed=...)`` -> embed_pixels kwargs."""

    def make(n=32, *, t2=20, ta=8, td=6, clear=0.6, seed=0):
        rng = np.random.default_rng(seed)
        s1a = rng.integers(3000, 9000, (ta, n, 2)).astype(np.int16)
        s1d = rng.integers(3000, 9000, (td, n, 2)).astype(np.int16)
        if ta:
            s1a[rng.random((ta, n)) < 0.2] = 0  # missing SAR observations
        return {
            "s2": rng.integers(0, 6000, (t2, n, 10)).astype(np.uint16),
            "s2_doy": _doys(rng, t2),
            "s2_mask": rng.random((t2, n)) < clear,
            "s1_asc": s1a,
            "s1_asc_doy": _doys(rng, ta),
            "s1_desc": s1d,
            "s1_desc_doy": _doys(rng, td),
        }

    return make


def _v2_args(model, as_namespace=False):
    cfg = model.config
    args = {
        "repr_dim": 128,
        "latent_dim": cfg["latent_dim"],
        "num_layers": cfg["num_layers"],
        "nhead": cfg["nhead"],
        "dim_feedforward": cfg["dim_feedforward"],
        "max_seq_len": 256,
        "matryoshka_dims": "16,32,64,128",
        "enable_qk_norm": bool(cfg.get("qk_norm")),
        "lr": 1e-4,
    }
    return argparse.Namespace(**args) if as_namespace else args


@pytest.fixture
def save_checkpoint(tmp_path):
    """``save_checkpoint(model, layout, name=None)`` writes ``model`` in a published layout.

    Layouts: ``"v2"`` (``{"args", "model"}``), ``"v2-namespace"`` (args as a Namespace),
    ``"v1-qat"`` (``model_state`` with ``_orig_mod.`` keys and a projector),
    ``"v1.1"`` (``model_state_dict`` plus ``config``), ``"bare"`` (the state dict alone).
    """

    def save(model, layout, name=None):
        sd = {k: v.clone() for k, v in model.state_dict().items()}
        if layout == "v2":
            obj = {"args": _v2_args(model), "model": sd, "epoch": 7}
            obj.pop("epoch")
        elif layout == "v2-namespace":
            obj = {"args": _v2_args(model, as_namespace=True), "model": sd}
        elif layout == "v1-qat":
            full = {f"_orig_mod.{k}": v for k, v in sd.items()}
            full["_orig_mod.projector.net.0.weight"] = torch.randn(16, 8)
            full["_orig_mod.projector.net.0.bias"] = torch.randn(16)
            obj = {"model_state": full, "epoch": 3, "best_val": 0.5}
        elif layout == "v1.1":
            full = dict(sd)
            full["projector.0.weight"] = torch.randn(4, 4)
            obj = {"model_state_dict": full, "config": {"data_source": "aws", "latent_dim": model.config["latent_dim"]}}
        elif layout == "bare":
            obj = sd
        else:  # pragma: no cover
            raise ValueError(layout)
        path = tmp_path / (name or f"ckpt_{layout}_{model.generation}.pt")
        torch.save(obj, path)
        return path

    return save
