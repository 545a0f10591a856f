# %% [markdown]
# # Beyond one machine: a region with the same calls, on dask.distributed
#
# ## Overview
# A classifier trained on one tile can map a county or a country. `te.run_region` runs the
# same verbs (`predict_map`, `similarity`, `change`, `project`, `trust`) chunk by chunk on a
# dask.distributed cluster and writes the result straight to a Zarr store, never holding the
# region in memory. This notebook:
#
# 1. labels one tile and maps it in this process, as in `03_labelling_and_evaluation`;
# 2. starts a `LocalCluster` of two workers (on a real cluster: `Client("tcp://...")`);
# 3. estimates the job, then maps a 16-tile region across two UTM zones with the same
#    classifier, and checks that it matches the single-process map;
# 4. interrupts a job and resumes it: only the missing chunks are computed;
# 5. exports the region as one Cloud-Optimised GeoTIFF.
#
# The region is synthetic (the demo scene's generator, at coarse pixels so it runs in a
# minute), written as a Zarr store in the published layout. For real data, give a dataset
# name such as `"v1.1"` and a real bbox instead (see the last section).
#
# ## Prerequisites
# - `03_labelling_and_evaluation.ipynb` (labels, classifiers, `predict_map`).
# - Running time: about a minute on two cores; everything is offline.

# %% [markdown]
# ## Imports

# %%
import pathlib
import tempfile

import matplotlib.pyplot as plt
from matplotlib_inline.backend_inline import set_matplotlib_formats
set_matplotlib_formats("jpeg", dpi=80, pil_kwargs={"quality": 75})  # small saved figures: a map ~60 kB (PNG ~500 kB)
import numpy as np
from distributed import Client, LocalCluster

import tessera_explore as te
from tessera_explore.testing import CLASSES, make_store, scene_classes

# %% [markdown]
# ## 1. A region, and one labelled tile
# Sixteen 0.1-degree tiles either side of 6 E, where UTM zone 31 meets zone 32, written as a
# local Zarr store. To read it over HTTP, serve the folder and pass the URL: nothing else
# changes.

# %%
work = pathlib.Path(tempfile.mkdtemp(prefix="scale-out-"))
tiles = [(5.85 + 0.1 * i, 52.05 + 0.1 * j) for i in range(4) for j in range(4)]
store = make_store(work / "region.zarr", tiles=tiles, years=[2024], shape=(100, 100), seed=3)
REGION = (5.8, 52.0, 6.2, 52.4)
ONE_TILE = (5.8, 52.1, 5.9, 52.2)

# %% [markdown]
# Label one tile (the synthetic scene knows the true land cover at every point) and map it,
# exactly as on a laptop:

# %%
tile = te.open_embeddings(store, bbox=ONE_TILE, year=2024)
rng = np.random.default_rng(0)
lon, lat = rng.uniform(5.81, 5.89, 200), rng.uniform(52.11, 52.19, 200)
truth = scene_classes(lon, lat, 2024, seed=3)
labels = [(float(a), float(b), CLASSES[c]) for a, b, c in zip(lon, lat, truth) if CLASSES[c] != "water"]
clf = te.fit_classifier(tile, labels)
one = te.predict_map(tile, clf)
one["class"].plot.imshow(cmap="tab10", figsize=(4, 4))

# %% [markdown]
# ## 2. A cluster
# Two worker processes on this machine. On Kubernetes or an HPC system (dask-jobqueue) you
# connect to the scheduler instead: `client = Client("tcp://scheduler:8786")`. The
# dashboard link shows every task as it runs.

# %%
cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
client = Client(cluster)
client.dashboard_link

# %% [markdown]
# ## 3. The same call over the region
# First the estimate: one chunk is computed and timed here, and the job's size follows.

# %%
print(te.estimate_region(te.predict_map, store, clf, bbox=REGION, year=2024, chunk=64, workers=2))

# %% [markdown]
# Then the job. Each UTM zone is processed on its own grid; the classifier is sent to each
# worker once; every chunk is written to `out` as soon as it is done.

# %%
job = te.run_region(te.predict_map, store, clf, bbox=REGION, year=2024, out=work / "region-2024.zarr",
                    client=client, chunk=64)
job

# %% [markdown]
# The output opens lazily, one Dataset per zone. Inside the tile we mapped by hand it holds
# exactly the same classes:

# %%
zones = job.open()
z31 = zones["utm31"]
same = z31["class"].sel(x=one.x, y=one.y, method="nearest").values
print("pixels equal to the single-process map:", (same == one["class"].values).mean())
fig, axes = plt.subplots(1, 2, figsize=(8, 5))
for ax, (name, ds) in zip(axes, zones.items()):
    ds["class"].where(ds["class"] != 255).plot.imshow(ax=ax, cmap="tab10", add_colorbar=False)
    ax.set_title(name)

# %% [markdown]
# ## 4. Interrupted, then resumed
# A job stopped midway (here by raising from `on_chunk` after three chunks; in real life a
# closed laptop or a lost cluster) leaves a valid store: finished chunks are marked done.
# Running the same call again computes only the rest.

# %%
out = work / "similar.zarr"


def stop_after_three(record, seen=[]):  # noqa: B006 - a counter kept between calls
    seen.append(record)
    if len(seen) == 3:
        raise KeyboardInterrupt("stopped")


try:
    te.run_region(te.similarity, store, labels[0][:2], bbox=REGION, year=2024, out=out, client=client, chunk=64,
                  on_chunk=stop_after_three, progress=False)
except KeyboardInterrupt:
    print("interrupted")
resumed = te.run_region(te.similarity, store, labels[0][:2], bbox=REGION, year=2024, out=out, client=client,
                        chunk=64, progress=False)
print(resumed)

# %% [markdown]
# ## 5. One file for the region
# Zones are merged only at export, streaming, into a Cloud-Optimised GeoTIFF with the
# provenance tags of a single-tile export.

# %%
cog = job.to_cog(work / "region-2024-class.tif", variable="class")
import rasterio  # noqa: E402

with rasterio.open(cog) as src:
    print(src.crs, src.shape, src.tags()["TESSERA_DATASET_VERSION"], src.tags()["TESSERA_YEAR"])

# %%
client.close()
cluster.close()

# %% [markdown]
# ## Real data
# The same cells map real embeddings: replace the store by a published dataset name and the
# bbox by your region, e.g. `te.run_region(te.predict_map, "v1.1", clf, bbox=(-0.5, 51.9,
# 0.5, 52.6), year=2024, out="cambs-2024.zarr", client=client)` with the classifier trained
# on a tile of the same dataset and year. Read `te.estimate_region(...)` first: it prints the
# bytes the job will read and its run time on your cluster.
#
# ## Summary
# - `te.run_region(verb, source, *args, bbox=, year=, out=, client=)` runs a single-area verb
#   over a region on dask.distributed, per UTM zone, and writes a Zarr store.
# - The result equals the single-process map; the job resumes where it stopped.
# - `te.estimate_region` says what a job costs before it starts; `job.to_cog` merges the
#   zones into one file.
#
# ## What next
# - `docs/design/scale-out.md`: how chunks, retries and resumption work, and what a
#   country would cost.
