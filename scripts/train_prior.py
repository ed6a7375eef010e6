"""Compute a prior table ahead of a run and keep it in the prior's on-disk cache.

    python scripts/train_prior.py prior=vae                       # VAE on Fashion-MNIST
    python scripts/train_prior.py prior=vae prior.epochs=20 prior.latent_dim=32
    python scripts/train_prior.py prior=features prior.checkpoint=RUN/checkpoints/last.ckpt

Takes the same ``key=value`` overrides as train.py (compose the run's config, so the cache key
matches what ``python train.py ... prior=...`` will look up). Runs on the CPU; training with
``prior=vae`` then reads the cached encoder means instead of training the VAE itself (useful
before a multi-GPU run, where every process would otherwise train its own copy).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sslkit.training.config import CONFIG_DIR  # noqa: E402
from sslkit.launch.train_cli import check_choices, check_composes, fail  # noqa: E402
from sslkit.errors import UserError  # noqa: E402


def main(argv: list[str]) -> None:
    from hydra import compose, initialize_config_dir

    from sslkit.prior.base import absolute_paths
    from sslkit.training.build import build_datamodule, instantiate

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=argv)
    if not cfg.get("prior"):
        fail("usage: python scripts/train_prior.py prior=vae|features|labels|attributes "
             "[key=value ...]")
    from sslkit.runtime.threads import apply as apply_threads

    apply_threads(cfg.get("threads"))  # an int, null (torch's default) or auto
    dm = build_datamodule(cfg)
    dm.setup("fit")
    source = instantiate(absolute_paths(cfg.prior), "prior")
    started = time.perf_counter()
    table = source.table(dm)
    print(json.dumps({
        "prior": source.name, "data": dm.name, "rows": table.shape[0], "dim": table.shape[1],
        "cache_dir": getattr(source, "cache_dir", None),
        "final_negative_elbo": getattr(source, "last_loss", None),
        "seconds": round(time.perf_counter() - started, 1),
    }, indent=2))


if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__.strip())
        sys.exit(0)
    flags = [a for a in sys.argv[1:] if a.startswith("-")]
    if flags:
        fail(f"unknown option {flags[0]}: train_prior.py takes key=value overrides as train.py "
             "does (prior=vae ...); --help shows examples")
    check_choices(sys.argv[1:])
    check_composes(sys.argv[1:])
    try:
        main(sys.argv[1:])
    except UserError as err:
        fail(str(err))
