"""Real-browser fixtures: the system Chromium driven by Playwright, against Voila on 127.0.0.1.

Skipped, with the reason, where Chromium or Playwright is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from browser_waits import scale

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic", "--no-first-run",
    "--disable-component-update", "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def playwright_browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip("Chromium is not installed (scripts/system-deps.sh installs it as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright (Python) is not installed")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class _Server:
    """A notebook server process on 127.0.0.1 serving ``root``, its output in ``<root>/<name>.log``."""

    name = "server"
    ready_path = "/"

    def __init__(self, root: str, env: dict):
        self.root = root
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = os.path.join(root, f"{self.name}.log")
        self._log = open(self.log, "w")
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env, cwd=root)
        limit = 90 * scale()  # a bound only: the loop ends as soon as the server answers
        deadline = time.time() + limit
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {open(self.log).read()[-2000:]}")
            try:
                urllib.request.urlopen(self.url + self.ready_path, timeout=2)
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"{self.name} did not answer {self.url + self.ready_path} within {limit:.0f} s: "
                           f"{open(self.log).read()[-2000:]}")

    def argv(self) -> list:
        raise NotImplementedError

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


class VoilaServer(_Server):
    name = "voila"

    def argv(self):
        return [sys.executable, "-m", "voila", "--no-browser", f"--port={self.port}", "--Voila.ip=127.0.0.1",
                "--VoilaConfiguration.file_allowlist=['.*']", self.root]


class LabServer(_Server):
    """JupyterLab without a token, with ``window.jupyterapp`` exposed for the tests."""

    name = "lab"
    ready_path = "/api/status"

    def argv(self):
        return [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={self.port}", "--ip=127.0.0.1",
                "--allow-root", "--IdentityProvider.token=", "--ServerApp.password=",
                "--LabApp.expose_app_in_browser=True", f"--ServerApp.root_dir={self.root}"]


def _serve(server_cls, root, demo_cache, servers, **env):
    env = dict(os.environ, TESSERA_EXPLORE_CACHE=str(demo_cache), PYTHONPATH=os.getcwd(), **env)
    srv = server_cls(str(root), env)
    servers.append(srv)
    return srv


@pytest.fixture
def voila(tmp_path, demo_cache):
    """Start Voila on a folder; yields a function ``start(notebooks: dict[name, nb]) -> VoilaServer``."""
    servers = []

    def start(notebooks: dict) -> VoilaServer:
        import nbformat

        for name, nb in notebooks.items():
            nbformat.write(nb, tmp_path / name)
        return _serve(VoilaServer, tmp_path, demo_cache, servers)

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def lab(tmp_path, demo_cache):
    """Start JupyterLab on a folder holding copies of the given notebooks:
    ``start(paths) -> LabServer``."""
    servers = []

    def start(paths) -> LabServer:
        for p in paths:
            shutil.copy(p, tmp_path / os.path.basename(p))
        # MALLOC_ARENA_MAX=2 as `make lab` and Binder's start script set it
        return _serve(LabServer, tmp_path, demo_cache, servers, JUPYTER_CONFIG_DIR=str(tmp_path / ".jupyter"),
                      JUPYTER_RUNTIME_DIR=str(tmp_path / ".runtime"), MALLOC_ARENA_MAX="2")

    yield start
    for s in servers:
        s.stop()
