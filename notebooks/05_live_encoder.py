# %% [markdown]
# # Live embeddings: any area, any year, from Sentinel-1 and Sentinel-2
#
# ## Overview
# Precomputed TESSERA embeddings cover the years and versions that have been published.
# `te.embed_area` makes them yourself: it searches a STAC API for a year of Sentinel-2 L2A
# and Sentinel-1 RTC over an area, loads the imagery onto a 10 m UTM grid, prepares it
# exactly as the model was trained, runs the encoder, and returns the same embeddings
# DataArray as `te.open_embeddings`. `te.compare` then measures how closely two
# embeddings of the same model generation agree, pixel by pixel.
#
# So that this notebook runs anywhere without network, it starts a **local STAC API**
# (stac-fastapi-pgstac, the software Planetary Computer runs, on a private PostgreSQL
# database) and a **COG file server** on 127.0.0.1, loaded with synthetic Sentinel scenes,
# and it uses a small encoder with **random weights**. The embeddings are therefore
# meaningless as land cover, but every step is the real one. The last section shows the
# same code against Planetary Computer with published weights.
#
# ## Prerequisites
# - `01_quickstart.ipynb` (the embeddings schema, PCA false colour).
# - For the local servers: PostgreSQL 15 with PostGIS 3 (`scripts/system-deps.sh` installs
#   them as root) and the test requirements (`requirements/test.txt`). Without them the
#   notebook says why and skips the live cells.
# - Running time: about 20 s (the servers take a few seconds to start).

# %% [markdown]
# ## Imports

# %%
import shutil
import tempfile
import time

import matplotlib.pyplot as plt
from matplotlib_inline.backend_inline import set_matplotlib_formats
set_matplotlib_formats("jpeg", dpi=80, pil_kwargs={"quality": 75})  # small saved figures: a map ~60 kB (PNG ~500 kB)
import numpy as np

import tessera_explore as te
from tessera_explore.exceptions import VersionMismatchError
from tessera_explore.testing.stac_server import LocalStac, unavailable_reason

# %% [markdown]
# ## 1. Start the local servers
# `LocalStac` writes a synthetic year of Sentinel-2 L2A (ten bands and the scene
# classification, with clouds, shadows, snow and no-data swaths) and Sentinel-1 RTC (VV and
# VH) as Cloud-Optimised GeoTIFFs for an area of about 650 m x 650 m, serves them over HTTP with range
# requests, and loads the STAC items into pgstac. `servers.stac` is the
# `StacConfig` that points `embed_area` at it: Planetary Computer's collection and asset
# names, without URL signing.
#
# If the servers cannot run here, this cell prints the reason and every later cell does
# nothing.

# %%
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

# %% [markdown]
# ## 2. A small encoder
# `build_encoder` makes a randomly initialised encoder of a model generation; the sizes
# here are tiny so it runs in a second on a CPU. Real use loads published weights with
# `load_encoder` (last section). torch is imported only now: `import tessera_explore`
# never imports it.

# %%
if servers is not None:
    import torch
    from tessera_explore.encoder import build_encoder, count_parameters

    torch.manual_seed(0)
    model = build_encoder("v2", latent_dim=16, num_layers=2, nhead=4, dim_feedforward=64, name="random-v2-tiny")
    print(f"generation {model.generation}, {count_parameters(model):,} parameters")

# %% [markdown]
# ## 3. Embed the area
# One call: search, load, prepare, encode. `cache=` keeps the search results and loaded
# granules, so the same area and year never downloads twice. `return_prepared=True` also
# returns the model input, with what was found and how long each step took.

# %%
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

# %% [markdown]
# The result follows the embeddings schema, like every other source of embeddings here;
# the attributes record the model generation and where the imagery came from.

# %%
if servers is not None:
    te.validate(live)
    assert live.dims == ("band", "y", "x") and live.sizes["band"] == 128
    print(dict(live.sizes), live.rio.crs, "| year", int(live.year))
    for key in ("dataset_version", "dataset_variant", "model_generation", "source", "s2_dates",
                "s1_ascending_dates", "s1_descending_dates"):
        print(f"  {key}: {live.attrs[key]}")

# %% [markdown]
# PCA false colour, as for precomputed embeddings. Even with random weights the fields
# show, because the input differs from field to field; the colours mean nothing more.

# %%
if servers is not None:
    comps, pca = te.project(live, random_state=0)
    rgb = te.to_rgb(comps)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(rgb.transpose("y", "x", "band").values)
    ax.set_title(f"live embeddings {YEAR}, PCA false colour")
    ax.set_axis_off()

# %% [markdown]
# ## 4. The second run fetches nothing
# The same call again reads the search results and loaded imagery from the cache: no
# request reaches the servers, and only the encoding is repeated.

# %%
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

# %% [markdown]
# ## 5. Compare embeddings
# `te.compare(a, b)` places `a` on `b`'s grid and gives the cosine agreement of every
# pixel (1 = same direction), with summary statistics in the attributes. Its use is live
# against precomputed embeddings of the same area. It only compares embeddings of the
# **same model generation**: different generations live in unrelated feature spaces.
#
# An array against itself agrees everywhere. Embedding the same area from Sentinel-2 alone
# (`s1=False`) shows how much the radar contributes (here to a random model).

# %%
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

# %% [markdown]
# The demo scene's embeddings are of generation v1.0, the live ones v2: `compare` refuses
# them and says why.

# %%
if servers is not None:
    try:
        te.compare(live, te.tutorial.open_demo())
    except VersionMismatchError as err:
        print("refused:", err)
    else:
        raise AssertionError("compare accepted embeddings of different model generations")

# %% [markdown]
# ## 6. Stop the servers
# The database and the API run as separate processes until stopped (at the latest when
# the kernel exits). Stop them, and remove the cache folder.

# %%
if servers is not None:
    servers.stop()
    shutil.rmtree(cache, ignore_errors=True)
    print("servers stopped")

# %% [markdown]
# ## Real use: Planetary Computer and published weights
# The same calls with real data. This needs internet and is not run here. Weights are
# downloaded explicitly, once, and verified (`te.encoder.WEIGHTS` lists them: `v1.0-qat`,
# `v1.1-mpc`, `v1.1-aws`, `v2-nano`, `v2-small`, `v2-medium`, `v2-large`). Planetary
# Computer's asset hrefs are signed automatically. Areas are limited to about 5 km x 5 km
# by default (`max_pixels`, `max_area_km2`, checked before anything is fetched). On two CPU
# cores the `v2-small` model encodes about 1 km² a minute; `device="cuda"` uses a GPU.
#
# ```python
# import tessera_explore as te
# from tessera_explore.encoder import download_weights, load_encoder
#
# bbox = (0.10, 52.17, 0.13, 52.19)                       # about 2 km x 2 km near Cambridge
#
# # a v2 student model (28 MB)
# model = load_encoder(download_weights("v2-small"))
# live = te.embed_area(bbox, 2024, model=model, stac="planetary-computer")
# comps, pca = te.project(live)
#
# # against the precomputed v1 product: embed with the v1.0 model on its grid
# te.fetch_tiles(bbox, 2024, dest="tessera-data")
# pre = te.open_embeddings("tessera-data", bbox=bbox, year=2024)
# model_v1 = load_encoder(download_weights("v1.0-qat"))  # Google Drive: if the download is refused,
#                                                         # fetch the file in a browser and pass its path
# live_v1 = te.embed_area(None, 2024, like=pre, model=model_v1, stac="planetary-computer")
# agreement = te.compare(live_v1, pre)
# print(agreement.attrs["mean"], agreement.attrs["p05"])
# ```
#
# ## Summary
# - `te.embed_area(bbox, year, model=..., stac=...)` embeds any area live and returns the
#   same DataArray schema as precomputed embeddings; `cache=` makes reruns free.
# - `te.compare` measures per-pixel agreement between embeddings of one model generation
#   and refuses to compare across generations.
# - `tessera_explore.testing.stac_server.LocalStac` runs a real STAC API and COG server
#   locally, for offline demos and tests.
