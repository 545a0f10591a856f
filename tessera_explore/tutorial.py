"""The built-in demo scene: synthetic farmland near Cambridge, two years, no network.

``open_demo()`` makes the tiles once into a cache folder (about 10 s, 0.4 GB) and
reuses them after that.  The cache lives in ``$TESSERA_EXPLORE_CACHE`` when that is
set (read at call time), else ``~/.cache/tessera_explore``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

__all__ = ["DEMO_BBOX", "DEMO_YEARS", "DEMO_TILES", "demo_path", "open_demo", "cache_dir"]

#: Two full-size tiles side by side (0.0-0.2 E, 52.1-52.2 N).
DEMO_TILES = ((0.05, 52.15), (0.15, 52.15))
DEMO_BBOX = (0.0, 52.1, 0.2, 52.2)
DEMO_YEARS = (2023, 2024)
DEMO_SEED = 42
_DEMO_VERSION = 1  # bump when the scene generator changes, to rebuild caches


def cache_dir() -> str:
    """Folder for cached data (``$TESSERA_EXPLORE_CACHE`` or ``~/.cache/tessera_explore``)."""
    return os.environ.get("TESSERA_EXPLORE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tessera_explore")


def demo_path(*, shape: tuple[int, int] | None = None) -> str:
    """Path of the demo tile folder (geotessera layout), made on first use.

    ``shape`` makes smaller tiles (for quick tests); the default is full size.
    """
    from .testing import make_tiles

    tag = "full" if shape is None else f"{shape[0]}x{shape[1]}"
    root = os.path.join(cache_dir(), f"demo-v{_DEMO_VERSION}-{tag}")
    stamp = os.path.join(root, ".complete")
    if os.path.exists(stamp):
        return root
    os.makedirs(cache_dir(), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="demo-", dir=cache_dir())
    try:
        make_tiles(tmp, tiles=DEMO_TILES, years=DEMO_YEARS, shape=shape, seed=DEMO_SEED)
        with open(os.path.join(tmp, ".complete"), "w") as f:
            json.dump({"demo_version": _DEMO_VERSION}, f)
        try:
            os.replace(tmp, root)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def open_demo(year: int = 2024, *, shape: tuple[int, int] | None = None, **kwargs):
    """Open the demo scene for ``year`` (2023 or 2024) as an embeddings DataArray.

    Extra keyword arguments go to :func:`tessera_explore.open_embeddings`.
    """
    from .io.open import open_embeddings

    if int(year) not in DEMO_YEARS:
        raise ValueError(f"the demo scene has years {DEMO_YEARS}, not {year}")
    return open_embeddings(demo_path(shape=shape), bbox=DEMO_BBOX, year=year, **kwargs)
