"""``views`` section: train-step images/s of the real module (Lightning Trainer, bare) with the
MoCo heads, computing only the views each head reads (``query_views`` / ``key_views``) against
computing every view with both encoders; also the encoder rows per step of each, counted."""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.common import build_data, build_module, load_config
from benchmarks.timing import Series, interleave, synchronizer

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
    import lightning as L

    from sslkit.launch.run import quiet_lightning

    quiet_lightning()
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*`max_epochs` was not set.*")
    steps, warmup = args.steps, args.warmup_steps
    sync = synchronizer(device)
    tmp = Path(tempfile.mkdtemp(prefix="sslkit-bench-views-"))
    variants = [("moco", ["loss=moco"])]
    if not args.quick:
        variants.append(("cacr_mocov3, 2 global + 4 local crops",
                         ["loss=cacr_mocov3", "augment.local_views=4"]))
    rows = []

    def fit(cfg, dm, all_views: bool, counts: dict) -> Callable[[], list[float]]:
        def run() -> list[float]:
            module = build_module(cfg, device)
            if all_views:
                every = list(range(module.augment.num_views))
                module.views.query = every
                if module.key_net is not None:
                    module.views.key = every
                module.head = AllViewsHead(module.head)
            rows_seen = {"online": 0, "key": 0}
            for name, net in (("online", module.online.encoder),
                              ("key", module.key_net.net.encoder if module.key_net is not None else None)):
                if net is not None:
                    net.register_forward_pre_hook(
                        lambda _m, a, name=name: rows_seen.__setitem__(name, rows_seen[name] + a[0].shape[0]))
            times, last = [], [None]

            class StepTimer(L.Callback):
                def on_train_batch_end(self, trainer, pl_module, outputs, batch_, batch_idx) -> None:
                    sync()
                    now = time.perf_counter()
                    if batch_idx >= warmup:
                        times.append(now - last[0])
                    last[0] = now

            trainer = L.Trainer(
                accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                precision=cfg.trainer.precision, max_steps=steps, max_epochs=-1,
                limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, callbacks=[StepTimer()], use_distributed_sampler=False,
                default_root_dir=str(Path(tempfile.mkdtemp(dir=tmp))),
            )
            sink = io.StringIO()
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                trainer.fit(module, datamodule=dm)
            counts.update({k: v // steps for k, v in rows_seen.items()})
            return times

        return run

    try:
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
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
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
