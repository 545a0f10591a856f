"""``export_map``: maps as Cloud-Optimised GeoTIFF on the embeddings' grid, with provenance.

Tags (GDAL metadata, readable with ``rasterio.open(p).tags()``):
``TESSERA_PRODUCT``, ``TESSERA_DATASET_VERSION``, ``TESSERA_DATASET_VARIANT``,
``TESSERA_YEAR``, ``TESSERA_MODEL``, ``TESSERA_SETTINGS`` (JSON), ``TESSERA_LABEL_FILE``,
``TESSERA_CLASSES`` / ``TESSERA_CLASS_COLORS`` (JSON lists, class maps), and the
product's own settings (metric, query, threshold, breaks).  Class maps get a colour
table, so GIS software shows them in the labels' colours.  Files are written to a
temporary name and renamed.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import xarray as xr

from .._atomic import atomic_target
from ..exceptions import SchemaError

__all__ = ["export_map"]

_TAG_KEYS = {
    "product": "TESSERA_PRODUCT",
    "dataset_version": "TESSERA_DATASET_VERSION",
    "dataset_variant": "TESSERA_DATASET_VARIANT",
    "model_generation": "TESSERA_MODEL_GENERATION",
    "year": "TESSERA_YEAR",
    "model": "TESSERA_MODEL",
    "settings": "TESSERA_SETTINGS",
    "label_file": "TESSERA_LABEL_FILE",
    "n_labels": "TESSERA_N_LABELS",
    "metric": "TESSERA_METRIC",
    "reduce": "TESSERA_REDUCE",
    "query": "TESSERA_QUERY",
    "negatives": "TESSERA_NEGATIVES",
    "threshold": "TESSERA_THRESHOLD",
    "breaks": "TESSERA_BREAKS",
    "k": "TESSERA_K",
}


def _tag(v: Any) -> str:
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(list(v) if isinstance(v, tuple) else v)
    return str(v)


def _hex_rgba(c: str) -> tuple:
    c = c.lstrip("#")
    return (int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16), 255)


def _write(da: xr.DataArray, path: str, attrs: dict, extra: dict, compress: str) -> str:
    import rasterio

    from ..config import version as _version

    __version__ = _version()

    if da.ndim == 2:
        da = da.expand_dims("band_", axis=0)
    if da.ndim != 3 or tuple(da.dims[1:]) != ("y", "x"):
        raise SchemaError(f"export_map needs (y, x) or (band, y, x) maps, got dims {da.dims}")
    crs = da.rio.crs
    if crs is None:
        raise SchemaError(f"map {da.name!r} has no CRS; it must come from the embeddings' grid")
    data = np.asarray(da.values)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    nodata = da.rio.nodata
    if nodata is None and np.issubdtype(data.dtype, np.floating):
        nodata = np.nan
    tags = {}
    for k, v in {**attrs, **da.attrs}.items():
        if k in _TAG_KEYS and v is not None and v != "":
            tags[_TAG_KEYS[k]] = _tag(v)
    if "TESSERA_YEAR" not in tags and "year" in da.coords and da.coords["year"].ndim == 0:
        tags["TESSERA_YEAR"] = _tag(da.coords["year"].item())  # a map on the embeddings' grid keeps its year
    classes = da.attrs.get("classes")
    colors = da.attrs.get("colors")
    if classes is not None:
        tags["TESSERA_CLASSES"] = _tag(classes)
    if colors is not None:
        tags["TESSERA_CLASS_COLORS"] = _tag(colors)
    tags["TESSERA_VARIABLE"] = str(da.name)
    tags["TESSERA_EXPLORE_VERSION"] = __version__
    tags.update({k: _tag(v) for k, v in extra.items()})
    path = os.path.abspath(os.fspath(path))
    with atomic_target(path) as tmp:
        with rasterio.open(
            tmp, "w", driver="COG", height=data.shape[1], width=data.shape[2], count=data.shape[0],
            dtype=data.dtype, crs=crs, transform=da.rio.transform(recalc=True), nodata=nodata,
            compress=compress, blocksize=256, overview_resampling="nearest",
        ) as dst:
            dst.write(data)
            dst.update_tags(**tags)
            names = [str(da.name)] if data.shape[0] == 1 else [str(v) for v in da[da.dims[0]].values]
            for i, nm in enumerate(names, start=1):
                dst.set_band_description(i, nm)
            if colors and data.dtype == np.uint8 and data.shape[0] == 1 and all(colors):
                dst.write_colormap(1, {i: _hex_rgba(c) for i, c in enumerate(colors)})
    return path


def export_map(result: xr.DataArray | xr.Dataset, path: str | os.PathLike, *, variables: Any = None,
               labels: Any = None, tags: dict | None = None, compress: str = "deflate") -> list:
    """Write maps as Cloud-Optimised GeoTIFF with provenance tags.

    Parameters
    ----------
    result : a map from :func:`predict_map`, :func:`similarity`, :func:`change` or
        :func:`cluster` (a DataArray, or a Dataset of several maps).
    path : output file.  A Dataset with several variables writes one file per variable,
        named ``<stem>_<variable>.tif`` beside ``path``.
    variables : the Dataset variables to write (default: all).
    labels : the :class:`LabelStore` or label file the map came from, recorded in
        ``TESSERA_LABEL_FILE`` (by default the one recorded in the map's attrs).
    tags : extra tags to add.

    Returns the list of files written.
    """
    extra = dict(tags or {})
    if labels is not None:
        extra["TESSERA_LABEL_FILE"] = getattr(labels, "path", None) or (
            os.path.abspath(os.fspath(labels)) if isinstance(labels, (str, os.PathLike)) else "(in memory)")
    path = os.fspath(path)
    if isinstance(result, xr.DataArray):
        return [_write(result, path, {}, extra, compress)]
    if not isinstance(result, xr.Dataset):
        raise SchemaError(f"export_map takes a DataArray or Dataset map, got {type(result).__name__}")
    names = list(result.data_vars) if variables is None else (
        [variables] if isinstance(variables, str) else list(variables))
    missing = [n for n in names if n not in result.data_vars]
    if missing:
        raise SchemaError(f"no variable {missing} in the map; it holds {list(result.data_vars)}")
    if len(names) == 1:
        return [_write(result[names[0]], path, result.attrs, extra, compress)]
    stem, ext = os.path.splitext(path)
    return [_write(result[n], f"{stem}_{n}{ext or '.tif'}", result.attrs, extra, compress) for n in names]
