"""The numbers of a run's evaluations as ``summary.json`` names them, so reports read evaluations
run after training (``eval/NAME.json``) the way they read the summary: the headline accuracies
under their historic names, every other number as ``eval/NAME/KEY`` (nested ones as
``eval/NAME/KEY/SUBKEY``), and collapse warnings."""

from __future__ import annotations

from collections.abc import Mapping


def summary_entries(results: dict[str, dict]) -> dict:
    """What summary.json keeps of the evaluators' ``results`` (name -> result)."""
    out: dict = {}
    if "top1" in results.get("linear", {}):
        out["linear_probe_top1"] = results["linear"]["top1"]
        if "top5" in results["linear"]:
            out["linear_probe_top5"] = results["linear"]["top5"]
    if "top1" in results.get("knn", {}):
        out["knn_top1"] = results["knn"]["top1"]
    for name, result in results.items():
        out.update(_numbers(result, f"eval/{name}/"))
        if result.get("collapse_warning"):
            out["collapse_warning"] = result["collapse_warning"]
    return out


def _numbers(result: Mapping, prefix: str) -> dict:
    """Every number of an evaluator's result, nested ones as ``prefix/KEY/SUBKEY`` (the robust
    evaluator's ``slf/pgd20_linf_8``), so sweep reports can tabulate them; run settings aside."""
    out = {}
    for key, value in result.items():
        if isinstance(value, Mapping) and key != "settings":
            out.update(_numbers(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = value
    return out
