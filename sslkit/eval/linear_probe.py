"""Linear probe: a softmax classifier trained on frozen, standardised features."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class ProbeResult:
    top1: float
    train_top1: float
    top5: float


def fit_linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    num_classes: int,
    epochs: int = 30,
    batch_size: int = 512,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    min_steps: int = 500,
) -> ProbeResult:
    """Standardise features with the training statistics, then train ``Linear(F, C)`` with
    AdamW and a cosine schedule on cross-entropy for ``epochs`` (more on small training sets,
    so that at least ``min_steps`` steps are taken). Nothing is tuned on the test set."""
    gen = torch.Generator().manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    clf = torch.nn.Linear(train_x.shape[1], num_classes)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        clf.reset_parameters()
    opt = torch.optim.AdamW(clf.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(train_x)
    per_epoch = max(1, n // batch_size)
    epochs = max(epochs, -(-min_steps // per_epoch))
    steps = epochs * per_epoch
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, max(n - batch_size, 0) + 1, batch_size):
            idx = perm[i : i + batch_size]
            loss = F.cross_entropy(clf(train_x[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        logits = clf(test_x)
        top1 = (logits.argmax(1) == test_y).float().mean().item()
        top5_idx = logits.topk(min(5, num_classes), dim=1).indices
        top5 = (top5_idx == test_y[:, None]).any(1).float().mean().item()
        train_top1 = (clf(train_x).argmax(1) == train_y).float().mean().item()
    return ProbeResult(top1=top1, train_top1=train_top1, top5=top5)
