"""Benchmark sections of ``scripts/bench.py``: one module per section, each with
``run(args, device) -> dict`` (title, settings, rows) and ``RATIO_KEY`` (the ratio its table
shows); :mod:`benchmarks.timing` measures, :mod:`benchmarks.common` builds the default model."""

from __future__ import annotations

import importlib
from types import ModuleType

SECTIONS = ("trainer", "augment", "heads", "baselines", "precision", "views", "attack", "adversarial",
            "embedding", "chunked", "decode", "cache", "compile")


def section(name: str) -> ModuleType:
    return importlib.import_module(f"benchmarks.{name}")
