"""The learning rate a run trains with: ``optim.optimizer.lr`` scaled with the batch one optimiser
step sees, by the rule ``optim.lr_scaling`` against ``optim.base_batch_size``.

* ``none``: the lr as given (the default of adamw.yaml and sgd.yaml);
* ``linear``: lr x batch / base (Goyal et al. 2017; SimCLR's 0.3 x B/256 with LARS, MoCo v3's
  and solo-learn's lr x batch / 256);
* ``sqrt``: lr x sqrt(batch / base) (SimCLR's appendix B.1, 0.075 x sqrt(B) = 1.2 x sqrt(B/256)).

The batch is the global one, ``data.batch_size`` (every rank gets ``data.batch_size / W`` of it,
W = devices x nodes), times ``trainer.accumulate_grad_batches`` (the samples whose gradients one
optimiser step averages). Changing the number of devices or nodes therefore leaves the lr, like
the rest of the schedule, unchanged; changing the global batch rescales it by the rule.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from omegaconf import DictConfig

from sslkit.errors import ConfigError
from sslkit.training.preflight import planned_world_size

RULES = ("none", "linear", "sqrt")


@dataclass(frozen=True)
class LRScaling:
    """The effective lr of a run and the numbers it was computed from."""

    lr: float | None  # what the optimiser is built with (its peak, before warm-up and decay)
    base_lr: float | None  # optim.optimizer.lr (None: the optimiser's own default)
    rule: str  # optim.lr_scaling
    batch: int  # samples per optimiser step: global batch x accumulate_grad_batches
    base_batch_size: int  # optim.base_batch_size
    global_batch: int  # data.batch_size
    accumulate_grad_batches: int
    world_size: int | None  # devices x nodes; None where the trainer decides ("auto")

    def line(self) -> str:
        """The run header's line: ``lr 0.6 = 0.3 x 512/256 (optim.lr_scaling=linear, ...)``."""
        if self.rule == "none":
            shown = "the optimiser's default" if self.lr is None else f"{self.lr:g}"
            how = f"lr {shown} (optim.lr_scaling=none: optim.optimizer.lr as given"
        else:
            ratio = f"{self.batch}/{self.base_batch_size}"
            term = ratio if self.rule == "linear" else f"sqrt({ratio})"
            how = (f"lr {self.lr:.6g} = {self.base_lr:g} x {term} (optim.lr_scaling={self.rule}, "
                   f"optim.base_batch_size={self.base_batch_size}")
        # (no " batch " word: progress lines are told apart by it)
        batch = f"data.batch_size={self.global_batch} global"
        if self.world_size:
            processes = "process" if self.world_size == 1 else "processes"
            batch += f" = {self.world_size} {processes} x {self.global_batch // self.world_size}"
        if self.accumulate_grad_batches > 1:
            batch += f", x {self.accumulate_grad_batches} accumulated = {self.batch} per step"
        return f"{how}; {batch})"

    def summary(self) -> dict:
        """summary.json's entries: ``lr``, ``lr_base``, ``lr_scaling``, ``lr_batch``, ..."""
        fields = asdict(self)
        return {"lr": fields.pop("lr"), "lr_base": fields.pop("base_lr"),
                "lr_scaling": fields.pop("rule"), "lr_batch": fields.pop("batch"),
                "lr_base_batch_size": fields.pop("base_batch_size"), **fields}


def scale(base_lr: float, rule: str, batch: int, base_batch_size: int) -> float:
    """``base_lr`` scaled from ``base_batch_size`` to ``batch`` by ``rule``."""
    if rule == "linear":
        return base_lr * batch / base_batch_size
    if rule == "sqrt":
        return base_lr * math.sqrt(batch / base_batch_size)
    if rule == "none":
        return base_lr
    raise ConfigError(f"optim.lr_scaling={rule!r}: expected one of {', '.join(map(repr, RULES))}")


def effective_lr(cfg: DictConfig) -> LRScaling:
    """The lr ``cfg`` trains with, and how it was computed."""
    optim = cfg.optim
    # configs saved before the rule existed (checkpoints of older runs) trained with the lr as
    # given: read them as `none`
    rule = optim.get("lr_scaling") or "none"
    base_batch = int(optim.get("base_batch_size") or 256)
    base_lr = optim.optimizer.get("lr")
    if base_lr is None and rule != "none":
        raise ConfigError(f"optim.lr_scaling={rule} scales optim.optimizer.lr, which is not set; "
                          "give optim.optimizer.lr=... or optim.lr_scaling=none")
    global_batch = int(cfg.data.batch_size)
    trainer = cfg.get("trainer") or {}
    accumulate = int(trainer.get("accumulate_grad_batches") or 1)
    batch = global_batch * accumulate
    lr = None if base_lr is None else scale(float(base_lr), rule, batch, base_batch)
    return LRScaling(lr=lr, base_lr=None if base_lr is None else float(base_lr),
                     rule=rule, batch=batch, base_batch_size=base_batch,
                     global_batch=global_batch, accumulate_grad_batches=accumulate,
                     world_size=planned_world_size(trainer))
