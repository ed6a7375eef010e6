"""What every prior source shares: the table's checks, the on-disk cache, attaching to the data."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import Tensor

from sslkit.data.fields import attach
from sslkit.errors import ConfigError, DataError


class PriorSource:
    """A source computes ``table(dm) -> FloatTensor[N, P]``, row i for sample i of the stored
    training split ``dm.split(dm.train_split)`` (before any long-tailed subsetting)."""

    name = "prior"

    def compute(self, dm, data) -> Tensor:
        raise NotImplementedError

    def table(self, dm) -> Tensor:
        data = dm.split(dm.train_split)
        values = torch.as_tensor(self.compute(dm, data)).float()
        if values.dim() == 1:
            values = values[:, None]
        if values.dim() != 2 or len(values) != len(data):
            raise DataError(
                f"prior={self.name}: expected one row per training sample, shape [{len(data)}, P], "
                f"got {tuple(values.shape)}"
            )
        if not torch.isfinite(values).all():
            raise DataError(f"prior={self.name}: the prior table holds non-finite values")
        return values


def fingerprint(dm, data) -> str:
    """A digest of the training split's content (images in memory, else file paths)."""
    h = hashlib.sha1(f"{dm.name}:{len(data)}".encode())
    images = getattr(data, "images", None)
    if images is not None:
        h.update(images.contiguous().numpy().tobytes())
    else:
        h.update("\n".join(str(s[0]) for s in getattr(data, "samples", [])).encode())
    return h.hexdigest()[:16]


def cached(cache_dir: str | Path, key: dict, compute) -> Tensor:
    """``compute()`` once per ``key``; kept in ``cache_dir/<digest>.pt`` (written atomically, so
    processes started together never read half a file)."""
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    path = Path(cache_dir).expanduser() / f"{digest}.pt"
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    values = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(values, tmp)
    os.replace(tmp, path)
    (path.with_suffix(".json")).write_text(json.dumps(key, indent=2, default=str) + "\n")
    return values


def setup_prior(source: PriorSource | None, dm, head) -> None:
    """Attach the prior to the pretraining split, or refuse a prior the head does not use."""
    if source is None:
        return
    if "prior" not in getattr(head, "requires", ()):
        raise ConfigError(
            f"prior={source.name} is set but loss {type(head).__name__} takes no prior; use it "
            "with a kernel (loss=dunif loss.kernel=rbf loss.sigma=1) or drop prior"
        )
    attach(dm.split("pretrain"), "prior", source.table(dm))


def absolute_paths(cfg):
    """The prior config with its relative paths made absolute (Hydra may change directory)."""
    import hydra
    from omegaconf import OmegaConf

    cfg = cfg.copy()
    for key in ("path", "checkpoint", "cache_dir"):
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, str) and not Path(value).expanduser().is_absolute():
            OmegaConf.update(cfg, key, hydra.utils.to_absolute_path(value))
    return cfg
