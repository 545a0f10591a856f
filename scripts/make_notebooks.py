"""Write the tutorial notebooks from their cell sources (outputs stripped).

Keeping the sources here makes notebook diffs readable; run
``.venv/bin/python scripts/make_notebooks.py`` after editing.  CI executes every
notebook (``pytest --nbmake notebooks``), so each one checks what it shows with a few
``assert`` lines and runs offline in about a minute on two cores.
"""

from __future__ import annotations

import pathlib

import nbformat as nbf

HERE = pathlib.Path(__file__).resolve().parent.parent / "notebooks"


def md(s: str):
    return nbf.v4.new_markdown_cell(s.strip("\n"))


def code(s: str):
    return nbf.v4.new_code_cell(s.strip("\n"))


def build(name: str, cells: list):
    """The notebook ``name`` from its cells: no outputs, stable cell ids."""
    nb = nbf.v4.new_notebook()
    nb.cells = cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, c in enumerate(nb.cells):
        c["id"] = f"{name.split('_')[0]}-{i:02d}"
    nbf.validate(nb)
    return nb


def write(name: str, cells: list) -> None:
    nbf.write(build(name, cells), HERE / name)


QUICKSTART = [
    md("""
# Quickstart: TESSERA embeddings in five minutes

## Overview
TESSERA gives every 10 m pixel on Earth a 128-number *embedding* that summarises a
year of Sentinel-1 and Sentinel-2 observations. Pixels with similar embeddings look and
behave alike through the year. This notebook opens the built-in **demo scene** (synthetic
farmland near Cambridge, two years, no network needed) and shows the basic moves:

1. open embeddings as an `xarray.DataArray` and read its schema;
2. see them as false colour with a principal component analysis (PCA);
3. put the colours on a web map;
4. colour another year with the same projection, so colours mean the same thing;
5. look at every pixel at once in a projection scatter.

## Prerequisites
- Python and a little NumPy/xarray.
- Nothing to download: the demo scene is generated on first use (about half a minute on
  two cores, 0.4 GB) and cached.
- Basemap tiles need internet; without it the maps show the overlays on a grey background.
- Running time: about 30 s once the demo scene is cached (a first launch builds it: about a
  minute more).
"""),
    md("""
## Imports
The first two lines load BokehJS and Panel's JavaScript *inline* (from the installed
packages, not from a CDN), so the projection scatter also draws offline, on Binder and in
Voila. They have to run before anything imports `hvplot`.
"""),
    code("""
import holoviews as hv
hv.extension("bokeh", inline=True, logo=False)

import leafmap.leafmap as leafmap
import matplotlib.pyplot as plt
import numpy as np
import panel as pn

import tessera_explore as te
"""),
    md("""
## 1. Open the demo scene
`open_demo` returns the same kind of array as `te.open_embeddings` does for downloaded
tiles (and `te.embed_area` for live embeddings): dims `(band, y, x)`, 128 bands,
coordinates in metres of the local UTM zone, and NaN where there is no data (water).
It is lazy: nothing is read from disk until it is needed.
"""),
    code("""
da = te.tutorial.open_demo()  # 2024; open_demo(year=2023) is the other year
da
"""),
    md("""
The schema lives in the coordinates and attributes: the CRS (written with rioxarray), the
year, and where the numbers come from. `te.validate` checks an array against the schema
and raises an error naming every problem it finds.
"""),
    code("""
te.validate(da)
print("dims:      ", da.dims, dict(da.sizes))
print("CRS:       ", da.rio.crs, "| pixel size:", da.rio.resolution(), "m")
print("year:      ", int(da.year))
for key in ("dataset_version", "dataset_variant", "model_generation", "source"):
    print(f"{key + ':':<12}", da.attrs[key])
"""),
    md("""
One pixel is one 128-number vector. Water pixels are all NaN (never zero vectors), so
they drop out of every computation.
"""),
    code("""
pixel = da.isel(y=600, x=700).values
print(pixel.shape, np.round(pixel[:8], 2), "...")
"""),
    md("""
## 2. See it: PCA false colour
Three numbers per pixel can be shown as red, green and blue. `te.project` projects every
pixel, block by block, onto the three directions in which the embeddings vary most. With
`from_stats=True` it takes that PCA from the statistics the store publishes for its
zone (no pass over the pixels to fit it); without it, it fits the PCA on a spatially
stratified sample of the area's pixels. `te.to_rgb` stretches the components to colours
(RGBA, transparent where there is no data). Fields, woods, towns and water stand out
because their embeddings differ.
"""),
    code("""
comps, pca = te.project(da, from_stats=True)
rgb = te.to_rgb(comps)
print("components:", dict(comps.sizes), "| explained variance:", np.round(pca.explained_variance_ratio_, 3))
print("colours:   ", dict(rgb.sizes), rgb.dtype, "| bands:", rgb.band.values.tolist())
print("share of pixels with data:", float((rgb.sel(band="a") > 0).mean().round(3)))
assert rgb.dims == ("band", "y", "x") and rgb.dtype == np.uint8
"""),
    md("""
A static picture (it stays visible in a notebook saved without widget state):
"""),
    code("""
fig, ax = plt.subplots(figsize=(9, 7.5))
ax.imshow(rgb.transpose("y", "x", "band").values)
ax.set_title("Demo scene 2024, PCA false colour")
ax.set_axis_off()
"""),
    md("""
## 3. On a map
`te.overlay` reprojects any 2-D or RGB array onto Web Mercator and adds it to an
ipyleaflet map as a PNG (no tile server needed). `leafmap.Map` is an `ipyleaflet.Map`,
so any ipyleaflet map works too. Use the layer control (top right) to switch layers.
"""),
    code("""
west, south, east, north = te.tutorial.DEMO_BBOX
m = leafmap.Map(center=((south + north) / 2, (west + east) / 2), zoom=12, draw_control=False,
                toolbar_control=False, layers_control=True)
layer_2024 = te.overlay(rgb, m=m, name="PCA colour 2024")
m
"""),
    md("""
## 4. Another year, the same colours
A projection fitted once can be applied to other tiles and years with `fitted=`: it is
not refitted, and its colour stretch comes along, so a colour means the same embedding
in both years. Crop rotation shows up as fields that change colour; woods and towns keep
theirs.
"""),
    code("""
da_2023 = te.tutorial.open_demo(year=2023)
comps_2023, _ = te.project(da_2023, fitted=pca)
rgb_2023 = te.to_rgb(comps_2023)
assert rgb_2023.attrs["stretch_low"] == rgb.attrs["stretch_low"]  # one colour scale for both years
layer_2023 = te.overlay(rgb_2023, m=m, name="PCA colour 2023")
print("layers on the map above:", [layer.name for layer in m.layers])
"""),
    code("""
fig, axes = plt.subplots(1, 2, figsize=(14, 6))
for ax, image, year in zip(axes, (rgb_2023, rgb), (2023, 2024)):
    ax.imshow(image.transpose("y", "x", "band").values)
    ax.set_title(f"{year}, one PCA for both years")
    ax.set_axis_off()
"""),
    md("""
## 5. Every pixel at once: the projection scatter
Each of the 1.5 million pixels with data is a point at its first two PCA components,
coloured as on the map. Similar land cover forms clusters. The browser never receives
the points: datashader aggregates each view into an image in Python, so zooming (mouse
wheel) re-renders sharply. `pn.ipywidget` makes the HoloViews plot an ipywidget that can
sit next to a map in an `ipywidgets.HBox`.
"""),
    code("""
plot = te.scatter(comps)
print(f"{len(plot.points):,} points")
pn.ipywidget(plot)
"""),
    md("""
The same aggregation as a static image:
"""),
    code("""
from tessera_explore.widgets.scatter import scatter_image

x0, y0, x1, y1 = plot.points.bounds()
fig, ax = plt.subplots(figsize=(6, 6))
ax.imshow(scatter_image(plot.points, width=400, height=400), extent=(x0, x1, y0, y1), aspect="auto")
ax.set_xlabel("PCA 1")
ax.set_ylabel("PCA 2");
"""),
    md("""
## The explorer
`te.explore(da)` opens everything above in one app: the false-colour map, the projection
scatter linked to it, and the few-shot labelling of `02_labelling.ipynb`.

- Add a class (type a name, press *add class*), pick it, and click the map: each click
  adds a label, the classifier retrains off the main thread and the class map redraws.
- *similar* mode colours the pixels like the clicked one (threshold slider);
  *change* mode shows how much each pixel changed between 2023 and 2024.
- A box or lasso in the scatter highlights those pixels on the map; a click on the map
  marks its pixel in the scatter.
- Labels are saved to `tessera_labels.geojson` beside this notebook after every click;
  opening the explorer on that file again brings them back. *export maps* writes the
  class, confidence, similarity and change maps as Cloud-Optimised GeoTIFFs.
"""),
    code("""
app = te.explore(da, labels="tessera_labels.geojson", classes={"forest": "#1f6b2e", "cereal": "#e3c75a"})
app
"""),
    md("""
Everything the mouse does is also a method of the app. The next cell clicks three forest
and three cereal pixels (the demo scene knows its true land cover), so this notebook also
runs unattended; when the label file holds labels already (a second run), it leaves them
as they are.
"""),
    code("""
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
"""),
    md("""
## Your own area
With network access, download the tiles of an area and open them the same way:

```python
tiles = te.fetch_tiles((0.05, 52.15, 0.25, 52.25), 2024, dest="tessera-data")
da = te.open_embeddings("tessera-data", bbox=(0.05, 52.15, 0.25, 52.25), year=2024)
```

## Summary
- `te.tutorial.open_demo()` and `te.open_embeddings()` return one lazy DataArray schema;
  `te.validate` checks it. No-data pixels are NaN, never zero vectors.
- `te.project` + `te.to_rgb` give false colour; `fitted=` reuses a projection (and its
  colours) on another year or tile.
- `te.overlay` puts any map on a leafmap/ipyleaflet map; `te.scatter` shows every pixel's
  projection, zoomable, as an ipywidget through `pn.ipywidget`.
- Next: `02_labelling.ipynb` turns a few labelled points into a land-cover map, and
  `03_live_embedding.ipynb` embeds an area live from Sentinel-1 and Sentinel-2.
"""),
]


LABELLING = [
    md("""
# Few-shot labelling: a land-cover map from a few dozen points

## Overview
Embeddings make a small number of labels go a long way: pixels of one land cover sit
close together in the 128-dimensional space, so a classifier trained on a handful of
points per class can map a whole area. This notebook does it in plain Python on the demo
scene, with the same functions the interactive explorer calls on every click:

1. keep labels in a `te.LabelStore` (saved to a file after every change);
2. train a classifier and map the area with class and confidence (`te.fit_classifier`,
   `te.predict_map`);
3. score it on labels it did not see, with spatial cross-validation (`te.evaluate`);
4. find pixels like one pixel (`te.similarity`), what changed between two years
   (`te.change`), and groups without any labels (`te.cluster`);
5. export the maps as Cloud-Optimised GeoTIFFs with provenance, and the labels.

The demo scene is synthetic, so its true land cover is known everywhere
(`tessera_explore.testing`): the labels below are placed where the truth says, and the
maps are checked against it.

## Prerequisites
- `01_quickstart.ipynb` (the demo scene and the embeddings schema).
- Some scikit-learn vocabulary helps (classifier, cross-validation, F1).
- Running time: about 20 s; everything is offline.
"""),
    md("## Imports"),
    code("""
import pathlib
import shutil
import tempfile

import leafmap.leafmap as leafmap
import ipyleaflet
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import rasterio
from matplotlib.colors import ListedColormap
from pyproj import Transformer

import tessera_explore as te
from tessera_explore.testing import CLASS_COLORS, CLASSES, scene_classes
from tessera_explore.tutorial import DEMO_BBOX, DEMO_SEED
"""),
    md("""
## 1. The area
Open the demo scene (2024) and *prepare* it: `te.prepare` reads the embeddings once
into memory as int8 codes (about 220 MB for the two tiles here). Every function below
accepts the prepared area in place of the DataArray; repeated calls then skip reading the
tiles, which is what makes refitting after every click instant in the explorer.
"""),
    code("""
da = te.tutorial.open_demo()
area = te.prepare(da)
area
"""),
    md("""
## 2. Where to put labels
In real use you click on a map or load a label file. Here the synthetic scene tells us the
land cover at any lon/lat (`scene_classes`), so we pick points deterministically: a
lattice over the area, kept only where the same class holds about 30 m away in every
direction (well inside a field, not on its edge), then five random points per class.
Water has no embeddings (no data), so it gets no labels.
"""),
    code("""
def true_classes(lon, lat, year=2024):
    \"\"\"The demo scene's true land-cover index (into CLASSES) at lon/lat points.\"\"\"
    return scene_classes(lon, lat, year, seed=DEMO_SEED)


west, south, east, north = DEMO_BBOX
lon, lat = np.meshgrid(np.linspace(west + 0.005, east - 0.005, 300), np.linspace(south + 0.005, north - 0.005, 200))
truth_at = true_classes(lon, lat)
interior = np.ones(truth_at.shape, bool)
for dlon, dlat in ((4e-4, 0), (-4e-4, 0), (0, 2.5e-4), (0, -2.5e-4)):
    interior &= true_classes(lon + dlon, lat + dlat) == truth_at

NAMES = ["built-up", "forest", "grassland", "cereal", "maize", "rapeseed"]
PER_CLASS = 5
rng = np.random.default_rng(0)
points = []
for name in NAMES:
    candidates = np.flatnonzero(interior & (truth_at == CLASSES.index(name)))
    for i in rng.choice(candidates, PER_CLASS, replace=False):
        points.append((float(lon.flat[i]), float(lat.flat[i]), name))
print(len(points), "points, e.g.", points[:2])
"""),
    md("""
## 3. A label store
A `LabelStore` holds the classes (with colours) and the labels in lon/lat. It writes its
GeoJSON file after every change (to a temporary file, then renamed), so a crash never
loses a click, and it records the dataset version the labels were drawn on: label files
of another version are refused later, because their embeddings live in another space.
"""),
    code("""
workdir = pathlib.Path(tempfile.mkdtemp(prefix="tessera-labelling-"))
store = te.LabelStore(
    workdir / "labels.geojson",
    classes={name: CLASS_COLORS[CLASSES.index(name)] for name in NAMES},
    dataset_version=da.attrs["dataset_version"],
    year=int(da.year),
)
for p_lon, p_lat, name in points:
    store.add_point(p_lon, p_lat, name)
store
"""),
    md("""
Every change can be undone and redone, and the file follows:
"""),
    code("""
store.undo()
print("after undo:", len(store), "labels;", "file:", pathlib.Path(store.path).name)
store.redo()
print("after redo:", len(store), "labels")
assert te.LabelStore.open(store.path).counts() == store.counts() == {name: PER_CLASS for name in NAMES}
store.to_geodataframe().head()
"""),
    md("""
## 4. Train a classifier and map the area
`te.fit_classifier` samples the embeddings under the labels and fits a classifier
(default: cosine k-nearest neighbours, k = 5; also `"logreg"`, `"rf"` or any
scikit-learn classifier). `te.predict_map` applies it to every pixel and returns a
Dataset with `class` (index into `attrs["classes"]`, 255 = no data) and `confidence`
(the probability of the winning class).
"""),
    code("""
clf = te.fit_classifier(area, store)
pred = te.predict_map(area, clf)
print("classes:", pred.attrs["classes"])
pred
"""),
    md("""
On a map, with the labels on top (basemap tiles need internet):
"""),
    code("""
m = leafmap.Map(center=((south + north) / 2, (west + east) / 2), zoom=12, draw_control=False,
                toolbar_control=False, layers_control=True)
te.overlay(pred["confidence"], m=m, name="confidence", cmap="magma", vmin=0, vmax=1)
te.overlay(pred["class"], m=m, name="land cover (predicted)", opacity=0.8)
m.add(ipyleaflet.GeoJSON(
    data=store.to_geojson(), name="labels",
    point_style={"radius": 5, "weight": 1, "color": "white", "fillOpacity": 1},
    style_callback=lambda feature: {"fillColor": feature["properties"]["color"]},
))
m
"""),
    md("""
And as static pictures:
"""),
    code("""
names = list(pred.attrs["classes"])
cmap = ListedColormap(pred.attrs["colors"])
cls_map = np.ma.masked_equal(pred["class"].values, 255)
fig, axes = plt.subplots(1, 2, figsize=(15, 6))
im = axes[0].imshow(cls_map, cmap=cmap, vmin=-0.5, vmax=len(names) - 0.5, interpolation="nearest")
cbar = fig.colorbar(im, ax=axes[0], ticks=range(len(names)))
cbar.ax.set_yticklabels(names)
to_xy = Transformer.from_crs("EPSG:4326", da.rio.crs, always_xy=True)
px, py = to_xy.transform([p[0] for p in points], [p[1] for p in points])
col = (np.asarray(px) - float(da.x[0])) / 10
row = (float(da.y[0]) - np.asarray(py)) / 10
axes[0].scatter(col, row, s=18, c="white", edgecolors="black", linewidths=0.6)
axes[0].set_title(f"predicted land cover ({len(store)} labels, white dots)")
im = axes[1].imshow(pred["confidence"].values, cmap="magma", vmin=0, vmax=1)
fig.colorbar(im, ax=axes[1], label="confidence")
axes[1].set_title("confidence")
for ax in axes:
    ax.set_axis_off()
"""),
    md("""
Because the scene is synthetic, the whole map can be checked against the truth (every
4th pixel, on the classes we labelled):
"""),
    code("""
to_lonlat = Transformer.from_crs(da.rio.crs, "EPSG:4326", always_xy=True)
gx, gy = np.meshgrid(da.x.values[::4], da.y.values[::4])
glon, glat = to_lonlat.transform(gx, gy)
truth_2024 = true_classes(glon, glat, 2024)
truth_names = np.asarray(CLASSES)[truth_2024]
predicted = pred["class"].values[::4, ::4]
scored = (predicted != 255) & np.isin(truth_names, NAMES)
agreement = float((np.asarray(names)[predicted[scored]] == truth_names[scored]).mean())
print(f"agreement with the true land cover: {agreement:.1%} of {scored.sum():,} pixels")
assert agreement > 0.8
"""),
    md("""
## 5. How good is it, honestly?
Neighbouring pixels are near copies, so testing on pixels next to training pixels
flatters a classifier. `te.evaluate` splits by label, and with `cv="spatial"` it assigns
whole `block_size` squares of labels to folds, so every test label is at least a block
away from most training labels. This is what to report when the truth is unknown.
"""),
    code("""
ev = te.evaluate(area, store, cv="spatial", block_size=2000)
print(ev)
chance = 1 / len(NAMES)
assert ev.accuracy > 2 * chance, ev
ev.confusion
"""),
    code("""
ev_logreg = te.evaluate(area, store, model="logreg", cv="spatial", block_size=2000)
print(f"kNN: accuracy {ev.accuracy:.2f}, macro F1 {ev.macro_f1:.2f}")
print(f"logistic regression: accuracy {ev_logreg.accuracy:.2f}, macro F1 {ev_logreg.macro_f1:.2f}")
"""),
    md("""
With five labels per class, a fold trains on four or so, and a k = 5 vote then always
includes a label of another class: kNN suffers where classes are close (the crops and
grassland share much of their signal here). A linear model copes better with so few
labels; with a few more labels per class the two agree. Scores from a handful of labels
are noisy either way: look at the fold accuracies, not just the mean.
"""),
    md("""
## 6. Pixels like this one
`te.similarity` needs no classifier: the cosine similarity of every pixel to a query
pixel (or several, or negatives to move away from). With `threshold=` it also returns a
mask. Here the query is one forest label.
"""),
    code("""
forest_label = next(label for label in store if label.cls == "forest")
sim = te.similarity(area, forest_label, threshold=0.6)
mask = sim["mask"].values
fig, axes = plt.subplots(1, 2, figsize=(15, 6))
im = axes[0].imshow(sim["similarity"].values, cmap="viridis", vmin=-0.2, vmax=1)
fig.colorbar(im, ax=axes[0], label="cosine similarity")
axes[0].set_title(f"similarity to the pixel at ({forest_label.lon:.4f}, {forest_label.lat:.4f})")
axes[1].imshow(np.ma.masked_equal(mask, 255), cmap="Greens", vmin=0, vmax=1, interpolation="nearest")
axes[1].set_title("similarity >= 0.6")
for ax in axes:
    ax.set_axis_off()
in_mask = mask[::4, ::4] == 1
forest = truth_2024 == CLASSES.index("forest")
print(f"mask: {in_mask.mean():.1%} of the area; forest share inside it {forest[in_mask].mean():.1%}; "
      f"forest found {in_mask[forest].mean():.1%}")
assert forest[in_mask].mean() > 0.9
"""),
    md("""
## 7. What changed between two years
`te.change` compares the same pixel in two years (cosine distance) and classes the
distance as stable, minor, moderate or major change. Crop rotation changes most fields;
woods stay put.
"""),
    code("""
ch = te.change(te.tutorial.open_demo(year=2023), te.tutorial.open_demo(year=2024))
print("change classes:", ch["change_class"].attrs["classes"], "| breaks:", ch.attrs["breaks"])
m_change = leafmap.Map(center=((south + north) / 2, (west + east) / 2), zoom=12, draw_control=False,
                       toolbar_control=False, layers_control=True)
te.overlay(ch["distance"], m=m_change, name="distance 2023-2024", cmap="magma")
te.overlay(ch["change_class"], m=m_change, name="change class", opacity=0.8)
m_change
"""),
    code("""
fig, ax = plt.subplots(figsize=(8, 6))
im = ax.imshow(ch["distance"].values, cmap="magma", vmin=0, vmax=1)
fig.colorbar(im, ax=ax, label="cosine distance 2023 -> 2024")
ax.set_axis_off()
truth_2023 = true_classes(glon, glat, 2023)
distance = ch["distance"].values[::4, ::4]
ok = np.isfinite(distance)
changed = (truth_2023 != truth_2024) & ok
stable = (truth_2023 == truth_2024) & ok
print(f"median distance where the land cover changed: {np.median(distance[changed]):.2f}, "
      f"where it did not: {np.median(distance[stable]):.2f}")
assert np.median(distance[changed]) > 2 * np.median(distance[stable])
"""),
    md("""
## 8. Groups without labels
`te.cluster` runs k-means on the (unit-length) embeddings: a first look at an area before
any labels. It takes the DataArray too (it then walks the tiles block by block). The
table says which true land cover each cluster holds.
"""),
    code("""
clusters = te.cluster(da, 6)
fig, ax = plt.subplots(figsize=(8, 6))
ax.imshow(np.ma.masked_equal(clusters.values, 255), cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
ax.set_title("6 clusters, no labels")
ax.set_axis_off()
c = clusters.values[::4, ::4]
pd.crosstab(pd.Series(c[c != 255], name="cluster"), pd.Series(truth_names[c != 255], name="true class"),
            normalize="index").round(2)
"""),
    md("""
## 9. Export
`te.export_map` writes Cloud-Optimised GeoTIFFs (one per variable of a Dataset) with the
provenance in the tags: dataset version, year, model and its settings, the label file.
`store.export` writes a copy of the labels, here in the JSON format of the upstream
TESSERA notebooks (`[lat, lon]` pairs).
"""),
    code("""
files = te.export_map(pred, workdir / "landcover.tif", labels=store)
print([pathlib.Path(f).name for f in files])
with rasterio.open(files[0]) as src:
    layout = src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT")
    print(f"layout {layout}, {src.dtypes[0]}, {src.crs}, {src.shape}, overviews {src.overviews(1)}")
    tags = src.tags()
for key in sorted(tags):
    print(f"  {key} = {tags[key]}")
assert layout == "COG"
assert tags["TESSERA_DATASET_VERSION"] == da.attrs["dataset_version"] and tags["TESSERA_YEAR"] == "2024"
"""),
    code("""
upstream = store.export(workdir / "labels_upstream.json", format="upstream")
print(pathlib.Path(upstream).read_text()[:200], "...")
print(sorted(p.name for p in workdir.iterdir()))
"""),
    md("""
## Summary
- A `LabelStore` keeps classes and lon/lat labels, saved after every change, with
  undo/redo and the dataset version recorded.
- `te.fit_classifier` + `te.predict_map` turn 30 points into a class and confidence map;
  `te.evaluate(..., cv="spatial")` scores it on labels far from the training ones.
- `te.similarity`, `te.change` and `te.cluster` make maps without a classifier.
- `te.export_map` writes COGs with provenance tags; `store.export` writes the labels.
- `te.prepare` holds an area in memory so that all of this is fast enough to run on
  every click, which is what the explorer does.

The temporary folder is removed here; comment this out to keep the files.
"""),
    code("""
shutil.rmtree(workdir)
"""),
]


LIVE = [
    md("""
# Live embeddings: any area, any year, from Sentinel-1 and Sentinel-2

## Overview
Precomputed TESSERA embeddings cover the years and versions that have been published.
`te.embed_area` makes them yourself: it searches a STAC API for a year of Sentinel-2 L2A
and Sentinel-1 RTC over an area, loads the imagery onto a 10 m UTM grid, prepares it
exactly as the model was trained, runs the encoder, and returns the same embeddings
DataArray as `te.open_embeddings`. `te.compare` then measures how closely two
embeddings of the same model generation agree, pixel by pixel.

So that this notebook runs anywhere without network, it starts a **local STAC API**
(stac-fastapi-pgstac, the software Planetary Computer runs, on a private PostgreSQL
database) and a **COG file server** on 127.0.0.1, loaded with synthetic Sentinel scenes,
and it uses a small encoder with **random weights**. The embeddings are therefore
meaningless as land cover, but every step is the real one. The last section shows the
same code against Planetary Computer with published weights.

## Prerequisites
- `01_quickstart.ipynb` (the embeddings schema, PCA false colour).
- For the local servers: PostgreSQL 15 with PostGIS 3 (`scripts/system-deps.sh` installs
  them as root) and the test requirements (`requirements/test.txt`). Without them the
  notebook says why and skips the live cells.
- Running time: about 20 s (the servers take a few seconds to start).
"""),
    md("## Imports"),
    code("""
import shutil
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np

import tessera_explore as te
from tessera_explore.exceptions import VersionMismatchError
from tessera_explore.testing.stac_server import LocalStac, unavailable_reason
"""),
    md("""
## 1. Start the local servers
`LocalStac` writes a synthetic year of Sentinel-2 L2A (ten bands and the scene
classification, with clouds, shadows, snow and no-data swaths) and Sentinel-1 RTC (VV and
VH) as Cloud-Optimised GeoTIFFs for an area of about 650 m x 650 m, serves them over HTTP with range
requests, and loads the STAC items into pgstac. `servers.stac` is the
`StacConfig` that points `embed_area` at it: Planetary Computer's collection and asset
names, without URL signing.

If the servers cannot run here, this cell prints the reason and every later cell does
nothing.
"""),
    code("""
YEAR = 2022
reason = unavailable_reason()
if reason:
    servers = None
    print("SKIPPED: the local STAC demo cannot run on this machine, so the live cells below do nothing.")
    print("Reason:", reason)
else:
    t0 = time.perf_counter()
    servers = LocalStac([{"year": YEAR, "shape": (64, 64)}]).start()
    print(f"started in {time.perf_counter() - t0:.1f} s")
    print("STAC API:  ", servers.api_url)
    print("COG server:", servers.cogs.url)
    print("area (lon/lat):", np.round(servers.bbox, 5))
"""),
    md("""
## 2. A small encoder
`build_encoder` makes a randomly initialised encoder of a model generation; the sizes
here are tiny so it runs in a second on a CPU. Real use loads published weights with
`load_encoder` (last section). torch is imported only now: `import tessera_explore`
never imports it.
"""),
    code("""
if servers is not None:
    import torch
    from tessera_explore.encoder import build_encoder, count_parameters

    torch.manual_seed(0)
    model = build_encoder("v2", latent_dim=16, num_layers=2, nhead=4, dim_feedforward=64, name="random-v2-tiny")
    print(f"generation {model.generation}, {count_parameters(model):,} parameters")
"""),
    md("""
## 3. Embed the area
One call: search, load, prepare, encode. `cache=` keeps the search results and loaded
granules, so the same area and year never downloads twice. `return_prepared=True` also
returns the model input, with what was found and how long each step took.
"""),
    code("""
if servers is not None:
    cache = tempfile.mkdtemp(prefix="tessera-stac-cache-")
    requests_before = len(servers.cogs.log)
    t0 = time.perf_counter()
    live, prepared = te.embed_area(servers.bbox, YEAR, model=model, stac=servers.stac, cache=cache,
                                   return_prepared=True)
    first_run = time.perf_counter() - t0
    first_requests = len(servers.cogs.log) - requests_before
    print(f"first run: {first_run:.1f} s, {first_requests} range requests to the COG server")
    print("steps (s):", {k: round(v, 2) for k, v in prepared.timings.items()})
    print("Sentinel-2 items:", prepared.info["s2_items"], "| Sentinel-1 items:", prepared.info["s1_items"])
    for date, cover in prepared.info["s2_dropped_dates"]:
        print(f"Sentinel-2 date {date} left out: {cover:.0%} of the area without cloud")
"""),
    md("""
The result follows the embeddings schema, like every other source of embeddings here;
the attributes record the model generation and where the imagery came from.
"""),
    code("""
if servers is not None:
    te.validate(live)
    assert live.dims == ("band", "y", "x") and live.sizes["band"] == 128
    print(dict(live.sizes), live.rio.crs, "| year", int(live.year))
    for key in ("dataset_version", "dataset_variant", "model_generation", "source", "s2_dates",
                "s1_ascending_dates", "s1_descending_dates"):
        print(f"  {key}: {live.attrs[key]}")
"""),
    md("""
PCA false colour, as for precomputed embeddings. Even with random weights the fields
show, because the input differs from field to field; the colours mean nothing more.
"""),
    code("""
if servers is not None:
    comps, pca = te.project(live, random_state=0)
    rgb = te.to_rgb(comps)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(rgb.transpose("y", "x", "band").values)
    ax.set_title(f"live embeddings {YEAR}, PCA false colour")
    ax.set_axis_off()
"""),
    md("""
## 4. The second run fetches nothing
The same call again reads the search results and loaded imagery from the cache: no
request reaches the servers, and only the encoding is repeated.
"""),
    code("""
if servers is not None:
    requests_before = len(servers.cogs.log)
    t0 = time.perf_counter()
    again, prepared_again = te.embed_area(servers.bbox, YEAR, model=model, stac=servers.stac, cache=cache,
                                          progress=False, return_prepared=True)
    second_run = time.perf_counter() - t0
    second_requests = len(servers.cogs.log) - requests_before
    for label, seconds, n, steps in (("first run: ", first_run, first_requests, prepared.timings),
                                     ("second run:", second_run, second_requests, prepared_again.timings)):
        split = ", ".join(f"{k} {v:.2f}" for k, v in steps.items())
        print(f"{label} {seconds:5.2f} s, {n:3d} requests ({split})")
    assert second_requests == 0
    np.testing.assert_array_equal(again.values, live.values)
"""),
    md("""
## 5. Compare embeddings
`te.compare(a, b)` places `a` on `b`'s grid and gives the cosine agreement of every
pixel (1 = same direction), with summary statistics in the attributes. Its use is live
against precomputed embeddings of the same area. It only compares embeddings of the
**same model generation**: different generations live in unrelated feature spaces.

An array against itself agrees everywhere. Embedding the same area from Sentinel-2 alone
(`s1=False`) shows how much the radar contributes (here to a random model).
"""),
    code("""
if servers is not None:
    same = te.compare(live, live)
    print(f"live vs itself: mean cosine {same.attrs['mean']:.4f}")
    assert abs(same.attrs["mean"] - 1) < 1e-5

    s2_only = te.embed_area(servers.bbox, YEAR, model=model, stac=servers.stac, cache=cache, s1=False,
                            progress=False)
    agreement = te.compare(s2_only, live)
    print("Sentinel-2 only vs both sensors:",
          {k: round(agreement.attrs[k], 3) for k in ("mean", "median", "p05", "p95")},
          f"over {agreement.attrs['n_pixels']:,} pixels")
    fig, ax = plt.subplots(figsize=(5, 4))
    im = ax.imshow(agreement.values, cmap="viridis")
    fig.colorbar(im, ax=ax, label="cosine")
    ax.set_title("agreement: Sentinel-2 only vs both")
    ax.set_axis_off()
"""),
    md("""
The demo scene's embeddings are of generation v1.0, the live ones v2: `compare` refuses
them and says why.
"""),
    code("""
if servers is not None:
    try:
        te.compare(live, te.tutorial.open_demo())
    except VersionMismatchError as err:
        print("refused:", err)
    else:
        raise AssertionError("compare accepted embeddings of different model generations")
"""),
    md("""
## 6. Stop the servers
The database and the API run as separate processes until stopped (at the latest when
the kernel exits). Stop them, and remove the cache folder.
"""),
    code("""
if servers is not None:
    servers.stop()
    shutil.rmtree(cache, ignore_errors=True)
    print("servers stopped")
"""),
    md("""
## Real use: Planetary Computer and published weights
The same calls with real data. This needs internet and is not run here. Weights are
downloaded explicitly, once, and verified (`te.encoder.WEIGHTS` lists them: `v1.0-qat`,
`v1.1-mpc`, `v1.1-aws`, `v2-nano`, `v2-small`, `v2-medium`, `v2-large`). Planetary
Computer's asset hrefs are signed automatically. Areas are limited to about 5 km x 5 km
by default (`max_pixels`, `max_area_km2`, checked before anything is fetched). On two CPU
cores the `v2-small` model encodes about 1 km² a minute; `device="cuda"` uses a GPU.

```python
import tessera_explore as te
from tessera_explore.encoder import download_weights, load_encoder

bbox = (0.10, 52.17, 0.13, 52.19)                       # about 2 km x 2 km near Cambridge

# a v2 student model (28 MB)
model = load_encoder(download_weights("v2-small"))
live = te.embed_area(bbox, 2024, model=model, stac="planetary-computer")
comps, pca = te.project(live)

# against the precomputed v1 product: embed with the v1.0 model on its grid
te.fetch_tiles(bbox, 2024, dest="tessera-data")
pre = te.open_embeddings("tessera-data", bbox=bbox, year=2024)
model_v1 = load_encoder(download_weights("v1.0-qat"))  # Google Drive: if the download is refused,
                                                        # fetch the file in a browser and pass its path
live_v1 = te.embed_area(None, 2024, like=pre, model=model_v1, stac="planetary-computer")
agreement = te.compare(live_v1, pre)
print(agreement.attrs["mean"], agreement.attrs["p05"])
```

## Summary
- `te.embed_area(bbox, year, model=..., stac=...)` embeds any area live and returns the
  same DataArray schema as precomputed embeddings; `cache=` makes reruns free.
- `te.compare` measures per-pixel agreement between embeddings of one model generation
  and refuses to compare across generations.
- `tessera_explore.testing.stac_server.LocalStac` runs a real STAC API and COG server
  locally, for offline demos and tests.
"""),
]

NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_labelling.ipynb": LABELLING,
    "03_live_embedding.ipynb": LIVE,
}

if __name__ == "__main__":
    for name, cells in NOTEBOOKS.items():
        write(name, cells)
