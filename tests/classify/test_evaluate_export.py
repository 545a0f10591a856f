"""evaluate (hold-out, spatially blocked CV) and export_map (COG with provenance)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

import tessera_explore as te
from tessera_explore.classify import LabelStore, evaluate
from tessera_explore.exceptions import ClassifierError


def test_spatial_and_holdout_evaluation(prepared24, labels5):
    ev = evaluate(prepared24, labels5, model="logreg", cv="spatial", block_size=2000)
    assert ev.accuracy > 0.8 and 0 <= ev.macro_f1 <= 1
    assert set(ev.f1) == {"built-up", "forest", "grassland", "cereal", "maize"}
    assert ev.confusion.values.sum() == ev.n_samples == 40
    assert np.trace(ev.confusion.values) / 40 == pytest.approx(ev.accuracy)
    assert 2 <= len(ev.fold_accuracy) <= 5
    ho = evaluate(prepared24, labels5, model="knn", cv="holdout", test_size=0.25)
    assert ho.n_samples == 10 and len(ho.fold_accuracy) == 1  # 2 of 8 labels per class held out
    rnd = evaluate(prepared24, labels5, cv="random", n_splits=4)
    assert rnd.n_samples == 40 and len(rnd.fold_accuracy) == 4
    assert "accuracy" in repr(ev)


def test_spatial_folds_keep_blocks_together(prepared24, labels5):
    from tessera_explore.classify.evaluate import _label_blocks, _splits

    s = te.sample_labels(prepared24, labels5, kernel=3)
    blocks = _label_blocks(s, 1500.0)
    for tr, te_ in _splits(s, "spatial", 5, 1500.0, 0.3, 0):
        assert not {blocks[i] for i in s.label_id[tr]} & {blocks[i] for i in s.label_id[te_]}
        assert not set(s.label_id[tr]) & set(s.label_id[te_])


def test_evaluation_bad_input(prepared24, labels5):
    with pytest.raises(ClassifierError, match="one .*block"):
        evaluate(prepared24, labels5, block_size=1e7)
    with pytest.raises(ClassifierError, match="one class"):
        evaluate(prepared24, [l for l in labels5 if l[2] == "forest"])
    with pytest.raises(ValueError, match="cv must be"):
        evaluate(prepared24, labels5, cv="loo")


def test_export_class_map_cog_with_provenance(prepared24, labels5, tmp_path):
    store = LabelStore(tmp_path / "labels.geojson", dataset_version="v1", year=2024,
                       classes={"built-up": "#c24a3b", "forest": "#1f6b2e", "grassland": "#8fcf5a",
                                "cereal": "#e3c75a", "maize": "#f08c2e"})
    for lon, lat, c in labels5:
        store.add_point(lon, lat, c)
    clf = te.fit_classifier(prepared24, store, model="logreg")
    res = te.predict_map(prepared24, clf)
    paths = te.export_map(res, tmp_path / "map.tif")
    assert [p.rsplit("/", 1)[1] for p in paths] == ["map_class.tif", "map_confidence.tif"]
    with rasterio.open(paths[0]) as src:
        tags = src.tags()
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.crs == prepared24.grid.crs and src.transform == prepared24.grid.transform
        assert src.dtypes[0] == "uint8" and src.nodata == 255
        np.testing.assert_array_equal(src.read(1), res["class"].values)
        assert tags["TESSERA_DATASET_VERSION"] == "v1" and tags["TESSERA_YEAR"] == "2024"
        assert tags["TESSERA_PRODUCT"] == "classification" and "LogisticRegression" in tags["TESSERA_MODEL"]
        assert json.loads(tags["TESSERA_SETTINGS"])  # the model's settings, as JSON
        assert tags["TESSERA_LABEL_FILE"] == store.path
        assert json.loads(tags["TESSERA_CLASSES"]) == res.attrs["classes"]
        i = res.attrs["classes"].index("forest")
        assert src.colormap(1)[i] == (0x1f, 0x6b, 0x2e, 255)
    with rasterio.open(paths[1]) as src:
        np.testing.assert_array_equal(np.isnan(src.read(1)), np.isnan(res.confidence.values))
    # one variable to one path; labels exported as GeoJSON
    (p,) = te.export_map(res, tmp_path / "conf.tif", variables="confidence", labels=store)
    assert rasterio.open(p).tags()["TESSERA_LABEL_FILE"] == store.path
    out = store.export(tmp_path / "labels_copy.geojson")
    assert json.load(open(out))["type"] == "FeatureCollection"


def test_export_other_maps(area23, prepared24, tmp_path):
    sim = te.similarity(prepared24, (0.15, 52.05))
    (p,) = te.export_map(sim, tmp_path / "sim.tif")
    with rasterio.open(p) as src:
        t = src.tags()
        assert t["TESSERA_PRODUCT"] == "similarity" and json.loads(t["TESSERA_QUERY"]) == [[0.15, 52.05]]
        np.testing.assert_allclose(src.read(1), sim.values)
    ch = te.change(area23, prepared24)
    paths = te.export_map(ch, tmp_path / "change.tif")
    with rasterio.open(paths[1]) as src:
        assert src.tags()["TESSERA_YEAR"] == "2023-2024" and json.loads(src.tags()["TESSERA_BREAKS"])
    cl = te.cluster(prepared24, 4)
    (p,) = te.export_map(cl, tmp_path / "cl.tif")
    assert rasterio.open(p).tags()["TESSERA_K"] == "4"
    with pytest.raises(te.exceptions.SchemaError, match="no variable"):
        te.export_map(ch, tmp_path / "x.tif", variables="nope")


def test_scores_carry_their_uncertainty(prepared24, draw):
    from tessera_explore.classify.evaluate import MIN_LABELS_PER_CLASS, cv_readiness, wilson_interval

    ev = te.evaluate(prepared24, draw(("forest", "cereal"), 6), cv="spatial")
    lo, hi = ev.accuracy_interval
    assert 0 <= lo <= ev.accuracy <= hi <= 1 and hi - lo > 0.05  # 12 labels cannot pin it down
    assert sum(ev.labels_per_class.values()) == ev.n_labels
    assert f"on {ev.n_labels} held-out labels" in ev.summary() and "95 % interval" in ev.summary()
    # Wilson: all right on 4 labels is still compatible with 51 %
    assert wilson_interval(4, 4)[0] == pytest.approx(0.51, abs=0.01)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert MIN_LABELS_PER_CLASS == 5
    assert cv_readiness({"a": 5, "b": 7}) is None
    assert cv_readiness({"a": 5}) == "label at least two classes"
    assert cv_readiness({"a": 3, "b": 5, "c": 0}) == "needs 5 labels of each class to score on held-out labels (a 3)"


def test_one_map_of_a_prediction_keeps_its_provenance(prepared24, labels5, tmp_path):
    """``export_map(pred["class"])`` tags the file with the dataset and model, as the Dataset's export does."""
    clf = te.fit_classifier(prepared24, labels5, model="logreg")
    pred = te.predict_map(prepared24, clf, probabilities=True)
    want = {"TESSERA_DATASET_VERSION": str(prepared24.grid.attrs["dataset_version"]),
            "TESSERA_DATASET_VARIANT": str(prepared24.grid.attrs["dataset_variant"]),
            "TESSERA_MODEL_GENERATION": str(prepared24.grid.attrs["model_generation"]),
            "TESSERA_YEAR": "2024", "TESSERA_PRODUCT": "classification"}
    assert want["TESSERA_DATASET_VERSION"] not in ("", "?")
    for name in ("class", "confidence", "probability"):
        (p,) = te.export_map(pred[name], tmp_path / f"{name}.tif")
        with rasterio.open(p) as src:
            tags = src.tags()
        assert {k: tags.get(k) for k in want} == want, name
        assert "LogisticRegression" in tags["TESSERA_MODEL"] and json.loads(tags["TESSERA_SETTINGS"])
        assert ("TESSERA_CLASSES" in tags) == (name == "class")
    # the whole Dataset still writes the same tags
    (p,) = te.export_map(pred, tmp_path / "ds.tif", variables="class")
    with rasterio.open(tmp_path / "class.tif") as a, rasterio.open(p) as b:
        ta, tb = a.tags(), b.tags()
    assert {k: v for k, v in ta.items() if k != "TESSERA_LABEL_FILE"} == {
        k: v for k, v in tb.items() if k != "TESSERA_LABEL_FILE"}


def test_a_map_without_attrs_keeps_its_year(prepared24, tmp_path):
    cl = te.cluster(prepared24, 3)
    bare = cl.copy()
    bare.attrs = {}
    (p,) = te.export_map(bare, tmp_path / "bare.tif")
    with rasterio.open(p) as src:
        assert src.tags()["TESSERA_YEAR"] == str(int(cl.coords["year"]))


def test_one_map_of_change_or_trust_keeps_its_provenance(area23, area24, prepared24, labels5, tmp_path):
    """A variable of ``change`` or ``trust`` exported alone is tagged like its Dataset."""
    clf = te.fit_classifier(prepared24, labels5, model="logreg")
    for ds, name in ((te.change(area23, area24), "change_class"),
                     (te.trust(prepared24, clf), "trust")):
        (one,) = te.export_map(ds[name], tmp_path / f"{name}.tif")
        (whole,) = te.export_map(ds, tmp_path / f"{name}-ds.tif", variables=name)
        with rasterio.open(one) as a, rasterio.open(whole) as b:
            ta, tb = a.tags(), b.tags()
        keys = [k for k in tb if k.startswith("TESSERA_DATASET") or k in ("TESSERA_PRODUCT", "TESSERA_YEAR")]
        assert "TESSERA_DATASET_VERSION" in keys and ta.get("TESSERA_PRODUCT") == ds.attrs["product"]
        assert {k: ta.get(k) for k in keys} == {k: tb[k] for k in keys}, name
