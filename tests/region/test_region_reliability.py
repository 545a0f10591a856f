"""Regional outputs under faults (issue 23, items 4 and 18): a rerun on an existing
``out=`` resumes only the very same job (the operation's content, not only its name);
damaged ``done`` cells, zone groups missing after a kill during creation and missing
paths give a repaired store or a ``TesseraExploreError`` naming the file, never a raw
error, a patchwork or a wiped folder.

A small synthetic region of 2 x 2 tiles across the 6 E zone edge (zones 31 and 32), on a
2-worker ``LocalCluster``; real Zarr outputs on disk, real damage, and a real
subprocess killed while it creates the output store."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

import tessera_explore as te
from tessera_explore.exceptions import TesseraExploreError, TesseraExploreWarning
from tessera_explore.region.output import done_mask
from tessera_explore.region.plan import plan_region
from tessera_explore.testing import CLASSES, scene_classes

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TILES = [(5.95, 52.05), (6.05, 52.05), (5.95, 52.15), (6.05, 52.15)]
BBOX = (5.9, 52.0, 6.1, 52.2)
CHUNK = 32
ZONES = ("utm31", "utm32")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from tessera_explore.testing import make_store

    root = tmp_path_factory.mktemp("small")
    return make_store(root / "r.zarr", tiles=TILES, years=[2022, 2023, 2024], shape=(48, 48), seed=3, shard=128,
                      chunk=32)


def _fit(store, seed, model="knn"):
    da = te.open_embeddings(store, bbox=(5.91, 52.01, 6.09, 52.19), year=2024)
    rng = np.random.default_rng(seed)
    lon, lat = rng.uniform(5.91, 6.09, 400), rng.uniform(52.01, 52.19, 400)
    cls = scene_classes(lon, lat, 2024, seed=3)
    return te.fit_classifier(da, [(float(a), float(b), CLASSES[c]) for a, b, c in zip(lon, lat, cls)], model=model)


@pytest.fixture(scope="module")
def clfs(store):
    a, same, b = _fit(store, 0), _fit(store, 0), _fit(store, 0, model="logreg")
    assert list(a.classes_) == list(b.classes_)  # the same class names: only the fit differs
    return {"a": a, "same": same, "b": b}


def _run(verb, store, *args, out, client, **kw):
    return te.run_region(verb, store, *args, bbox=BBOX, year=kw.pop("year", 2024), out=str(out), client=client,
                         chunk=CHUNK, progress=False, **kw)


def _total(store):
    return sum(s.n_chunks[0] * s.n_chunks[1] for s in plan_region(store, BBOX, 2024, chunk=CHUNK))


def _reference(store, zone, fn, year=2024):
    spec = next(s for s in plan_region(store, BBOX, 2024, chunk=CHUNK) if s.name == zone)
    da = te.open_embeddings(store, bbox=spec.open_bbox, year=year, crs=f"EPSG:{spec.epsg}", missing="nan")
    return fn(da.isel(y=slice(spec.row0, spec.row0 + spec.height), x=slice(spec.col0, spec.col0 + spec.width)))


def _assert_classes(out, store, clf):
    dss = te.open_region(out)
    assert set(dss) == set(ZONES)
    for z, got in dss.items():
        ref = _reference(store, z, lambda da: te.predict_map(da, clf))
        np.testing.assert_array_equal(got["class"].values, ref["class"].values)
        np.testing.assert_array_equal(got["confidence"].values, ref["confidence"].values)
        assert (ref["class"].values != 255).mean() > 0.3
        assert got["done"].values.all()


# -- 4. a rerun resumes only the same job -----------------------------------------------------


def test_another_classifier_with_the_same_classes_is_refused(store, clfs, client, tmp_path):
    out = tmp_path / "cls.zarr"
    first = _run(te.predict_map, store, clfs["a"], out=out, client=client)
    assert first.computed == _total(store)
    # a classifier fitted again on the same labels is the same job, and so is one that
    # travelled through pickle: both resume
    assert _run(te.predict_map, store, clfs["same"], out=out, client=client).computed == 0
    assert _run(te.predict_map, store, pickle.loads(pickle.dumps(clfs["a"])), out=out, client=client).computed == 0
    with pytest.raises(TesseraExploreError, match="another job") as err:
        _run(te.predict_map, store, clfs["b"], out=out, client=client)
    msg = str(err.value)
    assert str(out) in msg and "out=" in msg and "classifier" in msg and "overwrite=True" in msg
    _assert_classes(str(out), store, clfs["a"])  # untouched by the refused job
    again = _run(te.predict_map, store, clfs["b"], out=out, client=client, overwrite=True)
    assert again.computed == _total(store)
    _assert_classes(str(out), store, clfs["b"])
    # trust carries the classifier too
    tout = tmp_path / "trust.zarr"
    _run(te.trust, store, clfs["a"], out=tout, client=client)
    with pytest.raises(TesseraExploreError, match="classifier"):
        _run(te.trust, store, clfs["b"], out=tout, client=client)


def test_another_similarity_query_is_refused(store, client, tmp_path):
    out = tmp_path / "sim.zarr"
    _run(te.similarity, store, (5.94, 52.06), out=out, client=client)
    assert _run(te.similarity, store, (5.94, 52.06), out=out, client=client).computed == 0
    with pytest.raises(TesseraExploreError, match="query") as err:
        _run(te.similarity, store, (6.07, 52.17), out=out, client=client)
    assert str(out) in str(err.value)
    with pytest.raises(TesseraExploreError, match="query"):  # the same point, given as vectors of another one
        q = te.open_embeddings(store, bbox=(6.06, 52.16, 6.08, 52.18), year=2024)
        from tessera_explore.classify.similarity import query_vectors

        vec, _ = query_vectors(q, (6.07, 52.17))
        _run(te.similarity, store, vec, out=out, client=client)


def test_another_fitted_projection_is_refused(store, client, tmp_path):
    out = tmp_path / "prj.zarr"
    _, pca = te.project(te.open_embeddings(store, bbox=(5.91, 52.01, 5.99, 52.09), year=2024), random_state=0)
    _, other = te.project(te.open_embeddings(store, bbox=(6.01, 52.11, 6.09, 52.19), year=2024), random_state=0)
    assert pca.n_components == other.n_components
    _run(te.project, store, fitted=pca, out=out, client=client)
    assert _run(te.project, store, fitted=pickle.loads(pickle.dumps(pca)), out=out, client=client).computed == 0
    with pytest.raises(TesseraExploreError, match="projection") as err:
        _run(te.project, store, fitted=other, out=out, client=client)
    assert str(out) in str(err.value)


def test_another_change_year_is_refused(store, client, tmp_path):
    out = tmp_path / "chg.zarr"
    _run(te.change, store, 2024, year=2022, out=out, client=client)
    assert _run(te.change, store, 2024, year=2022, out=out, client=client).computed == 0
    with pytest.raises(TesseraExploreError, match="year") as err:
        _run(te.change, store, 2023, year=2022, out=out, client=client)
    assert str(out) in str(err.value) and "2023" in str(err.value) and "2024" in str(err.value)


# -- 18. damaged outputs ---------------------------------------------------------------------


def test_garbage_done_cells_are_recomputed(store, clfs, client, tmp_path):
    out = str(tmp_path / "dmg.zarr")
    _run(te.predict_map, store, clfs["a"], out=out, client=client)
    bad = {"utm31": os.path.join(out, "utm31", "done", "c", "0", "0"),
           "utm32": os.path.join(out, "utm32", "done", "c", "0", "1")}
    for p in bad.values():
        assert os.path.isfile(p)
    with open(bad["utm31"], "wb") as f:
        f.write(os.urandom(40))  # garbage
    with open(bad["utm32"], "wb"):
        pass  # 0 bytes: what a power cut can leave
    with pytest.warns(TesseraExploreWarning, match="done") as rec:  # readable, with the damage named
        dss = te.open_region(out)
    assert any(bad["utm31"] in str(w.message) for w in rec)
    assert not dss["utm31"]["done"].values[0, 0] and not dss["utm32"]["done"].values[0, 1]
    assert dss["utm31"]["done"].values.sum() == dss["utm31"]["done"].size - 1
    seen = []
    with pytest.warns(TesseraExploreWarning, match="recomputed"):
        job = _run(te.predict_map, store, clfs["a"], out=out, client=client, on_chunk=seen.append)
    assert job.computed == 2 and job.skipped == _total(store) - 2  # exactly the two chunks
    assert {(r["zone"], r["i"], r["j"]) for r in seen} <= {("utm31", 0, 0), ("utm32", 0, 1)}
    with warnings.catch_warnings():
        warnings.simplefilter("error", TesseraExploreWarning)  # repaired: no warning any more
        _assert_classes(out, store, clfs["a"])


CHILD = textwrap.dedent("""
    import pickle, sys, time
    import zarr

    store, out, clf_path, kind, name, marker = sys.argv[1:]
    orig_group, orig_array = zarr.Group.create_group, zarr.Group.create_array

    def pause():
        open(marker, "w").close()
        time.sleep(600)  # killed here

    def create_group(self, gname, *args, **kw):
        if kind == "group" and gname == name:
            pause()
        return orig_group(self, gname, *args, **kw)

    def create_array(self, aname, *args, **kw):
        if kind == "array" and self.path == "utm32" and aname == name:
            pause()
        return orig_array(self, aname, *args, **kw)

    zarr.Group.create_group, zarr.Group.create_array = create_group, create_array
    import tessera_explore as te

    with open(clf_path, "rb") as f:
        clf = pickle.load(f)
    te.run_region(te.predict_map, store, clf, bbox=(5.9, 52.0, 6.1, 52.2), year=2024, out=out, chunk=32,
                  progress=False, client="tcp://127.0.0.1:1")
""")


@pytest.mark.parametrize("kind,name", [("group", "utm32"), ("array", "confidence")])
def test_a_kill_while_creating_the_store_is_repaired_by_the_rerun(store, clfs, client, tmp_path, kind, name):
    out, marker, clf_path = str(tmp_path / "killed.zarr"), str(tmp_path / "paused"), str(tmp_path / "clf.pkl")
    with open(clf_path, "wb") as f:
        pickle.dump(clfs["a"], f)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen([sys.executable, str(script), store, out, clf_path, kind, name, marker],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 180
        while not os.path.exists(marker):
            if proc.poll() is not None or time.time() > deadline:
                raise AssertionError(f"the child never reached the pause: {proc.communicate()[0].decode()[-3000:]}")
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)  # killed while it creates the store
    finally:
        proc.kill()
        proc.wait()
    # what the kill left: the job recorded, zone 31 complete, zone 32 missing or half made
    assert os.path.isfile(os.path.join(out, "zarr.json")) and os.path.isdir(os.path.join(out, "utm31", "done"))
    if kind == "group":
        assert not os.path.exists(os.path.join(out, "utm32"))
    else:
        assert os.path.isdir(os.path.join(out, "utm32", "class"))
        assert not os.path.exists(os.path.join(out, "utm32", "confidence"))
        assert not os.path.exists(os.path.join(out, "utm32", "done"))
    with pytest.warns(TesseraExploreWarning, match="utm32"):
        job = _run(te.predict_map, store, clfs["a"], out=out, client=client)
    assert job.computed == _total(store)  # nothing had been computed before the kill
    _assert_classes(out, store, clfs["a"])


def test_open_region_on_a_missing_path_or_zone_names_it(store, clfs, client, tmp_path):
    missing = str(tmp_path / "nowhere.zarr")
    with pytest.raises(TesseraExploreError, match="nowhere.zarr"):
        te.open_region(missing)
    with pytest.raises(TesseraExploreError, match="nowhere.zarr"):
        te.region_to_cog(missing, tmp_path / "x.tif")
    out = str(tmp_path / "o.zarr")
    _run(te.predict_map, store, clfs["a"], out=out, client=client)
    import shutil

    shutil.rmtree(os.path.join(out, "utm32"))
    with pytest.raises(TesseraExploreError, match="utm32"):
        te.open_region(out)
    assert set(te.open_region(out, "utm31").data_vars) >= {"class", "confidence"}


def test_an_existing_folder_that_is_not_a_job_is_never_wiped(store, clfs, tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "mine.txt").write_text("field notes")
    with pytest.raises(TesseraExploreError, match="not the output"):
        te.run_region(te.predict_map, store, clfs["a"], bbox=BBOX, year=2024, out=str(folder), chunk=CHUNK,
                      progress=False, client="tcp://127.0.0.1:1")
    assert (folder / "mine.txt").read_text() == "field notes"
    (tmp_path / "file.zarr").write_text("x")
    with pytest.raises(TesseraExploreError, match="file.zarr"):
        te.run_region(te.predict_map, store, clfs["a"], bbox=BBOX, year=2024, out=str(tmp_path / "file.zarr"),
                      chunk=CHUNK, progress=False, client="tcp://127.0.0.1:1")


def test_an_unreadable_root_is_refused_not_wiped(store, clfs, client, tmp_path):
    out = str(tmp_path / "root.zarr")
    _run(te.predict_map, store, clfs["a"], out=out, client=client)
    root_json = os.path.join(out, "zarr.json")
    with open(root_json, "w") as f:
        f.write('{"zarr_format": 3, "node_')  # cut short
    with pytest.raises(TesseraExploreError, match="zarr.json"):
        _run(te.predict_map, store, clfs["a"], out=out, client=client)
    assert os.path.isdir(os.path.join(out, "utm31", "class"))  # the finished chunks are still there
    with pytest.raises(TesseraExploreError, match="zarr.json"):
        te.open_region(out)
    assert done_mask(out, "utm31").all()
