"""Checkpoints in every published layout, loaded through the real path; registry downloads."""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import http.server
import threading

import pytest
import torch

from tessera_explore.encoder import weights as W
from tessera_explore.encoder import load_encoder
from tessera_explore.encoder.model import build_encoder, count_parameters
from tessera_explore.exceptions import CheckpointError, DownloadError, EncoderError


def _same_outputs(a, b):
    g = torch.Generator().manual_seed(1)
    s2 = torch.randn(4, 8, 11, generator=g)
    s2[..., -1] = torch.arange(1, 9).float() * 30
    s1 = torch.randn(4, 16, 3, generator=g)
    s1[..., -1] = torch.arange(1, 17).float() * 20
    with torch.no_grad():
        torch.testing.assert_close(a(s2, s1), b(s2, s1))


@pytest.mark.parametrize(
    ("generation", "sizes", "layout"),
    [
        ("v2", {}, "v2"),
        ("v2", {"qk_norm": True}, "v2"),
        ("v2", {}, "v2-namespace"),
        ("v1.0", {}, "v1-qat"),
        ("v1.1", {}, "v1.1"),
        ("v1.0", {}, "bare"),
        ("v2", {"qk_norm": True}, "bare"),
    ],
)
def test_every_layout_loads_strictly(tiny, save_checkpoint, generation, sizes, layout):
    model = tiny(generation, **sizes)
    path = save_checkpoint(model, layout)
    loaded = load_encoder(path)
    assert loaded.generation == generation
    assert loaded.config["qk_norm"] == bool(sizes.get("qk_norm"))
    assert count_parameters(loaded) == count_parameters(model)
    assert not loaded.training
    _same_outputs(model, loaded)


def test_v11_data_source_from_config(tiny, save_checkpoint):
    loaded = load_encoder(save_checkpoint(tiny("v1.1"), "v1.1"))
    assert loaded.data_source == "aws"
    assert load_encoder(save_checkpoint(tiny("v1.1"), "bare", name="tessera_v1_1_mpc_encoder.pt")).data_source == "mpc"
    assert load_encoder(save_checkpoint(tiny("v1.1"), "bare", name="x.pt")).data_source is None


def test_full_size_v2_small_through_real_path(save_checkpoint):
    model = build_encoder("v2")
    loaded = load_encoder(save_checkpoint(model, "v2"), expected_params=7_112_322)
    assert count_parameters(loaded) == 7_112_322
    assert loaded.matryoshka_dims == (16, 32, 64, 128)


def test_generation_and_parameter_checks(tiny, save_checkpoint):
    path = save_checkpoint(tiny("v1.0"), "v1-qat")
    with pytest.raises(CheckpointError, match="v1.0 encoder, not v2"):
        load_encoder(path, generation="v2")
    with pytest.raises(CheckpointError, match="parameters, expected"):
        load_encoder(path, expected_params=45_828_226)


def test_other_architecture_is_refused(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save({"model_state": {"conv1.weight": torch.zeros(3, 3), "fc.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(CheckpointError, match="not a TESSERA encoder"):
        load_encoder(path)
    torch.save({"optimizer": {}, "step": 3}, path)
    with pytest.raises(CheckpointError, match="not a TESSERA checkpoint"):
        load_encoder(path)


def test_missing_and_extra_keys_are_refused(tiny, tmp_path):
    sd = tiny("v2").state_dict()
    args = {"latent_dim": 8, "num_layers": 2, "nhead": 4, "dim_feedforward": 24}
    missing = {k: v for k, v in sd.items() if "norm2" not in k}
    torch.save({"args": args, "model": missing}, tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match="Missing key"):
        load_encoder(tmp_path / "a.pt")
    extra = dict(sd, **{"s2_backbone.extra.weight": torch.zeros(2)})
    torch.save({"args": args, "model": extra}, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match="Unexpected key"):
        load_encoder(tmp_path / "b.pt")
    outside = dict(sd, **{"projector.weight": torch.zeros(2)})
    torch.save({"args": args, "model": outside}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="outside the encoder"):
        load_encoder(tmp_path / "c.pt")
    wrong_args = dict(args, latent_dim=16)
    torch.save({"args": wrong_args, "model": sd}, tmp_path / "d.pt")
    with pytest.raises(CheckpointError, match="size mismatch"):
        load_encoder(tmp_path / "d.pt")


def test_wrong_band_count_is_refused(tiny, tmp_path):
    sd = dict(tiny("v1.0").state_dict())
    sd["s2_backbone.embedding.0.weight"] = torch.zeros(32, 11)
    torch.save({"model_state": sd}, tmp_path / "bands.pt")
    with pytest.raises(CheckpointError, match="10 and 2"):
        load_encoder(tmp_path / "bands.pt")


class _Evil:
    def __reduce__(self):  # would run code if unpickled unsafely
        return (print, ("unpickled!",))


def test_unsafe_pickle_is_refused(tiny, tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"args": {"x": _Evil()}, "model": tiny("v2").state_dict()}, path)
    with pytest.raises(CheckpointError, match="safe PyTorch checkpoint"):
        load_encoder(path)


def test_garbage_file_is_refused(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError):
        load_encoder(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_encoder(tmp_path / "nope.pt")


def test_registry_entries_are_complete():
    assert {"v1.0-qat", "v1.1-mpc", "v1.1-aws", "v2-small"} <= set(W.WEIGHTS)
    for e in W.WEIGHTS.values():
        assert e.url.startswith("https://") and e.filename.endswith(".pt")
        assert e.licence == "CC0-1.0" and e.generation in ("v1.0", "v1.1", "v2")
        assert e.params or e.params_approx
    assert W.WEIGHTS["v1.0-qat"].params == 45_828_226
    assert W.WEIGHTS["v1.1-mpc"].params == 57_708_738


# --- downloads through a real HTTP server on 127.0.0.1 ------------------------------------


@pytest.fixture
def http_server(tmp_path):
    """Serve ``tmp_path / 'srv'`` on 127.0.0.1; yields (base_url, folder, request counter)."""
    root = tmp_path / "srv"
    root.mkdir()
    hits: collections.Counter = collections.Counter()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def do_GET(self):
            hits[self.path] += 1
            super().do_GET()

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root, hits
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.network_local
def test_download_verify_cache_and_load(tiny, save_checkpoint, http_server, tmp_path, monkeypatch, no_proxy):
    base, root, hits = http_server
    src = save_checkpoint(tiny("v2"), "v2", name="student_small.pt")
    (root / "student_small.pt").write_bytes(src.read_bytes())
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    entry = dataclasses.replace(
        W.WEIGHTS["v2-small"], url=f"{base}/student_small.pt", sha256=digest, size=src.stat().st_size,
        params_approx=None,
    )
    monkeypatch.setitem(W.WEIGHTS, "v2-small", entry)
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError, match="download_weights"):
        load_encoder("v2-small", cache_dir=cache)  # explicit: nothing downloads by itself
    assert hits["/student_small.pt"] == 0
    path = W.download_weights("v2-small", cache_dir=cache, progress=False)
    assert path == cache / "student_small.pt" and hashlib.sha256(path.read_bytes()).hexdigest() == digest
    W.download_weights("v2-small", cache_dir=cache, progress=False)  # cached: verified, not fetched
    assert hits["/student_small.pt"] == 1
    model = load_encoder("v2-small", cache_dir=cache)
    assert model.generation == "v2" and model.name == "v2-small"
    # a corrupted cache is caught
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(DownloadError):
        load_encoder("v2-small", cache_dir=cache)


@pytest.mark.network_local
def test_download_checksum_mismatch_leaves_nothing(http_server, tmp_path, no_proxy):
    base, root, _ = http_server
    (root / "f.pt").write_bytes(b"x" * 1000)
    entry = dataclasses.replace(W.WEIGHTS["v2-nano"], url=f"{base}/f.pt", sha256="0" * 64)
    with pytest.raises(DownloadError, match="SHA-256"):
        W.download_weights(entry, cache_dir=tmp_path / "c", progress=False)
    assert not list((tmp_path / "c").iterdir())


@pytest.mark.network_local
def test_download_http_error_raises_download_error(http_server, tmp_path, no_proxy):
    base, _, _ = http_server
    with pytest.raises(DownloadError, match="could not download"):
        W.download_weights("v2-nano", url=f"{base}/missing.pt", cache_dir=tmp_path, retries=2, progress=False)


def test_download_from_file_url_and_trust_on_first_use(tiny, save_checkpoint, tmp_path):
    src = save_checkpoint(tiny("v1.0"), "v1-qat", name="qat.pt")
    entry = dataclasses.replace(W.WEIGHTS["v1.0-qat"], url=src.as_uri(), params=None)
    path = W.download_weights(entry, cache_dir=tmp_path / "c", progress=False)
    assert (path.parent / (path.name + ".sha256")).exists()
    assert load_encoder(path).generation == "v1.0"
    path.write_bytes(b"tampered")
    with pytest.raises(DownloadError, match="SHA-256"):
        W.download_weights(entry, cache_dir=tmp_path / "c", progress=False)


def test_unknown_registry_name():
    with pytest.raises(CheckpointError, match="unknown weights"):
        W.weights_path("v9")
    assert issubclass(CheckpointError, EncoderError)


def test_namespace_args_are_allowed_but_nothing_else(tmp_path, tiny):
    obj = {"args": argparse.Namespace(latent_dim=8, num_layers=2, nhead=2, dim_feedforward=24), "model": tiny("v2").state_dict()}
    torch.save(obj, tmp_path / "ns.pt")
    assert W.read_checkpoint(tmp_path / "ns.pt")["args"].latent_dim == 8
