"""The explorer's structure: small modules, and objects that talk through public names.

``tessera_explore/widgets/`` is split by collaborator (a :class:`Session` every part
receives, the classifying, maps, false colour, guided, quality, live, projection and depth
objects, one module per view).  These checks keep it that way: no module grows past
:data:`MAX_LINES`, and no module reaches into another object's ``_private`` members
(only ``self._x`` and ``cls._x``; dunder names and IPython's display protocol
``_repr_*_`` / ``_ipython_*_`` are public), nor imports another module's private names.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import tessera_explore.widgets as widgets

WIDGETS = Path(widgets.__file__).parent
MAX_LINES = 500
#: attribute names that start with an underscore but are public protocols
PUBLIC_PROTOCOL = re.compile(r"^(__\w+__|_repr_\w+_|_ipython_\w+_)$")
MODULES = sorted(WIDGETS.glob("*.py"))


def private_uses(source: str, filename: str = "<source>") -> list[str]:
    """``line: expr`` for every ``obj._name`` in ``source`` whose ``obj`` is not ``self``
    or ``cls`` (dunder and display-protocol names allowed)."""
    out = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
            continue
        if PUBLIC_PROTOCOL.match(node.attr):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        out.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
    return out


def private_imports(source: str, filename: str = "<source>", package: Path = WIDGETS) -> list[str]:
    """``line: from X import _name`` for every private name imported from another module
    (a private *module*, such as ``from .. import _schema``, is a module and allowed; a
    module's private function or class is that module's own)."""
    out = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = package
        for _ in range(max(node.level - 1, 0)):
            base = base.parent
        if node.level == 0:
            base = Path("/nonexistent")
        for part in (node.module or "").split(".") if node.module else ():
            base = base / part
        for alias in node.names:
            name = alias.name
            if not name.startswith("_") or PUBLIC_PROTOCOL.match(name):
                continue
            if (base / f"{name}.py").exists() or (base / name / "__init__.py").exists():
                continue  # a module
            out.append(f"{filename}:{node.lineno}: from {'.' * node.level}{node.module or ''} import {name}")
    return out


def test_the_package_has_modules_to_check():
    names = {p.name for p in MODULES}
    assert {"session.py", "controller.py", "views.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_widgets_module_over_500_lines(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.name} has {n} lines (at most {MAX_LINES}): split it by object"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_private_member_of_another_object(path):
    found = private_uses(path.read_text(), path.name)
    assert not found, "private members used from outside their object:\n" + "\n".join(found)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_private_name_imported_from_another_module(path):
    found = private_imports(path.read_text(), path.name)
    assert not found, "private names imported from another module:\n" + "\n".join(found)


@pytest.mark.parametrize("code, bad", [
    ("from .app import _build", True),
    ("from ..classify.samples import _read", True),
    ("from .colours import class_colour, _lut", True),
    ("from .. import _schema", False),  # a module
    ("from ..classify import _kernels", False),
    ("from .colours import class_colour", False),
])
def test_private_import_check_catches_what_it_should(code, bad):
    assert bool(private_imports(code)) is bad


@pytest.mark.parametrize("code, bad", [
    ("self.ctl._emit('layer')", True),  # a collaborator's private method
    ("controller._say('x')", True),
    ("self.widget._dom_classes = ()", True),
    ("mod._LOCK", True),
    ("super()._x()", True),
    ("self._emit('layer')", False),
    ("cls._registry", False),
    ("obj.__class__", False),
    ("self.widget._repr_mimebundle_()", False),
    ("clf.samples_", False),
])
def test_private_use_check_catches_what_it_should(code, bad):
    assert bool(private_uses(code)) is bad
