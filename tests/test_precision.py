"""``trainer.precision=auto`` (sslkit/runtime/precision.py): the decision from hardware facts and
calibration timings, the calibration itself, explicit values kept, the summary's record, and one
bf16-mixed training step of every head."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from sslkit.launch.api import compose
from sslkit.runtime.precision import BF16, FP32, calibrate, calibration_images, choose, cpu_bf16_flags, decide
from sslkit.training.build import build_datamodule, build_module
from tests.conftest import train_run

ROOT = Path(__file__).resolve().parent.parent
HEADS = sorted(p.stem for p in (ROOT / "configs" / "loss").glob("*.yaml"))


@pytest.mark.parametrize("value", ["32-true", "bf16-mixed", "64-true", "16-mixed", "bf16-true"])
@pytest.mark.parametrize("accelerator", ["cpu", "cuda"])
def test_explicit_precision_is_kept(value, accelerator):
    choice = decide(value, accelerator, cuda_bf16=True, cpu_bf16=["avx512_bf16"],
                    timings={BF16: 1.0, FP32: 2.0})
    assert choice.precision == value and choice.reason == "set in the config" and not choice.timings


def test_auto_on_cpu_follows_native_bf16_and_calibration():
    no_native = decide("auto", "cpu", cpu_bf16=[], timings={BF16: 0.1, FP32: 1.0})
    assert no_native.precision == FP32 and "no native bf16" in no_native.reason
    faster = decide("auto", "cpu", cpu_bf16=["avx512_bf16"], timings={BF16: 0.4, FP32: 1.0})
    assert faster.precision == BF16 and "2.50x faster" in faster.reason
    assert faster.timings == {BF16: 0.4, FP32: 1.0}
    slower = decide("auto", "cpu", cpu_bf16=["amx_bf16"], timings={BF16: 1.5, FP32: 1.0})
    assert slower.precision == FP32 and "1.50x slower" in slower.reason and "amx_bf16" in slower.reason
    # several processes cannot compare calibrations before the trainer starts: native bf16 decides
    ddp = decide("auto", "cpu", cpu_bf16=["avx512_bf16"], timings=None, processes=2)
    assert ddp.precision == BF16 and "2 processes" in ddp.reason


def test_auto_on_gpu_follows_bf16_support():
    assert decide("auto", "cuda", cuda_bf16=True).precision == BF16
    assert decide("auto", "gpu", cuda_bf16=False).precision == FP32


def test_native_bf16_flags_from_cpuinfo():
    amx = "AMX" in torch.backends.cpu.get_cpu_capability()
    x86 = "processor\t: 0\nflags\t\t: fpu sse avx512f avx512bw avx512_bf16 avx512_vnni\n"
    assert cpu_bf16_flags(x86)[0] == "avx512_bf16"
    plain = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw\n"
    assert cpu_bf16_flags(plain) == (["amx_bf16"] if amx else [])
    arm = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"
    assert cpu_bf16_flags(arm)[0] == "bf16"


def smoke_parts(*overrides: str):
    cfg, _, _ = compose(["experiment=smoke", "data.batch_size=32", *overrides], run_dir="/tmp/unused")
    dm = build_datamodule(cfg)
    dm.setup("fit")
    return cfg, dm, build_module(cfg)


def test_calibration_times_both_and_leaves_the_module_alone():
    torch.set_num_threads(1)
    cfg, dm, module = smoke_parts()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    images = calibration_images(dm)
    assert images.dtype == torch.uint8 and images.shape == (32, 1, 16, 16)
    rng = torch.get_rng_state()
    timings = calibrate(module, images, steps=1)
    assert torch.equal(rng, torch.get_rng_state())  # the run's random draws stay as they were
    assert set(timings) == {BF16, FP32} and all(t > 0 for t in timings.values())
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics included


def test_choose_keeps_an_explicit_value_without_calibrating():
    cfg, dm, module = smoke_parts("trainer.precision=64-true")
    choice = choose(cfg, module, dm, 1)
    assert choice.precision == "64-true" and not choice.timings


def test_choose_auto_on_this_cpu():
    torch.set_num_threads(1)
    cfg, dm, module = smoke_parts("trainer.precision=auto")
    choice = choose(cfg, module, dm, 1)
    if cpu_bf16_flags():
        assert choice.precision in (BF16, FP32) and choice.timings["seconds"] > 0
        assert set(choice.timings) == {BF16, FP32, "seconds"}
    else:
        assert choice.precision == FP32 and not choice.timings
    ddp = choose(cfg, module, dm, 2)
    assert not ddp.timings and ddp.precision == (BF16 if cpu_bf16_flags() else FP32)
    cfg, dm, module = smoke_parts("trainer.precision=auto", "model.compile_encoder=true")
    compiled = choose(cfg, module, dm, 1)  # would time torch.compile's compilation
    assert not compiled.timings and compiled.precision == (BF16 if cpu_bf16_flags() else FP32)


def run(tmp_path: Path, *args: str) -> dict:
    """``train.py`` in this process, as short as a run that still records its precision can be."""
    train_run(tmp_path, "experiment=smoke", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
              "eval=[linear]", "eval.linear.max_iter=50", "monitor.knn.every_n_epochs=0", *args)
    return json.loads((tmp_path / "summary.json").read_text())


def test_summary_and_log_record_the_precision_used(tmp_path):
    auto = run(tmp_path / "auto", "trainer.precision=auto", "threads=auto")
    assert auto["precision"] in (BF16, FP32) and auto["precision_reason"].startswith("auto:")
    assert auto["threads_reason"].startswith("auto:") and auto["threads"] >= 1
    hparams = OmegaConf.load(tmp_path / "auto" / "hparams.yaml")
    assert hparams.trainer.precision == auto["precision"]  # what the Trainer was given
    # checkpoints record it too: offline evaluation (eval_precision=auto) extracts features in it
    ckpt = torch.load(tmp_path / "auto" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["sslkit"]["config"]["trainer"]["precision"] == auto["precision"]
    log = (tmp_path / "auto" / "train.log").read_text()
    assert f"precision {auto['precision']}: auto:" in log and "threads " in log
    fixed = run(tmp_path / "fixed", "trainer.precision=bf16-mixed", "threads=1")
    assert fixed["precision"] == BF16 and fixed["precision_reason"] == "set in the config"
    assert fixed["precision_calibration"] is None and fixed["threads"] == 1


class LastStep(L.Callback):
    def __init__(self) -> None:
        self.loss = None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.loss = outputs["loss"].detach()


@pytest.mark.parametrize("head", HEADS)
def test_every_head_trains_one_bf16_mixed_step(head, tmp_path):
    torch.set_num_threads(1)
    queue = ["loss.queue_size=64"] if "queue_size:" in (ROOT / "configs" / "loss" / f"{head}.yaml").read_text() else []
    cfg, dm, module = smoke_parts(f"loss={head}", *queue)
    before = {n: p.detach().clone() for n, p in module.online.named_parameters()}
    last = LastStep()
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="bf16-mixed", max_steps=1,
                        limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False,
                        callbacks=[last], default_root_dir=str(tmp_path))
    trainer.fit(module, datamodule=dm)
    assert last.loss is not None and last.loss.dtype == torch.float32 and torch.isfinite(last.loss)
    moved = [n for n, p in module.online.named_parameters() if not torch.equal(p, before[n])]
    assert moved and all(torch.isfinite(p).all() for p in module.online.parameters())
