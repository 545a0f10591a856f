"""One synthetic scene written as NPY tiles, a Zarr store (with nested depths) and an
Icechunk copy, shared by the store tests.  Tiles: Cambridge (zone 31), a pair across
the 6 E zone edge (zones 31/32), a pair across the equator (zone 36) and one tile in
the southern hemisphere (zone 21)."""

from __future__ import annotations

import os

import pytest

NORTH = [(0.05, 52.15), (0.15, 52.15)]
CROSS = [(5.95, 52.15), (6.05, 52.15)]
EQUATOR = [(30.05, 0.05), (30.05, -0.05)]
SOUTH = [(-58.45, -34.55)]
TILES = NORTH + CROSS + EQUATOR + SOUTH
YEARS = [2023, 2024]
SHAPE = (40, 40)
SEED = 7

BBOX_NORTH = (0.02, 52.12, 0.18, 52.18)
BBOX_CROSS = (5.92, 52.12, 6.08, 52.18)
BBOX_EQUATOR = (30.02, -0.08, 30.08, 0.08)
BBOX_SOUTH = (-58.48, -34.58, -58.42, -34.52)


@pytest.fixture(scope="session")
def scene(tmp_path_factory):
    """Paths of the one scene in three layouts: ``tiles``, ``store`` and ``root`` (the
    folder that holds the store as ``s.zarr``, for serving)."""
    from tessera_explore.testing import make_tiles
    from tessera_explore.testing.store import make_store

    root = tmp_path_factory.mktemp("scene")
    make_tiles(root / "tiles", tiles=TILES, years=YEARS, shape=SHAPE, seed=SEED, version="v1.1")
    make_store(root / "s.zarr", tiles=TILES, years=YEARS, shape=SHAPE, seed=SEED, version="v1.1",
               depths=(4, 16), shard=64, chunk=32)
    return {"root": str(root), "tiles": str(root / "tiles"), "store": str(root / "s.zarr")}


@pytest.fixture(scope="session")
def other_variant_store(tmp_path_factory):
    """The Cambridge tiles as a v1.1 store of the other variant (cambridge)."""
    from tessera_explore.testing.store import make_store

    root = tmp_path_factory.mktemp("variant")
    return make_store(os.path.join(root, "cam.zarr"), tiles=NORTH, years=YEARS, shape=SHAPE, seed=SEED,
                      version="v1.1", variant="cambridge", shard=64, chunk=32)


@pytest.fixture(autouse=True)
def _fresh_store_cache():
    """Each test opens stores anew (the process-wide cache of opened stores is cleared)."""
    from tessera_explore.io import store

    store._SOURCES.clear()
    yield
    store._SOURCES.clear()
