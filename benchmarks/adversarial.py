"""``adversarial`` section: robust pretraining (``adversarial=pgd``).

Two comparisons, side by side in one run, on the default model (configs/train.yaml, views of
Fashion-MNIST-shaped images drawn once, augmentation untimed):

* the cost of a training step with adversarial views (clean + adversarial term, PGD with the
  configured steps) relative to a clean step (forward, backward, optimiser step): PGD with K
  steps adds K forward/backward passes and one forward/backward of the adversarial term, so
  about K + 2 times a clean step is the expectation;
* the attack of :class:`sslkit.robust.objective.RobustObjective` (``find_adversarial``: BatchNorm
  handling, pixel/normalised conversions, projections) against a plain PyTorch loop of the same
  forward/backward passes (sign-gradient steps on the normalised views): the target is within
  10% (ratio >= 0.91 in throughput).
"""

from __future__ import annotations

import time

import torch

from benchmarks.common import build_data, build_module, load_config
from benchmarks.timing import Series, interleave, synchronizer

BATCH, QUICK_BATCH = 128, 32
RATIO_KEY = "ratio"


def section_adversarial(args, device) -> dict:
    batch = QUICK_BATCH if args.quick else BATCH
    cfg = load_config(device, ["adversarial=pgd", f"data.batch_size={batch}"])
    dm, data_note = build_data(cfg)
    images = dm.split("pretrain").images[:batch].to(device)
    module = build_module(cfg, device)
    module.train()
    robust, head = module.robust, module.head
    attack = robust.attack
    opt = torch.optim.SGD(module.online.parameters(), lr=1e-4)
    views = module.augment(images, generator=torch.Generator(device).manual_seed(0))
    mean, std = module.augment.mean, module.augment.std
    pixels = [(v * std + mean).clamp(0, 1) for v in views]
    with torch.no_grad():
        _, z_fixed = module.embed_views(module.online, views)
    sync = synchronizer(device)
    gen = torch.Generator(device)

    def timed(fn) -> float:
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    def clean_step() -> None:
        opt.zero_grad(set_to_none=True)
        _, z = module.embed_views(module.online, views)
        head(z).loss.backward()
        opt.step()

    def adversarial_step() -> None:
        opt.zero_grad(set_to_none=True)
        h, z = module.embed_views(module.online, views)
        robust(module, views, h, z, {}, generator=gen.manual_seed(1)).loss.backward()
        opt.step()

    def framework_attack() -> None:
        robust.find_adversarial(module, views, pixels, z_fixed, {}, gen.manual_seed(2))

    def plain_attack() -> None:
        eps, alpha = attack.eps, attack.step_size
        deltas = [((p + torch.empty_like(p).uniform_(-eps, eps, generator=gen.manual_seed(2)))
                   .clamp(0, 1) - p) for p in pixels]
        for _ in range(attack.steps):
            deltas = [d.requires_grad_(True) for d in deltas]
            _, za = module.embed_views(module.online, [v + d / std for v, d in zip(views, deltas)])
            grads = torch.autograd.grad(head(za).loss, deltas)
            with torch.no_grad():
                deltas = [(p + (d + alpha * g.sign()).clamp(-eps, eps)).clamp(0, 1) - p
                          for p, d, g in zip(pixels, deltas, grads)]

    settings = dict(batch=batch, views=len(views), pgd_steps=attack.steps, norm=attack.norm,
                    bn_mode=robust.bn_mode)
    pairs = [("clean step", clean_step, "adversarial step", adversarial_step),
             ("plain PGD loop", plain_attack, "sslkit attack", framework_attack)]
    rows = []
    for ref_name, ref_fn, name, fn in pairs:
        series = [Series(ref_name, batch, **settings), Series(name, batch, **settings)]
        runners = [lambda f=ref_fn: timed(f), lambda f=fn: timed(f)]
        for f in (ref_fn, fn):  # warm-up
            f()
        interleave(series, runners, max(args.repeats, 2 if args.quick else 5))
        rows += [series[0].record(), series[1].record(series[0], "ratio")]
    return {
        "title": f"adversarial=pgd: step cost and attack overhead (B={batch}, "
                 f"{attack.steps} PGD steps, {attack.norm})",
        "settings": {**settings, "device": str(device), "data": data_note,
                     "note": "ratio = throughput relative to the row above (< 1 is slower); "
                             "adversarial step vs clean: expect about 1/(steps + 2); sslkit "
                             "attack vs the plain loop of the same passes: target >= 0.91"},
        "rows": rows,
    }


run = section_adversarial
