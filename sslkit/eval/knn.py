"""Weighted k-nearest-neighbour classification of features (Wu et al. 2018, InstDisc)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def knn_predict_many(
    bank: Tensor,
    bank_labels: Tensor,
    queries: Tensor,
    num_classes: int,
    ks: list[int] | tuple[int, ...] = (200,),
    temperature: float = 0.1,
    chunk: int = 1024,
    dtype: torch.dtype = torch.float32,
) -> dict[int, Tensor]:
    """Class scores of each query for each k in ``ks``: the k most cosine-similar bank entries
    vote for their label with weight ``exp(similarity / temperature)``. One similarity pass
    serves every k (the top-k of the largest k is sorted, so its first k entries are the top-k
    of each smaller k). Queries are processed in chunks so memory stays at ``chunk x len(bank)``.
    ``dtype`` is the similarity product's (normalised in float32, then cast); the top-k and the
    weights are float32. ``torch.bfloat16`` halves the product's time on a CPU with native bf16."""
    bank = F.normalize(bank.float(), dim=1).to(dtype)
    # two ks past the bank's size clamp to the same k: each is voted once
    ks = sorted({min(int(k), bank.shape[0]) for k in ks})
    scores: dict[int, list[Tensor]] = {k: [] for k in ks}
    for q in F.normalize(queries.float(), dim=1).to(dtype).split(chunk):
        sim, idx = (q @ bank.T).float().topk(max(ks), dim=1)
        weights, labels = (sim / temperature).exp(), bank_labels[idx]
        for k in ks:
            votes = torch.zeros(q.shape[0], num_classes, device=q.device)
            votes.scatter_add_(1, labels[:, :k], weights[:, :k])
            scores[k].append(votes)
    return {k: torch.cat(v) for k, v in scores.items()}


def knn_predict(
    bank: Tensor,
    bank_labels: Tensor,
    queries: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``knn_predict_many`` for one k."""
    k = min(k, bank.shape[0])
    return knn_predict_many(bank, bank_labels, queries, num_classes, (k,), temperature, chunk, dtype)[k]


def knn_top1(bank: Tensor, bank_labels: Tensor, queries: Tensor, labels: Tensor,
             num_classes: int, k: int = 200, temperature: float = 0.1) -> float:
    pred = knn_predict(bank, bank_labels, queries, num_classes, k, temperature).argmax(1)
    return (pred == labels).float().mean().item()


class KNNClassifier:
    """Offline evaluator ``knn``: test features classified against the probe split's features
    by ``knn_predict`` at each ``k``; top-1 (and top-5 when there are more than 5 classes) per
    k, and ``top1`` at ``summary_k``."""

    def __init__(self, k: list[int] | tuple[int, ...] = (20, 200), temperature: float = 0.1,
                 summary_k: int = 200) -> None:
        self.ks, self.temperature, self.summary_k = [int(v) for v in k], temperature, summary_k
        if summary_k not in self.ks:
            from sslkit.errors import ConfigError

            raise ConfigError(f"eval.knn.summary_k={summary_k} is not one of eval.knn.k={self.ks}")
        # top-level keys of every result (checked by tests/eval/test_evaluator_contract.py)
        self.result_keys = ("temperature", "top1", *(f"k{k}_top1" for k in self.ks))

    def __call__(self, ctx) -> dict:
        bank, bank_labels = (t.to(ctx.device) for t in ctx.labelled("probe"))
        queries, labels = (t.to(ctx.device) for t in ctx.labelled("test"))
        out: dict = {"temperature": self.temperature}
        many = knn_predict_many(bank, bank_labels, queries, ctx.num_classes, self.ks, self.temperature)
        for k in self.ks:
            scores = many[min(k, len(bank))]
            out[f"k{k}_top1"] = (scores.argmax(1) == labels).float().mean().item()
            if ctx.num_classes > 5:
                hit = (scores.topk(5, dim=1).indices == labels[:, None]).any(1)
                out[f"k{k}_top5"] = hit.float().mean().item()
        out["top1"] = out[f"k{self.summary_k}_top1"]
        return out
