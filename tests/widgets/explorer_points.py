"""Picking map points of one true class on the synthetic scene, for the explorer's tests."""

from __future__ import annotations

import numpy as np


def points_of(truth, name, n, seed=0):
    """``n`` (lon, lat) pixel centres whose true class is ``name`` (``truth`` as the
    ``truth`` fixture gives it), drawn without replacement with ``seed``."""
    lon, lat, cls = truth
    idx = np.flatnonzero(cls.ravel() == name)
    pick = np.random.default_rng(seed).choice(idx, n, replace=False)
    return [(float(lon.ravel()[i]), float(lat.ravel()[i])) for i in pick]
