"""The package's layers run one way: cli -> sub-systems -> explainer / methods / targets / result
-> adapters / ops. Every import of every module of daam_fast is read with ast (imports inside
functions included, as they run too), and the module graph is checked: no cycle, nothing
outside daam_fast.cli imports it, no import runs up a layer, no module over 450 lines."""
import ast
import os
import pkgutil
from typing import Dict, List, Optional, Set, Tuple

import daam_fast

ROOT = os.path.dirname(daam_fast.__file__)
MAX_LINES = 450

# The layers, top first: the first prefix a module's name starts with gives its layer. A module
# may import its own layer and those below it, never one above.
LAYERS: Tuple[Tuple[str, ...], ...] = (
    ("daam_fast.cli", "daam_fast.__main__"),
    ("daam_fast.video", "daam_fast.evaluate", "daam_fast.distributed", "daam_fast.outputs", "daam_fast.explorer",
     "daam_fast.monitor", "daam_fast.export", "daam_fast.bench", "daam_fast.viz",
     "daam_fast.zoo.train_shapes",    # the script that trains the shipped model (it may log through monitor)
     "daam_fast"),                    # the top-level package: the public names, gathered from every layer below
    ("daam_fast.explainer", "daam_fast.methods", "daam_fast.targets", "daam_fast.result", "daam_fast.baselines",
     "daam_fast.reference", "daam_fast.render", "daam_fast.preprocess", "daam_fast.bank",
     "daam_fast.boxes", "daam_fast.metrics", "daam_fast.io", "daam_fast.models", "daam_fast.zoo",
     "daam_fast._"),                  # private modules of the core (_session, _capture, _rows, ...)
    ("daam_fast.adapters", "daam_fast.ops", "daam_fast._config", "daam_fast._ext", "daam_fast._threads"),
)

# Imports allowed to run against the rules, each with its reason: a display hook that runs only
# when a notebook shows a result (the result cannot depend on the explorer otherwise).
EXCEPTIONS = {
    ("daam_fast.result", "daam_fast.explorer"): "DAAMResult._repr_html_, Jupyter's display hook, shows the explorer",
}


def _modules() -> Tuple[Dict[str, str], Set[str]]:
    """(name -> path of every Python module of daam_fast, names of its compiled modules)."""
    out = {"daam_fast": os.path.join(ROOT, "__init__.py")}
    compiled = set()
    for info in pkgutil.walk_packages([ROOT], prefix="daam_fast."):
        base = os.path.join(ROOT, *info.name.split(".")[1:])
        path = os.path.join(base, "__init__.py") if info.ispkg else base + ".py"
        if os.path.exists(path):
            out[info.name] = path
        else:
            compiled.add(info.name)                  # the extension (_C): it imports nothing of ours
    return out, compiled


MODULES, COMPILED = _modules()


def _resolve(module: str, is_pkg: bool, node: ast.AST) -> List[str]:
    """The modules of daam_fast that an import statement names (a name imported from a package
    that is one of its sub-modules counts as that sub-module)."""
    targets: List[str] = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name == "daam_fast" or alias.name.startswith("daam_fast."):
                targets.append(alias.name)
        return [t for t in targets if t in MODULES]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        parts = module.split(".") if is_pkg else module.split(".")[:-1]
        parts = parts[:len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if not (base == "daam_fast" or base.startswith("daam_fast.")):
        return []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub not in COMPILED:
            targets.append(sub if sub in MODULES else base)
    return [t for t in targets if t in MODULES]


def _graph() -> Dict[str, Dict[str, int]]:
    """module -> {imported module: line of the first such import}, imports at any depth."""
    graph: Dict[str, Dict[str, int]] = {}
    for name, path in MODULES.items():
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        edges: Dict[str, int] = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for t in _resolve(name, path.endswith("__init__.py"), node):
                    if t != name:
                        edges.setdefault(t, node.lineno)
        graph[name] = edges
    return graph


GRAPH = _graph()


def _layer(module: str) -> Optional[int]:
    best = None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if module == p or module.startswith(p if p.endswith("_") else p + "."):
                if best is None or len(p) > best[1]:
                    best = (i, len(p))
    return None if best is None else best[0]


def _where(a: str, b: str) -> str:
    return f"{os.path.relpath(MODULES[a], os.path.dirname(ROOT))}:{GRAPH[a][b]} imports {b}"


def test_the_walk_sees_lazy_imports():
    assert len(MODULES) > 50 and "daam_fast.cli.options" in MODULES
    # cli.options imports daam_fast.methods inside a function only
    assert "daam_fast.methods" in GRAPH["daam_fast.cli.options"]


def test_every_module_has_a_layer():
    assert [m for m in MODULES if _layer(m) is None] == []


def test_only_the_cli_imports_the_cli():
    bad = [_where(a, b) for a, edges in GRAPH.items() for b in edges
           if _layer(b) == 0 and _layer(a) != 0]
    assert not bad, "\n".join(bad)


def test_no_import_runs_up_a_layer():
    bad = [_where(a, b) for a, edges in GRAPH.items() for b in edges
           if _layer(b) < _layer(a) and (a, b) not in EXCEPTIONS]
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    """Tarjan's strongly connected components over the module graph (the exceptions left out)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    cycles: List[List[str]] = []

    def visit(v: str) -> None:                     # iterative enough for ~150 modules
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if (v, w) in EXCEPTIONS:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    described = []
    for comp in cycles:
        members = set(comp)
        described.append("; ".join(_where(a, b) for a in comp for b in GRAPH[a]
                                   if b in members and (a, b) not in EXCEPTIONS))
    assert not described, "\n".join(described)


def test_exceptions_are_still_needed():
    for a, b in EXCEPTIONS:
        if a in MODULES:
            assert b in GRAPH[a], f"{a} no longer imports {b}: remove the exception"


def test_no_module_over_450_lines():
    long = {}
    for name, path in MODULES.items():
        with open(path) as f:
            n = sum(1 for _ in f)
        if n > MAX_LINES:
            long[os.path.relpath(path, os.path.dirname(ROOT))] = n
    assert long == {}
