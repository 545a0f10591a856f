"""Fixtures for the live-encoder tests: a real stac-fastapi-pgstac server on a private
PostgreSQL + PostGIS cluster and a Range-serving COG server, both on 127.0.0.1, started
once per session with synthetic Sentinel-2 L2A / Sentinel-1 RTC scenes; tiny random-weight
encoders saved and loaded through the real checkpoint path."""

from __future__ import annotations

import signal

import pytest

#: Scenes served: a clean year and a year with a defective item of each kind.
SCENES = [
    {"year": 2022, "shape": (24, 24), "n_s2_dates": 8, "n_s1_dates": 6, "seed": 3},
    {"year": 2023, "shape": (24, 24), "n_s2_dates": 3, "n_s1_dates": 2, "missing_asset": True, "missing_file": True,
     "cloudy_date": None, "seed": 4},
]


def _raise_interrupt(signum, frame):  # pragma: no cover - only on SIGTERM
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def local_stac():
    """The running servers (skips with the reason when PostgreSQL/PostGIS/packages are missing)."""
    from tessera_explore.testing.stac_server import LocalStac, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(f"STAC server tests need a local stac-fastapi-pgstac: {reason}")
    # pytest skips teardown on SIGTERM; turn it into KeyboardInterrupt so the servers stop
    old = signal.signal(signal.SIGTERM, _raise_interrupt)
    ls = LocalStac(SCENES).start()
    try:
        yield ls
    finally:
        ls.stop()
        signal.signal(signal.SIGTERM, old)


@pytest.fixture
def cogs(local_stac):
    """The COG server with its failure switches reset before and after the test."""
    local_stac.cogs.reset_failures()
    yield local_stac.cogs
    local_stac.cogs.reset_failures()


@pytest.fixture
def cfg(local_stac):
    """Config for the local server: few, quick retries."""
    return local_stac.config(retries=1, retry_delay=0.05, timeout=10)


@pytest.fixture(scope="session")
def tiny_v2(tmp_path_factory):
    """A small random-weight v2 encoder saved in the published layout and loaded back."""
    torch = pytest.importorskip("torch")
    from tessera_explore.encoder import load_encoder
    from tessera_explore.encoder.model import build_encoder

    torch.manual_seed(0)
    model = build_encoder("v2", latent_dim=8, num_layers=1, nhead=2, dim_feedforward=16)
    cfg = model.config
    args = {"repr_dim": 128, "latent_dim": cfg["latent_dim"], "num_layers": cfg["num_layers"], "nhead": cfg["nhead"],
            "dim_feedforward": cfg["dim_feedforward"], "max_seq_len": 256, "matryoshka_dims": "16,32,64,128",
            "enable_qk_norm": False}
    path = tmp_path_factory.mktemp("ckpt") / "student_tiny.pt"
    torch.save({"args": args, "model": model.state_dict()}, path)
    return load_encoder(path)
