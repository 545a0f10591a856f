"""Live mode's observation window: the panel's two dates reach embed_area, a bad window
is said in the status line instead of raising."""

from __future__ import annotations

import datetime as dt

import pytest


@pytest.fixture
def live_app(area24, tmp_path, monkeypatch):
    import tessera_explore as te
    from tessera_explore.encoder import area as encoder_area

    calls = []

    def fake_embed_area(bbox, year=None, **kw):
        calls.append({"bbox": tuple(bbox), "year": year, **kw})
        return area24  # the precomputed year stands in for the live result

    monkeypatch.setattr(encoder_area, "embed_area", fake_embed_area)
    app = te.explore(area24, labels=tmp_path / "labels.geojson", basemap=False, scatter=False,
                     live_model=object())
    app.wait()
    app.state.mode = "live"
    yield app, calls
    app.close()


def _bbox(app):
    da = app.controller.arrays[app.state.year]
    w, s, e, n = da.rio.transform_bounds("EPSG:4326")
    return (w, s, e, n)


def _draw(app, bbox):
    w, s, e, n = bbox
    ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
    app.map_view._on_draw(app.map_view.draw, "created",
                          {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}})


def test_empty_dates_embed_the_year_shown(live_app):
    app, calls = live_app
    assert app.panel.live_box.layout.display == ""  # shown in live mode
    app.controller.embed_live(_bbox(app))
    app.wait()
    assert calls[-1]["year"] == app.state.year and "start" not in calls[-1]
    assert app.state.error == ""
    assert app.controller.live is not None


def test_window_from_the_panel_reaches_embed_area(live_app):
    app, calls = live_app
    app.panel.live_start.value = "2023-07-01"
    app.panel.live_end.value = "2024-06-30"
    assert (app.state.live_start, app.state.live_end) == ("2023-07-01", "2024-06-30")
    _draw(app, _bbox(app))
    app.wait()
    assert app.state.error == ""
    call = calls[-1]
    assert call["year"] is None
    assert (call["start"], call["end"]) == (dt.date(2023, 7, 1), dt.date(2024, 6, 30))
    assert "2023-07-01 to 2024-06-30" in app.state.status


@pytest.mark.parametrize("start, end, said", [
    ("2024-01-01", "2025-06-30", "longer than one year"),
    ("2024-07-01", "", "needs both"),
    ("2024-07-01", "2024-03-01", "end is before start"),
    ("July", "2024-12-31", "not a date"),
])
def test_a_bad_window_is_said_not_raised(live_app, start, end, said):
    app, calls = live_app
    app.state.live_start, app.state.live_end = start, end
    _draw(app, _bbox(app))
    assert app.controller.embed_live(_bbox(app)) is None
    app.wait()
    assert calls == []
    assert app.state.error == ""
    assert "live embedding not started" in app.state.status and said in app.state.status


def test_window_box_only_in_live_mode(live_app):
    app, _ = live_app
    app.state.mode = "label"
    assert app.panel.live_box.layout.display == "none"
