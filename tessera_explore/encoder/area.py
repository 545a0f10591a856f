"""Embed any area live from Sentinel-2 and Sentinel-1, and compare with precomputed embeddings.

* :func:`area_inputs` (no torch): search, load and prepare one area and year, returning a
  :class:`~tessera_explore.encoder.granules.Prepared` (the upstream prepared-data arrays);
* :func:`embed_area`: the same, then the encoder; returns the embeddings DataArray schema
  (the one :func:`~tessera_explore.open_embeddings` returns);
* :func:`compare`: per-pixel cosine agreement of two embedding arrays of the same model
  generation (live against precomputed, typically).

How the imagery is found and loaded (window, STAC API, grid, cache, size limits) is one
value, :class:`EmbedOptions`, shared by both verbs: pass ``options=EmbedOptions(...)`` or
its fields as keyword arguments (``embed_area(bbox, 2024, model=m, s1=False)``).
``prepare_area`` is the former name of :func:`area_inputs` (deprecated alias).
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..exceptions import ArgumentTypeError, EncoderError, SchemaError, VersionMismatchError
from .granules import (
    MIN_S2_COVER,
    S2_RESAMPLING,
    Prepared,
    S1Granule,
    S2Granule,
    needs_pc_offset,
    prepare_s1,
    prepare_s2,
)

__all__ = ["EmbedOptions", "area_inputs", "embed_area", "compare", "MAX_PIXELS", "MAX_AREA_KM2"]

#: Default size limits (about 5 km x 5 km): what a laptop holds and a CPU encodes in an hour or so.
MAX_PIXELS = 250_000
MAX_AREA_KM2 = 25.0


@dataclass(frozen=True, kw_only=True)
class EmbedOptions:
    """How an area's imagery is found and loaded: the options :func:`area_inputs` and
    :func:`embed_area` share (each also accepts them as keyword arguments).

    Attributes
    ----------
    start, end
        A window of at most one year instead of a calendar ``year``
        (``start="2024-07-01", end="2025-06-30"``): search, cache and days of year follow it.
        Each acquisition keeps its calendar day of year and, across 1 January, dates are
        ordered by day of year (:mod:`~tessera_explore.encoder.window`).  Such a window is
        not the published calendar-year product; :func:`compare` measures how far it lands
        from it.  The result's ``year`` is the year holding most of the window; attrs
        ``window_start``/``window_end`` record it.
    stac
        A :class:`~tessera_explore.encoder.stac.StacConfig`, ``"planetary-computer"`` (default,
        signed hrefs), ``"earth-search"``, or the URL of a Planetary-Computer-like API.
    like, epsg
        Output grid: another array's grid (e.g. precomputed embeddings, for :func:`compare`)
        or a UTM EPSG code; default the UTM zone of the box's centre, 10 m, snapped.
    s1
        Use Sentinel-1 (default) or Sentinel-2 alone.
    cache, refresh
        Folder for search results and loaded granules (``None``: the package cache,
        ``False``: none).  A second run of the same area and year fetches nothing;
        ``refresh=True`` searches again (loaded granules are still reused).
    max_pixels, max_area_km2
        Size limits checked before anything is fetched (:class:`AreaTooLargeError` explains
        the memory and time an area needs); ``None`` disables one.
    min_s2_cover
        Sentinel-2 dates valid on less than this share of the area are dropped (5 %).
    on_error
        ``"raise"`` (default): a read that fails after the retries raises ``StacError``
        (finished items stay cached); ``"skip"``: leave such items out, with a warning.
    progress
        tqdm bars for search, load (and encoding).
    """

    start: Any = None
    end: Any = None
    stac: Any = "planetary-computer"
    like: Any = None
    epsg: int | None = None
    s1: bool = True
    cache: str | os.PathLike | bool | None = None
    refresh: bool = False
    max_pixels: int | None = MAX_PIXELS
    max_area_km2: float | None = MAX_AREA_KM2
    min_s2_cover: float = MIN_S2_COVER
    on_error: str = "raise"
    progress: bool = True

    @classmethod
    def of(cls, options: EmbedOptions | None, overrides: dict[str, Any], *, verb: str) -> EmbedOptions:
        """``options`` (default: the defaults) with keyword arguments ``overrides`` applied;
        an unknown keyword raises :class:`~tessera_explore.exceptions.ArgumentTypeError` (a
        ``TypeError``) naming the known ones, as a signature would."""
        if options is not None and not isinstance(options, cls):
            raise ArgumentTypeError(f"{verb}(): options= must be an EmbedOptions, got {type(options).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ArgumentTypeError(f"{verb}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
                            f"its imagery options are {', '.join(sorted(names))}")
        return dataclasses.replace(options or cls(), **overrides)


def area_inputs(bbox: Sequence[float] | None, year: Any = None, *, options: EmbedOptions | None = None,
                **kwargs: Any) -> Prepared:
    """Search, load and prepare a year (or a window) of Sentinel-2 L2A and Sentinel-1 RTC for an area.

    ``options`` (an :class:`EmbedOptions`) or its fields as keyword arguments say how.  The
    result holds the model-input arrays (those of the upstream prepared-data folder), the
    grid, ``info`` (item counts, dropped dates, skipped items) and ``timings`` (seconds for
    ``search``, ``load``, ``prepare``).
    """
    from .stac import area_grid, check_size, resolve_stac
    from .window import resolve_window

    opt = EmbedOptions.of(options, kwargs, verb="area_inputs")
    window = resolve_window(year, opt.start, opt.end)
    cfg = resolve_stac(opt.stac)
    grid = area_grid(bbox, like=opt.like, epsg=opt.epsg)
    check_size(grid, max_pixels=opt.max_pixels, max_area_km2=opt.max_area_km2)
    timings: dict[str, float] = {}
    search_box = tuple(bbox) if bbox is not None else grid.lonlat_bounds()
    found, s2_arrays, s1_arrays, skipped = _search_and_load(search_box, window, cfg, grid, opt, timings)

    t0 = time.perf_counter()
    s2, sar = _granules_to_inputs(found, s2_arrays, s1_arrays, cfg, grid.shape, opt.min_s2_cover)
    timings["prepare"] = time.perf_counter() - t0
    arrays = _calendar_order(s2, sar, window)
    info = {
        "grid": grid,
        "stac": cfg.name,
        "stac_url": cfg.s2.url,
        "data_source": cfg.data_source,
        "s2_items": len(found["s2"]),
        "s1_items": len(found.get("s1", [])),
        "s2_cover": s2["cover"],
        "s2_dropped_dates": s2["dropped"],
        "skipped_items": skipped,
        "window": window,
    }
    if len(s2["doys"]) == 0 and len(arrays[5]) + len(arrays[8]) == 0:
        warnings.warn(f"no usable Sentinel-2 or Sentinel-1 observation for {search_box} in {window}; "
                      "every pixel will be NaN", stacklevel=2)
    return Prepared(*arrays, grid.crs, grid.transform, window.year, info=info, timings=timings)


def _search_and_load(search_box, window, cfg, grid, opt: EmbedOptions, timings: dict):
    """The STAC search and the granule reads of :func:`area_inputs`, timed."""
    from .stac import S2_LOAD_BANDS, load_granules, search

    t0 = time.perf_counter()
    sensors = ("s2", "s1") if (opt.s1 and cfg.s1 is not None) else ("s2",)
    found = search(search_box, window, stac=cfg, sensors=sensors, cache=opt.cache, refresh=opt.refresh,
                   progress=opt.progress)
    timings["search"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    s2_arrays, s2_skipped = load_granules(
        found["s2"], cfg.s2, grid, bands=S2_LOAD_BANDS, resampling=S2_RESAMPLING, stac=cfg, cache=opt.cache,
        on_error=opt.on_error, progress=opt.progress, desc="Sentinel-2 L2A",
    )
    s1_arrays: dict[str, np.ndarray] = {}
    s1_skipped: list = []
    if "s1" in found:
        s1_arrays, s1_skipped = load_granules(
            found["s1"], cfg.s1, grid, bands=("vv", "vh"), resampling={"vv": "bilinear", "vh": "bilinear"},
            stac=cfg, cache=opt.cache, on_error=opt.on_error, progress=opt.progress, desc="Sentinel-1 RTC",
        )
    timings["load"] = time.perf_counter() - t0
    return found, s2_arrays, s1_arrays, [*s2_skipped, *s1_skipped]


def _granules_to_inputs(found: dict, s2_arrays: dict, s1_arrays: dict, cfg, shape, min_s2_cover: float):
    """The loaded arrays as granules, mosaicked per date (:func:`prepare_s2`, :func:`prepare_s1`);
    the arrays are handed over (popped) so that at most one copy is held."""
    from .stac import item_datetime, orbit_state

    s2_granules = []
    for item in found["s2"]:
        arr = s2_arrays.pop(item.id, None)
        if arr is None:
            continue
        when = item_datetime(item)
        s2_granules.append(S2Granule(item.id, when, arr[:10], arr[10], pc_offset=cfg.s2.pc_offset and needs_pc_offset(when)))
    s2 = prepare_s2(s2_granules, shape, min_cover=min_s2_cover)
    del s2_granules
    s1_granules = [S1Granule(item.id, item_datetime(item), orbit_state(item), s1_arrays.pop(item.id))
                   for item in found.get("s1", []) if item.id in s1_arrays]
    return s2, prepare_s1(s1_granules, shape)


def _calendar_order(s2: dict, sar: dict, window) -> tuple:
    """The ten time-series arrays of :class:`Prepared`; across 1 January, ordered by day of year
    (the model input as a calendar year)."""
    asc, asc_doy, asc_dates = sar["ascending"]
    desc, desc_doy, desc_dates = sar["descending"]
    bands, masks, doys, dates = s2["bands"], s2["masks"], s2["doys"], s2["dates"]
    if window.crosses_new_year:
        o = np.lexsort((dates, doys))
        bands, masks, doys, dates = bands[o], masks[o], doys[o], dates[o]
        o = np.lexsort((asc_dates, asc_doy))
        asc, asc_doy, asc_dates = asc[o], asc_doy[o], asc_dates[o]
        o = np.lexsort((desc_dates, desc_doy))
        desc, desc_doy, desc_dates = desc[o], desc_doy[o], desc_dates[o]
    return bands, masks, doys, dates, asc, asc_doy, asc_dates, desc, desc_doy, desc_dates


def prepare_area(bbox: Sequence[float] | None, year: Any = None, **kwargs: Any) -> Prepared:
    """Deprecated name of :func:`area_inputs` (same arguments)."""
    warnings.warn("encoder.prepare_area is renamed encoder.area_inputs; call that instead",
                  DeprecationWarning, stacklevel=2)
    return area_inputs(bbox, year, **kwargs)


def embed_area(
    bbox: Sequence[float] | None,
    year: Any = None,
    *,
    model: Any,
    dims: int | None = None,
    device: Any = None,
    dataset_version: str | None = None,
    batch_size: int | None = None,
    amp: Any = None,
    num_threads: int | None = None,
    seed: int = 0,
    n_draws: int = 1,
    return_prepared: bool = False,
    options: EmbedOptions | None = None,
    **kwargs: Any,
):
    """Embed an area live: a year of Sentinel-2 L2A and Sentinel-1 RTC through the TESSERA encoder.

    Parameters
    ----------
    bbox
        ``(min_lon, min_lat, max_lon, max_lat)``; may be ``None`` with ``like``.
    year
        Calendar year of the observations (``year=2024``), or give ``start`` and ``end``.
    model
        A loaded encoder (:func:`~tessera_explore.encoder.load_encoder`), a checkpoint path or
        a registry name (loaded before anything is fetched, so a bad checkpoint fails early).
    dims
        Depth: keep the first ``dims`` values (v2 Matryoshka prefixes 16, 32, 64, 128);
        the result has ``dims`` bands and ``attrs["depth"] = dims``.
    device
        Where the encoder runs (``"cuda"``, ``"cpu"``; default the model's).
    dataset_version
        Recorded in the attrs; default ``"live-{generation}"``.
    batch_size, amp, num_threads, seed, n_draws
        Passed to :func:`~tessera_explore.encoder.embed_pixels`.
    return_prepared
        Also return the :class:`Prepared` input (its ``timings`` gain ``"encode"``).
    options, **kwargs
        How the imagery is found and loaded: an :class:`EmbedOptions`, or its fields as
        keyword arguments (``start``, ``end``, ``stac``, ``like``, ``epsg``, ``s1``,
        ``cache``, ``refresh``, ``max_pixels``, ``max_area_km2``, ``min_s2_cover``,
        ``on_error``, ``progress``; see :class:`EmbedOptions`).  Keywords override
        ``options``.

    Returns
    -------
    xarray.DataArray
        The embeddings schema: ``("band", "y", "x")``, 128 float32 bands, NaN where a pixel
        has no valid observation, ``model_generation`` of the model.
    """
    from .embed import check_dims, embed_pixels
    from .weights import load_encoder
    from .window import resolve_window

    opt = EmbedOptions.of(options, kwargs, verb="embed_area")
    window = resolve_window(year, opt.start, opt.end)
    if not hasattr(model, "generation"):
        model = load_encoder(model, device=device)
    depth = check_dims(model, dims)  # before anything is fetched
    prepared = area_inputs(bbox, window, options=dataclasses.replace(opt, start=None, end=None))
    source = _v11_data_source(model, prepared)
    t0 = time.perf_counter()
    emb = embed_pixels(model, **prepared.pixel_arrays(), data_source=source, seed=seed, n_draws=n_draws, dims=depth,
                       batch_size=batch_size, device=device, amp=amp, num_threads=num_threads, progress=opt.progress)
    prepared.timings["encode"] = time.perf_counter() - t0
    da = _as_embeddings(emb, prepared, model, depth, window, source, dataset_version)
    return (da, prepared) if return_prepared else da


def _v11_data_source(model: Any, prepared: Prepared) -> str | None:
    """The statistics a v1.1 model standardises with (its own, else the imagery's); None for others."""
    if model.generation != "v1.1":
        return None
    if getattr(model, "data_source", None) and prepared.info["data_source"] not in (None, model.data_source):
        warnings.warn(f"this v1.1 model was trained on {model.data_source!r} data but the imagery comes from "
                      f"{prepared.info['data_source']!r}; use the matching checkpoint", stacklevel=3)
    return getattr(model, "data_source", None) or prepared.info["data_source"]


def _as_embeddings(emb: np.ndarray, prepared: Prepared, model: Any, depth: int, window, source: str | None,
                   dataset_version: str | None):
    """The encoder's ``(N, dims)`` output as the embeddings DataArray schema, with the live attrs."""
    from .._schema import make_embedding_array

    h, w = prepared.shape
    data = np.ascontiguousarray(emb.reshape(h, w, -1).transpose(2, 0, 1))
    x, y = prepared.coords()
    gen = model.generation
    extra = {
        "checkpoint": getattr(model, "name", "") or "",
        "stac": prepared.info["stac"],
        "stac_url": prepared.info["stac_url"],
        "s2_dates": int(len(prepared.doys)),
        "s1_ascending_dates": int(len(prepared.sar_ascending_doy)),
        "s1_descending_dates": int(len(prepared.sar_descending_doy)),
        "depth": int(depth),
        **window.attrs(),
    }
    if source:
        extra["data_source"] = source
    return make_embedding_array(
        data, x=x, y=y, crs=prepared.crs, year=window.year, dataset_version=dataset_version or f"live-{gen}",
        dataset_variant=getattr(model, "name", None) or "live", model_generation=gen,
        source=f"live {prepared.info['stac']} ({prepared.info['stac_url']})", extra_attrs=extra,
    )


def compare(live, precomputed, *, dims: int | None = None):
    """Per-pixel cosine agreement of two embedding arrays of the same model generation.

    ``live`` is placed on ``precomputed``'s grid (same CRS: matching pixel centres;
    another CRS: nearest-neighbour reprojection).  Returns a ``(y, x)`` float32
    DataArray ``cosine`` on the overlap, NaN where either has no embedding, with summary
    attrs ``mean``, ``median``, ``p05``, ``p95`` and ``n_pixels``.  ``dims`` compares only
    the first ``dims`` values (v2 Matryoshka prefixes); arrays of different depths
    (``attrs["depth"]``, else the band count) are refused unless ``dims`` says which common
    prefix to compare.

    Embeddings of different generations live in unrelated feature spaces, so their cosine
    means nothing: that raises :class:`~tessera_explore.exceptions.VersionMismatchError`.
    """
    import xarray as xr

    from .._schema import validate

    validate(live, name="live embeddings")
    validate(precomputed, name="precomputed embeddings")
    g_live, g_pre = live.attrs.get("model_generation"), precomputed.attrs.get("model_generation")
    if g_live != g_pre:
        raise VersionMismatchError(
            f"cannot compare embeddings of model generation {g_live} ({live.attrs.get('source')}) with "
            f"generation {g_pre} ({precomputed.attrs.get('source')}): different generations live in unrelated "
            "feature spaces. Embed live with a model of the precomputed generation."
        )
    d_live = int(live.attrs.get("depth", live.sizes["band"]))
    d_pre = int(precomputed.attrs.get("depth", precomputed.sizes["band"]))
    if dims is None and d_live != d_pre:
        raise VersionMismatchError(
            f"cannot compare embeddings of depth {d_live} with depth {d_pre}: they are different products. "
            f"Pass dims={min(d_live, d_pre)} to compare the common Matryoshka prefix explicitly."
        )
    limit = min(live.sizes["band"], precomputed.sizes["band"])
    if dims is not None and not 1 <= int(dims) <= limit:
        raise EncoderError(f"dims must be in 1..{limit}, got {dims}")
    if live.rio.crs != precomputed.rio.crs:
        from rasterio.enums import Resampling

        live = live.rio.reproject(precomputed.rio.crs, resolution=abs(precomputed.rio.resolution()[0]),
                                  resampling=Resampling.nearest, nodata=np.nan)
    rx = abs(float(precomputed.rio.resolution()[0]))
    x0, x1 = float(live.x.min()), float(live.x.max())
    y0, y1 = float(live.y.min()), float(live.y.max())
    pre = precomputed  # stays lazy until the overlap is cut out
    xs = pre.x.values
    ys = pre.y.values
    xi = np.flatnonzero((xs >= x0 - rx / 2) & (xs <= x1 + rx / 2))
    yi = np.flatnonzero((ys >= y0 - rx / 2) & (ys <= y1 + rx / 2))
    if xi.size == 0 or yi.size == 0:
        raise SchemaError("the live and precomputed embeddings share no pixels")
    pre = pre.isel(x=slice(xi[0], xi[-1] + 1), y=slice(yi[0], yi[-1] + 1))
    live_on = live.reindex(x=pre.x, y=pre.y, method="nearest", tolerance=rx / 4)
    k = int(dims) if dims is not None else live.sizes["band"]
    a = np.asarray(live_on.values[:k], dtype=np.float64)
    b = np.asarray(pre.values[:k], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (a * b).sum(0) / (np.sqrt((a * a).sum(0)) * np.sqrt((b * b).sum(0)))
    cos = cos.astype(np.float32)
    ok = np.isfinite(cos)
    if not ok.any():
        raise SchemaError("the live and precomputed embeddings have no pixel with an embedding in common")
    vals = cos[ok]
    out = xr.DataArray(
        cos, dims=("y", "x"), coords={"y": pre.y.values, "x": pre.x.values}, name="cosine",
        attrs={
            "long_name": "cosine agreement (live vs precomputed)",
            "model_generation": str(g_live),
            "live_source": str(live.attrs.get("source", "")),
            "precomputed_source": str(precomputed.attrs.get("source", "")),
            "dims": k,
            "n_pixels": int(ok.sum()),
            "mean": float(vals.mean()),
            "median": float(np.median(vals)),
            "p05": float(np.percentile(vals, 5)),
            "p95": float(np.percentile(vals, 95)),
        },
    )
    return out.rio.write_crs(precomputed.rio.crs)
