"""Projected gradient ascent (PGD) on a contrastive objective, in pixel space.

Written here rather than taken from torchattacks: torchattacks' attacks maximise the
cross-entropy of ``model(x)`` against labels, one image at a time; the objective here is a
loss head over a whole batch of views (no labels, all views perturbed jointly), which their
``Attack`` classes cannot express.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from sslkit.errors import ConfigError


class PGD:
    r"""PGD (Madry et al., ICLR 2018) maximising an objective of several image batches jointly.

    Each image (every view of every instance) gets its own perturbation :math:`\delta` in the
    ball :math:`\|\delta\|_p \le \epsilon` (``norm`` "linf" or "l2", measured in pixels of the
    unnormalised image in [0, 1]) with :math:`x + \delta \in [0, 1]`. From a random start
    (uniform in the l-inf ball; for l2 a uniform direction at a radius uniform in
    :math:`[0, \epsilon]`) or from 0, ``steps`` ascent steps

    .. math::
        \delta \leftarrow \Pi\big(\delta + \alpha\, \mathrm{sign}(\nabla_\delta L)\big) \ (l_\infty),
        \qquad \delta \leftarrow \Pi\big(\delta + \alpha\, \nabla_\delta L / \|\nabla_\delta L\|_2\big) \ (l_2)

    with :math:`\Pi` the projection onto the ball, then the box. As used for contrastive views by
    Kim et al. (RoCL, NeurIPS 2020) and Jiang et al. (ACL, NeurIPS 2020).

    Args:
        norm: "linf" or "l2".
        eps: radius of the ball (pixel units; 8/255 is the usual l-inf budget).
        step_size: :math:`\alpha`.
        steps: ascent steps (0: random start only, or clean views without it).
        random_start: start from a random point of the ball instead of 0.
    """

    NORMS = ("linf", "l2")

    def __init__(self, norm: str = "linf", eps: float = 8 / 255, step_size: float = 2 / 255,
                 steps: int = 5, random_start: bool = True) -> None:
        if norm not in self.NORMS:
            raise ConfigError(f"attack norm must be one of {', '.join(self.NORMS)}, got {norm!r}")
        if eps < 0 or step_size < 0 or steps < 0:
            raise ConfigError(f"attack eps, step_size and steps must be >= 0, got {eps}, "
                             f"{step_size}, {steps}")
        self.norm, self.eps, self.step_size = norm, float(eps), float(step_size)
        self.steps, self.random_start = int(steps), bool(random_start)

    def __call__(self, objective: Callable[[list[Tensor]], Tensor], pixels: Sequence[Tensor],
                 generator: torch.Generator | None = None) -> list[Tensor]:
        """Perturbations (detached, one per tensor of ``pixels``) that increase
        ``objective(deltas)``. ``pixels`` are the images the deltas are added to (values in
        [0, 1]); ``objective`` builds its inputs from the deltas itself. Gradients are taken
        with respect to the deltas only: no parameter's ``.grad`` is touched."""
        deltas = [self._start(x, generator) for x in pixels]
        if self.eps == 0:
            return deltas
        for _ in range(self.steps):
            deltas = [d.requires_grad_(True) for d in deltas]
            with torch.enable_grad():
                loss = objective(deltas)
                grads = torch.autograd.grad(loss, deltas)
            with torch.no_grad():
                deltas = [self._project(x, d + self.step_size * self._direction(g))
                          for x, d, g in zip(pixels, deltas, grads)]
        return [d.detach() for d in deltas]

    def _start(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        if not self.random_start or self.eps == 0:
            return torch.zeros_like(x)
        if self.norm == "linf":
            d = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            d = (2 * d - 1) * self.eps
        else:
            d = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            radius = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), generator=generator,
                                device=x.device, dtype=x.dtype)
            d = d / _norms(d).clamp_min(1e-12) * radius * self.eps
        return self._project(x, d)

    def _direction(self, g: Tensor) -> Tensor:
        if self.norm == "linf":
            return g.sign()
        return g / _norms(g).clamp_min(1e-12)

    def _project(self, x: Tensor, d: Tensor) -> Tensor:
        if self.norm == "linf":
            d = d.clamp(-self.eps, self.eps)
        else:
            d = d * (self.eps / _norms(d).clamp_min(1e-12)).clamp(max=1.0)
        # the box last: it only shrinks |d| coordinate-wise, so the ball still holds
        return (x + d).clamp(0, 1) - x


def _norms(t: Tensor) -> Tensor:
    """Per-image l2 norms of ``[B, ...]``, shaped to broadcast against ``t``."""
    return t.flatten(1).norm(dim=1).view((-1,) + (1,) * (t.dim() - 1))
