"""A store whose metadata lies is refused with a StoreError naming the group: a zone
transform that disagrees with the zone's own coordinates, pixels of another size than
the store declares (or finer than a metre), a member zarr will not open ('..')."""

from __future__ import annotations

import json
import os

import pytest
import zarr

import tessera_explore as te
from tessera_explore.exceptions import StoreError
from tessera_explore.testing.store import make_store

from .conftest import BBOX_NORTH, NORTH, SHAPE


@pytest.fixture()
def store(tmp_path):
    return make_store(tmp_path / "s.zarr", tiles=NORTH, years=[2024], shape=SHAPE, shard=64, chunk=32)


def _edit_zone(path, **attrs):
    g = zarr.open_group(path, mode="r+")["utm31"]
    g.attrs.update(attrs)
    zarr.consolidate_metadata(path)


def test_a_transform_that_disagrees_with_the_coordinates_is_refused(store):
    t = list(zarr.open_group(store, mode="r")["utm31"].attrs["spatial:transform"])
    t[2] += 5000.0  # the zone shifted 5 km east, its x coordinates not
    _edit_zone(store, **{"spatial:transform": t})
    with pytest.raises(StoreError, match=r"utm31: the x coordinates run .* but spatial:transform puts"):
        te.open_embeddings(store, bbox=BBOX_NORTH, year=2024)


@pytest.mark.parametrize("pixel, gsd, says", [(0.01, None, "refusing a grid that fine"),
                                             (0.01, 0.01, "refusing a grid that fine"),
                                             ("x2", None, "but the store declares geoemb:gsd")])
def test_pixel_sizes_other_than_declared_or_absurdly_fine_are_refused(store, pixel, gsd, says):
    g = zarr.open_group(store, mode="r+")
    t = list(g["utm31"].attrs["spatial:transform"])
    size = 2 * t[0] if pixel == "x2" else pixel
    t[0], t[4] = size, -size
    if gsd is not None:
        g.attrs["geoemb:gsd"] = gsd
    _edit_zone(store, **{"spatial:transform": t})
    with pytest.raises(StoreError, match=says):
        te.open_embeddings(store, bbox=BBOX_NORTH, year=2024)


def test_a_member_named_dot_dot_is_a_store_error(store, tmp_path):
    zj = os.path.join(store, "zarr.json")
    meta = json.load(open(zj))
    entries = meta["consolidated_metadata"]["metadata"]
    entries["utm31/.."] = entries["utm31/time"]
    json.dump(meta, open(zj, "w"))
    with pytest.raises(StoreError, match=r"utm31: the group lists a member zarr refuses to open"):
        te.open_embeddings(store, bbox=BBOX_NORTH, year=2024)
    with pytest.raises(StoreError, match=r"utm31"):
        te.fetch_region(BBOX_NORTH, [2024], dest=tmp_path / "copy.zarr", source=store)
