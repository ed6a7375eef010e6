r"""Robust contrastive pretraining: the loss of a training step with adversarial views.

.. math::
    L = w_{clean}\, H(z) + w_{adv}\, H(z^{adv}) + w_{div}\, D(r, r^{adv})

with :math:`H` the configured loss head (any head, through the head contract), :math:`z` the
projections of the clean views, :math:`z^{adv}` those of views perturbed by PGD in pixel space to
maximise :math:`H` itself (Kim et al., RoCL, NeurIPS 2020; Jiang et al., ACL, NeurIPS 2020), and
:math:`D` a divergence between clean and adversarial representations. The three terms are the
three quantities of the unsupervised phase that bound the robust loss of the downstream linear
probe in Tran et al., arXiv 2311.09671 (adversarial contrastive loss, clean contrastive loss,
clean/adversarial divergence); their method also applies SAM to the clean term (``sam_rho``).
"""

from __future__ import annotations

import contextlib
import copy
import functools

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from sslkit.errors import ConfigError
from sslkit.losses.base import LossOutput
from sslkit.robust.attack import PGD
from sslkit.robust.sam import perturbed, sam_perturbation

BN_MODES = ("train", "eval", "dual", "dual_train")
VIEW_MODES = ("replace", "append")


class RobustObjective(nn.Module):
    """What ``adversarial=pgd`` adds to a training step (built by the training module).

    Args:
        attack: the :class:`~sslkit.robust.attack.PGD` attack (eps etc. in pixels of the
            unnormalised image in [0, 1], i.e. before the augmentation's normalisation).
        online: the module's encoder + projector (read for its BatchNorm layers; not stored).
        feature_dim, proj_dim: widths of the encoder features and of the projections.
        bn_mode: BatchNorm during the attack. "train": batch statistics of the attacked
            batch, as in the loss (running statistics are left as they were before the
            attack); "eval": the running statistics, as at test time (RoCL: ``model.eval()``
            before its PGD loop); "dual": ACL's dual BatchNorm (Jiang et al. 2020; Xie et al.,
            AdvProp, CVPR 2020): a second set of BatchNorm layers, started as a copy, for
            adversarial inputs, used by the adversarial term in training mode and by the attack
            in eval mode with its running statistics, as ACL's ``PGD_contrastive`` runs
            ``model.eval()(inputs + delta, 'pgd')``; the clean term and every evaluation use the
            original layers (``eval.robust.bn_branches`` evaluates through either).
            "dual_train": the same two sets, the attack with the adversarial set in training
            mode (batch statistics of the attacked batch). Outside the attack (the adversarial
            term) every mode runs the network in training mode.
        views: "replace": every view is attacked, and the adversarial term sees every view
            replaced by its adversarial version (ACL's A2A pair). "append" (RoCL, Kim et al.
            2020, ``RepresentationAdv.get_loss``): only the anchor (view 0) is attacked, to
            maximise the head's loss against the clean other views, and the adversarial term
            sees the V clean views plus the adversarial anchor, V + 1 views per instance (an
            adversarial example is one more positive). Per-view extras of the head (momentum
            keys ``k``) get view 0's entry for the appended view.
        w_clean, w_adv, w_div: weights of the three terms.
        pair_weight: weight of one more term, the head on the pair (adversarial anchor, clean
            view 1): RoCL's regulariser ``(1 / lamda) * NT_xent([x_adv, target])``
            (``attack_lib.py`` ``RepresentationAdv.get_loss``, lamda 256, ``regularize_to``
            other), which with ``views=append``, ``w_clean=0`` and an NT-Xent head at
            temperature 0.5 makes RoCL's total. 0: no such term.
        divergence: a ``functools.partial`` divergence of :mod:`sslkit.robust.divergence`
            (built here with the width of its ``space``), or None.
        sam_rho: radius of SAM on the clean term (0: plain gradient).
    """

    def __init__(self, attack: PGD, online: nn.Module, feature_dim: int, proj_dim: int,
                 bn_mode: str = "train", views: str = "replace", w_clean: float = 1.0,
                 w_adv: float = 1.0, w_div: float = 0.0, divergence=None,
                 sam_rho: float = 0.0, pair_weight: float = 0.0) -> None:
        super().__init__()
        if bn_mode not in BN_MODES:
            raise ConfigError(f"adversarial.bn_mode must be one of {', '.join(BN_MODES)}, got {bn_mode!r}")
        if views not in VIEW_MODES:
            raise ConfigError(f"adversarial.views must be one of {', '.join(VIEW_MODES)}, got {views!r}")
        if min(w_clean, w_adv, w_div, pair_weight) < 0 or sam_rho < 0:
            raise ConfigError("adversarial.w_clean, w_adv, w_div, pair_weight and sam_rho must be >= 0")
        self.pair_weight = pair_weight
        self.attack, self.bn_mode, self.views = attack, bn_mode, views
        self.w_clean, self.w_adv, self.w_div, self.sam_rho = w_clean, w_adv, w_div, sam_rho
        if divergence is not None and not callable(divergence):
            raise ConfigError(
                f"adversarial.divergence has settings ({', '.join(map(str, divergence))}) but no "
                "divergence chosen: pick one with adversarial/divergence=sqdist|kl|gan, or drop "
                "the settings for none"
            )
        if divergence is not None and isinstance(divergence, functools.partial):
            space = divergence.keywords.get("space", "features")
            divergence = divergence(in_dim=feature_dim if space == "features" else proj_dim)
        self.divergence = divergence
        self._bn_names = [n for n, m in online.named_modules() if isinstance(m, _BatchNorm)]
        self.adv_bn = nn.ModuleDict(
            {n.replace(".", "__"): copy.deepcopy(online.get_submodule(n)) for n in self._bn_names}
        ) if bn_mode.startswith("dual") else None

    # -- pieces --------------------------------------------------------------------------------
    def _adv_bn_tensors(self) -> dict[str, Tensor]:
        """``online``'s BatchNorm parameters and buffers swapped for the adversarial copies."""
        out = {}
        for name in self._bn_names:
            bn = self.adv_bn[name.replace(".", "__")]
            for key, t in [*bn.named_parameters(), *bn.named_buffers()]:
                out[f"{name}.{key}"] = t
        return out

    def _project(self, module, views: list[Tensor], adversarial: bool,
                 overrides: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """(features, projections) ``[B, V, *]`` of ``views`` through ``module``'s online network
        (and predictor), with parameters replaced by ``overrides`` (names prefixed ``online.``
        / ``predictor.``) and, for adversarial inputs under dual BN, the adversarial BN."""
        overrides = overrides or {}
        online = {k[len("online."):]: v for k, v in overrides.items() if k.startswith("online.")}
        if adversarial and self.adv_bn is not None:
            online.update(self._adv_bn_tensors())
        net = ((lambda x: torch.func.functional_call(module.online, online, (x,)))
               if online else module.online)
        h, z = module.embed_views(net, views)
        if module.predictor is not None:
            pred = {k[len("predictor."):]: v for k, v in overrides.items() if k.startswith("predictor.")}
            b, v, d = z.shape
            flat = z.reshape(b * v, d)
            flat = (torch.func.functional_call(module.predictor, pred, (flat,)) if pred
                    else module.predictor(flat))
            z = flat.reshape(b, v, -1)
        return h, z

    def _head(self, module, z: Tensor, extras: dict[str, Tensor]) -> LossOutput:
        return module.head(module.head_input(z), **extras)

    def _attacked(self, n_views: int) -> list[int]:
        """The views PGD perturbs: all of them (replace), or the anchor, view 0 (append)."""
        return [0] if self.views == "append" else list(range(n_views))

    def _adv_inputs(self, z_adv: Tensor, z_clean: Tensor,
                    extras: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The adversarial term's head inputs from the attacked views' projections ``z_adv``:
        those (replace), or the clean views followed by the adversarial anchor (append)."""
        if self.views == "replace":
            return z_adv, extras
        views = z_clean.shape[1]
        appended = {k: torch.cat([t, t[:, :1]], 1) if t.dim() >= 3 and t.shape[1] == views else t
                    for k, t in extras.items()}
        return torch.cat([z_clean, z_adv], 1), appended

    def _bn_layers(self, module) -> list[_BatchNorm]:
        mods = [module.online] + ([module.predictor] if module.predictor is not None else [])
        mods += [self.adv_bn] if self.adv_bn is not None else []
        return [m for net in mods for m in net.modules() if isinstance(m, _BatchNorm)]

    @contextlib.contextmanager
    def _restored_bn(self, module, eval_mode: bool = False):
        """BatchNorm layers whose running statistics (and mode) are restored afterwards, in
        eval mode meanwhile if ``eval_mode``. Used for the attack (its steps are not training
        batches) and for the SAM pass (the same batch again must not count twice, as
        davda54/sam advises for its second pass)."""
        layers = self._bn_layers(module)
        modes = [bn.training for bn in layers]
        # the layers run on copies of their buffers; the originals are put back untouched (an
        # in-place restore would bump their version and break the clean forward's graph)
        originals = [dict(bn._buffers) for bn in layers]
        for bn in layers:
            for name, buf in bn._buffers.items():
                if buf is not None:
                    bn._buffers[name] = buf.clone()
            if eval_mode:
                bn.eval()
        try:
            yield
        finally:
            for bn, bufs, mode in zip(layers, originals, modes):
                bn.train(mode)
                bn._buffers.update(bufs)

    @contextlib.contextmanager
    def adversarial_encoder(self, module):
        """``module``'s encoder with the adversarial BatchNorm copies (parameters and running
        statistics) in place of its own for the duration of the block, then the clean layers
        back: evaluation through the adversarial branch (ACL fine-tunes with ``--bnNameCnt 1``)."""
        pairs = [(module.online.get_submodule(n), self.adv_bn[n.replace(".", "__")])
                 for n in self._bn_names if n.startswith("encoder.")]

        def swap() -> None:
            for clean, adv in pairs:
                for store in ("_parameters", "_buffers"):
                    a, b = getattr(clean, store), getattr(adv, store)
                    for key in a:
                        a[key], b[key] = b[key], a[key]

        swap()
        try:
            yield module
        finally:
            swap()

    # -- the step ------------------------------------------------------------------------------
    def find_adversarial(self, module, views: list[Tensor], pixels: list[Tensor], z: Tensor,
                         extras: dict[str, Tensor],
                         generator: torch.Generator | None = None) -> list[Tensor]:
        """PGD perturbations (pixel units) of the attacked views (all, or the anchor with
        ``views="append"``; whose pixels are ``pixels``) that maximise the head's loss on the
        views with the attacked ones replaced; ``z`` (detached) are the clean projections.
        BatchNorm as ``bn_mode`` says; no state of the module changes."""
        std = module.augment.std
        attacked = self._attacked(len(views))

        def objective(deltas: list[Tensor]) -> Tensor:
            adv = list(views)
            for i, d in zip(attacked, deltas):
                adv[i] = views[i] + d / std
            _, za = self._project(module, adv, adversarial=True)
            return self._head(module, za, extras).loss

        with self._restored_bn(module, eval_mode=self.bn_mode in ("eval", "dual")):
            return self.attack(objective, [pixels[i] for i in attacked], generator)

    def forward(self, module, views: list[Tensor], h: Tensor, z: Tensor,
                extras: dict[str, Tensor], generator: torch.Generator | None = None) -> LossOutput:
        """The total loss of a step whose clean ``views`` gave features ``h`` and projections
        ``z`` (``[B, V, *]``, with their graphs); ``extras`` are the head's other inputs."""
        mean, std = module.augment.mean, module.augment.std
        with torch.no_grad():
            pixels = [(v * std + mean).clamp(0, 1) for v in views]
        out_clean = self._head(module, z, extras)
        logs: dict[str, Tensor | float] = dict(out_clean.logs)
        logs["loss_clean"] = out_clean.loss.detach()

        deltas = self.find_adversarial(module, views, pixels, z.detach(), extras, generator)
        adv_views = [views[i] + d / std for i, d in zip(self._attacked(len(views)), deltas)]
        h_adv, z_adv = self._project(module, adv_views, adversarial=True)
        zi, ex = self._adv_inputs(z_adv, z, extras)
        out_adv = self._head(module, zi, ex)
        logs["loss_adv"] = out_adv.loss.detach()
        logs["adv_linf"] = torch.stack([d.abs().amax() for d in deltas]).amax()

        clean_term = out_clean.loss
        if self.sam_rho > 0 and self.w_clean > 0:
            params = {f"online.{n}": p for n, p in module.online.named_parameters() if p.requires_grad}
            if module.predictor is not None:
                params.update({f"predictor.{n}": p for n, p in module.predictor.named_parameters()
                               if p.requires_grad})
            eps = sam_perturbation(out_clean.loss, params, self.sam_rho)
            with self._restored_bn(module):
                _, z_sam = self._project(module, views, adversarial=False,
                                         overrides=perturbed(params, eps))
            clean_term = self._head(module, z_sam, extras).loss
            logs["loss_clean_sam"] = clean_term.detach()

        total = self.w_clean * clean_term + self.w_adv * out_adv.loss
        if self.pair_weight > 0:
            total = total + self.pair_weight * self._pair_loss(module, z_adv, z, extras, logs)
        if self.divergence is not None:
            clean_r, adv_r = (h, h_adv) if self.divergence.space == "features" else (z, z_adv)
            clean_r = clean_r[:, :adv_r.shape[1]]  # append: the anchor's clean/adversarial pair
            value, div_logs = self.divergence(clean_r, adv_r)
            logs["divergence"] = value.detach()
            logs.update(div_logs)
            if self.w_div > 0:
                total = total + self.w_div * value
        return LossOutput(total, logs)

    def _pair_loss(self, module, z_adv: Tensor, z: Tensor, extras: dict[str, Tensor],
                   logs: dict) -> Tensor:
        """The head on (adversarial view 0, clean view 1), per-view extras cut to those views."""
        views = z.shape[1]
        if views < 2:
            raise ConfigError("adversarial.pair_weight needs at least 2 views (the adversarial "
                              "anchor is paired with clean view 1)")
        pair = torch.stack([z_adv[:, 0], z[:, 1]], 1)
        ex = {k: t[:, :2] if t.dim() >= 3 and t.shape[1] == views else t for k, t in extras.items()}
        loss = self._head(module, pair, ex).loss
        logs["loss_pair"] = loss.detach()
        return loss

    # -- checkpoint ----------------------------------------------------------------------------
    def checkpoint_state(self) -> dict:
        """What a checkpoint needs beyond the state_dict: the discriminator's optimiser."""
        if self.divergence is not None and hasattr(self.divergence, "optimizer_state"):
            return {"divergence_optimizer": self.divergence.optimizer_state()}
        return {}

    def load_checkpoint_state(self, state: dict) -> None:
        if "divergence_optimizer" in state and hasattr(self.divergence, "load_optimizer_state"):
            self.divergence.load_optimizer_state(state["divergence_optimizer"])

