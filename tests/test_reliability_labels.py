"""Label files never lose labels: one writer per file (real processes), changes made by
someone else merged or refused, closed stores refuse edits, observers cannot fail a save."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tessera_explore.classify import LabelStore
from tessera_explore.exceptions import LabelConflictError, LabelError, TesseraExploreWarning

pytestmark = pytest.mark.filterwarnings("error::tessera_explore.exceptions.TesseraExploreWarning")

_CHILD = textwrap.dedent("""
    import json, sys, time
    from tessera_explore.classify import LabelStore
    from tessera_explore.exceptions import LabelConflictError

    path, lon0, n, ready, go = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    try:
        store = LabelStore.open(path)
    except LabelConflictError as err:
        print(json.dumps({"refused": str(err)}))
        sys.exit(0)
    open(ready, "w").close()
    import os
    while not os.path.exists(go):  # wait for the parent's word (no timing involved)
        time.sleep(0.01)
    for i in range(n):
        store.add_point(lon0 + i * 0.001, 52.05, "forest")
    store.close()
    print(json.dumps({"added": n}))
""")


def _features(path):
    with open(path) as f:
        return json.load(f)["features"]


def _new_file(tmp_path, name="labels.geojson"):
    s = LabelStore(tmp_path / name, classes=["forest", "water"], dataset_version="v1", year=2024)
    s.close()
    return s.path


def _spawn(path, lon0, n, tmp_path, tag):
    ready, go = tmp_path / f"ready-{tag}", tmp_path / f"go-{tag}"
    p = subprocess.Popen([sys.executable, "-c", _CHILD, path, str(lon0), str(n), str(ready), str(go)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return p, ready, go


def _wait_ready(proc, ready):
    while not ready.exists():
        if proc.poll() is not None:
            return False
    return True


def test_a_second_process_cannot_open_a_file_another_process_is_editing(tmp_path):
    path = _new_file(tmp_path)
    first, ready1, go1 = _spawn(path, 0.10, 5, tmp_path, "a")
    assert _wait_ready(first, ready1), first.communicate()
    second, ready2, go2 = _spawn(path, 0.20, 5, tmp_path, "b")
    out2, err2 = second.communicate(timeout=120)
    assert second.returncode == 0, err2
    assert "open in another process" in json.loads(out2)["refused"]
    go1.touch()
    out1, err1 = first.communicate(timeout=120)
    assert first.returncode == 0, err1
    assert json.loads(out1) == {"added": 5}
    # once the first closed, the second can go on, and nothing of the first is lost
    third, ready3, go3 = _spawn(path, 0.20, 5, tmp_path, "c")
    assert _wait_ready(third, ready3), third.communicate()
    go3.touch()
    out3, err3 = third.communicate(timeout=120)
    assert third.returncode == 0, err3
    assert len(_features(path)) == 10
    assert not os.path.exists(path + ".lock")


def test_two_stores_in_this_process_merge_each_others_labels(tmp_path):
    path = _new_file(tmp_path)
    a = LabelStore.open(path)
    b = LabelStore.open(path)
    a.add_point(0.10, 52.05, "forest")
    b.add_point(0.20, 52.05, "water")  # b never saw a's point: it is merged, not overwritten
    a.add_point(0.30, 52.05, "forest")
    assert sorted(f["geometry"]["coordinates"][0] for f in _features(path)) == [0.10, 0.20, 0.30]
    assert b.refresh() and len(b) == 3
    # a removal by one is a removal for the other too
    b.remove(next(l.id for l in b if l.lon == 0.10))
    a.add_class("crop")
    assert sorted(l.lon for l in a) == [0.20, 0.30]
    assert sorted(f["geometry"]["coordinates"][0] for f in _features(path)) == [0.20, 0.30]
    # undo in a never takes b's labels away
    a.undo()
    assert sorted(f["geometry"]["coordinates"][0] for f in _features(path)) == [0.20, 0.30]
    a.close()
    b.close()
    assert not os.path.exists(path + ".lock")


def test_a_change_made_by_hand_is_merged_not_overwritten(tmp_path):
    path = _new_file(tmp_path)
    s = LabelStore.open(path)
    s.add_point(0.10, 52.05, "forest")
    doc = json.load(open(path))
    doc["features"].append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [0.5, 52.05]},
                            "properties": {"class": "water"}})
    with open(path, "w") as f:  # an editor, or a writer that ignores the lock
        json.dump(doc, f)
    s.add_point(0.20, 52.05, "forest")
    assert sorted(f["geometry"]["coordinates"][0] for f in _features(path)) == [0.10, 0.20, 0.5]
    assert len(s) == 3
    s.close()


def test_a_conflicting_or_unreadable_change_on_disk_is_refused_clearly(tmp_path):
    path = _new_file(tmp_path)
    s = LabelStore.open(path)
    s.add_point(0.10, 52.05, "forest")
    doc = json.load(open(path))
    doc["features"].append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [0.2, 52.05]},
                            "properties": {"class": "water"}})
    with open(path, "w") as f:
        json.dump(doc, f)
    with pytest.raises(LabelConflictError, match="someone else labelled"):
        s.add_point(0.2, 52.05, "forest")  # the same place, another class
    assert len(_features(path)) == 2 and len(s) == 1  # neither side changed
    with open(path, "w") as f:
        f.write('{"type": "FeatureCollection", "features": [')  # someone else's half-written file
    before = open(path).read()
    with pytest.raises(LabelConflictError, match="changed by someone else"):
        s.add_point(0.3, 52.05, "forest")
    assert open(path).read() == before  # never overwritten
    s.close()


def test_a_stale_lock_is_taken_over_with_a_notice_and_a_live_one_refused(tmp_path):
    path = _new_file(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        with open(path + ".lock", "w") as f:
            json.dump({"pid": proc.pid, "host": socket.gethostname()}, f)
        with pytest.raises(LabelConflictError, match=f"process {proc.pid}"):
            LabelStore.open(path)
    finally:
        proc.kill()
        proc.wait()
    with pytest.warns(TesseraExploreWarning, match="took over"):
        s = LabelStore.open(path)
    assert "took over" in s.lock_notice
    assert json.load(open(path + ".lock"))["pid"] == os.getpid()
    s.close()
    assert not os.path.exists(path + ".lock")
    # a lock of another computer is not ours to judge
    with open(path + ".lock", "w") as f:
        json.dump({"pid": 1, "host": "elsewhere.example"}, f)
    with pytest.raises(LabelConflictError, match="another computer"):
        LabelStore.open(path)
    assert json.load(open(path + ".lock"))["host"] == "elsewhere.example"  # left as it was
    os.remove(path + ".lock")


def test_a_new_store_takes_the_lock_before_it_writes(tmp_path):
    s = LabelStore(tmp_path / "new.geojson", classes=["a"])
    assert os.path.exists(s.path + ".lock")
    code = (f"from tessera_explore.classify import LabelStore\n"
            f"LabelStore.open({s.path!r})\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "LabelConflictError" in r.stderr
    s.close()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_a_closed_store_refuses_edits_and_writes_nothing(tmp_path):
    s = LabelStore(tmp_path / "l.geojson", classes=["a", "b"])
    s.add_point(0.1, 52.0, "a")
    s.close()
    assert s.closed
    before = open(s.path).read()
    for action in (lambda: s.add_point(0.2, 52.0, "a"), lambda: s.add_class("c"), lambda: s.undo(),
                   lambda: s.redo(), lambda: s.clear(), lambda: s.save(), lambda: s.relabel(1, "b"),
                   lambda: s.remove(1), lambda: s.move(1, 0.3, 52.0)):
        with pytest.raises(LabelError, match="closed"):
            action()
    assert open(s.path).read() == before and len(s) == 1  # still readable
    with LabelStore.open(s.path) as again:  # and continued by a new store
        again.add_point(0.2, 52.0, "b")
    assert len(_features(s.path)) == 2


def test_an_observer_that_raises_does_not_make_a_saved_change_look_failed(tmp_path):
    s = LabelStore(tmp_path / "l.geojson", classes=["a"])
    seen = []

    def broken(store, what):
        raise RuntimeError("view is gone")

    s.observe(broken)
    s.observe(lambda store, what: seen.append(what))
    with pytest.warns(TesseraExploreWarning, match="view is gone"):
        lid = s.add_point(0.1, 52.0, "a")
    assert lid == 1 and len(_features(s.path)) == 1 and seen == ["change"]
    with pytest.warns(TesseraExploreWarning, match="saved"):
        assert s.undo()
    assert seen == ["change", "undo"]
    s.close()


def test_numpy_scalar_coordinates_are_numbers(tmp_path):
    s = LabelStore(classes=["a"])
    s.add_point(np.float32(0.15), np.float32(52.05), "a")
    s.add_point(np.int64(1), np.int64(52), "a")
    s.move(1, np.float64(0.2), np.float32(52.0))
    assert [(round(l.lon, 4), round(l.lat, 4)) for l in s] == [(0.2, 52.0), (1.0, 52.0)]
    with pytest.raises(LabelError):
        s.add_point(np.bool_(True), 52.0, "a")


# ---------------------------------------------------------------------------- symlinked label files
def _link(tmp_path, target, name):
    link = tmp_path / name
    os.symlink(target, link)
    return str(link)


def test_saving_through_a_symlink_writes_the_shared_file_and_keeps_the_link(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    real = _new_file(shared)
    link = _link(tmp_path, real, "mine.geojson")
    s = LabelStore.open(link)
    s.add_point(0.10, 52.05, "forest")
    s.add_point(0.20, 52.05, "water")
    s.save()
    assert os.path.islink(link) and os.path.realpath(link) == real
    assert len(_features(real)) == 2  # the shared file holds the labels
    assert s.path == real and os.path.exists(real + ".lock") and not os.path.exists(link + ".lock")
    s.export(link)  # an export through the link writes the file it points to, too
    assert os.path.islink(link)
    s.close()
    assert not os.path.exists(real + ".lock")
    # a new store whose path is a link to a file that does not exist yet creates that file
    dangling = _link(tmp_path, shared / "later.geojson", "later.geojson")
    with LabelStore(dangling, classes=["a"]) as t:
        t.add_point(0.3, 52.05, "a")
    assert os.path.islink(dangling) and len(_features(shared / "later.geojson")) == 1


def test_two_links_to_one_file_take_one_lock_across_processes(tmp_path):
    real = _new_file(tmp_path, "shared.geojson")
    link1 = _link(tmp_path, real, "alice.geojson")
    link2 = _link(tmp_path, real, "bob.geojson")
    first, ready1, go1 = _spawn(link1, 0.10, 5, tmp_path, "a")
    assert _wait_ready(first, ready1), first.communicate()
    second, ready2, go2 = _spawn(link2, 0.20, 5, tmp_path, "b")
    out2, err2 = second.communicate(timeout=120)
    assert second.returncode == 0, err2
    assert "open in another process" in json.loads(out2)["refused"]
    with pytest.raises(LabelConflictError, match="open in another process"):
        LabelStore.open(link2)  # and this process too
    go1.touch()
    out1, err1 = first.communicate(timeout=120)
    assert first.returncode == 0, err1
    with LabelStore.open(link2) as s:
        assert len(s) == 5
        s.add_point(0.3, 52.05, "water")
    assert len(_features(real)) == 6 and os.path.islink(link1) and os.path.islink(link2)


# ---------------------------------------------------------------------------- hand-edited label files
def _bom_file(tmp_path):
    path = _new_file(tmp_path)
    s = LabelStore.open(path)
    s.add_point(0.10, 52.05, "forest")
    s.close()
    data = open(path, "rb").read()
    with open(path, "wb") as f:  # as some Windows editors save it
        f.write(b"\xef\xbb\xbf" + data)
    return path


def test_a_label_file_with_a_byte_order_mark_loads(tmp_path):
    from tessera_explore.io.labels import read_labels

    path = _bom_file(tmp_path)
    assert len(read_labels(path).records) == 1
    with LabelStore.open(path) as s:
        assert len(s) == 1
        s.add_point(0.20, 52.05, "water")
    assert len(_features(path)) == 2


def test_a_byte_order_mark_written_by_an_editor_meanwhile_is_merged(tmp_path):
    path = _new_file(tmp_path)
    s = LabelStore.open(path)
    s.add_point(0.10, 52.05, "forest")
    doc = json.load(open(path))
    doc["features"].append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [0.5, 52.05]},
                            "properties": {"class": "water"}})
    with open(path, "w", encoding="utf-8-sig") as f:  # an editor that adds a BOM
        json.dump(doc, f)
    s.add_point(0.20, 52.05, "forest")
    assert len(s) == 3 and len(_features(path)) == 3
    s.close()


_NEST = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("content, match", [
    (_NEST, "nests JSON arrays or objects too deeply"),
    ('{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": ["forest"], '
     '"geometry": {"type": "Point", "coordinates": [0.1, 52.0]}}]}', "feature 0: properties must be an object"),
    ('{"type": "FeatureCollection", "crs": {"properties": ["EPSG:4326"]}, "features": [{"type": "Feature", '
     '"properties": {"class": "a"}, "geometry": {"type": "Point", "coordinates": [0.1, 52.0]}}]}',
     "the 'crs' member cannot be read"),
    ('{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"class": "a", "id": 1e400}, '
     '"geometry": {"type": "Point", "coordinates": [0.1, 52.0]}}]}', None),
    ('[{"type": "FeatureCollection"}]', "expected a JSON object"),
    ('{"training_points": [[' + "[" * 50 + "]" * 50 + ', "a"]]}', "is not"),
])
def test_hand_edited_label_files_give_a_label_error_naming_the_file(tmp_path, content, match):
    from tessera_explore.io.labels import read_labels

    path = tmp_path / "labels.geojson"
    path.write_text(content)
    if match is None:  # an id that is not a whole number is dropped; the label is read
        assert len(read_labels(path).records) == 1
        return
    with pytest.raises(LabelError, match=match) as err:
        read_labels(path)
    assert str(path) in str(err.value)
    with pytest.raises(LabelError) as err:
        LabelStore.open(path)
    assert str(path) in str(err.value)
    assert not os.path.exists(str(path) + ".lock")


def test_a_nesting_bomb_written_meanwhile_is_refused_clearly(tmp_path):
    path = _new_file(tmp_path)
    s = LabelStore.open(path)
    s.add_point(0.10, 52.05, "forest")
    with open(path, "w") as f:
        f.write(_NEST)
    with pytest.raises(LabelConflictError, match="too deeply") as err:
        s.add_point(0.20, 52.05, "forest")
    assert path in str(err.value) and open(path).read() == _NEST  # never overwritten
    s.close()


# ---------------------------------------------------------------------------- validation answers in the explorer
LAND = ("forest", "grassland", "cereal")


@pytest.fixture
def explorer(area24, scene24, tmp_path):
    """``explorer()``: an explorer on tmp_path/labels.geojson with 3 labels of each land class."""
    import tessera_explore as te
    from tessera_explore.testing import CLASSES

    lon, lat, k = scene24
    truth = np.asarray(CLASSES)[k]
    apps = []

    def make():
        app = te.explore(area24, labels=tmp_path / "labels.geojson", basemap=False, scatter=False, years=[],
                         classes=list(LAND))
        apps.append(app)
        app.wait()
        if len(app.labels) == 0:
            rng = np.random.default_rng(0)
            for name in LAND:
                app.state.active_class = name
                for i in rng.choice(np.flatnonzero(truth.ravel() == name), 3, replace=False):
                    app.click(float(lon.ravel()[i]), float(lat.ravel()[i]))
            app.wait()
        return app

    yield make
    for a in apps:
        a.close()


def _answers(path):
    return [f["properties"]["reference"] for f in json.loads(path.read_text())["features"]]


def test_every_validation_sample_keeps_its_answers_and_a_users_file_is_not_overwritten(explorer, tmp_path):
    users = tmp_path / "labels_reference.previous.geojson"
    users.write_text('{"my": "own file"}')
    app = explorer()
    ctl = app.controller
    given = []
    for k in range(3):  # three samples: each answered in part, then replaced by a new one
        ctl.validate(9, allocation="equal", seed=k, new=True).result(timeout=120)
        app.wait()
        if k:  # the user is told where the earlier sample went
            assert f"kept in labels_reference.previous-{k + 1}.geojson" in app.state.status
        for _ in range(k + 1):
            ctl.record_reference("forest")
        given.append(["forest"] * (k + 1))
    assert users.read_text() == '{"my": "own file"}'
    files = [tmp_path / "labels_reference.previous-2.geojson", tmp_path / "labels_reference.previous-3.geojson",
             tmp_path / "labels_reference.geojson"]
    for path, answers in zip(files, given, strict=True):
        assert [a for a in _answers(path) if a is not None] == answers
    assert app.state.error == ""


BAD_REFERENCE = {
    "not JSON": ('{"type": "FeatureCollection", "features": [', "not valid JSON"),
    "a list": ("[1, 2]", "found a JSON array"),
    "a missing property": (None, "properties lack map_class"),
    "a polygon": (None, "Point geometries"),
    "a nesting bomb": (_NEST, "too deeply"),
}


@pytest.mark.parametrize("case", sorted(BAD_REFERENCE))
def test_a_hand_edited_reference_file_never_blocks_validation(explorer, tmp_path, case):
    content, match = BAD_REFERENCE[case]
    app = explorer()
    ref = tmp_path / "labels_reference.geojson"
    if content is None:  # a real sample of this map, edited by hand
        app.controller.validate(9, allocation="equal").result(timeout=120)
        app.wait()
        app.controller.record_reference("forest")
        app.close()
        doc = json.loads(ref.read_text())
        if case == "a polygon":
            doc["features"][0]["geometry"] = {"type": "Polygon", "coordinates": [
                [[0.1, 52.0], [0.2, 52.0], [0.2, 52.1], [0.1, 52.0]]]}
        else:
            del doc["features"][0]["properties"]["map_class"]
        content = json.dumps(doc)
        app = explorer()
    ref.write_text(content)
    ctl = app.controller
    stop = ctl.validate(9, allocation="equal").result(timeout=120)
    app.wait()
    assert stop is not None and app.state.error == ""  # a new sample is drawn
    kept = tmp_path / "labels_reference.unreadable.geojson"
    assert kept.read_text() == content  # the edited file kept as it was
    status = app.state.status
    assert str(ref) in status and match in status and "labels_reference.unreadable.geojson" in status
    ctl.record_reference("forest")
    assert _answers(ref).count("forest") == 1  # and the new sample's answers are saved
