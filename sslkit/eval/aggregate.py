"""Mean and 95% interval of evaluation results over runs that differ only in their seed."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from sslkit.checkpoint import MEANING_KEYS
from sslkit.eval.stats import mean_ci95

# what makes two runs the same experiment (their seeds aside): sslkit.checkpoint.MEANING_KEYS plus the
# schedule length
IDENTITY_KEYS = tuple(k for k in MEANING_KEYS if k != "seed") + ("trainer.max_epochs",)


def identity(config: Mapping) -> str:
    """The run's config with its seed left out, as a comparable string."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(dict(config))
    picked = {}
    for key in IDENTITY_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        picked[key] = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    return json.dumps(picked, sort_keys=True, default=str)


def numbers(result: Mapping, prefix: str = "") -> dict[str, float]:
    """Every number of a (nested) result as ``a.b.c`` -> value (lists and flags left out)."""
    out = {}
    for key, value in result.items():
        if isinstance(value, Mapping):
            out.update(numbers(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[f"{prefix}{key}"] = float(value)
    return out


def aggregate(runs: list[tuple[Mapping, dict[str, dict]]]) -> list[dict]:
    """``runs``: (saved config, results by evaluator) per run. Groups the runs by ``identity``
    (runs that differ only in seed) and returns per group its seeds and, per
    ``evaluator.metric``, the mean and 95% interval."""
    groups: dict[str, list] = {}
    for config, results in runs:
        groups.setdefault(identity(config), []).append((config, results))
    out = []
    for members in groups.values():
        values: dict[str, list[float]] = {}
        for _, results in members:
            for name, result in results.items():
                for key, v in numbers(result).items():
                    if key != "seconds":
                        values.setdefault(f"{name}.{key}", []).append(v)
        out.append({
            "seeds": [c.get("seed") for c, _ in members],
            "n": len(members),
            "metrics": {k: mean_ci95(v) for k, v in values.items()},
        })
    return out
