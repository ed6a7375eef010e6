"""Pretrain an encoder with a contrastive loss head, then probe it.

    python train.py                        # defaults: Fashion-MNIST, InfoNCE, small convnet
    python train.py loss=cacr data=cifar10 encoder=resnet18
    python train.py experiment=smoke       # tiny synthetic run (seconds)
    python train.py resume=runs/.../checkpoints/last.ckpt
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from sslkit.cli import CONFIG_DIR, check_choices, check_composes, expand_eval_all, fail, print_summary
from sslkit.errors import UserError


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    from sslkit.run import train  # heavy imports after Hydra has parsed the command line

    try:
        summary = train(cfg)
    except UserError as err:
        fail(str(err))
    if summary:
        print_summary(summary)
        # what a sweeper optimises (hydra-optuna-sweeper): the summary key named by `objective`
        return summary.get(cfg.get("objective") or "linear_probe_top1")
    return None


if __name__ == "__main__":
    sys.argv[1:] = expand_eval_all(sys.argv[1:])
    check_choices(sys.argv[1:])
    check_composes(sys.argv[1:])
    main()
