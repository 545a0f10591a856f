"""Package-level promises: a light, offline import and a complete public surface."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

import tessera_explore as te


def test_import_is_light_and_offline():
    code = (
        "import socket, sys, json\n"
        "def no(*a, **k): raise RuntimeError('network touched at import')\n"
        "socket.socket.connect = no; socket.getaddrinfo = no\n"
        "import tessera_explore\n"
        "print(json.dumps(sorted(m for m in ('torch', 'umap', 'leafmap', 'ipyleaflet', 'numba', 'rasterio',"
        " 'dask', 'sklearn') if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_public_names_resolve():
    missing = []
    for name in te.__all__:
        try:
            getattr(te, name)
        except (AttributeError, ImportError) as err:
            missing.append(f"{name}: {err}")
    assert not missing, missing


def test_unknown_attribute():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        te.nope


def test_demo_scene_is_cached(demo_cache):
    import os

    da = te.tutorial.open_demo(2024, shape=(96, 72))
    te.validate(da)
    path = te.tutorial.demo_path(shape=(96, 72))
    stamp = os.path.join(path, ".complete")
    mtime = os.path.getmtime(stamp)
    da2 = te.tutorial.open_demo(2023, shape=(96, 72))  # reused, not rebuilt
    assert os.path.getmtime(stamp) == mtime
    assert int(da2.year) == 2023 and da.shape == da2.shape
    assert str(demo_cache) in path
    a, b = da.values, da2.values
    assert np.isfinite(a[0]).mean() > 0.7
    assert not np.allclose(np.nan_to_num(a), np.nan_to_num(b))  # the years differ


def test_find_python_skips_failing_shims_and_old_versions(tmp_path):
    """scripts/find-python.sh (the Makefile's interpreter search) takes only a Python that runs and is 3.12+."""
    import os
    import shutil
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "find-python.sh"
    bin_ = tmp_path / "bin"
    bin_.mkdir()

    def fake(path: Path, body: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
        return path

    for name in ("python3.13", "python3.12"):  # pyenv shims of versions not selected
        fake(bin_ / name, f'echo "pyenv: {name}: command not found" >&2; exit 127')
    old = fake(bin_ / "python3", "exit 1")  # a Python 3.11 answers the version check with status 1
    versions = tmp_path / "home" / ".pyenv" / "versions"
    fake(versions / "3.11.7" / "bin" / "python3", "exit 1")
    for v in ("3.12.9", "3.13.0"):
        (versions / v / "bin").mkdir(parents=True)
        (versions / v / "bin" / "python3").symlink_to(sys.executable)  # this test's Python is 3.12+

    env = {"PATH": str(bin_), "HOME": str(tmp_path / "home")}

    def run(**extra):
        return subprocess.run([shutil.which("bash"), str(script)], env={**env, **extra}, capture_output=True, text=True)

    out = run()
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(versions / "3.12.9" / "bin" / "python3")  # 3.12, the pins' platform, first

    for v in ("3.12.9", "3.13.0"):
        os.remove(versions / v / "bin" / "python3")
    out = run()
    assert out.returncode == 1 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and "install" in out.stderr and "3.12" in out.stderr

    out = run(PYTHON=str(old))
    assert out.returncode == 1 and f"PYTHON={old}" in out.stderr
    out = run(PYTHON=sys.executable)
    assert out.returncode == 0 and out.stdout.strip() == sys.executable
