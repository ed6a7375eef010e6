"""Robust pretraining parts (sslkit/robust): the PGD attack, the divergences, SAM, and the
adversarial objective of a real module built from the configs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sslkit.errors import ConfigError
from sslkit.robust.attack import PGD
from sslkit.robust.divergence import AdversarialDivergence, SimilarityKL, SquaredDistance
from sslkit.robust.sam import perturbed, sam_perturbation

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def build(*overrides: str):
    """A ContrastiveModule of ``experiment=smoke`` with ``overrides``, and a batch of views."""
    import lightning as L
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from sslkit.training.build import build_module

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=smoke", *overrides])
    with open_dict(cfg):
        cfg.logger = None
    L.seed_everything(0, verbose=False)
    module = build_module(cfg)
    images = torch.randint(0, 256, (8, 1, 16, 16), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    views = module.augment(images, generator=torch.Generator().manual_seed(1))
    return module, views


def robust_loss(module, views, generator_seed: int = 2):
    h, z = module.embed_views(module.online, views)
    return module.robust(module, views, h, z, {},
                         generator=torch.Generator().manual_seed(generator_seed))


# -- the attack ----------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_matches_closed_form_on_a_linear_objective(norm):
    """For L = <w, x + d> the worst case in the ball is eps*sign(w) (l-inf) or eps*w/|w| (l2);
    pixels at 0.5 and eps < 0.5 keep the box inactive."""
    gen = torch.Generator().manual_seed(0)
    x = torch.full((3, 1, 4, 4), 0.5, dtype=torch.float64)
    w = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    eps = 0.1
    attack = PGD(norm, eps=eps, step_size=0.05 if norm == "linf" else eps, steps=3,
                 random_start=False)
    (d,) = attack(lambda ds: (w * (x + ds[0])).sum(), [x])
    if norm == "linf":
        expected = eps * w.sign()
    else:
        expected = eps * w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(d, expected)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_stays_in_the_ball_and_the_box(norm, random_start):
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(6, 3, 5, 5, generator=gen)
    x[0] = 0.0
    x[1] = 1.0
    target = torch.randn(x.shape, generator=gen)
    eps = 8 / 255 if norm == "linf" else 0.5
    attack = PGD(norm, eps=eps, step_size=eps / 2, steps=7, random_start=random_start)
    (d,) = attack(lambda ds: ((x + ds[0] - target) ** 3).sum(), [x],
                  generator=torch.Generator().manual_seed(4))
    adv = x + d
    assert adv.min() >= 0 and adv.max() <= 1
    if norm == "linf":
        assert d.abs().max() <= eps + 1e-6
        assert d.abs().max() > eps / 2  # it moved
    else:
        norms = d.flatten(1).norm(dim=1)
        assert (norms <= eps + 1e-5).all() and norms.max() > eps / 2


def test_pgd_eps_zero_and_bad_settings():
    x = torch.rand(2, 1, 3, 3)
    (d,) = PGD("linf", eps=0.0, steps=5)(lambda ds: (x + ds[0]).sum(), [x])
    assert torch.equal(d, torch.zeros_like(x))
    with pytest.raises(ConfigError, match="linf, l2"):
        PGD("l1")
    with pytest.raises(ConfigError, match=">= 0"):
        PGD("linf", eps=-1.0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_raises_the_head_loss_of_a_fixed_model(norm):
    module, views = build("adversarial=pgd", "loss=infonce", f"adversarial.attack.norm={norm}",
                          "adversarial.attack.steps=5", "adversarial.attack.random_start=false",
                          f"adversarial.attack.eps={0.06 if norm == 'linf' else 1.0}",
                          f"adversarial.attack.step_size={0.02 if norm == 'linf' else 0.3}")
    module.eval()  # a fixed model: running statistics, so the loss is a function of the input
    out = robust_loss(module, views)
    assert out.logs["loss_adv"] > out.logs["loss_clean"] + 1e-3


def test_eps_zero_gives_the_clean_views_and_loss():
    module, views = build("adversarial=pgd", "loss=infonce", "adversarial.attack.eps=0.0")
    module.train()
    out = robust_loss(module, views)
    assert out.logs["adv_linf"] == 0
    assert torch.equal(out.logs["loss_adv"], out.logs["loss_clean"])


@pytest.mark.parametrize("bn_mode", ["train", "eval", "dual", "dual_train"])
def test_attack_leaks_no_gradient_and_leaves_running_stats(bn_mode):
    """The attack's backward passes reach only the perturbations: no parameter gets ``.grad``
    and no BatchNorm running statistic moves until the loss terms run."""
    module, views = build("adversarial=pgd", f"adversarial.bn_mode={bn_mode}",
                          "adversarial.attack.steps=3")
    module.train()
    calls = []
    original = module.robust.find_adversarial

    def spy(*args, **kwargs):
        before = {k: v.clone() for k, v in module.state_dict().items()}
        deltas = original(*args, **kwargs)
        calls.append((before, {k: v.clone() for k, v in module.state_dict().items()},
                      [p.grad for p in module.parameters()]))
        return deltas

    module.robust.find_adversarial = spy
    robust_loss(module, views)
    before, state, grads = calls[0]
    assert all(g is None for g in grads)
    for k in before:
        assert torch.equal(before[k], state[k]), f"{k} changed during the attack"


def test_dual_bn_keeps_separate_statistics():
    module, views = build("adversarial=pgd", "adversarial.bn_mode=dual", "adversarial.attack.steps=2")
    module.train()
    names = module.robust._bn_names
    assert names, "the smoke encoder has BatchNorm layers"
    clean_bn = module.online.get_submodule(names[0])
    adv_bn = module.robust.adv_bn[names[0].replace(".", "__")]
    assert torch.equal(clean_bn.running_mean, adv_bn.running_mean)
    out = robust_loss(module, views)
    assert not torch.equal(clean_bn.running_mean, adv_bn.running_mean)
    out.loss.backward()
    assert adv_bn.weight.grad is not None and adv_bn.weight.grad.abs().sum() > 0


def _bn_modes_seen(bn_mode: str, **extra):
    """Forward pre-hooks on every BatchNorm of the online network record, for each call, whether
    the layer ran in training mode and which running mean it read: the attack's calls and the
    loss terms' calls apart. The adversarial copies' running means are set to 3 and the clean
    ones to 0, so the mean read names the branch."""
    module, views = build("adversarial=pgd", f"adversarial.bn_mode={bn_mode}",
                          "adversarial.attack.steps=2", *extra.get("overrides", ()))
    module.train()
    with torch.no_grad():
        for name in module.robust._bn_names:
            module.online.get_submodule(name).running_mean.fill_(0.0)
            if module.robust.adv_bn is not None:
                module.robust.adv_bn[name.replace(".", "__")].running_mean.fill_(3.0)
    phase = {"now": "loss"}
    seen: dict[str, list[tuple[str, bool, float]]] = {"attack": [], "loss": []}

    def hook(layer, args, name=None):
        seen[phase["now"]].append((name, layer.training, float(layer.running_mean.mean())))

    handles = [module.online.get_submodule(n).register_forward_pre_hook(
        lambda m, a, n=n: hook(m, a, n)) for n in module.robust._bn_names]
    original = module.robust.find_adversarial

    def attack(*args, **kwargs):
        phase["now"] = "attack"
        try:
            return original(*args, **kwargs)
        finally:
            phase["now"] = "loss"

    module.robust.find_adversarial = attack
    h, z = module.embed_views(module.online, views)  # the clean forward, as the step runs it
    module.robust(module, views, h, z, {}, generator=torch.Generator().manual_seed(2))
    for handle in handles:
        handle.remove()
    return module, seen


def test_dual_attacks_in_eval_mode_through_the_adversarial_batchnorm():
    """ACL's PGD_contrastive: ``model.eval()(inputs + delta, 'pgd')``. Every BatchNorm call of
    the attack runs in eval mode and reads the adversarial copy's running statistics; the clean
    forward and the adversarial term run in training mode, the adversarial term through the
    adversarial copy."""
    module, seen = _bn_modes_seen("dual")
    n_bn = len(module.robust._bn_names)
    assert len(seen["attack"]) == 2 * n_bn  # two PGD steps, every layer once each
    assert all(not training and mean == 3.0 for _, training, mean in seen["attack"])
    assert all(training for _, training, _ in seen["loss"])
    means = sorted({mean for _, _, mean in seen["loss"]})
    assert means == [0.0, 3.0], "the clean forward reads the clean layers, the adversarial term the copies"


def test_dual_train_attacks_in_train_mode_and_eval_in_eval_mode():
    _, seen = _bn_modes_seen("dual_train")
    assert seen["attack"] and all(training for _, training, _ in seen["attack"])
    # the adversarial copies (in training mode their running means move after each call)
    assert all(mean > 1.5 for _, _, mean in seen["attack"])
    _, seen = _bn_modes_seen("eval")
    # the clean layers (the clean forward before the attack moved their running means a little)
    assert seen["attack"] and all(not training and abs(mean) < 1.5 for _, training, mean in seen["attack"])
    _, seen = _bn_modes_seen("train")
    assert seen["attack"] and all(training for _, training, _ in seen["attack"])


def test_append_attacks_the_anchor_against_the_clean_views_as_rocl():
    """RoCL's RepresentationAdv: only the anchor (view 0) is perturbed, to maximise the head's
    loss between it and the clean second view; the adversarial term sees the clean views and
    the adversarial anchor (V + 1 views)."""
    module, views = build("adversarial=pgd", "adversarial.views=append", "loss=infonce",
                          "adversarial.attack.steps=3", "adversarial.bn_mode=eval")
    module.train()
    h, z = module.embed_views(module.online, views)
    std, mean = module.augment.std, module.augment.mean
    pixels = [(v * std + mean).clamp(0, 1) for v in views]
    deltas = module.robust.find_adversarial(module, views, pixels, z.detach(), {},
                                            torch.Generator().manual_seed(2))
    assert len(deltas) == 1 and deltas[0].shape == views[0].shape
    assert 0 < deltas[0].abs().amax() <= 8 / 255 + 1e-6
    with torch.no_grad():  # the attack raised the loss of [adversarial anchor, clean view 1]
        module.eval()
        _, z_adv = module.embed_views(module.online, [views[0] + deltas[0] / std, views[1]])
        _, z_clean = module.embed_views(module.online, views)
        assert module.head(z_adv).loss > module.head(z_clean).loss
    module.train()
    seen = []
    head = module.head.forward
    module.head.forward = lambda zz, **kw: (seen.append(zz.shape[1]), head(zz, **kw))[1]
    module.robust.find_adversarial = lambda *a, **k: deltas  # the term, on the same deltas
    out = module.robust(module, views, h, z, {}, generator=torch.Generator().manual_seed(2))
    assert seen == [2, 3], "clean term on the 2 views, adversarial term on 2 clean + the anchor"
    assert torch.isfinite(out.loss)


def test_rocl_total_adds_the_pair_regulariser():
    """RoCL's total with views=append, w_clean=0 and pair_weight=1/256: the head on the 2 clean
    views + the adversarial anchor, plus 1/256 of the head on (adversarial anchor, clean view 1),
    computed here by hand from the same deltas."""
    module, views = build("adversarial=pgd", "adversarial.views=append", "loss=infonce",
                          "loss.temperature=0.5", "adversarial.w_clean=0", "adversarial.pair_weight=0.00390625",
                          "adversarial.attack.steps=2", "adversarial.bn_mode=eval")
    module.train()
    h, z = module.embed_views(module.online, views)
    std = module.augment.std
    deltas = module.robust.find_adversarial(module, views, [(v * std + module.augment.mean).clamp(0, 1)
                                                            for v in views], z.detach(), {},
                                            torch.Generator().manual_seed(2))
    module.robust.find_adversarial = lambda *a, **k: deltas
    state = {k: v.clone() for k, v in module.state_dict().items()}
    out = module.robust(module, views, h, z, {})
    module.load_state_dict(state)  # the same BatchNorm statistics for the reference forward
    _, z_adv = module.embed_views(module.online, [views[0] + deltas[0] / std])
    full = module.head(torch.cat([z, z_adv], 1)).loss
    pair = module.head(torch.stack([z_adv[:, 0], z[:, 1]], 1)).loss
    torch.testing.assert_close(out.logs["loss_pair"], pair.detach())
    torch.testing.assert_close(out.loss, full + pair / 256)
    with pytest.raises(ConfigError, match="pair_weight"):
        build("adversarial=pgd", "adversarial.pair_weight=-1")


# -- divergences ---------------------------------------------------------------------------------
def test_squared_distance_against_cosines():
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(4, 2, 5, generator=gen, dtype=torch.float64) for _ in range(2))
    value, _ = SquaredDistance()(a, b)
    cos = F.cosine_similarity(a, b, dim=-1)
    torch.testing.assert_close(value, (2 - 2 * cos).mean())
    assert SquaredDistance()(a, a)[0].abs() < 1e-12
    torch.autograd.gradcheck(lambda x, y: SquaredDistance()(x, y)[0],
                             (a.requires_grad_(), b.requires_grad_()))


def test_similarity_kl_against_a_loop():
    gen = torch.Generator().manual_seed(1)
    a, b = (torch.randn(3, 2, 4, generator=gen, dtype=torch.float64) for _ in range(2))
    tau = 0.7
    value, _ = SimilarityKL(temperature=tau)(a, b)
    ua = F.normalize(a.reshape(6, 4), dim=-1)
    ub = F.normalize(b.reshape(6, 4), dim=-1)
    total = 0.0
    for i in range(6):
        others = [j for j in range(6) if j != i]
        p = torch.softmax(torch.stack([ua[i] @ ua[j] / tau for j in others]), 0)
        q = torch.softmax(torch.stack([ub[i] @ ub[j] / tau for j in others]), 0)
        total += float((p * (p / q).log()).sum())
    assert math.isclose(float(value), total / 6, rel_tol=1e-9)
    assert SimilarityKL()(a, a)[0].abs() < 1e-12
    torch.autograd.gradcheck(lambda x, y: SimilarityKL(temperature=tau)(x, y)[0],
                             (a.requires_grad_(), b.requires_grad_()))


def _adam(params):
    return torch.optim.Adam(params, lr=1e-2)


def test_discriminator_learns_to_separate_and_the_divergence_rises():
    torch.manual_seed(0)
    div = AdversarialDivergence(in_dim=3, optimizer=_adam, hidden_dim=16)
    gen = torch.Generator().manual_seed(0)
    clean = torch.randn(32, 2, 3, generator=gen) + 2.0
    adv = torch.randn(32, 2, 3, generator=gen) - 2.0
    first, logs = div(clean, adv)
    assert not any(p.requires_grad for p in div.discriminator.parameters())
    for _ in range(60):
        value, logs = div(clean, adv)
    assert logs["disc_loss"] < 0.2 and value > first + 1.0
    # the value is log 4 minus the discriminator's loss at its current weights
    flat = lambda t: t.reshape(-1, 3)  # noqa: E731
    expected = math.log(4) - div.bce(div.discriminator(flat(clean)), div.discriminator(flat(adv)))
    torch.testing.assert_close(div(clean, adv)[0] + 0, expected, rtol=0.2, atol=0.2)


def test_discriminator_gradient_reaches_the_representations_only():
    div = AdversarialDivergence(in_dim=3, optimizer=_adam, hidden_dim=8)
    clean = torch.randn(4, 2, 3, requires_grad=True)
    adv = torch.randn(4, 2, 3, requires_grad=True)
    value, _ = div(clean, adv)
    value.backward()
    assert clean.grad is not None and adv.grad is not None
    assert all(p.grad is None for p in div.discriminator.parameters())


def test_discriminator_optimiser_state_round_trips():
    torch.manual_seed(0)
    a = AdversarialDivergence(in_dim=3, optimizer=_adam, hidden_dim=8)
    clean, adv = torch.randn(4, 2, 3), torch.randn(4, 2, 3)
    a(clean, adv)
    b = AdversarialDivergence(in_dim=3, optimizer=_adam, hidden_dim=8)
    b.load_state_dict(a.state_dict())
    b.load_optimizer_state(a.optimizer_state())
    for _ in range(2):
        va, vb = a(clean, adv)[0], b(clean, adv)[0]
        assert torch.equal(va, vb)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    fresh = AdversarialDivergence(in_dim=3, optimizer=_adam, hidden_dim=8)
    fresh.load_state_dict(a.state_dict())  # weights only: Adam restarts
    a(clean, adv), fresh(clean, adv)
    assert not torch.equal(a(clean, adv)[0], fresh(clean, adv)[0])


# -- SAM -----------------------------------------------------------------------------------------
def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 2)).double()


def _reference_sam_grads(model, x, y, rho):
    """Foret et al.'s two steps, written out: gradient, ascend to w + rho g/|g|, gradient there,
    restore w."""
    model.zero_grad()
    F.mse_loss(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    with torch.no_grad():
        eps = [rho * g / norm for g in grads]
        for p, e in zip(model.parameters(), eps):
            p.add_(e)
    model.zero_grad()
    F.mse_loss(model(x), y).backward()
    out = [p.grad.clone() for p in model.parameters()]
    with torch.no_grad():
        for p, e in zip(model.parameters(), eps):
            p.sub_(e)
    model.zero_grad()
    return out


def _sam_grads(model, x, y, rho):
    model.zero_grad(set_to_none=True)
    params = dict(model.named_parameters())
    loss = F.mse_loss(model(x), y)
    eps = sam_perturbation(loss, params, rho)
    assert all(p.grad is None for p in model.parameters())
    loss_p = F.mse_loss(torch.func.functional_call(model, perturbed(params, eps), (x,)), y)
    loss_p.backward()
    return [p.grad.clone() for p in model.parameters()]


def test_sam_gradient_matches_the_two_step_reference():
    model = _tiny()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(16, 2, generator=gen, dtype=torch.float64)
    reference = _reference_sam_grads(model, x, y, rho=0.3)
    mine = _sam_grads(model, x, y, rho=0.3)
    for r, m in zip(reference, mine):
        torch.testing.assert_close(m, r, rtol=1e-12, atol=1e-14)
    # rho = 0 is the plain gradient, and a real rho changes it
    plain = torch.autograd.grad(F.mse_loss(model(x), y), list(model.parameters()))
    for p, m in zip(plain, _sam_grads(model, x, y, rho=0.0)):
        torch.testing.assert_close(m, p)
    assert not torch.allclose(mine[0], plain[0])


class _SamStep(nn.Module):
    """What training_step does under DDP: inside the DDP forward, the SAM perturbation (from the
    all-reduced gradient) and the perturbed loss; DDP averages the backward."""

    def __init__(self, model, rho):
        super().__init__()
        self.model, self.rho = model, rho

    def forward(self, x, y):
        params = dict(self.model.named_parameters())
        eps = sam_perturbation(F.mse_loss(self.model(x), y), params, self.rho)
        return F.mse_loss(torch.func.functional_call(self.model, perturbed(params, eps), (x,)), y)


def _ddp_worker(rank, world, port, x, y, rho, results):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        step = torch.nn.parallel.DistributedDataParallel(_SamStep(_tiny(), rho))
        rows = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
        step(x[rows], y[rows]).backward()
        results[rank] = [p.grad.clone() for p in step.module.model.parameters()]
    finally:
        dist.destroy_process_group()


def test_sam_under_ddp_matches_one_process_on_the_global_batch():
    import socket

    import torch.multiprocessing as mp

    gen = torch.Generator().manual_seed(2)
    x = torch.randn(16, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(16, 2, generator=gen, dtype=torch.float64)
    reference = _reference_sam_grads(_tiny(), x, y, rho=0.3)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(2, port, x, y, 0.3, results), nprocs=2, join=True)
    for rank in range(2):
        for r, m in zip(reference, results[rank]):
            torch.testing.assert_close(m, r, rtol=1e-10, atol=1e-12)
    # a perturbation from each rank's own half-batch gradient would differ
    local = _reference_sam_grads(_tiny(), x[:8], y[:8], rho=0.3)
    local_b = _reference_sam_grads(_tiny(), x[8:], y[8:], rho=0.3)
    assert not torch.allclose((local[0] + local_b[0]) / 2, reference[0])


def test_sam_in_the_objective_logs_the_perturbed_clean_loss():
    module, views = build("adversarial=pgd", "adversarial.sam_rho=0.5", "adversarial.attack.steps=1")
    module.train()
    out = robust_loss(module, views)
    assert "loss_clean_sam" in out.logs
    assert out.logs["loss_clean_sam"] > out.logs["loss_clean"]
    out.loss.backward()
    assert all(p.grad is not None for p in module.online.parameters())


def test_bad_adversarial_settings_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="bn_mode must be one of train, eval, dual"):
        build("adversarial=pgd", "adversarial.bn_mode=frozen")
    with pytest.raises(ConfigError, match="views must be one of replace, append"):
        build("adversarial=pgd", "adversarial.views=both")
    with pytest.raises(ConfigError, match="attack norm"):
        build("adversarial=pgd", "adversarial.attack.norm=l1")
    # a recipe's divergence settings left behind after adversarial/divergence=none
    with pytest.raises(ConfigError, match="adversarial.divergence has settings .hidden_dim. but no divergence chosen"):
        build("adversarial=pgd", "+adversarial.divergence.hidden_dim=512")


# -- end to end: `python train.py ... adversarial=pgd` ---------------------------------------------
HEADS = sorted(p.stem for p in (CONFIG_DIR / "loss").glob("*.yaml"))


def _train_one_step(tmp_path, *args: str):
    import json

    from tests.test_train import train

    proc = train("experiment=smoke", "trainer.max_epochs=1", "+trainer.limit_train_batches=1",
                 "monitor.knn.every_n_epochs=0", "eval=[knn]",
                 "adversarial=pgd", "adversarial.attack.steps=2", *args,
                 f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["global_step"] == 1
    metrics = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    return summary, metrics


# one head of each kind of input the attack has to carry: in-batch views (infonce, cacr, the
# transport plan of gca_uot), momentum keys with a queue and shuffle BN (moco), momentum keys with a
# predictor (cacr_mocov3). The default run trains these; every other head is the same code path
# with another loss, run by `make test-all` (slow)
ADVERSARIAL_TWINS = ("infonce", "cacr", "gca_uot", "moco", "cacr_mocov3")


@pytest.mark.parametrize("head", [h if h in ADVERSARIAL_TWINS else pytest.param(h, marks=pytest.mark.slow)
                                  for h in HEADS])
def test_every_head_trains_a_step_with_adversarial_views(head, tmp_path):
    # a queue shorter than the 512 smoke images (the default 4096 is refused there)
    queue = ["loss.queue_size=256"] if "queue_size:" in (CONFIG_DIR / "loss" / f"{head}.yaml").read_text() else []
    _, metrics = _train_one_step(tmp_path, f"loss={head}", "adversarial/divergence=sqdist",
                                 "adversarial.w_div=0.5", *queue)
    for name in ("train/loss", "train/loss_clean", "train/loss_adv", "train/divergence",
                 "train/adv_linf"):
        assert name in metrics, f"{name} not logged for {head}"


@pytest.mark.parametrize("head,extra", [
    ("infonce", ["adversarial.views=append", "adversarial/divergence=kl", "adversarial.w_div=1.0"]),
    ("moco", ["loss.queue_size=96"]),
    ("cacr_mocov3", ["adversarial.bn_mode=dual", "adversarial.sam_rho=0.05",
                     "adversarial/divergence=gan", "adversarial.w_div=0.1"]),
    ("infonce", ["adversarial.bn_mode=eval", "adversarial.attack.norm=l2",
                 "adversarial.attack.eps=0.5", "adversarial.attack.step_size=0.2"]),
])
def test_adversarial_switches_train_end_to_end(head, extra, tmp_path):
    _, metrics = _train_one_step(tmp_path, f"loss={head}", *extra)
    if "adversarial.sam_rho=0.05" in extra:
        assert "train/loss_clean_sam" in metrics and "train/disc_loss" in metrics


def test_unknown_adversarial_choice_is_one_line(tmp_path):
    from tests.test_train import train

    proc = train("experiment=smoke", "adversarial=fgsm", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown adversarial 'fgsm'")
    assert "pgd" in proc.stderr


# -- every command of docs/robust.md runs (at smoke scale) ---------------------------------------
DOC = CONFIG_DIR.parent / "docs" / "robust.md"
SMOKE = ["data=synthetic", "trainer=cpu", "trainer.max_epochs=1", "++trainer.limit_train_batches=2",
         "data.batch_size=32", "monitor.knn.every_n_epochs=0",
         "eval=[knn]", "adversarial.attack.steps=1"]


def doc_commands() -> list[str]:
    """The pretraining part's commands (tests/test_robust_eval.py runs the evaluation part's)."""
    blocks = DOC.read_text().split("## Robust evaluation")[0].split("```")[1::2]
    return [line.strip() for block in blocks for line in block.splitlines()
            if line.strip().startswith("python ")]


def test_docs_list_commands():
    commands = doc_commands()
    assert sum("train.py" in c for c in commands) >= 8 and any("bench.py" in c for c in commands)


@pytest.mark.parametrize("command", doc_commands())
def test_doc_command_runs_at_smoke_scale(command, tmp_path):
    import shlex

    from tests.conftest import run_entry

    args = shlex.split(command)[1:]
    if args[0] == "scripts/bench.py":
        args += ["--quick", "--out", str(tmp_path / "bench.json")]
    else:
        attack_off = "adversarial=none" in args or "adversarial=null" in args
        args += [a for a in SMOKE if not (attack_off and a.startswith("adversarial."))]
        args += [f"hydra.run.dir={tmp_path}"]
        if "experiment=robust_cifar10" in command:  # its ResNet-18 on 16 px RGB images
            # fewer and smaller batches of them (the kNN bank keeps 224 > k = 200): the run is the
            # subject, not the data; ResNet-18's two steps at batch 32 (PGD, SAM, the GAN
            # divergence) were 32 of the test's 40 s
            args = [a for a in args if not a.startswith("data.batch_size=")]
            args += ["data.in_chans=3", "data.num_train=288", "data.num_test=64", "data.batch_size=8"]
    proc = run_entry(args, cwd=CONFIG_DIR.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if args[0] == "train.py":
        assert (tmp_path / "summary.json").exists()
    else:
        import json

        rows = json.loads((tmp_path / "bench.json").read_text())["sections"]["adversarial"]["rows"]
        assert [r["name"] for r in rows] == ["clean step", "adversarial step", "plain PGD loop",
                                             "sslkit attack"]
        assert all("error" not in r and r["repeats"] >= 1 for r in rows)
        assert rows[1]["ratio_to"] == "clean step" and rows[3]["ratio_to"] == "plain PGD loop"


def test_append_is_refused_for_a_head_with_fixed_query_views(tmp_path):
    from tests.test_train import train

    proc = train("experiment=smoke", "loss=moco", "loss.queue_size=96", "adversarial=pgd",
                 "adversarial.views=append", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().count("\n") == 0 and "adversarial.views=replace" in proc.stderr
