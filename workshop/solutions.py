# %% [markdown]
# # Workshop solutions: a land-cover map from satellite embeddings in 90 minutes
#
# ## Overview
# The worked answers to `exercises.ipynb`, cell for cell (the same headings; where the
# exercises have `...`, this notebook has code). Everything runs offline on the demo scene: two
# years (2023, 2024) of synthetic farmland near Cambridge whose true land cover is known, so
# every answer can be checked.
#
# ## Prerequisites
# - Some Python (lists, functions, NumPy arrays); no remote sensing.
# - Running time: about a minute once the demo scene is cached.

# %% [markdown]
# ## Imports

# %%
import matplotlib.pyplot as plt
from matplotlib_inline.backend_inline import set_matplotlib_formats
set_matplotlib_formats("jpeg", dpi=80, pil_kwargs={"quality": 75})  # small saved figures: a map ~60 kB (PNG ~500 kB)
import numpy as np

import tessera_explore as te
from tessera_explore.testing import CLASSES, scene_classes
from tessera_explore.tutorial import DEMO_BBOX, DEMO_SEED


def show(image, title="", **kwargs):
    """Draw a 2-D map or an RGB(A) image without axes."""
    fig, ax = plt.subplots(figsize=(7, 5.5))
    values = image.transpose("y", "x", "band").values if "band" in image.dims else image.values
    im = ax.imshow(values, interpolation="nearest", **kwargs)
    if values.ndim == 2:
        fig.colorbar(im, ax=ax)
    ax.set_title(title)
    ax.set_axis_off()


def truth(lon, lat, year=2024):
    """The demo scene's true land-cover name at lon/lat points (plays the person on the ground)."""
    return np.asarray(CLASSES)[scene_classes(np.asarray(lon), np.asarray(lat), year, seed=DEMO_SEED)]


def points_of(name, n, seed=0):
    """n random (lon, lat, name) points whose true land cover is ``name``."""
    rng = np.random.default_rng(seed)
    west, south, east, north = DEMO_BBOX
    lon = rng.uniform(west + 0.005, east - 0.005, 20000)
    lat = rng.uniform(south + 0.005, north - 0.005, 20000)
    keep = np.flatnonzero(truth(lon, lat) == name)[:n]
    return [(float(lon[i]), float(lat[i]), name) for i in keep]


# %% [markdown]
# ## Exercise 1: open and look (10 min)
# Open the 2024 demo scene with `te.tutorial.open_demo()`. How many pixels does it have, how
# many numbers per pixel, and what is in a water pixel?

# %%
da = te.tutorial.open_demo(2024)
print(dict(da.sizes), "| CRS", da.rio.crs, "| pixel", da.rio.resolution(), "m")
pixel = da.isel(y=600, x=700).values
print("one pixel:", pixel.shape, np.round(pixel[:5], 2))
has_data = np.isfinite(da.isel(band=0)).values
print(f"pixels without data (water): {1 - has_data.mean():.1%}")

# %% [markdown]
# ## Exercise 2: false colour (10 min)
# Turn the 128 numbers into three with `te.project` (PCA) and show them as red, green, blue with
# `te.to_rgb`. What do the colours separate?

# %%
comps, pca = te.project(da, from_stats=True)
rgb = te.to_rgb(comps)
show(rgb, "PCA false colour, 2024")
print("variance explained by the 3 components:", np.round(pca.explained_variance_ratio_, 2))

# %% [markdown]
# ## Exercise 3: label and map (20 min)
# Make a `te.LabelStore` with three classes (forest, cereal, grassland), add five points of each
# (`points_of`), train a classifier (`te.fit_classifier`) and map the scene (`te.predict_map`).
# Where is the map unsure (dark in the confidence map), and why there?

# %%
area = te.prepare(da)  # read once into memory: every call below is then fast
store = te.LabelStore(classes={"forest": "#1f6b2e", "cereal": "#e3c75a", "grassland": "#8fd16a"},
                      dataset_version=da.attrs["dataset_version"], year=2024)
for name in ["forest", "cereal", "grassland"]:
    for lon, lat, cls in points_of(name, 5):
        store.add_point(lon, lat, cls)
clf = te.fit_classifier(area, store)
pred = te.predict_map(area, clf)
show(pred["class"].where(pred["class"] != 255), f"predicted classes {pred.attrs['classes']}", cmap="viridis")
show(pred["confidence"], "confidence", cmap="magma", vmin=0, vmax=1)

# %% [markdown]
# ## Exercise 4: evaluate honestly (15 min)
# Score the classifier with `te.evaluate` twice: `cv="random"` and `cv="spatial"`. Why is the
# spatial score the honest one? Then add 10 more labels per class and score again.

# %%
random_cv = te.evaluate(area, store, cv="random")
spatial_cv = te.evaluate(area, store, cv="spatial", block_size=2000)
print(f"random folds: {random_cv.accuracy:.2f}; spatial blocks: {spatial_cv.accuracy:.2f}")
for name in ["forest", "cereal", "grassland"]:
    for lon, lat, cls in points_of(name, 10, seed=1):
        store.add_point(lon, lat, cls)
more = te.evaluate(area, store, cv="spatial", block_size=2000)
print(f"with {len(store)} labels: spatial accuracy {more.accuracy:.2f}")
more.confusion

# %% [markdown]
# ## Exercise 5: similar pixels (10 min)
# Pick one forest label and map how similar every pixel is to it (`te.similarity`, with
# `threshold=0.6`). What share of the scene is "like" that pixel, and is it really forest?

# %%
forest = next(label for label in store if label.cls == "forest")
sim = te.similarity(area, forest, threshold=0.6)
show(sim["similarity"], "cosine similarity to one forest pixel", cmap="viridis", vmin=-0.2, vmax=1)
inside = sim["mask"].values == 1
print(f"{inside.mean():.1%} of the pixels are similar")

# %% [markdown]
# ## Exercise 6: change between years (10 min)
# Compare 2023 with 2024 (`te.change`). Which parts changed most, and why would fields change
# more than woods?

# %%
ch = te.change(te.tutorial.open_demo(2023), da)
show(ch["distance"], "how much each pixel changed, 2023 -> 2024", cmap="magma", vmin=0, vmax=1)
classes, counts = np.unique(ch["change_class"].values, return_counts=True)
names = ch["change_class"].attrs["classes"]
print({names[int(c)]: f"{n / counts.sum():.0%}" for c, n in zip(classes, counts) if int(c) < len(names)})

# %% [markdown]
# ## Exercise 7: area with confidence intervals (15 min)
# How many hectares of forest are there? Counting mapped pixels is biased by the map's errors.
# Draw a validation sample (`te.validation_sample`), fill in its `reference` column with the
# truth (`truth`), and get error-adjusted areas with confidence intervals (`te.area_estimate`).

# %%
pred = te.predict_map(area, te.fit_classifier(area, store))
sample = te.validation_sample(pred, 150, seed=1)
sample["reference"] = truth(sample.lon.values, sample.lat.values)
sample = sample[sample.reference.isin(pred.attrs["classes"])]
est = te.area_estimate(pred, sample)
print(f"overall accuracy {est.overall_accuracy:.2f} +- {1.96 * est.overall_se:.2f}")
est.table[["mapped_ha", "area_ha", "area_ci_low_ha", "area_ci_high_ha"]].round(0)

# %% [markdown]
# ## Summary
# - Embeddings: 128 numbers per 10 m pixel; NaN where there is none (water).
# - A projection (PCA) makes false colour; similar colours, similar land.
# - A few labels + a classifier map a whole scene; spatial cross-validation tells how good it
#   is without flattering it, and more labels help until the curve flattens.
# - Similarity and change need no classifier at all.
# - Areas come from a validation sample, with confidence intervals, not from counting pixels.
