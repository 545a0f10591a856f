"""Interoperability with geotessera, the field's own reader (where it is installed):
it reads the stores this package writes (``testing.make_store``, a ``fetch_region``
copy) and gives the values ``open_embeddings`` gives, pixel for pixel."""

from __future__ import annotations

import numpy as np
import pytest

import tessera_explore as te

from .conftest import BBOX_NORTH

geotessera_store = pytest.importorskip("geotessera.store", reason="geotessera (Python 3.12+) is not installed")


def _geotessera_window(path, da, zone=31):
    """geotessera's read of exactly ``da``'s pixels (band-first, NaN where no data)."""
    from zarr.storage import LocalStore

    gt = geotessera_store.GeoTesseraZarr(LocalStore(str(path), read_only=True))
    ds = gt.open_zone(zone=zone)
    res = float(da.x[1] - da.x[0])
    q = 0.25 * res  # pixel edges pulled in by a quarter pixel: geotessera keeps the centres inside
    x0, x1 = float(da.x[0]) - res / 2 + q, float(da.x[-1]) + res / 2 - q
    y0, y1 = float(da.y[-1]) - res / 2 + q, float(da.y[0]) + res / 2 - q
    mosaic, _ = ds.tessera.read_region((x0, y0, x1, y1), int(da.year), array="embeddings")
    return np.asarray(mosaic, np.float32).transpose(2, 0, 1)


@pytest.mark.parametrize("which", ["store", "fetch_region copy"])
def test_geotessera_reads_our_stores_with_our_values(scene, tmp_path, which):
    path = scene["store"]
    if which != "store":
        path = str(tmp_path / "copy.zarr")
        te.fetch_region(BBOX_NORTH, [2024], dest=path, source=scene["store"])
    da = te.open_embeddings(path, bbox=BBOX_NORTH, year=2024)
    ours = da.values
    theirs = _geotessera_window(path, da)
    assert theirs.shape == ours.shape
    np.testing.assert_array_equal(np.isnan(theirs), np.isnan(ours))
    np.testing.assert_allclose(theirs, ours, rtol=1e-6, equal_nan=True)
    assert np.isfinite(ours).mean() > 0.5
