"""A real (untrained) smoke module and its synthetic data, and contexts whose feature cache is
filled with features of a chosen geometry."""

from __future__ import annotations

import copy

import pytest
import torch

from sslkit.eval.context import EvalContext


@pytest.fixture(scope="session")
def smoke_parts():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from sslkit.training.config import CONFIG_DIR
    from sslkit.training.build import build_datamodule, build_module

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=smoke", "logger=[]"])
    torch.manual_seed(0)
    module = build_module(cfg).eval()
    dm = build_datamodule(cfg)
    dm.setup("validate")
    return cfg, module, dm


def context_with(smoke_parts, tmp_path, train, test, num_classes=None, seed=0) -> EvalContext:
    """An EvalContext over the real smoke module and data whose probe/test features are
    ``train`` / ``test`` ((x, y) pairs) instead of extracted ones."""
    _, module, dm = smoke_parts
    if num_classes is not None:
        dm = copy.copy(dm)  # the session's data module stays as built for the other tests
        dm.num_classes = num_classes
    ctx = EvalContext(module=module, datamodule=dm, run_dir=tmp_path, seed=seed)
    ctx._cache[dm.probe_split], ctx._cache[dm.test_split] = train, test
    return ctx


def blobs(n: int, classes: int, dim: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian class blobs: class means on a sphere of radius 1 in ``dim`` dims, noise ``spread``."""
    g = torch.Generator().manual_seed(seed)
    means = torch.nn.functional.normalize(torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)), dim=1)
    y = torch.arange(n) % classes
    return means[y] + spread * torch.randn(n, dim, generator=g), y
