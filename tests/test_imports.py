"""What the command lines import before their first real work (docs/testing.md, "Where the time
goes"): behaviours, not timings. A fresh ``python train.py`` pays torch, torchvision, torchmetrics
and Lightning (about 11 s of CPU on a slow 2-core machine); sslkit itself adds about 0.3 s. Two
things keep it there:

* the command lines parse and refuse their arguments before torch loads, so a misspelt choice
  is a one-line error in under a second;
* the packages one path needs (timm for ``encoder=timm``, umap-learn and openTSNE for the
  pictures, torchattacks for ``eval=robust``, safetensors and huggingface_hub for the export,
  the wandb / TensorBoard loggers, optuna's sweeper) are imported where that path runs, never
  at module level of what ``sslkit.launch.run`` imports: together they would add about 10 s
  of CPU to every launch (timm 2.5 s, umap 3.9 s, optuna 1.5 s, wandb 0.7 s, openTSNE 0.6 s).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sslkit"

HEAVY = ("torch", "torchvision", "torchmetrics", "lightning")
ON_THEIR_PATH = ("timm", "umap", "openTSNE", "torchattacks", "safetensors", "huggingface_hub",
                 "wandb", "tensorboard", "optuna")

# in a fresh interpreter: import the three entry scripts as modules, then run each command line
# with an argument it refuses; report the exit codes and which heavy packages got loaded
_PROBE = """
import json, runpy, sys
sys.path.insert(0, {root!r})
for script in ("train.py", "scripts/evaluate.py", "scripts/export.py"):
    runpy.run_path(script, run_name="imported")
codes = []
for argv in (["train.py", "loss=nope"], ["scripts/evaluate.py", "checkpoint=x.ckpt", "eval=[nope]"],
             ["scripts/export.py", "checkpoint=x.ckpt", "format=nope"],
             ["train.py", "resume=nope.ckpt", "hydra.run.dir={run_dir}"],
             ["scripts/evaluate.py", "checkpoint=nope.ckpt", "hydra.run.dir={run_dir}"],
             ["scripts/evaluate.py", "hydra.run.dir={run_dir}"],
             ["scripts/export.py", "checkpoint=nope.ckpt"],
             ["scripts/export.py", "--help"],
             ["scripts/bench.py", "--only", "nope"],
             ["scripts/bench.py", "--help"]):
    sys.argv = argv
    try:
        runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as stop:
        codes.append(stop.code)
print(json.dumps({{"codes": codes, "loaded": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def test_command_lines_refuse_bad_arguments_before_torch_loads(tmp_path):
    """A misspelt choice, a checkpoint path that is no file (``resume=``, ``checkpoint=``) and a
    missing ``checkpoint=`` are one line each, before torch loads and before Hydra makes a run
    dir; ``export.py --help`` prints its usage; ``bench.py`` checks its sections first too."""
    run_dir = tmp_path / "run"
    probe = _PROBE.format(root=str(ROOT), heavy=HEAVY + ON_THEIR_PATH, run_dir=str(run_dir))
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["codes"] == [2] * 7 + [0, 2, 0], proc.stderr
    assert "bench.py: error: unknown section(s) nope" in proc.stderr
    refusals = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(refusals) == 7, proc.stderr
    assert all("nope" in line for line in refusals[:3]), refusals
    assert all("nope.ckpt refused: no such file" in line for line in refusals[3:5] + refusals[6:]), refusals
    assert "checkpoint=PATH is required" in refusals[5], refusals
    assert "usage: python scripts/export.py checkpoint=PATH" in proc.stdout
    assert not run_dir.exists(), "a refused command made a run dir"
    assert report["loaded"] == [], f"imported before the arguments were checked: {report['loaded']}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


FILES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def import_time_imports(source: str) -> set[str]:
    """The modules a file imports when it is itself imported: module and class level statements,
    inside ``if``/``try``/``with`` too, but not function bodies nor ``if TYPE_CHECKING:``."""
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
                # `from sslkit.eval import knn` imports the module sslkit.eval.knn
                found.update(f"{node.module}.{a.name}" for a in node.names
                             if f"{node.module}.{a.name}" in FILES)
            for field in ("body", "orelse", "finalbody"):
                visit(getattr(node, field, []))
            for handler in getattr(node, "handlers", []):
                visit(handler.body)

    visit(ast.parse(source).body)
    return found


def imported_with(module: str) -> tuple[set[str], set[str]]:
    """The sslkit modules and the other top-level packages that importing ``module`` imports,
    following sslkit's import-time imports (and the packages above each module, which run
    first)."""
    ours, theirs, todo = set(), set(), [module]
    while todo:
        parts = todo.pop().split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in FILES or name in ours:
                continue
            ours.add(name)
            for target in import_time_imports(FILES[name].read_text()):
                (todo.append(target) if target.split(".")[0] == "sslkit"
                 else theirs.add(target.split(".")[0]))
    return ours, theirs


def test_the_run_imports_the_optional_packages_only_on_their_path():
    ours, theirs = imported_with("sslkit.launch.run")
    assert {"sslkit.training.build", "sslkit.eval.runner"} <= ours  # the walk follows the run
    assert {"torch", "lightning"} <= theirs
    eager = sorted(set(ON_THEIR_PATH) & theirs)
    assert not eager, (f"importing sslkit.launch.run imports {eager}; import them inside the "
                       "function of the path that needs them")


def test_the_walk_sees_module_level_imports_only():
    source = ("import torch\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import timm\n"
              "try:\n    import umap\nexcept ImportError:\n    import openTSNE\n"
              "class A:\n    import wandb\n    def f(self):\n        import optuna\n"
              "def g():\n    import safetensors\n")
    assert import_time_imports(source) == {"torch", "typing", "umap", "openTSNE", "wandb"}
