"""Malformed checkpoints and unavailable devices are clear errors of our hierarchy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tessera_explore import exceptions as ex
from tessera_explore.encoder import load_encoder
from tessera_explore.encoder import model as M


@pytest.mark.parametrize("args, match", [
    ({"nhead": 0}, "nhead"),  # ZeroDivisionError before
    ({"nhead": 3}, "not divisible"),
    ({"nhead": "four"}, "nhead"),
    ({"nhead": 2.5}, "nhead"),
    ({"num_layers": -1}, "num_layers"),
    ({"latent_dim": None}, "latent_dim"),
    ({"matryoshka_dims": "a,b"}, "matryoshka_dims"),
    ({"matryoshka_dims": "64,32,128"}, "matryoshka_dims"),
    ({"repr_dim": "x"}, "repr_dim"),
])
def test_checkpoint_hyper_parameters_that_make_no_sense_are_a_checkpoint_error(tiny, save_checkpoint, tmp_path,
                                                                                args, match):
    path = save_checkpoint(tiny("v2"), "v2", name="bad.pt")
    obj = torch.load(path, weights_only=True)
    obj["args"].update(args)
    torch.save(obj, path)
    with pytest.raises(ex.CheckpointError, match=match) as err:
        load_encoder(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("sizes", [{"nhead": 0}, {"latent_dim": 0}, {"dim_feedforward": "big"},
                                   {"matryoshka_dims": (16, 64)}])
def test_build_encoder_refuses_sizes_that_make_no_sense(sizes):
    with pytest.raises(ex.EncoderError):
        M.build_encoder("v2", **sizes)


def test_cuda_without_cuda_is_a_device_error(tiny, save_checkpoint, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without CUDA
    path = save_checkpoint(tiny("v2"), "v2", name="ok.pt")
    with pytest.raises(ex.DeviceError, match="CUDA is not available"):
        load_encoder(path, device="cuda")
    with pytest.raises(ex.DeviceError, match="not a device"):
        load_encoder(path, device="gpu please")
    assert M.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ex.DeviceError):
        M.resolve_device(np.float32(1.0))
