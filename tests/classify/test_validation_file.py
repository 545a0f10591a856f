"""Validation samples on disk (``tessera_explore.io.labels.ValidationFile``): every
sample's answers kept, no foreign file overwritten, hand-edited files refused with a
LabelError that names the file and what is wrong, area_estimate reading them."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import tessera_explore as te
from tessera_explore.exceptions import LabelError, TesseraExploreError
from tessera_explore.io.labels import ValidationFile, keep_aside, read_validation_sample, validation_doc

CLASSES = ("forest", "water", "crop")


def class_map(values, classes, res=30.0):
    """A uint8 class map on a UTM grid (EPSG:32631) with ``res`` metre pixels."""
    import rioxarray  # noqa: F401
    import xarray as xr
    from affine import Affine

    h, w = values.shape
    x0, y0 = 400_000.0, 5_800_000.0
    da = xr.DataArray(values.astype(np.uint8), dims=("y", "x"),
                      coords={"y": y0 - (np.arange(h) + 0.5) * res, "x": x0 + (np.arange(w) + 0.5) * res},
                      name="class", attrs={"classes": list(classes)})
    da = da.rio.write_crs("EPSG:32631").rio.write_transform(Affine(res, 0, x0, 0, -res, y0))
    return xr.Dataset({"class": da}, attrs={"classes": list(classes)})


@pytest.fixture(scope="module")
def pred():
    vals = np.repeat(np.arange(3), [1200, 800, 2000]).reshape(50, 80)
    return class_map(vals, CLASSES)


def answered(sample, k, seed=0):
    """``sample`` with its first ``k`` points answered with their map class."""
    s = sample.copy()
    s.attrs.update(sample.attrs)
    for i in range(k):
        s.loc[s.index[i], "reference"] = s["map_class"].iloc[i]
    return s


def test_round_trip_keeps_points_answers_and_design(pred, tmp_path):
    sample = answered(te.validation_sample(pred, 20, seed=3), 7)
    vf = ValidationFile(tmp_path / "labels_reference.geojson")
    assert vf.read() is None  # no file yet
    assert vf.save(sample, year=2024) is None
    back = read_validation_sample(tmp_path / "labels_reference.geojson")
    assert list(back["map_class"]) == list(sample["map_class"])
    assert list(back["row"]) == list(sample["row"]) and list(back["col"]) == list(sample["col"])
    assert [r for r in back["reference"]][:7] == list(sample["map_class"])[:7]
    assert all(r is None for r in back["reference"][7:])
    design = back.attrs["tessera_validation"]
    assert design["classes"] == list(CLASSES) and design["year"] == 2024
    assert design["mapped_pixels"] == sample.attrs["tessera_validation"]["mapped_pixels"]
    doc = json.loads((tmp_path / "labels_reference.geojson").read_text())
    assert doc["tessera_validation"]["format"] == "tessera_explore.validation/1"  # the mark of our files


def test_every_sample_keeps_its_own_file(pred, tmp_path):
    path = tmp_path / "labels_reference.geojson"
    vf = ValidationFile(path)
    answers = []
    for seed in range(4):  # four samples, each answered in part, each replaced by the next
        s = answered(te.validation_sample(pred, 12, seed=seed), seed + 1)
        vf.set_aside()
        vf.save(s, year=2024)
        answers.append(s["reference"].tolist())
    kept = [tmp_path / "labels_reference.previous.geojson", tmp_path / "labels_reference.previous-2.geojson",
            tmp_path / "labels_reference.previous-3.geojson", path]
    for p, a in zip(kept, answers, strict=True):
        assert read_validation_sample(p)["reference"].tolist() == a


def test_a_foreign_file_is_never_overwritten(pred, tmp_path):
    path = tmp_path / "labels_reference.geojson"
    mine = b'{"type": "FeatureCollection", "features": [], "note": "my own reference points"}'
    theirs_prev = b"my notes, not JSON"
    path.write_bytes(mine)
    (tmp_path / "labels_reference.previous.geojson").write_bytes(theirs_prev)
    vf = ValidationFile(path)
    s = answered(te.validation_sample(pred, 12), 2)
    note = vf.save(s, year=2024)
    assert "labels_reference.unreadable.geojson" in note and "not a validation sample" in note
    assert (tmp_path / "labels_reference.unreadable.geojson").read_bytes() == mine
    assert (tmp_path / "labels_reference.previous.geojson").read_bytes() == theirs_prev
    # set aside: the next free name, the user's .previous file untouched
    assert vf.set_aside() == str(tmp_path / "labels_reference.previous-2.geojson")
    assert (tmp_path / "labels_reference.previous.geojson").read_bytes() == theirs_prev
    assert read_validation_sample(tmp_path / "labels_reference.previous-2.geojson")["reference"].notna().sum() == 2


def test_a_file_changed_behind_its_back_is_kept_not_overwritten(pred, tmp_path):
    path = tmp_path / "labels_reference.geojson"
    vf = ValidationFile(path)
    s = te.validation_sample(pred, 12)
    vf.save(s, year=2024)
    other = answered(te.validation_sample(pred, 12, seed=9), 5)
    path.write_text(json.dumps(validation_doc(other, year=2024)))  # replaced behind its back (another session)
    note = vf.save(answered(s, 1), year=2024)
    assert "previous.geojson" in note
    assert read_validation_sample(tmp_path / "labels_reference.previous.geojson")["reference"].notna().sum() == 5
    assert read_validation_sample(path)["reference"].notna().sum() == 1
    # what it wrote itself is simply rewritten
    assert vf.save(answered(s, 2), year=2024) is None
    assert not (tmp_path / "labels_reference.previous-2.geojson").exists()


def test_keep_aside_refuses_to_replace_and_names_the_file(tmp_path):
    a = tmp_path / "a.geojson"
    a.write_text("1")
    (tmp_path / "a.old.geojson").write_text("2")
    assert keep_aside(a, "old") == str(tmp_path / "a.old-2.geojson")
    assert (tmp_path / "a.old.geojson").read_text() == "2" and (tmp_path / "a.old-2.geojson").read_text() == "1"
    with pytest.raises(LabelError, match="a.geojson"):
        keep_aside(a, "old")  # gone


def test_symlinked_reference_file_stays_a_link(pred, tmp_path):
    real = tmp_path / "shared" / "ref.geojson"
    real.parent.mkdir()
    link = tmp_path / "labels_reference.geojson"
    s = answered(te.validation_sample(pred, 12), 3)
    ValidationFile(real).save(s, year=2024)
    os.symlink(real, link)
    vf = ValidationFile(link)
    assert vf.read() is not None
    vf.save(answered(s, 4), year=2024)
    assert link.is_symlink()
    assert read_validation_sample(real)["reference"].notna().sum() == 4


def _good_doc(pred):
    s = answered(te.validation_sample(pred, 6), 2)
    return validation_doc(s, year=2024)


def _edit(pred, change):
    doc = _good_doc(pred)
    change(doc)
    return json.dumps(doc).encode()


BAD = {
    "not JSON": (lambda pred: b'{"type": "FeatureCollection", "features": [', "not valid JSON"),
    "empty": (lambda pred: b"", "is empty"),
    "a list": (lambda pred: json.dumps([_good_doc(pred)]).encode(), "found a JSON array"),
    "not ours": (lambda pred: json.dumps({"type": "FeatureCollection", "features": []}).encode(),
                 "not a validation sample written by tessera_explore"),
    "missing property": (lambda pred: _edit(pred, lambda d: d["features"][1]["properties"].pop("row")),
                         "point 2: properties lack row"),
    "missing properties": (lambda pred: _edit(pred, lambda d: d["features"][0].pop("properties")),
                           "point 1: properties must be an object"),
    "a polygon": (lambda pred: _edit(pred, lambda d: d["features"][2].update(geometry={
        "type": "Polygon", "coordinates": [[[0.1, 52.0], [0.2, 52.0], [0.2, 52.1], [0.1, 52.0]]]})),
        "point 3: validation points are Point geometries"),
    "no coordinates": (lambda pred: _edit(pred, lambda d: d["features"][0]["geometry"].update(coordinates=[])),
                       r"point 1: coordinates must be \[lon, lat\]"),
    "latitude out of range": (lambda pred: _edit(pred, lambda d: d["features"][0]["geometry"].update(
        coordinates=[2.0, 95.0])), "not a lon/lat position"),
    "an unknown map class": (lambda pred: _edit(pred, lambda d: d["features"][0]["properties"].update(
        map_class="ocean")), "map_class 'ocean' is not one of"),
    "a numeric answer": (lambda pred: _edit(pred, lambda d: d["features"][0]["properties"].update(reference=3)),
                         "reference must be a class name"),
    "a negative row": (lambda pred: _edit(pred, lambda d: d["features"][0]["properties"].update(row=-1)),
                       "row must be a pixel index"),
    "design not an object": (lambda pred: _edit(pred, lambda d: d.update(tessera_validation=[1])),
                             "not a validation sample written by tessera_explore"),
    "short mapped_pixels": (lambda pred: _edit(pred, lambda d: d["tessera_validation"].update(mapped_pixels=[1])),
                            "mapped_pixels' must be 3 whole numbers"),
    "features not a list": (lambda pred: _edit(pred, lambda d: d.update(features={})),
                            "not a GeoJSON FeatureCollection"),
    "a nesting bomb": (lambda pred: b"[" * 200_000 + b"]" * 200_000, "nests JSON arrays or objects too deeply"),
    "not UTF-8": (lambda pred: b"\xff\xfe{\x00}\x00", "not a UTF-8 text file"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_hand_edited_reference_files_are_refused_naming_the_file(pred, tmp_path, case):
    make, match = BAD[case]
    path = tmp_path / "labels_reference.geojson"
    path.write_bytes(make(pred))
    with pytest.raises(LabelError, match=match) as err:
        read_validation_sample(path)
    assert str(path) in str(err.value)
    with pytest.raises(LabelError) as err2:
        ValidationFile(path).read()
    assert str(path) in str(err2.value)
    # area_estimate on the file: the same clear error, never a KeyError or a pyogrio error
    with pytest.raises(TesseraExploreError) as err3:
        te.area_estimate(pred, path)
    assert str(path) in str(err3.value)


def test_a_byte_order_mark_is_accepted(pred, tmp_path):
    path = tmp_path / "labels_reference.geojson"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(_good_doc(pred)).encode())
    assert read_validation_sample(path)["reference"].notna().sum() == 2


def test_area_estimate_reads_a_saved_sample_with_its_design(pred, tmp_path):
    s = te.validation_sample(pred, 30, seed=1)
    full = answered(s, len(s))
    path = tmp_path / "ref.geojson"
    ValidationFile(path).save(full, year=2024)
    est = te.area_estimate(pred, path)
    assert est.overall_accuracy == pytest.approx(1.0)
    other = class_map(np.repeat(np.arange(3), [1000, 1000, 2000]).reshape(50, 80), CLASSES)
    with pytest.raises(te.exceptions.ArgumentError, match="drawn from another map"):
        te.area_estimate(other, path)  # the design came with the file
