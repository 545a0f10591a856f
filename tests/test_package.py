"""Package-level promises: a light, offline import and a complete public surface."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

import tessera_explore as te


def test_import_is_light_and_offline():
    code = (
        "import socket, sys, json\n"
        "def no(*a, **k): raise RuntimeError('network touched at import')\n"
        "socket.socket.connect = no; socket.getaddrinfo = no\n"
        "import tessera_explore\n"
        "print(json.dumps(sorted(m for m in ('torch', 'umap', 'leafmap', 'ipyleaflet', 'numba', 'rasterio',"
        " 'dask', 'sklearn') if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_public_names_resolve():
    missing = []
    for name in te.__all__:
        try:
            getattr(te, name)
        except (AttributeError, ImportError) as err:
            missing.append(f"{name}: {err}")
    assert not missing, missing


def test_unknown_attribute():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        te.nope


def test_demo_scene_is_cached(demo_cache):
    import os

    da = te.tutorial.open_demo(2024, shape=(96, 72))
    te.validate(da)
    path = te.tutorial.demo_path(shape=(96, 72))
    stamp = os.path.join(path, ".complete")
    mtime = os.path.getmtime(stamp)
    da2 = te.tutorial.open_demo(2023, shape=(96, 72))  # reused, not rebuilt
    assert os.path.getmtime(stamp) == mtime
    assert int(da2.year) == 2023 and da.shape == da2.shape
    assert str(demo_cache) in path
    a, b = da.values, da2.values
    assert np.isfinite(a[0]).mean() > 0.7
    assert not np.allclose(np.nan_to_num(a), np.nan_to_num(b))  # the years differ
