"""Binder installs what the tests ran: the same pins as ``make test``."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pins(path: Path) -> dict[str, str]:
    """name -> version of every ``name==version`` line, following ``-r`` includes."""
    out: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            out.update(_pins((path.parent / line[3:].strip()).resolve()))
            continue
        if line.startswith("-"):
            continue
        m = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;]+)", line)
        assert m, f"{path.name}: {raw!r} is not pinned with =="
        out[m.group(1).lower().replace("_", "-")] = m.group(3)
    return out


def test_binder_installs_the_tested_pins():
    binder = _pins(ROOT / "binder" / "requirements.txt")
    tested = _pins(ROOT / "requirements" / "test.txt")
    base = _pins(ROOT / "requirements" / "base.txt")
    assert set(base) <= set(binder), f"Binder misses {sorted(set(base) - set(binder))}"
    differ = {k: (v, tested.get(k)) for k, v in binder.items() if tested.get(k) != v}
    assert not differ, f"Binder pins differ from the tested ones: {differ}"


def test_binder_is_pip_based_and_prepares_the_demo():
    import yaml

    env = yaml.safe_load((ROOT / "binder" / "environment.yml").read_text())
    # repo2docker reads environment.yml first: it must name only Python and pip, and hand
    # every package to pip through requirements.txt (the tested pins)
    deps = env["dependencies"]
    conda = sorted(d for d in deps if isinstance(d, str))
    assert conda == ["pip", "python=3.12"], conda
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert pip == ["-r requirements.txt"]
    assert "download.pytorch.org/whl/cpu" in (ROOT / "binder" / "requirements.txt").read_text()
    post = (ROOT / "binder" / "postBuild").read_text()
    assert "demo_path()" in post and "pip install --no-deps" in post
    assert (ROOT / "binder" / "postBuild").stat().st_mode & 0o111
    readme = (ROOT / "README.md").read_text()
    assert "mybinder.org/badge_logo.svg" in readme and "01_quickstart.ipynb" in readme


def test_every_recipe_names_the_same_python():
    """pyproject, Binder and the conda recipe move together (Python 3.12, the pins' platform)."""
    import tomllib

    import yaml

    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.12", requires
    for path in (ROOT / "binder" / "environment.yml", ROOT / "environment.yml"):
        deps = yaml.safe_load(path.read_text())["dependencies"]
        pythons = [d for d in deps if isinstance(d, str) and d.startswith("python")]
        assert pythons == ["python=3.12"], (path.name, pythons)
    base = (ROOT / "requirements" / "base.txt").read_text()
    assert "Python 3.12" in base.splitlines()[0]
