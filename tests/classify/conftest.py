"""Fixtures for the classify tests: the shared small tiles opened as areas, and labels
drawn from the synthetic scene's true classes."""

from __future__ import annotations

import numpy as np
import pytest

BBOX = (0.1, 52.0, 0.3, 52.1)


@pytest.fixture(scope="session")
def area24(small_tiles):
    import tessera_explore as te

    folder, _ = small_tiles
    return te.open_embeddings(folder, bbox=BBOX, year=2024)


@pytest.fixture(scope="session")
def area23(small_tiles):
    import tessera_explore as te

    folder, _ = small_tiles
    return te.open_embeddings(folder, bbox=BBOX, year=2023)


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


def draw_labels(scene, classes, per_class, seed=0):
    """``per_class`` (lon, lat, class) points at pixel centres of each true class."""
    from tessera_explore.testing import CLASSES

    lon, lat, truth = scene
    rng = np.random.default_rng(seed)
    out = []
    for name in classes:
        idx = np.flatnonzero(truth.ravel() == CLASSES.index(name))
        for j in rng.choice(idx, min(per_class, len(idx)), replace=False):
            out.append((float(lon.ravel()[j]), float(lat.ravel()[j]), name))
    return out


@pytest.fixture(scope="session")
def labels5(scene24):
    """40 labels in 5 classes (8 each)."""
    return draw_labels(scene24, ("built-up", "forest", "grassland", "cereal", "maize"), 8)


@pytest.fixture(scope="session")
def draw(scene24):
    """``draw(classes, per_class, seed=0)``: labels at pixels of those true classes."""
    return lambda classes, per_class, seed=0: draw_labels(scene24, classes, per_class, seed)
