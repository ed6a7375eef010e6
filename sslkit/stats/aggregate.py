"""Evaluation results pooled over seeds: mean and 95% interval per setting (runs whose configs
differ only in their seed, ``sslkit.stats.identity``), and the differences between settings
(paired over shared seeds, else Welch; one Holm family)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from sslkit.stats.compare import apply_holm, compare
from sslkit.stats.identity import differing_keys, identity, refuse_duplicate_seeds, setting
from sslkit.stats.intervals import mean_ci95

__all__ = ["aggregate", "compare_groups", "identity", "numbers"]


def numbers(result: Mapping, prefix: str = "") -> dict[str, float]:
    """Every number of a (nested) result as ``a.b.c`` -> value (lists and flags left out;
    non-finite numbers too, so a failed metric never enters a mean)."""
    out = {}
    for key, value in result.items():
        if isinstance(value, Mapping):
            out.update(numbers(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[f"{prefix}{key}"] = float(value)
    return out


def aggregate(runs: list[tuple]) -> list[dict]:
    """``runs``: ``(saved config, results by evaluator)`` or ``(config, results, source)`` per
    run (``source``: the checkpoint it came from, named in errors). Groups the runs by their
    whole config except the seed (``identity``) and returns per group its ``seeds``, ``n``,
    ``sources``, ``setting`` (the keys that tell the groups apart, with this group's values), and
    per ``evaluator.metric`` the mean and 95% interval (``metrics``) and ``[seed, value]`` of every run
    (``values``). Refuses (``DuplicateSeedError``, one line naming both checkpoints) a group that
    holds the same seed twice."""
    groups: dict[str, list] = {}
    for i, run in enumerate(runs):
        config, results = run[0], run[1]
        source = str(run[2]) if len(run) > 2 else f"run {i + 1}"
        groups.setdefault(identity(config), []).append((config, results, source))
    settings = {key: setting(members[0][0]) for key, members in groups.items()}
    apart = differing_keys(list(settings.values()))
    out = []
    for key, members in groups.items():
        refuse_duplicate_seeds([(c.get("seed"), source) for c, _, source in members])
        values: dict[str, list] = {}
        for config, results, _ in members:
            for name, result in results.items():
                for metric, v in numbers(result).items():
                    if metric != "seconds":
                        values.setdefault(f"{name}.{metric}", []).append([config.get("seed"), v])
        out.append({
            "seeds": [c.get("seed") for c, _, _ in members],
            "n": len(members),
            "sources": [source for _, _, source in members],
            "setting": {k: settings[key].get(k, "-") for k in apart},
            "metrics": {k: mean_ci95([x for _, x in v]) for k, v in values.items()},
            "values": values,
        })
    return out


def compare_groups(groups: list[dict], reference: int = 0, metrics: list[str] | None = None,
                   paired: bool | None = None) -> list[dict]:
    """Every group against ``groups[reference]`` on each metric both have (or ``metrics``): a
    paired interval over the seeds they share, Welch's where they share none; all of them one
    Holm family. Each comparison: ``group``, ``reference`` (indices), ``metric`` and the fields of
    ``sslkit.stats.compare.compare`` plus ``p_holm`` and ``verdict``."""
    ref = groups[reference]
    out = []
    for i, group in enumerate(groups):
        if i == reference:
            continue
        names = metrics or [m for m in group["values"] if m in ref["values"]]
        for metric in names:
            a, b = group["values"].get(metric, []), ref["values"].get(metric, [])
            out.append({"group": i, "reference": reference, "metric": metric,
                        **compare(a, b, paired)})
    return apply_holm(out)
