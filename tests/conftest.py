"""Shared fixtures.  The network is blocked for every test: only loopback connections
(servers the tests start on 127.0.0.1) are allowed."""

from __future__ import annotations

import ipaddress
import os
import socket

import numpy as np
import pytest

pytest_plugins = ["notebook_figures"]  # tests/notebook_figures.py: each notebook's run time and peak memory


def _is_loopback(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def _block_network(monkeypatch):
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def guarded(self, address, *args):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise OSError(f"network access blocked in tests: {address!r}")
        return real_connect(self, address, *args)

    def guarded_ex(self, address, *args):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise OSError(f"network access blocked in tests: {address!r}")
        return real_connect_ex(self, address, *args)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_ex)
    yield


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory):
    """A private cache folder for the demo scene, shared by the whole session."""
    d = tmp_path_factory.mktemp("cache")
    old = os.environ.get("TESSERA_EXPLORE_CACHE")
    os.environ["TESSERA_EXPLORE_CACHE"] = str(d)
    yield d
    if old is None:
        os.environ.pop("TESSERA_EXPLORE_CACHE", None)
    else:
        os.environ["TESSERA_EXPLORE_CACHE"] = old


@pytest.fixture(scope="session")
def small_tiles(tmp_path_factory):
    """Two neighbouring small tiles in one UTM zone, two years."""
    from tessera_explore.testing import make_tiles

    d = tmp_path_factory.mktemp("tiles")
    recs = make_tiles(d, tiles=[(0.15, 52.05), (0.25, 52.05)], years=[2023, 2024], shape=(64, 48), seed=1)
    return d, recs


@pytest.fixture(scope="session")
def zone_tiles(tmp_path_factory):
    """A pair of tiles that straddles the UTM zone 31/32 boundary at 6 E."""
    from tessera_explore.testing import make_tiles

    d = tmp_path_factory.mktemp("zones")
    recs = make_tiles(d, tiles=[(5.95, 52.05), (6.05, 52.05)], years=[2024], shape=(80, 60), seed=2)
    return d, recs


# The shared small tiles opened as areas (classify and explorer tests).
AREA_BBOX = (0.1, 52.0, 0.3, 52.1)


@pytest.fixture(scope="session")
def area24(small_tiles):
    import tessera_explore as te

    folder, _ = small_tiles
    return te.open_embeddings(folder, bbox=AREA_BBOX, year=2024)


@pytest.fixture(scope="session")
def area23(small_tiles):
    import tessera_explore as te

    folder, _ = small_tiles
    return te.open_embeddings(folder, bbox=AREA_BBOX, year=2023)


@pytest.fixture(scope="session")
def prepared24(area24):
    from tessera_explore.classify import prepare

    return prepare(area24)


@pytest.fixture(scope="session")
def scene24(area24):
    """lon, lat (y, x) of every pixel centre and the true class index there (seed 1)."""
    from pyproj import Transformer

    from tessera_explore.testing import scene_classes

    tr = Transformer.from_crs(area24.rio.crs, 4326, always_xy=True)
    X, Y = np.meshgrid(area24.x.values, area24.y.values)
    lon, lat = tr.transform(X, Y)
    return lon, lat, scene_classes(lon, lat, 2024, seed=1)
