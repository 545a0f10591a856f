"""Write the tutorial notebooks from their cell sources (outputs stripped).

Keeping the sources here makes notebook diffs readable; run
``.venv/bin/python scripts/make_notebooks.py`` after editing.
"""

from __future__ import annotations

import pathlib

import nbformat as nbf

HERE = pathlib.Path(__file__).resolve().parent.parent / "notebooks"


def md(s: str):
    return nbf.v4.new_markdown_cell(s.strip("\n"))


def code(s: str):
    return nbf.v4.new_code_cell(s.strip("\n"))


def write(name: str, cells: list) -> None:
    nb = nbf.v4.new_notebook()
    nb.cells = cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, c in enumerate(nb.cells):
        c["id"] = f"{name.split('_')[0]}-{i:02d}"
    nbf.write(nb, HERE / name)


QUICKSTART = [
    md("""
# Quickstart: TESSERA embeddings in five minutes

## Overview
TESSERA gives every 10 m pixel on Earth a 128-number *embedding* that summarises a
year of Sentinel-1 and Sentinel-2 observations. Pixels with similar embeddings look and
behave alike through the year. This notebook opens a built-in **demo scene** (synthetic
farmland near Cambridge, two years, no network needed) and shows the basic moves:

1. open embeddings as an `xarray.DataArray`;
2. look at them as false colour;
3. compare two years.

## Prerequisites
- Python and a little NumPy/xarray.
- Nothing to download: the demo scene is generated on first use (about 10 s) and cached.
"""),
    md("## Imports"),
    code("""
import numpy as np
import matplotlib.pyplot as plt
import tessera_explore as te
"""),
    md("""
## 1. Open the demo scene
`open_demo` returns the same kind of array as `te.open_embeddings` does for downloaded
tiles: dims `(band, y, x)`, 128 bands, coordinates in metres of the local UTM zone, and
NaN where there is no data (water). Nothing is read from disk until it is needed.
"""),
    code("""
da = te.tutorial.open_demo(2024)
da
"""),
    code("""
print("CRS:", da.rio.crs, "| pixels:", da.sizes["y"] * da.sizes["x"], "| dataset version:", da.attrs["dataset_version"])
"""),
    md("""
## 2. See it: a false-colour picture
Three numbers per pixel can be shown as red, green and blue. A principal component
analysis (PCA) picks the three directions in which the embeddings vary most.
Fields, woods, towns and water stand out because their embeddings differ.
"""),
    code("""
small = da.isel(x=slice(None, None, 4), y=slice(None, None, 4)).values  # a quick, coarse look
pixels = small.reshape(128, -1).T
ok = ~np.isnan(pixels[:, 0])
centred = pixels[ok] - pixels[ok].mean(0)
_, _, vt = np.linalg.svd(centred[::10], full_matrices=False)
pcs = centred @ vt[:3].T
lo, hi = np.percentile(pcs, [2, 98], axis=0)
rgb = np.zeros((pixels.shape[0], 3))
rgb[ok] = np.clip((pcs - lo) / (hi - lo), 0, 1)
plt.figure(figsize=(8, 6))
plt.imshow(rgb.reshape(small.shape[1], small.shape[2], 3))
plt.title("Demo scene, PCA false colour (2024)")
plt.axis("off");
"""),
    md("""
## 3. Compare two years
The same pixel in 2023 and 2024: where the land cover changed (crop rotation, new
buildings), the embeddings move apart.
"""),
    code("""
before = te.tutorial.open_demo(2023).isel(x=slice(None, None, 4), y=slice(None, None, 4)).values
distance = np.linalg.norm(small - before, axis=0)
plt.figure(figsize=(8, 6))
plt.imshow(distance, cmap="magma")
plt.colorbar(label="embedding distance 2023 -> 2024")
plt.axis("off");
"""),
    md("""
## Your own area
With network access, download the tiles of an area and open them the same way:

```python
tiles = te.fetch_tiles((0.05, 52.15, 0.25, 52.25), 2024, dest="tessera-data")
da = te.open_embeddings("tessera-data", bbox=(0.05, 52.15, 0.25, 52.25), year=2024)
```

## Summary
- `te.tutorial.open_demo()` and `te.open_embeddings()` return one lazy DataArray schema.
- No-data pixels are NaN, never zero vectors.
- False colour and year-to-year distance are a few lines of NumPy away.
"""),
]

if __name__ == "__main__":
    write("01_quickstart.ipynb", QUICKSTART)
