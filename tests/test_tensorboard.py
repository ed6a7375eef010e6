"""logger=tensorboard: a training's scalars, its config beside its final numbers, and the
evaluators' pictures, read back from the event files with TensorBoard's own reader."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tensorboard", reason="logger=tensorboard needs the tensorboard extra")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

from tests.conftest import run_entry  # noqa: E402


def read_events(folder: Path) -> EventAccumulator:
    """Every event file of ``folder``, nothing sampled away."""
    assert list(folder.glob("events.out.tfevents.*")), f"no event file in {folder}"
    return EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0}).Reload()


def test_a_tensorboard_run_reads_back(tmp_path):
    run = tmp_path / "run"
    proc = run_entry(["train.py", "experiment=smoke", "threads=1", "logger=tensorboard",
                      "trainer.max_epochs=1", "monitor.knn.every_n_epochs=0", "eval=[linear,plots]",
                      "eval.plots.max_points=64", f"hydra.run.dir={run}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    events = read_events(run / "tensorboard")
    tags = events.Tags()

    # scalars: the training loss of every step, the lr, the online probe on the validation split
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(8)) and all(np.isfinite(e.value) for e in loss)
    assert "val/online_probe_top1" in tags["scalars"] and "lr-AdamW/pg1" in tags["scalars"]
    # the final numbers beside the config (hparams), at the last step
    final = events.Scalars("val/linear_probe_top1")
    assert final[-1].step == summary["global_step"] == 8
    assert final[-1].value == pytest.approx(summary["val/linear_probe_top1"])
    assert events.Scalars("test/linear_probe_top1")[-1].value == pytest.approx(summary["test/linear_probe_top1"])
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["optim/optimizer/lr"].number_value == pytest.approx(2e-3)
    assert hparams["loss/_target_"].string_value == "sslkit.losses.au.AlignUniform"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} >= {"val/linear_probe_top1", "test/linear_probe_top1"}

    # the plots evaluator's pictures, as images, pixel for pixel
    assert {"plots/embedding_tsne", "plots/curves"} <= set(tags["images"])
    logged = events.Images("plots/curves")[-1]
    on_disk = np.asarray(Image.open(run / "plots" / "curves.png").convert("RGB"))
    assert (logged.height, logged.width) == on_disk.shape[:2]
    decoded = np.asarray(Image.open(io.BytesIO(logged.encoded_image_string)).convert("RGB"))
    assert np.array_equal(decoded, on_disk)
    # and the csv logger beside it, as logger=csv alone
    assert (run / "metrics.csv").exists()


def test_pictures_reach_a_tensorboard_logger(tmp_path):
    # the fast twin of the run above: the logger-agnostic call the evaluation runner makes
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from sslkit.runtime.loggers import log_pictures

    png = tmp_path / "p.png"
    pixels = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(png)
    tb = TensorBoardLogger(str(tmp_path), name="tb", version="")
    csv = CSVLogger(str(tmp_path), name="csv", version="")
    assert log_pictures([csv, tb], {"noise": png}, step=5) == ["tensorboard"]
    image = read_events(tmp_path / "tb").Images("plots/noise")
    assert [i.step for i in image] == [5]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(image[0].encoded_image_string))), pixels)
