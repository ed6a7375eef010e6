"""``model.loss_scope``: under DDP (gloo, 2 processes) ``local`` hands each rank's head its own
batch, as the official GCA and decoupled-uniformity code compute the loss per GPU; ``global``
(the default, tests/test_distributed.py) hands every rank the gathered batch.

Checked, in float64, on one step of pre-augmented views: rank r's local loss equals the head
applied to the projections of rank r's samples alone (computed here in one process by the same
module), differs from the loss of the global batch, and the gradient after DDP's average is the
gradient of the mean of the per-rank losses.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from test_distributed import (ROOT, WORLD, PreAugmented, ViewsDataset, compose, make_inputs,
                              quiet)

HEADS = ("dunif", "gca_ince")


def build(head: str, trainer: str, scope: str):
    import lightning as L

    from sslkit.training.build import build_module

    cfg = compose(head, trainer)
    cfg.model.loss_scope = scope
    L.seed_everything(cfg.seed, verbose=False)
    module = build_module(cfg)
    module.augment = PreAugmented(2)
    return cfg, module


def one_step(head: str, inputs: dict, root: Path) -> dict:
    import hydra
    import lightning as L

    from sslkit.data.base import ImageDataModule

    class Data(ImageDataModule):
        name, in_chans, image_size, num_classes = "views", 1, 16, 4

        def load_split(self, split: str):
            return ViewsDataset(inputs)

    record: dict = {}

    class Recorder(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            for m in module.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
            record["index"] = batch["index"].clone()

        def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
            record["grads"] = {n: p.grad.detach().clone()
                               for n, p in module.named_parameters() if p.grad is not None}

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            record["loss"] = outputs["loss"].detach().clone()

    cfg, module = build(head, "ddp", "local")
    trainer = hydra.utils.instantiate(
        cfg.trainer, precision="64-true", max_steps=1, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, callbacks=[Recorder()],
        default_root_dir=str(root),
    )
    trainer.fit(module, datamodule=Data(batch_size=cfg.data.batch_size, seed=cfg.seed))
    return record


def worker(out: Path) -> None:
    torch.set_num_threads(1)
    quiet()
    rank = int(os.environ["RANK"])
    inputs = torch.load(out / "inputs.pt", weights_only=True)
    for head in HEADS:
        torch.save(one_step(head, inputs, out / f"root{rank}"), out / f"{head}.rank{rank}.pt")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("scope")
    make_inputs(out / "inputs.pt")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD}",
         str(Path(__file__).resolve()), str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    inputs = torch.load(out / "inputs.pt", weights_only=True)
    return inputs, {h: [torch.load(out / f"{h}.rank{r}.pt", weights_only=True) for r in range(WORLD)]
                    for h in HEADS}


@pytest.mark.parametrize("head", HEADS)
def test_local_scope_is_the_per_rank_loss(ranks, head):
    inputs, records = ranks
    _, module = build(head, "cpu", "global")
    module.double()
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    per_rank = []
    for r in range(WORLD):
        views = inputs["views"][records[head][r]["index"]]
        _, z = module.embed_views(module.online, list(views.unbind(1)))
        per_rank.append(z)
    losses = [module.head(z).loss for z in per_rank]
    global_loss = module.head(torch.cat(per_rank)).loss
    mean = sum(losses) / WORLD
    mean.backward()
    for r in range(WORLD):
        torch.testing.assert_close(records[head][r]["loss"], losses[r].detach(), rtol=1e-10, atol=1e-12)
        assert abs(float(records[head][r]["loss"]) - float(global_loss.detach())) > 1e-4
    # DDP averages the ranks' gradients: the gradient of the mean per-rank loss
    grads = records[head][0]["grads"]
    assert grads
    for name, p in module.named_parameters():
        if name in grads:
            torch.testing.assert_close(grads[name], p.grad, rtol=1e-8, atol=1e-12,
                                       msg=lambda m, n=name: f"grad {n}: {m}")
            assert torch.equal(grads[name], records[head][1]["grads"][name])


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
