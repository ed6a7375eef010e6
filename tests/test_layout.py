"""The package's architecture, checked from its source (docs/extending.md, "Layout" draws it):
each folder imports only the folders below it, no module takes part in an import cycle
(function-local imports included), and no library file grows past ~400 lines without a reason."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sslkit"

# package -> the packages it may import (besides itself). Read bottom-up: errors and stats import
# nothing of sslkit; the building blocks import the runtime; `training` builds and loads a run
# from them; evaluation and priors use training's services; `launch` orchestrates everything and
# nothing imports it but the package's lazy `sslkit.train / compose / evaluate`.
BLOCKS = {"errors", "runtime"}
ALLOWED = {
    "errors": set(),
    "stats": {"errors"},
    "runtime": {"errors"},
    "data": BLOCKS,
    "augment": BLOCKS,
    "encoders": BLOCKS,
    "losses": BLOCKS,
    "optim": BLOCKS,
    "parts": BLOCKS,
    "robust": BLOCKS | {"losses"},
}
_BELOW_TRAINING = set(ALLOWED)
ALLOWED["training"] = _BELOW_TRAINING
ALLOWED["eval"] = _BELOW_TRAINING | {"training"}
ALLOWED["prior"] = ALLOWED["eval"] | {"eval"}
ALLOWED["launch"] = ALLOWED["prior"] | {"prior"}
ALLOWED["__init__"] = {"launch"}

# library files allowed past MAX_LINES, with the reason
MAX_LINES = 400
LONG_FILES: dict[str, str] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def imports(path: Path) -> set[str]:
    """Every sslkit module ``path`` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                node.module.split(".")[0] == "sslkit":
            if node.module == "sslkit":
                found |= {f"sslkit.{a.name}" for a in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "sslkit"}
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = {}
    for name, path in files.items():
        # `from sslkit.eval import knn` names the module sslkit.eval.knn when that file exists
        edges[name] = {t for t in imports(path)} & set(files) | {
            t.rsplit(".", 1)[0] for t in imports(path) if t not in files and t.rsplit(".", 1)[0] in files}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), or a self-import."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_every_package_has_a_place_in_the_layers():
    packages = {package_of(m) for m in graph()}
    assert packages <= set(ALLOWED), f"add {sorted(packages - set(ALLOWED))} to ALLOWED and docs/extending.md"


def test_only_errors_and_init_are_flat_modules():
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert flat == ["__init__.py", "errors.py"], f"put {flat} into the folder of their job"


def test_imports_point_down_the_layers():
    wrong = defaultdict(set)
    for source, targets in graph().items():
        a = package_of(source)
        for target in targets:
            b = package_of(target)
            if b != a and b not in ALLOWED[a]:
                wrong[f"{a} -> {b}"].add(f"{source} imports {target}")
    assert not wrong, dict(wrong)


def test_no_import_cycle():
    found = cycles(graph())
    assert not found, f"import cycles (function-local imports included): {found}"


def test_the_checker_sees_cycles_and_local_imports(tmp_path):
    # the checks above must be able to fail: a function-local import is an edge, and a cycle
    # through one is found
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from sslkit.launch import run\n    import sslkit.runtime.threads\n")
    assert imports(source) == {"sslkit.launch", "sslkit.runtime.threads"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_library_files_stay_small():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    unexplained = {path: n for path, n in long.items() if path not in LONG_FILES}
    assert not unexplained, f"split these by job, or add them to LONG_FILES with the reason: {unexplained}"
