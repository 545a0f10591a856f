"""StacConfig, presets, signing hook, grid and size limits (no STAC server needed)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tessera_explore.encoder import stac as S
from tessera_explore.exceptions import AreaTooLargeError, StacError


def test_presets_and_resolve():
    pc = S.resolve_stac("planetary-computer")
    assert pc.s2.collection == "sentinel-2-l2a" and pc.s1.collection == "sentinel-1-rtc"
    assert pc.s2.pc_offset and pc.data_source == "mpc"
    assert isinstance(pc.s2.patch_url, S.PlanetaryComputerSigner)
    es = S.resolve_stac("earth-search")
    assert not es.s2.pc_offset and es.s2.assets["B8A"] == "nir08" and es.s2.assets["SCL"] == "scl"
    assert es.s1.collection == "sentinel-1-rtc" and es.data_source == "aws"
    local = S.resolve_stac("http://127.0.0.1:1/api")
    assert local.s2.patch_url is None and local.s2.url == "http://127.0.0.1:1/api"
    assert S.resolve_stac(local) is local
    with pytest.raises(StacError, match="stac= must be"):
        S.resolve_stac("nowhere")


def test_network_settings_in_one_place():
    cfg = S.planetary_computer(url="http://127.0.0.1:1", sign=False, retries=2, retry_delay=0.25, timeout=7,
                               gdal_options={"GDAL_HTTP_VERSION": "2"})
    env = cfg.gdal_env()
    assert env["GDAL_HTTP_MAX_RETRY"] == "2" and env["GDAL_HTTP_RETRY_DELAY"] == "0.25"
    assert env["GDAL_HTTP_TIMEOUT"] == "7" and env["GDAL_HTTP_VERSION"] == "2"
    with pytest.raises(StacError, match="cannot open the STAC API"):
        cfg.replace(retries=0, timeout=1).open_client("http://127.0.0.1:1")


def test_area_grid_snaps_to_utm_10m():
    g = S.area_grid((0.195, 52.045, 0.205, 52.055))
    assert g.epsg == 32631
    assert g.transform.a == 10 and g.transform.e == -10
    assert g.transform.c % 10 == 0 and g.transform.f % 10 == 0
    assert 60 < g.shape[0] < 130 and 60 < g.shape[1] < 130
    assert S.area_grid((-70.01, -33.01, -70.0, -33.0)).epsg == 32719
    with pytest.raises(StacError, match="bbox"):
        S.area_grid((1, 2, 0, 3))


def test_size_limit_explains():
    g = S.area_grid((0.0, 52.0, 0.1, 52.1))
    with pytest.raises(AreaTooLargeError) as err:
        S.check_size(g, max_pixels=250_000, max_area_km2=25)
    msg = str(err.value)
    assert "GiB" in msg and "Split the area" in msg and "km2" in msg
    S.check_size(g, max_pixels=None, max_area_km2=None)


@pytest.fixture
def token_server():
    calls = []

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            calls.append(self.path)
            body = json.dumps({"token": "st=1&sig=abc", "msft:expiry": "2999-01-01T00:00:00Z"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/api/sas/v1/token", calls
    srv.shutdown()
    srv.server_close()


def test_planetary_computer_signer(token_server):
    url, calls = token_server
    sign = S.PlanetaryComputerSigner(url, retries=0)
    a = sign("https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/31/U/B04.tif")
    b = sign("https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/31/U/B05.tif")
    assert a.endswith("B04.tif?st=1&sig=abc") and b.endswith("B05.tif?st=1&sig=abc")
    assert calls == ["/api/sas/v1/token/sentinel2l2a01/sentinel2-l2"]  # one token, reused
    assert sign(a) == a  # already signed
    assert sign("http://127.0.0.1/x.tif") == "http://127.0.0.1/x.tif"  # not a blob: unchanged
