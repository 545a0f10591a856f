# %% [markdown]
# # Projections: PCA, UMAP and one colour scale across years and zones
#
# ## Overview
# 128 numbers per pixel cannot be looked at directly; a *projection* squeezes them into two
# or three that can (as a scatter, or as red, green and blue). This notebook compares the
# two projections `te.project` offers and shows how to keep colours comparable:
#
# 1. PCA (linear, fast, deterministic) against UMAP (non-linear, slower, separates clusters
#    better) on the same window of the demo scene;
# 2. the projection scatter (`te.scatter`): every pixel as a point, zoomable;
# 3. one fitted projection applied to another year and to a tile in another UTM zone
#    (`fitted=`), so a colour means the same embedding everywhere.
#
# ## Prerequisites
# - `01_quickstart.ipynb` (the demo scene, `te.project`, `te.to_rgb`).
# - Running time: about two minutes on two cores, most of it UMAP; everything is offline.

# %% [markdown]
# ## Imports
# BokehJS is loaded first, from the installed packages, before anything imports hvplot, so the
# scatter draws offline; it is not kept in the saved notebook (`te.load_bokeh_js`).

# %%
import tessera_explore as te
te.load_bokeh_js()

import tempfile

import matplotlib.pyplot as plt
from matplotlib_inline.backend_inline import set_matplotlib_formats
set_matplotlib_formats("jpeg", dpi=80, pil_kwargs={"quality": 75})  # small saved figures: a map ~60 kB (PNG ~500 kB)
import numpy as np
import panel as pn

from tessera_explore.testing import make_tiles
from tessera_explore.widgets.scatter import scatter_image

# %% [markdown]
# ## 1. A window of the demo scene
# UMAP's cost grows with the number of pixels it has to place (on two busy cores, about 100 s
# for 10,000 pixels), so the comparison uses an 800 x 800 m window (80 x 80 pixels) of the 2024
# demo scene. On a whole scene, give UMAP more cores or a coarser sample.

# %%
da = te.tutorial.open_demo(2024)
window = da.isel(y=slice(440, 520), x=slice(540, 620))
print(dict(window.sizes), "| pixels with data:", int(np.isfinite(window.isel(band=0)).sum()))

# %% [markdown]
# ## 2. PCA against UMAP
# PCA keeps the directions in which the embeddings vary most: linear, fast, the same answer
# every time, and it can be fitted once and applied anywhere. UMAP keeps *neighbourhoods*:
# pixels that are close in 128 dimensions stay close in 2, so classes separate into tighter
# clusters, but distances between clusters mean little and fitting takes longer. Both are fitted
# on a spatially stratified sample (`sample=`); a small one keeps UMAP quick here.

# %%
comps_pca, pca = te.project(window, method="pca", n_components=2, random_state=0)
comps_umap, umap = te.project(window, method="umap", sample=1500, random_state=0, n_epochs=50, n_neighbors=10)
print("PCA: ", dict(comps_pca.sizes), "explained variance", np.round(pca.explained_variance_ratio_, 3))
print("UMAP:", dict(comps_umap.sizes), "fitted on", umap.n_samples_fit_, "pixels")
assert comps_umap.dims == comps_pca.dims == ("component", "y", "x")

# %% [markdown]
# Side by side as scatters (every pixel of the window, coloured by its PCA false colour, so the
# same pixel has the same colour in both panels):

# %%
rgb = te.to_rgb(te.project(window, random_state=0)[0])  # three PCA components as colours
fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
for ax, comps, title in zip(axes, (comps_pca, comps_umap), ("PCA", "UMAP")):
    points = te.scatter(comps, rgb=rgb).points
    x0, y0, x1, y1 = points.bounds()
    ax.imshow(scatter_image(points, width=300, height=300), extent=(x0, x1, y0, y1), aspect="auto")
    ax.set_title(f"{title}: {len(points):,} pixels")
    ax.set_xlabel(f"{title} 1")
    ax.set_ylabel(f"{title} 2")

# %% [markdown]
# ## 3. The linked scatter
# `te.scatter` returns a zoomable HoloViews plot: datashader aggregates the points into an image
# for each view in Python, so the browser never receives a million points. Its `.points.index`
# maps every point back to its map pixel, which is how the explorer links a box or lasso in the
# scatter to the map. `pn.ipywidget` turns it into an ipywidget.

# %%
plot = te.scatter(comps_umap, rgb=rgb)
rows, cols = np.unravel_index(plot.points.index[:3], (window.sizes["y"], window.sizes["x"]))
print("first points come from map pixels (row, col):", list(zip(rows.tolist(), cols.tolist())))
pn.ipywidget(plot)

# %% [markdown]
# ## 4. One projection across years
# Fit once, apply with `fitted=`: the projection is not refitted and its colour stretch comes
# along, so 2023 and 2024 share one colour scale. Fields that changed crop change colour.

# %%
comps_24, pca_24 = te.project(da, random_state=0)
comps_23, _ = te.project(te.tutorial.open_demo(2023), fitted=pca_24)
rgb_24, rgb_23 = te.to_rgb(comps_24), te.to_rgb(comps_23)
assert rgb_23.attrs["stretch_low"] == rgb_24.attrs["stretch_low"]
fig, axes = plt.subplots(1, 2, figsize=(14, 6))
for ax, image, year in zip(axes, (rgb_23, rgb_24), (2023, 2024)):
    ax.imshow(image.transpose("y", "x", "band").values)
    ax.set_title(f"{year}, one PCA fitted on 2024")
    ax.set_axis_off()

# %% [markdown]
# ## 5. One projection across UTM zones
# Every tile is stored in the UTM zone it lies in, and an area across a zone boundary opens as
# one array per zone. The demo scene lies in one zone, so here two small synthetic tiles either
# side of 6 E (zones 31 and 32; `tessera_explore.testing.make_tiles`) stand in. The PCA fitted in
# the western zone colours the eastern one: same version, same colour scale.

# %%
folder = tempfile.mkdtemp(prefix="tessera-zones-")
make_tiles(folder, tiles=[(5.95, 52.05), (6.05, 52.05)], years=[2024], shape=(200, 150), seed=2,
           version=da.attrs["dataset_version"])
west_zone = te.open_embeddings(folder, bbox=(5.9, 52.0, 5.999, 52.1), year=2024)
east_zone = te.open_embeddings(folder, bbox=(6.001, 52.0, 6.1, 52.1), year=2024)
comps_w, pca_w = te.project(west_zone, random_state=0)
comps_e, _ = te.project(east_zone, fitted=pca_w)
print("west:", west_zone.rio.crs, "| east:", east_zone.rio.crs)
fig, axes = plt.subplots(1, 2, figsize=(9, 5))
for ax, comps, crs in zip(axes, (comps_w, comps_e), (west_zone.rio.crs, east_zone.rio.crs)):
    ax.imshow(te.to_rgb(comps).transpose("y", "x", "band").values)
    ax.set_title(str(crs))
    ax.set_axis_off()
assert west_zone.rio.crs != east_zone.rio.crs

# %% [markdown]
# ## Summary
# - `te.project(da, method="pca")` is fast and deterministic; `method="umap"` separates land
#   cover into tighter clusters but costs more (keep `sample=` small, or use a window).
# - `te.scatter` shows every pixel's projection, zoomable; `.points.index` links points to
#   map pixels, which the explorer uses for box and lasso selections.
# - `fitted=` applies one projection, with its colour stretch, to other years and other UTM
#   zones, so colours stay comparable.
# - Next: `03_labelling_and_evaluation.ipynb` turns labels into maps and scores them.
