"""What makes two runs the same experiment: every key of their configs except the seed and the
few keys (``NOT_SETTINGS``) that change where a run reads and writes or how it is run, not what
it measures. Runs with the same identity are seeds of one setting and pool into one mean; any
other difference (a loss parameter, adversarial training, the number of epochs, a key one
config has and the other lacks) makes them different settings."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from sslkit.errors import UserError

# Keys (and everything under them) that do not make a run another experiment:
#   seed, *.seed                  the key runs are pooled over, wherever the config repeats it
#                                 (data.seed: ${seed}) or seeds a part of its own (monitor.recorder.seed):
#                                 a resolved config cannot tell the two apart
#   hydra, logger                 where the run writes, and how it is logged
#   resume, resume_allow_config_change, checkpoint   how it was started and what files it keeps
#   data.root, data.download, data.num_workers       where the data is read from, and how fast
#   threads, eval_device, progress_bar_refresh_rate  how fast and how verbosely it runs
NOT_SETTINGS = ("seed", "hydra", "logger", "resume", "resume_allow_config_change", "checkpoint",
                "data.root", "data.download", "data.num_workers", "threads", "eval_device",
                "progress_bar_refresh_rate")

ABSENT = "-"  # a key this config does not have


class DuplicateSeedError(UserError, ValueError):
    """One setting holds the same seed twice (two files of one run, or a run copied)."""


def text(value) -> str:
    """A config value as the text reports show and identities compare."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def flatten(config: Mapping, prefix: str = "") -> dict[str, object]:
    """Nested mappings to dotted keys (``loss.temperature``); lists and scalars are values, an
    empty mapping is the value ``{}``."""
    out: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = dict(value) if isinstance(value, Mapping) else value
    return out


def is_setting(key: str, ignore: Iterable[str] = ()) -> bool:
    """False for a key under ``NOT_SETTINGS`` or ``ignore`` (a key or a prefix of keys)."""
    return not any(key == p or key.startswith(p + ".") for p in (*NOT_SETTINGS, *ignore))


def setting(config: Mapping, ignore: Iterable[str] = ()) -> dict[str, str]:
    """The config's keys that make it an experiment, as dotted key -> text."""
    ignore = tuple(ignore)
    return {k: text(v) for k, v in flatten(config).items()
            if is_setting(k, ignore) and k.rsplit(".", 1)[-1] != "seed"}


def identity(config: Mapping, ignore: Iterable[str] = ()) -> str:
    """The run's setting (its config with its seed left out) as a comparable string."""
    return json.dumps(setting(config, ignore), sort_keys=True)


def differing_keys(settings: list[Mapping[str, str]]) -> list[str]:
    """The keys whose value (``ABSENT`` where a setting lacks the key) is not the same in all of
    ``settings``, in the order they first appear."""
    keys = list(dict.fromkeys(k for s in settings for k in s))
    return [k for k in keys if len({s.get(k, ABSENT) for s in settings}) > 1]


def refuse_duplicate_seeds(members: list[tuple[object, str]], what: str = "") -> None:
    """``members``: (seed, source) of the runs of one setting. Raises ``DuplicateSeedError``
    naming the two sources of the first seed found twice (an unknown seed, None, is never a
    duplicate)."""
    seen: dict[str, str] = {}
    for seed, source in members:
        if seed is None:
            continue
        if str(seed) in seen:
            raise DuplicateSeedError(
                f"{seen[str(seed)]} and {source} are both seed {seed} of one setting{what}; "
                "a setting pools one result per seed (two checkpoints of one run, e.g. last.ckpt "
                "and best.ckpt, are one seed): keep one of them")
        seen[str(seed)] = source
