"""Weighted k-nearest-neighbour classification of features (Wu et al. 2018, InstDisc)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def knn_predict(
    bank: Tensor,
    bank_labels: Tensor,
    queries: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
) -> Tensor:
    """Class scores of each query: the k most cosine-similar bank entries vote for their label
    with weight ``exp(similarity / temperature)``. Queries are processed in chunks so memory
    stays at ``chunk x len(bank)``."""
    bank = F.normalize(bank.float(), dim=1)
    k = min(k, bank.shape[0])
    scores = []
    for q in F.normalize(queries.float(), dim=1).split(chunk):
        sim, idx = (q @ bank.T).topk(k, dim=1)
        weights = (sim / temperature).exp()
        votes = torch.zeros(q.shape[0], num_classes, device=q.device)
        votes.scatter_add_(1, bank_labels[idx], weights)
        scores.append(votes)
    return torch.cat(scores)


def knn_top1(bank: Tensor, bank_labels: Tensor, queries: Tensor, labels: Tensor,
             num_classes: int, k: int = 200, temperature: float = 0.1) -> float:
    pred = knn_predict(bank, bank_labels, queries, num_classes, k, temperature).argmax(1)
    return (pred == labels).float().mean().item()
