# %% [markdown]
# # Workshop: a land-cover map from satellite embeddings in 90 minutes
#
# ## Overview
# TESSERA summarises a year of satellite images (Sentinel-1 radar, Sentinel-2 optical) as 128
# numbers for every 10 m square of land: an *embedding*. Squares with similar numbers look and
# behave alike through the year. In seven exercises you open embeddings, see them, label a
# few points, map a whole scene, check the map honestly, and estimate areas with confidence
# intervals. Everything runs offline on the demo scene: two years (2023, 2024) of synthetic
# farmland near Cambridge whose true land cover is known, so every answer can be checked.
#
# Fill in each `...`; the function to use is named in the exercise. `help(te.project)` (or
# `te.project?`) shows a function's documentation. Worked answers: `solutions.ipynb`.
#
# ## Prerequisites
# - Some Python (lists, functions, NumPy arrays); no remote sensing.
# - Run the Imports cell first; it defines three helpers: `show` (draw a map), `truth` (the
#   true land cover at lon/lat points) and `points_of` (random points of one class).

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
da = ...  # open the 2024 demo scene
da

# %%
# the numbers of one pixel (hint: da.isel(y=..., x=...).values), and the share of pixels
# without data (hint: np.isfinite on one band)
...

# %% [markdown]
# ## Exercise 2: false colour (10 min)
# Turn the 128 numbers into three with `te.project` (PCA) and show them as red, green, blue with
# `te.to_rgb`. What do the colours separate?

# %%
comps, pca = ...  # te.project(da, ...)
rgb = ...  # te.to_rgb(...)
show(rgb, "PCA false colour, 2024")

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
    ...  # add five points_of(name, 5) with store.add_point(lon, lat, name)
clf = ...
pred = ...
show(pred["class"].where(pred["class"] != 255), f"predicted classes {pred.attrs['classes']}", cmap="viridis")
show(pred["confidence"], "confidence", cmap="magma", vmin=0, vmax=1)

# %% [markdown]
# ## Exercise 4: evaluate honestly (15 min)
# Score the classifier with `te.evaluate` twice: `cv="random"` and `cv="spatial"`. Why is the
# spatial score the honest one? Then add 10 more labels per class and score again.

# %%
random_cv = ...
spatial_cv = ...  # block_size=2000: folds of whole 2 km squares
print(f"random folds: {random_cv.accuracy:.2f}; spatial blocks: {spatial_cv.accuracy:.2f}")
...  # ten more labels per class (points_of(name, 10, seed=1)), then score again

# %% [markdown]
# ## Exercise 5: similar pixels (10 min)
# Pick one forest label and map how similar every pixel is to it (`te.similarity`, with
# `threshold=0.6`). What share of the scene is "like" that pixel, and is it really forest?

# %%
forest = next(label for label in store if label.cls == "forest")
sim = ...
show(sim["similarity"], "cosine similarity to one forest pixel", cmap="viridis", vmin=-0.2, vmax=1)

# %% [markdown]
# ## Exercise 6: change between years (10 min)
# Compare 2023 with 2024 (`te.change`). Which parts changed most, and why would fields change
# more than woods?

# %%
ch = ...
show(ch["distance"], "how much each pixel changed, 2023 -> 2024", cmap="magma", vmin=0, vmax=1)

# %% [markdown]
# ## Exercise 7: area with confidence intervals (15 min)
# How many hectares of forest are there? Counting mapped pixels is biased by the map's errors.
# Draw a validation sample (`te.validation_sample`), fill in its `reference` column with the
# truth (`truth`), and get error-adjusted areas with confidence intervals (`te.area_estimate`).

# %%
pred = te.predict_map(area, te.fit_classifier(area, store))
sample = ...  # 150 points
sample["reference"] = ...  # what is really there: truth(lon, lat)
sample = sample[sample.reference.isin(pred.attrs["classes"])]
est = ...
est.table[["mapped_ha", "area_ha", "area_ci_low_ha", "area_ci_high_ha"]].round(0)

# %% [markdown]
# ## Summary
# - Embeddings: 128 numbers per 10 m pixel; NaN where there is none (water).
# - A projection (PCA) makes false colour; similar colours, similar land.
# - A few labels + a classifier map a whole scene; spatial cross-validation tells how good it
#   is without flattering it, and more labels help until the curve flattens.
# - Similarity and change need no classifier at all.
# - Areas come from a validation sample, with confidence intervals, not from counting pixels.
