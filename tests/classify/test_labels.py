"""LabelStore and the label file formats."""

from __future__ import annotations

import json
import os

import pytest
import shapely.geometry

from tessera_explore.classify import LabelStore
from tessera_explore.exceptions import LabelError
from tessera_explore.io import labels as lio


def _store(tmp_path, **kw):
    s = LabelStore(tmp_path / "labels.geojson", dataset_version="v1", year=2024, **kw)
    s.add_class("forest", "#00aa00")
    s.add_class("water")
    return s


def _file(s):
    with open(s.path) as f:
        return json.load(f)


def test_every_change_is_saved_and_reopens(tmp_path):
    s = _store(tmp_path)
    a = s.add_point(0.15, 52.05, "forest")
    assert len(_file(s)["features"]) == 1
    b = s.add_polygon([(0.1, 52.0), (0.11, 52.0), (0.11, 52.01)], "water")
    s.move(a, 0.16, 52.06)
    s.relabel(a, "water")
    doc = _file(s)
    assert doc["properties"]["dataset_version"] == "v1" and doc["properties"]["year"] == 2024
    assert doc["properties"]["classes"] == {"forest": "#00aa00", "water": s.classes["water"]}
    assert {"created", "updated"} <= set(doc["properties"])
    assert doc["features"][0]["geometry"] == {"type": "Point", "coordinates": [0.16, 52.06]}
    assert doc["features"][0]["properties"]["class"] == "water"
    again = LabelStore.open(s.path)
    assert [(l.id, l.cls, l.geometry.wkt) for l in again] == [(l.id, l.cls, l.geometry.wkt) for l in s]
    assert again.classes == s.classes and again.dataset_version == "v1" and again.year == 2024
    # ids keep counting after reopening
    c = again.add_point(0.2, 52.05, "forest")
    assert c > max(a, b)


def test_undo_redo_clear_remove(tmp_path):
    s = _store(tmp_path)
    a = s.add_point(0.15, 52.05, "forest")
    s.add_point(0.16, 52.05, "water")
    s.remove(a)
    assert [l.cls for l in s] == ["water"]
    assert s.undo() and [l.id for l in s] == [a, a + 1]
    assert len(_file(s)["features"]) == 2
    s.clear()
    assert len(s) == 0 and len(_file(s)["features"]) == 0
    assert s.undo() and len(s) == 2
    assert s.redo() and len(s) == 0
    assert not s.redo()
    while s.undo():
        pass
    assert len(s) == 0 and s.classes == {}
    assert _file(s)["features"] == []
    s.redo()
    assert list(s.classes) == ["forest"]
    s.add_class("crop")  # a new change drops the redo history
    assert not s.can_redo


def test_move_polygon_and_counts(tmp_path):
    s = _store(tmp_path)
    p = s.add_polygon(shapely.geometry.box(0.1, 52.0, 0.12, 52.02), "water")
    s.move(p, 0.2, 52.1)
    c = s[p].geometry.centroid
    assert c.x == pytest.approx(0.2) and c.y == pytest.approx(52.1)
    assert s.counts() == {"forest": 0, "water": 1}
    s.remove_class("water")
    assert len(s) == 0 and "water" not in s.classes
    s.undo()
    assert len(s) == 1 and "water" in s.classes


@pytest.mark.parametrize(
    "action, match",
    [
        (lambda s: s.add_point(0.15, 52.05, "forest"), "already at"),  # duplicate point
        (lambda s: s.add_point(0.3, 52.0, "crop"), "unknown class 'crop'"),
        (lambda s: s.add_point(52.05, 190.0, "forest"), "lon/lat"),
        (lambda s: s.add_point(float("nan"), 52.0, "forest"), "not finite"),
        (lambda s: s.add_polygon([(0, 0), (1, 1), (1, 0), (0, 1)], "forest"), "not valid"),
        (lambda s: s.add_class("forest"), "exists already"),
        (lambda s: s.add_class("crop", "green"), "rrggbb"),
        (lambda s: s.remove(999), "no label with id"),
        (lambda s: s.move(999, 0.1, 52.0), "no label with id"),
        (lambda s: s.add("nonsense", "forest"), "polygon"),
    ],
)
def test_bad_input_leaves_store_and_file_untouched(tmp_path, action, match):
    s = _store(tmp_path)
    s.add_point(0.15, 52.05, "forest")
    before, file_before = s.to_geojson()["features"], open(s.path).read()
    with pytest.raises(LabelError, match=match):
        action(s)
    assert s.to_geojson()["features"] == before
    assert open(s.path).read() == file_before


def test_failed_write_changes_nothing(tmp_path, monkeypatch):
    s = _store(tmp_path)
    s.add_point(0.15, 52.05, "forest")
    file_before = open(s.path).read()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(lio.os, "replace", boom)
    with pytest.raises(LabelError, match="disk full"):
        s.add_point(0.16, 52.05, "forest")
    monkeypatch.undo()
    assert len(s) == 1 and open(s.path).read() == file_before
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]  # no temporary left behind


def test_new_store_never_overwrites(tmp_path):
    s = _store(tmp_path)
    s.add_point(0.15, 52.05, "forest")
    with pytest.raises(LabelError, match="already exists"):
        LabelStore(s.path)
    assert LabelStore.open(tmp_path / "new.geojson", create=True).path.endswith("new.geojson")
    with pytest.raises(LabelError, match="not found"):
        LabelStore.open(tmp_path / "missing.geojson")


def test_corrupt_or_other_version_file_is_refused_whole(tmp_path):
    s = _store(tmp_path)
    s.add_point(0.15, 52.05, "forest")
    before = s.to_geojson()["features"]
    # truncated file (a crash in someone else's writer)
    good = json.dumps(s.to_geojson())
    bad = tmp_path / "truncated.geojson"
    bad.write_text(good[: len(good) // 2])
    with pytest.raises(LabelError, match="not valid JSON"):
        s.load(bad)
    with pytest.raises(LabelError, match="not valid JSON"):
        LabelStore.open(bad)
    (tmp_path / "empty.geojson").write_text("")
    with pytest.raises(LabelError, match="empty"):
        s.load(tmp_path / "empty.geojson")
    # another dataset version
    other = LabelStore(tmp_path / "v2.geojson", dataset_version="v2-2B-L~beta1", classes=["forest"])
    other.add_point(0.2, 52.05, "forest")
    with pytest.raises(LabelError, match="dataset version"):
        s.load(other.path)
    with pytest.raises(LabelError, match="dataset version"):
        LabelStore.open(other.path, dataset_version="v1")
    # one bad feature among good ones: nothing of the file is taken
    doc = other.to_geojson()
    doc["properties"]["dataset_version"] = "v1"
    doc["features"].append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [0.3, 52.0]},
                            "properties": {}})
    (tmp_path / "partly.geojson").write_text(json.dumps(doc))
    with pytest.raises(LabelError, match="feature 1: class"):
        s.load(tmp_path / "partly.geojson")
    # a file that repeats a point already in the store
    dup = tmp_path / "dup.csv"
    dup.write_text("lon,lat,class\n0.15,52.05,forest\n")
    with pytest.raises(LabelError, match="repeats the point"):
        s.load(dup)
    assert s.to_geojson()["features"] == before
    assert len(_file(s)["features"]) == 1


def test_reads_upstream_notebook_json_lat_first(tmp_path):
    p = tmp_path / "upstream.json"
    p.write_text(json.dumps({
        "training_points": [[[52.05, 0.15], "Wheat"], [[52.06, 0.16], "Urban area"]],
        "class_color_map": {"Wheat": "#ffd700", "Urban area": "#ff0000"},
    }))
    s = LabelStore.from_file(p, tmp_path / "ours.geojson")
    assert [(l.lon, l.lat, l.cls) for l in s] == [(0.15, 52.05, "Wheat"), (0.16, 52.06, "Urban area")]
    assert s.classes == {"Wheat": "#ffd700", "Urban area": "#ff0000"}
    assert not s.can_undo
    # and writes it back in the same order
    out = s.export(tmp_path / "back.json", format="upstream")
    assert json.load(open(out))["training_points"][0] == [[52.05, 0.15], "Wheat"]
    # opening a non-GeoJSON file saves the store as GeoJSON beside it
    o = LabelStore.open(p)
    assert o.path.endswith("upstream.geojson") and os.path.exists(o.path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"training_points": [[0.15, 52.05, "Wheat"]]}))
    with pytest.raises(LabelError, match=r"\[\[lat, lon\], class\]"):
        lio.read_labels(bad)


def test_reads_csv_and_vector_files(tmp_path):
    p = tmp_path / "l.csv"
    p.write_text("Longitude,Latitude,Class\n0.15,52.05,forest\n0.16,52.06,water\n")
    ls = lio.read_labels(p)
    assert [(r.geometry.x, r.geometry.y, r.cls) for r in ls.records] == [(0.15, 52.05, "forest"), (0.16, 52.06, "water")]
    (tmp_path / "nocls.csv").write_text("lon,lat\n0,0\n")
    with pytest.raises(LabelError, match="no class column"):
        lio.read_labels(tmp_path / "nocls.csv")
    (tmp_path / "badrow.csv").write_text("lon,lat,class\n0.1,abc,forest\n")
    with pytest.raises(LabelError, match="row 2"):
        lio.read_labels(tmp_path / "badrow.csv")
    gpd = pytest.importorskip("geopandas")
    gdf = gpd.GeoDataFrame({"label": ["forest", "water"]},
                           geometry=[shapely.geometry.Point(0.15, 52.05), shapely.geometry.box(0.1, 52.0, 0.11, 52.01)],
                           crs="EPSG:4326")
    gdf.to_crs(32631).to_file(tmp_path / "l.gpkg", driver="GPKG")
    ls = lio.read_labels(tmp_path / "l.gpkg")
    assert [r.cls for r in ls.records] == ["forest", "water"]
    assert ls.records[0].geometry.x == pytest.approx(0.15) and ls.records[1].geometry.geom_type == "Polygon"
    s = LabelStore(classes={"forest": "#00ff00"})
    assert s.load(gdf) == 2 and s.classes["forest"] == "#00ff00"
    assert s.to_geodataframe().shape == (2, 4)


def test_observers_and_threads(tmp_path):
    import threading

    s = _store(tmp_path)
    seen = []
    s.observe(lambda store, what: seen.append(what))
    ts = [threading.Thread(target=s.add_point, args=(0.1 + i * 0.001, 52.0, "forest")) for i in range(20)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(s) == 20 and len(_file(s)["features"]) == 20 and seen.count("change") == 20
    assert len({l.id for l in s}) == 20


def test_loading_adopts_version_and_year_of_the_file(tmp_path):
    src = LabelStore(tmp_path / "a.geojson", dataset_version="v1.1-cam", year=2021, classes=["forest"])
    src.add_point(0.15, 52.05, "forest")
    s = LabelStore()
    assert s.load(src.path) == 1
    assert (s.dataset_version, s.year) == ("v1.1-cam", 2021)
    doc = src.to_geojson()
    doc["properties"]["year"] = "last year"
    (tmp_path / "b.geojson").write_text(json.dumps(doc))
    t = LabelStore()
    with pytest.raises(LabelError, match="not a number"):
        t.load(tmp_path / "b.geojson")
    assert len(t) == 0 and t.year is None


def test_memory_store_saves_when_given_a_path(tmp_path):
    s = LabelStore(classes=["a"])
    s.add_point(0.1, 52.0, "a")
    with pytest.raises(LabelError, match="no file yet"):
        s.save()
    p = s.save(tmp_path / "later.geojson")
    s.add_point(0.2, 52.0, "a")
    assert len(_file(s)["features"]) == 2 and s.path == p
    with pytest.raises(LabelError, match="upstream"):
        s.export(tmp_path / "x.json", format="shapefile")
