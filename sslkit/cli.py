"""The ``train.py`` / ``sslkit-train`` command: refuse unknown config choices in one line, run,
print the run summary."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import hydra
from omegaconf import DictConfig

from sslkit.errors import ConfigError, UserError


def config_dir() -> Path:
    """The ``configs/`` folder: ``sslkit/configs`` in an installed package (the wheel maps the
    checkout's root ``configs/`` there), else the checkout's ``configs/`` beside ``sslkit/``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"sslkit configs not found in {here / 'configs'} or {here.parent / 'configs'}")


CONFIG_DIR = config_dir()


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def choices(group: str) -> list[str]:
    folder = CONFIG_DIR / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def evaluators(any_data: bool = False) -> list[str]:
    """Every offline evaluator config: ``configs/eval/NAME.yaml`` with a ``_target_``.
    ``any_data``: only those that run on any labelled data, not those whose class names the
    per-sample fields it needs in ``data_fields`` (``domain``): they run when chosen by name."""
    names = [name for name in choices("eval")
             if any(line.startswith("_target_:") for line in
                    (config_dir() / "eval" / f"{name}.yaml").read_text().splitlines())]
    if any_data:
        names = [name for name in names if not _needs_data_fields(name)]
    return names


def _needs_data_fields(name: str) -> bool:
    from hydra._internal.utils import _locate  # what instantiate uses; get_object logs an error
    from omegaconf import OmegaConf

    try:
        target = _locate(OmegaConf.load(config_dir() / "eval" / f"{name}.yaml")._target_)
    except Exception:  # noqa: BLE001 - a broken target is refused, in one line, when it is built
        return False
    return bool(getattr(target, "data_fields", ()))


def expand_eval_all(argv: list[str]) -> list[str]:
    """``eval=all`` -> ``eval=[every evaluator in configs/eval/ that runs on any data]``, so a
    new evaluator config joins ``all`` without an edit."""
    return [f"eval=[{','.join(evaluators(any_data=True))}]" if a in ("eval=all", "eval=[all]") else a
            for a in argv]


def null_groups(argv: list[str]) -> list[str]:
    """``group=null`` -> ``group=none`` for the optional groups (adversarial, prior, ...), whose
    ``none.yaml`` switches them off: Hydra itself refuses a null group override with a traceback,
    and ``~group`` would not undo a recipe's choice."""
    out = []
    for arg in argv:
        key, _, value = arg.partition("=")
        group = key.lstrip("+")
        if value == "null" and not group.startswith(("~", "hydra")) and "." not in group \
                and (CONFIG_DIR / group / "none.yaml").is_file():
            arg = f"{key}=none"
        out.append(arg)
    return out


def check_choices(argv: list[str]) -> None:
    try:
        choice_errors(argv)
    except ConfigError as err:
        fail(str(err))


def choice_errors(argv: list[str]) -> None:
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
            if item not in valid:
                raise ConfigError(f"unknown {key} '{item}'; choose one of: {', '.join(valid)}")


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


def compose_config(config_name: str, overrides: list[str], **kwargs) -> DictConfig:
    """Hydra's compose of ``configs/CONFIG_NAME.yaml`` with ``overrides`` (``kwargs`` go to
    ``hydra.compose``); a key or override Hydra refuses raises a one-line ConfigError."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            return compose(config_name, overrides=overrides, **kwargs)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(describe_compose_error(err)) from None


def describe_compose_error(err: Exception) -> str:
    text = str(err)
    if text.startswith("Could not override '"):
        key = text.split("'")[1]
        return (f"unknown config key '{key}'; check the spelling (`python train.py --cfg job` "
                f"prints every key) or write +{key}=... to add a new one")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return "; ".join(lines[:3]) or type(err).__name__


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    from sslkit.run import train  # heavy imports after Hydra has parsed the command line

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
