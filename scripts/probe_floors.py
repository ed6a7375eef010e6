"""Floors for the linear probe of the default job: raw pixels and a randomly initialised encoder.

    python scripts/probe_floors.py [key=value ...]     # same overrides as train.py

Both use the fast linear protocol of the default job (sslkit.eval.linear, configs/eval/linear.yaml).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(overrides: list[str]) -> None:
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from sslkit.training.config import CONFIG_DIR
    from sslkit.eval.features import extract
    from sslkit.eval.linear import LinearProbe, select_and_fit, top1
    from sslkit.training.build import build_datamodule, build_module

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "logger=[]"], return_hydra_config=False)
    torch.manual_seed(cfg.seed)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    module = build_module(cfg).eval()
    lp = LinearProbe(**{k: v for k, v in cfg.eval.linear.items() if k != "_target_"})
    results = {}
    for name, feats in (
        ("raw_pixels", lambda x: module.augment.eval_transform(x).flatten(1)),
        ("random_init_encoder", module.features),
    ):
        started = time.perf_counter()
        tr_x, tr_y = extract(feats, dm.eval_dataloader(dm.probe_split))
        te_x, te_y = extract(feats, dm.eval_dataloader(dm.test_split))
        probe, _, _ = select_and_fit(tr_x, tr_y, dm.num_classes, lp.l2_grid, lp.holdout_fraction,
                                     cfg.seed, lp.max_iter, lp.tolerance)
        results[name] = {"linear_probe_top1": top1(probe.logits(te_x), te_y), "features": tr_x.shape[1],
                         "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
