"""Exact distributed training: DDP on CPU (gloo, 2 processes) == one process on the global batch.

For every head in configs/loss/ (picked up from the directory, so a new head is covered without
touching this file) the real ContrastiveModule is built from the configs (experiment=smoke, the
real configs/trainer/ddp.yaml with accelerator=cpu, devices=2) and trained for two steps by a real
Lightning Trainer, launched with ``torch.distributed.run`` (free port: ``--standalone``). The same
module trained by one process (configs/trainer/cpu.yaml) on the same global batches is the
reference. Compared, in float64 (``precision=64-true``), at every step:

* the global loss and the gradient of every trainable parameter (after DDP's all-reduce): this
  is what proves that the gather's backward (sum over ranks) followed by DDP's average gives the
  single-process gradient;
* the whole state_dict after each step (parameters after SGD, momentum encoder, queue rows,
  pointer and fill count), identical on both ranks (bitwise) and equal to the single process;
* the batches: rank r's indices are its contiguous slice of the global batch (EpochBatchSampler).

Two steps, so that queue heads also use a non-empty queue and the momentum-updated key encoder
in the loss; the queue is shortened so that step 2 wraps around it. Heads with state take part
whole: their parameters (prototypes) in the gradients compared, their buffers (SwAV's step,
DINO's centre and teacher prototypes) in the states; SwAV's prototypes are frozen for the first
step only, so that one step drops a gradient DDP has all-reduced and the next one uses it; its
queue (one global batch long) is filled by step 1 and used in step 2's codes.

Choices that make the two setups comparable:
* Augmentation: pre-augmented views. The configured ViewAugment draws the views of every image
  once with a seeded generator, the dataset serves them, and the module's augment is replaced by
  one that unpacks them, so both setups see bit-identical views.
* BatchNorm in eval mode (running statistics 0/1: an affine map). torch 2.14's SyncBatchNorm
  refuses CPU tensors, and per-rank batch statistics differ from the global-batch ones by design
  (docs/distributed.md). On GPUs, ``trainer.sync_batchnorm=true`` computes the global statistics.
* SGD without momentum and a constant learning rate, so that updated weights reflect the
  gradient's scale (Adam's first step would hide a factor of 2).

Also here: ``python train.py experiment=smoke trainer=ddp trainer.devices=2
trainer.accelerator=cpu`` end to end (two gloo processes, summary.json from rank 0 only).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "configs"
HEADS = sorted(p.stem for p in (CONFIG_DIR / "loss").glob("*.yaml"))
WORLD, GLOBAL_BATCH, STEPS = 2, 16, 2
# float64 with different summation orders (two half-batches, all-reduce, average)
RTOL, ATOL = 1e-10, 1e-12

# the default run compares one head of each kind of global-batch statistic: in-batch negatives
# (infonce), keys and a queue (moco), the transport plan (gca_uot), batch standardisation and
# cross-correlation (barlow_twins), Sinkhorn codes and prototypes (swav); `make test-all` adds
# every other head (slow: the same code path, one more spawn)
DDP_TWINS = ("barlow_twins", "gca_uot", "infonce", "moco", "swav")


# -- what both setups build ---------------------------------------------------------------------
def compose(head: str, trainer: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import open_dict

    overrides = [
        "experiment=smoke", f"loss={head}", f"trainer={trainer}", "trainer.accelerator=cpu",
        f"data.batch_size={GLOBAL_BATCH}", "optim=sgd", "optim.optimizer.momentum=0.0",
        "optim.optimizer.nesterov=false", "optim.warmup_epochs=0", "optim.final_lr_ratio=1.0",
    ]
    if trainer == "ddp":
        overrides.append(f"trainer.devices={WORLD}")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.logger = None  # its run dir is Hydra's runtime (unset here); no logging needed
        if "queue_size" in cfg.loss:
            cfg.loss.queue_size = GLOBAL_BATCH * 3 // 2  # step 2 wraps around the queue
        if cfg.loss.get("momentum") is not None:
            cfg.loss.momentum = 0.9  # a visible key-encoder update (None: keys from the online net)
        if "freeze_prototypes_iters" in cfg.loss:
            cfg.loss.freeze_prototypes_iters = 1  # SwAV: step 1 frozen under DDP, step 2 trained
        if "queue_length" in cfg.loss:  # SwAV: step 1 fills the queue, step 2's codes use it
            cfg.loss.queue_length, cfg.loss.epoch_queue_starts = GLOBAL_BATCH, 0
        if "freeze_last_layer" in cfg.loss:
            cfg.loss.freeze_last_layer = 0  # DINO: its prototypes' gradient compared too
    return cfg


def make_inputs(path: Path) -> None:
    """Views of ``GLOBAL_BATCH * STEPS`` synthetic images drawn once by the configured augment."""
    import hydra

    cfg = compose("infonce", "cpu")
    data = hydra.utils.instantiate(cfg.data)
    images = data.split("pretrain").images[: GLOBAL_BATCH * STEPS]
    labels = data.split("pretrain").labels[: GLOBAL_BATCH * STEPS]
    augment = hydra.utils.instantiate(cfg.augment)
    views = augment(images, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    torch.save({"views": torch.stack(views, 1).double(), "labels": labels,
                "prior": torch.randn(len(images), 3, generator=gen, dtype=torch.float64)}, path)


class PreAugmented(nn.Module):
    """Stands in for ViewAugment: the batch's ``image`` already holds the views ``[B, V, ...]``."""

    def __init__(self, num_views: int) -> None:
        super().__init__()
        self.num_views = num_views

    def forward(self, images, generator=None):
        return list(images.unbind(1))

    def eval_transform(self, images):
        return images[:, 0]


class ViewsDataset(torch.utils.data.Dataset):
    def __init__(self, inputs: dict) -> None:
        self.inputs = inputs
        self.labels = inputs["labels"]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, idx: list[int]) -> dict:
        index = torch.as_tensor(idx)
        return {"image": self.inputs["views"][index], "label": self.labels[index],
                "prior": self.inputs["prior"][index], "index": index}

    @staticmethod
    def collate(batch: dict) -> dict:
        return batch


def run_steps(head: str, trainer_name: str, inputs: dict, root: Path) -> dict:
    """Train ``STEPS`` steps; return per-step batch indices, loss, gradients and states."""
    import hydra
    import lightning as L

    from sslkit.data.base import ImageDataModule
    from sslkit.training.build import build_module

    class Data(ImageDataModule):
        name, in_chans, image_size, num_classes = "views", 1, 16, 4

        def load_split(self, split: str):
            return ViewsDataset(inputs)

    def snapshot(module) -> dict:
        return {k: v.detach().clone() for k, v in module.state_dict().items()}

    class Recorder(L.Callback):
        def __init__(self) -> None:
            self.steps: list[dict] = []

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            for m in module.modules():  # see the module docstring: BN as an affine map
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
            if self.steps:
                self.steps[-1]["after"] = snapshot(module)
            self.steps.append({"index": batch["index"].clone(), "before": snapshot(module)})

        def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
            self.steps[-1]["grads"] = {n: p.grad.detach().clone()
                                       for n, p in module.named_parameters() if p.grad is not None}

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            self.steps[-1]["loss"] = outputs["loss"].detach().clone()

        def on_train_end(self, trainer, module) -> None:
            self.steps[-1]["after"] = snapshot(module)

    cfg = compose(head, trainer_name)
    L.seed_everything(cfg.seed, verbose=False)
    module = build_module(cfg)
    module.augment = PreAugmented(inputs["views"].shape[1])
    recorder = Recorder()
    trainer = hydra.utils.instantiate(
        cfg.trainer, precision="64-true", max_steps=STEPS, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, callbacks=[recorder],
        default_root_dir=str(root),
    )
    trainer.fit(module, datamodule=Data(batch_size=cfg.data.batch_size, seed=cfg.seed))
    return {"steps": recorder.steps, "world_size": trainer.world_size}


def quiet() -> None:
    import logging

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


# -- the 2-process side: `python -m torch.distributed.run ... tests/test_distributed.py OUT` ------
def worker(out: Path, heads: list[str]) -> None:
    torch.set_num_threads(1)
    quiet()
    rank = int(os.environ["RANK"])
    inputs = torch.load(out / "inputs.pt", weights_only=True)
    for head in heads:
        record = run_steps(head, "ddp", inputs, out / f"root{rank}")
        torch.save(record, out / f"{head}.rank{rank}.pt")


# -- the test -------------------------------------------------------------------------------------
def spawn_and_compare(out: Path, heads: list[str]):
    """Every head of ``heads``: ``STEPS`` steps on 2 ranks (one torchrun spawn) and in one process."""
    make_inputs(out / "inputs.pt")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD}",
         str(Path(__file__).resolve()), str(out), ",".join(heads)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:  # the single-process references, while the two ranks run
        quiet()
        inputs = torch.load(out / "inputs.pt", weights_only=True)
        single = {head: run_steps(head, "cpu", inputs, out / "single") for head in heads}
        log, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.terminate()  # torchrun passes SIGTERM on to its workers
            proc.wait(timeout=60)
    assert proc.returncode == 0, log[-5000:]
    ranks = {head: [torch.load(out / f"{head}.rank{r}.pt", weights_only=True) for r in range(WORLD)]
             for head in heads}
    return single, ranks


@pytest.fixture(scope="module")
def twin_runs(tmp_path_factory):
    return spawn_and_compare(tmp_path_factory.mktemp("ddp"), list(DDP_TWINS))


@pytest.fixture(scope="module")
def other_runs(tmp_path_factory):
    return spawn_and_compare(tmp_path_factory.mktemp("ddp_all"), [h for h in HEADS if h not in DDP_TWINS])


@pytest.fixture
def runs(request, head):
    return request.getfixturevalue("twin_runs" if head in DDP_TWINS else "other_runs")


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if actual.is_floating_point():
        torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL, msg=lambda m: f"{what}: {m}")
    else:
        assert torch.equal(actual, expected), what


@pytest.mark.parametrize("head", [h if h in DDP_TWINS else pytest.param(h, marks=pytest.mark.slow)
                                  for h in HEADS])
def test_ddp_step_equals_single_process(runs, head):
    single, ranks = runs
    ref, dist = single[head], ranks[head]
    assert ref["world_size"] == 1 and all(d["world_size"] == WORLD for d in dist)
    assert len(ref["steps"]) == STEPS and all(len(d["steps"]) == STEPS for d in dist)
    for t in range(STEPS):
        s, r0, r1 = ref["steps"][t], dist[0]["steps"][t], dist[1]["steps"][t]
        # rank r holds the r-th contiguous half of the global batch: all_gather restores it
        assert len(r0["index"]) == len(r1["index"]) == GLOBAL_BATCH // WORLD
        assert torch.equal(torch.cat([r0["index"], r1["index"]]), s["index"]), f"step {t} batch"
        # both ranks: the same global loss, gradients and states, bit for bit
        assert torch.equal(r0["loss"], r1["loss"]), f"step {t}: ranks disagree on the loss"
        for key in ("grads", "after"):
            assert r0[key].keys() == r1[key].keys()
            for name in r0[key]:
                assert torch.equal(r0[key][name], r1[key][name]), f"step {t}: ranks differ in {key} {name}"
        # and they are the single process's
        _close(r0["loss"], s["loss"], f"step {t} loss")
        assert r0["grads"].keys() == s["grads"].keys() and s["grads"]
        for name, g in s["grads"].items():
            _close(r0["grads"][name], g, f"step {t} grad {name}")
        assert r0["after"].keys() == s["after"].keys()
        for name, value in s["after"].items():
            _close(r0["after"][name], value, f"step {t} state {name}")
    # the comparison is not vacuous: the step moved the weights, queue heads filled their queue
    last = ref["steps"][-1]
    moved = [(last["after"][n] - ref["steps"][0]["before"][n]).abs().max() for n in last["grads"]]
    assert max(moved) > 1e-3
    if any(k.endswith("queue.filled") for k in last["after"]):  # step 2 read a queue, now full
        size = last["after"]["queue.keys"].shape[0]
        assert int(last["after"]["queue.filled"]) == size and int(last["before"]["queue.filled"]) > 0
        if head == "swav":  # full before step 2: its codes used it
            assert int(last["before"]["queue.filled"]) == size


def test_twins_are_heads():
    assert set(DDP_TWINS) <= set(HEADS)


def test_train_py_ddp_on_cpu(tmp_path):
    """`trainer=ddp` on a laptop: Lightning starts 2 gloo processes; rank 0 alone writes the
    summary, checkpoints and metrics; the online probe and kNN monitor run across ranks."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "train.py", "experiment=smoke", "trainer=ddp", f"trainer.devices={WORLD}",
         "trainer.accelerator=cpu", "trainer.max_epochs=1", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MEMBER: 2/2" in proc.stdout + proc.stderr
    assert proc.stdout.count("sslkit run summary") == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    # 512 images, global batch 64: 8 steps whatever the number of processes
    assert summary["global_step"] == 8 and 0 <= summary["linear_probe_top1"] <= 1
    # the evaluators' collectives ran (a mismatch between ranks would hang or fail)
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/knn_top1", "val/online_probe_top1", "train/online_probe_loss",
            "val/metrics/encoder_rankme"} <= set(header)
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hydra", "checkpoints", "eval", "hparams.yaml",
                                                          "metrics.csv", "summary.json", "train.log"]


if __name__ == "__main__":
    worker(Path(sys.argv[1]), sys.argv[2].split(","))
