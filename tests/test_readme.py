"""The README against the code: the set-up commands, the explorer's accuracy rule, the
command line's defaults, the citation and the licences; the LICENSE file; and
``.gitignore`` against the files the quickstart, the workshop and ``tessera-explore app``
write."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten"}
AUTHORS = ["Zhengpeng Feng", "Clement Atzberger", "Sadiq Jaffer", "Jovana Knezevic", "Silja Sormunen", "Robin Young",
           "Madeline C Lisaius", "Markus Immitzer", "David A. Coomes", "Anil Madhavapeddy", "Andrew Blake",
           "Srinivasan Keshav"]


def _section(title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, flags=re.M | re.S)
    assert m, f"README has no section '## {title}'"
    return m.group(1)


def test_license_file_is_the_mit_licence_pyproject_names():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "tessera_explore contributors" in text
    assert "Permission is hereby granted, free of charge" in text and 'THE SOFTWARE IS PROVIDED "AS IS"' in text
    assert 'license = { text = "MIT" }' in (ROOT / "pyproject.toml").read_text()


def test_readme_says_how_to_cite_tessera():
    cite = _section("Citing TESSERA")
    bib = re.search(r"```bibtex\n(@misc\{.*?\n\})\n```", cite, flags=re.S)
    assert bib, "no BibTeX entry"
    entry = bib.group(1)
    assert "title={TESSERA: Temporal Embeddings of Surface Spectra for Earth Representation and Analysis}" in entry
    assert "eprint={2506.20380}" in entry and "year={2025}" in entry
    authors = re.search(r"author=\{(.*?)\}", entry).group(1).split(" and ")
    assert authors == AUTHORS


def test_the_citation_is_geotesseras_where_it_is_installed():
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        text = metadata("geotessera").get_payload() or ""
    except PackageNotFoundError:
        pytest.skip("geotessera is not installed")
    theirs = re.search(r"```bibtex\n(.*?)```", text, flags=re.S)
    if theirs is None:
        pytest.skip("this geotessera's README gives no BibTeX entry")
    authors = re.search(r"author=\{(.*?)\}", theirs.group(1)).group(1).split(" and ")
    assert authors == AUTHORS
    assert re.search(r"eprint=\{(.*?)\}", theirs.group(1)).group(1) == "2506.20380"


def test_readme_names_the_licences_of_the_software_the_embeddings_and_the_weights():
    lic = _section("Licences")
    assert "MIT" in lic and "(LICENSE)" in lic
    line = next(item for item in lic.split("\n- ") if "model weights" in item)
    assert "embeddings" in line and "CC0" in line and "ucam-eo/tessera" in line


def test_setup_is_two_commands_and_make_lab_roots_at_the_repository():
    block = re.search(r"## Set up.*?```bash\n(.*?)```", README, flags=re.S).group(1)
    assert [ln.split("#")[0].strip() for ln in block.strip().splitlines()] == ["make lab", "make test"]
    make = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^lab: .*\n\t(.*)\n", make, flags=re.M).group(1)
    assert recipe == "$(VENV)/bin/tessera-explore lab notebooks/01_quickstart.ipynb"  # run from the root


def test_the_accuracy_statement_matches_the_apps_rule():
    from tessera_explore.classify.evaluate import MIN_LABELS_PER_CLASS, cv_readiness

    explorer = _section("The explorer")
    said = re.search(r"cross-validated accuracy once (.*?)\(", " ".join(explorer.split()))
    assert said, "the explorer section says when the accuracy appears"
    assert f"at least {WORDS[MIN_LABELS_PER_CLASS]}" in said.group(1) and "two classes" in said.group(1)
    n = MIN_LABELS_PER_CLASS
    assert cv_readiness({"a": n, "b": n}) is None and cv_readiness({"a": n, "b": n - 1}) is not None
    assert cv_readiness({"a": n}) is not None


def test_readme_gives_the_apps_defaults():
    from tessera_explore import cli

    text = " ".join(_section("Command line").split())
    assert f"`{cli.APP_LABELS}` in the current folder" in text
    assert "tessera-explore lab workshop/exercises.ipynb" in README
    for sub in ("lab", "app", "fetch", "info"):
        assert f"tessera-explore {sub}" in text
    assert f"without `labels=` the app keeps its labels in `{cli.APP_LABELS}`" in " ".join(README.split()).lower()


def _written_names() -> list[str]:
    """What the quickstart, the workshop and the explorer write beside a notebook or in the
    current folder (names from the code where it holds them)."""
    import os

    from tessera_explore import cli
    from tessera_explore.widgets.app import DEFAULT_LABELS

    stem = os.path.splitext(DEFAULT_LABELS)[0]
    names = [DEFAULT_LABELS, cli.APP_LABELS,
             DEFAULT_LABELS + ".lock",                                  # LabelStore's lock
             DEFAULT_LABELS + ".lock.3fa9c2.tmp",                       # the lock being written
             DEFAULT_LABELS + ".lock.1234.5678.stale",                  # a stale lock set aside
             f".{DEFAULT_LABELS}.k2j3h4.tmp",                           # an atomic write in flight
             f"{stem}.previous.geojson", f"{stem}.unreadable-2.geojson",  # files kept aside
             f"{stem}_reference.geojson",                               # the guided panel's answers
             f"{stem}_reference.previous.geojson", f"{stem}_reference.unreadable-3.geojson",
             f"{stem}_export/class.tif",                                # the explorer's exports
             "tessera_export/class.tif",
             ".ipynb_checkpoints/01_quickstart-checkpoint.ipynb",
             ".virtual_documents/01_quickstart.ipynb"]
    return [f"{folder}{n}" for folder in ("notebooks/", "workshop/", "") for n in names]


def test_gitignore_covers_what_the_quickstart_and_the_app_write():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    names = _written_names()
    out = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], input="\n".join(names), text=True,
                         capture_output=True, cwd=ROOT)
    ignored = set(out.stdout.split())
    assert [n for n in names if n not in ignored] == []
    # and the notebooks, the workshop and the label files the project ships are not
    kept = ["notebooks/01_quickstart.ipynb", "notebooks/01_quickstart.py", "workshop/exercises.ipynb",
            "tessera_explore/testing/__init__.py", "tests/data/labels.geojson"]
    out = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], input="\n".join(kept), text=True,
                         capture_output=True, cwd=ROOT)
    assert out.stdout.split() == []


@pytest.mark.parametrize("folder", ["notebooks", "workshop"])
def test_saving_under_another_kernel_name_leaves_the_py_pair_unchanged(folder):
    """JupyterLab (with jupytext) writes the .py of a pair on every save, with the kernel it
    runs: `make lab`'s is displayed as "Python 3 (tessera_explore)".  The pairs' config
    keeps notebook metadata out of the .py, so the file does not change."""
    jupytext = pytest.importorskip("jupytext")
    from jupytext.config import load_jupytext_configuration_file

    config = load_jupytext_configuration_file(str(ROOT / folder / "jupytext.toml"))
    for py in sorted((ROOT / folder).glob("*.py")):
        text = py.read_text(encoding="utf-8")
        assert "kernelspec" not in text.split("# %%")[0], f"{py.name} carries notebook metadata"
        nb = jupytext.read(ROOT / folder / (py.stem + ".ipynb"))
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (tessera_explore)",
                                     "language": "python"}
        nb.metadata["language_info"] = {"name": "python", "version": "3.12.1"}
        saved = jupytext.writes(nb, "py:percent", config=config)
        assert "tessera_explore)" not in saved and "kernelspec" not in saved
        assert saved == text, f"saving {py.stem}.ipynb would rewrite {py.name}"
