"""The config tree and its composition: where ``configs/`` is, the choices of each group, and
Hydra's compose with one-line errors for unknown choices and keys. Used by the command lines,
the Python API, the schema check and the evaluation."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from sslkit.errors import ConfigError


def config_dir() -> Path:
    """The ``configs/`` folder: ``sslkit/configs`` in an installed package (the wheel maps the
    checkout's root ``configs/`` there), else the checkout's ``configs/`` beside ``sslkit/``."""
    here = Path(__file__).resolve().parents[1]  # sslkit/
    for candidate in (here / "configs", here.parent / "configs"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"sslkit configs not found in {here / 'configs'} or {here.parent / 'configs'}")



CONFIG_DIR = config_dir()


def choices(group: str) -> list[str]:
    folder = CONFIG_DIR / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def evaluators(any_data: bool = False) -> list[str]:
    """Every offline evaluator config: ``configs/eval/NAME.yaml`` with a ``_target_``.
    ``any_data``: only those that run on any labelled data, not those whose class names the
    per-sample fields it needs in ``data_fields`` (``domain``) or that says it
    ``needs_other_data`` (``transfer``): they run when chosen by name."""
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
    # or another dataset than the run's (transfer)
    return bool(getattr(target, "data_fields", ())) or bool(getattr(target, "needs_other_data", False))


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
