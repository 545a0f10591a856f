"""Real STAC and COG servers on 127.0.0.1 for offline tests, demos and benchmarks.

* :class:`PgStac`: a private PostgreSQL + PostGIS cluster in a temporary folder, the pgstac
  schema (pypgstac), and **stac-fastapi-pgstac** under uvicorn: the software Planetary
  Computer's STAC API runs.  Needs the Debian packages ``postgresql-15`` and
  ``postgresql-15-postgis-3`` and the Python packages ``stac-fastapi-pgstac``,
  ``pypgstac[psycopg]`` and ``uvicorn`` (``requirements/test.txt``);
  :func:`unavailable_reason` says what is missing.
* :class:`CogServer`: a threaded HTTP/1.1 file server with Range requests (what GDAL
  needs for COGs), a request log, and failures on demand: every request after the
  ``fail_after``-th, the first ``fail_times`` requests of each file, or files listed in
  ``fail_paths``.
* :class:`LocalStac`: both, loaded with synthetic scenes from
  :func:`~tessera_explore.testing.stac.make_stac_scene`; ``.stac`` is the
  :class:`~tessera_explore.encoder.stac.StacConfig` that points at it.

Everything is a context manager and also has ``start()`` / ``stop()`` (for notebooks);
processes are started in their own session and stopped at interpreter exit at the latest.
"""

from __future__ import annotations

import atexit
import glob
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ..exceptions import TesseraExploreError

__all__ = ["unavailable_reason", "postgres_bindir", "PgStac", "CogServer", "LocalStac", "free_port"]

_PY_PACKAGES = {"stac_fastapi.pgstac": "stac-fastapi-pgstac", "pypgstac": "pypgstac[psycopg]", "psycopg": "psycopg",
                "uvicorn": "uvicorn"}



class ServerStartError(TesseraExploreError, RuntimeError):
    """A local test server (PostgreSQL, the STAC API, the COG server) did not start."""


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bindir() -> Path | None:
    """Folder of ``initdb``/``pg_ctl`` (newest installed PostgreSQL), or ``None``."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(re.findall(r"/(\d+)/bin", p)[0]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def unavailable_reason() -> str | None:
    """Why the STAC server cannot run here (``None`` when it can)."""
    bindir = postgres_bindir()
    if bindir is None:
        return ("PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin); install the Debian "
                "packages postgresql-15 and postgresql-15-postgis-3 (scripts/system-deps.sh does when root)")
    version = bindir.parent.name
    if not glob.glob(f"/usr/share/postgresql/{version}/extension/postgis.control") and not glob.glob(
            "/usr/share/postgresql/*/extension/postgis.control"):
        return f"PostGIS is not installed for PostgreSQL {version}; install postgresql-{version}-postgis-3"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root but runuser is missing (PostgreSQL refuses to run as root)"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root but there is no 'postgres' user to run PostgreSQL as"
    missing = [pip for mod, pip in _PY_PACKAGES.items() if importlib.util.find_spec(mod.split(".")[0]) is None
               or (mod == "stac_fastapi.pgstac" and _missing_submodule(mod))]
    if missing:
        return f"Python packages missing: {', '.join(missing)} (pip install -r requirements/test.txt)"
    return None


def _missing_submodule(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except ModuleNotFoundError:
        return True


def _wait_http(url: str, proc: subprocess.Popen | None, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-2000:] if log is not None and log.exists() else ""
            raise ServerStartError(f"server process exited with {proc.returncode} before {url} answered:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - our own 127.0.0.1 server
                if r.status == 200:
                    return
        except OSError as err:
            last = err
        time.sleep(0.05)
    raise ServerStartError(f"{url} did not answer within {timeout} s: {last}")


class _Stoppable:
    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class PgStac(_Stoppable):
    """PostgreSQL + pgstac + stac-fastapi-pgstac on 127.0.0.1 (``.url`` once started)."""

    def __init__(self, *, workdir: str | os.PathLike | None = None, startup_timeout: float = 60.0):
        self._own_dir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else None
        self.startup_timeout = startup_timeout
        self.url = ""
        self.dsn = ""
        self._api: subprocess.Popen | None = None
        self._pg_started = False
        self._bindir: Path | None = None

    def _pg(self, *args: str) -> list[str]:
        cmd = [str(self._bindir / args[0]), *args[1:]]
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def start(self) -> PgStac:
        reason = unavailable_reason()
        if reason:
            raise ServerStartError(f"cannot start the STAC server: {reason}")
        self._bindir = postgres_bindir()
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="tessera-stac-"))
        os.chmod(self.workdir, 0o755)  # the postgres user must traverse it
        pgdir = self.workdir / "pg"
        pgdir.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(pgdir, "postgres", "postgres")
        data, log = pgdir / "data", pgdir / "postgres.log"
        port = free_port()
        atexit.register(self.stop)
        try:
            subprocess.run(self._pg("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E",
                                    "UTF8", "--locale=C.UTF-8"), check=True, capture_output=True, text=True)
            opts = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={pgdir} -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off")
            subprocess.run(self._pg("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-o", opts, "start"),
                           check=True, capture_output=True, text=True, start_new_session=True)
            self._pg_started = True
            self.dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
            from pypgstac.db import PgstacDB
            from pypgstac.migrate import Migrate

            with PgstacDB(dsn=self.dsn) as db:
                Migrate(db).run_migration()
            api_port = free_port()
            env = {**os.environ, "PGUSER": "postgres", "PGPASSWORD": "unused", "PGHOST": "127.0.0.1",
                   "PGPORT": str(port), "PGDATABASE": "postgres"}
            api_log = self.workdir / "api.log"
            with open(api_log, "wb") as out:
                self._api = subprocess.Popen(
                    [sys.executable, "-m", "uvicorn", "stac_fastapi.pgstac.app:create_app", "--factory", "--host",
                     "127.0.0.1", "--port", str(api_port), "--log-level", "warning"],
                    env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                )
            self.url = f"http://127.0.0.1:{api_port}"
            _wait_http(self.url + "/", self._api, self.startup_timeout, api_log)
        except subprocess.CalledProcessError as err:
            self.stop()
            raise ServerStartError(f"PostgreSQL failed: {' '.join(err.cmd)}\n{err.stdout}\n{err.stderr}") from err
        except BaseException:
            self.stop()
            raise
        return self

    def load(self, collections: Sequence[dict], items: Sequence[dict]) -> None:
        """Insert collections and items (dicts) into pgstac (existing ids are ignored)."""
        from pypgstac.db import PgstacDB
        from pypgstac.load import Loader, Methods

        with PgstacDB(dsn=self.dsn) as db:
            loader = Loader(db)
            loader.load_collections(iter(list(collections)), Methods.insert_ignore)
            by_coll: dict[str, list[dict]] = {}
            for item in items:
                by_coll.setdefault(item["collection"], []).append(item)
            for group in by_coll.values():
                loader.load_items(iter(group), Methods.insert_ignore)

    def stop(self) -> None:
        if self._api is not None:
            if self._api.poll() is None:
                self._api.terminate()
                try:
                    self._api.wait(10)
                except subprocess.TimeoutExpired:
                    self._api.kill()
                    self._api.wait(5)
            self._api = None
        if self._pg_started and self.workdir is not None:
            subprocess.run(self._pg("pg_ctl", "-D", str(self.workdir / "pg" / "data"), "-m", "fast", "-w", "stop"),
                           capture_output=True)
            self._pg_started = False
        if self._own_dir and self.workdir is not None and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        self.url = ""


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class CogServer(_Stoppable):
    """Serve ``root`` on 127.0.0.1 with HTTP Range support, a request log and failures on demand.

    ``log`` holds ``(method, path, range header, status, bytes sent)`` per request.
    Failure switches (change them any time): ``fail_after`` (answer ``fail_status`` to every
    request after that many), ``fail_times`` (the first N requests of each path fail),
    ``fail_paths`` (substrings of paths that always fail).
    """

    def __init__(self, root: str | os.PathLike, *, port: int = 0):
        self.root = Path(root).resolve()
        self.port = port
        self.url = ""
        self.log: list[tuple[str, str, str, int, int]] = []
        self.fail_after: int | None = None
        self.fail_times = 0
        self.fail_paths: tuple[str, ...] = ()
        self.fail_status = int(HTTPStatus.SERVICE_UNAVAILABLE)
        self._served = 0
        self._per_path: dict[str, int] = {}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def reset_failures(self) -> None:
        with self._lock:
            self.fail_after, self.fail_times, self.fail_paths = None, 0, ()
            self._served = 0
            self._per_path.clear()

    def requests(self, method: str = "GET", suffix: str = ".tif") -> list[tuple[str, str, str, int, int]]:
        """Logged requests of one method for paths ending in ``suffix``."""
        return [r for r in list(self.log) if r[0] == method and r[1].endswith(suffix)]

    def _should_fail(self, path: str) -> bool:
        with self._lock:
            self._served += 1
            n = self._per_path.get(path, 0)
            self._per_path[path] = n + 1
            if self.fail_after is not None and self._served > self.fail_after:
                return True
            if n < self.fail_times:
                return True
            return any(p in path for p in self.fail_paths)

    def start(self) -> CogServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out at once (no 40 ms delayed-ACK stalls)

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, body: bytes = b"", headers: dict | None = None, rng: str = "",
                      head: bool = False) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head and body:
                    self.wfile.write(body)
                server.log.append((self.command, self.path.split("?")[0], rng, status, 0 if head else len(body)))

            def _serve(self, head: bool) -> None:
                path = self.path.split("?")[0]
                rng = self.headers.get("Range", "")
                target = (server.root / path.lstrip("/")).resolve()
                if server.root not in target.parents or not target.is_file():
                    return self._send(404, b"not found", rng=rng, head=head)
                if server._should_fail(path):
                    return self._send(server.fail_status, b"failure on purpose", rng=rng, head=head)
                size = target.stat().st_size
                common = {"Accept-Ranges": "bytes", "Content-Type": "image/tiff"}
                m = _RANGE.match(rng.strip()) if rng else None
                if rng and m is None:
                    return self._send(200, target.read_bytes(), common, rng, head)  # multi-range: whole file
                if m is None:
                    if head:
                        return self._head(size, common, rng)
                    return self._send(200, target.read_bytes(), common, rng)
                a, b = m.groups()
                if a == "":
                    start, end = max(0, size - int(b)), size - 1
                else:
                    start, end = int(a), min(size - 1, int(b)) if b else size - 1
                if start >= size or start > end:
                    return self._send(416, b"", {"Content-Range": f"bytes */{size}"}, rng, head)
                with open(target, "rb") as f:
                    f.seek(start)
                    body = f.read(end - start + 1)
                return self._send(206, body, {**common, "Content-Range": f"bytes {start}-{end}/{size}"}, rng, head)

            def _head(self, size: int, common: dict, rng: str) -> None:
                self.send_response(200)
                for k, v in common.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                server.log.append(("HEAD", self.path.split("?")[0], rng, 200, 0))

            def do_GET(self) -> None:  # noqa: N802
                self._serve(head=False)

            def do_HEAD(self) -> None:  # noqa: N802
                self._serve(head=True)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="CogServer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        self.url = ""


class LocalStac(_Stoppable):
    """Synthetic scenes behind a real STAC API and COG server, all on 127.0.0.1.

    ``scenes`` are keyword-argument dicts for :func:`~tessera_explore.testing.stac.make_stac_scene`
    (default: one 32 x 32 px area, year 2022).  After ``start()``: ``.catalogs`` (one
    :class:`~tessera_explore.testing.stac.SyntheticStac` per scene), ``.api_url``,
    ``.cogs`` (the :class:`CogServer`), ``.bbox`` (the first scene's area) and
    :meth:`config` / ``.stac`` for :func:`~tessera_explore.embed_area`.
    """

    def __init__(self, scenes: Sequence[dict] | None = None, *, workdir: str | os.PathLike | None = None):
        self.scenes = [dict(s) for s in (scenes or [{}])]
        self._own_dir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else None
        self.catalogs: list = []
        self.cogs: CogServer | None = None
        self.pg: PgStac | None = None
        self.api_url = ""

    def start(self) -> LocalStac:
        from .stac import make_stac_scene

        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="tessera-localstac-"))
        data = self.workdir / "data"
        try:
            self.catalogs = [make_stac_scene(data, **s) for s in self.scenes]
            self.cogs = CogServer(data).start()
            self.pg = PgStac().start()
            colls = {c["id"]: c for cat in self.catalogs for c in cat.collections}
            items = [i for cat in self.catalogs for i in cat.stac_items(self.cogs.url)]
            self.pg.load(list(colls.values()), items)
            self.api_url = self.pg.url
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        return self.catalogs[0].bbox

    def config(self, **options: Any):
        """A :class:`~tessera_explore.encoder.stac.StacConfig` for this server (Planetary
        Computer's collections and asset names, no signing); options are StacConfig fields."""
        from ..encoder.stac import planetary_computer

        options.setdefault("name", "local")
        return planetary_computer(url=self.api_url, sign=False, **options)

    @property
    def stac(self):
        return self.config()

    def stop(self) -> None:
        if self.pg is not None:
            self.pg.stop()
            self.pg = None
        if self.cogs is not None:
            self.cogs.stop()
            self.cogs = None
        if self._own_dir and self.workdir is not None and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
