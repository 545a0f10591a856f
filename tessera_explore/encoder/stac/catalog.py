"""STAC search per sensor, and the cache folder both search and loading keep what they
fetched in (a second run of the same area and year fetches nothing)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...exceptions import StacError
from .config import Source, StacConfig, resolve_stac

__all__ = ["search", "default_cache_dir"]


def default_cache_dir() -> Path:
    """The ``stac`` folder of :func:`tessera_explore.config.cache_dir` (read when called)."""
    from ...config import cache_dir

    return cache_dir("stac")


def _cache_root(cache) -> Path | None:
    if cache is False:
        return None
    return Path(cache) if cache not in (None, True) else default_cache_dir()


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.part")
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def _search_one(cfg: StacConfig, source: Source, bbox, window, bar) -> list[dict]:
    client = cfg.open_client(source.url)
    query = dict(source.query or {})
    if cfg.max_cloud_cover is not None and source.assets.get("SCL"):
        query["eo:cloud_cover"] = {"lt": float(cfg.max_cloud_cover)}
    try:
        found = client.search(
            collections=[source.collection], bbox=[float(v) for v in bbox],
            datetime=window.stac_datetime(),
            query=query or None, limit=cfg.page_size,
        )
        out = []
        for d in found.items_as_dicts():
            out.append(d)
            bar.update(1)
        return out
    except StacError:
        raise
    except Exception as err:  # APIError, requests errors, bad JSON
        raise StacError(f"STAC search of {source.collection} at {source.url} failed: {err}") from err


def search(
    bbox: Sequence[float],
    year: Any = None,
    *,
    start: Any = None,
    end: Any = None,
    stac: Any = "planetary-computer",
    sensors: Sequence[str] = ("s2", "s1"),
    cache: str | os.PathLike | bool | None = None,
    refresh: bool = False,
    progress: bool = True,
) -> dict[str, list]:
    """Items of ``bbox`` (lon/lat) per sensor: ``{"s2": [pystac.Item], "s1": [...]}``, for a
    calendar ``year`` or a window ``start``..``end`` (see :mod:`~tessera_explore.encoder.window`).

    Results are cached (``cache``: a folder, ``None`` for :func:`default_cache_dir`,
    ``False`` for none) under a key of API, collection, box, window and query, so a repeated
    search sends nothing; ``refresh=True`` asks the API again.
    """
    from ..window import resolve_window

    window = resolve_window(year, start, end)
    import pystac
    from tqdm.auto import tqdm

    cfg = resolve_stac(stac)
    root = _cache_root(cache)
    out: dict[str, list] = {}
    with tqdm(desc="STAC search", unit="item", disable=not progress) as bar:
        for sensor in sensors:
            source = cfg.s2 if sensor == "s2" else cfg.s1 if sensor == "s1" else None
            if sensor not in ("s2", "s1"):
                raise StacError(f"unknown sensor {sensor!r}; use 's2' and/or 's1'")
            if source is None:
                out[sensor] = []
                continue
            when = window.year if window.is_calendar_year else [window.start.isoformat(), window.end.isoformat()]
            key = _hash(source.url, source.collection, [round(float(v), 7) for v in bbox], when,
                        dict(source.query or {}), cfg.max_cloud_cover)
            path = root / "search" / f"{source.collection}_{window.label}_{key}.json" if root else None
            if path is not None and path.is_file() and not refresh:
                with open(path) as f:
                    dicts = json.load(f)["features"]
                bar.update(len(dicts))
            else:
                bar.set_postfix_str(source.collection)
                dicts = _search_one(cfg, source, bbox, window, bar)
                if path is not None:
                    _write_json(path, {"type": "FeatureCollection", "features": dicts})
            out[sensor] = [pystac.Item.from_dict(d, preserve_dict=False) for d in dicts]
    return out
