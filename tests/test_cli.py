"""The ``tessera-explore`` command line: info, fetch, and the lab/app commands."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tessera_explore import cli


def test_info_lists_versions_and_what_is_cached(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TESSERA_EXPLORE_CACHE", str(tmp_path))
    (tmp_path / "zarr" / "abc123").mkdir(parents=True)
    (tmp_path / "zarr" / "abc123" / "chunk").write_bytes(b"x" * 2048)
    assert cli.main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["versions"]["tessera_explore"] and data["versions"]["zarr"]
    assert data["cache_root"] == str(tmp_path)
    assert data["caches"]["zarr"]["entries"] == [{"name": "abc123", "bytes": 2048}]
    assert data["caches"]["weights"]["entries"] == []
    assert cli.main(["info"]) == 0
    text = capsys.readouterr().out
    assert "cache root: " + str(tmp_path) in text and "abc123" in text and "2.0 kB" in text


def test_fetch_copies_an_area_from_a_store(tmp_path, capsys):
    import numpy as np

    import tessera_explore as te
    from tessera_explore.testing import make_store

    src = make_store(tmp_path / "src.zarr", tiles=[(0.05, 52.15)], years=[2024], shape=(40, 40), seed=1)
    bbox = ["0.01", "52.11", "0.09", "52.19"]
    assert cli.main(["fetch", "--bbox", *bbox, "--year", "2024", "--dest", str(tmp_path / "copy.zarr"),
                     "--source", src, "--quiet"]) == 0
    assert capsys.readouterr().out.strip().endswith("copy.zarr")
    b = tuple(float(v) for v in bbox)
    a = te.open_embeddings(src, bbox=b, year=2024).values
    c = te.open_embeddings(str(tmp_path / "copy.zarr"), bbox=b, year=2024).values
    np.testing.assert_array_equal(a, c)


def test_fetch_reports_errors_without_a_traceback(tmp_path, capsys):
    code = cli.main(["fetch", "--bbox", "0", "52", "0.1", "52.1", "--year", "2024", "--dest", str(tmp_path / "d"),
                     "--source", str(tmp_path / "missing.zarr"), "--quiet"])
    assert code == 1
    assert "tessera-explore fetch:" in capsys.readouterr().err


def test_lab_and_app_commands(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["lab", "--dry-run"]) == 0
    out = capsys.readouterr().out
    root = cli._checkout()
    assert out.startswith("jupyter lab") and out.strip().endswith("01_quickstart.ipynb")
    if root is not None:  # a checkout: rooted above notebooks/, so the workshop is reachable too
        assert f"--ServerApp.root_dir={root} " in out and (root / "workshop").is_dir()
    assert cli.main(["lab", "nope.ipynb", "--dry-run"]) == 2
    assert f"no notebook or folder {tmp_path / 'nope.ipynb'}" in capsys.readouterr().err
    assert cli.main(["app", "demo", "--port", "8899", "--workdir", str(tmp_path / "w"), "--no-basemap",
                     "--dry-run"]) == 0
    first, command = capsys.readouterr().out.splitlines()[:2]
    assert first.startswith(f"labels: {tmp_path / cli.APP_LABELS} ")
    assert command.startswith("voila ") and "--port=8899" in command and "--no-browser" in command
    nb = nbformat.read(tmp_path / "w" / "explorer.ipynb", as_version=4)
    code = nb.cells[0].source
    compile(code, "explorer", "exec")
    assert "te.tutorial.open_demo()" in code
    assert f"te.explore(da, labels={str(tmp_path / cli.APP_LABELS)!r}, basemap=False)" in code
    assert code.splitlines()[-1] == "app"  # the explorer is the cell's value: Voila shows it
    nb = cli.app_notebook("v1.1", bbox=(0.0, 52.1, 0.1, 52.2), year=2024, labels="l.geojson")
    assert "te.open_embeddings('v1.1', bbox=(0.0, 52.1, 0.1, 52.2), year=2024)" in nb.cells[0].source
    assert "labels='l.geojson'" in nb.cells[0].source
    with pytest.raises(SystemExit, match="bbox"):
        cli.app_notebook("v1.1")


def test_the_app_label_file_is_the_explorers_default_name():
    from tessera_explore.widgets.app import DEFAULT_LABELS

    assert cli.APP_LABELS == DEFAULT_LABELS


def test_lab_takes_a_path_from_the_current_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "workshop").mkdir()
    (tmp_path / "workshop" / "exercises.ipynb").write_text("{}")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")  # another folder than the notebook's
    assert cli.main(["lab", "../workshop/exercises.ipynb", "--dry-run"]) == 0
    out = capsys.readouterr().out.split()
    # not below the current folder: rooted at the notebook's folder
    assert out[-2:] == [f"--ServerApp.root_dir={tmp_path / 'workshop'}", str(tmp_path / "workshop" / "exercises.ipynb")]
    monkeypatch.chdir(tmp_path)
    assert cli.main(["lab", "workshop/exercises.ipynb", "--dry-run"]) == 0
    out = capsys.readouterr().out.split()
    assert out[-2:] == [f"--ServerApp.root_dir={tmp_path}", str(tmp_path / "workshop" / "exercises.ipynb")]
    assert cli.main(["lab", "workshop", "--dry-run"]) == 0  # a folder below the current one: shown from here
    assert capsys.readouterr().out.split()[-2:] == [f"--ServerApp.root_dir={tmp_path}", str(tmp_path / "workshop")]
    assert cli.main(["lab", ".", "--dry-run"]) == 0
    assert capsys.readouterr().out.split()[-1] == f"--ServerApp.root_dir={tmp_path}"
    assert cli.main(["lab", "workshop/solutions.ipynb", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err == f"tessera-explore lab: no notebook or folder {tmp_path / 'workshop' / 'solutions.ipynb'}\n"
    root = cli._checkout()
    if root is not None:  # a tutorial's bare name, from elsewhere: refused, with where the tutorial is
        assert cli.main(["lab", "02_projections.ipynb", "--dry-run"]) == 2
        assert f"(the tutorial is {root / 'notebooks' / '02_projections.ipynb'})" in capsys.readouterr().err


def test_app_labels_default_to_the_current_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["app", "demo", "--workdir", str(tmp_path / "w"), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"labels: {tmp_path / 'tessera_labels.geojson'} (read and written by the app; exports go beside it)"
    code = nbformat.read(tmp_path / "w" / "explorer.ipynb", as_version=4).cells[0].source
    assert f"labels={str(tmp_path / 'tessera_labels.geojson')!r}" in code  # absolute: the kernel runs in w/
    (tmp_path / "sub").mkdir()
    assert cli.main(["app", "demo", "--labels", "sub/mine.geojson", "--workdir", str(tmp_path / "w"), "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith(f"labels: {tmp_path / 'sub' / 'mine.geojson'} ")
    assert cli.main(["app", "demo", "--labels", "sub", "--dry-run"]) == 1
    assert "--labels sub is a folder, not a label file" in capsys.readouterr().err


def _lock_record(pid: int) -> str:
    import socket

    return json.dumps({"pid": pid, "host": socket.gethostname(), "since": "2025-01-01T00:00:00",
                       "owner": "tessera_explore.LabelStore", "token": "x"})


def test_remove_stale_lock_removes_only_a_lock_whose_process_is_gone(tmp_path):
    labels = tmp_path / "tessera_labels.geojson"
    lock = tmp_path / "tessera_labels.geojson.lock"
    assert cli.remove_stale_lock(labels) is False  # no lock
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    lock.write_text(_lock_record(gone.pid))
    assert cli.remove_stale_lock(labels) is True and not lock.exists()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(_lock_record(alive.pid))
        assert cli.remove_stale_lock(labels) is False and lock.exists()  # a live writer keeps its lock
    finally:
        alive.kill()
        alive.wait()
    assert cli.remove_stale_lock(labels, wait=5.0) is True and not lock.exists()
    lock.write_text(json.dumps({"pid": gone.pid, "host": "elsewhere", "owner": "tessera_explore.LabelStore"}))
    assert cli.remove_stale_lock(labels) is False and lock.exists()  # another computer's: not ours to judge
    lock.write_text("not json")
    assert cli.remove_stale_lock(labels) is False and lock.exists()


# a server stand-in: holds the label file's lock through a LabelStore, as the app's kernel does, and
# stops on SIGINT or SIGTERM by exiting normally (the store's lock goes at exit), as Voila does
_HOLDER = """
import signal, sys, time
from tessera_explore.classify import LabelStore
store = LabelStore(sys.argv[1])
def stop(signum, frame):
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
open(sys.argv[1] + ".ready", "w").close()
while True:
    time.sleep(0.1)
"""

_RUNNER = """
import sys
from tessera_explore import cli
from pathlib import Path
def cmd(args):
    return cli._run([sys.executable, "-c", {holder!r}, {labels!r}], False, own_group=True)
cli.cmd_info = cmd
sys.exit(cli.main(["info"]))
"""


@pytest.mark.parametrize("sig,status,said", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "stopped (SIGTERM)")])
def test_a_signal_stops_the_server_and_its_lock_goes(tmp_path, sig, status, said):
    import signal
    import time

    labels = tmp_path / "tessera_labels.geojson"
    code = _RUNNER.format(holder=_HOLDER, labels=str(labels))
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        while not (tmp_path / "tessera_labels.geojson.ready").exists() and time.monotonic() - t0 < 60:
            assert p.poll() is None, p.communicate()
            time.sleep(0.05)
        assert (tmp_path / "tessera_labels.geojson.lock").exists()
        p.send_signal(getattr(signal, sig))  # to the command alone: the server runs in its own session
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == status, err
    assert err == f"tessera-explore info: {said}\n"
    assert not (tmp_path / "tessera_labels.geojson.lock").exists()  # released by the holder's own exit


@pytest.mark.slow
@pytest.mark.network_local
def test_ctrl_c_stops_the_app_and_removes_the_label_lock(tmp_path):
    """The real thing: ``tessera-explore app demo``, a page load (Voila starts the kernel,
    which opens the label file in the current folder), SIGINT, no lock left."""
    import http.client
    import os
    import signal
    import socket
    import threading
    import time
    import urllib.request

    if shutil.which("voila") is None and not (Path(sys.executable).parent / "voila").exists():
        pytest.skip("voila is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, NO_PROXY="*", no_proxy="*", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    p = subprocess.Popen([sys.executable, "-m", "tessera_explore.cli", "app", "demo", "--no-basemap", "--port",
                          str(port), "--workdir", str(tmp_path / "w")], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lock = tmp_path / "tessera_labels.geojson.lock"
    try:
        first = p.stdout.readline()
        assert first.startswith(f"labels: {tmp_path / 'tessera_labels.geojson'} "), first
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(p.stdout), daemon=True).start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert p.poll() is None, "".join(lines)
                time.sleep(0.2)
        def load_page():  # cut short when the server stops
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=180).read()
            except (OSError, http.client.HTTPException) as err:
                lines.append(f"(page: {err!r})\n")

        threading.Thread(target=load_page, daemon=True).start()  # Voila starts a kernel per page, runs the cell
        while not lock.exists() and time.monotonic() - t0 < 180:
            assert p.poll() is None, "".join(lines)
            time.sleep(0.2)
        assert lock.exists(), "the app's kernel never opened the label file:\n" + "".join(lines)[-3000:]
        p.send_signal(signal.SIGINT)
        p.wait(timeout=90)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130
    assert not lock.exists(), "".join(lines)[-3000:]


def test_entry_point_is_installed():
    out = subprocess.run([sys.executable, "-m", "tessera_explore.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "fetch" in out.stdout and "info" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "tessera_explore.cli", "fetch"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--bbox" in bad.stderr


def test_console_script_runs():
    from pathlib import Path

    script = Path(sys.executable).parent / "tessera-explore"
    if not script.exists():
        pytest.skip("the package is not installed with its console script in this environment")
    out = subprocess.run([str(script), "info"], capture_output=True, text=True)
    assert out.returncode == 0 and "cache root:" in out.stdout


# --- failures a user can cause: one line naming the path or argument, an exit status, no traceback ---------

def _drop_root_override():  # pragma: no cover - runs in the child
    """Root ignores permission bits; without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH in its bounding
    set, the child (still uid 0, so it can read the root-owned interpreter) meets them as a user does."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _cli(*args, cache=None, as_user=False, cwd=None):
    """``python -m tessera_explore.cli ARGS`` in a subprocess (``as_user``: permission bits apply, even for root)."""
    import os

    env = dict(os.environ, NO_PROXY="*", no_proxy="*")
    if cache is not None:
        env["TESSERA_EXPLORE_CACHE"] = str(cache)
    pre = _drop_root_override if as_user and os.geteuid() == 0 else None
    try:
        return subprocess.run([sys.executable, "-m", "tessera_explore.cli", *map(str, args)], capture_output=True,
                              text=True, env=env, cwd=cwd, preexec_fn=pre, timeout=120)
    except subprocess.SubprocessError as err:
        pytest.skip(f"cannot make permission bits apply to a root process here: {err}")


def _one_line(out, command: str) -> str:
    err = out.stderr
    assert "Traceback" not in err, err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(f"tessera-explore {command}: "), err
    return err.strip()


@pytest.fixture
def small_store(tmp_path_factory):
    from tessera_explore.testing import make_store

    root = tmp_path_factory.mktemp("store")
    return make_store(root / "src.zarr", tiles=[(0.05, 52.15)], years=[2024], shape=(40, 40), seed=1)


FETCH = ["fetch", "--bbox", "0.01", "52.11", "0.09", "52.19", "--year", "2024", "--quiet"]


def test_fetch_into_a_file_or_below_one_is_one_line(tmp_path, small_store):
    f = tmp_path / "afile"
    f.write_text("mine")
    out = _cli(*FETCH, "--source", small_store, "--dest", f)
    assert out.returncode == 1
    assert f"--dest {f} is a file, not a folder" in _one_line(out, "fetch")
    below = f / "sub" / "copy.zarr"
    out = _cli(*FETCH, "--source", small_store, "--dest", below)
    assert out.returncode == 1
    assert f"--dest {below} cannot be created: {f} is a file, not a folder" in _one_line(out, "fetch")
    assert f.read_text() == "mine"  # untouched


def test_fetch_into_a_read_only_folder_is_one_line(tmp_path, small_store):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        out = _cli(*FETCH, "--source", small_store, "--dest", ro / "copy.zarr", as_user=True)
        assert out.returncode == 1
        assert f"--dest {ro / 'copy.zarr'} cannot be created: {ro} is not writable" in _one_line(out, "fetch")
        out = _cli(*FETCH, "--source", small_store, "--dest", ro, as_user=True)  # the folder itself
        assert out.returncode == 1 and f"--dest {ro} is not writable" in _one_line(out, "fetch")
        assert not list(ro.iterdir())
    finally:
        ro.chmod(0o755)


def test_a_bad_workdir_is_one_line(tmp_path):
    f = tmp_path / "afile"
    f.write_text("")
    for workdir, said in [(f, f"--workdir {f} is a file, not a folder"),
                          (f / "x", f"--workdir {f / 'x'} cannot be created: {f} is a file, not a folder")]:
        out = _cli("app", "demo", "--workdir", workdir, "--dry-run")
        assert out.returncode == 1 and said in _one_line(out, "app")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        out = _cli("app", "demo", "--workdir", ro / "w", "--dry-run", as_user=True)
        assert out.returncode == 1 and f"{ro} is not writable" in _one_line(out, "app")
    finally:
        ro.chmod(0o755)


def test_info_on_an_unreadable_cache_reports_the_rest_and_names_the_folder(tmp_path):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "w.pt").write_bytes(b"x" * 3000)
    locked = tmp_path / "zarr"
    (locked / "abc").mkdir(parents=True)
    locked.chmod(0)
    try:
        out = _cli("info", cache=tmp_path, as_user=True)
        assert out.returncode == 1
        assert f"cannot read the cache {locked}: Permission denied: {locked}" in _one_line(out, "info")
        assert "cache root: " + str(tmp_path) in out.stdout and "w.pt  3.0 kB" in out.stdout  # the rest is shown
        assert f"cannot read: Permission denied: {locked}" in out.stdout
        out = _cli("info", "--json", cache=tmp_path, as_user=True)
        assert out.returncode == 1
        data = json.loads(out.stdout)
        assert data["caches"]["zarr"]["problems"] == [f"Permission denied: {locked}"]
        assert data["caches"]["weights"]["entries"] == [{"name": "w.pt", "bytes": 3000}]
    finally:
        locked.chmod(0o755)
    # a folder inside the cache that cannot be read: its size is not silently 0
    (locked / "abc").chmod(0)
    try:
        out = _cli("info", cache=tmp_path, as_user=True)
        assert out.returncode == 1 and f"Permission denied: {locked / 'abc'}" in _one_line(out, "info")
    finally:
        (locked / "abc").chmod(0o755)
    # a cache root that is a file
    f = tmp_path / "afile"
    f.write_text("")
    out = _cli("info", cache=f)
    assert out.returncode == 1 and f"{f} is a file, not a folder" in _one_line(out, "info")


def test_ctrl_c_during_a_fetch_exits_130_with_one_line(tmp_path, small_store):
    import os
    import signal
    import time
    from pathlib import Path

    from tessera_explore.testing.server import serve_folder

    root = Path(small_store).parent
    with serve_folder(root, only=r"/(embeddings|scales)/c/", hang=60) as srv:  # chunk reads hang
        env = dict(os.environ, NO_PROXY="*", no_proxy="*", TESSERA_EXPLORE_CACHE=str(tmp_path / "cache"))
        p = subprocess.Popen([sys.executable, "-m", "tessera_explore.cli", *FETCH, "--dest", str(tmp_path / "c.zarr"),
                              "--source", srv.url + "/src.zarr"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
        try:
            t0 = time.monotonic()
            while srv.requests < 3 and time.monotonic() - t0 < 60 and p.poll() is None:
                time.sleep(0.05)  # metadata is served; then the fetch waits on the hanging chunks
            time.sleep(1.0)
            assert p.poll() is None, p.communicate()
            p.send_signal(signal.SIGINT)
            t1 = time.monotonic()
            out, err = p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
        assert time.monotonic() - t1 < 20
    assert p.returncode == 130
    assert err == "tessera-explore fetch: interrupted\n", err


def test_library_errors_and_usage_errors_from_the_shell(tmp_path):
    missing = tmp_path / "missing.zarr"
    out = _cli(*FETCH, "--source", missing, "--dest", tmp_path / "d")
    assert out.returncode == 1 and str(missing) in _one_line(out, "fetch")  # a TesseraExploreError, as its message
    out = _cli("fetch", "--bbox", "0.09", "52.11", "0.01", "52.19", "--year", "2024", "--dest", tmp_path / "d")
    assert out.returncode == 2 and "--bbox 0.09 52.11 0.01 52.19" in _one_line(out, "fetch")
    out = _cli("app", "v1.1", "--dry-run")
    assert out.returncode == 2 and "--bbox W S E N is needed" in _one_line(out, "app")
    assert not (tmp_path / "d").exists()


def test_unexpected_errors_are_one_line_unless_a_traceback_is_asked_for(monkeypatch, capsys):
    def boom(args):
        raise ValueError("something\ninside")

    def denied(args):
        raise PermissionError(13, "Permission denied", "/some/file")

    monkeypatch.setattr(cli, "cmd_info", boom)
    assert cli.main(["info"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tessera-explore info: unexpected ValueError: something inside" in err
    assert cli.main(["--traceback", "info"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().endswith("--traceback info ...' prints)")
    monkeypatch.setattr(cli, "cmd_info", denied)
    assert cli.main(["info"]) == 1
    assert capsys.readouterr().err == "tessera-explore info: Permission denied: /some/file\n"


def test_a_closed_pipe_is_no_traceback(tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "tessera_explore.cli", "info"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env={**__import__("os").environ, "TESSERA_EXPLORE_CACHE": str(tmp_path)})
    p.stdout.close()  # the reader goes away before the first line (``| head -0``)
    err = p.stderr.read().decode()
    p.wait(timeout=60)
    p.stderr.close()
    assert p.returncode == 1 and "Traceback" not in err and "BrokenPipeError" not in err, err
