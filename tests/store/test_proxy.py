"""testing.latency_proxy: a far link between a client and the local test server.

Timings are checked loosely (a request takes at least 0.8 x the round trip; parallel
requests overlap), never to the millisecond."""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

import pytest

from tessera_explore.testing import latency_proxy
from tessera_explore.testing.server import serve_folder

PAYLOAD = os.urandom(3 * 1024 * 1024 + 17)


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "blob.bin").write_bytes(PAYLOAD)
    (tmp_path / "small.txt").write_bytes(b"hello")
    return tmp_path


def _conn(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)


def _get(conn: http.client.HTTPConnection, path: str, headers: dict | None = None):
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    return resp.status, dict(resp.getheaders()), resp.read()


def test_each_request_pays_the_round_trip_and_a_new_connection_one_more(folder):
    rtt = 0.15
    with serve_folder(folder) as srv, latency_proxy(srv.url, rtt=rtt) as proxy:
        conn = _conn(proxy.url)
        t = time.perf_counter()
        status, _, body = _get(conn, "/small.txt")
        first = time.perf_counter() - t
        assert status == 200 and body == b"hello"
        assert first >= 2 * 0.8 * rtt  # handshake + request
        for _ in range(3):  # keep-alive: one round trip a request
            t = time.perf_counter()
            status, _, body = _get(conn, "/small.txt")
            took = time.perf_counter() - t
            assert status == 200 and body == b"hello"
            assert took >= 0.8 * rtt
        conn.close()
        assert proxy.requests == srv.requests == 4
        assert proxy.connections == 1  # the requests shared one connection


def test_parallel_requests_overlap(folder):
    rtt, n = 0.2, 16
    with serve_folder(folder) as srv, latency_proxy(srv.url, rtt=rtt) as proxy:
        def fetch(_):
            with urlopen(proxy.url + "/small.txt", timeout=30) as r:
                return r.read()

        t = time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            bodies = list(pool.map(fetch, range(n)))
        took = time.perf_counter() - t
        assert bodies == [b"hello"] * n
        assert took >= 0.8 * rtt
        assert took < n * rtt / 2  # serially at least n * 2 rtt; in parallel about 2 rtt
        assert proxy.requests == srv.requests == n
        assert proxy.peak_in_flight > 1


def test_range_requests_pass_through_unchanged(folder):
    with serve_folder(folder) as srv, latency_proxy(srv.url, rtt=0.02) as proxy:
        direct, far = _conn(srv.url), _conn(proxy.url)
        for rng, want in (("bytes=100-199", PAYLOAD[100:200]), ("bytes=-1000", PAYLOAD[-1000:]),
                          ("bytes=3000000-", PAYLOAD[3000000:])):
            s1, h1, b1 = _get(direct, "/blob.bin", {"Range": rng})
            s2, h2, b2 = _get(far, "/blob.bin", {"Range": rng})
            assert s1 == s2 == 206
            assert b1 == b2 == want
            assert h1["Content-Range"] == h2["Content-Range"]
        status, _, body = _get(far, "/blob.bin")  # the whole file, larger than the relay's buffer
        assert status == 200 and body == PAYLOAD
        assert _get(far, "/missing.bin")[0] == 404
        direct.close()
        far.close()
        assert proxy.bytes_down > len(PAYLOAD)


def test_obstore_get_ranges_through_the_proxy(folder):
    import obstore
    from obstore.store import HTTPStore

    starts = [0, 5000, 1_000_000, 3 * 1024 * 1024]
    ends = [10, 9000, 2_500_000, len(PAYLOAD)]
    with serve_folder(folder) as srv, latency_proxy(srv.url, rtt=0.02) as proxy:
        store = HTTPStore.from_url(proxy.url, client_options={"allow_http": True})
        parts = obstore.get_ranges(store, "blob.bin", starts=starts, ends=ends)
        assert [bytes(p) for p in parts] == [PAYLOAD[a:b] for a, b in zip(starts, ends, strict=True)]
        assert bytes(obstore.get(store, "blob.bin").bytes()) == PAYLOAD
        assert proxy.requests == srv.requests >= 2


def test_proxy_stops_cleanly(folder):
    before = {t.ident for t in threading.enumerate()}
    with serve_folder(folder) as srv:
        with latency_proxy(srv.url, rtt=0.01) as proxy:
            conn = _conn(proxy.url)
            assert _get(conn, "/small.txt")[2] == b"hello"  # a keep-alive connection left open
            port = urlsplit(proxy.url).port
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        conn.close()
    time.sleep(0.1)
    left = [t for t in threading.enumerate() if t.ident not in before and t.name.startswith("latency-proxy")]
    assert not left


def test_proxy_keeps_the_upstream_path_and_refuses_other_schemes(folder):
    with serve_folder(folder) as srv, latency_proxy(srv.url + "/", rtt=0.0) as proxy:
        assert proxy.url.startswith("http://127.0.0.1:")
        with urlopen(Request(proxy.url + "/small.txt"), timeout=30) as r:
            assert r.read() == b"hello"
    with pytest.raises(ValueError, match="http://"):
        with latency_proxy("https://example.org/x", rtt=0.01):
            pass
