"""PCA projection, stratified sampling, reuse across tiles and years, RGB stretch, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.decomposition import PCA

import tessera_explore as te
from tessera_explore.exceptions import ProjectionError, VersionMismatchError
from tessera_explore.project import PCAProjection, RGBStretch, stratified_sample
from tessera_explore.project.sample import cell_shape

BBOX_WEST = (0.1, 52.0, 0.2, 52.1)  # the western small tile


def _valid(da):
    return np.isfinite(da.values).all(axis=0)


def test_components_on_the_same_grid(area):
    _, open_ = area
    da = open_()
    comp, fitted = te.project(da, method="pca", n_components=3, random_state=0)
    assert isinstance(fitted, PCAProjection)
    assert comp.dims == ("component", "y", "x") and comp.dtype == np.float32
    assert comp.shape == (3, da.sizes["y"], da.sizes["x"])
    np.testing.assert_array_equal(comp.x.values, da.x.values)
    np.testing.assert_array_equal(comp.y.values, da.y.values)
    assert comp.rio.crs == da.rio.crs and int(comp.year) == 2024
    valid = _valid(da)
    assert (~valid).any() and valid.any()  # the scene has water
    np.testing.assert_array_equal(np.isfinite(comp.values).all(axis=0), valid)
    assert not np.isfinite(comp.values[:, ~valid]).any()
    assert fitted.components_.shape == (3, 128)
    assert fitted.dataset_version_ == da.attrs["dataset_version"]
    assert fitted.model_generation_ == da.attrs["model_generation"]
    assert comp.attrs["projection"] == "pca"


def test_codes_path_equals_float_path_and_full_pca(area):
    """The blockwise int8 transform equals projecting the dequantised floats, and the
    sample-fitted axes match a PCA of every pixel."""
    _, open_ = area
    da = open_()
    comp, fitted = te.project(da, random_state=1)
    x = da.values.reshape(128, -1).T
    ok = np.isfinite(x).all(axis=1)
    direct = fitted.pca_.transform(x[ok]).astype(np.float32)
    got = comp.values.reshape(3, -1).T[ok]
    np.testing.assert_allclose(got, direct, rtol=1e-4, atol=1e-4 * np.abs(direct).max())
    full = PCA(3).fit(x[ok])
    for i in range(2):  # leading axes agree up to sign
        assert abs(float(full.components_[i] @ fitted.components_[i])) > 0.99


def test_stratified_sample_is_even_valid_and_seeded(area):
    _, open_ = area
    da = open_()
    H, W = da.sizes["y"], da.sizes["x"]
    s1 = stratified_sample(da, 500, random_state=3)
    s2 = stratified_sample(da, 500, random_state=3)
    s3 = stratified_sample(da, 500, random_state=4)
    np.testing.assert_array_equal(s1.rows, s2.rows)
    np.testing.assert_array_equal(s1.codes, s2.codes)
    assert not np.array_equal(s1.rows, s3.rows)
    valid = _valid(da)
    assert valid[s1.rows, s1.cols].all()
    assert 0.5 * 500 * valid.mean() < len(s1) <= 1.3 * 500
    # one pixel per cell: no two sampled pixels share a cell, every cell with data has one
    cy, cx = cell_shape(H, W, 500)
    cells = (s1.rows // cy) * 10_000 + s1.cols // cx
    assert len(np.unique(cells)) == len(cells)
    pad = np.zeros((-(-H // cy) * cy, -(-W // cx) * cx), bool)
    pad[:H, :W] = valid
    with_data = pad.reshape(pad.shape[0] // cy, cy, pad.shape[1] // cx, cx).any(axis=(1, 3)).sum()
    assert len(cells) == with_data
    # the sample's values are the array's values
    np.testing.assert_allclose(s1.values()[:5], da.values[:, s1.rows[:5], s1.cols[:5]].T, rtol=1e-6)


def test_fitted_on_another_year_gives_identical_colours_for_identical_embeddings(area):
    _, open_ = area
    d23, d24 = open_(2023), open_(2024)
    comp23, fitted = te.project(d23, random_state=0)
    comp24, same = te.project(d24, fitted=fitted)
    assert same is fitted
    # the same embeddings under another year label get exactly the same colours
    relabelled = d24.assign_coords(year=2030)
    comp30, _ = te.project(relabelled, fitted=fitted)
    rgb24, rgb30 = te.to_rgb(comp24), te.to_rgb(comp30)
    np.testing.assert_array_equal(rgb24.values, rgb30.values)
    # both years share the projection's stretch (fitted once), not a per-year one
    assert rgb24.attrs["stretch_low"] == te.to_rgb(comp23).attrs["stretch_low"]
    assert rgb24.attrs["stretch_low"] == [float(v) for v in fitted.stretch_.low_]
    # and the colours differ where the land changed (crop rotation), as they should
    assert (rgb24.values != te.to_rgb(comp23).values).any()


def test_fitted_on_one_tile_has_no_seam_across_tiles(area):
    """Colouring each tile alone with one projection gives exactly the mosaic's colours."""
    _, open_ = area
    both = open_()
    west = open_(bbox=BBOX_WEST)
    comp_both, fitted = te.project(both, random_state=0)
    comp_west, _ = te.project(west, fitted=fitted)
    part = comp_both.sel(x=comp_west.x, y=comp_west.y)
    np.testing.assert_array_equal(te.to_rgb(part).values, te.to_rgb(comp_west).values)


def test_to_rgb_rgba_transparent_and_reusable_stretch(area):
    _, open_ = area
    da = open_()
    comp, fitted = te.project(da, random_state=0)
    rgb = te.to_rgb(comp)
    assert rgb.dtype == np.uint8 and rgb.dims == ("band", "y", "x") and list(rgb.band.values) == list("rgba")
    valid = _valid(da)
    np.testing.assert_array_equal(rgb.values[3] == 255, valid)
    assert (rgb.values[:, ~valid] == 0).all()
    # the default reuses the projection's stretch (fitted on its sample)
    np.testing.assert_array_equal(te.to_rgb(comp, stretch=fitted).values, rgb.values)
    again = RGBStretch.from_attrs(rgb.attrs)
    np.testing.assert_array_equal(te.to_rgb(comp, stretch=again).values, rgb.values)
    # other percentiles: a stretch of this array's own pixels, which saturates less
    wide = te.to_rgb(comp, stretch=(0, 100))
    assert ((wide.values[:3, valid] == 0) | (wide.values[:3, valid] == 255)).mean() < \
        ((rgb.values[:3, valid] == 0) | (rgb.values[:3, valid] == 255)).mean()
    lo = np.nanmin(comp.values[0])
    assert wide.values[0][comp.values[0] == lo][0] == 0
    # NumPy input works too
    arr = te.to_rgb(comp.values, stretch=fitted.stretch_)
    np.testing.assert_array_equal(arr, rgb.values)


def test_bad_input_gives_clear_errors(make_embeddings):
    rng = np.random.default_rng(0)
    const = make_embeddings(np.ones((128, 20, 20), np.float32) * 0.3)
    with pytest.raises(ProjectionError, match="same embedding"):
        te.project(const)
    nan = make_embeddings(np.full((128, 20, 20), np.nan, np.float32))
    with pytest.raises(ProjectionError, match="no pixel with data"):
        te.project(nan)
    few = np.full((128, 20, 20), np.nan, np.float32)
    few[:, 0, :3] = rng.normal(size=(128, 3))
    with pytest.raises(ProjectionError, match="on 3 pixels"):
        te.project(make_embeddings(few), n_components=3)
    # a fitted projection from another dataset version is refused
    good = make_embeddings(rng.normal(size=(128, 20, 20)))
    _, fitted = te.project(good, random_state=0)
    other = make_embeddings(rng.normal(size=(128, 20, 20)), version="v1.1")
    with pytest.raises(VersionMismatchError, match=r"dataset v1 \(variant vultr\).*are v1.1"):
        te.project(other, fitted=fitted)
    with pytest.raises(ProjectionError, match="unknown projection method"):
        te.project(good, method="tsne")
    with pytest.raises(TypeError, match="drop n_components"):
        te.project(good, fitted=fitted, n_components=2)
    with pytest.raises(TypeError):
        te.project(good, no_such_option=1)


def test_estimator_conventions(make_embeddings):
    est = PCAProjection(n_components=2, sample=300, random_state=5)
    assert est.get_params() == {"n_components": 2, "sample": 300, "random_state": 5, "from_stats": False}
    assert not hasattr(est, "components_")
    with pytest.raises(ProjectionError, match="not fitted"):
        est.transform(np.zeros((2, 128), np.float32))
    da = make_embeddings(np.random.default_rng(1).normal(size=(128, 30, 30)))
    assert est.fit(da) is est and est.n_samples_fit_ > 0
    c = clone(est)
    assert c.get_params() == est.get_params() and not hasattr(c, "components_")
    # plain (n, 128) arrays in and out
    table = da.values.reshape(128, -1).T
    out = est.transform(table)
    assert out.shape == (table.shape[0], 2)
    np.testing.assert_allclose(out.T.reshape(2, 30, 30), est.transform(da).values, rtol=1e-4, atol=1e-4)


def test_project_stays_callable_after_importing_the_subpackage():
    import tessera_explore.project as mod

    assert callable(te.project) and callable(mod)
    assert hasattr(mod, "PCAProjection")
    assert isinstance(te.to_rgb(np.zeros((5, 3), np.float32) + np.arange(5)[:, None]), np.ndarray)
