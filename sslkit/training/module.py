"""The Lightning module: augment -> encoder -> projector -> (gather) -> loss head.

It composes the parts given to it and adds only what the head declares it needs
(``head.requires``): keys ``k`` and a key ``queue`` from its parts, any other name from the batch
field of that name (:mod:`sslkit.data.fields`); and a predictor when ``head.uses_predictor``.
Evaluators are callbacks that read the detached features returned by ``training_step`` /
``validation_step``.

Where ``k`` comes from: a momentum encoder (:class:`~sslkit.parts.momentum.MomentumCopy`) when
the head's ``momentum`` is a number; with ``momentum = None`` the online network's own
projections of the key views (before the predictor), detached, and no key network at all
(SimSiam, NNCLR). Either way ``k`` is gathered across ranks like the other head inputs.

Hooks a head with state may define, each called generically (any future head can use them):

* ``materialize(proj_dim)``: size its parameters, here in ``__init__``, before the optimiser
  and DDP are built (both need every parameter to exist). A head's parameters (prototypes)
  are trained with the rest.
* ``set_progress(step=, epoch=)``: before each training forward, the optimiser steps done so
  far and the 0-based epoch (schedules: freezing, temperature warm-up).
* ``frozen_parameters()``: after each backward, these parameters' gradients are dropped, so the
  optimiser leaves them alone this step (SwAV's ``freeze_prototypes_niters``, DINO's
  ``cancel_gradients_last_layer``). The forward still uses them with gradient, as the official
  code does, so under DDP every parameter takes part in every all-reduce.
* ``after_step(momentum=m)``: after each optimiser step, after the momentum encoder's update
  with coefficient m (None without one): EMA state of the head (DINO's centre and teacher
  prototypes).

The momentum encoder's schedule is ``model.momentum_schedule`` when set, else the head's own
``momentum_schedule`` (BYOL, MoCo v3, DINO: cosine), else constant. The update of optimiser step
t (0-based, of K) uses progress t / K, so the first step uses the base momentum.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Literal

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from sslkit.augment.pipeline import ViewAugment
from sslkit.data.fields import MODULE_PARTS, batch_field
from sslkit.runtime.distributed import gather_no_grad, gather_with_grad
from sslkit.encoders.projector import MLP
from sslkit.optim import build_optimizer, warmup_cosine
from sslkit.errors import ConfigError
from sslkit.parts.guard import NonFiniteGuard, all_finite, scaler_backs_off
from sslkit.parts.momentum import MomentumCopy
from sslkit.parts.queue import KeyQueue
from sslkit.parts.shuffle_bn import ShuffleBN
from sslkit.parts.views import ViewPlan

FORMAT_VERSION = 1
# global: the head sees the batch gathered from every rank; local: each rank's own batch
LOSS_SCOPES = ("global", "local")
# joint: the views of a step in one encoder call (shared BatchNorm statistics, SimCLR's batch);
# separate: one call per view (per-view statistics, as CACR's official code loops over views)
VIEWS_FORWARD = ("joint", "separate")


class Backbone(nn.Module):
    """Encoder followed by projector; ``forward`` returns (features, projections)."""

    def __init__(self, encoder: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.encoder, self.projector = encoder, projector

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.encoder(x)
        return h, self.projector(h)


class ContrastiveModule(L.LightningModule):
    def __init__(
        self,
        encoder: nn.Module,
        projector: Callable[[int], MLP],
        head: nn.Module,
        augment: ViewAugment,
        optimizer: Callable[..., torch.optim.Optimizer],
        weight_decay: float = 1e-4,
        warmup_epochs: float = 1.0,
        final_lr_ratio: float = 0.0,
        predictor: Callable[[int], MLP] | None = None,
        momentum_schedule: str | None = None,
        channels_last: bool = False,
        micro_batch: int | None = None,
        compile_encoder: bool = False,
        nonfinite: str = "stop",
        max_nonfinite_skips: int = 10,
        shuffle_bn_groups: int = 8,
        adversarial: Callable[..., nn.Module] | None = None,
        loss_scope: str = "global",
        views_forward: Literal["joint", "separate"] = "joint",
        config: dict | None = None,
    ) -> None:
        super().__init__()
        if loss_scope not in LOSS_SCOPES:
            raise ConfigError(
                f"model.loss_scope={loss_scope!r}: valid choices are {', '.join(LOSS_SCOPES)}"
            )
        if views_forward not in VIEWS_FORWARD:
            raise ConfigError(f"model.views_forward={views_forward!r}: valid choices are "
                              f"{', '.join(VIEWS_FORWARD)}")
        self.loss_scope, self.views_forward = loss_scope, views_forward
        self.online = Backbone(encoder, projector(encoder.num_features))
        self.head, self.augment = head, augment
        self.requires = frozenset(getattr(head, "requires", frozenset()))
        proj_dim = self.online.projector.out_dim
        if callable(getattr(head, "materialize", None)):
            head.materialize(proj_dim)  # before the optimiser and DDP see the parameters
        self.predictor = None
        if getattr(head, "uses_predictor", False):
            if predictor is None:
                raise ValueError(f"{type(head).__name__} needs a predictor: set model.predictor")
            self.predictor = predictor(proj_dim)
        self.key_net = None
        self.momentum_schedule = None
        uses_keys = bool(self.requires & MODULE_PARTS)
        if uses_keys and not hasattr(head, "momentum"):
            raise ConfigError(f"{type(head).__name__} reads keys and declares no `momentum`: a "
                              "number for a momentum encoder, None for the online projections")
        if uses_keys and head.momentum is not None:
            schedule = momentum_schedule or getattr(head, "momentum_schedule", "constant")
            self.momentum_schedule = schedule
            self.key_net = MomentumCopy(self.online, head.momentum, schedule)
        self.queue = KeyQueue(head.queue_size, proj_dim) if "queue" in self.requires else None
        self.views = ViewPlan(head, augment.num_views, augment.views)
        self._online_keys: list[int] | None = None
        if uses_keys and self.key_net is None:
            missing = sorted(set(self.views.key) - set(self.views.query))
            if missing:
                raise ConfigError(f"{type(head).__name__} takes k from the online network (momentum "
                                  f"None) but reads keys of views {missing} that are not queries")
            self._online_keys = [self.views.query.index(i) for i in self.views.key]
        use_shuffle = self.key_net is not None and getattr(head, "shuffle_bn", False)
        self.shuffle_bn = ShuffleBN(shuffle_bn_groups) if use_shuffle else None
        # robust pretraining (adversarial views, divergence, SAM): sslkit/robust/objective.py
        self.robust = (adversarial(online=self.online, feature_dim=encoder.num_features,
                                   proj_dim=proj_dim) if adversarial is not None else None)
        if self.robust is not None and self.robust.views == "append" and getattr(head, "query_views", None) is not None:
            raise ConfigError(
                f"adversarial.views=append adds a view (the adversarial anchor) to each query, and {type(head).__name__} "
                f"reads a fixed set of query views ({self.views.query}); use adversarial.views=replace"
            )
        self.optimizer_factory = optimizer
        self.weight_decay, self.warmup_epochs = weight_decay, warmup_epochs
        self.final_lr_ratio = final_lr_ratio
        self.channels_last = channels_last
        if micro_batch is not None and (isinstance(micro_batch, bool) or not isinstance(micro_batch, int)
                                        or micro_batch < 1):
            raise ConfigError(f"model.micro_batch={micro_batch!r}: give a positive number of rows "
                              "per encoder call, or null for every view of a step in one call")
        self.micro_batch = micro_batch
        self.config = config or {}
        self.guard = NonFiniteGuard(nonfinite, max_nonfinite_skips)
        self._augment_gen: torch.Generator | None = None
        if channels_last:
            self.to(memory_format=torch.channels_last)
        if compile_encoder:
            # in place: parameter names (and so checkpoints) stay those of the plain module
            self.online.encoder.compile()

    # -- forward pieces -----------------------------------------------------------------------
    def _layout(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def embed_views(self, net: nn.Module, views: list[Tensor], run: Callable | None = None
                    ) -> tuple[Tensor, Tensor]:
        """Run views of equal size as one batch (shared BatchNorm statistics, like SimCLR's
        concatenated batch), through ``run`` if given (shuffle BN); returns features and
        projections as ``[B, V, *]``. With ``views_forward="separate"`` each view is a call of
        its own (per-view BatchNorm statistics). With ``micro_batch`` (and no ``run``) a call's
        batch goes through ``net`` in pieces of at most that many rows, each with its own
        BatchNorm statistics."""
        feats: list[Tensor | None] = [None] * len(views)
        projs: list[Tensor | None] = [None] * len(views)
        by_size: dict[tuple[int, ...] | int, list[int]] = {}
        for i, v in enumerate(views):
            by_size.setdefault(i if self.views_forward == "separate" else tuple(v.shape[1:]), []).append(i)
        for idx in by_size.values():
            x = self._layout(torch.cat([views[i] for i in idx]))
            if run is None and self.micro_batch is not None and len(x) > self.micro_batch:
                parts = [net(c) for c in x.split(self.micro_batch)]  # slices keep x's layout
                h, z = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
            else:
                h, z = (run or net)(x)
            for j, (hj, zj) in enumerate(zip(h.chunk(len(idx)), z.chunk(len(idx)))):
                feats[idx[j]], projs[idx[j]] = hj, zj
        return torch.stack(feats, 1), torch.stack(projs, 1)

    def head_input(self, z: Tensor) -> Tensor:
        """What the head sees of this rank's projections: the global batch gathered from every
        rank (with gradient), or with ``loss_scope=local`` this rank's own batch."""
        return z if self.loss_scope == "local" else gather_with_grad(z)

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        """Encoder features of un-augmented images (what probes use)."""
        return self.online.encoder(self._layout(self.augment.eval_transform(images)))

    # -- training -----------------------------------------------------------------------------
    def augment_generator(self, device: torch.device, batch_idx: int) -> torch.Generator:
        """The generator this step's augmentation draws from, seeded from ``(seed, epoch,
        batch_idx, global_rank)``. The global RNG would not do: ``seed_everything`` gives every
        rank the same seed, so sample i of every rank would get the same crops and jitter (a
        global batch over W ranks would hold only B/W distinct draws). Seeding per step also
        makes a resumed run draw what the uninterrupted one would have, on CPU and GPU alike
        (checkpoints hold the CPU RNG state only)."""
        if self._augment_gen is None or self._augment_gen.device != device:
            self._augment_gen = torch.Generator(device=device)
        key = [int(self.config.get("seed") or 0), self.current_epoch, batch_idx, self.global_rank]
        self._augment_gen.manual_seed(int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0]))
        return self._augment_gen

    def head_inputs(self, batch: dict[str, Tensor], views: list[Tensor],
                    generator: torch.Generator | None = None, one_rank: bool = False
                    ) -> tuple[list[Tensor], Tensor, Tensor, dict[str, Tensor], Tensor | None]:
        """Everything a step feeds the head, from a batch and its augmented ``views``: the query
        views, their features ``h`` and projections ``z`` (this rank's, ``[B, V, *]``), the
        head's extra inputs (momentum keys, queue, and every batch field the head ``requires``;
        gathered across ranks unless ``loss_scope == "local"``), and the keys of every rank
        (what the queue takes). ``one_rank``: no collective calls at all, for callbacks that
        run on rank 0 only (the module in eval mode, so the key encoder needs no shuffle BN)."""
        local = one_rank or self.loss_scope == "local"
        queries = self.views.pick(views, self.views.query)
        h, z = self.embed_views(self.online, queries)
        own_keys = None
        if self._online_keys is not None:  # k: the projections themselves, before the predictor
            own_keys = z.detach()[:, self._online_keys]
        if self.predictor is not None:
            b, v, d = z.shape
            z = self.predictor(z.reshape(b * v, d)).reshape(b, v, -1)
        extras: dict[str, Tensor] = {}
        keys = None
        if self.key_net is not None:
            with torch.no_grad():
                run = (partial(self.shuffle_bn, self.key_net, generator=generator)
                       if self.shuffle_bn and not one_rank else None)
                _, own_keys = self.embed_views(self.key_net, self.views.pick(views, self.views.key), run)
        if own_keys is not None:
            keys = own_keys if one_rank else gather_no_grad(own_keys)  # the queue takes every rank's
            if "k" in self.requires:
                extras["k"] = own_keys if local else keys
        if self.queue is not None:
            extras["queue"] = self.queue.entries()
        for name in sorted(self.requires - MODULE_PARTS):
            field = batch_field(name)
            if field not in batch:
                raise ConfigError(f"loss {type(self.head).__name__} needs `{name}` and the batch "
                                  f"has no `{field}` field")
            extras[name] = batch[field] if local else gather_no_grad(batch[field])
        return queries, h, z, extras, keys

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        image = batch["image"]
        if callable(getattr(self.head, "set_progress", None)):
            self.head.set_progress(step=self.global_step, epoch=self.current_epoch)
        gen = self.augment_generator(image.device, batch_idx)
        views = self.augment(image, generator=gen)
        queries, h, z, extras, keys = self.head_inputs(batch, views, gen)
        if self.robust is None:
            out = self.head(self.head_input(z), **extras)
        else:  # clean + adversarial + divergence terms: sslkit/robust/objective.py
            out = self.robust(self, queries, h, z, extras, generator=self._augment_gen)
        if not torch.isfinite(out.loss.detach()):
            terms = {"loss": out.loss, **out.logs}
            if self.guard.should_skip("loss", self._where(), terms, self._last_checkpoint()):
                self.log("train/skipped_steps", float(self.guard.skipped))
                return None  # Lightning skips backward and the optimiser step
        if self.queue is not None and keys is not None:
            self.queue.push(self.head.enqueue(keys))
        bs = batch["image"].shape[0]
        self.log("train/loss", out.loss.detach(), prog_bar=True, batch_size=bs)
        for name, value in out.logs.items():
            if isinstance(value, Tensor) and value.numel() != 1:
                continue
            self.log(f"train/{name}", value, batch_size=bs)
        return {"loss": out.loss, "features": h[:, 0].detach(), "labels": batch["label"]}

    def on_after_backward(self) -> None:
        frozen = getattr(self.head, "frozen_parameters", None)
        for p in (frozen() if callable(frozen) else ()):
            p.grad = None  # the optimiser skips a parameter without a gradient

    def on_before_optimizer_step(self, optimizer) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
        if not all_finite(grads) and not scaler_backs_off(self.trainer):
            if self.guard.should_skip("gradient", self._where(), {}, self._last_checkpoint()):
                optimizer.zero_grad(set_to_none=True)  # parameters without .grad are not updated
                self.log("train/skipped_steps", float(self.guard.skipped))

    def _where(self) -> str:
        return f"epoch {self.current_epoch} step {self.global_step}"

    def _last_checkpoint(self):
        from pathlib import Path

        return Path(self.trainer.default_root_dir) / "checkpoints" / "last.ckpt"

    def optimizer_step(self, *args, **kwargs) -> None:
        """The optimiser step, then the EMA updates that follow it: the momentum encoder and the
        head's ``after_step``. Here rather than in ``on_train_batch_end``, which Lightning calls
        after the callbacks' (a checkpoint saved by a step-interval callback would miss them)."""
        super().optimizer_step(*args, **kwargs)
        m = None
        if self.key_net is not None:
            # global_step still counts the steps before this one: Lightning increments it after
            m = self.key_net.update(self.online, self.momentum_progress(self.global_step))
            self.log("train/momentum", m, on_step=True, on_epoch=False)
        if callable(getattr(self.head, "after_step", None)):
            self.head.after_step(momentum=m)

    def momentum_progress(self, step: int) -> float:
        """Progress of optimiser step ``step`` (0-based) through training: step / K, 0 at the
        first step and (K - 1) / K at the last, as the official schedules (BYOL, MoCo v3 and DINO
        index their cosine by the step about to be taken)."""
        return step / max(1, int(self.trainer.estimated_stepping_batches))

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return {"features": self.features(batch["image"]), "labels": batch["label"]}

    # -- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self):
        modules = [self.online] + ([self.predictor] if self.predictor is not None else [])
        modules += [self.robust] if self.robust is not None else []
        modules += [self.head]  # its parameters, if any (prototypes)
        opt = build_optimizer(self.optimizer_factory, modules, self.weight_decay)
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        warmup = min(int(self.warmup_epochs * per_epoch), total // 2)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, warmup_cosine(total, max(warmup, 1), self.final_lr_ratio)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- checkpoints --------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["sslkit"] = {
            "format_version": FORMAT_VERSION,
            "config": self.config,
            "torch_rng": torch.get_rng_state(),
        }
        if self.robust is not None:
            checkpoint["sslkit"]["robust"] = self.robust.checkpoint_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        meta = checkpoint.get("sslkit", {})
        if "torch_rng" in meta:
            torch.set_rng_state(meta["torch_rng"])
        if self.robust is not None and "robust" in meta:
            self.robust.load_checkpoint_state(meta["robust"])
