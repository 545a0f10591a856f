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
