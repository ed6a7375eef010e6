"""Compare runs side by side in one Markdown file.

    python scripts/report.py RUN_DIR [RUN_DIR ...] [--out report.md]

For each run dir (a folder written by train.py): the config keys whose values differ between
the runs (from ``.hydra/config.yaml``), ``summary.json`` and every ``eval/*.json`` as tables
with one column per run, and the pictures of ``plots/*.png`` (linked relative to the report).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import yaml

MISSING = "–"
_ABSENT = object()  # a key this run does not have (shown as MISSING; a null value shows "null")


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def flatten(value, prefix: str = "") -> dict[str, object]:
    """Nested dicts to dotted keys; lists stay values."""
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def cell(value) -> str:
    if value is _ABSENT:
        return MISSING
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    if isinstance(value, list):
        if len(value) > 8:
            return f"[{len(value)} values]"
        return "[" + ", ".join(cell(v) for v in value) + "]"
    return str(value).replace("|", "\\|").replace("\n", " ")


class Run:
    def __init__(self, path: Path) -> None:
        self.path = path
        config = path / ".hydra" / "config.yaml"
        summary = path / "summary.json"
        if not path.is_dir():
            fail(f"run dir {path} does not exist")
        if not config.exists() and not summary.exists():
            fail(f"{path} is not a run dir of train.py (no .hydra/config.yaml, no summary.json)")
        self.config = flatten(yaml.safe_load(config.read_text()) or {}) if config.exists() else {}
        self.summary = json.loads(summary.read_text()) if summary.exists() else None
        folder = path / "eval"
        self.evals = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} \
            if folder.is_dir() else {}
        plots = path / "plots"
        self.pictures = {p.stem: p for p in sorted(plots.glob("*.png"))} if plots.is_dir() else {}


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def side_by_side(dicts: list[dict | None], only_differing: bool = False) -> list[list[str]]:
    flat = [flatten(d) if d is not None else {} for d in dicts]
    keys: list[str] = []
    for f in flat:
        keys += [k for k in f if k not in keys]
    rows = []
    for key in keys:
        values = [f.get(key, _ABSENT) for f in flat]
        if only_differing and all(v == values[0] for v in values):
            continue
        rows.append([f"`{key}`"] + [cell(v) for v in values])
    return rows


def labels(runs: list[Run]) -> list[str]:
    names = [r.path.name for r in runs]
    return [f"run {i + 1}: `{n}`" if names.count(n) == 1 else f"run {i + 1}: `{r.path}`"
            for i, (n, r) in enumerate(zip(names, runs))]


def build(runs: list[Run], out: Path) -> str:
    head = labels(runs)
    lines = ["# sslkit run report", ""]
    lines += table(["run", "dir"], [[h, f"`{r.path}`"] for h, r in zip(head, runs)])

    lines += ["## Config differences", ""]
    rows = side_by_side([r.config for r in runs], only_differing=True)
    if len(runs) == 1:
        lines += ["One run: nothing to compare.", ""]
    elif rows:
        lines += table(["key"] + head, rows)
    else:
        lines += ["The configs are identical.", ""]

    lines += ["## Summary (`summary.json`)", ""]
    if any(r.summary for r in runs):
        lines += table(["key"] + head, side_by_side([r.summary for r in runs]))
    else:
        lines += ["No run has a summary.json (unfinished runs?).", ""]

    names: list[str] = []
    for r in runs:
        names += [n for n in r.evals if n not in names]
    for name in names:
        lines += [f"## Evaluation `{name}` (`eval/{name}.json`)", ""]
        lines += table(["key"] + head, side_by_side([r.evals.get(name) for r in runs]))

    pictures: list[str] = []
    for r in runs:
        pictures += [p for p in r.pictures if p not in pictures]
    if pictures:
        lines += ["## Pictures", ""]
        rows = []
        for name in pictures:
            row = [f"`{name}`"]
            for r in runs:
                path = r.pictures.get(name)
                rel = Path(os.path.relpath(path.resolve(), out.parent.resolve())).as_posix() \
                    if path else None
                row.append(f"![{name}]({rel})" if rel else MISSING)
            rows.append(row)
        lines += table(["picture"] + head, rows)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--out", type=Path, default=Path("report.md"),
                        help="Markdown file to write (default: report.md)")
    args = parser.parse_args(argv)
    runs = [Run(p) for p in args.runs]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(build(runs, args.out) + "\n")
    print(f"wrote {args.out} ({len(runs)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
