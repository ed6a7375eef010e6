"""Check a composed config before any work: every key of a ``_target_`` node must be a
parameter of what it builds, every value must fit the parameter's type hint, and the keys in
``RANGES`` must lie in their range. One ``ConfigError`` line names key, value and what is
expected (``trainer.max_epochs='ten': expected an int >= 1``).

Types come from the constructors' own type hints, so a new head, encoder or dataset is checked
without an entry here; ``RANGES`` and ``TYPES`` only add what a hint cannot say (a lower bound,
a probability) and the keys that no constructor receives directly.
"""

from __future__ import annotations

import collections.abc
import difflib
import fnmatch
import inspect
import types
import typing
from pathlib import Path

from hydra._internal.utils import _locate  # what instantiate uses; get_object also logs an error
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sslkit.errors import ConfigError
from sslkit.training.lr_scaling import RULES as LR_RULES

# (low, high, inclusive): a bound of None is open; keys are fnmatch patterns on dotted paths
RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "seed": (0, None, True),
    "threads": (1, None, True),
    "precision_calibration_steps": (0, None, True),
    "progress_bar_refresh_rate": (0, None, True),
    "checkpoint.keep_last": (0, None, True),
    "checkpoint.every_n_train_steps": (1, None, True),
    "trainer.max_epochs": (1, None, True),
    "trainer.num_nodes": (1, None, True),
    "trainer.log_every_n_steps": (1, None, True),
    "trainer.check_val_every_n_epoch": (1, None, True),
    "trainer.accumulate_grad_batches": (1, None, True),
    "data.batch_size": (1, None, True),
    "data.eval_batch_size": (1, None, True),
    "data.val_size": (1, None, True),
    "data.num_workers": (0, None, True),
    "data.imbalance_ratio": (1, None, True),
    "data.in_chans": (1, None, True),
    "data.image_size": (1, None, True),
    "data.num_classes": (1, None, True),
    "data.num_train": (1, None, True),
    "data.num_test": (1, None, True),
    "augment.*_p": (0, 1, True),
    "augment.crop_size": (1, None, True),
    "augment.local_views": (0, None, True),
    "optim.optimizer.lr": (0, None, False),
    "optim.weight_decay": (0, None, True),
    "optim.warmup_epochs": (0, None, True),
    "optim.final_lr_ratio": (0, 1, True),
    "optim.base_batch_size": (1, None, True),
    "loss.temperature": (0, None, False),
    "loss.momentum": (0, 1, True),
    "loss.queue_size": (1, None, True),
    "model.projector.hidden_dim": (1, None, True),
    "model.projector.out_dim": (1, None, True),
    "model.projector.layers": (0, None, True),
    "model.max_nonfinite_skips": (0, None, True),
    "monitor.knn.k": (1, None, True),
    "monitor.knn.every_n_epochs": (0, None, True),
}

# keys that no ``_target_`` receives as a parameter (read by sslkit/launch/run.py and sslkit/training/build.py)
TYPES: dict[str, object] = {
    "seed": int,
    "threads": int | typing.Literal["auto"] | None,
    "precision_calibration_steps": int,
    "matmul_precision": typing.Literal["highest", "high", "medium"],
    "eval_precision": typing.Literal["auto", "32-true", "bf16-mixed", "16-mixed"],
    "resume": str | None,
    "resume_allow_config_change": bool,
    "progress_bar_refresh_rate": int,
    "checkpoint.keep_last": int,
    "checkpoint.every_n_train_steps": int | None,
    "optim.weight_decay": float,
    "optim.warmup_epochs": float,
    "optim.final_lr_ratio": float,
    "optim.lr_scaling": typing.Literal[LR_RULES],
    "optim.base_batch_size": int,
}

# values sslkit resolves before the constructor sees them (sslkit/runtime/precision.py)
ALSO_ACCEPTED: dict[str, tuple] = {"trainer.precision": ("auto",)}

# keys Hydra's instantiate reads itself
_HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


def validate(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` for the first key that is unknown, mistyped or out of range."""
    for key, hint in TYPES.items():
        value = _select(cfg, key)
        if value is not _MISSING:
            _check(key, value, hint)
    _check_evaluators(cfg)
    _walk(cfg, "")


def _check_evaluators(cfg: DictConfig) -> None:
    """Every entry of ``eval`` must be an evaluator (a ``_target_``), or the settings a recipe
    gives an evaluator of configs/eval/ that the command line left out of ``eval=[...]``;
    anything else would be silently skipped by the runner."""
    selected = cfg.get("eval") if isinstance(cfg, DictConfig) else None
    if not isinstance(selected, DictConfig):
        return
    from sslkit.training.config import evaluators

    known = None
    for name in selected.keys():
        entry = selected[name]
        if entry is None or _is_target(entry):
            continue
        known = evaluators() if known is None else known
        if name not in known:
            raise ConfigError(
                f"eval.{name} is not an evaluator (no _target_); choose evaluators with "
                f"'eval=[...]' from {known}, set their keys as eval.NAME.KEY=VALUE, and "
                f"online monitors as monitor.NAME.KEY=VALUE"
            )


_MISSING = object()


def _select(cfg: DictConfig, key: str):
    try:
        node = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{key}: {str(err).splitlines()[0]}") from None
    return node


def _walk(node, path: str) -> None:
    if isinstance(node, DictConfig):
        target = node.get("_target_") if "_target_" in node else None
        params = _parameters(target, path) if isinstance(target, str) else None
        for key in node.keys():
            key = str(key)
            child_path = f"{path}.{key}" if path else key
            if key in _HYDRA_KEYS:
                continue
            if params is not None and params[1] is False and key not in params[0]:
                raise ConfigError(_unknown(child_path, key, target, sorted(params[0])))
            try:
                child = node[key]
            except OmegaConfBaseException as err:
                if "Missing mandatory value" in str(err):
                    raise ConfigError(f"{child_path} is not set; give it on the command line "
                                      f"({child_path}=...)") from None
                raise ConfigError(f"{child_path}: {str(err).splitlines()[0]}") from None
            if params is not None and key in params[0] and not _is_target(child):
                _check(child_path, child, params[0][key])
            elif not isinstance(child, (DictConfig, ListConfig)):
                _check_range(child_path, child)
            _walk(child, child_path)
    elif isinstance(node, ListConfig):
        for i, child in enumerate(node):
            _walk(child, f"{path}[{i}]")


def _unknown(path: str, key: str, target: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=3)
    if close:
        hint = f"did you mean {' or '.join(close)}?"
    elif len(valid) <= 20:
        hint = f"it takes {', '.join(valid)}"
    else:
        hint = "see its signature"
    return (f"unknown key {path}: {target.rsplit('.', 1)[-1]} has no parameter '{key}'; {hint} "
            "(`python train.py --cfg job` prints the config)")


def _is_target(value) -> bool:
    return isinstance(value, DictConfig) and "_target_" in value


def _parameters(target: str, path: str) -> tuple[dict[str, object], bool] | None:
    """The keyword parameters ``target`` accepts with their type hints, and whether it also takes
    any other keyword (``**kwargs`` that reaches code outside sslkit)."""
    try:
        obj = _locate(target)
    except Exception as err:  # noqa: BLE001 - any import failure is the user's target
        raise ConfigError(f"{path}._target_={target!r} cannot be imported ({err})") from None
    params: dict[str, object] = {}
    classes = [c for c in obj.__mro__ if "__init__" in vars(c)] if inspect.isclass(obj) else [obj]
    for owner in classes:
        fn = owner.__init__ if inspect.isclass(obj) else owner
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return None
        hints = _hints(fn)
        open_kwargs = False
        for name, p in sig.parameters.items():
            if p.kind is p.VAR_KEYWORD:
                open_kwargs = True
            elif p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and name != "self":
                params.setdefault(name, hints.get(name, typing.Any))
        if not open_kwargs:
            return params, False
        if not inspect.isclass(obj):
            return params, True
        # **kwargs forwarded to a base class: follow it while the base is ours
        nxt = classes[classes.index(owner) + 1] if classes.index(owner) + 1 < len(classes) else None
        if nxt is None or not nxt.__module__.startswith("sslkit"):
            return params, True
    return params, True


def _hints(fn) -> dict[str, object]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable hints: check keys, not types
        return {}


def _check(key: str, value, hint) -> None:
    if value in ALSO_ACCEPTED.get(key, ()):
        return
    expected = _expect(value, hint)
    if expected is not None and key in ALSO_ACCEPTED:
        expected = f"{', '.join(map(repr, ALSO_ACCEPTED[key]))} or {expected}"
    if expected is not None:
        shown = OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value
        raise ConfigError(f"{key}={shown!r}: expected {expected}{_range_text(key)}")
    _check_range(key, value, hint)


def _check_range(key: str, value, hint=None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    for pattern, (low, high, inclusive) in RANGES.items():
        if fnmatch.fnmatchcase(key, pattern):
            ok = (low is None or (value >= low if inclusive else value > low)) and (
                high is None or (value <= high if inclusive else value < high))
            if not ok:
                kind = "an int" if hint is int or typing.get_args(hint) == (int, type(None)) else "a number"
                nullable = " or null" if type(None) in typing.get_args(hint) else ""
                raise ConfigError(f"{key}={value!r}: expected {kind}{_range_text(key)}{nullable}")
            return


def _range_text(key: str) -> str:
    for pattern, (low, high, inclusive) in RANGES.items():
        if fnmatch.fnmatchcase(key, pattern):
            if low is not None and high is not None:
                return f" in [{low}, {high}]" if inclusive else f" in ({low}, {high})"
            if low is not None:
                return f" {'>=' if inclusive else '>'} {low}"
            return f" {'<=' if inclusive else '<'} {high}"
    return ""


_NAMES = {int: "an int", float: "a number", bool: "true or false", str: "a string"}


def _expect(value, hint) -> str | None:
    """None if ``value`` fits ``hint``; else what was expected, in words. Hints this does not
    understand (classes, callables) accept anything: the constructor checks those."""
    if hint is typing.Any or hint is inspect.Parameter.empty:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None if type(None) in args else "a value, not null"
        members = [a for a in args if a is not type(None)]
        failures = [_expect(value, a) for a in members]
        if any(f is None for f in failures):
            return None
        literals = [repr(v) for a in members if typing.get_origin(a) is typing.Literal
                    for v in typing.get_args(a)]
        others = [f for a, f in zip(members, failures) if typing.get_origin(a) is not typing.Literal]
        words = ([f"one of {', '.join(dict.fromkeys(literals))}"] if literals else []) + others
        return " or ".join(dict.fromkeys(words))
    if value is None:
        return "a value, not null" if hint in _NAMES or origin in _SEQUENCES else None
    if origin is typing.Literal:
        return None if value in args else f"one of {', '.join(map(repr, args))}"
    if hint is bool:
        return None if isinstance(value, bool) else _NAMES[bool]
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else _NAMES[int]
    if hint is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else _NAMES[float]
    if hint is str or hint is Path:
        return None if isinstance(value, str) else _NAMES[str]
    if origin in _SEQUENCES or hint in _SEQUENCES:
        if not isinstance(value, ListConfig):
            return "a list"
        item = args[0] if args and origin is not tuple else None
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            item = args[0]  # tuple[int, ...]; fixed-length tuples are left to the constructor
        if item is not None:
            for v in value:
                if _expect(v, item) is not None:
                    return f"a list of {_expect(v, item).removeprefix('an ').removeprefix('a ')}s"
        return None
    return None


_SEQUENCES = (list, tuple, collections.abc.Sequence, typing.Sequence)
