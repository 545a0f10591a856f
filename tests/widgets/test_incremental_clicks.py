"""Per-click work in the explorer: the class map updated label by label equals a full
refit and prediction; only the new label is sampled; labels keep their vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from explorer_points import points_of


@pytest.fixture(scope="module")
def truth(scene24, area24):
    """lon, lat and true class of every pixel ("" where there is no data)."""
    from tessera_explore.testing import CLASSES

    lon, lat, k = scene24
    cls = np.asarray(CLASSES)[k].astype(object)
    cls[~np.isfinite(area24.isel(band=0).values)] = ""
    return lon, lat, cls


def full_prediction(app):
    """A fresh refit on every label and a full prediction of the pixels the map shows."""
    from tessera_explore.classify import fit_classifier, predict_map
    from tessera_explore.widgets.classifying import MAX_PER_LABEL, predict_pixels

    ctl = app.controller
    s = ctl.session
    area = s.area(s.label_year)
    clf = fit_classifier(area, s.store, model=app.state.model, max_per_label=MAX_PER_LABEL)
    shown = s.shown_pixels(int(app.state.year))
    h, w = area.shape
    return predict_pixels(area, clf, shown) if shown is not None and shown.size < 0.8 * h * w \
        else predict_map(area, clf)


def assert_same_map(app):
    app.wait()
    assert app.state.error == ""
    got = app.controller.classifying.prediction
    want = full_prediction(app)
    assert list(got.attrs["classes"]) == list(want.attrs["classes"])
    np.testing.assert_array_equal(got["class"].values, want["class"].values)
    np.testing.assert_allclose(got["confidence"].values, want["confidence"].values, rtol=1e-6, equal_nan=True)


CLASSES3 = ("forest", "cereal", "grassland")


def click_in_turn(app, truth, per_class, seed=0, check_every=None):
    pts = {c: points_of(truth, c, per_class, seed=seed) for c in CLASSES3}
    n = 0
    for i in range(per_class):
        for c in CLASSES3:
            app.state.active_class = c
            assert "labelled" in app.click(*pts[c][i])
            n += 1
            if check_every and n % check_every == 0:
                assert_same_map(app)


@pytest.mark.parametrize("max_pixels", [None, 1200], ids=["whole", "shown-pixels"])
def test_incremental_map_equals_full_after_clicks_undo_and_model_switch(app_factory, truth, max_pixels):
    app = app_factory(classes=list(CLASSES3))
    if max_pixels:  # a map image smaller than the area: only the pixels it shows are classified
        app.controller.max_pixels = max_pixels
    cl = app.controller.classifying
    click_in_turn(app, truth, 8, check_every=4)  # k grows 1 -> 5 on the way
    assert cl.incremental is not None and cl.incremental.last_update["mode"] == "incremental"
    assert bool(cl.prediction.attrs.get("partial")) == (max_pixels is not None)
    app.wait()
    app.state.active_class = "forest"
    app.click(*points_of(truth, "forest", 1, seed=11)[0])
    assert_same_map(app)
    # the click added one sample to the map kept: no new map, nothing removed or rescanned
    assert {k: cl.incremental.last_update[k] for k in ("mode", "added", "removed", "pixels_rescanned")} == \
        {"mode": "incremental", "added": 1, "removed": 0, "pixels_rescanned": 0}
    # undo, redo, relabel through a class rename and removal, clear and undo
    app.undo()
    assert_same_map(app)
    app.undo()
    app.redo()
    assert_same_map(app)
    app.controller.rename_class("grassland", "meadow")
    assert_same_map(app)
    app.controller.remove_class("meadow")
    assert_same_map(app)
    app.undo()
    assert_same_map(app)
    app.controller.clear()
    app.wait()
    app.undo()
    assert_same_map(app)
    # another model (full path), then kNN again (the lists held serve it)
    app.state.model = "logreg"
    assert_same_map(app)
    app.state.active_class = "forest"
    app.click(*points_of(truth, "forest", 1, seed=7)[0])
    assert_same_map(app)
    app.state.model = "knn"
    assert_same_map(app)
    app.state.active_class = "cereal"
    app.click(*points_of(truth, "cereal", 1, seed=7)[0])
    assert_same_map(app)
    assert cl.incremental.last_update["mode"] == "incremental"


def test_a_click_samples_only_the_new_label(app_factory, truth):
    from tessera_explore.classify import sample_labels

    app = app_factory(classes=list(CLASSES3))
    cl = app.controller.classifying
    click_in_turn(app, truth, 3)
    app.wait()
    before = cl.samples.sampled
    counts = []
    for lon, lat in points_of(truth, "forest", 6, seed=3):
        app.state.active_class = "forest"
        app.click(lon, lat)
        app.wait()
        counts.append(cl.samples.sampled - before)
    # each click samples one label, however many there are (not 10, 11, 12, ...)
    assert counts == [1, 2, 3, 4, 5, 6]
    # and the samples kept are those sample_labels gives for the whole store
    s = app.controller.session
    area = s.area(s.label_year)
    got = cl.samples.samples(area, s.store)
    want = sample_labels(area, s.store, warn=False)
    for name in ("X", "y", "label_id", "rows", "cols", "xy"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    assert got.classes == want.classes and got.skipped == want.skipped
    assert got.meta == want.meta
    # an undo takes nothing to sample again
    before = cl.samples.sampled
    app.undo()
    app.wait()
    assert cl.samples.sampled == before


def test_labels_on_one_pixel_are_sampled_as_the_store_is(area24, truth):
    """Two point labels of one pixel (a file edited elsewhere) are decided over all labels."""
    from tessera_explore.classify import LabelStore, prepare, sample_labels
    from tessera_explore.widgets.classifying import LabelSamples

    area = prepare(area24)
    store = LabelStore(dataset_version=area24.attrs.get("dataset_version"), year=2024)
    store.add_class("forest")
    store.add_class("cereal")
    (p,) = points_of(truth, "forest", 1)
    q = points_of(truth, "cereal", 2, seed=4)
    store.add_point(*q[0], "cereal")
    store.add_point(*q[1], "cereal")
    keep = LabelSamples()
    keep.samples(area, store)
    store.add_point(*p, "forest")
    store.add_point(p[0] + 1e-7, p[1], "cereal")  # the same pixel, another class: both left out
    got = keep.samples(area, store)
    want = sample_labels(area, store, warn=False)
    np.testing.assert_array_equal(got.label_id, want.label_id)
    assert got.skipped == want.skipped and len(want.skipped) == 2


def test_label_file_of_a_click_session_carries_vectors(app_factory, truth, tmp_path):
    from tessera_explore.classify import LabelStore, fit_classifier, predict_map, samples_from_labels

    app = app_factory(classes=list(CLASSES3))
    click_in_turn(app, truth, 3)
    app.state.mode = "draw"
    lon, lat, _ = truth
    ring = [(float(lon[5, 5]), float(lat[5, 5])), (float(lon[5, 12]), float(lat[5, 12])),
            (float(lon[12, 12]), float(lat[12, 12])), (float(lon[12, 5]), float(lat[12, 5]))]
    app.state.active_class = "forest"
    assert "polygon labelled" in app.controller.add_polygon(ring)
    app.wait()
    doc = json.loads((tmp_path / "labels.geojson").read_text())
    feats = doc["features"]
    assert len(feats) == 10
    key = "tessera_explore:sample"
    assert all(key in f["properties"] for f in feats)
    assert [f["properties"][key]["pixels"] for f in feats[:9]] == [1] * 9
    assert feats[9]["properties"][key]["pixels"] > 1
    # the file alone trains the same kNN as the area's pixels (no area read)
    store = LabelStore.open(tmp_path / "labels.geojson")
    try:
        s = samples_from_labels(store)
        clf = fit_classifier(None, s, max_per_label=200)
        assert clf.provenance_["year"] == 2024 and clf.provenance_["n_labels"] == 10
        assert clf.provenance_["dataset_version"] == str(app.controller.session.grid.attrs["dataset_version"])
        area = app.controller.session.area(2024)
        full = predict_map(area, clf)
        ref = predict_map(area, fit_classifier(area, store, max_per_label=200))
        np.testing.assert_array_equal(full["class"].values, ref["class"].values)
    finally:
        store.close()


def test_fit_classifier_without_an_area_needs_samples():
    from tessera_explore.classify import fit_classifier
    from tessera_explore.exceptions import ClassifierError

    with pytest.raises(ClassifierError, match="needs an area"):
        fit_classifier(None, [(0.1, 52.0, "a"), (0.2, 52.0, "b")])
