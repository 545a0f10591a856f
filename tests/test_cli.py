"""The ``tessera-explore`` command line: info, fetch, and the lab/app commands."""

from __future__ import annotations

import json
import subprocess
import sys

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


def test_lab_and_app_commands(tmp_path, capsys):
    assert cli.main(["lab", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("jupyter lab") and out.strip().endswith("01_quickstart.ipynb")
    assert cli.main(["lab", "nope.ipynb", "--dry-run"]) == 2
    capsys.readouterr()
    assert cli.main(["app", "demo", "--port", "8899", "--workdir", str(tmp_path), "--no-basemap", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("voila ") and "--port=8899" in out and "--no-browser" in out
    nb = nbformat.read(tmp_path / "explorer.ipynb", as_version=4)
    code = nb.cells[0].source
    compile(code, "explorer", "exec")
    assert "te.tutorial.open_demo()" in code and "te.explore(da, basemap=False)" in code
    nb = cli.app_notebook("v1.1", bbox=(0.0, 52.1, 0.1, 52.2), year=2024, labels="l.geojson")
    assert "te.open_embeddings('v1.1', bbox=(0.0, 52.1, 0.1, 52.2), year=2024)" in nb.cells[0].source
    assert "labels='l.geojson'" in nb.cells[0].source
    with pytest.raises(SystemExit, match="bbox"):
        cli.app_notebook("v1.1")


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
