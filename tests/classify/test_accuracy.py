"""validation_sample and area_estimate: Olofsson et al. (2014)'s worked example, sampling
designs, honest intervals when strata hold no errors, refusal of training labels."""

from __future__ import annotations

import numpy as np
import pytest

import tessera_explore as te
from tessera_explore.exceptions import ArgumentError, LabelError


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


def lonlat_of(pred, rows, cols):
    from pyproj import Transformer

    tr = Transformer.from_crs(pred["class"].rio.crs, 4326, always_xy=True)
    return tr.transform(pred.x.values[cols], pred.y.values[rows])


OLOFSSON = ("deforestation", "gain", "stable forest", "stable non-forest")
# Olofsson et al. (2014), table 8: sample counts (rows map, columns reference) and
# mapped pixels (their 200,000 / 150,000 / 3,200,000 / 6,450,000, divided by 1000 here)
OLOF_COUNTS = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])
OLOF_PIXELS = np.array([200, 150, 3200, 6450])


def olofsson_case():
    vals = np.repeat(np.arange(4), OLOF_PIXELS).reshape(100, 100)
    pred = class_map(vals, OLOFSSON)
    rng = np.random.default_rng(0)
    refs = []
    for i in range(4):
        pix = np.flatnonzero(vals.ravel() == i)
        for j in range(4):
            for p in rng.choice(pix, OLOF_COUNTS[i, j]):
                lon, lat = lonlat_of(pred, np.array([p // 100]), np.array([p % 100]))
                refs.append((float(lon[0]), float(lat[0]), OLOFSSON[j]))
    return pred, refs


def test_olofsson_worked_example():
    pred, refs = olofsson_case()
    est = te.area_estimate(pred, refs, interval="wald")
    tab = est.table
    # their area 21,158 ha +- 6,158 ha (95 %) of 900,000 ha for deforestation; here the total
    # is 10,000 px of 0.09 ha = 900 ha, so the same proportions give areas 1000 times smaller
    assert est.total_m2 == pytest.approx(10_000 * 900.0)
    assert tab.loc["deforestation", "area_ha"] == pytest.approx(21.158, abs=0.001)
    assert 1.96 * tab.loc["deforestation", "area_se_ha"] == pytest.approx(6.158, abs=0.005)
    assert tab.loc["gain", "area_ha"] == pytest.approx(11.686, abs=0.001)
    assert tab.loc["stable forest", "area_ha"] == pytest.approx(285.770, abs=0.001)
    assert tab.loc["stable non-forest", "area_ha"] == pytest.approx(581.386, abs=0.001)
    assert tab.loc["deforestation", "users_accuracy"] == pytest.approx(0.88)
    assert tab.loc["deforestation", "producers_accuracy"] == pytest.approx(0.75, abs=0.005)
    assert tab.loc["gain", "producers_accuracy"] == pytest.approx(0.85, abs=0.005)
    assert est.overall_accuracy == pytest.approx(0.95, abs=0.005)
    # Olofsson et al.: UA deforestation +- 0.07, PA +- 0.21 (95 %), OA +- 0.02
    assert 1.96 * tab.loc["deforestation", "users_se"] == pytest.approx(0.074, abs=0.003)
    assert 1.96 * tab.loc["deforestation", "producers_se"] == pytest.approx(0.21, abs=0.01)
    assert 1.96 * est.overall_se == pytest.approx(0.02, abs=0.005)
    # areas add up; mapped areas in m² and ha
    assert tab["area_m2"].sum() == pytest.approx(est.total_m2)
    assert tab.loc["gain", "mapped_ha"] == pytest.approx(150 * 0.09)
    assert est.error_matrix.to_numpy().tolist() == OLOF_COUNTS.tolist()
    # the other intervals contain the estimate and are at least as wide as the Wald one
    # (zero cells such as map gain / reference deforestation still count)
    for kind in ("wilson", "jeffreys", "adjusted"):
        other = te.area_estimate(pred, refs, interval=kind).table
        for c in OLOFSSON:
            lo, hi = other.loc[c, "area_ci_low_ha"], other.loc[c, "area_ci_high_ha"]
            assert lo < tab.loc[c, "area_ha"] < hi
            assert (hi - lo) >= 0.95 * 2 * 1.96 * tab.loc[c, "area_se_ha"]
            assert (hi - lo) <= 2.5 * 2 * 1.96 * tab.loc[c, "area_se_ha"]


def check_nonzero_width(tab):
    assert np.allclose(tab["area_m2"], tab["mapped_m2"])
    width = tab["area_ci_high_ha"] - tab["area_ci_low_ha"]
    assert (width > 0).all()
    assert (tab["area_ci_low_m2"] <= tab["area_m2"]).all() and (tab["area_m2"] <= tab["area_ci_high_m2"]).all()


def test_interval_keeps_width_without_errors():
    vals = np.repeat(np.arange(3), [2000, 3000, 5000]).reshape(100, 100)
    pred = class_map(vals, ("a", "b", "c"), res=10.0)
    sample = te.validation_sample(pred, 60, seed=1)
    sample["reference"] = sample["map_class"]  # a perfect sample: no errors anywhere
    wald = te.area_estimate(pred, sample, interval="wald").table
    for kind in ("wilson", "jeffreys", "adjusted"):
        check_nonzero_width(te.area_estimate(pred, sample, interval=kind).table)
    assert (wald["area_se_m2"] == 0).all()
    assert (wald["area_ci_high_m2"] == wald["area_ci_low_m2"]).all()  # the collapsed interval
    wil = te.area_estimate(pred, sample).table
    # 10 m pixels: 100 m² each
    assert wil.loc["a", "mapped_m2"] == 2000 * 100.0
    assert wil.loc["a", "mapped_ha"] == 20.0


def test_jeffreys_and_wilson_stratum_intervals():
    """Per-stratum bounds the MOVER intervals combine: Jeffreys (Beta(x + 1/2, n - x + 1/2)
    quantiles, 0 / 1 at the ends) is narrower than Wilson at the ends; Wilson's bound at
    0 of n is z^2 / (n + z^2)."""
    from tessera_explore.classify.accuracy import _jeffreys, _wilson

    x, n = np.array([0.0, 5.0, 20.0]), np.array([20.0, 20.0, 20.0])
    jl, jh = _jeffreys(x, n, 0.95)
    wl, wh = _wilson(x, n, 1.959964)
    assert jl[0] == 0 and jh[2] == 1 and wl[0] == 0 and wh[2] == 1
    assert jl[1] == pytest.approx(0.1024, abs=1e-3) and jh[1] == pytest.approx(0.4642, abs=1e-3)
    assert jh[0] == pytest.approx(0.1166, abs=1e-3) and wh[0] == pytest.approx(1.959964 ** 2 / (20 + 1.959964 ** 2))
    assert jh[0] < wh[0] and jl[2] > wl[2]
    with pytest.raises(ArgumentError, match="interval"):
        te.area_estimate(class_map(np.zeros((4, 4), np.uint8), ("a",), res=10.0), [], interval="exact")


def test_validation_sample_designs():
    vals = np.repeat(np.arange(3), [500, 1500, 8000]).reshape(100, 100)
    pred = class_map(vals, ("rare", "mid", "common"), res=10.0)
    prop = te.validation_sample(pred, 100, seed=0)
    assert len(prop) == 100
    assert prop["map_class"].value_counts().to_dict() == {"common": 80, "mid": 15, "rare": 5}
    # points lie on pixels of their stratum
    assert (vals[prop["row"], prop["col"]] == [("rare", "mid", "common").index(c) for c in prop["map_class"]]).all()
    assert prop.crs.to_epsg() == 4326
    assert prop["reference"].isna().all()
    eq = te.validation_sample(pred, 99, allocation="equal", seed=0)
    assert eq["map_class"].value_counts().to_dict() == {"common": 33, "mid": 33, "rare": 33}
    d = te.validation_sample(pred, allocation={"rare": 50, "mid": 20, "common": 30}, seed=0)
    assert d["map_class"].value_counts().to_dict() == {"rare": 50, "mid": 20, "common": 30}
    # seeded, distinct pixels
    again = te.validation_sample(pred, 100, seed=0)
    assert (again["row"].to_numpy() == prop["row"].to_numpy()).all()
    assert not prop.duplicated(["row", "col"]).any()
    assert not (te.validation_sample(pred, 100, seed=1)["row"].to_numpy() == prop["row"].to_numpy()).all()
    # every stratum gets at least two points, even when proportional would give none
    tiny = te.validation_sample(pred, 10, seed=0)["map_class"].value_counts().to_dict()
    assert tiny["rare"] >= 2 and sum(tiny.values()) == 10
    with pytest.raises(ArgumentError, match="allocation"):
        te.validation_sample(pred, 10, allocation="neyman")
    with pytest.raises(ArgumentError, match="not in the map"):
        te.validation_sample(pred, allocation={"nope": 3})


def test_area_estimate_unbiased_on_a_known_map():
    """Reference = truth on a map with known errors: mean estimate close to the truth,
    and the interval contains it most of the time."""
    rng = np.random.default_rng(5)
    truth = np.repeat(np.arange(3), [2000, 3000, 5000])
    rng.shuffle(truth)
    mapped = truth.copy()
    flip = rng.random(truth.size) < 0.15
    mapped[flip] = rng.integers(0, 3, int(flip.sum()))
    pred = class_map(mapped.reshape(100, 100), ("a", "b", "c"), res=10.0)
    true_area = np.bincount(truth, minlength=3) * 100.0
    est, hit = [], 0
    for seed in range(40):
        s = te.validation_sample(pred, 150, seed=seed)
        s["reference"] = [("a", "b", "c")[truth[r * 100 + c]] for r, c in zip(s["row"], s["col"], strict=True)]
        tab = te.area_estimate(pred, s).table
        est.append(tab["area_m2"].to_numpy())
        hit += int(((tab["area_ci_low_m2"] <= true_area) & (true_area <= tab["area_ci_high_m2"])).all())
    assert np.allclose(np.mean(est, axis=0), true_area, rtol=0.03)
    assert hit >= 30  # three classes jointly, each at 95 %
    # the mapped areas are biased (errors flow towards the small classes), the estimates are not
    assert abs(np.mean(est, axis=0)[2] - true_area[2]) < abs(np.bincount(mapped, minlength=3)[2] * 100.0 - true_area[2])


def test_training_labels_are_refused(prepared24, labels5, tmp_path):
    clf = te.fit_classifier(prepared24, labels5)
    pred = te.predict_map(prepared24, clf)
    store = te.LabelStore(tmp_path / "l.geojson", classes=sorted({c for *_, c in labels5}))
    with pytest.raises(LabelError, match="training labels"):
        te.area_estimate(pred, store)
    with pytest.raises(LabelError, match="training labels"):
        te.area_estimate(pred, clf.samples_)
    with pytest.raises(LabelError, match="training labels"):
        te.area_estimate(pred, clf)
    # a label file has no reference column
    import geopandas as gpd

    gdf = gpd.GeoDataFrame({"class": [c for *_, c in labels5]},
                           geometry=gpd.points_from_xy([p[0] for p in labels5], [p[1] for p in labels5]), crs=4326)
    with pytest.raises(ArgumentError, match="no column 'reference'"):
        te.area_estimate(pred, gdf)
    # a sample from another map is refused; an unlabelled one too
    s = te.validation_sample(pred, 40, seed=0)
    with pytest.raises(ArgumentError, match="no 'reference' class yet"):
        te.area_estimate(pred, s)
    other = pred.copy(deep=True)
    other["class"].values[0, 0] = 0 if other["class"].values[0, 0] != 0 else 1
    s["reference"] = s["map_class"]
    with pytest.raises(ArgumentError, match="another map"):
        te.area_estimate(other, s)
    est = te.area_estimate(pred, s)
    assert est.overall_accuracy == 1.0
    assert "AreaEstimate(" in repr(est)


def test_overall_accuracy_interval_keeps_width_without_errors():
    """30 reference points, all correct: the overall-accuracy interval is not 1.00-1.00;
    with one stratum it is that stratum's Wilson (Jeffreys) interval for 30 of 30."""
    vals = np.zeros((60, 60), np.uint8)
    vals[:, 30:] = 1
    pred = class_map(vals, ("woods", "fields"), res=10.0)
    sample = te.validation_sample(pred, 30, seed=2)
    sample["reference"] = sample["map_class"]
    z = 1.959964
    for kind, low_max in (("wilson", 0.92), ("jeffreys", 0.96), ("adjusted", 0.99)):
        est = te.area_estimate(pred, sample, interval=kind)
        lo, hi = est.overall_ci
        assert est.overall_accuracy == 1.0 and hi == 1.0
        assert 0.8 < lo < low_max, kind
    # Wald keeps its textbook collapse (documented), the others do not
    assert te.area_estimate(pred, sample, interval="wald").overall_ci == (1.0, 1.0)
    one = class_map(np.zeros((40, 40), np.uint8), ("woods",), res=10.0)
    s1 = te.validation_sample(one, 30, seed=0)
    s1["reference"] = s1["map_class"]
    lo, hi = te.area_estimate(one, s1).overall_ci
    assert lo == pytest.approx(30 / (30 + z * z), abs=1e-4) and hi == 1.0
    # all wrong: the interval keeps a width above 0
    s1["reference"] = "fields"
    lo, hi = te.area_estimate(one, s1).overall_ci
    assert lo == 0.0 and hi == pytest.approx(z * z / (30 + z * z), abs=1e-4)


def test_overall_accuracy_interval_matches_wald_where_errors_abound():
    pred, refs = olofsson_case()
    wald = te.area_estimate(pred, refs, interval="wald")
    wlo, whi = wald.overall_ci
    for kind in ("wilson", "jeffreys", "adjusted"):
        lo, hi = te.area_estimate(pred, refs, interval=kind).overall_ci
        assert lo < wald.overall_accuracy < hi
        assert (hi - lo) == pytest.approx(whi - wlo, rel=0.25)
