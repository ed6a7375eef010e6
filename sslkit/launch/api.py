"""sslkit as a library: compose a config from overrides, train and evaluate, without the Hydra CLI.

    >>> import sslkit
    >>> summary = sslkit.train(overrides=["experiment=smoke", "loss=cacr"])  # doctest: +SKIP
    >>> summary["linear_probe_top1"]  # doctest: +SKIP
    >>> results = sslkit.evaluate(summary["checkpoint"], ["eval=[knn]"])  # doctest: +SKIP
    >>> results["knn"]["top1"]  # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict


def compose(overrides: Sequence[str] = (), run_dir: str | Path | None = None) -> tuple[DictConfig, Path, dict]:
    """The config ``python train.py OVERRIDES`` would run, its run dir and its group choices.

    Hydra's ``${hydra:...}`` interpolations (run dir, chosen loss) resolve as in the CLI: the
    Hydra config of this job is registered before returning. ``run_dir`` defaults to the
    config's ``hydra.run.dir`` (relative to the working directory).
    """
    from hydra.core.hydra_config import HydraConfig

    from sslkit.training.config import choice_errors, compose_config, expand_eval_all, null_groups

    overrides = null_groups(expand_eval_all(list(overrides)))
    choice_errors(overrides)
    cfg = compose_config("train", overrides, return_hydra_config=True)
    if run_dir is None:  # hydra.run.dir reads ${hydra:runtime.choices.loss}: register a copy first
        HydraConfig.instance().set_config(copy.deepcopy(cfg))
        run_dir = HydraConfig.get().run.dir
    run_dir = Path(run_dir).absolute()
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    choices = dict(OmegaConf.to_container(cfg.hydra.runtime.choices))
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, run_dir, choices


def train(overrides: Sequence[str] = (), run_dir: str | Path | None = None) -> dict:
    """Run ``python train.py OVERRIDES`` in this process and return its summary (the content of
    ``summary.json``: ``linear_probe_top1``, ``knn_top1``, ``wall_seconds``, ``run_dir``, ...).

    Bad input raises ``sslkit.errors.UserError`` (a ``ConfigError``, ``DataError`` or
    ``CheckpointError``) before any work. The resolved config is written to
    ``RUN_DIR/.hydra/config.yaml`` as the CLI does.
    """
    from sslkit.launch.run import train as run_train
    from sslkit.training.schema import validate

    cfg, run_dir, choices = compose(overrides, run_dir)
    validate(cfg)  # before anything is written
    saved = run_dir / ".hydra"
    saved.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, saved / "config.yaml")
    (saved / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
    return run_train(cfg, run_dir, choices)


def from_pretrained(folder: str | Path):
    """The encoder of a model folder written by ``python scripts/export.py checkpoint=PATH
    format=hf out=FOLDER`` (config.json, model.safetensors), its weights loaded strictly, in
    eval mode. A folder that is not one raises ``sslkit.errors.CheckpointError``."""
    from sslkit.training.hf_export import from_pretrained as load

    return load(folder)


def evaluate(checkpoint: str | Path | Sequence[str | Path], overrides: Sequence[str] = ()):
    """Run ``python scripts/evaluate.py checkpoint=CHECKPOINT OVERRIDES`` in this process and
    return the results: evaluator name -> its result dict (what ``eval/NAME.json`` holds), or a
    list of them when ``checkpoint`` is a list.

    ``overrides`` select and configure evaluators (``eval=[linear,knn]``, ``eval.knn.k=[10]``),
    change the checkpoint's saved config (``data.root=/data``) or the evaluation's own keys
    (``threads``, ``eval_device``, ``out``, ``aggregate_out``; configs/evaluate.yaml). A missing
    or foreign checkpoint or a bad setting raises ``sslkit.errors.UserError`` before any work.
    """
    from sslkit.training.config import choice_errors, compose_config, expand_eval_all
    from sslkit.launch.eval_cli import evaluate as run_evaluate, run_config_overrides

    many = not isinstance(checkpoint, (str, Path))
    overrides = run_config_overrides(expand_eval_all(list(overrides)))
    choice_errors(overrides)
    cfg = compose_config("evaluate", overrides)
    with open_dict(cfg):
        cfg.checkpoint = [str(p) for p in checkpoint] if many else str(checkpoint)
    results = [result for _, result in run_evaluate(cfg)]
    return results if many else results[0]
