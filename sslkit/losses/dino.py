"""DINO: self-distillation of a centred, sharpened momentum teacher into the student."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from sslkit.losses.base import LossOutput, check_views, detached_logs
from sslkit.losses.cacr import check_positive, entropy, full_precision, prepare
from sslkit.losses.keys import check_keys
from sslkit.losses.center import EMACenter
from sslkit.losses.prototypes import Prototypes


class DINO(nn.Module):
    r"""DINO loss (Caron, Touvron, Misra, Jégou, Mairal, Bojanowski & Joulin, "Emerging
    Properties in Self-Supervised Vision Transformers", ICCV 2021).

    Called as ``head(z, k=keys)``: ``z`` ``[B, V, D]`` are the student's projections (the DINO
    head's bottleneck) of every view, the first ``n_global`` the global crops; ``k``
    ``[B, n_global, D]`` the teacher's (the module's momentum encoder) projections of the global
    crops. The last layer of the DINO head, ``out_dim`` weight-normalised prototypes, is held
    here (:class:`~sslkit.losses.prototypes.Prototypes`): the student's W is learnt, the
    teacher's :math:`W_t` is its EMA. With unit inputs, the centre c
    (:class:`~sslkit.losses.center.EMACenter`) and the temperatures :math:`\tau_s, \tau_t`:

    .. math::
        P^v_s = \operatorname{softmax}\big(\hat z^v W^\top/\tau_s\big),\qquad
        P^a_t = \operatorname{softmax}\big((\hat k^a W_t^\top - c)/\tau_t\big)\ \text{(no gradient)}

    .. math::
        \mathcal L = \frac{1}{|\mathcal P|}\sum_{(a, v)\in\mathcal P}\frac1B\sum_i
            -\sum_j P^a_{t,ij}\log P^v_{s,ij},\qquad
        \mathcal P = \{(a, v): a < n_{global},\ v < V,\ v\ne a\}

    After each step the centre moves towards the batch mean of the teacher outputs,
    :math:`c \leftarrow m c + (1-m)\,\mathrm{mean}_{i,a}\,\hat k^a_i W_t^\top`, and
    :math:`W_t \leftarrow \lambda W_t + (1-\lambda) W` with the momentum encoder's coefficient
    :math:`\lambda` (:meth:`after_step`). The teacher temperature warms up linearly from
    ``warmup_teacher_temp`` to ``teacher_temp`` over ``warmup_teacher_temp_epochs`` epochs
    (:meth:`teacher_temperature`); the student's prototypes are not updated during the first
    ``freeze_last_layer`` epochs: their gradient, computed as usual, is dropped after the backward
    (:meth:`frozen_parameters`, which the training module reads; official
    ``cancel_gradients_last_layer``), so under DDP they take part in every all-reduce. The epoch
    comes from :meth:`set_progress` (a buffer, saved in checkpoints, as are the centre and both
    prototype matrices).

    Follows ``facebookresearch/dino`` ``main_dino.py`` (``DINOLoss.forward`` and
    ``update_center``, ``teacher_temp_schedule = linspace(warmup_teacher_temp, teacher_temp,
    warmup_teacher_temp_epochs)`` then constant, ``cancel_gradients_last_layer``) and
    ``vision_transformer.py`` (``DINOHead``: ``normalize`` then the weight-normalised
    ``last_layer`` with ``norm_last_layer=True``). The official centre all-reduces over GPUs,
    i.e. is the global batch mean, as here.

    Args:
        out_dim: K, number of prototypes (official ``--out_dim`` 65536 for ImageNet; 4096 here
            as solo-learn's CIFAR recipe, whose logits fit a CPU: B x V x K floats per step).
        student_temp: :math:`\tau_s` (official 0.1).
        teacher_temp: :math:`\tau_t` after the warm-up (0.07, the official ViT-S/16 recipe and
            solo-learn; the argparse default is 0.04).
        warmup_teacher_temp: :math:`\tau_t` at epoch 0 (official 0.04).
        warmup_teacher_temp_epochs: epochs of the linear warm-up (30, the official recipe and
            the value its help text calls the default; solo-learn 50).
        center_momentum: m (official 0.9).
        momentum: base EMA coefficient of the teacher (official ``--momentum_teacher`` 0.996),
            raised to 1 by a cosine schedule (``momentum_schedule``).
        freeze_last_layer: epochs without gradient for the student's prototypes (official 1).
        n_global: leading views that are global crops, read by the teacher (official 2).
        dim: input dimension (the bottleneck), if known (null: from the first batch).

    Logs: ``teacher_temp``, ``teacher_entropy`` and ``student_entropy`` (mean entropy of a
    teacher / student distribution: a collapse to one prototype sends the first to 0, a uniform
    collapse to log K), ``kl`` (mean KL(teacher || student)).

    Example::

        >>> import torch
        >>> from sslkit.losses import DINO
        >>> z = torch.randn(8, 4, 16, requires_grad=True)  # 2 global + 2 local crops
        >>> DINO(out_dim=32)(z, k=torch.randn(8, 2, 16)).loss.backward()
    """

    requires: ClassVar[frozenset[str]] = frozenset({"k"})
    uses_predictor: ClassVar[bool] = False
    momentum_schedule: ClassVar[str] = "cosine"
    shuffle_bn: ClassVar[bool] = False

    def __init__(
        self,
        out_dim: int = 4096,
        student_temp: float = 0.1,
        teacher_temp: float = 0.07,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 30,
        center_momentum: float = 0.9,
        momentum: float = 0.996,
        freeze_last_layer: int = 1,
        n_global: int = 2,
        dim: int | None = None,
    ) -> None:
        super().__init__()
        check_positive(student_temp=student_temp, teacher_temp=teacher_temp,
                       warmup_teacher_temp=warmup_teacher_temp)
        for name, value, low in (("warmup_teacher_temp_epochs", warmup_teacher_temp_epochs, 0),
                                 ("freeze_last_layer", freeze_last_layer, 0),
                                 ("n_global", n_global, 1)):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.student_temp, self.teacher_temp = float(student_temp), float(teacher_temp)
        self.warmup_teacher_temp = float(warmup_teacher_temp)
        self.warmup_teacher_temp_epochs = int(warmup_teacher_temp_epochs)
        self.momentum = float(momentum)
        self.freeze_last_layer = int(freeze_last_layer)
        self.n_global = int(n_global)
        self.prototypes = Prototypes(out_dim, dim, normalization="weight_norm", ema=True)
        self.center = EMACenter(center_momentum, dim=out_dim)
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))

    @property
    def key_views(self) -> slice:
        return slice(0, self.n_global)

    def extra_repr(self) -> str:
        return (f"student_temp={self.student_temp}, teacher_temp={self.teacher_temp}, "
                f"warmup_teacher_temp={self.warmup_teacher_temp}, "
                f"warmup_teacher_temp_epochs={self.warmup_teacher_temp_epochs}, "
                f"momentum={self.momentum}, freeze_last_layer={self.freeze_last_layer}, "
                f"n_global={self.n_global}")

    def materialize(self, dim: int) -> None:
        """Create the prototypes for ``dim``-dimensional projections (before the optimiser)."""
        self.prototypes.materialize(dim)

    def set_progress(self, step: int = 0, epoch: int = 0) -> None:
        """The current (0-based) epoch: sets the teacher temperature and the freezing."""
        self.epoch.fill_(int(epoch))

    def teacher_temperature(self, epoch: int | None = None) -> float:
        """``linspace(warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs)[epoch]``
        during the warm-up, ``teacher_temp`` after it (official ``teacher_temp_schedule``)."""
        e = int(self.epoch) if epoch is None else int(epoch)
        n = self.warmup_teacher_temp_epochs
        if e >= n:
            return self.teacher_temp
        if n == 1:
            return self.warmup_teacher_temp
        return self.warmup_teacher_temp + (self.teacher_temp - self.warmup_teacher_temp) * e / (n - 1)

    @property
    def frozen(self) -> bool:
        return int(self.epoch) < self.freeze_last_layer

    def frozen_parameters(self) -> list[nn.Parameter]:
        """Parameters whose gradient this step is dropped after the backward: the student's
        prototypes during the first ``freeze_last_layer`` epochs."""
        return [self.prototypes.weight] if self.frozen else []

    @torch.no_grad()
    def after_step(self, momentum: float | None = None) -> None:
        """Once per training step, after the optimiser step: move the centre to the last forward's
        teacher outputs and the teacher prototypes towards the student's by ``momentum``, the
        coefficient the momentum encoder used for this step."""
        self.center.update()
        if momentum is not None:
            self.prototypes.momentum_update(momentum)

    def forward(self, z: Tensor, k: Tensor | None = None, **_: object) -> LossOutput:
        check_views(z)
        views = z.shape[1]
        if views < self.n_global:
            raise ValueError(f"dino: n_global={self.n_global} but z has only {views} views")
        check_keys("dino", z, k, self.n_global)
        temp = self.teacher_temperature()
        with full_precision(z):
            x = prepare(z, False)
            log_s = torch.log_softmax(self.prototypes(x) / self.student_temp, -1)
            with torch.no_grad():
                t_out = self.prototypes.teacher(k.detach().to(x.dtype))  # [B, n_global, K]
                p_t = torch.softmax(self.center(t_out) / temp, dim=-1)
                self.center.observe(t_out)  # applied by after_step, not seen by this forward
            loss = x.new_zeros(())
            pairs = 0
            for a in range(self.n_global):
                others = [v for v in range(views) if v != a]
                loss = loss + (-(p_t[:, a, None, :] * log_s[:, others]).sum(-1)).sum(1).mean()
                pairs += len(others)
            loss = loss / pairs
            with torch.no_grad():
                t_ent = entropy(p_t).mean()
                logs = detached_logs(teacher_temp=temp, teacher_entropy=t_ent,
                                     student_entropy=entropy(log_s.exp()).mean(),
                                     kl=loss - t_ent)
        return LossOutput(loss, logs)
