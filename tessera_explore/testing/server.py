"""A real HTTP server on 127.0.0.1 that serves local files with HTTP Range support.

``serve_folder(root)`` serves every file under ``root`` at its relative path (a Zarr
store, a COG folder, anything).  ``serve_tiles(root)`` maps the remote tile URL layout
(``/npy/{dataset}/{year}/grid_X_Y/grid_X_Y[_scales].npy`` and
``/landmasks/{v}/grid_X_Y.tiff``) onto a geotessera-layout folder made by
:func:`~tessera_explore.testing.make_tiles`.

Both honour ``Range: bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` requests, count the
requests and body bytes they send, and can misbehave on purpose to test client code:
drop connections midway, answer 503 for the first requests of each file or for a while.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator
from urllib.parse import unquote

from ..io import grid

__all__ = ["serve_tiles", "serve_folder", "FileServer", "TileServer"]

_NPY = re.compile(r"^/npy/[^/]+/(\d{4})/(grid_[^/]+)/(grid_[^/]+\.npy)$")
_LANDMASK = re.compile(r"^/landmasks/[^/]+/(grid_[^/]+\.tiff)$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class FileServer:
    """State of a running server: its base URL, request log, counters and misbehaviour.

    ``drop_after``: bytes sent before the connection is cut on the first
    ``drop_times`` GET requests of each file.  ``fail_times``: 503 answers before
    each file is served.  ``fail_for``: seconds after start during which every request
    gets 503.  ``honour_range``: whether Range requests get 206.

    ``log`` holds ``(path, range header, status)`` per request; ``bytes_sent`` the body
    bytes sent in all; ``requests`` the number of requests answered.
    """

    def __init__(self, root: str, *, drop_after: int | None = None, drop_times: int = 1, fail_times: int = 0,
                 fail_for: float = 0.0, honour_range: bool = True,
                 mapper: Callable[[str, str], str | None] | None = None):
        self.root = root
        self.drop_after = drop_after
        self.drop_times = drop_times
        self.fail_times = fail_times
        self.fail_for = float(fail_for)
        self.honour_range = honour_range
        self.log: list[tuple[str, str, int]] = []
        self.bytes_sent = 0
        self._mapper = mapper
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self.url = ""

    @property
    def requests(self) -> int:
        return len(self.log)

    def reset_counters(self) -> None:
        """Forget the log and byte count (misbehaviour counters are kept)."""
        with self._lock:
            self.log.clear()
            self.bytes_sent = 0

    def local_path(self, url_path: str) -> str | None:
        if self._mapper is not None:
            return self._mapper(self.root, url_path)
        rel = unquote(url_path).lstrip("/")
        full = os.path.normpath(os.path.join(self.root, rel))
        if not (full == self.root or full.startswith(os.path.join(self.root, ""))):
            return None
        return full

    def _count(self, key: str) -> int:
        with self._lock:
            n = self._counts.get(key, 0)
            self._counts[key] = n + 1
            return n

    def _record(self, path: str, rng: str, status: int, nbytes: int = 0) -> None:
        with self._lock:
            self.log.append((path, rng, status))
            self.bytes_sent += nbytes


#: The tile server is a file server with the remote tile layout mapped on.
TileServer = FileServer


def _tile_mapper(root: str, url_path: str) -> str | None:
    m = _NPY.match(url_path)
    if m:
        return os.path.join(root, grid.REPRESENTATION_DIR, m.group(1), m.group(2), m.group(3))
    m = _LANDMASK.match(url_path)
    if m:
        return os.path.join(root, grid.LANDMASK_DIR, m.group(1))
    return None


def _parse_range(rng: str, size: int) -> tuple[int, int] | None | str:
    """(start, stop) of a Range header, None for no/ignored range, "bad" if unsatisfiable."""
    m = _RANGE.match(rng.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    a, b = m.group(1), m.group(2)
    if a:
        start = int(a)
        stop = min(size, int(b) + 1) if b else size
    else:  # suffix range: the last n bytes
        start, stop = max(0, size - int(b)), size
    if start >= size or stop <= start:
        return "bad"
    return start, stop


def _handler(server: FileServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output quiet
            pass

        def do_HEAD(self):
            self._serve(body=False)

        def do_GET(self):
            self._serve(body=True)

        def _serve(self, body: bool):
            rng = self.headers.get("Range", "")
            url_path = self.path.split("?")[0]
            path = server.local_path(url_path)
            if path is None or not os.path.isfile(path):
                return self._status(HTTPStatus.NOT_FOUND, rng)
            if server.fail_for and time.monotonic() - server._started < server.fail_for:
                return self._status(HTTPStatus.SERVICE_UNAVAILABLE, rng)
            n = server._count(self.path)
            if n < server.fail_times:
                return self._status(HTTPStatus.SERVICE_UNAVAILABLE, rng)
            size = os.path.getsize(path)
            start, stop = 0, size
            parsed = _parse_range(rng, size) if server.honour_range else None
            if parsed == "bad":
                server._record(self.path, rng, 416)
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if parsed is not None:
                start, stop = parsed
                self.send_response(HTTPStatus.PARTIAL_CONTENT)
                self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
                status = 206
            else:
                self.send_response(HTTPStatus.OK)
                status = 200
            self.send_header("Content-Length", str(stop - start))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if not body:
                server._record(self.path, rng, status)
                return
            drop = server.drop_after is not None and n - server.fail_times < server.drop_times
            sent = 0
            try:
                with open(path, "rb") as f:
                    f.seek(start)
                    while sent < stop - start:
                        block = f.read(min(65536, stop - start - sent))
                        if not block:
                            break
                        if drop and sent + len(block) > server.drop_after:
                            part = block[: max(0, server.drop_after - sent)]
                            self.wfile.write(part)
                            sent += len(part)
                            self.wfile.flush()
                            self.close_connection = True
                            self.connection.shutdown(2)
                            return
                        self.wfile.write(block)
                        sent += len(block)
            finally:
                server._record(self.path, rng, status, sent)

        def _status(self, code, rng):
            server._record(self.path, rng, int(code))
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@contextlib.contextmanager
def serve_folder(root: str | os.PathLike, **behaviour) -> Iterator[FileServer]:
    """Serve every file under ``root`` on a free port of 127.0.0.1 for a ``with`` block.

    Yields a :class:`FileServer`; ``server.url + "/relative/path"`` addresses a file.
    Keyword arguments set its misbehaviour (see :class:`FileServer`).
    """
    state = FileServer(os.path.abspath(os.fspath(root)), **behaviour)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    state._started = time.monotonic()
    thread = threading.Thread(target=httpd.serve_forever, name="file-server", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@contextlib.contextmanager
def serve_tiles(root: str | os.PathLike, **behaviour) -> Iterator[FileServer]:
    """Serve a tile folder under the remote tile URL layout (see :func:`serve_folder`).

    Pass ``server.url`` as ``base_url`` to ``fetch_tiles``.
    """
    with serve_folder(root, mapper=_tile_mapper, **behaviour) as state:
        yield state
