"""Domain probe: how well frozen features tell the *domain* of an image, beside how well they
tell its class in each domain.

A representation trained with a domain-aware target (GCA's ``alpha`` on same-domain pairs,
``beta`` on other-domain pairs, docs/losses.md) should encode the domain more when ``alpha >
beta`` and less when ``beta > alpha``. This evaluator measures both sides with the fast linear
protocol of :mod:`sslkit.eval.linear`: a logistic probe fitted on the probe split's features with
the domain ids as targets (L2 chosen on a held-out part of that split), scored on the test split
(``top1`` against ``chance`` = 1 / number of domains); and the class probe's top-1 on each
domain's test images (``class_top1_per_domain``). The class probe is the ``linear`` evaluator's
fit when both use the same settings (fitted once per run).

The domains come from the data: ``data.domain_shift=[...]`` (sslkit/data/domains.py) or a domain
folder tree (``data=domainfolder``); without them the run is refused before any work.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import Tensor

from sslkit.errors import ConfigError
from sslkit.eval.linear import classification_report, fit_class_probe, select_and_fit, top1

MISSING = ("add data.domain_shift=[plain,invert] (a synthetic shift of in-memory datasets) or use a "
           "domain folder tree (data=domainfolder data.root=DIR), or leave domain out of eval=[...]")


def split_domains(dm, split: str) -> Tensor:
    """The ``domain`` field of a stored split of ``dm``, refused in one line when it has none."""
    values = getattr(dm.split(split), "fields", {}).get("domain")
    if values is None:
        raise ConfigError(f"eval=[...,domain] needs the domain of every image and data {dm.name} "
                          f"gives its {split} split none; {MISSING}")
    return values


def domain_names(dm, ids: Sequence[int]) -> list[str]:
    """A name per domain id: the style of ``data.domain_shift``, the folder of a domain folder
    tree (``dm.domain_names``), else the id itself."""
    names = getattr(dm, "domain_names", None) or getattr(dm, "domain_shift", None) or []
    return [str(names[i]) if 0 <= i < len(names) else str(i) for i in ids]


def per_group_top1(correct: Tensor, groups: Tensor, n_groups: int) -> list[float | None]:
    """Mean of ``correct`` over each group id ``0..n_groups-1`` (``None`` for an empty group)."""
    return [correct[groups == g].mean().item() if bool((groups == g).any()) else None
            for g in range(n_groups)]


class DomainProbe:
    """Offline evaluator ``domain``; see the module docstring."""

    # per-sample fields of the data it needs (checked by ``check``); eval=all leaves it out
    data_fields = ("domain",)
    # top-level keys of every result (checked by tests/eval/test_evaluator_contract.py)
    result_keys = ("protocol", "domains", "n_domains", "chance", "top1", "per_domain_top1",
                   "class_top1", "class_top1_per_domain", "l2", "holdout_top1", "class_l2",
                   "n_train", "n_test", "seconds")

    def __init__(self, l2_grid: Sequence[float] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
                 holdout_fraction: float = 0.1, max_iter: int = 200, tolerance: float = 1e-6) -> None:
        self.l2_grid, self.holdout_fraction = list(l2_grid), holdout_fraction
        self.max_iter, self.tolerance = max_iter, tolerance

    def check(self, dm) -> None:
        """Refuse, before any work, data whose probe or test split has no domains, or whose test
        split holds domains the probe split lacks (``data.test_domains``: a probe cannot name a
        domain it never saw)."""
        seen = set(split_domains(dm, dm.probe_split).tolist())
        unseen = sorted(set(split_domains(dm, dm.test_split).tolist()) - seen)
        if unseen:
            raise ConfigError(
                f"eval=[...,domain]: the {dm.test_split} split holds domains "
                f"{domain_names(dm, unseen)} that the {dm.probe_split} split lacks (held out by "
                "data.test_domains?); a domain probe cannot name a domain it never saw: hold out "
                "no domain, or leave domain out of eval=[...]")

    def __call__(self, ctx) -> dict:
        started = time.perf_counter()
        dm = ctx.datamodule
        self.check(dm)
        x, y = ctx.features("probe")
        test_x, test_y = ctx.features("test")
        dom, test_dom = ctx.field("probe", "domain"), ctx.field("test", "domain")
        # domain ids as probe targets 0..K-1 (a domain folder subset may leave gaps in the ids)
        ids = torch.unique(dom)
        target, test_target = (torch.searchsorted(ids, d) for d in (dom, test_dom))
        n_domains = len(ids)
        probe, l2, scores = select_and_fit(x.to(ctx.device), target.to(ctx.device), n_domains,
                                           self.l2_grid, self.holdout_fraction, ctx.seed,
                                           self.max_iter, self.tolerance)
        class_probe, class_l2, _ = fit_class_probe(ctx, self.l2_grid, self.holdout_fraction,
                                                   self.max_iter, self.tolerance)
        with torch.no_grad():
            domain_logits = probe.logits(test_x.to(ctx.device)).cpu()
            class_pred = class_probe.logits(test_x.to(ctx.device)).argmax(1).cpu()
        report = classification_report(domain_logits, test_target, n_domains)
        names = domain_names(dm, ids.tolist())
        labelled = test_y >= 0
        class_correct = (class_pred == test_y).float()[labelled]
        per_domain_class = per_group_top1(class_correct, test_target[labelled], n_domains)
        return {
            "protocol": "fast: L-BFGS logistic regression on frozen standardised features with "
                        "the domain as target, L2 chosen on a held-out part of the training split",
            "domains": names,
            "n_domains": n_domains,
            "chance": 1 / n_domains,
            "top1": top1(domain_logits, test_target),
            "per_domain_top1": dict(zip(names, report["per_class_top1"])),
            "class_top1": class_correct.mean().item() if len(class_correct) else None,
            "class_top1_per_domain": dict(zip(names, per_domain_class)),
            "l2": l2,
            "holdout_top1": scores,
            "class_l2": class_l2,
            "n_train": len(target),
            "n_test": len(test_target),
            "seconds": time.perf_counter() - started,
        }
