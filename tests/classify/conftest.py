"""Fixtures for the classify tests: labels drawn from the synthetic scene's true classes
(the areas themselves, ``area24``, ``area23``, ``prepared24``, ``scene24``, are in tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest


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
