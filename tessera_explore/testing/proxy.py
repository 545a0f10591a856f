"""A TCP proxy on 127.0.0.1 that puts a far network between a client and a local server.

``latency_proxy(upstream_url, rtt=0.08)`` relays every connection to the server at
``upstream_url`` (for example one started by :func:`~tessera_explore.testing.server.serve_folder`)
and adds a fixed round trip the way a distant link does:

* a new connection pays one ``rtt`` before its first request is read (the TCP
  handshake), so the first request on a connection costs two round trips;
* every request pays one ``rtt``: the first byte of its response reaches the client no
  earlier than ``rtt`` after the request reached the proxy.  A keep-alive connection
  therefore pays one round trip per request, like a real far link.

Bandwidth is not limited: bodies stream at the speed of the machine once they start.
Each connection is relayed by its own two threads, so many connections (and requests)
can be in flight at once; the delays of one never hold up another.

The proxy speaks bytes, not HTTP: it takes client bytes that arrive after the previous
response began as a new request.  That is exact for HTTP/1.x clients that do not
pipeline (obstore/reqwest, aiohttp, ``http.client``, ``urllib``, browsers).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from urllib.parse import urlsplit

__all__ = ["latency_proxy", "LatencyProxy"]

_BUF = 256 * 1024


class LatencyProxy:
    """State of a running proxy: its URL, the round trip it adds and its counters.

    ``url`` stands in for ``upstream_url`` (same path), ``rtt`` is the round trip in
    seconds.  Counters: ``requests`` (requests relayed), ``connections`` (connections
    accepted), ``bytes_down`` (bytes relayed to clients), ``bytes_up`` (bytes relayed
    to the server), ``peak_in_flight`` (the most requests waiting for the first byte of
    their response at once: how many round trips the client overlapped).
    """

    def __init__(self, upstream_url: str, rtt: float = 0.08):
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"latency_proxy relays plain http:// servers, got {upstream_url!r}")
        if rtt < 0:
            raise ValueError(f"rtt must be >= 0 seconds, got {rtt!r}")
        self.upstream = (parts.hostname, parts.port or 80)
        self.upstream_url = upstream_url
        self.path = parts.path.rstrip("/")
        self.rtt = float(rtt)
        self.url = ""
        self.requests = 0
        self.connections = 0
        self.bytes_down = 0
        self.bytes_up = 0
        self.peak_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None

    def reset_counters(self) -> None:
        """Zero the request, connection, byte and in-flight counters."""
        with self._lock:
            self.requests = self.connections = self.bytes_down = self.bytes_up = 0
            self.peak_in_flight = self._in_flight

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> LatencyProxy:
        listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        listener.settimeout(0.2)
        self._listener = listener
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}{self.path}"
        self._acceptor = threading.Thread(target=self._accept_loop, name="latency-proxy", daemon=True)
        self._acceptor.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, cut every open connection and wait for the relay threads."""
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(timeout)
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            socks = list(self._sockets)
            threads = list(self._threads)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))

    # -- relaying --------------------------------------------------------------------------

    def _spawn(self, target, *args, name: str) -> None:
        t = threading.Thread(target=self._run_thread, args=(target, *args), name=name, daemon=True)
        with self._lock:
            self._threads.add(t)
        t.start()

    def _run_thread(self, target, *args) -> None:
        try:
            target(*args)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._sockets.add(s)

    def _close(self, s: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(s)
        with contextlib.suppress(OSError):
            s.close()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            client.settimeout(None)
            self._track(client)
            with self._lock:
                self.connections += 1
            self._spawn(self._connection, client, name="latency-proxy-conn")

    def _connection(self, client: socket.socket) -> None:
        # the handshake of a far link: nothing the client sends is read for one round trip
        if self._stopping.wait(self.rtt):
            self._close(client)
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=30)
        except OSError:
            self._close(client)
            return
        upstream.settimeout(None)
        self._track(upstream)
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        state = _Conn()
        self._spawn(self._downstream, upstream, client, state, name="latency-proxy-down")
        try:
            self._upstream(client, upstream, state)
        finally:
            state.done.wait(60)
            self._close(client)
            self._close(upstream)

    def _upstream(self, client: socket.socket, upstream: socket.socket, state: _Conn) -> None:
        """Client -> server.  Bytes arriving after a response began start a new request."""
        try:
            while True:
                data = client.recv(_BUF)
                if not data:
                    with contextlib.suppress(OSError):
                        upstream.shutdown(socket.SHUT_WR)
                    return
                with self._lock:
                    if state.idle:
                        state.idle = False
                        state.pending.append(time.monotonic())
                        self.requests += 1
                        self._in_flight += 1
                        self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
                    self.bytes_up += len(data)
                upstream.sendall(data)
        except OSError:
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_RDWR)

    def _downstream(self, upstream: socket.socket, client: socket.socket, state: _Conn) -> None:
        """Server -> client.  The first byte of each response waits out the round trip."""
        try:
            while True:
                data = upstream.recv(_BUF)
                if not data:
                    with contextlib.suppress(OSError):
                        client.shutdown(socket.SHUT_WR)
                    return
                with self._lock:
                    asked = state.pending.popleft() if state.pending else None
                if asked is not None:
                    wait = asked + self.rtt - time.monotonic()
                    stopped = wait > 0 and self._stopping.wait(wait)
                    with self._lock:
                        self._in_flight -= 1
                    if stopped:
                        return
                with self._lock:
                    # before the bytes leave: the client may answer them with its next request
                    state.idle = True
                    self.bytes_down += len(data)
                client.sendall(data)
        except OSError:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
        finally:
            with self._lock:
                self._in_flight -= len(state.pending)
                state.pending.clear()
            state.done.set()


class _Conn:
    """Per-connection state shared by its two relay threads (guarded by the proxy's lock)."""

    def __init__(self):
        self.idle = True  # the next client bytes start a new request
        self.pending: deque[float] = deque()  # arrival times of requests not yet answered
        self.done = threading.Event()


@contextlib.contextmanager
def latency_proxy(upstream_url: str, *, rtt: float = 0.08) -> Iterator[LatencyProxy]:
    """Relay ``upstream_url`` through 127.0.0.1 with ``rtt`` seconds added per round trip.

    Yields a :class:`LatencyProxy`; use ``proxy.url`` wherever ``upstream_url`` was used::

        with serve_folder(root) as server, latency_proxy(server.url + "/s.zarr", rtt=0.08) as proxy:
            da = te.open_embeddings(proxy.url, bbox=bbox, year=2024)
    """
    proxy = LatencyProxy(upstream_url, rtt).start()
    try:
        yield proxy
    finally:
        proxy.stop()
