# %% [markdown]
# # Real data: a published store by name, and a local copy of an area
#
# ## Overview
# The published TESSERA embeddings live in Zarr stores on the web, one per dataset version
# (`"v1.1"`, `"v2"`, ...). `te.open_embeddings` opens them by name for a bounding box and a
# year, reading only the chunks that area needs. This notebook:
#
# 1. opens an area of a store: a real 10 km square around Cambridge (UK) with `REAL = True`,
#    or, offline (the default), the demo scene's store, which has the same layout;
# 2. says why pixels have no embedding (`te.data_mask`: water, not computed, outside);
# 3. copies an area to a local store (`te.fetch_region`) and reads it back, which is what to do
#    before a workshop or any work offline.
#
# ## Prerequisites
# - `01_quickstart.ipynb` (the embeddings schema).
# - `REAL = True` needs internet and reads a few hundred MB; `REAL = False` (the default) needs
#   nothing and runs in about a minute.

# %% [markdown]
# ## Imports

# %%
import pathlib
import tempfile

import matplotlib.pyplot as plt
from matplotlib_inline.backend_inline import set_matplotlib_formats
set_matplotlib_formats("jpeg", dpi=80, pil_kwargs={"quality": 75})  # small saved figures: a map ~60 kB (PNG ~500 kB)
import numpy as np

import tessera_explore as te

# %% [markdown]
# ## 1. One switch: the demo store or a real area
# With `REAL = True` the source is the published dataset `"v1.1"` and the area a 10 km square
# around the centre of Cambridge; otherwise the source is the demo scene's Zarr store on disk
# (`te.tutorial.demo_path()`, written on first use) and a part of the demo area. Everything
# below is the same code for both.

# %%
REAL = False

if REAL:
    SOURCE, YEAR = "v1.1", 2024
    BBOX = (0.048, 52.160, 0.194, 52.250)  # about 10 x 10 km around Cambridge, UK
else:
    SOURCE, YEAR = te.tutorial.demo_path(), 2024
    west, south, east, north = te.tutorial.DEMO_BBOX
    BBOX = (west + 0.02, south + 0.01, west + 0.12, south + 0.06)

da = te.open_embeddings(SOURCE, bbox=BBOX, year=YEAR)
print("source:", SOURCE if REAL else pathlib.Path(SOURCE).name, "| version:", da.attrs["dataset_version"])
print(dict(da.sizes), da.rio.crs, f"{da.nbytes / 2**20:.0f} MiB as float32 (read lazily)")
da

# %% [markdown]
# ## 2. Why a pixel has no embedding
# NaN means no embedding, for one of three reasons the store records: water (the model skips
# it), land not computed (yet), or outside every tile. `te.data_mask` reads only the per-pixel
# scales to tell them apart: 0 valid, 1 water, 2 not computed, 3 outside.

# %%
mask = te.data_mask(da)
codes, counts = np.unique(mask.values, return_counts=True)
meaning = {0: "valid", 1: "water", 2: "not computed", 3: "outside"}
for code, count in zip(codes, counts):
    print(f"{meaning[int(code)]:>13}: {count / mask.size:6.1%}")
fig, ax = plt.subplots(figsize=(7, 5))
mask.plot.imshow(ax=ax, cmap="Set2", vmin=0, vmax=3, levels=[-0.5, 0.5, 1.5, 2.5, 3.5])
ax.set_title("0 valid, 1 water, 2 not computed, 3 outside")
ax.set_axis_off()

# %% [markdown]
# A false-colour look, with the PCA the store publishes for the zone (`from_stats=True`: no
# pixels are read to fit it):

# %%
comps, pca = te.project(da, from_stats=True)
fig, ax = plt.subplots(figsize=(7, 5))
ax.imshow(te.to_rgb(comps).transpose("y", "x", "band").values)
ax.set_axis_off()

# %% [markdown]
# ## 3. A local copy of the area
# `te.fetch_region` copies what an area needs (the embeddings, their scales and the zone
# statistics) into a local store of the same layout; an interrupted copy resumes. From the
# command line it is `tessera-explore fetch --bbox W S E N --year 2024 --dest FOLDER`. The copy
# opens like any store, without the network.

# %%
dest = pathlib.Path(tempfile.mkdtemp(prefix="tessera-local-")) / "store"
local = te.fetch_region(BBOX, YEAR, dest=dest, source=SOURCE, progress=False)
size = sum(p.stat().st_size for p in pathlib.Path(local).rglob("*") if p.is_file())
print(f"local store: {size / 2**20:.0f} MiB in {local}")
copy = te.open_embeddings(local, bbox=BBOX, year=YEAR)
same = np.array_equal(copy.isel(band=0).values, da.isel(band=0).values, equal_nan=True)
print("the copy reads back the same embeddings:", same)
assert same and copy.sizes == da.sizes

# %% [markdown]
# ## Summary
# - `te.open_embeddings("v1.1", bbox=..., year=...)` opens a published store by name; a local
#   folder in the same layout (the demo store, or a copy) opens the same way.
# - `te.data_mask` says why pixels lack an embedding: water, not computed, or outside.
# - `te.fetch_region` (or `tessera-explore fetch`) copies an area once; work on the copy
#   offline and spare the store.
# - Next: `05_live_encoder.ipynb` computes embeddings for an area live from Sentinel-1 and
#   Sentinel-2.
