"""Transfer: the fast linear probe of the pretrained encoder on another dataset.

``data`` names any data config (``configs/data/NAME.yaml``; ``root`` and ``overrides`` change
its keys). The target images are adapted to what the encoder takes: grey images are repeated
into every channel of an RGB encoder, RGB images become grey (luminance) for a grey one, other
channel counts are refused; with ``resize`` (default) every image is resized and centre-cropped
to the pretraining crop size, as features are always extracted; with ``resize=false`` the images
keep their size and an encoder that cannot take it (a fixed-size head such as SmallAlexNet's) is
refused in one line. The probe is ``linear``'s: L2 chosen on a seeded held-out part of the
target's training split (the target's validation images left out), refitted on all of it, scored
once on the target's test split; the target's validation split is scored beside it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from sslkit.errors import ConfigError
from sslkit.eval.features import extract
from sslkit.eval.linear import classification_report, select_and_fit, top1


def adapt_channels(x: Tensor, channels: int) -> Tensor:
    """Float images ``[B, C, H, W]`` with ``channels`` channels: grey repeated into each, RGB to
    grey by luminance (torchvision's weights); any other change is refused."""
    c = x.shape[1]
    if c == channels:
        return x
    if c == 1:
        return x.expand(-1, channels, -1, -1)
    if c == 3 and channels == 1:
        from torchvision.transforms.v2.functional import rgb_to_grayscale

        return rgb_to_grayscale(x)
    raise ConfigError(f"eval.transfer: the encoder takes {channels}-channel images and the target "
                      f"data has {c}; only grey -> RGB (repeated) and RGB -> grey (luminance) adapt")


def channel_change(source: int, target: int) -> str:
    if source == target:
        return f"{target} (unchanged)"
    return f"{source} -> {target} ({'repeated' if source == 1 else 'luminance'})"


class Transfer:
    """Offline evaluator ``transfer``; see the module docstring."""

    # needs a second dataset: not in ``eval=all``, runs when named (sslkit/training/config.py)
    needs_other_data = True

    # top-level keys of every result (checked by tests/eval/test_evaluator_contract.py)
    result_keys = ("protocol", "data", "adapted", "top1", "per_class_top1", "val_top1", "l2",
                   "holdout_top1", "n_train", "n_val", "n_test", "seconds")

    def __init__(self, data: str = "cifar10", root: str | None = None, overrides: Mapping[str, Any] | None = None,
                 resize: bool = True, l2_grid: Sequence[float] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
                 holdout_fraction: float = 0.1, max_iter: int = 50, tolerance: float = 1e-6) -> None:
        from sslkit.training.config import choices

        if data not in choices("data"):
            raise ConfigError(f"eval.transfer.data={data!r}: no configs/data/{data}.yaml; choose one of "
                              f"{', '.join(choices('data'))}")
        self.data, self.root, self.resize = data, root, resize
        self.overrides = dict(overrides or {})
        self.l2_grid, self.holdout_fraction = list(l2_grid), holdout_fraction
        self.max_iter, self.tolerance = max_iter, tolerance
        self._built: dict[int, object] = {}

    def target(self, seed: int):
        """The target data module (set up: a missing dataset fails here, in one line), built
        once per data seed from ``configs/data/<data>.yaml`` with ``root`` and ``overrides``."""
        if seed not in self._built:
            from hydra.core.global_hydra import GlobalHydra
            from omegaconf import OmegaConf

            from sslkit.training.build import build_datamodule
            from sslkit.training.config import compose_config, describe_compose_error

            args = [f"data={self.data}", f"seed={seed}"]
            if GlobalHydra.instance().is_initialized():  # inside train.py / evaluate.py's Hydra
                from hydra import compose

                try:
                    cfg = compose("train", overrides=args)
                except Exception as err:  # noqa: BLE001 - Hydra's and OmegaConf's refusals alike
                    raise ConfigError(f"eval.transfer: {describe_compose_error(err)}") from None
            else:
                cfg = compose_config("train", args)
            for key, value in {**self.overrides, **({"root": self.root} if self.root else {})}.items():
                if key not in cfg.data:
                    raise ConfigError(f"eval.transfer.overrides: data config {self.data} has no key "
                                      f"{key!r}; its keys: {', '.join(k for k in cfg.data if k != '_target_')}")
                OmegaConf.update(cfg.data, key, value, merge=False)
            dm = build_datamodule(cfg)
            dm.setup("validate")
            self._built[seed] = dm
        return self._built[seed]

    def check(self, datamodule) -> None:
        """Refuse, before any work, target data that is missing or whose channels cannot be
        adapted to the encoder's (the pretraining data's)."""
        target = self.target(int(getattr(datamodule, "seed", 0) or 0))
        adapt_channels(torch.zeros(1, target.in_chans, 1, 1), datamodule.in_chans)

    def _features(self, ctx, target):
        module, aug = ctx.module, ctx.module.augment
        channels = ctx.datamodule.in_chans
        encoder = module.online.encoder

        def features(images: Tensor) -> Tensor:
            x = adapt_channels(aug.to_float(images), channels)
            x = aug.eval_transform(x) if self.resize else aug.normalize(x)
            return encoder(module._layout(x))

        if not self.resize:  # a dry run: an encoder that cannot take the target's size says so
            side = target.split(target.test_split)[0]["image"].shape[-2:]
            try:
                with torch.no_grad():
                    encoder.eval()(torch.zeros(1, channels, *side, device=ctx.device))
            except RuntimeError as err:
                raise ConfigError(
                    f"eval.transfer: the encoder ({type(encoder).__name__}, pretrained on "
                    f"{aug.crop_size} px) does not take the {side[0]}x{side[1]} images of "
                    f"{self.data} ({str(err).splitlines()[0][:120]}); set eval.transfer.resize=true"
                ) from None
            return features, f"{side[0]}x{side[1]} px (kept)"
        return features, f"resized and centre-cropped to {aug.crop_size} px"

    def __call__(self, ctx) -> dict:
        started = time.perf_counter()
        target = self.target(ctx.seed)
        adapt_channels(torch.zeros(1, target.in_chans, 1, 1), ctx.datamodule.in_chans)
        features, size = self._features(ctx, target)
        ctx.module.eval()

        def labelled(split: str) -> tuple[Tensor, Tensor]:
            with torch.autocast(ctx.device.type, dtype=ctx.autocast, enabled=ctx.autocast is not None):
                x, y = extract(features, target.eval_dataloader(split), ctx.device)
            return x[y >= 0], y[y >= 0]

        x, y = labelled(target.probe_split)
        probe, l2, scores = select_and_fit(x.to(ctx.device), y.to(ctx.device), target.num_classes,
                                           self.l2_grid, self.holdout_fraction, ctx.seed,
                                           self.max_iter, self.tolerance)
        val_top1, n_val = None, 0
        if target.has_validation:
            vx, vy = labelled("validation")
            with torch.no_grad():
                val_top1, n_val = top1(probe.logits(vx.to(ctx.device)).cpu(), vy), len(vy)
        tx, ty = labelled(target.test_split)
        with torch.no_grad():
            report = classification_report(probe.logits(tx.to(ctx.device)), ty, target.num_classes)
        return {
            "protocol": f"fast linear probe on {target.name} (L2 chosen on a held-out part of its "
                        "training split), encoder frozen",
            "data": target.name,
            "pretrained_on": ctx.datamodule.name,
            "adapted": {"channels": channel_change(target.in_chans, ctx.datamodule.in_chans), "size": size},
            **report,
            "val_top1": val_top1,
            "l2": l2,
            "holdout_top1": scores,
            "n_train": len(y),
            "n_val": n_val,
            "n_test": len(ty),
            "seconds": time.perf_counter() - started,
        }
