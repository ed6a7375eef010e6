"""The ``train.py`` / ``sslkit-train`` command: refuse unknown config choices in one line, run,
print the run summary."""

from __future__ import annotations

import sys
from typing import NoReturn

import hydra
from omegaconf import DictConfig

from sslkit.errors import ConfigError, UserError
from sslkit.training.config import CONFIG_DIR, choice_errors, compose_config, expand_eval_all, null_groups


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def check_choices(argv: list[str]) -> None:
    try:
        choice_errors(argv)
    except ConfigError as err:
        fail(str(err))


def check_composes(argv: list[str], config_name: str = "train") -> None:
    """Compose the config with the command-line overrides before Hydra runs, so an unknown key
    or a malformed override is one line instead of Hydra's screen (single runs only: multirun
    sweeps and flags are left to Hydra)."""
    if any(a.startswith("-") for a in argv):
        return
    try:
        compose_config(config_name, [a for a in argv if not a.startswith("hydra.")])
    except ConfigError as err:
        fail(str(err))


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    from sslkit.launch.run import train  # heavy imports after Hydra has parsed the command line

    try:
        summary = train(cfg)
    except UserError as err:
        fail(str(err))
    if summary:
        print_summary(summary)
        # what a sweeper optimises (hydra-optuna-sweeper): the summary key named by `objective`
        return summary.get(cfg.get("objective") or "linear_probe_top1")
    return None


def main() -> None:
    """``python train.py ARGS`` and the ``sslkit-train`` console script."""
    sys.argv[1:] = null_groups(expand_eval_all(sys.argv[1:]))
    check_choices(sys.argv[1:])
    check_composes(sys.argv[1:])
    hydra_main()


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
