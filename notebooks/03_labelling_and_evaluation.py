# %% [markdown]
# # Labelling and evaluation: a land-cover map from a few dozen points, scored honestly
#
# ## Overview
# Embeddings make a small number of labels go a long way: pixels of one land cover sit
# close together in the 128-dimensional space, so a classifier trained on a handful of
# points per class can map a whole area. This notebook does it in plain Python on the demo
# scene, with the same functions the interactive explorer calls on every click:
#
# 1. keep labels in a `te.LabelStore` (saved to a file after every change);
# 2. train a classifier and map the area with class and confidence (`te.fit_classifier`,
#    `te.predict_map`);
# 3. choose a classifier and score it on labels it did not see, with spatial cross-validation
#    (`te.evaluate`), and draw a learning curve (accuracy against the number of labels);
# 4. find pixels like one pixel (`te.similarity`), what changed between two years
#    (`te.change`), and groups without any labels (`te.cluster`);
# 5. ask where to click next (`te.suggest`), estimate areas with confidence intervals
#    (`te.validation_sample`, `te.area_estimate`) and map where not to trust the map
#    (`te.trust`);
# 6. export the maps as Cloud-Optimised GeoTIFFs with provenance, and the labels.
#
# The demo scene is synthetic, so its true land cover is known everywhere
# (`tessera_explore.testing`): the labels below are placed where the truth says, and the
# maps are checked against it.
#
# ## Prerequisites
# - `01_quickstart.ipynb` (the demo scene and the embeddings schema).
# - Some scikit-learn vocabulary helps (classifier, cross-validation, F1).
# - Running time: about a minute; everything is offline.

# %% [markdown]
# ## Imports

# %%
import pathlib
import shutil
import tempfile

import leafmap.leafmap as leafmap
import ipyleaflet
import matplotlib.pyplot as plt
from matplotlib_inline.backend_inline import set_matplotlib_formats
set_matplotlib_formats("jpeg", dpi=80, pil_kwargs={"quality": 75})  # small saved figures: a map ~60 kB (PNG ~500 kB)
import numpy as np
import pandas as pd
import rasterio
from matplotlib.colors import ListedColormap
from pyproj import Transformer

import tessera_explore as te
from tessera_explore.testing import CLASS_COLORS, CLASSES, scene_classes
from tessera_explore.tutorial import DEMO_BBOX, DEMO_SEED

# %% [markdown]
# ## 1. The area
# Open the demo scene (2024) and *prepare* it: `te.prepare` reads the embeddings once
# into memory as int8 codes (about 220 MB for the two tiles here). Every function below
# accepts the prepared area in place of the DataArray; repeated calls then skip reading the
# tiles, which is what makes refitting after every click instant in the explorer.

# %%
da = te.tutorial.open_demo()
area = te.prepare(da)
area


# %% [markdown]
# ## 2. Where to put labels
# In real use you click on a map or load a label file. Here the synthetic scene tells us the
# land cover at any lon/lat (`scene_classes`), so we pick points deterministically: a
# lattice over the area, kept only where the same class holds about 30 m away in every
# direction (well inside a field, not on its edge), then five random points per class.
# Water has no embeddings (no data), so it gets no labels.

# %%
def true_classes(lon, lat, year=2024):
    """The demo scene's true land-cover index (into CLASSES) at lon/lat points."""
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

# %% [markdown]
# ## 3. A label store
# A `LabelStore` holds the classes (with colours) and the labels in lon/lat. It writes its
# GeoJSON file after every change (to a temporary file, then renamed), so a crash never
# loses a click, and it records the dataset version the labels were drawn on: label files
# of another version are refused later, because their embeddings live in another space.

# %%
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

# %% [markdown]
# Every change can be undone and redone, and the file follows:

# %%
store.undo()
print("after undo:", len(store), "labels;", "file:", pathlib.Path(store.path).name)
store.redo()
print("after redo:", len(store), "labels")
assert te.LabelStore.open(store.path).counts() == store.counts() == {name: PER_CLASS for name in NAMES}
store.to_geodataframe().head()

# %% [markdown]
# ## 4. Train a classifier and map the area
# `te.fit_classifier` samples the embeddings under the labels and fits a classifier
# (default: cosine k-nearest neighbours, k = 5; also `"logreg"`, `"rf"` or any
# scikit-learn classifier). `te.predict_map` applies it to every pixel and returns a
# Dataset with `class` (index into `attrs["classes"]`, 255 = no data) and `confidence`
# (the probability of the winning class).

# %%
clf = te.fit_classifier(area, store)
pred = te.predict_map(area, clf)
print("classes:", pred.attrs["classes"])
pred

# %% [markdown]
# On a map, with the labels on top (basemap tiles need internet):

# %%
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

# %% [markdown]
# And as static pictures:

# %%
names = list(pred.attrs["classes"])
cmap = ListedColormap(pred.attrs["colors"])
cls_map = np.ma.masked_equal(pred["class"].values, 255)
fig, axes = plt.subplots(1, 2, figsize=(12, 5))
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

# %% [markdown]
# Because the scene is synthetic, the whole map can be checked against the truth (every
# 4th pixel, on the classes we labelled). The demo scene is about as hard as real land
# cover (mixed pixels along field edges, crops that resemble each other and grassland), so
# five labels per class get roughly four pixels in five right, and the confidence map
# above is dark where the classifier hesitates: field edges, grassland and the crops.

# %%
to_lonlat = Transformer.from_crs(da.rio.crs, "EPSG:4326", always_xy=True)
gx, gy = np.meshgrid(da.x.values[::4], da.y.values[::4])
glon, glat = to_lonlat.transform(gx, gy)
truth_2024 = true_classes(glon, glat, 2024)
truth_names = np.asarray(CLASSES)[truth_2024]
predicted = pred["class"].values[::4, ::4]
scored = (predicted != 255) & np.isin(truth_names, NAMES)
agreement = float((np.asarray(names)[predicted[scored]] == truth_names[scored]).mean())
print(f"agreement with the true land cover: {agreement:.1%} of {scored.sum():,} pixels")
assert agreement > 0.7

# %% [markdown]
# ## 5. How good is it, honestly?
# Neighbouring pixels are near copies, so testing on pixels next to training pixels
# flatters a classifier. `te.evaluate` splits by label, and with `cv="spatial"` it assigns
# whole `block_size` squares of labels to folds, so every test label is at least a block
# away from most training labels. This is what to report when the truth is unknown.

# %%
ev = te.evaluate(area, store, cv="spatial", block_size=2000)
print(ev)
chance = 1 / len(NAMES)
assert ev.accuracy > 2 * chance, ev
ev.confusion

# %%
ev_logreg = te.evaluate(area, store, model="logreg", cv="spatial", block_size=2000)
ev_rf = te.evaluate(area, store, model="rf", cv="spatial", block_size=2000)
print(f"kNN: accuracy {ev.accuracy:.2f}, macro F1 {ev.macro_f1:.2f}")
print(f"logistic regression: accuracy {ev_logreg.accuracy:.2f}, macro F1 {ev_logreg.macro_f1:.2f}")
print(f"random forest: accuracy {ev_rf.accuracy:.2f}, macro F1 {ev_rf.macro_f1:.2f}")

# %% [markdown]
# With five labels per class, a fold trains on four or so, and a k = 5 vote then always
# includes a label of another class: kNN suffers where classes are close (the crops and
# grassland share much of their signal here). A linear model copes better with so few
# labels; with a few more labels per class they agree. Scores from a handful of labels
# are noisy either way: look at the fold accuracies, not just the mean.
#
# Which classifier? kNN (the default) refits instantly and needs no tuning, which is why the
# explorer uses it on every click; logistic regression is the steadier choice with very few
# labels; a random forest is slower to fit and gains little on embeddings, whose classes are
# already nearly linearly separable.

# %% [markdown]
# ### A learning curve: how many labels are enough?
# Score the same recipes, with the same spatial cross-validation, on growing subsets of a
# pool of labels: 2, 3, 4, 6 and 10 per class, each size drawn three times at random (the
# spread shows how much a score from a few labels depends on *which* labels). Where the
# curve flattens, more labels of the same kind stop paying off; better labels (section 9)
# still can.

# %%
rng_curve = np.random.default_rng(1)
pool = {name: rng_curve.permutation(np.flatnonzero(truth_at == CLASSES.index(name)))[:30] for name in NAMES}
rows = []
for draw in range(3):
    order = {name: rng_curve.permutation(pool[name]) for name in NAMES}
    for per_class in (2, 3, 4, 6, 10):
        subset = [(float(lon.flat[i]), float(lat.flat[i]), name) for name in NAMES for i in order[name][:per_class]]
        for model in ("knn", "logreg"):
            score = te.evaluate(area, subset, model=model, cv="spatial", block_size=2000)
            rows.append({"labels per class": per_class, "model": model, "draw": draw, "accuracy": score.accuracy})
curve = pd.DataFrame(rows)
summary = curve.groupby(["model", "labels per class"]).accuracy.agg(["mean", "min", "max"])
fig, ax = plt.subplots(figsize=(7, 4))
for model, part in summary.groupby(level="model"):
    n = part.index.get_level_values("labels per class")
    ax.plot(n, part["mean"], marker="o", label=model)
    ax.fill_between(n, part["min"], part["max"], alpha=0.2)
ax.set_xlabel("labels per class")
ax.set_ylabel("spatial CV accuracy")
ax.set_ylim(0, 1.02)
ax.legend()
assert summary["mean"].xs(10, level="labels per class").min() >= summary["mean"].xs(2, level="labels per class").min()
summary.round(2)

# %% [markdown]
# ## 6. Pixels like this one
# `te.similarity` needs no classifier: the cosine similarity of every pixel to a query
# pixel (or several, or negatives to move away from). With `threshold=` it also returns a
# mask. Here the query is one forest label.

# %%
forest_label = next(label for label in store if label.cls == "forest")
sim = te.similarity(area, forest_label, threshold=0.6)
mask = sim["mask"].values
fig, axes = plt.subplots(1, 2, figsize=(12, 5))
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

# %% [markdown]
# ## 7. What changed between two years
# `te.change` compares the same pixel in two years (cosine distance) and classes the
# distance as stable, minor, moderate or major change. Crop rotation changes most fields;
# woods stay put.

# %%
ch = te.change(te.tutorial.open_demo(year=2023), te.tutorial.open_demo(year=2024))
print("change classes:", ch["change_class"].attrs["classes"], "| breaks:", ch.attrs["breaks"])
m_change = leafmap.Map(center=((south + north) / 2, (west + east) / 2), zoom=12, draw_control=False,
                       toolbar_control=False, layers_control=True)
te.overlay(ch["distance"], m=m_change, name="distance 2023-2024", cmap="magma")
te.overlay(ch["change_class"], m=m_change, name="change class", opacity=0.8)
m_change

# %%
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

# %% [markdown]
# ## 8. Groups without labels
# `te.cluster` runs k-means on the (unit-length) embeddings: a first look at an area before
# any labels. It takes the DataArray too (it then walks the tiles block by block). The
# table says which true land cover each cluster holds.

# %%
clusters = te.cluster(da, 6)
fig, ax = plt.subplots(figsize=(8, 6))
ax.imshow(np.ma.masked_equal(clusters.values, 255), cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
ax.set_title("6 clusters, no labels")
ax.set_axis_off()
c = clusters.values[::4, ::4]
pd.crosstab(pd.Series(c[c != 255], name="cluster"), pd.Series(truth_names[c != 255], name="true class"),
            normalize="index").round(2)

# %% [markdown]
# ## 9. Where to click next, how many hectares, where not to trust the map
# Three questions a land-cover map has to answer before anyone uses it.
#
# **Where to click next.** `te.suggest` ranks the pixels whose labels would help the
# classifier most: uncertain ones (a small margin between the two likeliest classes),
# spread over embedding space and at least `spacing` metres apart. Here the synthetic truth
# plays the user: it labels the ten suggestions, and the map improves (on the demo scene by
# several points: ten well-chosen labels are worth more than ten random ones).

# %%
picks = te.suggest(area, clf, n=10, strategy="mixed", seed=0)
print(picks[["rank", "predicted", "confidence", "score"]].head())
before = agreement
for p_lon, p_lat in zip(picks.lon, picks.lat):
    name = CLASSES[int(true_classes(np.array([p_lon]), np.array([p_lat]))[0])]
    if name in NAMES:
        store.add_point(p_lon, p_lat, name)
clf = te.fit_classifier(area, store)
pred = te.predict_map(area, clf)
predicted = pred["class"].values[::4, ::4]
scored = (predicted != 255) & np.isin(truth_names, NAMES)
agreement = float((np.asarray(names)[predicted[scored]] == truth_names[scored]).mean())
print(f"agreement with the truth: {before:.1%} -> {agreement:.1%} after {len(picks)} suggested labels")
assert agreement > before

# %% [markdown]
# **How many hectares.** Counting the pixels of a class gives the *mapped* area, which is
# biased by the map's errors. Good practice (Olofsson et al. 2014, *Remote Sensing of
# Environment* 148:42-57) labels a stratified random sample of the map (never the training
# labels) and corrects the areas, with confidence intervals. `te.validation_sample` draws
# the points; the user fills in `reference` (here: the truth); `te.area_estimate` gives the
# error-adjusted areas, user's and producer's accuracies and the overall accuracy.

# %%
sample = te.validation_sample(pred, 200, allocation="proportional", seed=1)
sample["reference"] = [CLASSES[int(c)] for c in true_classes(sample.lon.values, sample.lat.values)]
sample = sample[sample.reference.isin(NAMES)]
est = te.area_estimate(pred, sample)
print(f"overall accuracy {est.overall_accuracy:.2f} +- {1.96 * est.overall_se:.2f}")
est.table[["mapped_ha", "area_ha", "area_ci_low_ha", "area_ci_high_ha", "users_accuracy", "producers_accuracy"]].round(1)

# %% [markdown]
# **Where not to trust the map.** `te.trust` combines the classifier's confidence with how
# far each pixel is, in embedding space, from anything labelled; pixels without an
# embedding get 0. `reason` says why a pixel is not trusted (1 uncertain, 2 unlike any
# label, 3 both, 4 no data). On the demo scene about a quarter of the pixels fall below
# 0.5, water (no data) and the uncertain fields and edges: the places to check or label next.

# %%
tr = te.trust(area, clf)
low = float((tr["trust"].values < 0.5).mean())
print(f"{low:.0%} of the pixels are below trust 0.5")
fig, ax = plt.subplots(figsize=(7, 5))
tr["trust"].plot.imshow(ax=ax, cmap="viridis", vmin=0, vmax=1)
ax.set_axis_off()

# %% [markdown]
# ## 10. Export
# `te.export_map` writes Cloud-Optimised GeoTIFFs (one per variable of a Dataset) with the
# provenance in the tags: dataset version, year, model and its settings, the label file.
# `store.export` writes a copy of the labels, here in the JSON format of the upstream
# TESSERA notebooks (`[lat, lon]` pairs).

# %%
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

# %%
upstream = store.export(workdir / "labels_upstream.json", format="upstream")
print(pathlib.Path(upstream).read_text()[:200], "...")
print(sorted(p.name for p in workdir.iterdir()))

# %% [markdown]
# ## Summary
# - A `LabelStore` keeps classes and lon/lat labels, saved after every change, with
#   undo/redo and the dataset version recorded.
# - `te.fit_classifier` + `te.predict_map` turn 30 points into a class and confidence map;
#   `te.evaluate(..., cv="spatial")` scores it on labels far from the training ones, for any
#   classifier (`model="knn"`, `"logreg"`, `"rf"`), and on growing label subsets it draws a
#   learning curve.
# - `te.similarity`, `te.change` and `te.cluster` make maps without a classifier.
# - `te.suggest` says where to click next; `te.validation_sample` + `te.area_estimate` give
#   areas with honest confidence intervals; `te.trust` maps where not to trust the map.
# - `te.export_map` writes COGs with provenance tags; `store.export` writes the labels.
# - `te.prepare` holds an area in memory so that all of this is fast enough to run on
#   every click, which is what the explorer does.
#
# The temporary folder is removed here; comment this out to keep the files.

# %%
shutil.rmtree(workdir)
