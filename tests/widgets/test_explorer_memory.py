"""What the explorer keeps through a session: the UMAP process is gone after its fit, the
learning curve's cache keys stay small as labels accumulate, and one copy of each year's
codes is held once it is prepared."""

from __future__ import annotations

import numpy as np
import pytest

from tessera_explore.widgets.quality import prefix_digests

LAND = ("forest", "grassland", "cereal")


@pytest.fixture(scope="module")
def truth(scene24):
    from tessera_explore.testing import CLASSES

    lon, lat, k = scene24
    return lon, lat, np.asarray(CLASSES)[k]


def points_of(truth, name, n, seed=0):
    lon, lat, cls = truth
    idx = np.flatnonzero(cls.ravel() == name)
    pick = np.random.default_rng(seed).choice(idx, n, replace=False)
    return [(float(lon.ravel()[i]), float(lat.ravel()[i])) for i in pick]


def _children():
    """This process's child processes, but multiprocessing's resource tracker (one per
    interpreter, started with the first spawned process and kept on purpose)."""
    import psutil

    out = []
    for c in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" in " ".join(c.cmdline()):
                continue
        except psutil.Error:  # gone meanwhile
            continue
        out.append(c.pid)
    return out


# ---------------------------------------------------------------------------- learning-curve keys
def test_prefix_digests_name_each_prefix_in_a_fixed_size():
    order = [3, 1, 7]
    first = {3: ("forest", b"\x01\x02"), 1: ("cereal", b"\x03"), 7: ("forest", b"\x04" * 21)}
    d = prefix_digests(order, first)
    assert len(d) == 3 and len(set(d)) == 3
    assert all(isinstance(x, bytes) and len(x) == 20 for x in d)
    assert prefix_digests(order, first) == d  # the same labels, the same digests
    assert prefix_digests(order[:2], first) == d[:2]  # a prefix's digest does not depend on what follows
    moved = {**first, 1: ("cereal", b"\x05")}  # an id back on another place
    assert prefix_digests(order, moved)[0] == d[0] and prefix_digests(order, moved)[1] != d[1]
    relabelled = {**first, 3: ("cereal", b"\x01\x02")}
    assert prefix_digests(order, relabelled)[0] != d[0]
    # field boundaries count: class "ab" + wkb "c" is not class "a" + wkb "bc"
    assert prefix_digests([1], {1: ("ab", b"c")}) != prefix_digests([1], {1: ("a", b"bc")})


def test_learning_curve_cache_keys_do_not_grow_with_the_labels(area24, tmp_path, truth):
    import tessera_explore as te

    app = te.explore(area24, labels=tmp_path / "l.geojson", basemap=False, scatter=False, years=[], classes=list(LAND))
    try:
        app.wait()
        for name in LAND:
            app.state.active_class = name
            for q in points_of(truth, name, 6):
                app.click(*q)
        app.wait()
        curve = app.state.learning_curve
        assert curve and curve[-1]["n"] == 18
        cache = app.controller.quality._curve_cache
        assert len(cache) >= len(curve)
        for key in cache:
            model, digest = key
            assert model == app.state.model and isinstance(digest, bytes) and len(digest) == 20
        # more labels: the points already scored are found again, not scored anew
        before = dict(cache)
        app.state.active_class = "forest"
        for q in points_of(truth, "forest", 3, seed=5):
            app.click(*q)
        app.wait()
        assert app.state.learning_curve[-1]["n"] == 21
        for key, value in before.items():
            assert cache[key] == value
        scored_before = {p["n"]: p for p in curve if p["n"] < 18}
        for p in app.state.learning_curve:
            if p["n"] in scored_before:
                assert p == scored_before[p["n"]]
    finally:
        app.close()


# ---------------------------------------------------------------------------- the UMAP process
@pytest.mark.slow  # starts a process that imports UMAP (about 10-20 s)
def test_the_umap_process_exits_after_its_fit(area24, tmp_path):
    import os
    import sys

    import psutil

    import tessera_explore as te

    before = set(_children())
    umap_here = "umap" in sys.modules  # imported by an earlier test in this process
    app = te.explore(area24, labels=tmp_path / "l.geojson", basemap=False, scatter=True, years=[],
                     classes=["forest", "cereal"])
    try:
        app.wait()
        sw = app.controller.umap
        sw.sample, sw.options = 600, {"n_epochs": 30, "n_neighbors": 8}
        assert sw.process
        app.state.projection = "umap"
        comps = sw.fit().result(timeout=600)
        assert comps.sizes["component"] == 2
        pid = sw.fitted_in
        assert pid not in (None, os.getpid())  # fitted in another process...
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert set(_children()) - before == set()  # ...which is gone, with no other left behind
        assert app.state.error == ""
        # the fit came back pickled: umap-learn is imported here only when it is asked for
        assert umap_here or "umap" not in sys.modules
        assert sw.fitted is not None and sw.fitted.method == "umap" and "umap" in sys.modules
        app.state.projection = "pca"
    finally:
        app.close()
    assert set(_children()) - before == set()
