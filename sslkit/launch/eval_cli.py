"""The ``scripts/evaluate.py`` / ``sslkit-eval`` command: the offline evaluators of
``configs/eval/`` on saved checkpoints.

    sslkit-eval checkpoint=runs/.../checkpoints/last.ckpt
    sslkit-eval checkpoint=PATH eval=[linear,knn,metrics] eval.knn.k=[10]
    sslkit-eval checkpoint=PATH eval=[robust] eval.robust.modes=[slf] out=/tmp/robust.json
    sslkit-eval checkpoint=PATH eval=[plots] eval.plots.max_points=3000 data.root=/data
    sslkit-eval checkpoint=[seed0/checkpoints/last.ckpt,seed1/checkpoints/last.ckpt]

Each checkpoint is vetted (a missing, corrupt or foreign file is refused in one line), its model
and data are rebuilt from the config saved in it (a ``key=value`` of that config, e.g.
``data.root=/data``, changes it first), and every selected evaluator writes ``eval/NAME.json``
into the checkpoint's run dir (the folder holding ``checkpoints/``), or all of them go to
``out=FILE``; a table is printed. With several checkpoints, runs that differ only in ``seed``
are also summarised as mean and 95% interval. From Python: ``sslkit.evaluate(checkpoint, [...])``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from sslkit.training.checkpoint_file import checkpoint_file
from sslkit.training.config import CONFIG_DIR, expand_eval_all
from sslkit.launch.train_cli import check_choices, check_composes, fail
from sslkit.errors import ConfigError, UserError
from sslkit.stats.intervals import natural_key

RUN_CONFIG = "run_config"


def run_config_overrides(argv: list[str]) -> list[str]:
    """``data.root=/data`` -> ``+run_config.data.root=/data``: an override of a key the training
    config has and the evaluation config does not changes the checkpoint's saved config."""
    own = set(OmegaConf.load(CONFIG_DIR / "evaluate.yaml")) | {"eval", "hydra"}
    train = set(OmegaConf.load(CONFIG_DIR / "train.yaml")) - {"defaults"}
    groups = {p.name for p in CONFIG_DIR.iterdir() if p.is_dir()}
    out = []
    for arg in argv:
        key = arg.split("=", 1)[0].removeprefix("+")
        top = key.split(".", 1)[0]
        known = top in train or (top in groups and "." in key)  # `data=cifar10` is no key of it
        if "=" in arg and not key.startswith(("~", "-")) and top not in own and known:
            arg = f"+{RUN_CONFIG}.{arg.removeprefix('+')}"
        out.append(arg)
    return out


def checkpoints(cfg: DictConfig) -> list[Path]:
    """The checkpoint paths of ``cfg.checkpoint``: one, a list, or patterns with ``*`` / ``?``
    (``multirun/SWEEP/*/checkpoints/last.ckpt``: every run of a sweep, in run order)."""
    value = cfg.checkpoint
    paths = []
    for item in (list(value) if OmegaConf.is_list(value) else [value]):
        path = Path(hydra.utils.to_absolute_path(str(item)))
        if not any(c in str(item) for c in "*?"):
            paths.append(path)
            continue
        anchor = Path(path.anchor)
        found = sorted(anchor.glob(str(path.relative_to(anchor))), key=natural_key)
        if not found:
            raise UserError(f"checkpoint={item}: no file matches the pattern")
        paths += found
    return paths


def saved_config_changes(cfg: DictConfig) -> dict:
    """Dotted keys of the checkpoint's config to change: ``run_config`` and ``data_root``."""
    changes = {}

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict) and value:
                walk(value, f"{prefix}{key}.")
            else:
                changes[f"{prefix}{key}"] = value

    run_config = cfg.get(RUN_CONFIG)
    walk(OmegaConf.to_container(run_config, resolve=True) if run_config else {}, "")
    if cfg.data_root:
        changes["data.root"] = cfg.data_root
    if changes.get("data.root"):
        changes["data.root"] = hydra.utils.to_absolute_path(str(changes["data.root"]))
    return changes


def evaluate(cfg: DictConfig) -> list[tuple[dict, dict]]:
    """Evaluate every checkpoint of the composed ``evaluate`` config; ``(run config, results by
    evaluator)`` per checkpoint."""
    from rich.console import Console

    from sslkit.eval.loading import load_for_evaluation
    from sslkit.eval.runner import build_evaluators, eval_device, evaluate_module, jsonable
    from sslkit.runtime.threads import apply as apply_threads
    from sslkit.stats.aggregate import aggregate, compare_groups
    from sslkit.stats.jsonio import dumps
    from sslkit.training.checkpoint import run_dir_of

    apply_threads(cfg.threads)  # an int, null (torch's default) or auto
    paths = checkpoints(cfg)
    evaluators = build_evaluators(cfg)  # a bad evaluator config fails before any checkpoint loads
    eval_device(cfg.eval_device)
    if not evaluators:
        raise UserError("no evaluator selected; pass e.g. eval=[linear,knn,metrics] or eval=all")
    if cfg.out and len(paths) > 1:
        raise ConfigError(f"out={cfg.out} takes the results of one checkpoint, not {len(paths)}; "
                          "leave out= away (each run dir gets eval/NAME.json) or use aggregate_out=")
    changes = saved_config_changes(cfg)
    out = Path(hydra.utils.to_absolute_path(cfg.out)) if cfg.out else None
    console = Console(width=120)
    runs = []
    for path in paths:
        run_cfg, module, dm, ckpt = load_for_evaluation(path, changes)
        seed = cfg.seed if cfg.seed is not None else int(run_cfg.get("seed") or 0)
        console.print(f"evaluating {path} (epoch {ckpt.get('epoch')}, seed {seed})")
        results = evaluate_module(cfg, module, dm, run_dir_of(path), seed, console, evaluators,
                                  write=out is None, run_precision=run_cfg.trainer.get("precision"))
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            record = {"checkpoint": str(path), "epoch": ckpt.get("epoch"), "results": results}
            out.write_text(json.dumps(jsonable(record), indent=2) + "\n")
            console.print(f"results written to {out}")
        runs.append((OmegaConf.to_container(run_cfg, resolve=True), results, path))
    semi = [(path, results["semi"]) for _, results, path in runs if "semi" in results]
    if len(semi) > 1:  # the label-efficiency curves of every checkpoint in one picture
        from sslkit.eval.semi import write_label_efficiency

        target = cfg.get("label_efficiency_out")
        written = write_label_efficiency(semi, Path(hydra.utils.to_absolute_path(target)) if target else None)
        console.print(f"label-efficiency curves of {len(semi)} checkpoints written to {written}")
    if len(runs) > 1:
        groups = aggregate(runs)
        comparisons = compare_groups(groups) if len(groups) > 1 else []
        print_aggregate(groups, console)
        print_comparisons(groups, comparisons, console)
        if cfg.aggregate_out:
            target = Path(hydra.utils.to_absolute_path(cfg.aggregate_out))
            target.write_text(dumps({"groups": groups, "comparisons": comparisons}) + "\n")
    return [run[:2] for run in runs]


def print_aggregate(groups: list[dict], console) -> None:
    from rich.table import Table

    for i, group in enumerate(groups):
        table = Table(title=f"group {i + 1}: {group['n']} run(s), seeds {group['seeds']}")
        table.add_column("metric")
        table.add_column("mean")
        table.add_column("95% interval")
        for name, s in group["metrics"].items():
            interval = "-" if math.isnan(s["ci95"]) else f"± {s['ci95']:.4f}"
            table.add_row(name, f"{s['mean']:.4f}", interval)
        console.print(table)


def print_comparisons(groups: list[dict], comparisons: list[dict], console) -> None:
    """Each group against group 1, per metric: paired over the seeds they share (t-interval of
    the per-seed differences), Welch's interval where they share none; which test, the n it
    used, the raw and the Holm-adjusted p over every comparison printed (one family)."""
    from rich.table import Table

    if not comparisons:
        return
    table = Table(title=f"against group 1 ({len(comparisons)} comparisons, Holm over all of them)")
    for column in ("group", "metric", "test", "n", "difference", "95% interval", "p", "p (Holm)", "verdict"):
        table.add_column(column)

    def number(value, fmt):
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)

    for c in comparisons:
        table.add_row(str(c["group"] + 1), c["metric"], str(c.get("test", "-")), str(c.get("n", "-")),
                      number(c.get("diff"), "{:+.4f}"), number(c.get("ci95"), "± {:.4f}"),
                      number(c.get("p"), "{:.3g}"), number(c.get("p_holm"), "{:.3g}"), str(c.get("verdict", "")))
    console.print(table)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
def hydra_main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except UserError as err:
        fail(str(err))


def main() -> None:
    """``python scripts/evaluate.py ARGS``, ``python -m sslkit.launch.eval_cli ARGS`` and the
    ``sslkit-eval`` console script."""
    sys.argv[1:] = run_config_overrides(expand_eval_all(sys.argv[1:]))
    check_choices(sys.argv[1:])
    check_checkpoint_files(check_composes(sys.argv[1:], "evaluate"))
    hydra_main()


def check_checkpoint_files(cfg: DictConfig | None) -> None:
    """Every checkpoint named (or matched by a pattern) is a file: refused before torch loads
    and before Hydra writes anything (each one's contents are vetted when it is loaded)."""
    if cfg is None:
        return
    if OmegaConf.is_missing(cfg, "checkpoint") or cfg.checkpoint is None:
        fail("checkpoint=PATH is required: a .ckpt file written by train.py, a list "
             "checkpoint=[a.ckpt,b.ckpt] or a pattern 'checkpoint=multirun/SWEEP/*/checkpoints/last.ckpt'")
    try:
        for path in checkpoints(cfg):
            checkpoint_file(path)
    except UserError as err:
        fail(str(err))


if __name__ == "__main__":
    main()
