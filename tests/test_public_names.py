"""Every package of daam_fast shows public names only: each name of its ``__all__`` exists and
none starts with "_", and its ``__init__`` brings in no private name it does not use itself
(a private name re-exported for the tests: they import it from the module where it lives)."""
import ast
import importlib
import os
import pkgutil

import pytest

import daam_fast

ROOT = os.path.dirname(daam_fast.__file__)
PACKAGES = ["daam_fast"] + sorted(i.name for i in pkgutil.walk_packages([ROOT], prefix="daam_fast.") if i.ispkg)

def _path(package: str) -> str:
    return os.path.join(ROOT, *package.split(".")[1:], "__init__.py")


def _tree(package: str) -> ast.Module:
    with open(_path(package)) as f:
        return ast.parse(f.read())


def _is_module(name: str) -> bool:
    if not name.startswith("daam_fast."):
        return False
    base = os.path.join(ROOT, *name.split(".")[1:])
    return os.path.isdir(base) or os.path.exists(base + ".py")


def _private_imports(package: str) -> list:
    """Private names the package's __init__ imports (not modules) and never uses itself."""
    tree = _tree(package)
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    out = []
    for node in tree.body:
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
            base = ".".join(base + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        for alias in node.names:
            bound = alias.asname or alias.name
            if not alias.name.startswith("_") or bound in used:
                continue
            if _is_module(f"{base}.{alias.name}"):
                continue                                # a private module (e.g. _dispatch), not a name
            out.append(f"{package}: from {'.' * node.level}{node.module or ''} import {alias.name} (line {node.lineno})")
    return out


def _defines_public_names(package: str) -> bool:
    for node in _tree(package).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            return True
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if any(not (a.asname or a.name).startswith("_") for a in node.names if a.name != "annotations"):
                return True
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and not t.id.startswith("_") for t in targets):
                return True
    return False


@pytest.mark.parametrize("package", PACKAGES)
def test_all_holds_public_names_that_exist(package):
    try:
        mod = importlib.import_module(package)
    except ImportError as e:                            # an optional dependency missing here
        pytest.skip(f"{package} cannot be imported here: {e}")
    names = getattr(mod, "__all__", None)
    if names is None:
        assert not _defines_public_names(package), f"{package} has public names but no __all__"
        return
    assert len(set(names)) == len(names), f"{package}.__all__ repeats a name"
    missing = [n for n in names if not hasattr(mod, n)]
    assert missing == [], f"{package}.__all__ names what it does not hold"
    assert [n for n in names if n.startswith("_") and not n.endswith("__")] == []      # __version__ is public


@pytest.mark.parametrize("package", PACKAGES)
def test_init_reexports_no_private_name(package):
    bad = _private_imports(package)
    assert not bad, "\n".join(bad)

