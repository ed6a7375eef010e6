"""The ``train.py`` / ``sslkit-train`` command: refuse unknown config choices and a sweep
objective on the test split in one line, run, print the run summary."""

from __future__ import annotations

import re
import sys
from typing import NoReturn

import hydra
from omegaconf import DictConfig

from sslkit.errors import ConfigError, UserError
from sslkit.training.checkpoint_file import checkpoint_file
from sslkit.training.config import CONFIG_DIR, choice_errors, compose_config, expand_eval_all, null_groups


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def check_choices(argv: list[str]) -> None:
    try:
        choice_errors(argv)
    except ConfigError as err:
        fail(str(err))


def check_composes(argv: list[str], config_name: str = "train") -> DictConfig | None:
    """Compose the config with the command-line overrides before Hydra runs, so an unknown key
    or a malformed override is one line instead of Hydra's screen (single runs only: multirun
    sweeps and flags are left to Hydra, and None is returned)."""
    if any(a.startswith("-") for a in argv):
        return None
    try:
        return compose_config(config_name, [a for a in argv if not a.startswith("hydra.")])
    except ConfigError as err:
        fail(str(err))


def check_resume_file(cfg: DictConfig | None) -> None:
    """A ``resume=PATH`` that is no file, refused before torch loads and before Hydra makes the
    run dir (the checkpoint's contents are vetted once the run starts)."""
    if cfg is None or not cfg.get("resume"):
        return
    try:
        checkpoint_file(cfg.resume)
    except UserError as err:
        fail(str(err))


# summary.json keys of the test split -> the validation key a sweep optimises instead
TEST_KEYS = {"linear_probe_top1": "val/linear_probe_top1", "linear_probe_top5": "val/linear_probe_top1",
             "knn_top1": "val/knn_top1"}
# words of the eval/NAME/... keys that are not scores on the test split (the linear probe's
# held-out part of the training split, its training accuracy, sizes, times, the chosen L2, and
# the validation-split scores of the evaluators that select on it: finetune's, semi's val_top1)
NOT_TEST = ("holdout", "train", "seconds", "/l2", "/n_", "/val_", "/val/")


def objective_error(objective) -> str | None:
    """Why a sweep may not optimise ``objective`` (None: it may). The test split is read once,
    at the end, and selects nothing: the headline accuracies (``linear_probe_top1``,
    ``knn_top1``), any ``test/...`` key and the final evaluators' ``eval/NAME/...`` scores are
    the test split's."""
    if objective is None:
        return None
    key = str(objective)
    if key in TEST_KEYS:
        use = TEST_KEYS[key]
    elif key.startswith("test/"):
        use = TEST_KEYS.get(key.removeprefix("test/"), "val/linear_probe_top1")
    elif key.startswith("eval/") and not any(word in key for word in NOT_TEST):
        use = "val/linear_probe_top1"
    else:
        return None
    return (f"objective={key} is a score on the test split, which is read once at the end and "
            f"selects nothing; optimise the validation split instead: objective={use}")


def check_objective(cfg: DictConfig) -> None:
    message = objective_error(cfg.get("objective"))
    if message:
        fail(message)


# a multirun override that sweeps (`a,b`, `range(...)`, `interval(...)`, ...): not composable
_SWEEP_VALUE = re.compile(r"^(range|choice|interval|tag|glob|shuffle|sort)\(|^[^\[\{]*,")


def check_sweep_objective(argv: list[str]) -> None:
    """Refuse a multirun whose ``objective`` is a test-split key before Hydra's sweeper starts
    any trial: compose the config without the swept values and read ``objective``."""
    if not any(a in ("-m", "--multirun") for a in argv):
        return
    fixed = [a for a in argv if not a.startswith("-") and not a.startswith("hydra.")
             and not _SWEEP_VALUE.search(a.split("=", 1)[-1] if "=" in a else "")]
    try:
        cfg = compose_config("train", fixed)
    except ConfigError:
        return  # Hydra says what is wrong with it
    check_objective(cfg)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    check_objective(cfg)  # each trial again, before any work (a sweep the command line hid)
    from sslkit.launch.run import train  # heavy imports after Hydra has parsed the command line

    try:
        summary = train(cfg)
    except UserError as err:
        fail(str(err))
    if summary:
        print_summary(summary)
        # what a sweeper optimises (hydra-optuna-sweeper): the summary key named by `objective`,
        # a validation key (configs/train.yaml)
        return summary.get(cfg.get("objective") or "val/linear_probe_top1")
    return None


def main() -> None:
    """``python train.py ARGS`` and the ``sslkit-train`` console script."""
    sys.argv[1:] = null_groups(expand_eval_all(sys.argv[1:]))
    check_choices(sys.argv[1:])
    check_resume_file(check_composes(sys.argv[1:]))
    check_sweep_objective(sys.argv[1:])
    hydra_main()


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="sslkit run summary", show_header=False)
    rows = [
        ("linear probe top-1 (test)", summary.get("linear_probe_top1"), "{:.4f}"),
        ("kNN top-1 (test)", summary.get("knn_top1"), "{:.4f}"),
        ("linear probe top-1 (val)", summary.get("val/linear_probe_top1"), "{:.4f}"),
        ("online probe top-1 (val)", summary.get("val/online_probe_top1"), "{:.4f}"),
        ("wall time", summary.get("wall_seconds"), "{:.0f} s"),
        ("epochs", summary.get("epochs"), "{}"),
        ("run dir", summary.get("run_dir"), "{}"),
        ("checkpoint", summary.get("checkpoint"), "{}"),
        *([("collapse warning", summary["collapse_warning"], "{}")] if summary.get("collapse_warning") else []),
    ]
    for name, value, fmt in rows:
        table.add_row(name, fmt.format(value) if value is not None else "-")
    Console(width=max(100, len(str(summary.get("checkpoint", ""))) + 30)).print(table)
