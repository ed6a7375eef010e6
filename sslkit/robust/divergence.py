"""Divergences between clean and adversarial representations (the third term of the bound of
Tran et al., arXiv 2311.09671: the robust loss of the downstream linear probe is bounded by the
adversarial and the clean contrastive losses plus a divergence between the clean and the
adversarial representation distributions).

Each divergence is called as ``div(clean, adv) -> (value, logs)`` with ``clean, adv: [B, V, F]``
(row ``[i, v]`` of ``adv`` is the adversarial counterpart of ``clean[i, v]``) and reads the
representations named by ``space``: "features" (encoder output, what the linear probe sees) or
"projections" (what the loss head sees).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from sslkit.runtime.distributed import world_size
from sslkit.errors import ConfigError
from sslkit.losses.base import upcast

SPACES = ("features", "projections")


def _check_space(space: str) -> str:
    if space not in SPACES:
        raise ConfigError(f"divergence space must be one of {', '.join(SPACES)}, got {space!r}")
    return space


class SquaredDistance(nn.Module):
    r"""Mean squared distance of L2-normalised representations of each clean/adversarial pair,

    .. math:: D = \frac{1}{BV}\sum_{i,v} \big\|\hat h_{iv} - \hat h^{adv}_{iv}\big\|_2^2
        = \frac{1}{BV}\sum_{i,v} 2\,(1 - \cos(h_{iv}, h^{adv}_{iv}))

    the pointwise (instance-wise) consistency term of adversarial contrastive learning
    (cf. the cosine term between a view and its adversarial example in RoCL, Kim et al. 2020).
    It upper-bounds the squared 2-Wasserstein distance between the two normalised
    distributions (the identity coupling), so it controls the global divergence as well.
    """

    def __init__(self, space: str = "features", in_dim: int | None = None) -> None:
        super().__init__()  # in_dim: the representation width, given to every divergence
        self.space = _check_space(space)

    def forward(self, clean: Tensor, adv: Tensor) -> tuple[Tensor, dict]:
        d = (F.normalize(upcast(clean), dim=-1) - F.normalize(upcast(adv), dim=-1))
        d = d.square().sum(-1).mean()
        return d, {}


class SimilarityKL(nn.Module):
    r"""KL divergence between the similarity distributions of clean and adversarial rows.

    With the N = BV rows L2-normalised, :math:`p_a = \mathrm{softmax}_{b \ne a}(\hat h_a^\top
    \hat h_b / \tau)` among the clean rows and :math:`q_a` the same among the adversarial rows,

    .. math:: D = \frac{1}{N}\sum_a \mathrm{KL}(p_a \,\|\, q_a)

    zero iff every row sees the rest of the batch alike clean and attacked (the
    distribution-matching form of the consistency terms of AdvCL, Fan et al. 2021, and
    DynACL, Luo et al. 2023, applied to the instance-similarity distributions).
    """

    def __init__(self, temperature: float = 0.5, space: str = "features",
                 in_dim: int | None = None) -> None:
        super().__init__()  # in_dim: the representation width, given to every divergence
        if temperature <= 0:
            raise ConfigError(f"divergence temperature must be > 0, got {temperature}")
        self.temperature, self.space = temperature, _check_space(space)

    def _log_probs(self, h: Tensor) -> Tensor:
        u = F.normalize(upcast(h).reshape(-1, h.shape[-1]), dim=-1)
        logits = u @ u.T / self.temperature
        eye = torch.eye(len(u), dtype=torch.bool, device=u.device)
        # the diagonal gets probability 0 in both; a finite stand-in keeps 0 * log 0 out of the sum
        logits = logits.masked_fill(eye, -1e4)
        return logits.log_softmax(dim=1)

    def forward(self, clean: Tensor, adv: Tensor) -> tuple[Tensor, dict]:
        log_p, log_q = self._log_probs(clean), self._log_probs(adv)
        kl = (log_p.exp() * (log_p - log_q)).sum(1).mean()
        return kl, {}


class Discriminator(nn.Module):
    """MLP scoring a representation: logit of "clean" against "adversarial"."""

    def __init__(self, in_dim: int, hidden_dim: int = 256, layers: int = 2) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        dim = in_dim
        for _ in range(max(layers - 1, 0)):
            mods += [nn.Linear(dim, hidden_dim), nn.LeakyReLU(0.2)]
            dim = hidden_dim
        mods.append(nn.Linear(dim, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h).squeeze(-1)


class AdversarialDivergence(nn.Module):
    r"""Global divergence between the clean and adversarial representation distributions,
    estimated by a discriminator trained adversarially (GAN-style), as the regulariser of the
    robust contrastive method of Tran et al. (arXiv 2311.09671).

    The discriminator :math:`T` (its own optimiser, its own step each training step, on
    detached representations) minimises the binary cross-entropy

    .. math:: L_T = -\mathbb{E}_{clean}\log\sigma(T(h)) - \mathbb{E}_{adv}\log(1-\sigma(T(h^{adv})))

    For the optimal :math:`T`, :math:`L_T = \log 4 - 2\,\mathrm{JS}(P_{clean}\|P_{adv})`
    (Goodfellow et al., NeurIPS 2014), so the value handed to the encoder,

    .. math:: D = \log 4 - L_T(h, h^{adv}) \ \approx\ 2\,\mathrm{JS}

    (gradients reach the encoder through both :math:`h` and :math:`h^{adv}`; :math:`T` is held
    fixed there) is the encoder's side of the min-max game. It is near 0 while the
    discriminator cannot tell the two apart.

    Under DDP each rank computes the discriminator's gradient on its share of the batch and the
    gradients are averaged across ranks before its step, so the copies stay identical.

    Args:
        in_dim: representation width (set by the training module).
        optimizer: a ``functools.partial`` optimiser class for the discriminator (Hydra
            ``_partial_``).
        hidden_dim, layers: the discriminator MLP.
        disc_steps: discriminator updates per training step.
        space: "features" or "projections".
    """

    def __init__(self, in_dim: int, optimizer, hidden_dim: int = 256, layers: int = 2,
                 disc_steps: int = 1, space: str = "features") -> None:
        super().__init__()
        self.space = _check_space(space)
        self.discriminator = Discriminator(in_dim, hidden_dim, layers)
        # its own optimiser and its own updates: the training module's optimiser and DDP's
        # gradient hooks never see these parameters
        self.discriminator.requires_grad_(False)
        self.optimizer = optimizer(self.discriminator.parameters())
        self.disc_steps = int(disc_steps)
        self._pending_state: dict | None = None

    @staticmethod
    def bce(logits_clean: Tensor, logits_adv: Tensor) -> Tensor:
        return (F.binary_cross_entropy_with_logits(logits_clean, torch.ones_like(logits_clean))
                + F.binary_cross_entropy_with_logits(logits_adv, torch.zeros_like(logits_adv)))

    def update_discriminator(self, clean: Tensor, adv: Tensor) -> Tensor:
        """``disc_steps`` optimiser steps of the discriminator on detached inputs; returns its
        last loss."""
        if self._pending_state is not None:
            self.optimizer.load_state_dict(self._pending_state)
            self._pending_state = None
        clean = clean.detach().reshape(-1, clean.shape[-1])
        adv = adv.detach().reshape(-1, adv.shape[-1])
        loss = clean.new_zeros(())
        for _ in range(self.disc_steps):
            params = dict(self.discriminator.named_parameters())
            leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
            with torch.enable_grad():
                call = torch.func.functional_call
                loss = self.bce(call(self.discriminator, leaves, (clean,)),
                                call(self.discriminator, leaves, (adv,)))
                grads = torch.autograd.grad(loss, list(leaves.values()))
            if world_size() > 1:
                flat = torch.cat([g.reshape(-1) for g in grads])
                dist.all_reduce(flat)
                flat /= world_size()
                grads = flat.split([g.numel() for g in grads])
            for p, g in zip(params.values(), grads):
                p.grad = g.view_as(p)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def forward(self, clean: Tensor, adv: Tensor) -> tuple[Tensor, dict]:
        disc_loss = self.update_discriminator(clean, adv)
        flat = lambda t: t.reshape(-1, t.shape[-1])  # noqa: E731
        value = math.log(4.0) - self.bce(self.discriminator(flat(clean)),
                                         self.discriminator(flat(adv)))
        return value, {"disc_loss": disc_loss}

    # the optimiser's state travels in the checkpoint beside the discriminator's weights
    def optimizer_state(self) -> dict:
        return self._pending_state or self.optimizer.state_dict()

    def load_optimizer_state(self, state: dict) -> None:
        # loaded at the first update, when the parameters are on their training device
        self._pending_state = copy.deepcopy(state)
