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

from tessera_explore.encoder import load_encoder
from tessera_explore.encoder import weights as W
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


# --- through the shared download client: resume, retry, refuse ------------------------------


class _Flaky:
    """What a misbehaving server does: cut the first ``drop_times`` answers after
    ``drop_after`` bytes, answer 503 ``fail_times`` times, serve ``content_type``."""

    def __init__(self, data: bytes, *, drop_after=None, drop_times=1, fail_times=0,
                 content_type="application/octet-stream"):
        self.data, self.drop_after, self.drop_times = data, drop_after, drop_times
        self.fail_times, self.content_type = fail_times, content_type
        self.log: list[tuple[str, int]] = []  # (Range header, status)


@pytest.fixture
def flaky_server():
    """``flaky_server(behaviour)`` serves ``behaviour.data`` at ``/w.pt`` on 127.0.0.1 with Range support."""
    servers = []

    def start(b: _Flaky) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                rng = self.headers.get("Range", "")
                n = len(b.log)
                if n < b.fail_times:
                    b.log.append((rng, 503))
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start_at = int(rng[len("bytes="):-1]) if rng.startswith("bytes=") and rng.endswith("-") else 0
                etag = f'"{hashlib.sha256(b.data).hexdigest()[:16]}"'  # a validator, as real hosts send
                if self.headers.get("If-Range") not in (None, etag):
                    start_at = 0
                body = b.data[start_at:]
                status = 206 if start_at else 200
                b.log.append((rng, status))
                self.send_response(status)
                if start_at:
                    self.send_header("Content-Range", f"bytes {start_at}-{len(b.data) - 1}/{len(b.data)}")
                self.send_header("Content-Type", b.content_type)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                drops = sum(1 for _, s in b.log if s in (200, 206))
                if b.drop_after is not None and drops <= b.drop_times:
                    self.wfile.write(body[: b.drop_after])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/w.pt"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_sleep(monkeypatch):
    """Record the client's back-off pauses instead of waiting them out."""
    import types

    from tessera_explore.io import fetch

    pauses: list[float] = []
    monkeypatch.setattr(fetch, "time", types.SimpleNamespace(sleep=pauses.append))
    return pauses


def _checkpoint_bytes(tiny, save_checkpoint):
    return save_checkpoint(tiny("v2"), "v2", name="src.pt").read_bytes()


@pytest.mark.network_local
def test_dropped_connection_resumes_through_shared_client(tiny, save_checkpoint, flaky_server, tmp_path,
                                                          monkeypatch, no_proxy, no_sleep):
    from tessera_explore.io import fetch

    data = _checkpoint_bytes(tiny, save_checkpoint)
    b = _Flaky(data, drop_after=100_000)
    calls = []
    real = fetch.download
    monkeypatch.setattr(fetch, "download", lambda *a, **kw: calls.append((a, kw)) or real(*a, **kw))
    entry = dataclasses.replace(W.WEIGHTS["v2-nano"], sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                                params_approx=None)
    cache = tmp_path / "cache"
    path = W.download_weights(entry, url=flaky_server(b), cache_dir=cache, progress=False)
    assert len(calls) == 1 and calls[0][1]["sha256"] == entry.sha256 and calls[0][1]["expected_size"] == len(data)
    (first, s1), (rng, s2) = b.log  # the second request asked only for the rest
    assert (first, s1, s2) == ("", 200, 206) and 0 < int(rng[len("bytes="):-1]) <= 100_000
    assert path.read_bytes() == data
    assert sorted(p.name for p in cache.iterdir()) == ["student_nano.pt", "student_nano.pt.sha256"]
    assert load_encoder(path).generation == "v2"


@pytest.mark.network_local
def test_interrupted_download_is_resumed_by_the_next_call(tiny, save_checkpoint, flaky_server, tmp_path,
                                                          no_proxy, no_sleep):
    data = _checkpoint_bytes(tiny, save_checkpoint)
    b = _Flaky(data, drop_after=80_000, drop_times=10)
    url = flaky_server(b)
    entry = dataclasses.replace(W.WEIGHTS["v2-nano"], url=url)
    with pytest.raises(DownloadError, match="could not download v2-nano"):
        W.download_weights(entry, cache_dir=tmp_path, retries=2, progress=False)
    part = tmp_path / "student_nano.pt.part"
    have = part.stat().st_size
    assert 80_000 < have < len(data) and not (tmp_path / "student_nano.pt").exists()
    assert [s for _, s in b.log] == [200, 206] and no_sleep == [1.0]  # resumed once, after a back-off
    b.drop_after = None
    path = W.download_weights(entry, cache_dir=tmp_path, progress=False)
    assert b.log[-1] == (f"bytes={have}-", 206)
    assert path.read_bytes() == data and not part.exists()
    # trust on first use: the hash of this first download is pinned next to it
    assert (tmp_path / "student_nano.pt.sha256").read_text().split()[0] == hashlib.sha256(data).hexdigest()


@pytest.mark.network_local
def test_server_errors_are_retried_then_give_up(tiny, save_checkpoint, flaky_server, tmp_path, no_proxy, no_sleep):
    data = _checkpoint_bytes(tiny, save_checkpoint)
    b = _Flaky(data, fail_times=2)
    entry = dataclasses.replace(W.WEIGHTS["v2-nano"], url=flaky_server(b))
    path = W.download_weights(entry, cache_dir=tmp_path / "a", retries=3, progress=False)
    assert [s for _, s in b.log] == [503, 503, 200] and path.read_bytes() == data
    assert no_sleep == [1.0, 2.0]
    b2 = _Flaky(data, fail_times=5)
    entry2 = dataclasses.replace(W.WEIGHTS["v2-nano"], url=flaky_server(b2))
    with pytest.raises(DownloadError, match="failed after 2 attempts"):
        W.download_weights(entry2, cache_dir=tmp_path / "b", retries=2, progress=False)
    assert len(b2.log) == 2  # retries counts attempts in all, as before


@pytest.mark.network_local
def test_web_page_instead_of_checkpoint_is_refused_at_once(flaky_server, tmp_path, no_proxy, no_sleep):
    b = _Flaky(b"<html>confirm download</html>", content_type="text/html; charset=utf-8")
    entry = dataclasses.replace(W.WEIGHTS["v1.0-qat"], url=flaky_server(b))
    with pytest.raises(DownloadError, match="web page.*in a browser"):
        W.download_weights(entry, cache_dir=tmp_path, progress=False)
    assert len(b.log) == 1 and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("generation", "sizes", "layout", "key", "shape"),
    [
        ("v2", {}, "v2", "s2_backbone.embedding.0.weight", (320,)),  # a 1-D weight where a matrix belongs
        ("v1.0", {}, "v1-qat", "s1_backbone.embedding.0.weight", (64,)),
        ("v1.1", {}, "v1.1", "dim_reducer.4.weight", ()),  # a 0-D one
        ("v1.0", {}, "bare", "dim_reducer.0.weight", ()),
        ("v2", {}, "v2", "s2_backbone.transformer_encoder.layers.0.linear1.weight", ()),
        ("v2", {"qk_norm": True}, "v2", "s2_backbone.transformer_encoder.0.q_norm.weight", ()),
    ],
)
def test_a_weight_of_the_wrong_rank_is_a_checkpoint_error(tiny, save_checkpoint, generation, sizes, layout, key,
                                                           shape):
    path = save_checkpoint(tiny(generation, **sizes), layout)
    obj = torch.load(path, weights_only=False)
    state = obj if layout == "bare" else obj[{"v2": "model", "v1-qat": "model_state", "v1.1": "model_state_dict"}[layout]]
    stored = next(k for k in state if k.endswith(key))  # v1-qat keys start with _orig_mod.
    state[stored] = torch.zeros(shape) if shape else torch.tensor(1.0)
    torch.save(obj, path)
    with pytest.raises(CheckpointError) as err:
        load_encoder(path)
    assert str(path) in str(err.value) and key in str(err.value) and str(tuple(shape)) in str(err.value)


def test_a_value_that_is_not_a_tensor_is_a_checkpoint_error(tiny, save_checkpoint):
    path = save_checkpoint(tiny("v1.0"), "v1-qat")
    obj = torch.load(path, weights_only=False)
    obj["model_state"]["_orig_mod.s2_backbone.embedding.0.weight"] = [1, 2]
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=r"s2_backbone\.embedding\.0\.weight holds a list, not a tensor"):
        load_encoder(path)
