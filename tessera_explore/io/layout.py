"""The published TESSERA store layout, in one place: names, attributes, chunk grids.

Every module that reads or writes a store in the published layout takes its names from
here: the reader (:mod:`~tessera_explore.io.store`), :func:`~tessera_explore.fetch_region`,
``embed_region``'s writer (:mod:`tessera_explore.region.encode`) and the synthetic
stores of :mod:`tessera_explore.testing.store`.  The facts come from
``shared/spec/zarr-store.md``:

* **Groups.**  A Zarr store holds one group per UTM zone, ``utm01`` ... ``utm60``, each
  one grid in the zone's northern CRS (EPSG 326NN; southern rows have negative
  northings).  The Icechunk copy holds one group per zone and hemisphere, ``30N`` /
  ``30S``, each in its own CRS (326NN / 327NN).
* **Attributes.**  The root carries the ``geoemb:`` convention (:data:`ROOT_ATTRS`);
  a zone group the ``proj:`` and ``spatial:`` conventions, and where the store says
  which years were completely filled, ``years_complete`` (a list of years).
* **Arrays.**  ``embeddings`` int8 ``(time, band, y, x)``, nested prefixes
  ``embeddings_dN`` ``(time, band_dN, y, x)``, ``scales`` float32 ``(time, y, x)``
  (NaN water, +inf not computed), the per-(zone, year) statistics
  (:data:`STATS`) and, where the store has them, the per-pixel quality arrays
  (:data:`OBS_COUNTS`, ``*_month_covered``).
* **Chunk grids.**  The Cambridge layout puts 32 px inner chunks in 4,096 px shards,
  the dclimate v1.1 layout 256 px inner chunks in 2,048 px shards.  These are what the
  *writers* choose (:data:`CHUNK_GRIDS`); a reader takes every array's grid from its
  own metadata (:func:`chunk_grid`) and never assumes one.
* **Versions.**  The root's ``geoemb:model`` is a URL ending in the model number
  (``.../1.1``); :func:`model_url` and :func:`version_from_model` are the one map between
  that number and the package's version labels and model generations.

This module reads nothing and imports no I/O library at import time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "FALSE_NORTHING",
    "zone_group",
    "parse_zone_group",
    "hemisphere_group",
    "parse_hemisphere_group",
    "zone_epsg",
    "EMBEDDINGS",
    "SCALES",
    "depth_array",
    "depth_band",
    "STATS",
    "OBS_COUNTS",
    "MONTH_COVERED",
    "YEARS_COMPLETE",
    "MIN_S2_OBS",
    "is_quality_array",
    "ChunkGrid",
    "CAMBRIDGE",
    "DCLIMATE",
    "CHUNK_GRIDS",
    "chunk_grid",
    "depth_chunk",
    "MODEL_NUMBERS",
    "model_url",
    "version_from_model",
    "root_attrs",
    "zone_attrs",
    "create_zone_arrays",
    "years_complete",
]

#: Northing of the equator in a southern UTM CRS (removed in the Zarr stores' zone grids).
FALSE_NORTHING = 10_000_000.0

# --- groups ------------------------------------------------------------------------------

_ZONE_RE = re.compile(r"utm(\d\d)")
_HEMI_RE = re.compile(r"(\d\d)([NS])")


def zone_group(zone: int) -> str:
    """Name of a zone's group in a Zarr store: ``utm01`` ... ``utm60``."""
    return f"utm{int(zone):02d}"


def parse_zone_group(name: str) -> int | None:
    """The zone of a Zarr store's group name (``utm31`` -> 31), None for other names."""
    m = _ZONE_RE.fullmatch(name)
    return int(m.group(1)) if m else None


def hemisphere_group(zone: int, hemisphere: str) -> str:
    """Name of a zone-and-hemisphere group of the Icechunk copy: ``31N``, ``21S``."""
    if hemisphere not in ("N", "S"):
        raise ValueError(f"hemisphere must be 'N' or 'S', got {hemisphere!r}")
    return f"{int(zone):02d}{hemisphere}"


def parse_hemisphere_group(name: str) -> tuple[int, str] | None:
    """``(zone, "N" | "S")`` of an Icechunk group name, None for other names."""
    m = _HEMI_RE.fullmatch(name)
    return (int(m.group(1)), m.group(2)) if m else None


def zone_epsg(zone: int, *, south: bool = False) -> int:
    """EPSG code of a zone's CRS: 326NN (what every Zarr zone grid uses), or 327NN."""
    return (32700 if south else 32600) + int(zone)


# --- attributes --------------------------------------------------------------------------

CONVENTIONS = "zarr_conventions"
GEOEMB_TYPE = "geoemb:type"
GEOEMB_DIMENSIONS = "geoemb:dimensions"
GEOEMB_MODEL = "geoemb:model"
GEOEMB_DATA_TYPE = "geoemb:data_type"
GEOEMB_GSD = "geoemb:gsd"
GEOEMB_SPATIAL_LAYOUT = "geoemb:spatial_layout"
GEOEMB_BUILD_VERSION = "geoemb:build_version"
GEOEMB_QUANTIZATION = "geoemb:quantization"
GEOEMB_DEPTHS = "geoemb:depths"
GEOEMB_LANDMASK = "geoemb:landmask"
#: Written by this package (and read first): the dataset's version label and variant.
DATASET_VERSION = "dataset_version"
DATASET_VARIANT = "dataset_variant"
#: Every root attribute of the convention.
ROOT_ATTRS = (CONVENTIONS, GEOEMB_TYPE, GEOEMB_DIMENSIONS, GEOEMB_MODEL, GEOEMB_DATA_TYPE, GEOEMB_GSD,
              GEOEMB_SPATIAL_LAYOUT, GEOEMB_BUILD_VERSION, GEOEMB_QUANTIZATION, GEOEMB_DEPTHS, GEOEMB_LANDMASK)

PROJ_CODE = "proj:code"
SPATIAL_DIMENSIONS = "spatial:dimensions"
SPATIAL_TRANSFORM = "spatial:transform"
SPATIAL_SHAPE = "spatial:shape"
SPATIAL_BBOX = "spatial:bbox"
SPATIAL_REGISTRATION = "spatial:registration"
#: Zone group attribute (or a ``(time,)`` array): the years that were completely filled.
#: A year of the time axis missing from it was never filled: its pixels are "not
#: computed", whatever its chunks hold.
YEARS_COMPLETE = "years_complete"

# --- arrays and coordinates ----------------------------------------------------------------

EMBEDDINGS = "embeddings"
SCALES = "scales"
TIME, Y, X, BAND, MONTH = "time", "y", "x", "band", "month"
#: The spatial dimension names of the Zarr stores and of the Icechunk copy.
Y_DIMS = ("y", "northing")
X_DIMS = ("x", "easting")
#: Dimension names of the arrays of a Zarr zone group.
EMBEDDING_DIMS = (TIME, BAND, Y, X)
SCALE_DIMS = (TIME, Y, X)


def depth_array(depth: int) -> str:
    """Name of a nested-depth prefix array: ``embeddings_d16``."""
    return f"{EMBEDDINGS}_d{int(depth)}"


def depth_band(depth: int) -> str:
    """Band dimension (and coordinate) of a nested-depth prefix array: ``band_d16``."""
    return f"{BAND}_d{int(depth)}"


#: Per-(zone, year) statistics gathered while a store was filled (``_sum`` and ``_prod``
#: over every valid pixel; a weighted raw-pixel sample; which shards are folded in).
STATS = ("stretch_stats_count", "stretch_stats_sum", "stretch_stats_prod", "stretch_sample",
         "stretch_sample_scales", "stretch_sample_count", "stretch_stats_shards")
#: Per-pixel observation counts of the dclimate v1.1 store, ``(time, y, x)``.
OBS_COUNTS = ("s2_obs_count", "s1_asc_obs_count", "s1_desc_obs_count")
MONTH_COVERED_SUFFIX = "_month_covered"
#: The month-coverage arrays the synthetic stores write (a ``month`` axis of 12, True
#: where a month had an observation); any array named ``*_month_covered`` is one.
MONTH_COVERED = ("s2_month_covered", "s1_asc_month_covered", "s1_desc_month_covered")
#: The quality rule of the dclimate run: a pixel with fewer valid optical observations
#: is left empty (pixels without radar are still embedded).
MIN_S2_OBS = 15


def is_quality_array(name: str) -> bool:
    """True for the per-pixel quality arrays (observation counts, month coverage)."""
    return name in OBS_COUNTS or name.endswith(MONTH_COVERED_SUFFIX)


# --- chunk grids ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkGrid:
    """The spatial chunk grid of an array: ``inner`` chunk and ``shard`` sides in pixels."""

    inner: int
    shard: int

    def __post_init__(self):
        if self.inner < 1 or self.shard < self.inner or self.shard % self.inner:
            raise ValueError(f"shard {self.shard} must be a positive multiple of the inner chunk {self.inner}")


#: The Cambridge layout (and the other converted stores): 32 px in 4,096 px shards.
CAMBRIDGE = ChunkGrid(32, 4096)
#: The dclimate v1.1 layout: 256 x 256 x 128 int8 inner chunks in 2,048 px shards.
DCLIMATE = ChunkGrid(256, 2048)
CHUNK_GRIDS = {"cambridge": CAMBRIDGE, "dclimate": DCLIMATE}


def _axis_of(arr: Any, names: Sequence[str], fallback: int) -> int:
    dims = tuple(getattr(getattr(arr, "metadata", None), "dimension_names", None) or ())
    for i, d in enumerate(dims):
        if d in names:
            return i
    return fallback % len(arr.shape)


def chunk_grid(arr: Any) -> ChunkGrid:
    """The spatial chunk grid of a Zarr array, from its own metadata: the inner chunk and
    shard along its ``y`` (or ``northing``) axis; an unsharded array's shard is its chunk.

    The axis is found by dimension name, else it is the second-to-last axis (the Zarr
    stores' ``(..., y, x)``)."""
    ax = _axis_of(arr, Y_DIMS, -2)
    chunks = tuple(arr.chunks)
    shards = getattr(arr, "shards", None)
    inner = int(chunks[ax])
    return ChunkGrid(inner, int(shards[ax]) if shards else inner)


def depth_chunk(depth: int, inner: int, shard: int, nbands: int = 128) -> int:
    """Inner chunk side of a ``depth``-band prefix array: bytes per chunk held about equal
    to the full array's (larger sides for fewer bands), never beyond the shard."""
    side = inner
    while side * 2 <= shard and shard % (side * 2) == 0 and depth * (side * 2) ** 2 <= nbands * inner * inner:
        side *= 2
    return side


# --- versions --------------------------------------------------------------------------------

#: Model generation -> the model number that ends the root's ``geoemb:model`` URL.
MODEL_NUMBERS = {"v1.0": "1.0", "v1.1": "1.1", "v2": "2.0"}
#: Model number -> the version label this package gives a store that records no other.
_VERSION_OF_NUMBER = {"1.0": "v1", "1": "v1", "1.1": "v1.1", "2.0": "v2", "2": "v2"}
MODEL_BASE = "https://geotessera.org/model/"


def model_url(version: str) -> str:
    """The ``geoemb:model`` URL of a dataset version label or model generation
    (``"v1"``, ``"v1.1-dclimate"``, ``"v1.0"``, ``"v2"``...)."""
    from .._schema import generation_of

    gen = generation_of(str(version))
    return MODEL_BASE + MODEL_NUMBERS.get(gen, gen.lstrip("v"))


def version_from_model(model: str) -> str:
    """The version label of a ``geoemb:model`` URL (``.../1.1`` -> ``"v1.1"``), or
    ``"unknown"`` when it ends in no number."""
    m = re.search(r"(\d+(?:\.\d+)?)/?$", str(model))
    if not m:
        return "unknown"
    return _VERSION_OF_NUMBER.get(m.group(1), f"v{m.group(1)}")


# --- writing ---------------------------------------------------------------------------------


def root_attrs(*, version: str, variant: str, dimensions: int = 128, gsd: float = 10.0,
               build_version: str, generation: str | None = None, depths: Iterable[int] = (),
               **extra: Any) -> dict:
    """The root attributes of a store in the published layout (``geoemb:`` convention plus
    ``dataset_version`` / ``dataset_variant``).  ``generation`` (default: the version's)
    names the model in ``geoemb:model``; ``depths`` lists nested prefix arrays."""
    attrs = {
        CONVENTIONS: [{"name": "geoemb:", "description": "geo-embeddings convention"}],
        GEOEMB_TYPE: "pixel",
        GEOEMB_DIMENSIONS: int(dimensions),
        GEOEMB_MODEL: model_url(generation or version),
        GEOEMB_DATA_TYPE: "int8",
        GEOEMB_GSD: float(gsd),
        GEOEMB_SPATIAL_LAYOUT: "utm_zones",
        GEOEMB_BUILD_VERSION: str(build_version),
        GEOEMB_QUANTIZATION: {"method": "per_pixel_scale", "original_dtype": "float32", "quantized_dtype": "int8",
                              "scale": {"type": "array", "array_name": SCALES, "nodata": "+inf"}},
        DATASET_VERSION: str(version),
        DATASET_VARIANT: str(variant),
    }
    depths = sorted({int(d) for d in depths} - {int(dimensions)})
    if depths:
        attrs[GEOEMB_DEPTHS] = [{"dimensions": d, "array": depth_array(d)} for d in depths] + [
            {"dimensions": int(dimensions), "array": EMBEDDINGS}]
    attrs.update(extra)
    return attrs


def zone_attrs(zone: int, /, *, res: float, x0: float, y0: float, shape: tuple[int, int], south: bool = False,
               **extra: Any) -> dict:
    """The ``proj:`` / ``spatial:`` attributes of a zone grid whose top-left corner is
    ``(x0, y0)`` (``south``: a southern hemisphere group of the Icechunk copy)."""
    h, w = (int(v) for v in shape)
    res = float(res)
    return {
        PROJ_CODE: f"EPSG:{zone_epsg(zone, south=south)}",
        SPATIAL_DIMENSIONS: [Y, X],
        SPATIAL_TRANSFORM: [res, 0.0, float(x0), 0.0, -res, float(y0)],
        SPATIAL_SHAPE: [h, w],
        SPATIAL_BBOX: [float(x0), float(y0) - h * res, float(x0) + w * res, float(y0)],
        SPATIAL_REGISTRATION: "pixel",
        **extra,
    }


def _coord(g, name: str, values: np.ndarray, dtype: str) -> None:
    a = g.create_array(name, shape=values.shape, dtype=dtype, chunks=values.shape, dimension_names=(name,))
    a[:] = values


def create_zone_arrays(g: Any, *, years: Sequence[int], shape: tuple[int, int], res: float, x0: float,
                       y0: float, grid: ChunkGrid, nbands: int = 128, depths: Iterable[int] = (),
                       quality: bool = False, compressors: Any = "blosc") -> dict:
    """Create the arrays and coordinates of a zone group (in the Zarr layout) and return
    the data arrays by name.

    ``embeddings`` int8 ``(time, band, y, x)`` (fill 0), ``embeddings_dN`` for each of
    ``depths``, ``scales`` float32 ``(time, y, x)`` (fill +inf: not computed), all in
    shards of ``grid.shard`` of inner chunks of ``grid.inner`` (prefixes in larger inner
    chunks, :func:`depth_chunk`), the coordinates ``time`` (int32 years), ``y``, ``x``
    (pixel centres), ``band``, ``band_dN``, and with ``quality`` the observation counts
    (uint16, fill 0) and month coverage (bool ``(time, month, y, x)``, fill False) with
    the ``month`` coordinate.  Nothing is written but the coordinates.
    """
    if compressors == "blosc":
        from zarr.codecs import BloscCodec

        compressors = (BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"),)
    T, (H, W) = len(years), (int(shape[0]), int(shape[1]))
    s, c = grid.shard, grid.inner
    out = {EMBEDDINGS: g.create_array(EMBEDDINGS, shape=(T, nbands, H, W), dtype="int8", shards=(1, nbands, s, s),
                                      chunks=(1, nbands, c, c), compressors=compressors, fill_value=0,
                                      dimension_names=EMBEDDING_DIMS)}
    depths = sorted({int(d) for d in depths})
    for d in depths:
        dc = depth_chunk(d, c, s, nbands)
        out[depth_array(d)] = g.create_array(depth_array(d), shape=(T, d, H, W), dtype="int8", shards=(1, d, s, s),
                                             chunks=(1, d, dc, dc), compressors=compressors, fill_value=0,
                                             dimension_names=(TIME, depth_band(d), Y, X))
    out[SCALES] = g.create_array(SCALES, shape=(T, H, W), dtype="float32", shards=(1, s, s), chunks=(1, c, c),
                                 compressors=compressors, fill_value=np.inf, dimension_names=SCALE_DIMS)
    coords = [(TIME, np.asarray(years, np.int32), "int32"),
              (X, float(x0) + (np.arange(W) + 0.5) * float(res), "float64"),
              (Y, float(y0) - (np.arange(H) + 0.5) * float(res), "float64"),
              (BAND, np.arange(nbands, dtype=np.int32), "int32"),
              *((depth_band(d), np.arange(d, dtype=np.int32), "int32") for d in depths)]
    if quality:
        for name in OBS_COUNTS:
            out[name] = g.create_array(name, shape=(T, H, W), dtype="uint16", shards=(1, s, s), chunks=(1, c, c),
                                       compressors=compressors, fill_value=0, dimension_names=SCALE_DIMS)
        for name in MONTH_COVERED:
            out[name] = g.create_array(name, shape=(T, 12, H, W), dtype="bool", shards=(1, 12, s, s),
                                       chunks=(1, 12, c, c), compressors=compressors, fill_value=False,
                                       dimension_names=(TIME, MONTH, Y, X))
        coords.append((MONTH, np.arange(1, 13, dtype=np.int32), "int32"))
    for name, values, dt in coords:
        _coord(g, name, values, dt)
    return out


def years_complete(group: Any, years: Sequence[int]) -> set[int] | None:
    """The years of ``years`` (the group's time axis) that a zone group says were
    completely filled, from its ``years_complete`` attribute (a list of years) or array
    (``(time,)``, nonzero = complete); None when it says nothing (every year counts)."""
    said = dict(group.attrs).get(YEARS_COMPLETE)
    if said is None:
        try:
            arr = group[YEARS_COMPLETE]
        except KeyError:
            return None
        flags = np.asarray(arr[...]).astype(bool).ravel()
        return {int(y) for y, f in zip(years, flags) if f}
    return {int(y) for y in said}
