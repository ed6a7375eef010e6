"""sslkit as a library: ``sslkit.train`` outside the Hydra CLI, step and epoch checkpoints
together, the heads re-exported from ``sslkit.losses``."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

import sslkit
from sslkit.training.config import config_dir

SMOKE = ["experiment=smoke", "threads=1", "monitor.knn.every_n_epochs=0"]


class SaveSteps(L.Callback):
    """Appends the global step of every checkpoint written to ``path`` (one per line)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        with self.path.open("a") as fh:
            fh.write(f"{trainer.global_step}\n")


def test_train_from_python_outside_the_cli(tmp_path):
    summary = sslkit.train(overrides=[*SMOKE, "loss=cacr", "trainer.max_epochs=1"], run_dir=tmp_path)
    assert summary["loss"] == "cacr" and summary["global_step"] == 8 and summary["epochs"] == 1
    assert 0 <= summary["linear_probe_top1"] <= 1 and summary["run_dir"] == str(tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())["loss"] == "cacr"
    saved = OmegaConf.load(tmp_path / ".hydra" / "config.yaml")
    assert saved.loss._target_.endswith("CACR") and saved.trainer.max_epochs == 1
    assert (tmp_path / "metrics.csv").exists() and (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_step_checkpoints_keep_the_end_of_epoch_checkpoint(tmp_path):
    log = tmp_path / "saves.txt"
    run = tmp_path / "run"
    sslkit.train(overrides=[*SMOKE, "checkpoint.every_n_train_steps=3", "checkpoint.keep_last=0",
                            "+monitor.saves._target_=tests.test_library.SaveSteps",
                            f"+monitor.saves.path={log}"], run_dir=run)
    steps = [int(s) for s in log.read_text().split()]
    # 2 epochs of 8 steps: every 3rd step, and each epoch's end (best.ckpt saves at epoch ends too)
    assert {3, 6, 9, 12, 15} <= set(steps)
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    # without the end-of-epoch save last.ckpt would hold step 15, mid-epoch
    assert last["global_step"] == 16 and last["epoch"] == 1


def test_every_head_config_is_exported_from_sslkit_losses():
    import sslkit.losses

    for path in sorted((config_dir() / "loss").glob("*.yaml")):
        target = sslkit.compose([f"loss={path.stem}"], run_dir="/nowhere")[0].loss._target_
        name = target.rsplit(".", 1)[1]
        assert getattr(sslkit.losses, name).__module__ + "." + name == target, path.name
        assert name in sslkit.losses.__all__


def test_compose_gives_the_cli_config(tmp_path):
    cfg, run_dir, choices = sslkit.compose(["loss=gca_uot", "loss.epsilon=0.2"], run_dir=tmp_path)
    assert cfg.loss.epsilon == 0.2 and choices["loss"] == "gca_uot" and run_dir == tmp_path
    assert cfg.logger.csv.save_dir == str(tmp_path)  # ${hydra:runtime.output_dir} resolves


def test_timm_encoder_adapts_to_small_images():
    from sslkit.encoders.timm import TimmEncoder

    net = TimmEncoder("convnext_atto", in_chans=1, image_size=28)
    assert net.input_size == 32  # 28 px leave convnext's last stage no pixels
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, net.num_features)
    assert TimmEncoder("resnet10t", in_chans=1, image_size=28).input_size == 28


def _head_names() -> list[str]:
    import sslkit.losses

    return [n for n in sslkit.losses.__all__ if n != "LossOutput"]


@pytest.mark.parametrize("name", _head_names())
def test_head_docstring_example_runs(name):
    import doctest

    import sslkit.losses

    head = getattr(sslkit.losses, name)
    tests = doctest.DocTestFinder(recurse=False).find(head, name, globs={})
    assert tests and tests[0].examples, f"{name} has no docstring example"
    out = []
    result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(tests[0], out=out.append)
    assert result.failed == 0, "".join(out)


def test_run_logs_config_text_log_and_plain_progress(tmp_path):
    from tests.test_train import train

    proc = train("experiment=smoke", "threads=1", "loss=cacr", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # stdout is a pipe here: one line per epoch, no redrawn progress bar
    assert "\r" not in proc.stdout and "\r" not in proc.stderr
    lines = proc.stdout.splitlines()
    # smoke: progress_bar_refresh_rate=1, 8 batches an epoch
    assert [ln.split()[3] for ln in lines if " batch " in ln][:9] == [f"{b}/8" for b in range(1, 9)] + ["1/8"]
    epochs = [ln for ln in lines if " done, step " in ln]
    assert [ln.split()[1] for ln in epochs] == ["1/2", "2/2"] and "val/knn_top1=" in epochs[0]
    assert max(len(ln) for ln in lines) < 1000
    hparams = OmegaConf.load(tmp_path / "hparams.yaml")  # CSVLogger's copy of the resolved config
    assert hparams.loss._target_.endswith("CACR") and hparams.data.batch_size == 64
    log = (tmp_path / "train.log").read_text()
    assert "epoch 2/2 step 16" in log and "val/knn_top1=" in log and "summary: {" in log
    metrics = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert "train/views_per_s" in metrics  # the throughput callback
