"""The package layout of docs/design/layout.md: imports run one way.

_schema/_grid/exceptions/config/_atomic -> io -> project | classify | encoder -> region -> widgets;
project, classify and encoder never import one another; testing imports anything but
widgets.  The contract (``_schema`` and the ``Grid`` it builds on, ``_grid``) imports no
layer at all.  Imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tessera_explore

ROOT = Path(tessera_explore.__file__).parent
RANK = {"io": 1, "project": 2, "classify": 2, "encoder": 2, "region": 3, "widgets": 4}


def _part(module: str) -> str:
    """The layer of a dotted module name inside the package ("" = the top level)."""
    first = module.split(".", 1)[0]
    return first if first in RANK or first in ("testing", "tutorial") else ""


def _imports(path: Path) -> list[tuple[int, str]]:
    rel = path.relative_to(ROOT).with_suffix("")
    here = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
                if not node.module:  # from . import x / from .. import x
                    found += [(node.lineno, ".".join([*base, a.name])) for a in node.names]
                    continue
            elif node.module and node.module.startswith("tessera_explore."):
                target = node.module.removeprefix("tessera_explore.")
            else:
                continue
            found.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name.removeprefix("tessera_explore."))
                      for a in node.names if a.name.startswith("tessera_explore.")]
    return found


def test_imports_run_one_way():
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts in (("__init__.py",), ("cli.py",)):
            continue  # the lazy re-exports and the command line sit above every layer
        src = _part(".".join(rel.with_suffix("").parts))
        for line, target in _imports(path):
            dst = _part(target)
            if dst == src or dst == "":
                continue
            if src == "testing":
                ok = dst != "widgets"
            elif src == "tutorial":
                ok = dst in ("io", "testing")
            elif src == "":
                ok = False
            else:
                ok = dst != "testing" and RANK[dst] < RANK[src]
            if not ok:
                bad.append(f"{rel}:{line} ({src or 'top level'}) imports {target} ({dst})")
    assert not bad, "\n".join(bad)


def test_the_grid_sits_beside_the_schema():
    """_grid imports nothing of the package but exceptions; io.grid.Grid is the same class."""
    from tessera_explore import _grid, _schema
    from tessera_explore.io import grid

    targets = {t for _, t in _imports(ROOT / "_grid.py")}
    assert targets <= {"exceptions"}, targets
    assert grid.Grid is _grid.Grid and _schema.Grid is _grid.Grid


def test_encoder_stac_keeps_every_public_name():
    from tessera_explore.encoder import stac

    assert all(hasattr(stac, name) for name in stac.__all__)
    assert stac.Grid is tessera_explore.io.grid.Grid
