"""Map overlays: placement within half a pixel, pixel budget, class and value legends."""

from __future__ import annotations

import io

import numpy as np
import pytest
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr
from PIL import Image
from pyproj import Transformer

import tessera_explore as te
from tessera_explore.widgets.overlay import legend_html, overlay, overlay_image, remove_overlay, update_overlay

RES = 10.0
X0, Y0 = 300000.0, 5770000.0  # UTM 31N, near 0.1 E 52.0 N


def _grid(h, w, epsg=32631, x0=X0, y0=Y0):
    x = x0 + RES * (np.arange(w) + 0.5)
    y = y0 - RES * (np.arange(h) + 0.5)
    return x, y, epsg


def _leaflet_centres(img):
    """Lat/lon-free check: each PNG pixel centre in the source CRS, the way Leaflet places
    it (linear in Web Mercator between the overlay's lat/lon bounds)."""
    (s, w), (n, e) = img.bounds
    to_merc = Transformer.from_crs(4326, 3857, always_xy=True)
    mx0, my0 = to_merc.transform(w, s)
    mx1, my1 = to_merc.transform(e, n)
    h, wd = img.shape
    cx = mx0 + (np.arange(wd) + 0.5) * (mx1 - mx0) / wd
    cy = my1 - (np.arange(h) + 0.5) * (my1 - my0) / h
    return np.meshgrid(cx, cy)


def test_every_pixel_within_half_a_pixel_of_its_true_place():
    h, w = 180, 140
    x, y, epsg = _grid(h, w)
    rgb = np.zeros((4, h, w), np.uint8)
    rgb[0] = np.arange(w)[None, :]  # red = column, green = row: each pixel says where it came from
    rgb[1] = np.arange(h)[:, None]
    rgb[3] = 255
    da = xr.DataArray(rgb, dims=("band", "y", "x"), coords={"x": x, "y": y}).rio.write_crs(epsg)
    img = overlay_image(da)
    assert img.kind == "rgb" and img.resampling == "nearest"
    png = np.asarray(Image.open(io.BytesIO(img.png)).convert("RGBA"))
    np.testing.assert_array_equal(png, img.rgba)
    mx, my = _leaflet_centres(img)
    ux, uy = Transformer.from_crs(3857, epsg, always_xy=True).transform(mx, my)
    shown = png[..., 3] == 255
    assert shown.mean() > 0.85
    sx = X0 + RES * (png[..., 0].astype(float) + 0.5)
    sy = Y0 - RES * (png[..., 1].astype(float) + 0.5)
    assert np.abs(ux - sx)[shown].max() <= RES / 2 + 1e-3
    assert np.abs(uy - sy)[shown].max() <= RES / 2 + 1e-3
    # every source pixel of the interior shows up somewhere
    seen = np.zeros((h, w), bool)
    seen[png[..., 1][shown], png[..., 0][shown]] = True
    assert seen[2:-2, 2:-2].mean() > 0.9  # the Mercator grid is a little coarser here


def test_known_coordinate_lands_on_its_pixel():
    lon, lat = 0.15, 52.05
    x_, y_ = Transformer.from_crs(4326, 32631, always_xy=True).transform(lon, lat)
    h, w = 120, 100
    x0 = np.floor(x_ / RES) * RES - 50 * RES
    y0 = np.floor(y_ / RES) * RES + 60 * RES
    x, y, epsg = _grid(h, w, x0=x0, y0=y0)
    vals = np.zeros((h, w), np.float32)
    r, c = int((y0 - y_) // RES), int((x_ - x0) // RES)
    vals[r - 1 : r + 2, c - 1 : c + 2] = 1.0  # 3 x 3 block around the point
    vals[:5] = np.nan
    da = xr.DataArray(vals, dims=("y", "x"), coords={"x": x, "y": y}, name="marker").rio.write_crs(epsg)
    img = overlay_image(da, vmin=0, vmax=1, cmap=["#000000", "#ff0000"])
    (s, wst), (n, e) = img.bounds
    to_merc = Transformer.from_crs(4326, 3857, always_xy=True)
    mx0, my0 = to_merc.transform(wst, s)
    mx1, my1 = to_merc.transform(e, n)
    px, py = to_merc.transform(lon, lat)
    hh, ww = img.shape
    col = int((px - mx0) / (mx1 - mx0) * ww)
    row = int((my1 - py) / (my1 - my0) * hh)
    assert tuple(img.rgba[row, col]) == (255, 0, 0, 255)
    # the marked block's centre lands within half a pixel of the point
    red = (img.rgba[..., 0] == 255) & (img.rgba[..., 3] == 255)
    rr, cc = np.nonzero(red)
    cx = mx0 + (cc.mean() + 0.5) * (mx1 - mx0) / ww
    cy = my1 - (rr.mean() + 0.5) * (my1 - my0) / hh
    ux, uy = Transformer.from_crs(3857, epsg, always_xy=True).transform(cx, cy)
    true_x, true_y = x0 + (c + 0.5) * RES, y0 - (r + 0.5) * RES
    assert abs(ux - true_x) <= RES / 2 and abs(uy - true_y) <= RES / 2
    # no data is transparent
    assert (img.rgba[:3, :, 3] == 0).all()


def test_pixel_budget_downsamples_large_areas():
    h, w = 600, 500
    x, y, epsg = _grid(h, w)
    vals = np.add.outer(np.arange(h), np.arange(w)).astype(np.float32)
    da = xr.DataArray(vals, dims=("y", "x"), coords={"x": x, "y": y}).rio.write_crs(epsg)
    full = overlay_image(da)
    small = overlay_image(da, max_pixels=20_000)
    assert small.shape[0] * small.shape[1] <= 20_000
    assert small.resampling == "average" and small.info["downsampled"]
    # same footprint (to within a coarse pixel)
    for a, b in zip(np.ravel(full.bounds), np.ravel(small.bounds)):
        assert abs(a - b) < 3 * RES * (500 / 140) / 111_000 * 2
    # a very large area is first reduced by an integer factor, then warped
    tiny = overlay_image(da, max_pixels=2_000)
    assert tiny.info["prereduced"] and tiny.shape[0] * tiny.shape[1] <= 2_000


def test_class_map_colours_and_legend():
    h, w = 40, 30
    x, y, epsg = _grid(h, w)
    cls = np.zeros((h, w), np.int16)
    cls[:, 15:] = 2
    cls[:4] = -1  # no class
    da = xr.DataArray(cls, dims=("y", "x"), coords={"x": x, "y": y}, name="classes",
                      attrs={"classes": ["water", "built-up", "forest"],
                             "class_colors": ["#0000ff", "#ff0000", "#00ff00"], "_FillValue": -1}
                      ).rio.write_crs(epsg)
    img = overlay_image(da)
    assert img.kind == "categorical"
    colours = {tuple(p) for p in img.rgba.reshape(-1, 4) if p[3]}
    assert colours == {(0, 0, 255, 255), (0, 255, 0, 255)}
    for name, colour in (("water", "#0000ff"), ("built-up", "#ff0000"), ("forest", "#00ff00")):
        assert name in img.legend and colour in img.legend
    # categories given explicitly win
    img2 = overlay_image(da, categories={0: ("lake", "#123456"), 2: "wood"})
    assert "lake" in img2.legend and "#123456" in img2.legend and "wood" in img2.legend


def test_continuous_legend_and_html():
    html = legend_html(title="similarity", cmap="viridis", vmin=-0.5, vmax=0.75, units="cos")
    assert "similarity" in html and "-0.5" in html and "0.75" in html and "linear-gradient" in html


def test_embedding_colour_overlay_on_a_map(area):
    import ipyleaflet

    _, open_ = area
    da = open_()
    comp, _ = te.project(da, random_state=0)
    rgb = te.to_rgb(comp)
    m = ipyleaflet.Map(center=(52.05, 0.2), zoom=12)
    n0 = len(m.layers)
    layer = overlay(rgb, m=m, name="PCA")
    assert isinstance(layer, ipyleaflet.ImageOverlay) and layer.url.startswith("data:image/png;base64,")
    assert len(m.layers) == n0 + 1
    (s, w), (n, e) = layer.bounds
    assert 51.98 < s < n < 52.12 and 0.08 < w < e < 0.32  # the bbox, on its UTM grid
    # no legend for embedding colour; a legend for a value map, updated in place
    sim = (comp.isel(component=0) / 10).rename("similarity").assign_attrs(long_name="similarity")
    layer2 = overlay(sim, m=m)
    assert len(m.controls) >= 1 and any("similarity" in getattr(getattr(c, "widget", None), "value", "")
                                         for c in m.controls)
    url = layer2.url
    update_overlay(layer2, sim, cmap="magma")
    assert layer2.url != url
    remove_overlay(m, layer2)
    assert layer2 not in m.layers and not any("similarity" in getattr(getattr(c, "widget", None), "value", "")
                                               for c in m.controls)


def test_overlay_errors():
    x, y, epsg = _grid(10, 10)
    no_crs = xr.DataArray(np.zeros((10, 10), np.float32), dims=("y", "x"), coords={"x": x, "y": y})
    with pytest.raises(ValueError, match="no CRS"):
        overlay_image(no_crs)
    comps = xr.DataArray(np.zeros((3, 10, 10), np.float32), dims=("component", "y", "x"),
                         coords={"x": x, "y": y}).rio.write_crs(epsg)
    with pytest.raises(ValueError, match="to_rgb"):
        overlay_image(comps)
