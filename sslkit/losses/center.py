"""DINO's centre: an exponential moving average of the teacher's outputs, subtracted from them
before the sharpening softmax so that no single dimension dominates (Caron et al. 2021, Sec. 3).
Held by the DINO head as a submodule: saved in checkpoints with the head's state."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.parameter import UninitializedBuffer, is_lazy

from sslkit.losses.prototypes import LazyState


class EMACenter(LazyState):
    r"""The buffer ``center`` ``[1, K]`` (zeros at the start, saved in checkpoints), updated
    after each step as :math:`c \leftarrow m\,c + (1 - m)\,\frac1N\sum_n t_n` over the N teacher
    outputs of the step's global batch (every global view of every instance), as
    ``DINOLoss.update_center`` of ``facebookresearch/dino`` (whose all-reduce over GPUs gives that
    global mean).

    ``forward(t)`` returns ``t - center``. The update is split in two so that a forward changes
    nothing a second forward would see: :meth:`observe` records the batch mean of a step's
    teacher outputs; :meth:`update` applies it once, after the step. K is taken from the first
    input (or :meth:`materialize`).
    """

    def __init__(self, momentum: float = 0.9, dim: int | None = None) -> None:
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"center_momentum must be in [0, 1], got {momentum}")
        self.momentum = float(momentum)
        self.register_buffer("center", UninitializedBuffer())
        self._observed: Tensor | None = None
        if dim is not None:
            self.materialize(dim)

    def initialize_parameters(self, t: Tensor, *_, **__) -> None:  # LazyModuleMixin's hook
        self.materialize(t.shape[-1])

    @torch.no_grad()
    def materialize(self, dim: int) -> None:
        if not is_lazy(self.center):
            if self.center.shape[1] != dim:
                raise ValueError(f"the centre has {self.center.shape[1]} dimensions, the teacher "
                                 f"outputs {dim}")
            return
        self.center.materialize((1, int(dim)))
        self.center.zero_()

    def forward(self, t: Tensor) -> Tensor:
        return t - self.center.to(t.dtype)

    @torch.no_grad()
    def observe(self, t: Tensor) -> None:
        """Record the mean of the teacher outputs ``t`` ``[..., K]`` for the next :meth:`update`."""
        self.materialize(t.shape[-1])
        self._observed = t.detach().reshape(-1, t.shape[-1]).mean(dim=0, keepdim=True)

    @torch.no_grad()
    def update(self) -> bool:
        """Apply the recorded batch mean (once); False when there is none or it is not finite
        (a skipped step)."""
        observed, self._observed = self._observed, None
        if observed is None or not bool(torch.isfinite(observed).all()):
            return False
        self.center.mul_(self.momentum).add_(observed.to(self.center.dtype), alpha=1.0 - self.momentum)
        return True

    def extra_repr(self) -> str:
        dim = None if is_lazy(self.center) else self.center.shape[1]
        return f"momentum={self.momentum}, dim={dim}"
