"""fp16 with a gradient scaler: the scaler's planned overflow steps are not failures.

Lightning turns ``precision=16-mixed`` into bf16 on CPU, so this runs the real Lightning fp16
path on CPU by handing the Trainer its ``MixedPrecision("16-mixed", "cpu")`` plugin with a real
``torch.amp.GradScaler``: the same plugin ``trainer.precision=16-mixed`` builds on a GPU."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.plugins.precision import MixedPrecision

from sslkit.parts.guard import NonFiniteError
from sslkit.training.build import build_datamodule, build_module

ROOT = Path(__file__).resolve().parent.parent
torch.set_num_threads(1)


def fit(tmp_path, init_scale: float, *overrides: str, steps: int = 6):
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=smoke", "~logger", *overrides])
    L.seed_everything(0, verbose=False)
    dm = build_datamodule(cfg)
    module = build_module(cfg)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=10**6)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, plugins=[MixedPrecision("16-mixed", "cpu", scaler)],
        max_steps=steps, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    before = {k: v.clone() for k, v in module.online.state_dict().items()}
    trainer.fit(module, datamodule=dm)
    return module, scaler, before


def test_scaler_overflow_steps_do_not_stop_the_run(tmp_path):
    # 2**40 overflows fp16 gradients: the scaler skips those steps and halves its scale
    module, scaler, before = fit(tmp_path, 2.0**40, steps=30)
    assert scaler.get_scale() < 2.0**40  # overflow steps happened (the scale backed off)
    assert module.guard.skipped == 0  # and the guard did not count them
    assert module.trainer.global_step == 30
    moved = [k for k, v in module.online.state_dict().items()
             if v.is_floating_point() and not torch.equal(v, before[k])]
    assert moved  # once the scale fits, steps update the weights


def test_real_nonfinite_still_stops_under_the_scaler(tmp_path):
    with pytest.raises(NonFiniteError, match="non-finite loss"):
        fit(tmp_path, 2.0**8, "optim.optimizer.lr=1e38")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_all_finite_finds_one_bad_element_anywhere(bad):
    from sslkit.parts.guard import all_finite

    shapes = [(64, 32, 3, 3), (64,), (10, 2304), (1,)]
    tensors = [torch.randn(s) for s in shapes]
    tensors[0] = tensors[0].to(memory_format=torch.channels_last)
    assert all_finite(tensors + [None])
    for i, t in enumerate(tensors):
        for corner in (0, -1):
            broken = [x.clone() for x in tensors]
            broken[i][(corner,) * t.ndim] = bad
            assert not all_finite(broken)
            assert not all_finite([b.bfloat16() for b in broken])


def test_all_finite_of_huge_finite_values_whose_norm_overflows():
    from sslkit.parts.guard import all_finite

    huge = [torch.full((1000,), 1e37), torch.full((3,), 3e38)]
    assert torch.linalg.vector_norm(huge[0]).isinf()  # the fast path cannot decide these
    assert all_finite(huge)
    assert all_finite([]) and all_finite([None])
