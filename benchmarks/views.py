"""``views`` section: train-step images/s of the real module (Lightning Trainer, bare) with the
MoCo heads, computing only the views each head reads (``query_views`` / ``key_views``) against
computing every view with both encoders; also the encoder rows per step of each, counted."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from benchmarks.common import build_data, fit_step_times, load_config
from benchmarks.timing import Series, interleave

RATIO_KEY = "ratio_to_all_views"


class AllViewsHead(torch.nn.Module):
    """The head as the module used it before heads declared their views: z and k of every view,
    the head's own views picked out afterwards."""

    def __init__(self, head: torch.nn.Module) -> None:
        super().__init__()
        self.inner = head
        self.requires, self.uses_predictor = head.requires, head.uses_predictor
        self.q = getattr(head, "query_views", slice(None))
        self.k = getattr(head, "key_views", slice(None))

    def forward(self, z, k=None, **extras):
        return self.inner(z[:, self.q], k=None if k is None else k[:, self.k], **extras)

    def enqueue(self, k):
        return self.inner.enqueue(k[:, self.k])


def section_views(args, device) -> dict:

    from sslkit.launch.run import quiet_lightning

    quiet_lightning()
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*`max_epochs` was not set.*")
    steps, warmup = args.steps, args.warmup_steps
    variants = [("moco", ["loss=moco"])]
    if not args.quick:
        variants.append(("cacr_mocov3, 2 global + 4 local crops",
                         ["loss=cacr_mocov3", "augment.local_views=4"]))
    rows = []

    def fit(cfg, dm, all_views: bool, counts: dict) -> Callable[[], list[float]]:
        rows_seen = {"online": 0, "key": 0}

        def prepare(module) -> None:
            if all_views:
                every = list(range(module.augment.num_views))
                module.views.query = every
                if module.key_net is not None:
                    module.views.key = every
                module.head = AllViewsHead(module.head)
            rows_seen.update(online=0, key=0)
            for name, net in (("online", module.online.encoder),
                              ("key", module.key_net.net.encoder if module.key_net is not None else None)):
                if net is not None:
                    net.register_forward_pre_hook(
                        lambda _m, a, name=name: rows_seen.__setitem__(name, rows_seen[name] + a[0].shape[0]))

        timed = fit_step_times(cfg, dm, device, steps, warmup, prepare)

        def run() -> list[float]:
            times = timed()
            counts.update({k: v // steps for k, v in rows_seen.items()})
            return times

        return run

    for head, overrides in variants:
        cfg = load_config(device, overrides)
        dm, data_desc = build_data(cfg)
        batch = int(cfg.data.batch_size)
        after_counts, before_counts = {}, {}
        after = Series(f"{head}: query/key views only", batch, head=head)
        before = Series(f"{head}: every view, both encoders (before)", batch, head=head)
        interleave([before, after], [fit(cfg, dm, True, before_counts), fit(cfg, dm, False, after_counts)],
                   args.repeats)
        row_b, row_a = before.record(), after.record(before, "ratio_to_all_views")
        row_b["encoder_rows_per_step"], row_a["encoder_rows_per_step"] = before_counts, after_counts
        if before_counts and after_counts:
            row_a["encoder_rows_ratio"] = {k: after_counts[k] / before_counts[k]
                                           for k in before_counts if before_counts[k]}
        rows += [row_b, row_a]
    return {
        "title": "views each head computes: train-step images/s of the real module, only the views "
                 "the head reads vs every view through both encoders",
        "settings": {"data": data_desc, "batch": batch, "steps_per_fit": steps,
                     "timed_steps_per_fit": steps - warmup, "heads": [v[0] for v in variants], "device": str(device),
                     "note": "ratio_to_all_views > 1: faster than computing every view; "
                             "encoder_rows_per_step counts the rows each encoder's forward sees (the online "
                             "encoder's also run backward); moco: query view 0, keys of view 1; "
                             "cacr_mocov3: every view a query, keys of the n_global global crops"},
        "rows": rows,
    }


run = section_views
