"""The package's import graph (read with ast): no cycle, no upward import by layer, and no
function-level import of the package's own modules outside the allowed deferrals."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

PACKAGE = "hfcompress"
ROOT = Path(importlib.util.find_spec(PACKAGE).origin).parent

#: Layers, top first. A module may import its own layer and the layers below, never above.
#: A module's layer is the first entry that is a prefix of its dotted name (after "hfcompress.").
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("entry", ("__main__", "cli", "assets", "testing", "hub.server", "hub.seed")),
    ("pipeline", ("pipeline", "search")),
    ("families", ("prune", "quantize", "distill", "evaluate", "cards", "hub", "recipes")),
    ("foundation", ("calibration", "stage", "sizes", "reports", "data", "metrics", "loading", "io", "registry",
                    "config", "integrations", "_verbs", "secrets", "errors", "")),
]
#: Family packages may not import one another, except these edges (a stage that reuses another's method).
FAMILY_EDGES = {
    ("distill", "quantize"),  # QLoRA re-quantizes with the quantize family's NF4 method
    ("hub", "cards"),  # a push renders the card for the repo it goes to
    ("recipes", "prune"), ("recipes", "quantize"), ("recipes", "distill"), ("recipes", "evaluate"),
}
#: Cycles owned by other work in progress (issue 17): expected to disappear; the test says which remain.
KNOWN_CYCLES: set[frozenset[str]] = set()


def _modules() -> dict[str, Path]:
    mods = {}
    for f in ROOT.rglob("*.py"):
        parts = f.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = f
    return mods


#: A function-level import of the package marked with this comment defers a heavy third-party
#: import (the module it names imports e.g. transformers.Trainer at its top): allowed.
DEFERRED_MARK = "# deferred:"


def _imports(name: str, path: Path, mods: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported module of the package, whether the import is inside a function and not marked)."""
    is_pkg = path.name == "__init__.py"
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    out: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_func: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                targets = [mod] + [f"{mod}.{a.name}" for a in child.names]
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != name and t.startswith(PACKAGE) and not name.startswith(t + "."):
                    marked = DEFERRED_MARK in lines[child.lineno - 1]
                    out.append((t, in_func and not marked))
            visit(child, nested)

    visit(tree, False)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: {t for t, _ in _imports(m, p, mods)} for m, p in mods.items()}


def _layer(module: str) -> int:
    rel = module.removeprefix(PACKAGE).lstrip(".")
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if prefix == "" or rel == prefix or rel.startswith(prefix + "."):
                return i
    raise AssertionError(module)


def _family(module: str) -> str:
    return module.removeprefix(PACKAGE + ".").split(".")[0]


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[frozenset[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in graph:
        if v not in index:
            strong(v)
    return out


def test_no_import_cycles():
    cycles = _cycles(_graph())
    unexpected = [sorted(c) for c in cycles if c not in KNOWN_CYCLES]
    assert not unexpected, f"import cycles: {unexpected}"


def test_known_cycles_are_gone():
    cycles = set(_cycles(_graph()))
    assert not (cycles & KNOWN_CYCLES), sorted(sorted(c) for c in cycles & KNOWN_CYCLES)


def test_no_upward_import_by_layer():
    upward = []
    for module, targets in _graph().items():
        for target in targets:
            if _layer(target) < _layer(module):
                upward.append(f"{module} -> {target}")
            elif _layer(module) == _layer(target) == 2 and _family(module) != _family(target) \
                    and (_family(module), _family(target)) not in FAMILY_EDGES:
                upward.append(f"{module} -> {target} (family to family)")
    assert not upward, "imports against the layer order:\n" + "\n".join(sorted(upward))


def test_calibration_imports_no_family():
    graph = _graph()
    bad = [f"{m} -> {t}" for m, ts in graph.items() if m.startswith(f"{PACKAGE}.calibration")
           for t in ts if _layer(t) < len(LAYERS) - 1]
    assert not bad, bad


#: Modules outside this change's reach that still defer imports of the package inside functions.
DEFERRED_ELSEWHERE = ("hfcompress.prune.engine", "hfcompress.prune.owl", "hfcompress.prune.structured",
                      "hfcompress.prune.taylor", "hfcompress.prune.wanda", "hfcompress.prune.sparsegpt",
                      "hfcompress.quantize.calibrated", "hfcompress.quantize.gptq", "hfcompress.distill.recovery",
                      "hfcompress.distill.student",
                      "hfcompress.hub", "hfcompress.recipes", "hfcompress.loading", "hfcompress.io",
                      "hfcompress.data", "hfcompress.testing", "hfcompress.assets", "hfcompress.cli.hub",
                      "hfcompress.calibration", "hfcompress.prune.sparse_format", "hfcompress.quantize.quanto_format")


#: Single modules (not packages) in the same situation: the CLI's error handling is being reworked.
DEFERRED_MODULES = ("hfcompress.cli",)


def test_no_function_level_imports_of_the_package():
    mods = _modules()
    found = [f"{m} -> {t}" for m, p in mods.items() if not m.startswith(DEFERRED_ELSEWHERE)
             and m not in DEFERRED_MODULES
             for t, in_func in _imports(m, p, mods) if in_func]
    assert not found, "function-level imports of hfcompress modules:\n" + "\n".join(sorted(found))
