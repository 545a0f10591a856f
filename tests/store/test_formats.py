"""The Icechunk copy, per-zone statistics, versions and variants, and fetch_region."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import tessera_explore as te
from tessera_explore.exceptions import StoreError, VersionMismatchError

from .conftest import BBOX_EQUATOR, BBOX_NORTH, BBOX_SOUTH, EQUATOR, NORTH, SEED, SHAPE, SOUTH, YEARS


@pytest.fixture(scope="module")
def icechunk_repo(tmp_path_factory):
    pytest.importorskip("icechunk", reason="the icechunk package is in requirements/base.txt")
    from tessera_explore.testing.store import make_icechunk

    return make_icechunk(tmp_path_factory.mktemp("ic") / "scene.icechunk", tiles=NORTH + EQUATOR + SOUTH,
                         years=YEARS, shape=SHAPE, seed=SEED, shard=64, chunk=32)


@pytest.mark.parametrize("bbox", [BBOX_NORTH, BBOX_EQUATOR, BBOX_SOUTH], ids=["north", "equator", "south"])
def test_icechunk_copy_gives_the_same_values(scene, icechunk_repo, bbox):
    import zarr

    groups = sorted(zarr.open_group(__import__("icechunk").Repository.open(
        __import__("icechunk").local_filesystem_storage(icechunk_repo)).readonly_session("main").store,
        mode="r").group_keys())
    assert {"31N", "36N", "36S", "21S"} <= set(groups)  # zone + hemisphere groups, each in its own CRS
    a = te.open_embeddings(icechunk_repo, bbox=bbox, year=2024)
    b = te.open_embeddings(scene["store"], bbox=bbox, year=2024)
    assert a.rio.crs == b.rio.crs and np.array_equal(a.y.values, b.y.values)
    assert np.array_equal(a.values, b.values, equal_nan=True)
    assert (a.attrs["dataset_version"], a.attrs["dataset_variant"]) == ("v1.1", "dclimate")
    # the copy marks every pixel without an embedding NaN: no water/not-computed distinction
    assert set(np.unique(te.data_mask(a).values)) <= {0, 2}


def test_icechunk_missing_package_says_what_to_install(monkeypatch, tmp_path):
    import builtins

    real = builtins.__import__

    def no_icechunk(name, *args, **kwargs):
        if name == "icechunk":
            raise ImportError("no icechunk")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_icechunk)
    with pytest.raises(StoreError, match="pip install 'icechunk"):
        te.open_embeddings(str(tmp_path / "x.icechunk"), bbox=BBOX_NORTH, year=2024)


def test_pca_from_zone_statistics_matches_pixels(scene):
    import zarr
    from sklearn.decomposition import PCA

    da = te.open_embeddings(scene["store"], bbox=BBOX_NORTH, year=2024)
    comps, fitted = te.project(da, from_stats=True)
    # the same PCA fitted on every valid pixel of the zone and year
    g = zarr.open_group(scene["store"], mode="r")["utm31"]
    q, s = np.asarray(g["embeddings"][1]), np.asarray(g["scales"][1])
    ok = np.isfinite(s)
    X = (q[:, ok].astype(np.float64) * s[ok]).T
    ref = PCA(3).fit(X)
    assert fitted.n_samples_fit_ == X.shape[0]
    for c_ref, c_stats in zip(ref.components_, fitted.components_):
        assert min(np.abs(c_ref - c_stats).max(), np.abs(c_ref + c_stats).max()) < 1e-6
    assert np.allclose(ref.explained_variance_ratio_, fitted.explained_variance_ratio_, atol=1e-6)
    assert comps.sizes["component"] == 3 and np.isfinite(comps.values).mean() > 0.5
    # neighbouring areas of one zone get one projection: a second area's colours use the same fit
    other = te.open_embeddings(scene["store"], bbox=(5.92, 52.12, 5.98, 52.18), year=2024)
    _, fitted2 = te.project(other, from_stats=True)
    assert np.allclose(fitted2.components_, fitted.components_)
    with pytest.raises(StoreError, match="one Zarr store"):
        te.project(te.open_embeddings(scene["tiles"], bbox=BBOX_NORTH, year=2024), from_stats=True)


def test_variants_never_mix(scene, other_variant_store, tmp_path):
    a = te.open_embeddings(scene["store"], bbox=BBOX_NORTH, year=2024)
    b = te.open_embeddings(other_variant_store, bbox=BBOX_NORTH, year=2024)
    assert b.attrs["dataset_variant"] == "cambridge"
    with pytest.raises(VersionMismatchError, match="variant"):
        te.open_embeddings([scene["store"], other_variant_store], bbox=BBOX_NORTH, year=2024)
    with pytest.raises(VersionMismatchError, match="dclimate.*cambridge"):
        te.change(te.open_embeddings(scene["store"], bbox=BBOX_NORTH, year=2023), b)
    from tessera_explore._schema import check_compatible

    with pytest.raises(VersionMismatchError, match="variant"):
        check_compatible(a, b)
    store = te.LabelStore(tmp_path / "l.geojson", classes=["a", "b"])
    for i, (x, y) in enumerate(zip(np.linspace(0.03, 0.17, 8), np.linspace(52.13, 52.17, 8))):
        store.add_point(float(x), float(y), "ab"[i % 2])
    clf = te.fit_classifier(a, store)
    with pytest.raises(VersionMismatchError, match="variant"):
        te.predict_map(b, clf)
    # a label file records the variant it was drawn on; another variant's area refuses it
    cam = te.LabelStore(tmp_path / "cam.geojson", classes=["a", "b"], dataset_version="v1.1",
                        dataset_variant="cambridge")
    cam.add_point(0.05, 52.15, "a")
    cam.close()
    reopened = te.LabelStore.open(tmp_path / "cam.geojson")
    assert reopened.dataset_variant == "cambridge"
    with pytest.raises(VersionMismatchError, match="cambridge"):
        te.sample_labels(a, reopened)
    reopened.close()
    with pytest.raises(te.TesseraExploreError, match="variant"):
        te.LabelStore.open(tmp_path / "cam.geojson", dataset_version="v1.1", dataset_variant="dclimate")
    _, pca = te.project(a, random_state=0)
    with pytest.raises(VersionMismatchError, match="variant"):
        te.project(b, fitted=pca)
    # a dataset_version= argument never hides what a store records
    with pytest.raises(VersionMismatchError, match="v2"):
        te.open_embeddings(scene["store"], bbox=BBOX_NORTH, year=2024, dataset_version="v2")


def test_fetch_region_copies_resumes_and_opens_offline(scene, tmp_path):
    from tessera_explore.io.fetch_region import MANIFEST
    from tessera_explore.testing.server import serve_folder

    dest = tmp_path / "local.zarr"
    local = te.open_embeddings(scene["store"], bbox=BBOX_NORTH, year=2024).values
    with serve_folder(scene["root"]) as srv:
        url = srv.url + "/s.zarr"
        te.fetch_region(BBOX_NORTH, [2023, 2024], dest=dest, source=url, progress=False)
        first = srv.requests
        manifest = json.loads((dest / MANIFEST).read_text())
        assert manifest["source"] == url and manifest["dataset_variant"] == "dclimate" and manifest["done"]
        # resumed: a second call copies nothing again
        from tessera_explore.io import store

        store._SOURCES.clear()
        srv.reset_counters()
        te.fetch_region(BBOX_NORTH, [2023, 2024], dest=dest, source=url, progress=False)
        chunk_reqs = [p for p, _, _ in srv.log if "/embeddings/c/" in p or "/scales/c/" in p]
        assert not chunk_reqs and first > 0
    # offline: the server is gone
    store._SOURCES.clear()
    da = te.open_embeddings(str(dest), bbox=BBOX_NORTH, year=2024)
    assert np.array_equal(da.values, local, equal_nan=True)
    assert da.attrs["dataset_variant"] == "dclimate"
    _, fitted = te.project(da, from_stats=True)  # the statistics came along
    assert fitted.n_samples_fit_ > 0


def test_fetch_region_interrupted_then_resumed(scene, tmp_path, monkeypatch):
    from tessera_explore.io import fetch_region as fr

    dest = tmp_path / "local.zarr"
    calls = {"n": 0}
    real = fr._write_json_atomic

    def dies_after_two(path, obj):
        if obj.get("done") and len(obj["done"]) >= 2:
            calls["n"] += 1
            raise KeyboardInterrupt
        real(path, obj)

    monkeypatch.setattr(fr, "_write_json_atomic", dies_after_two)
    monkeypatch.setattr(fr, "BLOCK", 32)
    bbox = (0.02, 52.12, 0.18, 52.18)
    with pytest.raises(KeyboardInterrupt):
        te.fetch_region(bbox, 2024, dest=dest, source=scene["store"], progress=False)
    monkeypatch.setattr(fr, "_write_json_atomic", real)
    done_before = json.loads((dest / fr.MANIFEST).read_text())["done"]
    assert len(done_before) == 1
    te.fetch_region(bbox, 2024, dest=dest, source=scene["store"], progress=False)
    from tessera_explore.io import store

    store._SOURCES.clear()
    a = te.open_embeddings(str(dest), bbox=bbox, year=2024).values
    b = te.open_embeddings(scene["store"], bbox=bbox, year=2024).values
    assert np.array_equal(a, b, equal_nan=True)


def test_fetch_region_refuses_another_dataset(scene, other_variant_store, tmp_path):
    dest = tmp_path / "local.zarr"
    te.fetch_region(BBOX_NORTH, 2024, dest=dest, source=scene["store"], progress=False)
    with pytest.raises(VersionMismatchError, match="cambridge"):
        te.fetch_region(BBOX_NORTH, 2024, dest=dest, source=other_variant_store, progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not empty"):
        te.fetch_region(BBOX_NORTH, 2024, dest=tmp_path / "busy", source=scene["store"], progress=False)
    assert os.listdir(tmp_path / "busy") == ["notes.txt"]
