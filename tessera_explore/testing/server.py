"""A real HTTP server on 127.0.0.1 that serves local files with HTTP Range support.

``serve_folder(root)`` serves every file under ``root`` at its relative path (a Zarr
store, a COG folder, anything).  ``serve_tiles(root)`` maps the remote tile URL layout
(``/npy/{dataset}/{year}/grid_X_Y/grid_X_Y[_scales].npy`` and
``/landmasks/{v}/grid_X_Y.tiff``) onto a geotessera-layout folder made by
:func:`~tessera_explore.testing.make_tiles`.

Both honour ``Range: bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` requests and
``If-Range`` (validators: an ETag and Last-Modified per file, which change when the file
is replaced), count the requests and body bytes they send, and can misbehave on purpose
to test client code: drop connections midway, answer 503 for the first requests of each
file or for a while, send a 206 with the wrong Content-Range, ignore If-Range, send an
HTML page instead of the file, gzip the body regardless of Accept-Encoding, or send no
validators at all.
"""

from __future__ import annotations

import contextlib
import email.utils
import gzip as _gzip
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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

    ``etag`` / ``last_modified``: whether responses carry these validators (derived from
    the file's inode, size and modification time, so replacing a file changes them).
    ``honour_if_range``: whether a Range request whose ``If-Range`` names another
    version of the file gets the whole file (200), as HTTP says; False answers 206
    regardless (a broken server).  ``wrong_content_range``: Range requests get a 206 with
    the whole file and ``Content-Range: bytes 0-...`` whatever was asked.  ``html``: every
    file is answered with an HTML page, labelled ``text/html`` (``True``) or disguised as
    ``application/octet-stream`` (``"disguised"``).  ``gzip``: bodies are gzip-compressed
    with ``Content-Encoding: gzip`` whatever the client accepts (Range ignored).
    ``throttle``: seconds to sleep after each 64 KiB block sent (to make downloads overlap).

    ``empty_body``: a 200 with no body whatever was asked.  ``huge_length``: headers
    announcing ``Content-Length: 10**12`` (and a matching Content-Range), then the real
    bytes.  ``hang``: seconds to wait before answering.  ``only``: a regular expression;
    when given, ``empty_body``, ``huge_length``, ``hang`` and ``gzip`` apply only to URL
    paths it matches (e.g. the chunks of one array), the rest is served properly.

    ``log`` holds ``(path, range header, status)`` per request; ``headers`` the request
    headers (a dict per request, same order); ``bytes_sent`` the body bytes sent in all;
    ``requests`` the number of requests answered.
    """

    def __init__(self, root: str, *, drop_after: int | None = None, drop_times: int = 1, fail_times: int = 0,
                 fail_for: float = 0.0, honour_range: bool = True,
                 mapper: Callable[[str, str], str | None] | None = None, etag: bool = True,
                 last_modified: bool = True, honour_if_range: bool = True, wrong_content_range: bool = False,
                 html: bool | str = False, gzip: bool = False, throttle: float = 0.0, empty_body: bool = False,
                 huge_length: bool = False, hang: float = 0.0, only: str | None = None):
        self.root = root
        self.empty_body = empty_body
        self.huge_length = huge_length
        self.hang = float(hang)
        self.only = re.compile(only) if only else None
        self.etag = etag
        self.last_modified = last_modified
        self.honour_if_range = honour_if_range
        self.wrong_content_range = wrong_content_range
        self.html = html
        self.gzip = gzip
        self.throttle = float(throttle)
        self.headers: list[dict] = []
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
            self.headers.clear()
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

    def _record(self, path: str, rng: str, status: int, nbytes: int = 0, headers: dict | None = None) -> None:
        with self._lock:
            self.log.append((path, rng, status))
            self.headers.append(dict(headers or {}))
            self.bytes_sent += nbytes

    def _add_bytes(self, nbytes: int) -> None:
        with self._lock:
            self.bytes_sent += nbytes

    @staticmethod
    def validators(path: str) -> tuple[str, str]:
        """``(ETag, Last-Modified)`` of a file as this server sends them."""
        st = os.stat(path)
        etag = f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'
        return etag, email.utils.formatdate(st.st_mtime, usegmt=True)


_HTML = (b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head>"
         b"<body><p>Please sign in to continue.</p></body></html>\n")


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
            req_headers = dict(self.headers.items())
            url_path = self.path.split("?")[0]
            path = server.local_path(url_path)
            if path is None or not os.path.isfile(path):
                return self._status(HTTPStatus.NOT_FOUND, rng, req_headers)
            if server.fail_for and time.monotonic() - server._started < server.fail_for:
                return self._status(HTTPStatus.SERVICE_UNAVAILABLE, rng, req_headers)
            n = server._count(self.path)
            if n < server.fail_times:
                return self._status(HTTPStatus.SERVICE_UNAVAILABLE, rng, req_headers)
            odd = server.only is None or bool(server.only.search(url_path))
            if odd and server.hang:
                time.sleep(server.hang)
            if odd and server.empty_body:
                return self._send_bytes(b"", 200, rng, req_headers, body, "application/octet-stream")
            if odd and server.huge_length:
                return self._send_huge(path, rng, req_headers, body)
            if server.html:
                return self._send_bytes(_HTML, 200, rng, req_headers, body,
                                        "text/html; charset=utf-8" if server.html is True else "application/octet-stream")
            etag, modified = server.validators(path)
            if server.gzip and odd:
                with open(path, "rb") as f:
                    return self._send_bytes(_gzip.compress(f.read()), 200, rng, req_headers, body,
                                            "application/octet-stream", encoding="gzip", etag=etag, modified=modified)
            size = os.path.getsize(path)
            start, stop = 0, size
            parsed = _parse_range(rng, size) if server.honour_range else None
            if_range = self.headers.get("If-Range")
            if parsed is not None and if_range and server.honour_if_range and if_range not in (etag, modified):
                parsed = None  # another version of the file: send it whole
            if parsed == "bad":
                server._record(self.path, rng, 416, headers=req_headers)
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 200 if parsed is None else 206
            server._record(self.path, rng, status, headers=req_headers)  # logged before the client hears back
            if parsed is not None and server.wrong_content_range:
                self.send_response(HTTPStatus.PARTIAL_CONTENT)
                self.send_header("Content-Range", f"bytes 0-{size - 1}/{size}")
                status = 206
            elif parsed is not None:
                start, stop = parsed
                self.send_response(HTTPStatus.PARTIAL_CONTENT)
                self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
                status = 206
            else:
                self.send_response(HTTPStatus.OK)
                status = 200
            self.send_header("Content-Length", str(stop - start))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            self._validator_headers(etag, modified)
            self.end_headers()
            if not body:
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
                        if server.throttle:
                            time.sleep(server.throttle)
            finally:
                server._add_bytes(sent)

        def _validator_headers(self, etag, modified):
            if server.etag:
                self.send_header("ETag", etag)
            if server.last_modified:
                self.send_header("Last-Modified", modified)

        def _send_bytes(self, data, status, rng, req_headers, body, ctype, encoding=None, etag=None, modified=None):
            server._record(self.path, rng, status, headers=req_headers)
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Type", ctype)
            if encoding:
                self.send_header("Content-Encoding", encoding)
            if etag is not None:
                self._validator_headers(etag, modified)
            self.end_headers()
            sent = 0
            try:
                if body:
                    drop = server.drop_after is not None and server._count(self.path + "#body") < server.drop_times
                    if drop and len(data) > server.drop_after:
                        self.wfile.write(data[: server.drop_after])
                        sent = server.drop_after
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    self.wfile.write(data)
                    sent = len(data)
            finally:
                server._add_bytes(sent)

        def _send_huge(self, path, rng, req_headers, body):
            """Headers that announce 10**12 bytes, then the real ones, then a closed connection."""
            size = os.path.getsize(path)
            parsed = _parse_range(rng, size)
            start, stop = parsed if isinstance(parsed, tuple) else (0, size)
            huge = 10**12
            server._record(self.path, rng, 206 if isinstance(parsed, tuple) else 200, headers=req_headers)
            if isinstance(parsed, tuple):
                self.send_response(HTTPStatus.PARTIAL_CONTENT)
                self.send_header("Content-Range", f"bytes {start}-{start + huge - 1}/{start + huge}")
            else:
                self.send_response(HTTPStatus.OK)
            self.send_header("Content-Length", str(huge))
            self.end_headers()
            self.close_connection = True
            if body:
                with open(path, "rb") as f:
                    f.seek(start)
                    data = f.read(stop - start)
                try:
                    self.wfile.write(data)
                    self.wfile.flush()
                    self.connection.shutdown(2)
                except OSError:
                    pass
                server._add_bytes(len(data))

        def _status(self, code, rng, req_headers=None):
            server._record(self.path, rng, int(code), headers=req_headers)
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


class _Server(ThreadingHTTPServer):
    # a client that opens its connections all at once (a window's requests are all in
    # flight together) must not find the listen queue full: socketserver's default is 5
    request_queue_size = 256


@contextlib.contextmanager
def serve_folder(root: str | os.PathLike, **behaviour) -> Iterator[FileServer]:
    """Serve every file under ``root`` on a free port of 127.0.0.1 for a ``with`` block.

    Yields a :class:`FileServer`; ``server.url + "/relative/path"`` addresses a file.
    Keyword arguments set its misbehaviour (see :class:`FileServer`).
    """
    state = FileServer(os.path.abspath(os.fspath(root)), **behaviour)
    httpd = _Server(("127.0.0.1", 0), _handler(state))
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
