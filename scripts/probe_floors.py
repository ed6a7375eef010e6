"""Floors of every evaluator's metrics: the randomly initialised model and the raw pixels.

    python scripts/probe_floors.py --seeds 0-15 --out docs/data/results_v2/floors experiment=results_fmnist 'eval=[linear,knn,metrics,semi]' eval.semi.finetune=null eval.semi.full=false

The ``key=value`` arguments are train.py's overrides: the run's data, model and the evaluators of
``eval=[...]`` with their settings (docs/results_protocol.md, "Floors"). For each seed of
``--seeds`` (``0-15``, ``0,1,2`` or ``0-3,8``) and each floor of ``--floors`` (both by default):

- ``random_init``: the encoder and projector a ``train.py seed=S`` run starts from (the same
  seeding and build order as ``sslkit.launch.run.train``), not trained;
- ``raw_pixels``: the images as the model's evaluation transform gives them (normalised with the
  data's mean and std), flattened: ``C*H*W`` features. What needs a projector (the projector's
  representation metrics) is not defined there and is left out; so are evaluators that train or
  attack an encoder (``robust``, ``finetune``, the fine-tune of ``semi``), which are refused.

Every evaluator runs through the library's own runner (``sslkit.eval.runner.evaluate_module``),
as at the end of a training run, with the validation score beside it
(``val/linear_probe_top1``). Each (floor, seed) becomes a run folder ``OUT/FLOOR/SEED`` holding
``summary.json``, ``eval/NAME.json`` and ``.hydra/overrides.yaml`` (the overrides with
``floor=FLOOR`` and ``seed=SEED``), so ``scripts/sweep_report.py`` reads it like a sweep's runs;
a folder with a ``summary.json`` is kept, so an interrupted command resumes where it stopped.
Then ``OUT/runs.csv`` (the format of sweep_report's ``runs.csv``: ``floor``, ``seed``, ``run``
and every number of the summaries) and ``OUT/report.csv`` are written and the table of the
protocol's metrics printed. Pool the floors as rows beside the heads:
``python scripts/sweep_report.py docs/data/results_v2/heads/runs.csv docs/data/results_v2/floors/runs.csv``
(for tables; comparisons are taken on each claim's own runs.csv). Features are extracted in
float32 unless ``eval_precision`` says otherwise (a run follows its training precision).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hydra.errors import HydraException  # noqa: E402
from omegaconf.errors import OmegaConfBaseException  # noqa: E402

from sslkit.errors import UserError  # noqa: E402

FLOORS = ("random_init", "raw_pixels")
# evaluators that only read frozen features (and the metrics' encoder part): defined on pixels
RAW_PIXEL_EVALUATORS = ("linear", "knn", "semi", "metrics", "longtail", "validation")
# the protocol's metrics (docs/results_protocol.md, "Metrics"): the printed table's columns
SHOWN = ("linear_probe_top1", "val/linear_probe_top1", "eval/knn/k20_top1", "knn_top1",
         "eval/semi/linear/1%/top1/mean", "eval/semi/linear/10%/top1/mean", "eval/metrics/encoder/rankme",
         "eval/metrics/projector/alignment", "eval/metrics/projector/uniformity")
NOT_METRICS = ("seed",)


def parse_seeds(text: str) -> list[int]:
    """``0-15``, ``0,1,2`` or ``0-3,8`` -> the seeds, in order, each once."""
    seeds: list[int] = []
    for part in text.split(","):
        low, sep, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high) if sep else int(low)
        except ValueError:
            raise UserError(f"--seeds {text}: write seeds as 0-15, 0,1,2 or 0-3,8") from None
        if last < first:
            raise UserError(f"--seeds {text}: the range {part} runs backwards; write {last}-{first}")
        seeds += [s for s in range(first, last + 1) if s not in seeds]
    return seeds


def compose(overrides: list[str], seed: int):
    """The run's config as train.py composes it, at ``seed``, without loggers."""
    from sslkit.training.config import compose_config
    from sslkit.training.schema import validate

    cfg = compose_config("train", [*overrides, f"seed={seed}", "logger=[]"])
    validate(cfg)
    return cfg


def raw_pixel_model(module) -> None:
    """The module's encoder replaced by flattening (its evaluation transform kept) and its
    projector by the identity: what the evaluators read as features are then the pixels."""
    from torch import nn

    module.online.encoder, module.online.projector = nn.Flatten(), nn.Identity()


def refuse_on_raw_pixels(cfg, evaluators: dict) -> None:
    undefined = [name for name in evaluators if name not in RAW_PIXEL_EVALUATORS]
    if undefined:
        raise UserError(f"eval.{undefined[0]} is not defined on raw pixels (it trains or reads a model); "
                        f"run it with --floors random_init")
    if "semi" in evaluators and cfg.eval.semi.get("finetune") is not None:
        raise UserError("eval.semi.finetune fine-tunes an encoder, which raw pixels do not have: add "
                        "eval.semi.finetune=null, or run --floors random_init")


def measure(floor: str, seed: int, overrides: list[str], run_dir: Path) -> dict:
    """Every evaluator of the config on one floor at one seed; writes the run folder and returns
    its summary."""
    import lightning as L

    from sslkit.eval.metrics import collapse_warning
    from sslkit.eval.runner import build_evaluators, check_inputs, evaluate_module
    from sslkit.launch.run import split_names, with_validation_scores
    from sslkit.stats.summary import summary_entries
    from sslkit.training.build import build_datamodule, build_module

    started = time.perf_counter()
    cfg = compose(overrides, seed)
    L.seed_everything(seed, workers=True, verbose=False)  # as train() does, in its order
    dm = build_datamodule(cfg)
    dm.setup("fit")
    module = build_module(cfg)
    evaluators = build_evaluators(cfg)
    if floor == "raw_pixels":
        refuse_on_raw_pixels(cfg, evaluators)
        raw_pixel_model(module)
    evaluators = with_validation_scores(evaluators, dm)
    check_inputs(evaluators, dm)
    results = evaluate_module(cfg, module, dm, run_dir, seed, evaluators=evaluators, write=False,
                              run_precision=cfg.trainer.get("precision"))
    if floor == "raw_pixels" and "metrics" in results:  # no projector: only the encoder's metrics
        metrics = results["metrics"]
        metrics.pop("projector", None)
        ev = evaluators["metrics"]
        metrics["collapse_warning"] = collapse_warning({"encoder": metrics["encoder"]}, ev.min_rank,
                                                       ev.min_std_ratio)
    (run_dir / "eval").mkdir(parents=True, exist_ok=True)
    for name, result in results.items():
        (run_dir / "eval" / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    image = next(iter(dm.eval_dataloader(dm.test_split)))["image"][:1].to(module.device)
    summary = {**split_names(summary_entries(results)), "floor": floor, "seed": seed,
               "features": int(module.features(image).shape[1]),
               "eval_seconds": time.perf_counter() - started, "run_dir": str(run_dir)}
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    lines = [*overrides, f"floor={floor}", f"seed={seed}"]
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {json.dumps(o)}\n" for o in lines))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def metric_columns(summaries: list[dict]) -> list[str]:
    """Every number of the summaries (the protocol's metrics first), for runs.csv."""
    keys = [k for s in summaries for k, v in s.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in NOT_METRICS]
    keys = list(dict.fromkeys(keys))
    return [k for k in SHOWN if k in keys] + [k for k in keys if k not in SHOWN]


def write_tables(out: Path, summaries: list[dict]) -> str:
    """runs.csv and report.csv of the floors' runs (sslkit.stats.sweep and tables, as
    sweep_report.py writes them); returns the markdown table of the protocol's metrics."""
    from sslkit.stats.sweep import build_report
    from sslkit.stats.tables import markdown_table, write_csv, write_runs_csv

    columns = metric_columns(summaries)
    report = build_report([out], columns, group_by=["floor"])
    write_runs_csv(report, out / "runs.csv")
    write_csv(report, out / "report.csv")
    shown = [m for m in SHOWN if m in columns] or columns[:1]
    return markdown_table(build_report([out], shown, group_by=["floor"]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", metavar="key=value", help="train.py's overrides (data, model, eval)")
    p.add_argument("--seeds", default="0", help="seeds, e.g. 0-15 or 0,1,2 (default: 0)")
    p.add_argument("--floors", default=",".join(FLOORS),
                   help=f"comma-separated, of {', '.join(FLOORS)} (default: both)")
    p.add_argument("--out", type=Path, default=Path("runs/floors"), help="where the runs and runs.csv go")
    args = p.parse_args(argv)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        print(f"error: {bad[0]!r}: overrides are key=value, as for train.py", file=sys.stderr)
        return 2
    chosen = [f for f in args.floors.split(",") if f]
    if not chosen or any(f not in FLOORS for f in chosen):
        print(f"error: --floors {args.floors}: choose from {', '.join(FLOORS)} (comma-separated)", file=sys.stderr)
        return 2
    try:
        seeds = parse_seeds(args.seeds)
        from sslkit.runtime.threads import apply as apply_threads

        apply_threads(compose(args.overrides, seeds[0]).threads)
        summaries = []
        for floor in chosen:
            for seed in seeds:
                run_dir = args.out / floor / str(seed)
                if (run_dir / "summary.json").exists():
                    print(f"{floor} seed {seed}: done already ({run_dir})")
                    summaries.append(json.loads((run_dir / "summary.json").read_text()))
                    continue
                summaries.append(measure(floor, seed, args.overrides, run_dir))
                print(f"{floor} seed {seed}: {summaries[-1]['eval_seconds']:.1f} s ({run_dir})", flush=True)
    except (UserError, HydraException, OmegaConfBaseException) as err:
        print(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 2
    print(write_tables(args.out, summaries))
    print(f"wrote {args.out / 'runs.csv'}, {args.out / 'report.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
