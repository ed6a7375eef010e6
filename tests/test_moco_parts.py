"""The parts of the training module that heads switch on: queue size against the data, shuffle BN
of the key encoder, which views each head computes, the momentum encoder's schedule, keys from
the online network without a key network, and the hooks of heads with state (prototypes, DINO's
centre)."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from sslkit.errors import ConfigError
from sslkit.parts.queue import check_queue_fits
from tests.test_train import train

torch.set_num_threads(1)


def test_queue_must_be_shorter_than_the_data():
    check_queue_fits(4096, 60000, "fashion_mnist")
    check_queue_fits(None, 10, "x")  # heads without a queue
    check_queue_fits(511, 512, "synthetic")
    for size in (512, 65536):
        with pytest.raises(ConfigError, match=f"loss.queue_size={size} is not below the 512") as err:
            check_queue_fits(size, 512, "synthetic")
        assert "loss.queue_size=128" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="set loss.queue_size=4096"):
        check_queue_fits(65536, 50000, "cifar10")


@pytest.mark.parametrize("loss", ["moco", "cacr_moco"])
def test_train_refuses_a_queue_as_long_as_the_data_before_any_work(loss, tmp_path):
    # the default 4096 exceeds the 512 smoke images
    proc = train("experiment=smoke", f"loss={loss}", f"hydra.run.dir={tmp_path}")
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr[-2000:]
    assert "loss.queue_size=4096 is not below the 512 pretraining images" in lines[0]
    assert not (tmp_path / "checkpoints").exists()


# -- which views each head computes --------------------------------------------------------------
def compose_cfg(*overrides: str):
    from hydra import compose, initialize_config_dir

    from tests.test_train import ROOT

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=["experiment=smoke", "~logger", *overrides])


def head_of(name: str, **kwargs):
    import hydra
    from omegaconf import OmegaConf

    from tests.test_train import ROOT

    cfg = OmegaConf.load(ROOT / "configs" / "loss" / f"{name}.yaml")
    cfg.update(kwargs)
    return hydra.utils.instantiate(cfg)


def test_view_plans_of_the_heads():
    from sslkit.parts.views import ViewPlan

    def plan(name, views=2, local=0, **kw):
        p = ViewPlan(head_of(name, **kw), views + local, views)
        return p.query, p.key

    assert plan("moco") == ([0], [1])
    assert plan("moco", views=3) == ([0], [1, 2])
    assert plan("infonce", views=3) == ([0, 1, 2], [])
    assert plan("cacr_moco", views=3) == ([0, 1, 2], [0, 1, 2])
    assert plan("cacr_mocov3", local=4) == (list(range(6)), [0, 1])
    assert plan("cacr_mocov3", local=2, full_mode=True) == (list(range(4)), list(range(4)))
    assert plan("cacr", local=2) == (list(range(4)), [])  # local crops as queries
    for name in ("moco", "cacr_moco"):
        with pytest.raises(ConfigError, match=r"local crops \[2, 3\]; keys come from the 2 global"):
            plan(name, local=2)
    with pytest.raises(ConfigError, match="loss.n_global=2 but augment.views=3.*set loss.n_global=3"):
        plan("cacr_mocov3", views=3)

    class FirstViewOnly(torch.nn.Module):
        query_views = slice(0, 1)

    with pytest.raises(ConfigError, match=r"uses none of augmented views \[1, 2\]"):
        ViewPlan(FirstViewOnly(), 3, 3)


@pytest.mark.parametrize("overrides,needle", [
    (["loss=moco", "loss.queue_size=256", "augment.local_views=2", "augment.local_crop_size=8"],
     "MoCo would take keys (and queue entries) of local crops [2, 3]"),
    (["loss=cacr_mocov3", "augment.views=3"], "loss.n_global=2 but augment.views=3"),
])
def test_train_refuses_local_keys_and_a_wrong_n_global_before_any_work(overrides, needle, tmp_path):
    from tests.test_train import one_line_error

    msg = one_line_error(train("experiment=smoke", *overrides, f"hydra.run.dir={tmp_path}"))
    assert needle in msg
    assert not (tmp_path / "checkpoints").exists()


def count_rows(net: torch.nn.Module) -> list[int]:
    rows: list[int] = []
    net.register_forward_pre_hook(lambda _m, args: rows.append(args[0].shape[0]))
    return rows


def old_path(module, image):
    """What the module computed before heads declared their views: the online and the key
    network on every view, each as one batch."""
    views = module.augment(image, generator=module.augment_generator(image.device, 0))
    h, z = module.embed_views(module.online, views)
    if module.predictor is not None:
        b, v, d = z.shape
        z = module.predictor(z.reshape(b * v, d)).reshape(b, v, -1)
    with torch.no_grad():
        _, k = module.embed_views(module.key_net, views)
    return z, k


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
@pytest.mark.parametrize("loss,overrides", [
    ("moco", ["loss.queue_size=256"]),
    ("moco", ["loss.queue_size=256", "augment.views=3"]),
    ("cacr_mocov3", ["augment.local_views=2", "augment.local_crop_size=8"]),
])
def test_module_computes_only_the_views_its_head_reads_and_the_loss_is_unchanged(loss, overrides):
    """BatchNorm in eval mode (per-sample outputs do not depend on which samples share a batch),
    float64: the loss and every gradient equal those of the all-views computation, while the
    encoders see only the query views (online) and the key views (momentum encoder)."""
    from sslkit.training.build import build_module
    from tests.losses.test_moco import ref_moco

    cfg = compose_cfg(f"loss={loss}", *overrides)
    torch.manual_seed(0)
    module = build_module(cfg).double().eval()
    batch, aug = 12, module.augment
    image = torch.randint(0, 256, (batch, 1, 16, 16), dtype=torch.uint8)
    if module.queue is not None:
        module.queue.push(torch.nn.functional.normalize(torch.randn(40, 16, dtype=torch.float64), dim=-1))
    queue = module.queue.entries() if module.queue is not None else None  # the step pushes keys
    online_rows, key_rows = count_rows(module.online.encoder), count_rows(module.key_net.net.encoder)
    new = module.training_step({"image": image, "label": torch.zeros(batch, dtype=torch.long)}, 0)
    new_grads = torch.autograd.grad(new["loss"], list(module.online.parameters()), allow_unused=True)
    # (moco's key encoder runs in shuffle-BN groups: count rows, not calls)
    if loss == "moco":  # query view 0 alone; keys of the other global views
        assert online_rows == [batch] and sum(key_rows) == batch * (aug.views - 1)
        # shuffle BN: 8 groups, at most one per two keys
        assert len(key_rows) == min(8, sum(key_rows) // 2)
    else:  # every view a query (global and local batches); keys of the global crops only
        assert online_rows == [batch * aug.views, batch * aug.local_views]
        assert key_rows == [batch * aug.views]  # no shuffle BN (MoCo v3): one key batch
    online_rows.clear(), key_rows.clear()

    z, k = old_path(module, image)
    if loss == "moco":
        old = ref_moco(z, k, queue, module.head.temperature)
    else:
        old = module.head(z, k=k).loss
    old_grads = torch.autograd.grad(old, list(module.online.parameters()), allow_unused=True)
    assert sum(online_rows) == sum(key_rows) == batch * aug.num_views  # before: every view, twice
    torch.testing.assert_close(new["loss"], old, rtol=1e-12, atol=1e-12)
    assert old.abs() > 0
    for a, b in zip(new_grads, old_grads):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


# -- momentum schedule, online keys, heads with state ---------------------------------------------
@pytest.mark.parametrize("loss,override,expected", [
    ("byol", None, "cosine"), ("mocov3", None, "cosine"), ("dino", None, "cosine"),
    ("moco", None, "constant"), ("cacr_mocov3", None, "constant"),
    ("byol", "constant", "constant"), ("moco", "cosine", "cosine"),
])
def test_momentum_schedule_is_the_heads_unless_the_config_sets_one(loss, override, expected):
    from sslkit.training.build import build_module

    extra = [f"model.momentum_schedule={override}"] if override else []
    extra += ["loss.queue_size=256"] if loss == "moco" else []
    module = build_module(compose_cfg(f"loss={loss}", *extra))
    assert module.key_net.schedule == module.momentum_schedule == expected


def fit(cfg, steps: int, callbacks=(), module=None):
    """Train the module of ``cfg`` (smoke data) for ``steps`` optimiser steps in this process;
    returns the module."""
    import hydra

    from sslkit.training.build import build_datamodule, build_module

    L.seed_everything(cfg.seed, verbose=False)
    module = module or build_module(cfg)
    trainer = hydra.utils.instantiate(
        cfg.trainer, max_steps=steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks))
    trainer.fit(module, datamodule=build_datamodule(cfg))
    return module


@pytest.mark.filterwarnings("ignore")
def test_momentum_of_the_first_and_last_step_and_head_after_step():
    """BYOL's cosine schedule over the K = 8 steps of one smoke epoch: tau_base at step 0,
    1 - (1 - tau_base)(cos(pi (K-1)/K) + 1)/2 at the last (the official schedules index the step
    about to be taken), and the head's after_step receives the same coefficient. The update
    follows the optimiser step before any callback's on_train_batch_end, where step-interval
    checkpoints are written."""
    import math

    from sslkit.training.build import build_module

    cfg = compose_cfg("loss=byol", "trainer.max_epochs=1")
    module = build_module(cfg)
    used, after = [], []
    update = module.key_net.update
    module.key_net.update = lambda online, progress: used.append(update(online, progress)) or used[-1]
    module.head.after_step = lambda momentum=None: after.append(momentum)
    seen = []

    class AtBatchEnd(L.Callback):  # where a step-interval checkpoint is written
        def on_train_batch_start(self, trainer, m, batch, batch_idx):
            seen.append([m.key_net.net.projector[0].weight.detach().clone()])

        def on_train_batch_end(self, trainer, m, outputs, batch, batch_idx):
            seen[-1] += [m.key_net.net.projector[0].weight.detach().clone(),
                         m.online.projector[0].weight.detach().clone()]

    fit(cfg, 8, [AtBatchEnd()], module=module)
    base, k = 0.99, 8
    expected = [1 - (1 - base) * (math.cos(math.pi * t / k) + 1) / 2 for t in range(k)]
    assert used[0] == base and used == pytest.approx(expected, abs=1e-15) and after == used
    # callbacks at the batch's end (checkpoints) see the momentum encoder already updated
    for m, (key_before, key_after, online_after) in zip(used, seen):
        torch.testing.assert_close(key_after, m * key_before + (1 - m) * online_after)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
@pytest.mark.parametrize("loss", ["simsiam", "nnclr"])
def test_keys_from_the_online_network_without_a_key_network(loss):
    """momentum = None: k are the online projections of the views (before the predictor),
    detached; no key network, one online forward; NNCLR's support set takes them (view 0,
    normalised)."""
    from sslkit.training.build import build_module

    extra = ["loss.queue_size=256"] if loss == "nnclr" else []
    torch.manual_seed(0)
    module = build_module(compose_cfg(f"loss={loss}", *extra)).double().eval()
    assert module.key_net is None and module.momentum_schedule is None
    assert not any("key_net" in k for k in module.state_dict())
    batch = 12
    image = torch.randint(0, 256, (batch, 1, 16, 16), dtype=torch.uint8)
    if module.queue is not None:
        module.queue.push(torch.nn.functional.normalize(torch.randn(40, 16, dtype=torch.float64), dim=-1))
    queue = module.queue.entries() if module.queue is not None else None
    rows = count_rows(module.online.encoder)
    out = module.training_step({"image": image, "label": torch.zeros(batch, dtype=torch.long)}, 0)
    assert rows == [batch * module.augment.num_views]  # every view once, through the online network
    views = module.augment(image, generator=module.augment_generator(image.device, 0))
    _, z = module.embed_views(module.online, views)
    b, v, d = z.shape
    p = module.predictor(z.reshape(b * v, d)).reshape(b, v, -1)
    extras = {"k": z.detach()} | ({"queue": queue} if queue is not None else {})
    torch.testing.assert_close(out["loss"], module.head(p, **extras).loss, rtol=1e-12, atol=1e-12)
    if loss == "nnclr":
        torch.testing.assert_close(module.queue.entries()[-batch:],
                                   torch.nn.functional.normalize(z[:, 0].detach(), dim=-1))
    # the gradient reaches the online network only through the predictions: the same as the
    # loss with explicitly detached targets
    new = torch.autograd.grad(out["loss"], list(module.online.parameters()))
    ref = torch.autograd.grad(module.head(p, **extras).loss, list(module.online.parameters()))
    for a, r in zip(new, ref):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-12)


@pytest.mark.filterwarnings("ignore")
def test_swav_prototypes_trained_after_their_frozen_steps():
    """The prototypes are sized at construction, optimised with the rest, frozen (gradient
    dropped after the backward) for freeze_prototypes_iters steps, renormalised in place, and
    the head sees the step of each forward."""
    from sslkit.training.build import build_module

    cfg = compose_cfg("loss=swav", "loss.freeze_prototypes_iters=2", "loss.num_prototypes=30")
    module = build_module(cfg)
    w = module.head.prototypes.weight
    assert tuple(w.shape) == (30, 16)
    seen, weights = [], []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, m, batch, batch_idx):
            weights.append(w.detach().clone())

        def on_before_optimizer_step(self, trainer, m, optimizer):
            seen.append((int(m.head.step), w.grad is not None))
            assert any(q is w for g in optimizer.param_groups for q in g["params"])

    fit(cfg, 4, [Record()], module=module)
    weights.append(w.detach().clone())
    assert seen == [(0, False), (1, False), (2, True), (3, True)]
    unit = torch.nn.functional.normalize(weights[0], dim=1)
    torch.testing.assert_close(weights[1], unit)  # renormalised, not trained
    torch.testing.assert_close(weights[2], unit)
    assert not torch.allclose(weights[3], weights[2])  # trained from step 2
    assert torch.allclose(w.norm(dim=1)[:5], torch.ones(5), atol=0.1)


@pytest.mark.filterwarnings("ignore")
def test_dino_last_layer_frozen_in_epoch_zero_centre_and_teacher_follow():
    """Epoch 0: the student's prototypes are not updated; epoch 1: they are. After every step the
    teacher prototypes move by the momentum encoder's coefficient of that step and the centre
    leaves zero; the teacher temperature follows the epoch."""
    from sslkit.training.build import build_module

    cfg = compose_cfg("loss=dino", "loss.out_dim=64", "loss.warmup_teacher_temp_epochs=2")
    module = build_module(cfg)
    head = module.head
    states = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, m, batch, batch_idx):
            states.append({"w": head.prototypes.weight.detach().clone(),
                           "t": head.prototypes.teacher_weight.clone(),
                           "c": head.center.center.clone(), "epoch": trainer.current_epoch})

    ms = []
    update = module.key_net.update
    module.key_net.update = lambda online, progress: ms.append(update(online, progress)) or ms[-1]
    fit(cfg, 10, [Record()], module=module)  # 8 steps a smoke epoch: 2 steps of epoch 1
    states.append({"w": head.prototypes.weight.detach().clone(),
                   "t": head.prototypes.teacher_weight.clone(), "c": head.center.center.clone()})
    for i in range(8):  # epoch 0: frozen
        assert torch.equal(states[i + 1]["w"], states[0]["w"]), i
    assert not torch.equal(states[9]["w"], states[8]["w"])  # first step of epoch 1 trains it
    for i in range(10):
        expected = ms[i] * states[i]["t"] + (1 - ms[i]) * states[i + 1]["w"]
        torch.testing.assert_close(states[i + 1]["t"], expected, rtol=1e-6, atol=1e-7)
    assert torch.count_nonzero(states[0]["c"]) == 0 and torch.count_nonzero(states[1]["c"]) > 0
    assert int(head.epoch) == 1 and head.teacher_temperature() == head.teacher_temp


# -- shuffle BN ----------------------------------------------------------------------------------
def per_sample(x):
    return x * 2.0, x + 1.0  # a tuple, like Backbone's (features, projections)


def normalised(x):
    return (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)


def test_shuffle_restores_the_order_exactly():
    from sslkit.parts.shuffle_bn import ShuffleBN

    x = torch.randn(16, 5, dtype=torch.float64)
    for groups in (1, 3, 4, 8, 100):
        out = ShuffleBN(groups)(per_sample, x, torch.Generator().manual_seed(groups))
        assert all(torch.equal(a, b) for a, b in zip(out, per_sample(x)))
    with pytest.raises(ValueError, match="shuffle_bn_groups"):
        ShuffleBN(0)


def test_split_groups_have_their_own_statistics():
    from sslkit.parts.shuffle_bn import ShuffleBN

    bn = torch.nn.BatchNorm1d(3, affine=False).double().train()
    x = torch.randn(16, 3, dtype=torch.float64) * 3 + torch.arange(16, dtype=torch.float64)[:, None]
    out = ShuffleBN(4)(bn, x, torch.Generator().manual_seed(7))
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(7))
    groups = perm.tensor_split(4)
    for group in groups:  # each key normalised with the mean / variance of its random group
        torch.testing.assert_close(out[group], normalised(x[group]), rtol=1e-6, atol=1e-6)
    # the groups are random, not the contiguous blocks an unshuffled split would make, and not
    # the whole batch the queries are normalised with
    contiguous = [set(range(i, i + 4)) for i in range(0, 16, 4)]
    assert any(set(g.tolist()) not in contiguous for g in groups)
    assert not torch.allclose(out, normalised(x), atol=1e-3)
    # at most half the batch: groups of two samples
    small = ShuffleBN(8)(bn, x[:6], torch.Generator().manual_seed(1))
    pairs = torch.randperm(6, generator=torch.Generator().manual_seed(1)).tensor_split(3)
    for pair in pairs:
        torch.testing.assert_close(small[pair], normalised(x[:6][pair]), rtol=1e-6, atol=1e-6)


WORLD, LOCAL = 2, 4


def ddp_inputs():
    return torch.randn(WORLD * LOCAL, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2


def ddp_worker(out: Path) -> None:
    import torch.distributed as dist

    from sslkit.parts.shuffle_bn import ShuffleBN

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    mine = ddp_inputs()[rank * LOCAL:(rank + 1) * LOCAL]
    bn = torch.nn.BatchNorm1d(3, affine=False).double().train()
    result = {}
    for groups in (2, 4):  # one and two groups per rank
        gen = torch.Generator().manual_seed(100 + rank)  # ranks draw differently; rank 0's wins
        result[f"same{groups}"] = ShuffleBN(groups)(per_sample, mine, gen)
        gen = torch.Generator().manual_seed(100 + rank)
        result[f"bn{groups}"] = ShuffleBN(groups)(bn, mine, gen)
    torch.save(result, out / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_cross_rank_shuffle_two_processes(tmp_path):
    """The official builder's shuffle: keys normalised with the samples the rank-0 permutation
    sends to a rank (not the rank's own batch), returned to their rank in their order."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD}",
         str(Path(__file__).resolve()), str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    x = ddp_inputs()
    perm = torch.randperm(WORLD * LOCAL, generator=torch.Generator().manual_seed(100))
    for groups in (2, 4):
        same = [torch.cat([r[f"same{groups}"][i] for r in ranks]) for i in range(2)]
        assert all(torch.equal(a, b) for a, b in zip(same, per_sample(x)))
        got = torch.cat([r[f"bn{groups}"] for r in ranks])
        per_rank = perm.view(WORLD, LOCAL)
        for rank_samples in per_rank:
            for group in rank_samples.tensor_split(groups // WORLD):
                torch.testing.assert_close(got[group], normalised(x[group]), rtol=1e-6, atol=1e-6)
    # the permutation moved samples across ranks: a key is not normalised with its rank's batch
    assert set(per_rank[0].tolist()) != set(range(LOCAL))


if __name__ == "__main__":
    ddp_worker(Path(sys.argv[1]))
