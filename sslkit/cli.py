"""Command-line helpers: refuse unknown config choices in one line, print the run summary."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def choices(group: str) -> list[str]:
    folder = CONFIG_DIR / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def evaluators() -> list[str]:
    """Every offline evaluator config: ``configs/eval/NAME.yaml`` with a ``_target_``."""
    return [name for name in choices("eval")
            if any(line.startswith("_target_:") for line in
                   (CONFIG_DIR / "eval" / f"{name}.yaml").read_text().splitlines())]


def expand_eval_all(argv: list[str]) -> list[str]:
    """``eval=all`` -> ``eval=[every evaluator in configs/eval/]``, so a new evaluator config
    joins ``all`` without an edit."""
    return [f"eval=[{','.join(evaluators())}]" if a in ("eval=all", "eval=[all]") else a for a in argv]


def check_choices(argv: list[str]) -> None:
    """``group=value`` for a config group whose folder has no ``value.yaml`` -> one-line error
    listing the valid choices (Hydra's own message spans a screen). A multirun list
    (``loss=infonce,dcl``) is checked value by value, and so is a list-selected group
    (``eval=[linear,knn]``); sweep functions (``choice(...)``, ``glob(...)``) are left to Hydra."""
    for arg in argv:
        if "=" not in arg or arg.startswith(("hydra", "-")):
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if "." in key or "/" in key or "@" in key or not (CONFIG_DIR / key).is_dir():
            continue
        if "(" in value:
            continue
        valid = choices(key)
        for item in value.replace("[", ",").replace("]", ",").split(","):
            item = item.strip()
            if not item:
                continue
            if item not in valid and item != "null":
                fail(f"unknown {key} '{item}'; choose one of: {', '.join(valid)}")


def check_composes(argv: list[str], config_name: str = "train") -> None:
    """Compose the config with the command-line overrides before Hydra runs, so an unknown key
    or a malformed override is one line instead of Hydra's screen (single runs only: multirun
    sweeps and flags are left to Hydra)."""
    if any(a.startswith("-") for a in argv):
        return
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = [a for a in argv if not a.startswith("hydra.")]
    try:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            compose(config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        text = str(err)
        if text.startswith("Could not override '"):
            key = text.split("'")[1]
            fail(f"unknown config key '{key}'; check the spelling (`--cfg job` "
                 f"prints every key) or write +{key}=... to add a new one")
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        fail("; ".join(lines[:3]) or type(err).__name__)


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="sslkit run summary", show_header=False)
    rows = [
        ("linear probe top-1", summary.get("linear_probe_top1"), "{:.4f}"),
        ("kNN top-1", summary.get("knn_top1"), "{:.4f}"),
        ("online probe top-1", summary.get("online_probe_top1"), "{:.4f}"),
        ("wall time", summary.get("wall_seconds"), "{:.0f} s"),
        ("epochs", summary.get("epochs"), "{}"),
        ("run dir", summary.get("run_dir"), "{}"),
        ("checkpoint", summary.get("checkpoint"), "{}"),
        *([("collapse warning", summary["collapse_warning"], "{}")] if summary.get("collapse_warning") else []),
    ]
    for name, value, fmt in rows:
        table.add_row(name, fmt.format(value) if value is not None else "-")
    Console(width=max(100, len(str(summary.get("checkpoint", ""))) + 30)).print(table)
