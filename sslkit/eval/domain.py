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

With ``projector`` the same numbers are measured again on the projections ``z =
projector(features)`` (``result["projector"]``): the space the loss and its target plan act on,
where the encoder features keep what the projector may discard (Chen et al. 2020, SimCLR: the
projection head drops information about the augmentations). The projector runs on the cached features: no second pass over the images, but a second
class probe.

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
                   "projector", "n_train", "n_test", "seconds")

    def __init__(self, l2_grid: Sequence[float] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
                 holdout_fraction: float = 0.1, max_iter: int = 200, tolerance: float = 1e-6,
                 projector: bool = True) -> None:
        self.l2_grid, self.holdout_fraction = list(l2_grid), holdout_fraction
        self.max_iter, self.tolerance = max_iter, tolerance
        self.projector = projector

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

    def fit(self, ctx, x: Tensor, y: Tensor, num_classes: int):
        return select_and_fit(x.to(ctx.device), y.to(ctx.device), num_classes, self.l2_grid,
                              self.holdout_fraction, ctx.seed, self.max_iter, self.tolerance)

    def measure(self, ctx, x, test_x, target, test_target, n_domains, class_fit, test_y) -> dict:
        """Domain probe on ``(x, target)`` scored on ``(test_x, test_target)``, and the class
        probe ``class_fit`` scored on each domain's labelled test images."""
        probe, l2, scores = self.fit(ctx, x, target, n_domains)
        class_probe, class_l2, _ = class_fit
        with torch.no_grad():
            domain_logits = probe.logits(test_x.to(ctx.device)).cpu()
            class_pred = class_probe.logits(test_x.to(ctx.device)).argmax(1).cpu()
        labelled = test_y >= 0
        class_correct = (class_pred == test_y).float()[labelled]
        return {
            "top1": top1(domain_logits, test_target),
            "per_domain_top1": classification_report(domain_logits, test_target, n_domains)["per_class_top1"],
            "class_top1": class_correct.mean().item() if len(class_correct) else None,
            "class_top1_per_domain": per_group_top1(class_correct, test_target[labelled], n_domains),
            "l2": l2,
            "holdout_top1": scores,
            "class_l2": class_l2,
        }

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
        names = domain_names(dm, ids.tolist())
        spaces = {"encoder": (x, test_x, fit_class_probe(ctx, self.l2_grid, self.holdout_fraction,
                                                         self.max_iter, self.tolerance))}
        if self.projector:
            z, test_z = project(ctx.module, x, ctx.device), project(ctx.module, test_x, ctx.device)
            labelled = y >= 0
            spaces["projector"] = (z, test_z, self.fit(ctx, z[labelled], y[labelled], ctx.num_classes))
        out = {}
        for space, (feats, test_feats, class_fit) in spaces.items():
            result = self.measure(ctx, feats, test_feats, target, test_target, n_domains, class_fit, test_y)
            for key in ("per_domain_top1", "class_top1_per_domain"):
                result[key] = dict(zip(names, result[key]))
            out[space] = result
        return {
            "protocol": "fast: L-BFGS logistic regression on frozen standardised features with "
                        "the domain as target, L2 chosen on a held-out part of the training split",
            "domains": names,
            "n_domains": n_domains,
            "chance": 1 / n_domains,
            **out["encoder"],
            "projector": out.get("projector"),
            "n_train": len(target),
            "n_test": len(test_target),
            "seconds": time.perf_counter() - started,
        }


@torch.no_grad()
def project(module, features: Tensor, device, batch_size: int = 4096) -> Tensor:
    """The projections ``z`` (what the loss and its target plan act on) of encoder features, as
    the module computes them in eval mode; float32 on the CPU."""
    module.eval()
    return torch.cat([module.online.projector(chunk.to(device)).float().cpu()
                      for chunk in features.split(batch_size)])
