"""``attack`` section: images/s of torchattacks' PGD-20 (l-inf 8/255, step 2/255, random start;
what ``eval=robust`` runs) against a plain hand-written PGD loop of the same forward/backward
passes, on the default encoder + a linear head in eval mode (target: ratio >= 0.9)."""

from __future__ import annotations

import torch

from benchmarks.common import build_data, build_module, load_config
from benchmarks.timing import Series, interleave, synchronizer, timer

RATIO_KEY = "ratio_to_plain"


ATTACK_BATCH, ATTACK_STEPS = 256, 20


def plain_pgd(model, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float,
              steps: int) -> torch.Tensor:
    """l-inf PGD with random start as a bare loop: the reference for torchattacks.PGD."""
    import torch.nn.functional as F

    adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(adv), y), adv)
        adv = torch.minimum(torch.maximum(adv.detach() + alpha * grad.sign(), x - eps), x + eps)
        adv = adv.clamp(0, 1)
    return adv


def section_attack(args, device) -> dict:
    import torchattacks

    from sslkit.eval.robust import ImageClassifier, LinearHead

    cfg = load_config(device)
    dm, data_desc = build_data(cfg)
    batch = 64 if args.quick else ATTACK_BATCH
    steps = 2 if args.quick else ATTACK_STEPS
    data = dm.split(dm.test_split)
    x = (data.images[:batch].float() / 255).to(device)
    y = data.labels[:batch].to(device)
    module = build_module(cfg, device).eval()
    with torch.no_grad():
        feats = module.features(data.images[:batch].to(device))
    head = LinearHead(feats.mean(0), feats.std(0), dm.num_classes).to(device)
    model = ImageClassifier(module.augment.eval_transform, module.online.encoder, head,
                            cfg.model.channels_last).eval()
    eps, alpha = 8 / 255, 2 / 255
    library = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    sync = synchronizer(device)

    runners = [timer(lambda: library(x, y), sync),
               timer(lambda: plain_pgd(model, x, y, eps, alpha, steps), sync)]
    for run in runners:
        run()  # warm-up
    series = [Series("torchattacks.PGD", batch), Series("plain PGD loop", batch)]
    interleave(series, runners, max(args.repeats, 3))
    rows = [series[0].record(series[1], "ratio_to_plain"), series[1].record()]
    return {
        "title": f"attack: PGD-{steps} images/s, torchattacks vs a plain loop (default encoder + "
                 "linear head, eval mode)",
        "settings": {"data": data_desc, "batch": batch, "steps": steps, "eps": eps, "alpha": alpha,
                     "device": str(device), "encoder": cfg.encoder._target_,
                     "note": "same forward/backward passes; ratio_to_plain >= 0.9 is the target"},
        "rows": rows,
    }


run = section_attack
