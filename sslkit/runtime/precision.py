"""``trainer.precision=auto``: bf16 autocast where the hardware executes bf16 natively and it is
measured faster, float32 elsewhere.

- CUDA: ``bf16-mixed`` when ``torch.cuda.is_bf16_supported()``, else ``32-true`` (pre-Ampere
  GPUs: ``trainer.precision=16-mixed`` is the user's call, it brings a loss scaler).
- CPU: ``bf16-mixed`` when the CPU has native bf16 instructions (x86 ``avx512_bf16`` or AMX,
  ARM ``bf16``) AND a start-up calibration (a few forward+backward steps of a copy of the
  model's encoder and projector on augmented views of the configured per-process batch, bf16
  autocast against float32, interleaved) says bf16 is faster; else ``32-true``. Without native
  bf16 instructions oneDNN emulates bf16 (AVX-512 without ``avx512_bf16`` still reports bf16
  support to torch), which is slower than float32, so no calibration is run.
- With several processes (DDP) every rank must choose the same, and ranks cannot talk before the
  trainer starts: the calibration is skipped and native bf16 alone decides.

Any explicit ``trainer.precision`` is used unchanged. The loss heads compute their sums in float32
under autocast (tests/losses/test_contract.py), so bf16 reaches the encoder and projector only.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf

AUTO = "auto"
BF16, FP32 = "bf16-mixed", "32-true"
# flags in /proc/cpuinfo that mean bf16 arithmetic in hardware (x86: AVX512-BF16, AMX; ARM: BF16)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


@dataclass
class PrecisionChoice:
    precision: str
    reason: str
    # seconds per calibration step by precision, and the calibration's total ``seconds``
    timings: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        shown = ", ".join(f"{k} {self.timings[k] * 1e3:.0f} ms/step" for k in (BF16, FP32)
                          if k in self.timings)
        if "seconds" in self.timings:
            shown += f"; calibration took {self.timings['seconds']:.1f} s"
        return f"precision {self.precision}: {self.reason}" + (f" ({shown})" if shown else "")


def cpu_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """The native-bf16 flags this CPU reports (``/proc/cpuinfo``; torch's capability string for
    AMX); empty where neither says so."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    found = [f for f in NATIVE_BF16_FLAGS if f in flags]
    if "AMX" in torch.backends.cpu.get_cpu_capability() and "amx_bf16" not in found:
        found.append("amx_bf16")
    return found


def decide(requested: str, accelerator: str, *, cuda_bf16: bool = False,
           cpu_bf16: list[str] | tuple[str, ...] = (), timings: dict[str, float] | None = None,
           processes: int = 1) -> PrecisionChoice:
    """The precision for ``requested`` (``auto`` or an explicit Lightning value) on
    ``accelerator`` (``cpu`` | ``cuda``/``gpu``), from the hardware facts and, on a CPU with
    native bf16 and one process, the calibration ``timings`` (seconds per step of ``bf16-mixed``
    and ``32-true``)."""
    if str(requested) != AUTO:
        return PrecisionChoice(str(requested), "set in the config")
    if accelerator in ("cuda", "gpu"):
        if cuda_bf16:
            return PrecisionChoice(BF16, "auto: the GPU supports bf16")
        return PrecisionChoice(FP32, "auto: the GPU has no bf16 support")
    if not cpu_bf16:
        return PrecisionChoice(FP32, "auto: the CPU has no native bf16 (avx512_bf16/AMX); "
                                     "emulated bf16 is slower than float32")
    native = "/".join(cpu_bf16)
    if processes > 1:
        return PrecisionChoice(BF16, f"auto: native bf16 on the CPU ({native}); not calibrated, "
                                     f"as {processes} processes must agree")
    if not timings:
        return PrecisionChoice(BF16, f"auto: native bf16 on the CPU ({native}); not calibrated")
    bf16, fp32 = timings[BF16], timings[FP32]
    if bf16 < fp32:
        return PrecisionChoice(BF16, f"auto: native bf16 on the CPU ({native}), calibrated "
                                     f"{fp32 / bf16:.2f}x faster than float32", dict(timings))
    return PrecisionChoice(FP32, f"auto: native bf16 on the CPU ({native}) but calibrated "
                                 f"{bf16 / fp32:.2f}x slower than float32", dict(timings))


def calibrate(module: torch.nn.Module, images: torch.Tensor, steps: int = 1) -> dict[str, float]:
    """Median seconds per forward+backward step of a copy of ``module.online`` (encoder +
    projector, train mode) on the views ``module.augment`` makes of ``images`` (uint8
    ``[B, C, H, W]``, the per-process batch), under bf16 autocast and in float32. One untimed
    warm-up step each (oneDNN builds its kernels then); the timed steps alternate so that a change
    of machine load hits both alike. The module itself is not touched."""
    net = copy.deepcopy(module.online).train()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        views = module.augment(images, generator=gen)
    by_size: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for v in views:
        by_size.setdefault(tuple(v.shape[1:]), []).append(v)
    batches = [module._layout(torch.cat(vs)) for vs in by_size.values()]

    def step(bf16: bool) -> float:
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = sum(net(x)[1].float().square().mean() for x in batches)
        loss.backward()
        net.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    measured: dict[str, list[float]] = {BF16: [], FP32: []}
    with torch.random.fork_rng(devices=[]):  # dropout / drop-path draws leave the run's RNG alone
        step(True), step(False)
        for i in range(max(1, steps)):
            for name in ((BF16, FP32) if i % 2 == 0 else (FP32, BF16)):
                measured[name].append(step(name == BF16))
    return {name: sorted(ts)[len(ts) // 2] for name, ts in measured.items()}


def choose(cfg, module, dm, processes: int | None) -> PrecisionChoice:
    """``decide`` for this run's config: the accelerator Lightning will use, the hardware facts,
    and (CPU, native bf16, one process, ``precision_calibration_steps > 0``, no
    ``model.compile_encoder``) the calibration on a batch of the pretraining images' shape."""
    requested = str(cfg.trainer.get("precision", FP32))
    if requested != AUTO:
        return decide(requested, "cpu")
    accel = str(cfg.trainer.get("accelerator", "auto"))
    if accel == "auto":
        accel = "cuda" if torch.cuda.is_available() else "cpu"
    if accel in ("cuda", "gpu"):
        return decide(AUTO, "cuda", cuda_bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    flags = cpu_bf16_flags()
    steps = int(cfg.get("precision_calibration_steps", 1) or 0)
    procs = processes if processes is not None else 2  # "auto" devices: assume several
    timings = None
    # a compiled encoder would time its compilation, not its steps
    compiled = bool(OmegaConf.select(cfg, "model.compile_encoder", default=False))
    if flags and procs == 1 and steps > 0 and not compiled:
        started = time.perf_counter()
        timings = calibrate(module, calibration_images(dm), steps)
        timings["seconds"] = time.perf_counter() - started
    return decide(AUTO, "cpu", cpu_bf16=flags, timings=timings, processes=procs)


def calibration_images(dm) -> torch.Tensor:
    """A batch of the pretraining images' shape (uint8 ``[B, C, H, W]``, B = ``data.batch_size``):
    random pixels cost the convolutions what real ones do, and reading none keeps start-up quick."""
    gen = torch.Generator().manual_seed(0)
    size = (dm.batch_size, dm.in_chans, dm.image_size, dm.image_size)
    return torch.randint(0, 256, size, dtype=torch.uint8, generator=gen)
