# %% [markdown]
# # Quickstart: TESSERA embeddings in five minutes
#
# ## Overview
# TESSERA gives every 10 m pixel on Earth a 128-number *embedding* that summarises a
# year of Sentinel-1 and Sentinel-2 observations. Pixels with similar embeddings look and
# behave alike through the year. This notebook opens the built-in **demo scene** (synthetic
# farmland near Cambridge, two years, no network needed) and shows the basic moves:
#
# 1. open embeddings as an `xarray.DataArray` and read its schema;
# 2. see them as false colour with a principal component analysis (PCA);
# 3. put the colours on a web map;
# 4. colour another year with the same projection, so colours mean the same thing;
# 5. look at every pixel at once in a projection scatter.
#
# ## Prerequisites
# - Python and a little NumPy/xarray.
# - Nothing to download: the demo scene is generated on first use (about half a minute on
#   two cores, 0.4 GB) and cached.
# - Basemap tiles need internet; without it the maps show the overlays on a grey background.
# - Running time: about 30 s once the demo scene is cached (a first launch builds it: about a
#   minute more).

# %% [markdown]
# ## Imports
# The first two lines load BokehJS and Panel's JavaScript from the installed packages (not
# from a CDN), so the projection scatter also draws offline, on Binder and in Voila. They
# have to run before anything imports `hvplot`. The JavaScript runs in the page but is not
# kept in the cell's output, so the notebook stays small when it is saved. For the same
# reason the figures are kept as JPEG, a tenth of the size of a PNG of the same map.

# %%
import tessera_explore as te
te.load_bokeh_js()

import leafmap.leafmap as leafmap
import matplotlib.pyplot as plt
from matplotlib_inline.backend_inline import set_matplotlib_formats
set_matplotlib_formats("jpeg", dpi=80, pil_kwargs={"quality": 75})  # small saved figures: a map ~60 kB (PNG ~500 kB)
import numpy as np
import panel as pn

# %% [markdown]
# ## 1. Open the demo scene
# `open_demo` returns the same kind of array as `te.open_embeddings` does for downloaded
# tiles (and `te.embed_area` for live embeddings): dims `(band, y, x)`, 128 bands,
# coordinates in metres of the local UTM zone, and NaN where there is no data (water).
# It is lazy: nothing is read from disk until it is needed.

# %%
da = te.tutorial.open_demo()  # 2024; open_demo(year=2023) is the other year
da

# %% [markdown]
# The schema lives in the coordinates and attributes: the CRS (written with rioxarray), the
# year, and where the numbers come from. `te.validate` checks an array against the schema
# and raises an error naming every problem it finds.

# %%
te.validate(da)
print("dims:      ", da.dims, dict(da.sizes))
print("CRS:       ", da.rio.crs, "| pixel size:", da.rio.resolution(), "m")
print("year:      ", int(da.year))
for key in ("dataset_version", "dataset_variant", "model_generation", "source"):
    print(f"{key + ':':<12}", da.attrs[key])

# %% [markdown]
# One pixel is one 128-number vector. Water pixels are all NaN (never zero vectors), so
# they drop out of every computation.

# %%
pixel = da.isel(y=600, x=700).values
print(pixel.shape, np.round(pixel[:8], 2), "...")

# %% [markdown]
# ## 2. See it: PCA false colour
# Three numbers per pixel can be shown as red, green and blue. `te.project` projects every
# pixel, block by block, onto the three directions in which the embeddings vary most. With
# `from_stats=True` it takes that PCA from the statistics the store publishes for its
# zone (no pass over the pixels to fit it); without it, it fits the PCA on a spatially
# stratified sample of the area's pixels. `te.to_rgb` stretches the components to colours
# (RGBA, transparent where there is no data). Fields, woods, towns and water stand out
# because their embeddings differ.

# %%
comps, pca = te.project(da, from_stats=True)
rgb = te.to_rgb(comps)
print("components:", dict(comps.sizes), "| explained variance:", np.round(pca.explained_variance_ratio_, 3))
print("colours:   ", dict(rgb.sizes), rgb.dtype, "| bands:", rgb.band.values.tolist())
print("share of pixels with data:", float((rgb.sel(band="a") > 0).mean().round(3)))
assert rgb.dims == ("band", "y", "x") and rgb.dtype == np.uint8

# %% [markdown]
# A static picture (it stays visible in a notebook saved without widget state):

# %%
fig, ax = plt.subplots(figsize=(9, 7.5))
ax.imshow(rgb.transpose("y", "x", "band").values)
ax.set_title("Demo scene 2024, PCA false colour")
ax.set_axis_off()

# %% [markdown]
# ## 3. On a map
# `te.overlay` reprojects any 2-D or RGB array onto Web Mercator and adds it to an
# ipyleaflet map as a PNG (no tile server needed). `leafmap.Map` is an `ipyleaflet.Map`,
# so any ipyleaflet map works too. Use the layer control (top right) to switch layers.

# %%
west, south, east, north = te.tutorial.DEMO_BBOX
m = leafmap.Map(center=((south + north) / 2, (west + east) / 2), zoom=12, draw_control=False,
                toolbar_control=False, layers_control=True)
layer_2024 = te.overlay(rgb, m=m, name="PCA colour 2024")
m

# %% [markdown]
# ## 4. Another year, the same colours
# A projection fitted once can be applied to other tiles and years with `fitted=`: it is
# not refitted, and its colour stretch comes along, so a colour means the same embedding
# in both years. Crop rotation shows up as fields that change colour; woods and towns keep
# theirs.

# %%
da_2023 = te.tutorial.open_demo(year=2023)
comps_2023, _ = te.project(da_2023, fitted=pca)
rgb_2023 = te.to_rgb(comps_2023)
assert rgb_2023.attrs["stretch_low"] == rgb.attrs["stretch_low"]  # one colour scale for both years
layer_2023 = te.overlay(rgb_2023, m=m, name="PCA colour 2023")
print("layers on the map above:", [layer.name for layer in m.layers])

# %%
fig, axes = plt.subplots(1, 2, figsize=(14, 6))
for ax, image, year in zip(axes, (rgb_2023, rgb), (2023, 2024)):
    ax.imshow(image.transpose("y", "x", "band").values)
    ax.set_title(f"{year}, one PCA for both years")
    ax.set_axis_off()

# %% [markdown]
# ## 5. Every pixel at once: the projection scatter
# Each of the 1.5 million pixels with data is a point at its first two PCA components,
# coloured as on the map. Similar land cover forms clusters. The browser never receives
# the points: datashader aggregates each view into an image in Python, so zooming (mouse
# wheel) re-renders sharply. `pn.ipywidget` makes the HoloViews plot an ipywidget that can
# sit next to a map in an `ipywidgets.HBox`.

# %%
plot = te.scatter(comps)
print(f"{len(plot.points):,} points")
pn.ipywidget(plot)

# %% [markdown]
# The same aggregation as a static image:

# %%
from tessera_explore.widgets.scatter import scatter_image

x0, y0, x1, y1 = plot.points.bounds()
fig, ax = plt.subplots(figsize=(6, 6))
ax.imshow(scatter_image(plot.points, width=400, height=400), extent=(x0, x1, y0, y1), aspect="auto")
ax.set_xlabel("PCA 1")
ax.set_ylabel("PCA 2");

# %% [markdown]
# ## The explorer
# `te.explore(da)` opens everything above in one app: the false-colour map, the projection
# scatter linked to it, and the few-shot labelling of `03_labelling_and_evaluation.ipynb`.
#
# - Add a class (type a name, press *add class*), pick it, and click the map: each click
#   adds a label, the classifier retrains off the main thread and the class map redraws.
# - *similar* mode colours the pixels like the clicked one (threshold slider);
#   *change* mode shows how much each pixel changed between 2023 and 2024.
# - A box or lasso in the scatter highlights those pixels on the map; a click on the map
#   marks its pixel in the scatter.
# - The demo scene is about as hard as real land cover: mixed pixels along field edges,
#   crops that resemble each other and grassland, variation within each class. So the
#   classifier is unsure in places: *hatch low trust* greys out the pixels not to trust
#   (with the six labels below, about one pixel in fifteen, along field edges and on the
#   classes nobody labelled yet), and *suggest* steps through the pixels whose labels would
#   help most.
# - Labels are saved to `tessera_labels.geojson` beside this notebook after every click;
#   opening the explorer on that file again brings them back. *export maps* writes the
#   class, confidence, similarity and change maps as Cloud-Optimised GeoTIFFs.

# %%
app = te.explore(da, labels="tessera_labels.geojson", classes={"forest": "#1f6b2e", "cereal": "#e3c75a"})
app

# %% [markdown]
# Everything the mouse does is also a method of the app. The next cell clicks three forest
# and three cereal pixels (the demo scene knows its true land cover), so this notebook also
# runs unattended; when the label file holds labels already (a second run), it leaves them
# as they are.

# %%
from pyproj import Transformer

from tessera_explore.testing import CLASSES, scene_classes
from tessera_explore.tutorial import DEMO_SEED

to_lonlat = Transformer.from_crs(da.rio.crs, "EPSG:4326", always_xy=True)
lon, lat = to_lonlat.transform(*np.meshgrid(da.x.values[100::50], da.y.values[100::50]))
truth = scene_classes(lon, lat, 2024, seed=DEMO_SEED)
if len(app.labels) == 0:
    for name in ["forest", "cereal"]:
        app.state.active_class = name
        for i in np.flatnonzero(truth.ravel() == CLASSES.index(name))[:3]:
            print(app.click(lon.ravel()[i], lat.ravel()[i]))
app.wait()
print(app.state.status)
assert app.state.error == "" and app.class_map is not None

# %% [markdown]
# ## Your own area
# With network access, download the tiles of an area and open them the same way:
#
# ```python
# tiles = te.fetch_tiles((0.05, 52.15, 0.25, 52.25), 2024, dest="tessera-data")
# da = te.open_embeddings("tessera-data", bbox=(0.05, 52.15, 0.25, 52.25), year=2024)
# ```
#
# ## Summary
# - `te.tutorial.open_demo()` and `te.open_embeddings()` return one lazy DataArray schema;
#   `te.validate` checks it. No-data pixels are NaN, never zero vectors.
# - `te.project` + `te.to_rgb` give false colour; `fitted=` reuses a projection (and its
#   colours) on another year or tile.
# - `te.overlay` puts any map on a leafmap/ipyleaflet map; `te.scatter` shows every pixel's
#   projection, zoomable, as an ipywidget through `pn.ipywidget`.
# - Next: `02_projections.ipynb` compares PCA with UMAP and reuses one projection across years;
#   `03_labelling_and_evaluation.ipynb` turns a few labelled points into a land-cover map and
#   scores it honestly; `04_real_data.ipynb` opens a published store; `05_live_encoder.ipynb`
#   embeds an area live from Sentinel-1 and Sentinel-2.
