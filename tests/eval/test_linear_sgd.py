"""Standard linear protocol on a real (untrained) smoke encoder and synthetic images."""

from __future__ import annotations

import torch

from sslkit.eval.context import EvalContext
from sslkit.eval.linear_sgd import LinearSGD


def test_sgd_probe_learns_and_leaves_the_encoder_alone(smoke_parts, tmp_path):
    _, module, dm = smoke_parts
    before = {k: v.clone() for k, v in module.state_dict().items()}
    ctx = EvalContext(module=module, datamodule=dm, run_dir=tmp_path, seed=0)
    out = LinearSGD(epochs=4, batch_size=64, lr=0.1)(ctx)
    losses = out["train_loss_per_epoch"]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert out["top1"] > 0.5  # 4 synthetic classes: chance is 0.25
    assert len(out["per_class_top1"]) == 4 and "top5" not in out
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # frozen, BatchNorm stats too
    again = LinearSGD(epochs=4, batch_size=64, lr=0.1)(ctx)
    assert again["top1"] == out["top1"]  # seeded
