"""A real HTTP server on 127.0.0.1 that serves a local tile folder under the remote URL layout.

``serve_tiles(root)`` maps ``/npy/{dataset}/{year}/grid_X_Y/grid_X_Y[_scales].npy`` and
``/landmasks/{v}/grid_X_Y.tiff`` onto a geotessera-layout folder made by
:func:`~tessera_explore.testing.make_tiles`, honours HTTP Range requests, and can
misbehave on purpose (drop connections midway, answer 503) to test download code.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

from ..io import grid

__all__ = ["serve_tiles", "TileServer"]

_NPY = re.compile(r"^/npy/[^/]+/(\d{4})/(grid_[^/]+)/(grid_[^/]+\.npy)$")
_LANDMASK = re.compile(r"^/landmasks/[^/]+/(grid_[^/]+\.tiff)$")


class TileServer:
    """State of a running server: its base URL, request log and misbehaviour settings.

    ``drop_after``: bytes sent before the connection is cut on the first
    ``drop_times`` GET requests of each file.  ``fail_times``: 503 answers before
    each file is served.  ``honour_range``: whether Range requests get 206.
    """

    def __init__(self, root: str, *, drop_after: int | None = None, drop_times: int = 1, fail_times: int = 0,
                 honour_range: bool = True):
        self.root = root
        self.drop_after = drop_after
        self.drop_times = drop_times
        self.fail_times = fail_times
        self.honour_range = honour_range
        self.log: list[tuple[str, str, int]] = []  # (path, range header, status)
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.url = ""

    def local_path(self, url_path: str) -> str | None:
        m = _NPY.match(url_path)
        if m:
            return os.path.join(self.root, grid.REPRESENTATION_DIR, m.group(1), m.group(2), m.group(3))
        m = _LANDMASK.match(url_path)
        if m:
            return os.path.join(self.root, grid.LANDMASK_DIR, m.group(1))
        return None

    def _count(self, key: str) -> int:
        with self._lock:
            n = self._counts.get(key, 0)
            self._counts[key] = n + 1
            return n


def _handler(server: TileServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output quiet
            pass

        def do_GET(self):
            rng = self.headers.get("Range", "")
            path = server.local_path(self.path.split("?")[0])
            if path is None or not os.path.exists(path):
                return self._status(HTTPStatus.NOT_FOUND, rng)
            n = server._count(self.path)
            if n < server.fail_times:
                return self._status(HTTPStatus.SERVICE_UNAVAILABLE, rng)
            size = os.path.getsize(path)
            start = 0
            m = re.match(r"bytes=(\d+)-$", rng)
            if m and server.honour_range:
                start = int(m.group(1))
                if start >= size:
                    server.log.append((self.path, rng, 416))
                    self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(HTTPStatus.PARTIAL_CONTENT)
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                status = 206
            else:
                self.send_response(HTTPStatus.OK)
                status = 200
            server.log.append((self.path, rng, status))
            self.send_header("Content-Length", str(size - start))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            drop = server.drop_after is not None and n - server.fail_times < server.drop_times
            with open(path, "rb") as f:
                f.seek(start)
                sent = 0
                while True:
                    block = f.read(65536)
                    if not block:
                        break
                    if drop and sent + len(block) > server.drop_after:
                        self.wfile.write(block[: max(0, server.drop_after - sent)])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    self.wfile.write(block)
                    sent += len(block)

        def _status(self, code, rng):
            server.log.append((self.path, rng, int(code)))
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@contextlib.contextmanager
def serve_tiles(root: str | os.PathLike, **behaviour) -> Iterator[TileServer]:
    """Serve ``root`` on a free port of 127.0.0.1 for the duration of a ``with`` block.

    Yields a :class:`TileServer`; pass ``server.url`` as ``base_url`` to ``fetch_tiles``.
    """
    state = TileServer(os.fspath(root), **behaviour)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, name="tile-server", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
