"""Regional jobs on a dask.distributed LocalCluster of 2 worker processes, over a
synthetic region of 4 x 4 tiles across the 6 E UTM zone edge (zones 31 and 32), read
from a Zarr store served over HTTP on 127.0.0.1 and from a tile folder."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

import tessera_explore as te
from tessera_explore.exceptions import ArgumentError
from tessera_explore.region.ops import Classify
from tessera_explore.region.plan import plan_region, zone_bbox
from tessera_explore.testing import CLASSES, scene_classes
from tessera_explore.testing.region import Slowed

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TILES = [(5.85 + 0.1 * i, 52.05 + 0.1 * j) for i in range(4) for j in range(4)]
BBOX = (5.8, 52.0, 6.2, 52.4)
SHAPE = (48, 48)
CHUNK = 64


@pytest.fixture(scope="module")
def region(tmp_path_factory):
    from tessera_explore.testing import make_store, make_tiles

    root = tmp_path_factory.mktemp("region")
    make_store(root / "r.zarr", tiles=TILES, years=[2023, 2024], shape=SHAPE, seed=3, shard=128, chunk=32)
    make_tiles(root / "tiles", tiles=TILES, years=[2024], shape=SHAPE, seed=3, version="v1.1")
    return {"root": str(root), "store": str(root / "r.zarr"), "tiles": str(root / "tiles")}


@pytest.fixture(scope="module")
def served(region):
    from tessera_explore.testing.server import serve_folder

    with serve_folder(region["root"]) as srv:
        yield srv.url + "/r.zarr"


@pytest.fixture(scope="module")
def clf(region):
    da = te.open_embeddings(region["store"], bbox=(5.81, 52.11, 5.89, 52.19), year=2024)
    rng = np.random.default_rng(0)
    lon, lat = rng.uniform(5.81, 5.89, 300), rng.uniform(52.11, 52.19, 300)
    cls = scene_classes(lon, lat, 2024, seed=3)
    return te.fit_classifier(da, [(float(a), float(b), CLASSES[c]) for a, b, c in zip(lon, lat, cls)])


def _cache(tmp_path):
    return {"cache": str(tmp_path / "cache")}


def _open_ref(source, zone, year=2024, **kw):
    """The regional grid of ``zone`` opened in this process with ``open_embeddings``:
    the same area (the bbox part snapped out to the store's chunk grid)."""
    spec = next(s for s in plan_region(source, BBOX, 2024, chunk=CHUNK, **kw) if s.zone == zone)
    da = te.open_embeddings(source, bbox=spec.open_bbox, year=year, crs=f"EPSG:{spec.epsg}", missing="nan", **kw)
    return da.isel(y=slice(spec.row0, spec.row0 + spec.height), x=slice(spec.col0, spec.col0 + spec.width))


def _reference(source, zone, fn, year=2024, **kw):
    """The single-process result of ``fn`` on the regional grid of ``zone``."""
    return fn(_open_ref(source, zone, year, **kw))


def _on_region(got, ref):
    """``got`` (a zone of the regional output) on ``ref``'s grid (checked identical)."""
    np.testing.assert_allclose(got.x.values, ref.x.values, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got.y.values, ref.y.values, rtol=0, atol=1e-6)
    return got


def _assert_equal_classification(out, source, clf, **kw):
    dss = te.open_region(out)
    assert set(dss) == {"utm31", "utm32"}
    for name, got in dss.items():
        ref = _reference(source, int(name[3:]), lambda da: te.predict_map(da, clf), **kw)
        sub = _on_region(got, ref)
        np.testing.assert_array_equal(sub["class"].values, ref["class"].values)
        np.testing.assert_array_equal(sub["confidence"].values, ref["confidence"].values)
        assert (ref["class"].values != 255).mean() > 0.3  # the region really holds data
        assert got.attrs["dataset_version"] == "v1.1" and got.attrs["classes"] == ref.attrs["classes"]
        assert int(got.attrs["epsg"]) == 32600 + int(name[3:])  # each zone on its own grid


def test_plan_follows_the_store_chunk_grid(region):
    specs = plan_region(region["store"], BBOX, 2024, chunk=100)
    assert [s.name for s in specs] == ["utm31", "utm32"]
    for s in specs:
        assert s.chunk == 64  # a multiple of the 32-px inner chunk that divides the 128-px shard
        res = s.transform[0]
        # the grid's corner sits on the store's chunk grid of its zone
        da = te.open_embeddings(region["store"], bbox=zone_bbox(BBOX, s.zone), year=2024)
        from tessera_explore.io.codes import codes_window

        tile = next(t for t in codes_window(da).source.tiles if t.crs == da.rio.crs)
        gx, gy = tile.grid_origin
        assert ((s.transform[2] - gx) / res) % 64 == 0 and ((gy - s.transform[5]) / res) % 64 == 0
        assert s.height % 64 == 0 and s.width % 64 == 0


def test_store_over_http_equals_single_process(served, client, clf, tmp_path):
    out = str(tmp_path / "out.zarr")
    job = te.run_region(te.predict_map, served, clf, bbox=BBOX, year=2024, out=out, client=client, chunk=CHUNK,
                        progress=False, **_cache(tmp_path))
    assert job.computed == job.estimate.chunks and job.skipped == 0
    assert job.estimate.bytes_to_read > 0 and job.estimate.seconds_per_chunk > 0
    _assert_equal_classification(out, served, clf, **_cache(tmp_path))
    assert all(pid != os.getpid() for pid in job.worker_peak_rss)  # the chunks ran on the workers
    again = te.run_region(te.predict_map, served, clf, bbox=BBOX, year=2024, out=out, client=client, chunk=CHUNK,
                          progress=False, **_cache(tmp_path))
    assert again.computed == 0 and again.skipped == job.computed


def test_tile_folder_equals_single_process(region, client, clf, tmp_path):
    out = str(tmp_path / "tiles.zarr")
    te.run_region(te.predict_map, region["tiles"], clf, bbox=BBOX, year=2024, out=out, client=client, chunk=CHUNK,
                  progress=False)
    _assert_equal_classification(out, region["tiles"], clf)


def test_killed_worker_leaves_a_valid_output_and_the_job_completes(region, client, clf, tmp_path):
    out = str(tmp_path / "killed.zarr")
    killed = []

    def kill_one(rec):
        if len(killed) == 0 and rec["pid"] != os.getpid():
            os.kill(rec["pid"], signal.SIGKILL)  # really killed, mid-job
            killed.append(rec["pid"])

    job = te.run_region(Slowed(Classify(clf), 0.15), region["store"], bbox=BBOX, year=2024, out=out, client=client,
                        chunk=CHUNK, progress=False, on_chunk=kill_one)
    assert killed
    assert job.computed == job.estimate.chunks
    _assert_equal_classification(out, region["store"], clf)
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it


def test_rerun_after_interruption_computes_only_the_missing_chunks(region, client, clf, tmp_path):
    out = str(tmp_path / "resume.zarr")
    seen = []

    def stop_after_five(rec):
        seen.append(rec)
        if len(seen) == 5:
            raise KeyboardInterrupt("stopped by the user")

    with pytest.raises(KeyboardInterrupt):
        te.run_region(Slowed(Classify(clf), 0.1), region["store"], bbox=BBOX, year=2024, out=out, client=client,
                      chunk=CHUNK, progress=False, on_chunk=stop_after_five)
    from tessera_explore.region.output import done_mask

    # tasks already running when the job stopped still finish (a cancel cannot interrupt
    # them): wait until the store is quiet
    last, deadline = -1, time.time() + 30
    while time.time() < deadline:
        n = sum(int(done_mask(out, z).sum()) for z in ("utm31", "utm32"))
        if n == last:
            break
        last = n
        time.sleep(1.0)

    done = {z: done_mask(out, z) for z in ("utm31", "utm32")}
    n_done = sum(int(d.sum()) for d in done.values())
    total = sum(d.size for d in done.values())
    assert 6 <= n_done < total  # the timed chunk + 5 at least, not all
    partial = te.open_region(out)
    for z, ds in partial.items():  # a valid store: unfinished chunks read as no data
        assert ds["done"].values.astype(bool).tolist() == done[z].tolist()
    recomputed = []
    job = te.run_region(te.predict_map, region["store"], clf, bbox=BBOX, year=2024, out=out, client=client,
                        chunk=CHUNK, progress=False, on_chunk=recomputed.append)
    assert job.skipped == n_done and job.computed == total - n_done
    assert len(recomputed) in (total - n_done, total - n_done - 1)  # one may be the timed chunk, done here
    for rec in recomputed:
        assert not done[rec["zone"]][rec["i"], rec["j"]]
    _assert_equal_classification(out, region["store"], clf)
    with pytest.raises(ArgumentError, match="another job"):
        te.run_region(te.similarity, region["store"], (5.95, 52.15), bbox=BBOX, year=2024, out=out, client=client,
                      chunk=CHUNK, progress=False)


def test_similarity_change_project_trust_equal_single_process(region, client, clf, tmp_path):
    store = region["store"]
    q = (5.87, 52.13)
    sim = te.run_region(te.similarity, store, q, bbox=BBOX, year=2024, out=str(tmp_path / "s.zarr"), client=client,
                        chunk=CHUNK, progress=False).open()
    chg = te.run_region(te.change, store, 2024, bbox=BBOX, year=2023, out=str(tmp_path / "c.zarr"), client=client,
                        chunk=CHUNK, progress=False).open()
    _, pca = te.project(te.open_embeddings(store, bbox=(5.81, 52.11, 5.89, 52.19), year=2024), random_state=0)
    prj = te.run_region(te.project, store, fitted=pca, bbox=BBOX, year=2024, out=str(tmp_path / "p.zarr"),
                        client=client, chunk=CHUNK, progress=False).open()
    tr = te.run_region(te.trust, store, clf, bbox=BBOX, year=2024, out=str(tmp_path / "t.zarr"), client=client,
                       chunk=CHUNK, progress=False).open()
    qv = te.open_embeddings(store, bbox=(q[0] - 0.01, q[1] - 0.01, q[0] + 0.01, q[1] + 0.01), year=2024)
    from tessera_explore.classify.similarity import query_vectors

    vec, _ = query_vectors(qv, q)
    for z in (31, 32):
        name = f"utm{z}"
        ref = _reference(store, z, lambda da: te.similarity(da, vec))
        np.testing.assert_array_equal(_on_region(sim[name], ref)["similarity"].values, ref.values)
        ref = te.change(_open_ref(store, z, 2023), _open_ref(store, z, 2024))
        got = _on_region(chg[name], ref)
        np.testing.assert_array_equal(got["distance"].values, ref["distance"].values)
        np.testing.assert_array_equal(got["change_class"].values, ref["change_class"].values)
        ref = _reference(store, z, lambda da: te.project(da, fitted=pca)[0])
        np.testing.assert_allclose(_on_region(prj[name], ref)["components"].values, ref.values, rtol=1e-5, atol=1e-5)
        ref = _reference(store, z, lambda da: te.trust(da, clf))
        got = _on_region(tr[name], ref)
        np.testing.assert_array_equal(got["reason"].values, ref["reason"].values)
        np.testing.assert_allclose(got["trust"].values, ref["trust"].values, rtol=1e-6, atol=1e-6)


def test_cog_export_merges_zones_with_provenance(region, client, clf, tmp_path):
    import rasterio

    job = te.run_region(te.predict_map, region["store"], clf, bbox=BBOX, year=2024, out=str(tmp_path / "o.zarr"),
                        client=client, chunk=CHUNK, progress=False)
    path = job.to_cog(tmp_path / "county.tif", variable="class")
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() in (32631, 32632)
        tags = src.tags()
        assert tags["TESSERA_DATASET_VERSION"] == "v1.1" and tags["TESSERA_YEAR"] == "2024"
        assert '"predict_map"' in tags["TESSERA_REGION"]
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        a = src.read(1)
        # both zones land in the merged file: classes on both sides of 6 E
        xs, ys = rasterio.warp.transform("EPSG:4326", src.crs, [5.9, 6.1], [52.2, 52.2])
        assert (a != 255).mean() > 0.3
        for x, y in zip(xs, ys):
            r, c = src.index(x, y)
            assert a[r, c] != 255
    with pytest.raises(ArgumentError, match="variable"):
        job.to_cog(tmp_path / "x.tif")


def test_estimate_before_the_job(region, clf):
    est = te.estimate_region(te.predict_map, region["store"], clf, bbox=BBOX, year=2024, chunk=CHUNK, workers=2)
    specs = plan_region(region["store"], BBOX, 2024, chunk=CHUNK)
    assert est.chunks == sum(s.n_chunks[0] * s.n_chunks[1] for s in specs)
    assert est.bytes_to_read == pytest.approx(est.pixels * 132, rel=0.01)
    assert est.seconds == pytest.approx(est.chunks * est.seconds_per_chunk / 2)
    assert "chunks" in str(est)


def test_bad_arguments(region, clf, tmp_path):
    with pytest.raises(ArgumentError, match="fitted"):
        te.run_region(te.project, region["store"], bbox=BBOX, year=2024, out=str(tmp_path / "x.zarr"))
    with pytest.raises(ArgumentError, match="runs"):
        te.run_region(te.cluster, region["store"], bbox=BBOX, year=2024, out=str(tmp_path / "x.zarr"))
    os.makedirs(tmp_path / "taken")
    open(tmp_path / "taken" / "zarr.json", "w").write('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    with pytest.raises(ArgumentError, match="not the output"):
        te.run_region(te.predict_map, region["store"], clf, bbox=BBOX, year=2024, out=str(tmp_path / "taken"),
                      progress=False, client="tcp://127.0.0.1:1")
