"""The controller tells views about a year's components by an event, never by a wait."""

from __future__ import annotations

import numpy as np


def test_components_event_when_ready_and_after_projecting(area24, tmp_path):
    import tessera_explore as te

    app = te.explore(area24, labels=tmp_path / "l.geojson", basemap=False, scatter=False)
    try:
        app.wait()
        ctl = app.controller
        other = next(y for y in ctl.arrays if y != app.state.year)
        got = []
        ctl.on("components", lambda year, comps: got.append((year, comps)))
        # ready: at once, on the caller's thread
        ctl.show_scatter_year(other)
        assert [y for y, _ in got] == [other] and ctl.scatter_year == other
        # not ready: queued on the worker, the event follows; nothing blocks meanwhile
        ctl.components.pop(other)
        ctl.rgb.pop(other)
        got.clear()
        ctl.show_scatter_year(other)
        app.wait()
        assert [y for y, _ in got] == [other]
        np.testing.assert_array_equal(got[0][1].values, ctl.components[other].values)
        # a year switch in the state makes the scatter follow
        got.clear()
        app.state.year = other
        assert [y for y, _ in got] == [other]
        app.wait()
        assert app.state.error == ""
    finally:
        app.close()


def test_wait_after_close_returns_at_once(area24, tmp_path):
    import tessera_explore as te

    app = te.explore(area24, labels=tmp_path / "l.geojson", basemap=False, scatter=False)
    app.wait()
    app.close()
    assert app.wait() is app and app.closed  # nothing left to wait for, no RuntimeError
