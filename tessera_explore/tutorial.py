"""The built-in demo scene: synthetic farmland near Cambridge, two years, no network.

``open_demo()`` writes the scene once as a Zarr store in the published layout
(:func:`tessera_explore.testing.make_store`; about a minute, 0.35 GB) and opens it
with :func:`~tessera_explore.open_embeddings`, the same path as real data.  The store
lives in the ``demo`` folder of :func:`tessera_explore.config.cache_dir`, one per
shape and difficulty.

The demo is as hard as :data:`DEMO_DIFFICULTY` says (see
:func:`tessera_explore.testing.scene_embeddings`): mixed pixels along field edges,
crops that overlap and variation within each class, so a few-shot classifier is
unsure in places, the trust layer has something to show and more labels help (a kNN
reaches about 85 % with 5 labels per class, about 93 % with 20).  ``difficulty=0`` gives
the easy scene, which few labels classify almost perfectly.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

__all__ = ["DEMO_BBOX", "DEMO_YEARS", "DEMO_TILES", "DEMO_SEED", "DEMO_DIFFICULTY", "demo_path", "open_demo",
           "cache_dir"]

#: Two full-size tiles side by side (0.0-0.2 E, 52.1-52.2 N).
DEMO_TILES = ((0.05, 52.15), (0.15, 52.15))
DEMO_BBOX = (0.0, 52.1, 0.2, 52.2)
DEMO_YEARS = (2023, 2024)
DEMO_SEED = 42
#: how hard the demo scene is to classify (0 = easy, 1 = about as hard as real land cover)
DEMO_DIFFICULTY = 0.8
DEMO_VERSION = "v1.1"
_DEMO_FORMAT = 2  # bump when the scene generator or the store layout changes, to rebuild caches


def cache_dir() -> str:
    """Root folder of the package's caches (see :func:`tessera_explore.config.cache_dir`)."""
    from .config import cache_dir as _cache_dir

    return str(_cache_dir())


def demo_path(*, shape: tuple[int, int] | None = None, difficulty: float = DEMO_DIFFICULTY) -> str:
    """Path of the demo scene's Zarr store, written on first use.

    ``shape`` makes smaller tiles (coarser pixels, for quick tests); the default is
    full size (10 m pixels).  ``difficulty`` (>= 0) is the scene's (see the module
    docstring); each shape and difficulty has its own store.
    """
    from .config import cache_dir as _cache_dir
    from .exceptions import ArgumentError
    from .testing.store import make_store

    difficulty = float(difficulty)
    if not difficulty >= 0:
        raise ArgumentError(f"difficulty must be a number >= 0, got {difficulty}")
    tag = "full" if shape is None else f"{shape[0]}x{shape[1]}"
    if difficulty:  # 0 keeps the name of the stores written before there was a difficulty
        tag += f"-d{difficulty:g}"
    folder = _cache_dir("demo")
    root = os.path.join(folder, f"demo-v{_DEMO_FORMAT}-{tag}.zarr")
    stamp = os.path.join(root, ".complete")
    if os.path.exists(stamp):
        return root
    os.makedirs(folder, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="demo-", dir=folder)
    try:
        make_store(os.path.join(tmp, "s.zarr"), tiles=DEMO_TILES, years=DEMO_YEARS, shape=shape, seed=DEMO_SEED,
                   version=DEMO_VERSION, difficulty=difficulty)
        with open(os.path.join(tmp, "s.zarr", ".complete"), "w") as f:
            json.dump({"demo_format": _DEMO_FORMAT, "difficulty": difficulty}, f)
        try:
            os.replace(os.path.join(tmp, "s.zarr"), root)
        except OSError:  # another process finished first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def open_demo(year: int = 2024, *, shape: tuple[int, int] | None = None,
              difficulty: float = DEMO_DIFFICULTY, **kwargs):
    """Open the demo scene for ``year`` (2023 or 2024) as an embeddings DataArray.

    ``difficulty`` as for :func:`demo_path` (``difficulty=0``: the easy scene).  Extra
    keyword arguments go to :func:`tessera_explore.open_embeddings`.
    """
    from .exceptions import YearNotAvailableError
    from .io.open import open_embeddings

    if int(year) not in DEMO_YEARS:
        raise YearNotAvailableError(f"the demo scene has years {DEMO_YEARS}, not {year}")
    return open_embeddings(demo_path(shape=shape, difficulty=difficulty), bbox=DEMO_BBOX, year=year, **kwargs)
