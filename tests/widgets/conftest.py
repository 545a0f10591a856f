"""Fixtures of the explorer's tests: the synthetic scene's true classes and an app factory
that closes every app it made."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def truth(scene24):
    """lon, lat and true class name of every pixel (scene seed 1), on the area's grid."""
    from tessera_explore.testing import CLASSES

    lon, lat, k = scene24
    return lon, lat, np.asarray(CLASSES)[k]


@pytest.fixture
def app_factory(area24, tmp_path):
    """``make(**kw)``: ``te.explore(area24, ...)`` with a label file in ``tmp_path``, no
    basemap and no scatter unless asked, waited for; closed at the end of the test."""
    import tessera_explore as te

    apps = []

    def make(**kw):
        kw.setdefault("labels", tmp_path / "labels.geojson")
        kw.setdefault("basemap", False)
        kw.setdefault("scatter", False)
        app = te.explore(area24, **kw)
        apps.append(app)
        app.wait()
        return app

    yield make
    for a in apps:
        a.close()
