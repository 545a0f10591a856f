"""Reading STAC items onto the output grid (odc-stac, one time slice per item, bilinear for
the 20 m bands, nearest for SCL): one array per item, kept in the cache as it is read."""

from __future__ import annotations

import datetime as _dt
import os
import threading
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...exceptions import StacError
from ...io.grid import Grid
from ..granules import S2_BANDS, S2_RESAMPLING
from .catalog import _cache_root, _hash
from .config import Source, StacConfig
from .gdal_cache import clear_gdal_http_cache

__all__ = ["load_granules", "item_datetime", "orbit_state", "S2_LOAD_BANDS", "S2_LOAD_RESAMPLING"]


def _by_position(item, parsed, idx):  # odc-stac groupby: one time slice per item, in input order
    return idx


def _save_npy(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.{threading.get_ident()}.part")
    with open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)
    os.replace(tmp, path)


def load_granules(
    items: Sequence[Any],
    source: Source,
    grid: Grid,
    *,
    bands: Sequence[str],
    resampling: Mapping[str, str] | None = None,
    stac: StacConfig,
    cache: str | os.PathLike | bool | None = None,
    on_error: str = "raise",
    progress: bool = True,
    desc: str | None = None,
) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """Read ``bands`` (canonical names) of every item onto ``grid``; one ``(C, H, W)`` array per item id.

    Items lacking one of the assets are skipped (with a warning).  A read that fails after
    the configured retries raises :class:`StacError` naming the items (``on_error="raise"``)
    or skips those items with a warning (``"skip"``).  Finished items are written to the
    cache at once, so a later run reads them from disk and fetches only the rest.
    Returns ``(arrays, skipped)`` with ``skipped`` as ``[(item_id, reason)]``.
    """
    from tqdm.auto import tqdm

    if on_error not in ("raise", "skip"):
        raise StacError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    resampling = dict(resampling or {})
    assets = [source.assets[b] for b in bands]
    root = _cache_root(cache)
    folder = None
    if root is not None:
        sub = _hash(source.url, source.collection, list(bands), resampling)
        folder = root / "granules" / grid.key() / f"{source.collection}_{sub}"
    arrays, skipped, todo = _from_cache(items, source, assets, folder)

    def read(batch):
        return _read(batch, source, grid, assets, resampling, stac)

    cached = len(arrays)
    with tqdm(total=len(items) - len(skipped), initial=cached, unit="item", disable=not progress,
              desc=desc or f"load {source.collection}") as bar:
        step = max(1, int(stac.batch_items))
        for start in range(0, len(todo), step):
            batch = todo[start : start + step]
            try:
                results = list(zip(batch, read(batch)))
            except Exception as err:  # GDAL/rasterio/odc errors carry the failing URL
                clear_gdal_http_cache()  # so that the next attempt really asks the server again
                if on_error == "raise":
                    ids = ", ".join(i.id for i in batch)
                    raise StacError(
                        f"reading {source.collection} items failed after {stac.retries} retries "
                        f"({cached + start} of {len(items)} items were done and are cached; running again "
                        f"fetches only the rest). Items in the failed batch: {ids}. Cause: {err}"
                    ) from err
                results = _read_one_by_one(batch, read, source, skipped)
            for item, arr in results:
                arr = np.ascontiguousarray(arr)
                arrays[item.id] = arr
                if folder is not None:
                    _save_npy(folder / f"{item.id}.npy", arr)
            bar.update(len(batch))
    return arrays, skipped


def _from_cache(items: Sequence[Any], source: Source, assets: list[str], folder: Path | None):
    """Split ``items`` into those already in the cache folder (read), those without the
    assets (skipped, with a warning) and those still to read."""
    arrays: dict[str, np.ndarray] = {}
    skipped: list[tuple[str, str]] = []
    todo = []
    for item in items:
        missing = [a for a in assets if a not in item.assets]
        if missing:
            skipped.append((item.id, f"no asset {', '.join(missing)}"))
            warnings.warn(f"{source.collection} item {item.id} has no asset {', '.join(missing)}; skipped",
                          stacklevel=3)
            continue
        path = folder / f"{item.id}.npy" if folder is not None else None
        if path is not None and path.is_file():
            try:
                arrays[item.id] = np.load(path, allow_pickle=False)
                continue
            except (OSError, ValueError):
                path.unlink(missing_ok=True)  # a damaged cache file is fetched again
        todo.append(item)
    return arrays, skipped, todo


def _read(batch: list, source: Source, grid: Grid, assets: list[str], resampling: dict, stac: StacConfig):
    """One ``odc.stac.load`` of ``batch`` under the config's GDAL settings: ``(T, C, H, W)``."""
    import odc.stac
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with rasterio.Env(**stac.gdal_env()), warnings.catch_warnings():
        # odc's bilinear warp path makes rasterio warn about an internal array; harmless
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        ds = odc.stac.load(
            batch, bands=assets, geobox=grid.geobox(), groupby=_by_position,
            resampling={source.assets[b]: r for b, r in resampling.items() if b in source.assets},
            pool=max(1, int(stac.threads)), patch_url=source.patch_url, fail_on_error=True,
        )
    if ds.sizes.get("time", 0) != len(batch):
        raise StacError(f"odc-stac returned {ds.sizes.get('time', 0)} slices for {len(batch)} items")
    return np.stack([ds[a].values for a in assets], axis=1)


def _read_one_by_one(batch: list, read: Any, source: Source, skipped: list) -> list:
    """After a failed batch (``on_error="skip"``): read its items one at a time, skipping
    (with a warning, and in ``skipped``) those that fail again."""
    results = []
    for item in batch:
        try:
            results.append((item, read([item])[0]))
        except Exception as one_err:  # noqa: BLE001 - reported as a warning and in `skipped`
            clear_gdal_http_cache()
            skipped.append((item.id, str(one_err)))
            warnings.warn(f"{source.collection} item {item.id} could not be read; skipped: {one_err}",
                          stacklevel=3)
    return results


def item_datetime(item: Any) -> _dt.datetime:
    """Acquisition time of an item (``datetime``, else ``start_datetime``), in UTC."""
    when = item.datetime or item.common_metadata.start_datetime
    if when is None:
        raise StacError(f"item {item.id} has no datetime")
    return when if when.tzinfo else when.replace(tzinfo=_dt.UTC)


def orbit_state(item: Any) -> str:
    """``sat:orbit_state`` of a Sentinel-1 item (``"ascending"``/``"descending"``)."""
    state = item.properties.get("sat:orbit_state")
    if state not in ("ascending", "descending"):
        raise StacError(f"Sentinel-1 item {item.id} has no usable sat:orbit_state ({state!r})")
    return state


S2_LOAD_BANDS = (*S2_BANDS, "SCL")
S2_LOAD_RESAMPLING = dict(S2_RESAMPLING)
