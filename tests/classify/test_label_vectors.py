"""Labels carry their embedding vectors: stored in the label file (codes + scales, year,
dataset, kernel), kept through every store operation, and training from them alone."""

from __future__ import annotations

import base64
import json
import warnings

import numpy as np
import pytest

import tessera_explore as te
from tessera_explore.classify import (
    LabelClassifier,
    LabelStore,
    fit_classifier,
    label_sample,
    predict_map,
    prepare,
    sample_labels,
    samples_from_labels,
)
from tessera_explore.classify.area import grid_of
from tessera_explore.classify.samples import MAX_PER_LABEL, read_pixels
from tessera_explore.exceptions import LabelError, VersionMismatchError
from tessera_explore.io import labels as lio
from tessera_explore.io.labels import SAMPLE_KEY, LabelSample

CLASSES = ["built-up", "forest", "grassland", "cereal", "maize", "water"]


def _doc(path):
    with open(path) as f:
        return json.load(f)


def _pixel(area, lon, lat):
    r, c = grid_of(area).lonlat_to_rowcol(np.array([lon]), np.array([lat]))
    return int(r[0]) * area.shape[1] + int(c[0])


def _box(area, qx, qy):
    """A polygon over a share of the area (lon/lat quantiles of its pixel centres)."""
    from pyproj import Transformer

    g = grid_of(area)
    tr = Transformer.from_crs(g.crs, 4326, always_xy=True)
    X, Y = np.meshgrid(g.x, g.y)
    lon, lat = tr.transform(X, Y)
    x0, x1 = np.quantile(lon, qx)
    y0, y1 = np.quantile(lat, qy)
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _stored_store(path, area, labels, **kw):
    """A store of ``labels`` ((lon, lat, class)) with each label's pixels stored."""
    attrs = grid_of(area).attrs
    s = LabelStore(path, classes=CLASSES, year=grid_of(area).year,
                   dataset_version=attrs["dataset_version"], dataset_variant=attrs.get("dataset_variant"))
    for lon, lat, name in labels:
        s.add_point(lon, lat, name, sample=label_sample(area, (lon, lat), **kw))
    return s


@pytest.fixture(scope="module")
def zones(zone_tiles):
    """Two areas on either side of the UTM 31/32 boundary (6 E), and their true classes."""
    from pyproj import Transformer

    from tessera_explore.testing import scene_classes

    folder, _ = zone_tiles
    out = []
    for bbox in ((5.9, 52.0, 6.0, 52.1), (6.0, 52.0, 6.1, 52.1)):
        area = prepare(te.open_embeddings(folder, bbox=bbox, year=2024))
        g = grid_of(area)
        tr = Transformer.from_crs(g.crs, 4326, always_xy=True)
        X, Y = np.meshgrid(g.x, g.y)
        lon, lat = tr.transform(X, Y)
        out.append((area, (lon, lat, scene_classes(lon, lat, 2024, seed=2))))
    assert str(grid_of(out[0][0]).crs) != str(grid_of(out[1][0]).crs)  # two UTM zones
    return out


def _draw(scene, classes, per_class, seed, lons):
    """Points at pixels of those true classes, with lon in ``lons`` (clear of the zone edge)."""
    from tessera_explore.testing import CLASSES as ALL

    lon, lat, truth = scene
    rng = np.random.default_rng(seed)
    out = []
    away = (lon.ravel() > lons[0]) & (lon.ravel() < lons[1])
    for name in classes:
        idx = np.flatnonzero((truth.ravel() == ALL.index(name)) & away)
        for j in rng.choice(idx, min(per_class, len(idx)), replace=False):
            out.append((float(lon.ravel()[j]), float(lat.ravel()[j]), name))
    return out


# ----------------------------------------------------------------------------- the sample


def test_label_sample_is_the_areas_own_codes_and_scales(prepared24, area24, labels5):
    lon, lat, _ = labels5[0]
    i = _pixel(prepared24, lon, lat)
    s = label_sample(prepared24, (lon, lat))
    assert s.n == 1 and s.bands == 128 and s.kernel == 1 and s.year == 2024
    assert (s.dataset_version, s.dataset_variant) == ("v1", "vultr")
    assert s.codes.tobytes() == prepared24.codes[i:i + 1].tobytes()
    assert s.scales.tobytes() == prepared24.scales[i:i + 1].tobytes()
    # the same from the DataArray (codes behind it) and from a float copy (quantised as the store does)
    assert label_sample(area24, (lon, lat)) == s
    flt = area24.copy(data=np.asarray(area24.values))
    np.testing.assert_allclose(label_sample(flt, (lon, lat)).features(), s.features(), rtol=0, atol=2e-2)
    # a 3 x 3 window starts with the pixel under the point
    w = label_sample(prepared24, (lon, lat), kernel=3)
    r, c = divmod(i, prepared24.shape[1])
    h, wd = prepared24.shape
    window = [(rr * wd + cc) for rr in range(r - 1, r + 2) for cc in range(c - 1, c + 2) if 0 <= rr < h and 0 <= cc < wd]
    assert w.kernel == 3 and w.n == int(prepared24.valid[window].sum()) and w.n > 1
    assert w.codes[:1].tobytes() == s.codes.tobytes()
    # a large polygon keeps at most MAX_PER_LABEL pixels, as the explorer trains on
    p = label_sample(prepared24, _box(prepared24, [0.1, 0.7], [0.1, 0.7]))
    assert p.n == MAX_PER_LABEL
    small = label_sample(prepared24, _box(prepared24, [0.1, 0.7], [0.1, 0.7]), max_pixels=10)
    assert small.n == 10
    # outside the area: no sample
    assert label_sample(prepared24, (10.0, 45.0)) is None
    with pytest.raises(AttributeError):
        s.year = 2020
    with pytest.raises(ValueError):
        s.codes[0, 0] = 1


def test_round_trip_through_the_file_is_bit_exact(tmp_path, prepared24, labels5):
    path = tmp_path / "l.geojson"
    s = _stored_store(path, prepared24, labels5[:6])
    ring = _box(prepared24, [0.1, 0.7], [0.1, 0.7])
    pid = s.add_polygon(ring, "forest", sample=label_sample(prepared24, ring))
    wid = s.add_point(*labels5[10][:2], "forest", sample=label_sample(prepared24, labels5[10][:2], kernel=3))
    want = {l.id: l.sample for l in s}
    s.close()
    doc = _doc(path)
    props = doc["features"][0]["properties"][SAMPLE_KEY]
    assert props["format"] == lio.SAMPLE_FORMAT and props["pixels"] == 1 and props["bands"] == 128
    assert isinstance(props["codes"], str) and isinstance(props["scales"], str)  # compact base64
    again = LabelStore.open(path)
    for lab in again:
        got = lab.sample
        assert got == want[lab.id]
        assert got.codes.tobytes() == want[lab.id].codes.tobytes()
        assert got.scales.tobytes() == want[lab.id].scales.tobytes()
    assert again[pid].sample.n == MAX_PER_LABEL and again[wid].sample.kernel == 3
    # read by the plain reader too, and by readers that know nothing of it (GeoPandas)
    ls = lio.read_labels(path)
    assert [r.sample for r in ls.records] == [want[l.id] for l in again]
    gpd = pytest.importorskip("geopandas")
    gdf = gpd.read_file(path)
    assert list(gdf["class"])[:2] == [labels5[0][2], labels5[1][2]]
    again.close()


# ----------------------------------------------------------------------------- store operations


def test_every_store_operation_keeps_or_drops_vectors_as_designed(tmp_path, prepared24, labels5):
    path = tmp_path / "l.geojson"
    s = _stored_store(path, prepared24, labels5[:4])
    a, b, c, d = [l.id for l in s]
    sa = s[a].sample
    s.relabel(a, labels5[3][2])
    assert s[a].sample == sa  # the pixel is the same
    s.rename_class(labels5[3][2], "renamed")
    assert s[a].sample == sa and s[a].cls == "renamed"
    s.move(b, *labels5[20][:2])
    assert s[b].sample is None  # another pixel now
    assert s.undo() and s[b].sample is not None
    assert s.redo() and s[b].sample is None
    s.remove(c)
    assert s.undo() and s[c].sample is not None
    s.attach_sample(b, label_sample(prepared24, labels5[20][:2]))
    assert s[b].sample is not None
    s.attach_sample(d, None)
    assert s[d].sample is None
    assert s.undo() and s[d].sample is not None
    with pytest.raises(LabelError, match="no label"):
        s.attach_samples({d: None, 999: None})
    assert s[d].sample is not None  # refused as a whole
    # every change was saved: the file agrees
    on_disk = {f["properties"]["id"]: f["properties"].get(SAMPLE_KEY) for f in _doc(path)["features"]}
    assert {k: v is not None for k, v in on_disk.items()} == {l.id: l.sample is not None for l in s}
    # export keeps them; the upstream JSON (points only, no vectors) still exports
    out = s.export(tmp_path / "copy.geojson")
    assert [r.sample for r in lio.read_labels(out).records] == [l.sample for l in s]
    up = lio.read_labels(s.export(tmp_path / "up.json", format="upstream"))
    assert len(up.records) == len(s) and all(r.sample is None for r in up.records)
    # save to a new path keeps them
    s.save(tmp_path / "moved.geojson")
    assert [r.sample for r in lio.read_labels(tmp_path / "moved.geojson").records] == [l.sample for l in s]
    # load() of a file with vectors keeps them
    t = LabelStore(dataset_version="v1", dataset_variant="vultr")
    t.load(out)
    assert [l.sample for l in t] == [l.sample for l in s]
    s.close()


def test_external_edits_keep_vectors_both_ways(tmp_path, prepared24, labels5):
    path = tmp_path / "l.geojson"
    s = _stored_store(path, prepared24, labels5[:3])
    ids = [l.id for l in s]
    s.attach_sample(ids[1], None)
    # someone else (an editor, another process) attaches vectors to label 2 and adds a label with vectors
    doc = _doc(path)
    extra = label_sample(prepared24, labels5[30][:2])
    for f in doc["features"]:
        if f["properties"]["id"] == ids[1]:
            f["properties"][SAMPLE_KEY] = label_sample(prepared24, labels5[1][:2]).to_json()
    doc["features"].append({"type": "Feature", "geometry": {"type": "Point", "coordinates": list(labels5[30][:2])},
                            "properties": {"class": labels5[0][2], "id": 77, SAMPLE_KEY: extra.to_json()}})
    with open(path, "w") as f:
        json.dump(doc, f)
    # this store changes a label in the meantime: the write merges their edits
    s.relabel(ids[0], "forest")
    assert s[ids[1]].sample == label_sample(prepared24, labels5[1][:2])
    new = [l for l in s if l.id not in ids]
    assert len(new) == 1 and new[0].sample == extra
    assert s[ids[0]].sample is not None and s[ids[0]].cls == "forest"
    again = lio.read_labels(path)
    assert sum(r.sample is not None for r in again.records) == 4
    # refresh() takes a later edit that drops a vector
    doc = _doc(path)
    for f in doc["features"]:
        if f["properties"]["id"] == ids[2]:
            del f["properties"][SAMPLE_KEY]
    with open(path, "w") as f:
        json.dump(doc, f)
    assert s.refresh() and s[ids[2]].sample is None
    s.close()


# ----------------------------------------------------------------------------- damaged data


def _with_sample(tmp_path, mutate):
    smp = LabelSample(np.arange(256, dtype=np.int64).astype(np.int8).reshape(2, 128) | 1,
                      np.array([0.01, 0.02], np.float32), year=2024, dataset_version="v1", dataset_variant="vultr")
    obj = smp.to_json()
    mutate(obj)
    doc = {"type": "FeatureCollection", "properties": {"dataset_version": "v1", "dataset_variant": "vultr"},
           "features": [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [0.15, 52.05]},
                         "properties": {"class": "forest", "id": 3, SAMPLE_KEY: obj}}]}
    path = tmp_path / "bad.geojson"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("mutate, why", [
    (lambda o: o.update(codes=o["codes"][:-8]), "bytes"),
    (lambda o: o.update(codes="not base64 at all!"), "base64"),
    (lambda o: o.update(scales=base64.b64encode(np.array([0.01, np.nan], "<f4").tobytes()).decode()), "finite"),
    (lambda o: o.update(scales=base64.b64encode(np.array([0.01, -1.0], "<f4").tobytes()).decode()), "finite"),
    (lambda o: o.update(pixels=3), "bytes"),
    (lambda o: o.update(bands="128"), "whole numbers"),
    (lambda o: o.update(format="something/9"), "format"),
    (lambda o: o.update(year="soon"), "year"),
    (lambda o: o.update(kernel=2), "kernel"),
    (lambda o: o.update(dataset_version="v1.1", dataset_variant="cambridge"), "never mix"),
])
def test_damaged_vectors_are_a_label_error_naming_file_and_label(tmp_path, mutate, why):
    path = _with_sample(tmp_path, mutate)
    with pytest.raises(LabelError, match=why) as err:
        lio.read_labels(path)
    assert str(path) in str(err.value) and "label 3" in str(err.value)
    with pytest.raises(LabelError):
        LabelStore.open(path)


def test_an_intact_hand_written_sample_reads(tmp_path):
    assert lio.read_labels(_with_sample(tmp_path, lambda o: None)).records[0].sample.n == 2


def test_bad_samples_are_refused_by_the_store():
    s = LabelStore(classes=["a"], dataset_version="v1", dataset_variant="vultr")
    with pytest.raises(LabelError, match="LabelSample"):
        s.add_point(0.1, 52.0, "a", sample={"codes": "x"})
    other = LabelSample(np.ones((1, 128), np.int8), np.ones(1, np.float32), year=2024, dataset_version="v1.1",
                        dataset_variant="cambridge")
    with pytest.raises(LabelError, match="never mix"):
        s.add_point(0.1, 52.0, "a", sample=other)
    assert len(s) == 0
    with pytest.raises(LabelError, match="float32"):
        LabelSample(np.ones((1, 128), np.int8), np.ones(1), year=2024, dataset_version="v1")
    with pytest.raises(LabelError, match="all zero"):
        LabelSample(np.zeros((1, 128), np.int8), np.ones(1, np.float32), year=2024, dataset_version="v1")


# ----------------------------------------------------------------------------- training


def test_training_from_the_file_alone_equals_training_from_the_area(tmp_path, prepared24, labels5):
    path = tmp_path / "l.geojson"
    s = _stored_store(path, prepared24, labels5)
    ring = _box(prepared24, [0.05, 0.2], [0.05, 0.2])
    s.add_polygon(ring, "forest", sample=label_sample(prepared24, ring))
    s.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is skipped either way
        off = samples_from_labels(path)
        on = sample_labels(prepared24, path, stored=False)
    assert off.X.tobytes() == on.X.tobytes() and list(off.y) == list(on.y)
    assert list(off.label_id) == list(on.label_id)
    assert not off.in_area.any() and on.in_area.all()
    assert off.meta["year"] == 2024 and off.meta["bands"] == 128 and off.meta["crs"].startswith("EPSG:326")
    for model in ("knn", "logreg"):
        a = predict_map(prepared24, fit_classifier(prepared24, path, model=model))
        b = predict_map(prepared24, fit_classifier(prepared24, off, model=model))
        assert np.array_equal(a["class"].values, b["class"].values)
        np.testing.assert_array_equal(a["confidence"].values, b["confidence"].values)
    # no area at all: the estimator alone
    clf = LabelClassifier("knn").fit(off.X, off.y)
    X = prepared24.codes[prepared24.valid].astype(np.float32) * prepared24.scales[prepared24.valid, None]
    ref = fit_classifier(prepared24, path)
    assert np.array_equal(clf.predict(X[:500]), ref.predict(X[:500]))


def test_labels_in_two_utm_zones_train_one_classifier(tmp_path, zones):
    (area_a, scene_a), (area_b, scene_b) = zones
    classes = ["forest", "cereal", "built-up"]
    la = _draw(scene_a, classes, 6, seed=1, lons=(5.9, 5.98))
    lb = _draw(scene_b, classes, 6, seed=2, lons=(6.02, 6.1))
    path = tmp_path / "both.geojson"
    s = _stored_store(path, area_a, la)
    for lon, lat, name in lb:
        s.add_point(lon, lat, name, sample=label_sample(area_b, (lon, lat)))
    # on area A: A's labels from its pixels, B's from their stored vectors
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sa = sample_labels(area_a, s)
    assert len(np.unique(sa.label_id)) == len(la) + len(lb) and sa.meta["stored_labels"] == len(lb)
    assert sa.in_area.sum() == len(la)
    # without stored vectors B's labels are outside the area and left out
    with pytest.warns(UserWarning, match=f"{len(lb)} of {len(la) + len(lb)} labels were left out"):
        plain = sample_labels(area_a, s, stored=False)
    assert {k["reason"] for k in plain.skipped} == {"outside the area"}
    # one classifier from the file alone; B's pixels from area B are its training pixels
    off = samples_from_labels(path)
    assert len(np.unique(off.label_id)) == len(la) + len(lb)
    clf = LabelClassifier("knn").fit(off.X, off.y)
    X_b = sample_labels(area_b, [(lon, lat, n) for lon, lat, n in lb], stored=False).X
    assert np.array_equal(X_b, off.X[len(la):])
    # it maps both areas: the true classes of the pixels of those classes in both zones
    from tessera_explore.testing import CLASSES as ALL

    for area, (_, _, truth) in zones:
        fitted = fit_classifier(area, off)
        m = predict_map(area, fitted)["class"].values.ravel()
        names = np.array(fitted.classes_)
        keep = np.isin(truth.ravel(), [ALL.index(c) for c in classes]) & (m != 255)
        got = names[m[keep]]
        want = np.array(ALL, object)[truth.ravel()[keep]]
        assert np.mean(got == want) > 0.8
    assert np.array_equal(clf.predict(off.X), fit_classifier(area_a, off).predict(off.X))
    s.close()


def test_versions_years_and_depths_never_mix(tmp_path, prepared24, area23, labels5):
    # a sample of another dataset: refused as labels of another dataset are
    s = LabelStore(classes=CLASSES)  # no dataset recorded on the store
    other = LabelSample(prepared24.codes[:1], prepared24.scales[:1], year=2024, dataset_version="v1.1",
                        dataset_variant="cambridge")
    s.add_point(10.0, 45.0, "forest", sample=other)
    s.add_point(*labels5[0])
    with pytest.raises(VersionMismatchError, match="1 labels keep vectors"):
        sample_labels(prepared24, s)
    with pytest.raises(VersionMismatchError):
        samples_from_labels(s, dataset_version="v1", variant="vultr")
    assert samples_from_labels(s, warn=False).meta["dataset_version"] == "v1.1"
    # two datasets in one file are refused when it is read
    s.add_point(11.0, 45.0, "forest", sample=label_sample(prepared24, labels5[1][:2]))
    path = tmp_path / "mixed.geojson"
    s.export(path)
    with pytest.raises(LabelError, match="never mix"):
        lio.read_labels(path)
    # years: 2023 vectors do not train a 2024 classifier (skipped, counted, said why)
    t = LabelStore(classes=CLASSES, dataset_version="v1", dataset_variant="vultr", year=2024)
    for i, (lon, lat, name) in enumerate(labels5[:10]):
        t.add_point(lon, lat, name, sample=label_sample(area23 if i < 3 else prepared24, (lon, lat)))
    with pytest.warns(UserWarning, match="3 of 10 labels were left out.*of 2023, the embeddings of 2024"):
        got = samples_from_labels(t)
    assert len(got) == 7 and got.meta["year"] == 2024
    assert len(samples_from_labels(t, year=2023, warn=False)) == 3
    # labels outside the 2023 area with 2024 vectors are skipped on it; inside, its own pixels are used
    far = LabelStore(classes=CLASSES, dataset_version="v1", dataset_variant="vultr")
    far.add_point(10.0, 45.0, "forest", sample=label_sample(prepared24, labels5[0][:2]))
    far.add_point(*labels5[1][:2], labels5[1][2], sample=label_sample(prepared24, labels5[1][:2]))
    far.add_point(*labels5[2][:2], labels5[2][2])
    with pytest.warns(UserWarning, match="outside the area; its stored vectors are of 2024"):
        s23 = sample_labels(area23, far)
    assert list(s23.label_id) == [2, 3] and s23.in_area.all()
    # depth: a 16-band sample does not join 128-band ones
    d = LabelStore(classes=CLASSES, dataset_version="v1", dataset_variant="vultr", year=2024)
    d.add_point(*labels5[0][:2], labels5[0][2], sample=label_sample(prepared24, labels5[0][:2]))
    short = label_sample(prepared24, labels5[1][:2])
    d.add_point(*labels5[1][:2], labels5[1][2], sample=LabelSample(
        short.codes[:, :16], short.scales, year=2024, dataset_version="v1", dataset_variant="vultr"))
    with pytest.raises(LabelError, match="several depths"):
        samples_from_labels(d)
    with pytest.warns(UserWarning, match="16 bands, the embeddings 128"):
        assert len(samples_from_labels(d, depth=128)) == 1
    # no label with vectors: a clear error
    with pytest.raises(LabelError, match="keeps its embedding vectors"):
        samples_from_labels(labels5)


def test_kernels_and_no_data(prepared24, labels5):
    lon, lat, name = labels5[0]
    s = LabelStore(classes=CLASSES, dataset_version="v1", dataset_variant="vultr", year=2024)
    s.add_point(lon, lat, name, sample=label_sample(prepared24, (lon, lat), kernel=3))
    s.add_point(*labels5[9][:2], labels5[9][2], sample=label_sample(prepared24, labels5[9][:2]))
    n = s.labels[0].sample.n
    assert n > 1
    one = samples_from_labels(s, kernel=1)
    assert len(one) == 2
    assert one.X[0].tobytes() == label_sample(prepared24, (lon, lat)).features()[0].tobytes()
    assert len(samples_from_labels(s)) == n + 1  # each window as stored
    with pytest.warns(UserWarning, match="a 1 x 1 window, a 3 x 3 one"):
        assert len(samples_from_labels(s, kernel=3)) == n
    # pixels outside an area read as no data (never another pixel of it)
    X = read_pixels(prepared24, np.array([-1, 0]), np.array([-1, 0]))
    assert np.isnan(X[0]).all() and not np.isnan(X[1]).any()
