"""The explorer embeds a drawn rectangle live (local STAC + COG servers) and shows it
beside the precomputed map."""

from __future__ import annotations

import math

import numpy as np
import pytest


@pytest.fixture
def precomputed_here(local_stac, tmp_path):
    """Synthetic precomputed tiles (year 2022) under the local STAC scene."""
    import tessera_explore as te
    from tessera_explore.testing import make_tiles

    w, s, e, n = local_stac.bbox
    box = (w - 0.01, s - 0.01, e + 0.01, n + 0.01)
    centres = [(round(math.floor(x * 10) / 10 + 0.05, 2), round(math.floor(y * 10) / 10 + 0.05, 2))
               for x in (box[0], box[2]) for y in (box[1], box[3])]
    make_tiles(tmp_path / "tiles", tiles=sorted(set(centres)), years=[2022], shape=(60, 60), seed=7)
    return te.open_embeddings(tmp_path / "tiles", bbox=box, year=2022)


def test_drawn_rectangle_is_embedded_live_and_shown(local_stac, tiny_v2, precomputed_here, tmp_path):
    import tessera_explore as te

    app = te.explore(precomputed_here, labels=tmp_path / "labels.geojson", basemap=False, scatter=False,
                     live_model=tiny_v2, live_stac=local_stac.config(), live_cache=tmp_path / "cache")
    try:
        app.wait()
        from tessera_explore.widgets.views import LIVE_COLOR

        assert app.map_view.live and "live" in [v for _, v in app.panel.mode.options]
        app.state.mode = "live"
        assert app.map_view.draw is not None and app.map_view.draw in app.map.controls
        w, s, e, n = local_stac.bbox
        ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]  # GeoJSON order, as the draw control sends it
        app.map_view._on_draw(app.map_view.draw, "created", {
            "type": "Feature", "properties": {"style": {"color": LIVE_COLOR}},  # the rectangle tool's colour
            "geometry": {"type": "Polygon", "coordinates": [ring]}})
        app.wait(timeout=300)
        assert app.state.error == ""
        live = app.controller.live
        te.validate(live)
        assert live.attrs["model_generation"] == "v2" and int(live.year) == 2022
        assert np.isfinite(live.values).any()
        layer = app.map_view.layers["live"]
        assert layer in app.map.layers and layer.visible and layer.url.startswith("data:image/png")
        (ls, lw), (ln, le) = layer.bounds
        assert abs(lw - w) < 0.002 and abs(le - e) < 0.002 and abs(ls - s) < 0.002 and abs(ln - n) < 0.002
        # different generations are not compared, and the app says why
        assert "not compared" in app.state.status and "v1.0" in app.state.status
    finally:
        app.close()
