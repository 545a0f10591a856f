"""Fixtures for the projection, overlay and scatter tests: small real-layout tiles and
hand-made embeddings arrays."""

from __future__ import annotations

import numpy as np
import pytest

BBOX_BOTH = (0.1, 52.0, 0.3, 52.1)  # both small tiles of the shared fixture
BBOX_WEST = (0.1, 52.0, 0.2, 52.1)


@pytest.fixture(scope="session")
def area(small_tiles):
    """(root, open(year, bbox)) over the two small neighbouring tiles."""
    import tessera_explore as te

    root, _ = small_tiles

    def open_(year=2024, bbox=BBOX_BOTH, **kw):
        return te.open_embeddings(root, year=year, bbox=bbox, **kw)

    return root, open_


def make_array(values: np.ndarray, *, version: str = "v1", year: int = 2024, x0: float = 300000.0,
               y0: float = 5770000.0, res: float = 10.0):
    """An embeddings DataArray (128, h, w) from float values, on a UTM 31N grid."""
    from tessera_explore._schema import make_embedding_array

    _, h, w = values.shape
    x = x0 + res * (np.arange(w) + 0.5)
    y = y0 - res * (np.arange(h) + 0.5)
    return make_embedding_array(values.astype(np.float32), x=x, y=y, crs="EPSG:32631", year=year,
                                dataset_version=version, source="test")


@pytest.fixture
def make_embeddings():
    return make_array
