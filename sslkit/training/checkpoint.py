"""Finding and vetting checkpoints before a run resumes from one: readable, written by sslkit,
holding this model, with the same config in what changes the run's meaning."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from sslkit.errors import CheckpointError, ConfigError
from sslkit.training.checkpoint_file import checkpoint_file
from sslkit.training.module import FORMAT_VERSION


def run_dir_of(checkpoint: str | Path) -> Path:
    """The run dir of a checkpoint: the folder holding ``checkpoints/``."""
    path = Path(checkpoint).expanduser().resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint of a run dir: ``checkpoints/last.ckpt`` or, if later, the
    ``hpc_ckpt_N.ckpt`` Lightning writes when SLURM signals a preemption (mid-epoch)."""
    candidates = [p for p in [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")]
                  if p.exists()]
    if len(candidates) <= 1:
        return candidates[0] if candidates else None

    def step(path: Path) -> int:
        try:
            return int(torch.load(path, map_location="cpu", weights_only=True).get("global_step", -1))
        except Exception:  # noqa: BLE001 - an unreadable candidate is simply not the newest
            return -1

    return max(candidates, key=step)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint (``weights_only``) and check it is an sslkit one we can read; refuse it
    by name otherwise."""
    path = checkpoint_file(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    # a file that is no checkpoint at all (a CSV, a text file) makes the unpickler fail with
    # IndexError or KeyError
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, OSError, ValueError,
            IndexError, KeyError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"checkpoint {path} refused: not a readable checkpoint (truncated or corrupt?): {reason}"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"checkpoint {path} refused: no model state_dict in it")
    meta = ckpt.get("sslkit")
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path} refused: not written by sslkit (no 'sslkit' entry)")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} refused: format version {version} is newer than this sslkit "
            f"reads ({FORMAT_VERSION}); upgrade sslkit"
        )
    meta["config"] = upgrade_config(meta.get("config") or {})
    return ckpt


# classes that moved since a checkpoint was written: old dotted-path prefix -> new one. A saved
# config's ``_target_`` is rewritten on load, so old checkpoints still build, evaluate and resume
MOVED_TARGETS = {"sslkit.module.": "sslkit.training.module."}


def upgrade_config(config: dict) -> dict:
    """A saved run config in today's terms: moved classes renamed (``upgrade_targets``), and
    ``model.momentum_schedule: constant``, the default before heads declared their own schedule,
    written as ``null`` where the head declares none (the two build the same run), so the
    runs of older checkpoints resume without a config change."""
    config = upgrade_targets(config)
    model, loss = config.get("model"), config.get("loss")
    if isinstance(model, dict) and model.get("momentum_schedule") == "constant" and isinstance(loss, dict):
        from hydra._internal.utils import _locate  # what instantiate uses

        try:
            declared = getattr(_locate(loss.get("_target_", "")), "momentum_schedule", "constant")
        except Exception:  # noqa: BLE001 - an unknown head is refused, by name, when it is built
            declared = None
        if declared == "constant":
            model["momentum_schedule"] = None
    return config


def upgrade_targets(config):
    """``config`` (a saved run config, plain containers) with every ``_target_`` that names a
    moved class rewritten to its current dotted path."""
    if isinstance(config, dict):
        out = {k: upgrade_targets(v) for k, v in config.items()}
        target = out.get("_target_")
        if isinstance(target, str):
            for old, new in MOVED_TARGETS.items():
                if target.startswith(old):
                    out["_target_"] = new + target[len(old):]
        return out
    if isinstance(config, list):
        return [upgrade_targets(v) for v in config]
    return config


# config sections whose change alters what a run means; anything else (max_epochs, loggers,
# evaluation, paths, worker counts) may differ on resume
MEANING_KEYS = ("loss", "encoder", "augment", "model", "optim", "seed", "data._target_",
                "data.batch_size", "data.imbalance_ratio", "data.imbalance_profile",
                "data.train_split", "prior", "data.domain_shift", "data.val_size")


def config_differences(saved: dict, current: dict) -> list[str]:
    saved_cfg, current_cfg = OmegaConf.create(saved), OmegaConf.create(current)
    differing = []
    for key in MEANING_KEYS:
        a = OmegaConf.select(saved_cfg, key, default=None)
        b = OmegaConf.select(current_cfg, key, default=None)
        a = OmegaConf.to_container(a) if OmegaConf.is_config(a) else a
        b = OmegaConf.to_container(b) if OmegaConf.is_config(b) else b
        if a != b:
            differing += _leaf_differences(key, a, b)
    return differing


def _leaf_differences(prefix: str, a, b) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                out += _leaf_differences(f"{prefix}.{k}", a.get(k), b.get(k))
        return out
    return [f"{prefix} ({a!r} -> {b!r})"]


def check_same_model(path: Path, saved: dict, module: L.LightningModule) -> None:
    """Refuse, by name, a checkpoint whose weights (``saved`` state dict) do not fit this model."""
    own = module.state_dict()
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    shapes = sorted(k for k in set(own) & set(saved) if own[k].shape != saved[k].shape)
    if missing or unexpected or shapes:
        detail = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape differs", shapes))
            if keys
        )
        raise CheckpointError(f"checkpoint {path} refused: it holds another model ({detail})")


def resume_checkpoint(cfg: DictConfig, run_dir: Path) -> tuple[Path, dict] | None:
    """``resume=PATH`` if given, else ``last.ckpt`` of this run dir if present: its path and
    contents, vetted, and refused if its config differs in what changes the run's meaning."""
    path = Path(hydra.utils.to_absolute_path(cfg.resume)) if cfg.resume else last_checkpoint(run_dir)
    if path is None:
        return None
    ckpt = load_checkpoint(path)
    current = OmegaConf.to_container(cfg, resolve=True)
    differing = config_differences(ckpt["sslkit"].get("config", {}), current)
    if differing and not cfg.get("resume_allow_config_change", False):
        raise ConfigError(
            f"checkpoint {path} refused: its config differs in {', '.join(differing[:6])}"
            f"{' ...' if len(differing) > 6 else ''}; resume with the same settings or add "
            "resume_allow_config_change=true"
        )
    return path, ckpt
