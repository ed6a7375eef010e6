"""``prior=features``: prior vectors from a file in dataset order, or the frozen encoder
features of another sslkit checkpoint (computed once, cached on disk)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sslkit.errors import ConfigError, DataError
from sslkit.prior.base import PriorSource, cached, fingerprint


class FeaturePrior(PriorSource):
    """Exactly one of ``path`` (``.npy`` or ``.pt``: ``[N, P]``, row i = sample i of the
    training split as stored) or ``checkpoint`` (an sslkit ``.ckpt``: its encoder's features of
    the un-augmented training images)."""

    name = "features"

    def __init__(self, path: str | None = None, checkpoint: str | None = None,
                 cache_dir: str = "data/priors", batch_size: int = 512) -> None:
        if (path is None) == (checkpoint is None):
            raise ConfigError(
                "prior=features needs exactly one of prior.path=FILE.npy|FILE.pt (rows in "
                "dataset order) or prior.checkpoint=RUN/checkpoints/last.ckpt"
            )
        self.path = Path(path).expanduser() if path else None
        self.checkpoint = Path(checkpoint).expanduser() if checkpoint else None
        self.cache_dir, self.batch_size = cache_dir, batch_size

    def compute(self, dm, data):
        if self.path is not None:
            return self._load(self.path)
        if not self.checkpoint.is_file():
            raise DataError(f"prior.checkpoint={self.checkpoint}: no such file")
        stat = self.checkpoint.stat()
        key = {"source": "checkpoint_features", "checkpoint": str(self.checkpoint.resolve()),
               "size": stat.st_size, "mtime": stat.st_mtime_ns, "data": fingerprint(dm, data)}
        return cached(self.cache_dir, key, lambda: self._encode(dm, data))

    @staticmethod
    def _load(path: Path) -> torch.Tensor:
        if not path.is_file():
            raise DataError(f"prior.path={path}: no such file")
        try:
            if path.suffix == ".npy":
                return torch.from_numpy(np.load(path, allow_pickle=False))
            if path.suffix == ".pt":
                values = torch.load(path, map_location="cpu", weights_only=True)
                if isinstance(values, torch.Tensor):
                    return values
                raise DataError(f"prior.path={path}: expected one tensor [N, P], got {type(values).__name__}")
        except (OSError, ValueError, RuntimeError) as err:
            raise DataError(f"prior.path={path}: unreadable ({str(err).splitlines()[0]})") from None
        raise DataError(f"prior.path={path}: expected a .npy or .pt file")

    def _encode(self, dm, data) -> torch.Tensor:
        from omegaconf import OmegaConf

        from sslkit.training.checkpoint import load_checkpoint
        from sslkit.eval.features import extract
        from sslkit.training.build import build_module

        ckpt = load_checkpoint(self.checkpoint)
        module = build_module(OmegaConf.create(ckpt["sslkit"]["config"]))
        module.load_state_dict(ckpt["state_dict"])
        module.eval()
        loader = dm.loader(data, self.batch_size, False, False)
        try:
            features, _ = extract(module.features, loader)
        except RuntimeError as err:
            raise DataError(
                f"prior.checkpoint={self.checkpoint}: its encoder does not take {dm.name} images "
                f"({str(err).splitlines()[0]})"
            ) from None
        return features
