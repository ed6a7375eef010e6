"""Robust evaluation: clean and adversarial accuracy of a classifier built on the pretrained
encoder, in the three fine-tuning modes of adversarial contrastive learning (ACL, Jiang et al.,
NeurIPS 2020; AdvCL, Fan et al., NeurIPS 2021; DynACL, Luo et al., ICLR 2023):

- ``slf``: standard linear fine-tuning, a linear head on frozen clean features;
- ``alf``: adversarial linear fine-tuning, the head trained on adversarial examples found
  through the frozen encoder and the current head (PGD adversarial training, Madry et al. 2018);
- ``aff``: adversarial full fine-tuning, encoder and head trained on adversarial examples
  (on a copy: the pretrained module is left untouched).

The attacked model maps images in [0, 1] to logits: the module's own eval normalisation, the
encoder, then the head, so ``eps`` is in pixel units of the unnormalised image (8/255 = 8 grey
levels). Attacks come from torchattacks, run batched on the module's device with the model in
eval mode. A sample counts as robust to an attack only if it is classified correctly both clean
and attacked (robustness over the eps-ball, which holds the clean point), so accuracy under
attack never exceeds clean accuracy.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset, default_collate

from sslkit.errors import ConfigError

MODES = ("slf", "alf", "aff")
# the encoder's BatchNorm a classifier runs through: the clean layers, or the adversarial copies of
# a run pretrained with adversarial.bn_mode=dual (ACL's fine-tuning `--bnNameCnt 1`)
BN_BRANCHES = ("clean", "adversarial")
# the settings each mode's config section holds (configs/eval/robust.yaml)
MODE_KEYS = {
    "slf": ("epochs", "batch_size", "lr", "weight_decay"),
    "alf": ("init", "train_size", "epochs", "batch_size", "lr", "weight_decay"),
    "aff": ("init", "train_size", "epochs", "batch_size", "lr", "encoder_lr", "weight_decay"),
}
AttackFactory = Callable[..., Callable[[Tensor, Tensor], Tensor]]


class LinearHead(nn.Module):
    """``Linear(F, C)`` on features standardised with fixed statistics (those of the clean
    training features), as the linear probe does."""

    def __init__(self, mean: Tensor, std: Tensor, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().clone().float())
        self.register_buffer("std", std.detach().clone().float().clamp_min(1e-6))
        self.linear = nn.Linear(mean.numel(), num_classes)

    def forward(self, h: Tensor) -> Tensor:
        return self.linear((h - self.mean) / self.std)


class ImageClassifier(nn.Module):
    """Images in [0, 1] ``[B, C, H, W]`` -> logits: ``normalize`` (the module's
    ``augment.eval_transform``), ``encoder``, ``head``; differentiable in the input."""

    def __init__(
        self,
        normalize: Callable[[Tensor], Tensor],
        encoder: nn.Module,
        head: nn.Module,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.normalize, self.encoder, self.head = normalize, encoder, head
        self.channels_last = channels_last

    def layout(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(self.layout(self.normalize(x))))


def to_unit(images: Tensor) -> Tensor:
    """uint8 images -> float32 in [0, 1]; floating images are taken to be in [0, 1] already."""
    if images.dtype == torch.uint8:
        return images.float().div(255)
    return images if images.is_floating_point() else images.float()


def build_attack(factory: AttackFactory, model: nn.Module, num_classes: int, seed: int = 0):
    """Instantiate a torchattacks attack (a partial from the config) on ``model``; attacks that
    take the number of classes or a seed (AutoAttack) get them from the data and the run."""
    func = getattr(factory, "func", factory)
    keywords = getattr(factory, "keywords", {})
    params = inspect.signature(func).parameters
    given = {"n_classes": num_classes, "seed": seed}
    return factory(model, **{k: v for k, v in given.items() if k in params and k not in keywords})


def adversarial_batchnorm(module):
    """A context in which the module's encoder runs with the adversarial BatchNorm copies of
    dual-BN pretraining in place of its own (sslkit/robust/objective.py)."""
    if getattr(getattr(module, "robust", None), "adv_bn", None) is None:
        raise ConfigError("eval.robust.bn_branches has 'adversarial' but the checkpoint has no "
                          "adversarial BatchNorm: pretrain with adversarial.bn_mode=dual (or "
                          "dual_train), or use eval.robust.bn_branches=[clean]")
    return module.robust.adversarial_encoder(module)


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device):
    """The global RNG (which attacks' random starts draw from) forked and seeded with ``seed``,
    so that results do not depend on what ran before."""
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor) -> Tensor:
    return model(x).argmax(1)


def robust_accuracy(
    model: nn.Module,
    attacks: Mapping[str, Callable[[Tensor, Tensor], Tensor]],
    batches: Iterable[tuple[Tensor, Tensor]],
    device: torch.device | str,
    seed: int = 0,
) -> dict[str, float]:
    """Clean accuracy and accuracy under each attack of ``model`` (eval mode) over ``batches``
    of (images, labels); images uint8 or float in [0, 1]. A sample is robust to an attack if it
    is classified correctly clean and after the attack. Each attack's random draws are seeded
    from ``seed`` and the batch number."""
    device = torch.device(device)
    model.eval()
    n = 0
    correct = {"clean": 0, **{name: 0 for name in attacks}}
    for i, (images, labels) in enumerate(batches):
        x, y = to_unit(images.to(device)), labels.to(device)
        clean = _predict(model, x) == y
        correct["clean"] += int(clean.sum())
        n += len(y)
        for name, attack in attacks.items():
            with _seeded(seed * 1_000_003 + i, device):
                adv = attack(x, y)
            correct[name] += int((clean & (_predict(model, adv) == y)).sum())
    if n == 0:
        raise ConfigError("robust evaluation: the test subset holds no labelled image")
    return {name: c / n for name, c in correct.items()}


def fit(
    params: Sequence[dict],
    step_loss: Callable[[Tensor, Tensor], Tensor],
    batches: Callable[[int], Iterable[tuple[Tensor, Tensor]]],
    epochs: int,
    steps_per_epoch: int,
    weight_decay: float,
) -> None:
    """AdamW with a cosine schedule over ``epochs`` passes of ``batches(epoch)``, minimising
    ``step_loss(x, y)``; ``params`` are optimiser parameter groups (each with its ``lr``)."""
    opt = torch.optim.AdamW(params, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs * steps_per_epoch))
    for epoch in range(epochs):
        for x, y in batches(epoch):
            loss = step_loss(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()


class RobustEval:
    """The ``robust`` evaluator: ``RobustEval(...)(ctx) -> {mode: {"clean": acc, attack: acc}}``
    for each mode in ``modes``, plus ``"settings"`` (subset sizes, seconds per mode).

    ``attacks`` maps a name to a torchattacks attack factory (``attack(model)``) evaluated on
    every mode; names in ``skip`` are not run (AutoAttack is skipped by default: slow).
    ``train_attack`` makes the adversarial examples ALF and AFF train on. ``test_size`` and
    ``train_size`` (ALF/AFF) draw seeded random subsets of the test and probe splits (null: the
    whole split); SLF trains on the cached features of the whole probe split. ``bn_branches``:
    the encoder's BatchNorm each mode runs through, the clean layers (results under the mode's
    name) and/or the adversarial copies of dual-BN pretraining (under ``<mode>_adv_bn``)."""

    def __init__(
        self,
        modes: Sequence[str],
        attacks: Mapping[str, AttackFactory],
        train_attack: AttackFactory,
        skip: Sequence[str],
        test_size: int | None,
        batch_size: int,
        slf: Mapping,
        alf: Mapping | None = None,
        aff: Mapping | None = None,
        bn_branches: Sequence[str] = ("clean",),
    ) -> None:
        unknown = [m for m in modes if m not in MODES]
        if unknown or not modes:
            raise ConfigError(
                f"eval.robust.modes={list(modes)}: unknown or empty; choose from {list(MODES)}"
            )
        bad_skip = [s for s in skip if s not in attacks]
        if bad_skip:
            raise ConfigError(
                f"eval.robust.skip names unknown attacks {bad_skip}; attacks: {sorted(attacks)}"
            )
        for key, value in (("test_size", test_size), ("batch_size", batch_size)):
            if value is not None and value < 1:
                raise ConfigError(f"eval.robust.{key}={value} must be at least 1 (or null)")
        bad = [b for b in bn_branches if b not in BN_BRANCHES]
        if bad or not bn_branches:
            raise ConfigError(f"eval.robust.bn_branches={list(bn_branches)}: unknown or empty; "
                              f"choose from {list(BN_BRANCHES)}")
        self.modes, self.bn_branches = list(modes), list(dict.fromkeys(bn_branches))
        # top-level keys of every result (checked by tests/eval/test_evaluator_contract.py)
        self.result_keys = (*[self._key(m, b) for b in self.bn_branches for m in self.modes],
                            "settings")
        self.attacks = {k: v for k, v in attacks.items() if k not in skip and v is not None}
        self.train_attack = train_attack
        self.test_size, self.batch_size = test_size, batch_size
        self.cfg = {"slf": dict(slf or {}), "alf": dict(alf or {}), "aff": dict(aff or {})}
        for mode in {"slf", *self.modes}:  # SLF's head also starts ALF and AFF (init: slf)
            keys = MODE_KEYS[mode]
            missing = [k for k in keys if k not in self.cfg[mode]]
            extra = [k for k in self.cfg[mode] if k not in keys]
            if missing or extra:
                raise ConfigError(
                    f"eval.robust.{mode}: {'missing ' + str(missing) if missing else ''}"
                    f"{' ' if missing and extra else ''}{'unknown ' + str(extra) if extra else ''}"
                    f"; its keys are {list(keys)} (configs/eval/robust.yaml)"
                )
            if mode != "slf" and self.cfg[mode]["init"] not in ("slf", "random"):
                raise ConfigError(
                    f"eval.robust.{mode}.init={self.cfg[mode]['init']!r}: choose from "
                    "['slf', 'random']"
                )

    @staticmethod
    def _key(mode: str, branch: str) -> str:
        return mode if branch == "clean" else f"{mode}_adv_bn"

    # -- data ---------------------------------------------------------------------------------
    def _subset_loader(self, ctx, split: str, size: int | None, batch_size: int, seed: int,
                       shuffle: bool = False) -> DataLoader:
        dm = ctx.datamodule
        name = {"probe": dm.probe_split, "test": dm.test_split}[split]
        data = dm.split(name)
        if size is not None and size < len(data):
            gen = torch.Generator().manual_seed(seed)
            idx = torch.randperm(len(data), generator=gen)[:size].sort().values
            data_sub = Subset(data, idx.tolist())
        else:
            data_sub = data
        return DataLoader(
            data_sub,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(seed) if shuffle else None,
            collate_fn=getattr(data, "collate", default_collate),
            num_workers=getattr(dm, "num_workers", 0),
        )

    @staticmethod
    def _labelled(loader: Iterable[dict]) -> Iterable[tuple[Tensor, Tensor]]:
        for batch in loader:
            keep = batch["label"] >= 0
            if keep.any():
                yield batch["image"][keep], batch["label"][keep]

    # -- modes --------------------------------------------------------------------------------
    def _slf_head(self, ctx, labelled: tuple[Tensor, Tensor] | None = None) -> LinearHead:
        """SLF's head, fitted on ``labelled`` probe features (default: the context's cache)."""
        cfg = self.cfg["slf"]
        x, y = labelled if labelled is not None else ctx.labelled("probe")
        device = ctx.device
        x, y = x.to(device), y.to(device)
        head = LinearHead(x.mean(0), x.std(0), ctx.num_classes).to(device)
        with _seeded(ctx.seed, ctx.device):
            head.linear.reset_parameters()
        gen = torch.Generator().manual_seed(ctx.seed)
        bs = min(cfg["batch_size"], len(x))
        per_epoch = max(1, len(x) // bs)

        def batches(epoch: int):
            perm = torch.randperm(len(x), generator=gen).to(device)
            for i in range(per_epoch):
                idx = perm[i * bs:(i + 1) * bs]
                yield x[idx], y[idx]

        fit([{"params": head.parameters(), "lr": cfg["lr"]}],
            lambda h, t: F.cross_entropy(head(h), t), batches, cfg["epochs"], per_epoch,
            cfg["weight_decay"])
        return head.eval()

    def _adversarial(self, ctx, mode: str, slf_head: LinearHead) -> ImageClassifier:
        """ALF (head only, encoder frozen in eval mode) or AFF (encoder and head; the encoder's
        BatchNorm in train mode for the update, eval mode while the attack runs)."""
        cfg = self.cfg[mode]
        device = ctx.device
        module = ctx.module
        encoder = copy.deepcopy(module.online.encoder) if mode == "aff" else module.online.encoder
        head = copy.deepcopy(slf_head)
        if cfg["init"] == "random":
            with _seeded(ctx.seed, ctx.device):
                head.linear.reset_parameters()
        model = ImageClassifier(module.augment.eval_transform, encoder, head,
                                getattr(module, "channels_last", False)).to(device)
        full = mode == "aff"
        attack = build_attack(self.train_attack, model, ctx.num_classes, ctx.seed)
        loader = self._subset_loader(ctx, "probe", cfg["train_size"], cfg["batch_size"], ctx.seed,
                                     shuffle=True)
        step = {"n": 0}

        def batches(epoch: int):
            for images, labels in self._labelled(loader):
                yield to_unit(images.to(device)), labels.to(device)

        def step_loss(x: Tensor, y: Tensor) -> Tensor:
            model.train(full)  # ALF: everything in eval mode; AFF: BatchNorm in train mode
            with _seeded(ctx.seed * 1_000_003 + step["n"], device):
                adv = attack(x, y)  # torchattacks runs the attack in eval mode, then restores
            step["n"] += 1
            if full:
                return F.cross_entropy(model(adv), y)
            with torch.no_grad():  # the frozen encoder: no graph through it
                h = model.encoder(model.layout(model.normalize(adv)))
            return F.cross_entropy(head(h), y)

        groups = [{"params": head.parameters(), "lr": cfg["lr"]}]
        if full:
            groups.append({"params": encoder.parameters(), "lr": cfg["encoder_lr"]})
        per_epoch = max(1, math.ceil(len(loader.dataset) / loader.batch_size))
        fit(groups, step_loss, batches, cfg["epochs"], per_epoch, cfg["weight_decay"])
        return model.eval()

    # -- entry point --------------------------------------------------------------------------
    def __call__(self, ctx) -> dict:
        module = ctx.module
        module.eval()
        results: dict = {}
        seconds: dict[str, float] = {}
        test = self._subset_loader(ctx, "test", self.test_size, self.batch_size, ctx.seed)
        for branch in self.bn_branches:
            if branch == "clean":
                self._run_modes(ctx, test, "clean", None, results, seconds)
                continue
            with adversarial_batchnorm(module):
                from sslkit.eval.features import extract

                t0 = time.perf_counter()
                loader = ctx.datamodule.eval_dataloader(ctx.split_name("probe"))
                autocast = getattr(ctx, "autocast", None)  # as the context extracts its features
                with torch.autocast(ctx.device.type, dtype=autocast, enabled=autocast is not None):
                    x, y = extract(module.features, loader, ctx.device)
                x = x.float()
                keep = y >= 0
                seconds["adv_bn_features"] = time.perf_counter() - t0
                self._run_modes(ctx, test, branch, (x[keep], y[keep]), results, seconds)
        module.eval()
        results["settings"] = {
            "test_size": len(test.dataset),
            "train_size": {m: self.cfg[m]["train_size"] for m in ("alf", "aff") if m in self.modes},
            "attacks": sorted(self.attacks),
            "bn_branches": self.bn_branches,
            "seconds": {k: round(v, 2) for k, v in seconds.items()},
            "device": str(ctx.device),
        }
        return results

    def _run_modes(self, ctx, test: DataLoader, branch: str, labelled, results: dict,
                   seconds: dict) -> None:
        """Every mode through the encoder as it stands (clean or adversarial BatchNorm)."""
        module, device = ctx.module, ctx.device
        suffix = "" if branch == "clean" else "_adv_bn"
        started = time.perf_counter()
        slf_head = self._slf_head(ctx, labelled)
        seconds[f"slf_fit{suffix}"] = time.perf_counter() - started
        for mode in self.modes:
            t0 = time.perf_counter()
            if mode == "slf":
                model = ImageClassifier(module.augment.eval_transform, module.online.encoder,
                                        slf_head, getattr(module, "channels_last", False))
            else:
                model = self._adversarial(ctx, mode, slf_head)
            key = self._key(mode, branch)
            seconds[f"{key}_fit"] = seconds.get(f"{key}_fit", 0.0) + time.perf_counter() - t0
            t0 = time.perf_counter()
            model = model.to(device).eval()
            attacks = {name: build_attack(f, model, ctx.num_classes, ctx.seed)
                       for name, f in self.attacks.items()}
            results[key] = robust_accuracy(model, attacks, self._labelled(test), device, ctx.seed)
            seconds[f"{key}_attacks"] = time.perf_counter() - t0
