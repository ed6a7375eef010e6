"""Floors for the linear probe of the default job: raw pixels and a randomly initialised encoder.

    python scripts/probe_floors.py [key=value ...]     # same overrides as train.py

Both use the exact probe of the default job (sslkit.eval.linear_probe, the eval.final settings).
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

    from sslkit.cli import CONFIG_DIR
    from sslkit.eval.features import extract
    from sslkit.eval.linear_probe import fit_linear_probe
    from sslkit.run import build_datamodule, build_module

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "logger=[]"], return_hydra_config=False)
    torch.manual_seed(cfg.seed)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    module = build_module(cfg).eval()
    lp = cfg.eval.final.linear_probe
    results = {}
    for name, feats in (
        ("raw_pixels", lambda x: module.augment.eval_transform(x).flatten(1)),
        ("random_init_encoder", module.features),
    ):
        started = time.perf_counter()
        tr_x, tr_y = extract(feats, dm.eval_dataloader(dm.probe_split))
        te_x, te_y = extract(feats, dm.eval_dataloader(dm.test_split))
        probe = fit_linear_probe(tr_x, tr_y, te_x, te_y, dm.num_classes, lp.epochs, lp.batch_size,
                                 lp.lr, lp.weight_decay, cfg.seed)
        results[name] = {"linear_probe_top1": probe.top1, "features": tr_x.shape[1],
                         "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
