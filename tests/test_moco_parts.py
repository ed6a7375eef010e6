"""MoCo-family parts of the training module: queue size against the data, shuffle BN of the
key encoder, which views each head computes."""

from __future__ import annotations

import pytest
import torch

from sslkit.errors import ConfigError
from sslkit.parts.queue import check_queue_fits
from tests.test_train import train

torch.set_num_threads(1)


def test_queue_must_be_shorter_than_the_data():
    check_queue_fits(4096, 60000, "fashion_mnist")
    check_queue_fits(None, 10, "x")  # heads without a queue
    check_queue_fits(511, 512, "synthetic")
    for size in (512, 65536):
        with pytest.raises(ConfigError, match=f"loss.queue_size={size} is not below the 512") as err:
            check_queue_fits(size, 512, "synthetic")
        assert "loss.queue_size=128" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="set loss.queue_size=4096"):
        check_queue_fits(65536, 50000, "cifar10")


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["moco", "cacr_moco"])
def test_train_refuses_a_queue_as_long_as_the_data_before_any_work(loss, tmp_path):
    # the default 4096 exceeds the 512 smoke images
    proc = train("experiment=smoke", f"loss={loss}", f"hydra.run.dir={tmp_path}")
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr[-2000:]
    assert "loss.queue_size=4096 is not below the 512 pretraining images" in lines[0]
    assert not (tmp_path / "checkpoints").exists()
