"""``heads`` section: forward+backward time of every head in configs/loss/ relative to InfoNCE
(D = 128, V = 2); random momentum keys ``k`` and a queue of 4096 keys for the heads that need them."""

from __future__ import annotations

import time

import torch

from benchmarks.common import ROOT
from benchmarks.timing import Series, error_line, interleave, synchronizer

HEAD_DIM, HEAD_VIEWS, QUEUE = 128, 2, 4096
RATIO_KEY = "time_ratio_to_infonce"


PRIOR_VARIANT = "dunif+rbf_prior"


def head_names() -> list[str]:
    """What ``--heads`` may name: every configs/loss/NAME.yaml and the prior variant of dunif."""
    return [*sorted(p.stem for p in (ROOT / "configs" / "loss").glob("*.yaml")), PRIOR_VARIANT]


def head_variants() -> list[tuple[str, dict]]:
    """(name, config) of each head in configs/loss/, plus dunif with a prior kernel."""
    import yaml

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    out = []
    paths = sorted((ROOT / "configs" / "loss").glob("*.yaml"), key=lambda p: (p.stem != "infonce", p.stem))
    # composed by Hydra: a head's file may inherit another's (cct.yaml takes cacr.yaml)
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        for path in paths:
            loss = compose("train", overrides=[f"loss={path.stem}"]).loss
            out.append((path.stem, OmegaConf.to_container(loss, resolve=True)))
    dunif = dict(yaml.safe_load((ROOT / "configs" / "loss" / "dunif.yaml").read_text()))
    dunif.update(kernel="rbf", sigma=1.0)
    out.append((PRIOR_VARIANT, dunif))
    return out


def head_extras(head, batch: int, device: torch.device, gen: torch.Generator) -> tuple[dict, str]:
    import torch.nn.functional as F

    extras, notes = {}, []
    needs = set(getattr(head, "requires", ()))
    if "k" in needs or "queue" in needs:
        k = torch.randn(batch, HEAD_VIEWS, HEAD_DIM, generator=gen)[:, getattr(head, "key_views", slice(None))]
        extras["k"] = k.to(device)
        notes.append(f"k [{batch},{k.shape[1]},{HEAD_DIM}]")
    if "queue" in needs:
        extras["queue"] = F.normalize(torch.randn(QUEUE, HEAD_DIM, generator=gen), dim=-1).to(device)
        notes.append(f"queue {QUEUE}")
    if "prior" in needs:
        extras["prior"] = torch.randn(batch, 16, generator=gen).to(device)
        notes.append("prior [B,16]")
    if "labels" in needs:
        extras["labels"] = torch.randint(0, 10, (batch,), generator=gen).to(device)
        notes.append("labels")
    return extras, ", ".join(notes)


def section_heads(args, device) -> dict:
    import hydra
    from omegaconf import OmegaConf

    sync = synchronizer(device)
    rows = []
    variants = head_variants()
    if getattr(args, "heads", None):  # infonce stays: the others are timed relative to it
        variants = [(n, c) for n, c in variants if n in {"infonce", *args.heads}]
    for batch in args.head_batches:
        gen = torch.Generator().manual_seed(batch)
        z0 = torch.randn(batch, HEAD_VIEWS, HEAD_DIM, generator=gen).to(device)
        series, runners = [], []
        for name, conf in variants:
            head = hydra.utils.instantiate(OmegaConf.create(conf)).to(device)
            extras, note = head_extras(head, batch, device, gen)
            s = Series(name, 0, head=name, batch=batch, dim=HEAD_DIM, views=HEAD_VIEWS,
                       extras=note or None)

            def run(head=head, extras=extras) -> float:
                z = z0[:, getattr(head, "query_views", slice(None))].clone().requires_grad_(True)
                sync()
                t0 = time.perf_counter()
                head(z, **extras).loss.backward()
                sync()
                return time.perf_counter() - t0

            try:
                run()  # warm-up (allocations, first-call dispatch)
            except Exception as err:
                s.error = error_line(err)
            series.append(s)
            runners.append(run)
        interleave(series, runners, args.head_repeats)
        ref = next(s for s in series if s.name == "infonce")
        rows += [s.record(ref, "time_ratio_to_infonce") for s in series]
    return {
        "title": f"loss heads: forward+backward time relative to InfoNCE (D={HEAD_DIM}, V={HEAD_VIEWS})",
        "settings": {"batches": list(args.head_batches), "dim": HEAD_DIM, "views": HEAD_VIEWS,
                     "queue": QUEUE, "device": str(device),
                     "note": f"heads needing momentum keys get random k; queue heads get a queue of "
                             f"{QUEUE} unit keys (not their configured queue_size); dunif+rbf_prior "
                             "is dunif with kernel=rbf, sigma=1 and a random prior [B,16]; "
                             "time_ratio_to_infonce > 1 is slower"},
        "rows": rows,
    }


run = section_heads
