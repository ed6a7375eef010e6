"""The runs of Hydra multiruns as a report reads them: each run's overrides, summary and config,
from its run dir (``.hydra/overrides.yaml``, ``summary.json``, ``eval/*.json``) or from a
``runs.csv`` a report wrote before (one line per run: its keys, seed, run dir, metrics)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sslkit.stats.identity import flatten, setting
from sslkit.stats.intervals import natural_key
from sslkit.stats.summary import summary_entries


@dataclass
class Run:
    path: Path
    overrides: dict[str, str]
    summary: dict | None
    source: str = ""  # what errors name: the run's summary.json, or runs.csv:LINE
    _config: dict | None = field(default=None, repr=False)
    _config_read: bool = field(default=False, repr=False)

    @property
    def config(self) -> dict | None:
        """The run's ``.hydra/config.yaml`` (None when it has none, e.g. read from a runs.csv)."""
        if not self._config_read:
            file = self.path / ".hydra" / "config.yaml"
            self._config = (yaml.safe_load(file.read_text()) or {}) if file.exists() else None
            self._config_read = True
        return self._config

    def setting(self, ignore: tuple[str, ...] = ()) -> dict[str, str] | None:
        """The config's keys that make the run an experiment (``sslkit.stats.identity``)."""
        return None if self.config is None else setting(self.config, ignore)

    def seed(self, seed_key: str) -> str | None:
        value = self.overrides.get(seed_key)
        return None if value in (None, "", "-") else value

    def value(self, metric: str) -> float:
        """The run's number for ``metric``, NaN where it has none (or not a finite one)."""
        v = self.summary.get(metric) if self.summary else None
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        return float(v) if ok else math.nan


def parse_overrides(lines: list[str]) -> dict[str, str]:
    """``["+sweep=x", "loss.temperature=0.1"]`` -> ``{"sweep": "x", "loss.temperature": "0.1"}``
    (the ``+``/``++`` prefixes dropped; ``~key`` deletions kept as ``key: "~"``)."""
    out: dict[str, str] = {}
    for line in lines:
        line = str(line)
        if line.startswith("~"):
            out[line.lstrip("~").split("=", 1)[0]] = "~"
            continue
        key, _, value = line.partition("=")
        out[key.lstrip("+")] = value
    return out


def find_runs(sweep_dir: Path) -> list[Run]:
    """Every run dir under ``sweep_dir`` (a folder holding ``.hydra/overrides.yaml``), in run
    order; submitit's own folders aside."""
    runs = []
    for ov in sorted(Path(sweep_dir).glob("**/.hydra/overrides.yaml"), key=natural_key):
        run_dir = ov.parent.parent
        if ".submitit" in run_dir.parts:
            continue
        overrides = parse_overrides(yaml.safe_load(ov.read_text()) or [])
        runs.append(Run(run_dir, overrides, load_summary(run_dir), str(run_dir / "summary.json")))
    return runs


def load_summary(run_dir: Path) -> dict | None:
    """``summary.json``, plus the numbers of evaluations run later on the run's checkpoint
    (``scripts/evaluate.py`` writes ``eval/NAME.json``) as ``eval/NAME/KEY`` where the summary
    has no such key; None when the run has no summary (failed or unfinished)."""
    summary_file = run_dir / "summary.json"
    if not summary_file.exists():
        return None
    summary = json.loads(summary_file.read_text())
    later = {f.stem: json.loads(f.read_text()) for f in sorted((run_dir / "eval").glob("*.json"))}
    if later:
        for key, value in summary_entries(later).items():
            summary.setdefault(key, value)
    return summary


def read_runs_csv(path: Path, seed_key: str = "seed") -> tuple[list[Run], list[str]]:
    """The runs of a ``runs.csv`` (columns: the keys, ``seed_key``, ``run``, the metrics) and
    its metric columns. A cell left empty is a missing value."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        columns = list(reader.fieldnames or [])
        if seed_key not in columns or "run" not in columns:
            raise ValueError(f"{path}: no {seed_key!r} and 'run' columns; a runs.csv has its keys, "
                             f"then {seed_key}, run and the metrics")
        keys = columns[:columns.index(seed_key)]
        metrics = columns[columns.index("run") + 1:]
        runs = []
        for line, row in enumerate(reader, start=2):
            overrides = {k: row[k] for k in keys}
            if row[seed_key] not in (None, ""):
                overrides[seed_key] = row[seed_key]
            summary = {}
            for m in metrics:
                try:
                    summary[m] = float(row[m])
                except (TypeError, ValueError):
                    pass
            runs.append(Run(Path(row["run"]), overrides, summary, f"{path}:{line}", None, True))
    return runs, metrics


def merge_duplicates(runs: list[Run]) -> list[Run]:
    """One run per run dir: pooled tables (a runs.csv that repeats another's runs) name a run
    more than once; its keys and numbers are merged, the first file's values winning."""
    by_path: dict[str, Run] = {}
    for r in runs:
        first = by_path.get(str(r.path))
        if first is None:
            by_path[str(r.path)] = r
            continue
        for k, v in r.overrides.items():
            if first.overrides.get(k, "-") == "-":
                first.overrides[k] = v
        if r.summary is not None:
            first.summary = {**r.summary, **(first.summary or {})}
    return list(by_path.values())


def fill_from_configs(runs: list[Run], extra_keys: list[str] | None = None) -> None:
    """A key some runs override and others do not (pooled sweeps: batch 64 and 1024 in one, the
    experiment's 256 in another) takes each other run's value from its ``.hydra/config.yaml``
    when that is a plain value there, so the rows say 256 instead of ``-``; a config group
    (``loss``, ``prior``) takes the run's choice from ``.hydra/hydra.yaml`` (a sweep file's
    ``override /loss: dunif``; an unselected group reads ``null``)."""
    # ordered (not a set): the report's columns follow first appearance, whatever PYTHONHASHSEED is
    keys = list(dict.fromkeys([k for r in runs for k in r.overrides] + list(extra_keys or [])))
    for r in runs:
        missing = [k for k in keys if k not in r.overrides]
        if not missing or r.config is None:
            continue
        flat = flatten(r.config)
        hydra_file = r.path / ".hydra" / "hydra.yaml"
        hydra_cfg = (yaml.safe_load(hydra_file.read_text()) or {}) if hydra_file.exists() else {}
        choices = ((hydra_cfg.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
        for k in missing:
            if k in choices:
                r.overrides[k] = "null" if choices[k] is None else str(choices[k])
                continue
            value = flat.get(k)
            if isinstance(value, (bool, int, float, str)):
                r.overrides[k] = str(value)


def matches(run: Run, where: dict[str, str]) -> bool:
    """``where``: key -> comma-separated accepted values (a key the run lacks reads ``-``)."""
    return all(run.overrides.get(k, "-") in v.split(",") for k, v in where.items())


def as_number(value: str) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def swept_keys(runs: list[Run]) -> list[str]:
    """Keys whose value differs between runs, in the order they first appear (``sweep``, the
    name of the sweep file, is not a setting)."""
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r.overrides if k not in keys and k != "sweep"]
    return [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]


def ordered_values(runs: list[Run], key: str) -> list[str]:
    """Values of ``key`` in sweep order, numerically sorted when they are all numbers."""
    seen: list[str] = []
    for r in runs:
        v = r.overrides.get(key, "-")
        if v not in seen:
            seen.append(v)
    if all(as_number(v) is not None for v in seen):
        seen.sort(key=lambda v: as_number(v))
    return seen
