"""The one DataArray contract that every embeddings array follows.

An embeddings array is a plain :class:`xarray.DataArray`:

* name ``"embedding"``, dims ``("band", "y", "x")`` (rioxarray's order), 128 bands;
* coordinates ``band`` (1..128), ``y`` and ``x`` (pixel centres, metres in a UTM CRS,
  ``y`` decreasing), a scalar ``year`` coordinate and ``spatial_ref`` written by
  ``.rio.write_crs``;
* float32 values, NaN where a pixel has no embedding (never a zero vector);
* attrs ``dataset_version``, ``dataset_variant``, ``model_generation`` and ``source``.

:func:`open_embeddings` (precomputed) and ``embed_area`` (live encoder) both return
arrays built by :func:`make_embedding_array` and checked by :func:`validate`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from ._grid import Grid
from .exceptions import SchemaError, VersionMismatchError

__all__ = [
    "N_BANDS",
    "DIMS",
    "NAME",
    "DATASET_VERSIONS",
    "generation_of",
    "variant_of",
    "make_embedding_array",
    "validate",
    "check_compatible",
    "dataset_key",
    "same_dataset",
    "describe_dataset",
]

NAME = "embedding"
DIMS = ("band", "y", "x")
N_BANDS = 128
PIXEL_SIZE = 10.0  # metres: the pixel of a one-pixel array, whose coordinates cannot tell it
REQUIRED_ATTRS = ("dataset_version", "dataset_variant", "model_generation", "source")

#: Known dataset versions -> (default variant, model generation).  Embeddings of
#: different generations, or of different variants (separate runs) of one generation,
#: live in unrelated feature spaces.
DATASET_VERSIONS: dict[str, tuple[str, str]] = {
    "v1": ("vultr", "v1.0"),
    "v1.1-cam": ("cambridge", "v1.1"),
    "v1.1-cambridge": ("cambridge", "v1.1"),
    "v1.1": ("dclimate", "v1.1"),
    "v1.1-dclimate": ("dclimate", "v1.1"),
    "v2": ("2B-L~beta1", "v2"),
    "v2-2B-L~beta1": ("2B-L~beta1", "v2"),
    "v2-2B-L~beta2": ("2B-L~beta2", "v2"),
}


def generation_of(dataset_version: str) -> str:
    """Model generation (``"v1.0"``, ``"v1.1"``, ``"v2"``) of a dataset version string."""
    if dataset_version in DATASET_VERSIONS:
        return DATASET_VERSIONS[dataset_version][1]
    if dataset_version.startswith("v2"):
        return "v2"
    if dataset_version.startswith("v1.1"):
        return "v1.1"
    if dataset_version.startswith("v1"):
        return "v1.0"
    return dataset_version


def variant_of(dataset_version: str) -> str:
    """Default variant of a dataset version (``"unknown"`` for versions we do not know)."""
    return DATASET_VERSIONS.get(dataset_version, ("unknown", ""))[0]


def make_embedding_array(
    data: Any,
    *,
    x: np.ndarray,
    y: np.ndarray,
    crs: Any,
    year: int,
    dataset_version: str,
    source: str,
    dataset_variant: str | None = None,
    model_generation: str | None = None,
    extra_attrs: dict | None = None,
) -> xr.DataArray:
    """Wrap ``data`` of shape (bands, len(y), len(x)) in the embeddings schema.

    ``data`` may be a NumPy or dask array; ``bands`` is 128, or fewer for the nested
    depth prefixes of the v2 stores.  ``x``/``y`` are pixel-centre coordinates in ``crs``,
    evenly spaced (:meth:`~tessera_explore.io.grid.Grid.from_xy` gives the transform and
    raises :class:`~tessera_explore.exceptions.ArgumentError` on irregular ones).
    """
    import rioxarray  # noqa: F401  (registers the .rio accessor)

    attrs = {
        "dataset_version": str(dataset_version),
        "dataset_variant": str(dataset_variant or variant_of(dataset_version)),
        "model_generation": str(model_generation or generation_of(dataset_version)),
        "source": str(source),
        "long_name": "TESSERA embedding",
    }
    if extra_attrs:
        attrs.update(extra_attrs)
    da = xr.DataArray(
        data,
        dims=DIMS,
        coords={
            "band": np.arange(1, int(data.shape[0]) + 1, dtype=np.int16),
            "y": np.asarray(y, dtype=np.float64),
            "x": np.asarray(x, dtype=np.float64),
            "year": int(year),
        },
        name=NAME,
        attrs=attrs,
    )
    # one pixel on both axes: the TESSERA pixel size; irregular x/y raise ArgumentError
    one_pixel = da.sizes["x"] == 1 and da.sizes["y"] == 1
    grid = Grid.from_xy(da.x.values, da.y.values, crs, resolution=PIXEL_SIZE if one_pixel else None)
    da = da.rio.write_crs(crs)
    da = da.rio.write_transform(grid.transform)
    da.rio.write_nodata(np.nan, encoded=False, inplace=True)
    return da


def validate(da: Any, *, name: str = "embeddings") -> xr.DataArray:
    """Check that ``da`` follows the embeddings schema; return it unchanged.

    Raises :class:`~tessera_explore.exceptions.SchemaError` naming every problem found.
    """
    import rioxarray  # noqa: F401  (registers the .rio accessor)

    if not isinstance(da, xr.DataArray):
        raise SchemaError(f"{name}: expected an xarray.DataArray, got {type(da).__name__}")
    problems = []
    if tuple(da.dims) != DIMS:
        problems.append(f"dims are {tuple(da.dims)}, expected {DIMS}")
    elif not 1 <= da.sizes["band"] <= N_BANDS:
        problems.append(f"{da.sizes['band']} bands, expected {N_BANDS} (or a nested-depth prefix of them)")
    for c in ("x", "y", "year"):
        if c not in da.coords:
            problems.append(f"coordinate {c!r} is missing")
    if "year" in da.coords and da.coords["year"].ndim != 0:
        problems.append("coordinate 'year' must be a scalar")
    if da.rio.crs is None:
        problems.append("no CRS (write one with .rio.write_crs)")
    if not np.issubdtype(da.dtype, np.floating):
        problems.append(f"dtype is {da.dtype}, expected a float type (NaN marks no data)")
    missing = [a for a in REQUIRED_ATTRS if a not in da.attrs]
    if missing:
        problems.append(f"attrs missing: {', '.join(missing)}")
    if problems:
        raise SchemaError(f"{name} do not follow the embeddings schema: " + "; ".join(problems))
    return da


def dataset_key(attrs: dict) -> tuple[str, str]:
    """``(model generation, variant)`` of an array's attrs: what must match for two
    embeddings arrays (or an array and a classifier or label file) to be combined."""
    version = str(attrs.get("dataset_version", "?"))
    gen = str(attrs.get("model_generation") or generation_of(version))
    variant = str(attrs.get("dataset_variant") or variant_of(version))
    return gen, variant


def same_dataset(a: dict, b: dict) -> bool:
    """True when two attribute sets describe the same dataset (generation and variant).

    An unknown variant on either side is compared by generation only.
    """
    (ga, va), (gb, vb) = dataset_key(a), dataset_key(b)
    if ga != gb:
        return False
    return va == vb or "unknown" in (va, vb)


def describe_dataset(attrs: dict) -> str:
    """``v1.1 (variant dclimate)``: how errors name an array's dataset."""
    return f"{attrs.get('dataset_version', '?')} (variant {dataset_key(attrs)[1]})"


def check_compatible(*arrays: xr.DataArray, what: str = "combine") -> None:
    """Refuse to combine embeddings of different model generations or dataset variants."""
    if not arrays:
        return
    first = arrays[0]
    for da in arrays[1:]:
        if not same_dataset(first.attrs, da.attrs):
            raise VersionMismatchError(
                f"cannot {what} embeddings of different datasets: {describe_dataset(first.attrs)} from "
                f"{first.attrs.get('source', '?')} and {describe_dataset(da.attrs)} from {da.attrs.get('source', '?')}. "
                "Embeddings of different versions, or of different variants (separate runs) of one version, "
                "live in unrelated feature spaces; open one dataset at a time."
            )
