"""Live encoding over a region on a dask.distributed LocalCluster of 2 worker processes,
against a real STAC API and COG server on 127.0.0.1 (synthetic Sentinel-2/1 scenes) and a
tiny random-weight encoder saved and loaded through the real checkpoint path."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

import tessera_explore as te
from tessera_explore.exceptions import ArgumentError
from tessera_explore.region.encode import EncoderPlugin, plan_tiles, worker_loads
from tessera_explore.region.output import done_mask

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")]

YEAR = 2022


@pytest.fixture(scope="module")
def local_stac():
    """The servers with one small synthetic year (skips with the reason when PostgreSQL,
    PostGIS or the server packages are missing, as tests/stac does)."""
    from tessera_explore.testing.stac_server import LocalStac, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(f"STAC server tests need a local stac-fastapi-pgstac: {reason}")
    ls = LocalStac([{"year": YEAR, "shape": (40, 40), "n_s2_dates": 4, "n_s1_dates": 2, "seed": 5}]).start()
    try:
        yield ls
    finally:
        ls.stop()


@pytest.fixture(scope="module")
def cfg(local_stac):
    return local_stac.config(retries=1, retry_delay=0.05, timeout=20)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny random-weight v2 encoder saved in the published checkpoint layout."""
    torch = pytest.importorskip("torch")
    from tessera_explore.encoder.model import build_encoder

    torch.manual_seed(0)
    model = build_encoder("v2", latent_dim=8, num_layers=1, nhead=2, dim_feedforward=16)
    c = model.config
    args = {"repr_dim": 128, "latent_dim": c["latent_dim"], "num_layers": c["num_layers"], "nhead": c["nhead"],
            "dim_feedforward": c["dim_feedforward"], "max_seq_len": 256, "matryoshka_dims": "16,32,64,128",
            "enable_qk_norm": False}
    path = tmp_path_factory.mktemp("ckpt") / "student_tiny.pt"
    torch.save({"args": args, "model": model.state_dict()}, path)
    return str(path)


@pytest.fixture(scope="module")
def bbox(local_stac):
    """200 m x 200 m around a corner of the 160 m tile grid, inside the scene."""
    from pyproj import Transformer

    w, s, e, n = local_stac.bbox
    epsg = 32600 + int((0.5 * (w + e) + 180) // 6) + 1
    tr = Transformer.from_crs(4326, epsg, always_xy=True)
    cx, cy = tr.transform(0.5 * (w + e), 0.5 * (s + n))
    x, y = round(cx / 160) * 160, round(cy / 160) * 160
    back = Transformer.from_crs(epsg, 4326, always_xy=True)
    return tuple(float(v) for v in back.transform_bounds(x - 100, y - 100, x + 100, y + 100))


def _reference(zone, i, j, ckpt, cfg, cache, dims=None):
    """embed_area over one tile, computed here."""
    from tessera_explore.encoder import load_encoder

    return te.embed_area(None, YEAR, model=load_encoder(ckpt), like=zone.tile_like(i, j), stac=cfg, cache=cache,
                         dims=dims, max_pixels=None, max_area_km2=None, progress=False)


def _assert_tile_equal(out, zone, i, j, ref):
    """The store's tile, opened as a published store is, equals ``ref`` within the int8
    quantisation error (half a step of each pixel's scale)."""
    w, s, e, n = zone.tile_lonlat(i, j)
    d = 1e-6
    got = te.open_embeddings(out, bbox=(w + d, s + d, e - d, n - d), year=YEAR, crs=f"EPSG:{zone.epsg}",
                            chunks=None)
    got = got.sel(x=ref.x, y=ref.y, method="nearest", tolerance=1.0)
    np.testing.assert_allclose(got.x.values, ref.x.values, atol=1e-6)
    g, r = np.asarray(got.values), np.asarray(ref.values)
    assert np.array_equal(np.isnan(g), np.isnan(r))
    ok = ~np.isnan(r[0])
    assert ok.mean() > 0.5  # the tile really holds embeddings
    step = np.abs(r[:, ok]).max(axis=0) / 127.0
    assert (np.abs(g[:, ok] - r[:, ok]) <= 0.5 * step + 1e-6).all()
    return got


def _loads(client, name):
    return {v["pid"]: v["loads"] for v in client.run(worker_loads, name).values()}


def test_plan_tiles_fixed_grid(bbox):
    zones = plan_tiles(bbox, 16)
    assert len(zones) == 1 and zones[0].zone == 31
    z = zones[0]
    assert (z.nrows, z.ncols) == (2, 2) and not z.outside
    assert z.x0 % 160 == 0 and z.y0 % 160 == 0  # tile edges on multiples of the tile side
    assert plan_tiles(bbox, 8)[0].n_tiles == 16
    with pytest.raises(ArgumentError):
        plan_tiles(bbox, 0)


def test_encoder_plugin_loads_once_and_travels_light(ckpt):
    import pickle

    from tessera_explore.encoder import load_encoder

    plugin = EncoderPlugin(ckpt)
    assert plugin.name == EncoderPlugin(ckpt).name != EncoderPlugin(ckpt, device="cpu").name
    there = pickle.loads(pickle.dumps(plugin))  # what a worker receives: the path, no model
    assert there.model is None and there.checkpoint == ckpt
    there.setup(None)
    m = there.model_on_worker()
    assert there.model_on_worker() is m and there.loads == 1 and there.target_device() == "cpu"
    assert pickle.loads(pickle.dumps(there)).model is None  # never shipped back with the model
    shipped = pickle.loads(pickle.dumps(EncoderPlugin(load_encoder(ckpt))))  # a loaded model travels once
    shipped.setup(None)
    assert shipped.model_on_worker().generation == "v2" and shipped.loads == 1


def test_region_equals_embed_area_per_tile_and_loads_once(local_stac, cfg, ckpt, client, bbox, tmp_path):
    cache = str(tmp_path / "cache")
    out = str(tmp_path / "live.zarr")
    seen = []
    job = te.embed_region(bbox, YEAR, model=ckpt, out=out, client=client, tile=16, stac=cfg, cache=cache,
                          progress=False, on_tile=seen.append)
    assert job.computed == 4 and job.skipped == 0 and len(seen) == 4
    assert all(r["pid"] != os.getpid() for r in seen)  # the tiles ran on the workers
    assert all(r["device"] == "cpu" for r in seen)  # no GPU here
    # one model per worker process, loaded once, used by every task of that worker
    name = EncoderPlugin(ckpt).name
    loads = _loads(client, name)
    used = {r["pid"] for r in seen}
    assert used <= set(loads) and all(loads[p] == 1 for p in used) and all(v <= 1 for v in loads.values())
    assert all(len({r["model_id"] for r in seen if r["pid"] == p}) == 1 for p in used)
    z = plan_tiles(bbox, 16)[0]
    for i, j in z.tiles():
        ref = _reference(z, i, j, ckpt, cfg, cache)
        got = _assert_tile_equal(out, z, i, j, ref)
        assert got.attrs["model_generation"] == "v2" and got.attrs["dataset_variant"] == "student_tiny"
        assert te.compare(ref, got).attrs["mean"] > 0.999  # the same dataset as a live tile
    # the whole region opens like a precomputed store, on the zone's grid
    da = job.open(chunks=None)  # no dask graph: the test's client is not involved
    assert da.sizes["band"] == 128 and np.isfinite(da.values).all(axis=0).mean() > 0.5
    assert done_mask(out, "utm31").all()
    # a rerun finds every tile done and loads nothing again
    again = te.embed_region(bbox, YEAR, model=ckpt, out=out, client=client, tile=16, stac=cfg, cache=cache,
                            progress=False)
    assert again.computed == 0 and again.skipped == 4
    assert _loads(client, name) == loads
    with pytest.raises(ArgumentError, match="another job"):
        te.embed_region(bbox, YEAR, model=ckpt, out=out, client=client, tile=8, stac=cfg, cache=cache,
                        progress=False)


def _busy(dask_worker=None) -> int:
    return len(dask_worker.active_threads)


def _quiet(client, timeout=120.0):
    """Wait until no task runs on any worker (a cancelled task that was running still
    finishes, and writes its tile)."""
    deadline = time.time() + timeout
    while time.time() < deadline and any(client.run(_busy).values()):
        time.sleep(0.5)


def _shard_files(out):
    root = os.path.join(out, "utm31", "embeddings", "c")
    return {os.path.relpath(os.path.join(d, f), root): os.stat(os.path.join(d, f)).st_mtime_ns
            for d, _, fs in os.walk(root) for f in fs}


def test_rerun_after_interruption_embeds_only_the_missing_tiles(local_stac, cfg, ckpt, client, bbox, tmp_path):
    import zarr

    cache = str(tmp_path / "cache")
    out = str(tmp_path / "resume.zarr")
    seen = []

    def stop_after_two(rec):
        seen.append(rec)
        if len(seen) == 2:
            raise KeyboardInterrupt("stopped by the user")

    with pytest.raises(KeyboardInterrupt):
        te.embed_region(bbox, YEAR, model=ckpt, out=out, client=client, tile=8, stac=cfg, cache=cache,
                        progress=False, on_tile=stop_after_two)
    _quiet(client)
    raw = np.asarray(zarr.open_group(out, mode="r", path="utm31")["done"][...])
    done = raw == 1
    n_done = int(done.sum())
    assert 2 <= n_done < 16
    before = _shard_files(out)
    partial = te.open_embeddings(out, bbox=bbox, year=YEAR, chunks=None)  # a valid store while unfinished
    assert np.isnan(partial.values).all(axis=0).any()
    redo = []
    job = te.embed_region(bbox, YEAR, model=ckpt, out=out, client=client, tile=8, stac=cfg, cache=cache,
                          progress=False, on_tile=redo.append)
    assert job.skipped == n_done and job.computed == 16 - n_done == len(redo)
    assert not any(done[r["i"], r["j"]] for r in redo)
    after = _shard_files(out)
    assert all(after[k] == v for k, v in before.items())  # finished tiles were not written again
    assert done_mask(out, "utm31").all()
    z = plan_tiles(bbox, 8)[0]
    r = redo[0]
    _assert_tile_equal(out, z, r["i"], r["j"], _reference(z, r["i"], r["j"], ckpt, cfg, cache))


def test_killed_worker_tiles_are_rerun(local_stac, cfg, ckpt, client, bbox, tmp_path):
    cache = str(tmp_path / "cache")
    out = str(tmp_path / "killed.zarr")
    killed = []

    def kill_one(rec):
        if not killed and rec["pid"] != os.getpid():
            os.kill(rec["pid"], signal.SIGKILL)  # really killed, mid-job
            killed.append(rec["pid"])

    job = te.embed_region(bbox, YEAR, model=ckpt, out=out, client=client, tile=8, stac=cfg, cache=cache, dims=16,
                          progress=False, on_tile=kill_one)
    assert killed and job.computed == 16 and done_mask(out, "utm31").all()
    assert job.estimate.seconds_per_tile > 0 and "16 of 16 tiles" in str(job.estimate)
    client.wait_for_workers(2, timeout=120)  # the nanny restarted it; it gets the plugin again
    state = client.run(worker_loads, EncoderPlugin(ckpt).name).values()
    assert all(v["registered"] for v in state)  # the restarted worker got the plugin from the scheduler
    assert killed[0] not in {v["pid"] for v in state} and all(v["loads"] <= 1 for v in state)
    z = plan_tiles(bbox, 8)[0]
    r = job.records[-1]
    got = _assert_tile_equal(out, z, r["i"], r["j"], _reference(z, r["i"], r["j"], ckpt, cfg, cache, dims=16))
    assert got.sizes["band"] == 16 and got.attrs["depth"] == 16  # a Matryoshka prefix, stored as such
