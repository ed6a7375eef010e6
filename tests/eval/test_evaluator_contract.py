"""Contract every offline evaluator config meets: ``configs/eval/NAME.yaml`` builds its
evaluator, which runs on the real smoke module and data and returns a JSON-able dict holding the
keys it declares in ``result_keys``. A new evaluator config is tested as soon as it exists (with
its own defaults unless SMOKE shrinks them); see docs/extending.md."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from sslkit.training.config import CONFIG_DIR
from sslkit.eval.context import EvalContext
from sslkit.eval.runner import build_evaluators, run_evaluators

EVALUATORS = sorted(p.stem for p in (CONFIG_DIR / "eval").glob("*.yaml"))
# overrides that keep an evaluator's defaults at smoke scale (seconds); others run as configured
SMOKE = {
    "finetune": ["eval.finetune.epochs=1", "eval.finetune.lr_grid=[0.05]"],
    "linear_sgd": ["eval.linear_sgd.epochs=1"],
    "transfer": ["eval.transfer.data=synthetic", "eval.transfer.overrides={in_chans:3,mean:[0.5,0.5,0.5],std:[0.25,0.25,0.25]}"],
    "semi": ["eval.semi.draws=2", "eval.semi.finetune.epochs=1", "eval.semi.finetune.lr_grid=[0.05]"],
    "metrics": ["eval.metrics.num_samples=64"],
    "plots": ["eval.plots.max_points=100", "eval.plots.n_jobs=1"],
    "robust": ["eval.robust.test_size=16", "eval.robust.alf.train_size=16",
               "eval.robust.aff.train_size=16", "eval.robust.slf.epochs=2"],
}

# data an evaluator needs beyond the smoke data's (its own data module, same module)
DATA = {"domain": ["data.domain_shift=[plain,invert]"]}


def test_evaluators_found():
    assert {"linear", "knn", "metrics", "robust", "plots"} <= set(EVALUATORS)
    assert set(SMOKE) | set(DATA) <= set(EVALUATORS)


@pytest.mark.parametrize("name", EVALUATORS)
def test_evaluator_contract(name, smoke_parts, tmp_path):
    assert "_target_" in OmegaConf.load(CONFIG_DIR / "eval" / f"{name}.yaml"), (
        f"configs/eval/{name}.yaml names no _target_: an offline evaluator is a callable "
        "evaluator(ctx) -> dict built from it")
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"eval=[{name}]", *SMOKE.get(name, [])])
    evaluator = build_evaluators(cfg)[name]
    keys = getattr(evaluator, "result_keys", None)
    assert keys, (f"{type(evaluator).__name__} declares no result_keys: give it the top-level keys "
                  "every result has (e.g. result_keys = ('top1', 'seconds'))")
    _, module, dm = smoke_parts
    if name in DATA:
        from sslkit.training.build import build_datamodule

        GlobalHydra.instance().clear()
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            dm = build_datamodule(compose("train", overrides=["experiment=smoke", *DATA[name]]))
        dm.setup("validate")
    ctx = EvalContext(module=module, datamodule=dm, run_dir=tmp_path, seed=0)
    result = run_evaluators({name: evaluator}, ctx)[name]
    assert isinstance(result, dict)
    missing = sorted(set(keys) - set(result))
    assert not missing, f"{name}: the result lacks its declared keys {missing}"
    assert json.loads((tmp_path / "eval" / f"{name}.json").read_text()) == result
