"""sample_labels: points, kernels, polygons, and labels that cannot be used."""

from __future__ import annotations

import numpy as np
import pytest
import shapely.geometry
from pyproj import Transformer

import tessera_explore as te
from tessera_explore.classify import LabelStore
from tessera_explore.exceptions import LabelError, VersionMismatchError


def _lonlat(da, row, col):
    tr = Transformer.from_crs(da.rio.crs, 4326, always_xy=True)
    return tr.transform(float(da.x[col]), float(da.y[row]))


def _valid_pixel(da, start=(10, 10)):
    v = ~np.isnan(da.isel(band=0).values)
    r, c = start
    while not v[r:r + 3, c:c + 3].all():
        c += 1
    return r + 1, c + 1


def test_point_takes_the_pixel_under_it(area24, prepared24):
    r, c = _valid_pixel(area24)
    lon, lat = _lonlat(area24, r, c)
    # a point a little off the pixel centre still takes that pixel
    s = te.sample_labels(area24, [(lon + 0.0003, lat - 0.0003, "a"), (*_lonlat(area24, r + 5, c + 5), "b")])
    assert (s.rows[0], s.cols[0]) == (r, c)
    np.testing.assert_array_equal(s.X[0], area24.isel(y=r, x=c).values)
    assert list(s.y) == ["a", "b"] and s.skipped == []
    X, y = s  # unpacks as features and targets
    assert X.shape == (2, 128) and X.dtype == np.float32
    s2 = te.sample_labels(prepared24, [(lon + 0.0003, lat - 0.0003, "a"), (*_lonlat(area24, r + 5, c + 5), "b")])
    np.testing.assert_allclose(s2.X, s.X, rtol=1e-6)


def test_kernel_window_and_polygon(area24, prepared24):
    r, c = _valid_pixel(area24)
    lon, lat = _lonlat(area24, r, c)
    s = te.sample_labels(area24, [(lon, lat, "a")], kernel=3)
    assert len(s) == 9 and set(s.label_id) == {0}
    assert set(zip(s.rows, s.cols)) == {(r + i, c + j) for i in (-1, 0, 1) for j in (-1, 0, 1)}
    with pytest.raises(LabelError, match="odd"):
        te.sample_labels(area24, [(lon, lat, "a")], kernel=2)
    # polygon: every pixel centre inside it
    x0, x1 = float(area24.x[c - 2]) - 1, float(area24.x[c + 2]) + 1
    y0, y1 = float(area24.y[r + 2]) - 1, float(area24.y[r - 2]) + 1
    tr = Transformer.from_crs(area24.rio.crs, 4326, always_xy=True)
    ring = [tr.transform(x, y) for x, y in [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]]
    store = LabelStore(classes=["field"])
    store.add_polygon(ring, "field")
    for area in (area24, prepared24):
        s = te.sample_labels(area, store, warn=False)
        ok = ~np.isnan(area24.isel(band=0).values[r - 2:r + 3, c - 2:c + 3])
        assert len(s) == ok.sum() and set(s.y) == {"field"}
    # a polygon smaller than a pixel takes the pixel under its centroid
    tiny = shapely.geometry.Point(lon, lat).buffer(0.0001)
    s = te.sample_labels(area24, {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": shapely.geometry.mapping(tiny), "properties": {"class": "x"}}]})
    assert len(s) == 1 and (s.rows[0], s.cols[0]) == (r, c)


def test_unusable_labels_are_reported_not_dropped(area24, scene24):
    lon, lat, truth = scene24
    r, c = _valid_pixel(area24)
    good = _lonlat(area24, r, c)
    water = np.argwhere(np.isnan(area24.isel(band=0).values))[0]
    wl = _lonlat(area24, *water)
    labels = [(*good, "a"), (*_lonlat(area24, r + 4, c), "b"), (5.0, 45.0, "a"), (*wl, "b"),
              (good[0] + 0.0001, good[1], "a"), (*_lonlat(area24, r + 4, c), "a")]
    with pytest.warns(UserWarning, match="labels were left out"):
        s = te.sample_labels(area24, labels)
    reasons = {d["id"]: d["reason"] for d in s.skipped}
    assert "outside" in reasons[2] and "no-data" in reasons[3]
    assert "duplicate" in reasons[4]  # same pixel, same class: one is kept
    assert "another class" in reasons[5] and "another class" in reasons[1]  # conflicting: both left out
    assert list(s.label_id) == [0]
    with pytest.raises(LabelError, match="none of the 2 labels"):
        te.sample_labels(area24, [(5.0, 45.0, "a"), (*wl, "b")])
    with pytest.raises(LabelError, match="no labels"):
        te.sample_labels(area24, LabelStore())
    with pytest.raises(LabelError, match="cannot use int"):
        te.sample_labels(area24, 5)


def test_labels_of_another_dataset_version_are_refused(area24, tmp_path):
    store = LabelStore(tmp_path / "l.geojson", dataset_version="v1.1-cam", classes=["a"])
    store.add_point(0.15, 52.05, "a")
    with pytest.raises(VersionMismatchError, match="v1.1-cam"):
        te.sample_labels(area24, store)
    with pytest.raises(VersionMismatchError):
        te.sample_labels(area24, store.path)
