"""change between years, and clusters."""

from __future__ import annotations

import numpy as np
import pytest

import tessera_explore as te
from tessera_explore.classify import prepare
from tessera_explore.classify.change import CHANGE_CLASSES
from tessera_explore.exceptions import ClassifierError, SchemaError, VersionMismatchError
from tessera_explore.testing import scene_classes


def test_change_distance_and_classes(area23, area24, prepared24, scene24):
    ch = te.change(area23, area24)
    a = area23.transpose("y", "x", "band").values.reshape(-1, 128).astype(np.float64)
    b = area24.transpose("y", "x", "band").values.reshape(-1, 128).astype(np.float64)
    ref = 1 - (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(ch.distance.values.ravel(), ref, atol=1e-5)
    cc = ch.change_class.values
    d = ch.distance.values
    np.testing.assert_array_equal(cc == 255, np.isnan(d))
    np.testing.assert_array_equal(cc[~np.isnan(d)], np.digitize(d[~np.isnan(d)], ch.attrs["breaks"]))
    assert ch.change_class.attrs["classes"] == list(CHANGE_CLASSES)
    assert ch.attrs["year_a"] == 2023 and ch.attrs["year_b"] == 2024 and ch.rio.crs == area24.rio.crs
    # pixels whose true class changed (crop rotation) moved more than those that did not
    lon, lat, t24 = scene24
    t23 = scene_classes(lon, lat, 2023, seed=1)
    ok = ~np.isnan(d)
    assert np.median(d[ok & (t23 != t24)]) > 2 * np.median(d[ok & (t23 == t24)])
    assert (cc[ok & (t23 == t24)] == 0).mean() > 0.8 and (cc[ok & (t23 != t24)] >= 2).mean() > 0.8
    # prepared areas, mixed inputs and euclidean
    np.testing.assert_allclose(te.change(prepare(area23), prepared24).distance.values, d, atol=1e-6)
    np.testing.assert_allclose(te.change(area23, prepared24, block=30).distance.values, d, atol=1e-6)
    e = te.change(area23, area24, metric="euclidean", breaks=(1, 2, 3)).distance.values.ravel()
    np.testing.assert_allclose(e, np.linalg.norm(a - b, axis=1), rtol=1e-4)
    same = te.change(area24, prepared24).distance.values
    assert np.nanmax(np.abs(same)) < 1e-6


def test_change_refuses_other_grid_or_version(area23, area24):
    with pytest.raises(SchemaError, match="same grid"):
        te.change(area23.isel(x=slice(1, None)), area24)
    with pytest.raises(VersionMismatchError):
        te.change(area23.assign_attrs(dataset_version="v1.1-cam", model_generation="v1.1"), area24)
    with pytest.raises(ValueError, match="breaks"):
        te.change(area23, area24, breaks=(0.5, 0.2, 0.9))


def test_cluster(area24, prepared24, scene24):
    cl = te.cluster(prepared24, 6, seed=0)
    v = cl.values
    nod = np.isnan(area24.isel(band=0).values)
    assert cl.name == "cluster" and cl.rio.crs == area24.rio.crs and cl.rio.nodata == 255
    assert (v[nod] == 255).all() and set(np.unique(v[~nod])) <= set(range(6))
    # clusters follow land cover: most pixels of a cluster share one true class
    _, _, truth = scene24
    purity = sum(np.bincount(truth[(v == k)]).max() for k in range(6) if (v == k).any()) / (~nod).sum()
    assert purity > 0.7
    # the DataArray path samples differently but assigns with the same kernel
    cl2 = te.cluster(area24, 6, seed=0, block=40)
    assert (cl2.values[nod] == 255).all() and len(np.unique(cl2.values[~nod])) == 6
    with pytest.raises(ClassifierError, match="k must be"):
        te.cluster(prepared24, 1)
