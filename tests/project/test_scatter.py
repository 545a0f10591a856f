"""Projection scatter: points map back to pixels; colours by RGB, class or density."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import tessera_explore as te
from tessera_explore.widgets.scatter import scatter, scatter_image, scatter_points


@pytest.fixture(scope="module")
def projected(area):
    _, open_ = area
    da = open_()
    comp, fitted = te.project(da, random_state=0)
    return da, comp, te.to_rgb(comp)


def test_points_map_back_to_pixels(projected):
    da, comp, rgb = projected
    pts = scatter_points(comp, rgb=rgb)
    valid = np.isfinite(comp.values).all(axis=0)
    assert len(pts) == valid.sum() and pts.shape == valid.shape
    r, c = np.unravel_index(pts.index, pts.shape)
    np.testing.assert_array_equal(pts.xy[:, 0], comp.values[0, r, c])
    np.testing.assert_array_equal(pts.xy[:, 1], comp.values[1, r, c])
    np.testing.assert_array_equal(pts.rgb, rgb.values[:3, r, c].T)
    pts13 = scatter_points(comp, dims=(1, 3), color=None)
    np.testing.assert_array_equal(pts13.xy[:, 1], comp.values[2, r, c])


def test_rgb_image_is_the_mean_colour_of_the_points_under_each_screen_pixel():
    # two tight clusters with known colours; each lands in one screen pixel
    comp = np.full((2, 2, 3), np.nan, np.float32)
    comp[:, 0, :] = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    comp[:, 1, :2] = [[1.0, 1.0], [1.0, 1.0]]
    da = xr.DataArray(comp, dims=("component", "y", "x"))
    rgb = np.zeros((4, 2, 3), np.uint8)
    rgb[:3, 0, 0], rgb[:3, 0, 1], rgb[:3, 0, 2] = (200, 0, 0), (100, 0, 0), (0, 0, 90)
    rgb[:3, 1, :2] = np.array([0, 60, 0])[:, None]
    pts = scatter_points(da, rgb=rgb)
    assert len(pts) == 5
    img = scatter_image(pts, width=10, height=10, x_range=(-0.5, 1.5), y_range=(-0.5, 1.5))
    assert img.shape == (10, 10, 4)
    # (0, 0) is at column 2, row 7 from the top; (1, 1) at column 7, row 2
    np.testing.assert_array_equal(img[7, 2, :3], [100, 0, 30])
    np.testing.assert_array_equal(img[2, 7, :3], [0, 60, 0])
    assert img[7, 2, 3] > img[2, 7, 3] > 0  # denser is more opaque
    assert (img[..., 3] > 0).sum() == 2


def test_class_and_density_colouring(projected):
    da, comp, _ = projected
    H, W = comp.shape[1:]
    cls = np.zeros((H, W), np.int16)
    cls[:, W // 2 :] = 1
    classes = xr.DataArray(cls, dims=("y", "x"), attrs={"classes": ["a", "b"],
                                                        "class_colors": ["#ff0000", "#0000ff"]})
    pts = scatter_points(comp, color=classes)
    assert pts.class_names == ["a", "b"] and set(np.unique(pts.classes)) == {0, 1}
    img = scatter_image(pts, width=64, height=64)
    on = img[..., 3] > 0
    assert on.any()
    # only mixes of the two class colours: no green
    assert img[..., 1][on].max() == 0
    dens = scatter_image(scatter_points(comp, color=None), width=64, height=64)
    assert (dens[..., 3] > 0).sum() == on.sum()


def test_scatter_is_a_dynamic_map_that_renders(projected):
    import holoviews as hv

    _, comp, rgb = projected
    dmap = scatter(comp, rgb=rgb, width=200, height=150)
    assert isinstance(dmap, hv.DynamicMap) and len(dmap.points) > 0
    el = dmap[()]
    assert isinstance(el, hv.RGB)
    assert el.data["R"].shape == (150, 200) if isinstance(el.data, dict) else True
    x0, y0, x1, y1 = dmap.points.bounds()
    zoomed = dmap.callback(x_range=(x0, (x0 + x1) / 2), y_range=(y0, (y0 + y1) / 2))
    assert isinstance(zoomed, hv.RGB)
    fig = hv.render(dmap, backend="bokeh")
    assert type(fig).__name__ == "figure"


def test_axis_titles_follow_the_projection_shown(projected):
    """Switching the scatter from PCA to UMAP (set_points) retitles the axes."""
    import holoviews as hv

    from tessera_explore.widgets.scatter import set_points

    hv.extension("bokeh", logo=False)
    _, comp, rgb = projected
    dmap = scatter(comp, rgb=rgb, width=200, height=150)
    plot = hv.renderer("bokeh").get_plot(dmap)
    name = str(comp.attrs["projection"]).upper()
    assert (plot.state.xaxis[0].axis_label, plot.state.yaxis[0].axis_label) == (f"{name} 1", f"{name} 2")
    umap = (comp * 7 + 3).assign_attrs(comp.attrs, projection="umap")  # other values, as a UMAP fit gives
    pts = scatter_points(umap, rgb=rgb)
    assert pts.axis_labels == ("UMAP 1", "UMAP 2")
    set_points(dmap, pts, keep_view=False)
    assert (plot.state.xaxis[0].axis_label, plot.state.yaxis[0].axis_label) == ("UMAP 1", "UMAP 2")
    assert scatter_points(comp, dims=(2, 3)).axis_labels == (f"{name} 2", f"{name} 3")


def test_switching_projection_moves_the_view_and_the_reset_range_to_the_new_points():
    import holoviews as hv

    from tessera_explore.widgets.scatter import set_points

    hv.extension("bokeh")
    rng = np.random.default_rng(0)

    def comps(offset, scale, name):
        c = (rng.normal(size=(2, 20, 20)) * scale + offset).astype(np.float32)
        return xr.DataArray(c, dims=("component", "y", "x"), attrs={"projection": name})

    rgb = np.zeros((4, 20, 20), np.uint8)
    dmap = scatter(comps(0, 1, "pca"), rgb=rgb, width=120, height=100)
    plot = hv.renderer("bokeh").get_plot(dmap)
    xr_, yr_ = plot.state.x_range, plot.state.y_range
    assert xr_.end < 10
    # "UMAP" points far from the PCA ones: the view and the reset range follow them
    umap_pts = scatter_points(comps(100, 10, "umap"), rgb=rgb)
    set_points(dmap, umap_pts, keep_view=False)
    x0, y0, x1, y1 = umap_pts.bounds()
    assert (xr_.start, xr_.end, yr_.start, yr_.end) == pytest.approx((x0, x1, y0, y1))
    assert (xr_.reset_start, xr_.reset_end, yr_.reset_start, yr_.reset_end) == pytest.approx((x0, x1, y0, y1))
    # another year of the same projection keeps the zoom, but reset goes to the new extent
    xr_.update(start=101.0, end=102.0)
    dmap.streams[0].event(x_range=(101.0, 102.0), y_range=(yr_.start, yr_.end))
    later = scatter_points(comps(120, 10, "umap"), rgb=rgb)
    set_points(dmap, later, keep_view=True)
    assert (xr_.start, xr_.end) == (101.0, 102.0)
    assert (xr_.reset_start, xr_.reset_end) == pytest.approx((later.bounds()[0], later.bounds()[2]))
    # back to PCA
    pca_pts = scatter_points(comps(0, 1, "pca"), rgb=rgb)
    set_points(dmap, pca_pts, keep_view=False)
    assert xr_.end == pytest.approx(pca_pts.bounds()[2]) and xr_.reset_end == pytest.approx(pca_pts.bounds()[2])
