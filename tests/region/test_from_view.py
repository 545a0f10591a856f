"""The "map region" back end (``region/from_view.py``): a classifier and a bbox run as a
background ``run_region`` job on a LocalCluster of threads, over a small synthetic
store of 2 x 2 tiles; progress, the class map, cancelling, and the checks made at
``start()`` (a region too large, outside the store, no classifier)."""

from __future__ import annotations

import numpy as np
import pytest

import tessera_explore as te
from tessera_explore.exceptions import (
    AreaTooLargeError,
    ArgumentError,
    ClassifierError,
    NoTilesInAreaError,
)
from tessera_explore.region.from_view import JobCancelledError, MapRegionJob, close_local_cluster, local_client
from tessera_explore.region.plan import plan_region
from tessera_explore.testing import CLASSES, scene_classes

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TILES = [(5.85 + 0.1 * i, 52.05 + 0.1 * j) for i in range(2) for j in range(2)]
BBOX = (5.82, 52.02, 5.98, 52.18)  # zone 31
CHUNK = 32  # the store's inner chunk: several chunks per job


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from tessera_explore.testing import make_store

    root = tmp_path_factory.mktemp("fromview")
    return make_store(root / "r.zarr", tiles=TILES, years=[2024], shape=(40, 40), seed=3, shard=64, chunk=32)


@pytest.fixture(scope="module")
def clf(store):
    da = te.open_embeddings(store, bbox=(5.81, 52.01, 5.89, 52.09), year=2024)
    rng = np.random.default_rng(0)
    lon, lat = rng.uniform(5.81, 5.89, 200), rng.uniform(52.01, 52.09, 200)
    cls = scene_classes(lon, lat, 2024, seed=3)
    return te.fit_classifier(da, [(float(a), float(b), CLASSES[c]) for a, b, c in zip(lon, lat, cls)])


@pytest.fixture(scope="module")
def client():
    c = local_client(processes=False)
    yield c
    close_local_cluster()


def _reference(store, clf):
    """predict_map of the region's grid opened directly in this process."""
    (spec,) = plan_region(store, BBOX, 2024, chunk=CHUNK)
    da = te.open_embeddings(store, bbox=spec.open_bbox, year=2024, crs=f"EPSG:{spec.epsg}", missing="nan")
    da = da.isel(y=slice(spec.row0, spec.row0 + spec.height), x=slice(spec.col0, spec.col0 + spec.width))
    return te.predict_map(da, clf), spec


def test_the_class_map_equals_predict_map_and_progress_reaches_one(store, clf, client, tmp_path):
    seen = []
    job = MapRegionJob(store, BBOX, clf, year=2024, out=tmp_path / "m.zarr", client=client, chunk=CHUNK,
                       progress=lambda f, msg: seen.append((f, msg)))
    assert job.state == "new" and not job.done()
    assert job.start() is job
    cm = job.result(timeout=300)
    assert job.state == "done" and job.done() and job.error is None
    ref, spec = _reference(store, clf)
    total = spec.n_chunks[0] * spec.n_chunks[1]
    assert total >= 4
    assert job.job.computed == total
    assert cm.dims == ("y", "x") and cm.shape == ref["class"].shape
    np.testing.assert_allclose(cm.x.values, ref.x.values, atol=1e-6)
    got = cm.values
    assert (got != 255).any()
    assert np.array_equal(got, ref["class"].values)
    assert list(cm.attrs["classes"]) == list(ref.attrs["classes"])
    # progress: planning, then fractions of chunks that never go back, ending at 1
    fr = [f for f, _ in seen]
    assert seen[0] == (0.0, "planning the region")
    assert fr == sorted(fr) and fr[-1] == 1.0 and all(0 <= f <= 1 for f in fr)
    assert any(f"of {total} chunks" in m for _, m in seen) and seen[-1][1].startswith("done")
    # the opened output carries the confidence too
    assert "confidence" in job.output()


def test_cancel_stops_the_job(store, clf, client, tmp_path):
    holder = {}

    def progress(f, msg):
        if msg.startswith("1 of"):
            holder["job"].cancel()

    job = MapRegionJob(store, BBOX, clf, year=2024, out=tmp_path / "c.zarr", client=client, chunk=CHUNK,
                       progress=progress)
    holder["job"] = job
    job.start()
    assert job.wait(300)
    assert job.state == "cancelled" and job.job is None and job.fraction < 1
    with pytest.raises(JobCancelledError):
        job.result(timeout=1)
    # the same job again resumes what finished
    again = MapRegionJob(store, BBOX, clf, year=2024, out=tmp_path / "c.zarr", client=client, chunk=CHUNK).start()
    again.result(timeout=300)
    assert again.state == "done" and again.job.skipped >= 1


def test_bad_requests_are_refused_at_start(store, clf, client):
    with pytest.raises(AreaTooLargeError, match="M pixels"):
        MapRegionJob(store, BBOX, clf, year=2024, client=client, max_pixels=10_000).start()
    with pytest.raises(NoTilesInAreaError, match="no 2024 data"):
        MapRegionJob(store, (100.0, 10.0, 100.1, 10.1), clf, year=2024, client=client).start()
    with pytest.raises(AreaTooLargeError):  # a country is refused before anything is planned
        MapRegionJob(store, (0.0, 45.0, 12.0, 55.0), clf, year=2024, client=client).start()
    with pytest.raises(ClassifierError, match="fitted classifier"):
        MapRegionJob(store, BBOX, object(), year=2024, client=client).start()
    with pytest.raises(ArgumentError, match="year="):
        MapRegionJob(store, BBOX, clf, client=client).start()
    with pytest.raises(ArgumentError, match="unknown options"):
        MapRegionJob(store, BBOX, clf, year=2024, colour="red")
    job = MapRegionJob(store, BBOX, clf, year=2024, client=client, max_pixels=10_000)
    with pytest.raises(AreaTooLargeError):
        job.start()
    assert job.state == "new" and job.out is None  # nothing started, no folder made


def test_views_and_loaders_name_their_store(store, clf):
    from tessera_explore.io.viewport import ViewLoader
    from tessera_explore.region.from_view import _location

    loader = ViewLoader(store, year=2024)
    view = loader.load(BBOX)
    assert _location(loader)[0] == loader.store.url
    assert _location(view)[0] == loader.store.url
    assert _location(loader.store)[0] == loader.store.url
    with pytest.raises(ArgumentError):
        _location(3.5)


def test_without_a_client_the_local_cluster_is_made_once(store, clf, client, tmp_path, monkeypatch):
    import distributed

    def no_client():
        raise ValueError("no client")

    monkeypatch.setattr(distributed, "get_client", no_client)
    job = MapRegionJob(store, BBOX, clf, year=2024, out=tmp_path / "d.zarr", chunk=CHUNK).start()
    job.result(timeout=300)
    assert job.state == "done"
    assert local_client(processes=False) is client  # reused, not made again
