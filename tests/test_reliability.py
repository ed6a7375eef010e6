"""Resume is bit-exact on CPU and a seed fixes the run."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.test_train import ROOT, train

pytestmark = pytest.mark.slow


def weights(run_dir):
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    return ckpt["state_dict"], ckpt["optimizer_states"][0]["state"], ckpt["callbacks"]


def assert_identical(a, b):
    sa, oa, ca = a
    sb, ob, cb = b
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{k} differs"
    for k in oa:
        for name, t in oa[k].items():
            assert torch.equal(t, ob[k][name]), f"optimizer state {k}.{name} differs"
    probe_a = [v for key, v in ca.items() if "OnlineLinearProbe" in key][0]["classifier"]
    probe_b = [v for key, v in cb.items() if "OnlineLinearProbe" in key][0]["classifier"]
    for k in probe_a:
        assert torch.equal(probe_a[k], probe_b[k]), f"online probe {k} differs"


# adversarial views with dual BN, SAM and the discriminator (its weights and optimiser)
ADVERSARIAL = ["adversarial=pgd", "adversarial.attack.steps=2", "adversarial.bn_mode=dual",
               "adversarial.sam_rho=0.05", "adversarial/divergence=gan", "adversarial.w_div=0.1"]


# heads with state: schedules that change after the resume point (epoch 2, step 16): SwAV's
# prototypes frozen until step 20 and its queue (two batches of 64, filled from epoch 1: full
# after step 9, in the codes from step 10, so across the resume point), DINO's last layer until
# epoch 2 and its teacher temperature warming up over 3 epochs; BYOL's and MoCo v3's cosine
# momentum; NNCLR's support set (smaller than the 512 smoke images, so that it has wrapped round
# before the resume point)
HEAD_OVERRIDES = {
    "swav": ["loss.freeze_prototypes_iters=20", "loss.queue_length=128", "loss.epoch_queue_starts=1"],
    "dino": ["loss.freeze_last_layer=2", "loss.warmup_teacher_temp_epochs=3"],
    "nnclr": ["loss.queue_size=192"],
}
STATEFUL = ["byol", "mocov3", "swav", "dino", "nnclr"]
STATELESS = ["simsiam", "barlow_twins", "vicreg", "supcon"]


@pytest.mark.parametrize("loss", ["infonce", "moco", "infonce+adversarial", *STATEFUL, *STATELESS])
def test_resume_at_epoch_boundary_is_bit_exact(tmp_path, loss):
    extra = [f"loss={loss.split('+')[0]}", "monitor.knn.every_n_epochs=0",
             *HEAD_OVERRIDES.get(loss, [])]
    if loss == "moco":
        extra.append("loss.queue_size=96")
    if loss.endswith("+adversarial"):
        extra += ADVERSARIAL
    straight = tmp_path / "straight"
    assert train("experiment=smoke", *extra, "trainer.max_epochs=3", "checkpoint.keep_last=3",
                 f"hydra.run.dir={straight}").returncode == 0
    epoch1 = straight / "checkpoints" / "epoch001.ckpt"  # what a run stopped after 2 epochs holds
    resumed_from = torch.load(epoch1, weights_only=True)
    assert resumed_from["epoch"] == 1
    if "queue.filled" in resumed_from["state_dict"]:  # the resumed run starts from a full queue
        state = resumed_from["state_dict"]
        assert int(state["queue.filled"]) == state["queue.keys"].shape[0]
    split = tmp_path / "split"
    proc = train("experiment=smoke", *extra, "trainer.max_epochs=3", f"resume={epoch1}",
                 f"hydra.run.dir={split}")
    assert proc.returncode == 0 and "resuming from" in proc.stdout, proc.stderr[-2000:]
    assert_identical(weights(straight), weights(split))
    if loss == "swav":  # the codes read the queue on every step after the resume point
        with open(split / "metrics.csv") as fh:
            used = [float(r["train/queue_in_use"]) for r in csv.DictReader(fh) if r.get("train/queue_in_use")]
        assert used and set(used) == {1.0}
    if loss.endswith("+adversarial"):
        robust = [torch.load(d / "checkpoints" / "last.ckpt", weights_only=True)["sslkit"]["robust"]
                  for d in (straight, split)]
        state_a, state_b = (r["divergence_optimizer"]["state"] for r in robust)
        assert state_a.keys() == state_b.keys() and state_a
        for k in state_a:
            for name, t in state_a[k].items():
                assert torch.equal(t, state_b[k][name]), f"discriminator optimiser {k}.{name}"


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    args = ["experiment=smoke", "trainer.max_epochs=1", "monitor.knn.every_n_epochs=0"]
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        assert train(*args, f"seed={seed}", f"hydra.run.dir={tmp_path / name}").returncode == 0
    assert_identical(weights(tmp_path / "a"), weights(tmp_path / "b"))
    with pytest.raises(AssertionError):
        assert_identical(weights(tmp_path / "a"), weights(tmp_path / "c"))


def start_and_signal(run_dir, sig, after_batches: int, *args: str) -> subprocess.CompletedProcess:
    """Start `train.py`, wait until the second epoch has run `after_batches` batches (read from
    the progress lines), send `sig`, wait for the process to end."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = run_dir.parent / f"{run_dir.name}.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "train.py", *args, f"hydra.run.dir={run_dir}"],
                                cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env)
        pattern = re.compile(rf"epoch 2/\d+ batch {after_batches}/")
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if pattern.search(log.read_text(errors="ignore")):
                proc.send_signal(sig)
                break
            time.sleep(0.05)
        proc.wait(timeout=240)
    return subprocess.CompletedProcess(proc.args, proc.returncode, log.read_text(errors="ignore"), "")


@pytest.mark.parametrize("sig,every", [(signal.SIGTERM, None), (signal.SIGUSR1, None),
                                       (signal.SIGKILL, None), (signal.SIGKILL, 3)])
def test_signal_then_resume_matches_straight_run(tmp_path, sig, every):
    """SIGKILL with step checkpoints every 3 steps resumes from a mid-epoch last.ckpt."""
    args = ["experiment=smoke", "trainer.max_epochs=3", "monitor.knn.every_n_epochs=0",
            f"checkpoint.every_n_train_steps={every or 'null'}"]
    straight = tmp_path / "straight"
    assert train(*args, f"hydra.run.dir={straight}").returncode == 0
    run = tmp_path / "run"
    stopped = start_and_signal(run, sig, 3, *args, "monitor.online_probe.lr=1.0e-3")
    if sig == signal.SIGKILL:
        assert stopped.returncode == -signal.SIGKILL
    else:
        assert stopped.returncode == 0, stopped.stdout[-2000:]
        assert "stopped by signal" in stopped.stdout and "last.ckpt" in stopped.stdout
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
        assert ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"] >= 3
        assert not (run / "summary.json").exists()
    # the same command again continues the run (SIGKILL: from the last complete checkpoint)
    started = time.perf_counter()
    resumed = train(*args, "monitor.online_probe.lr=1.0e-3", f"hydra.run.dir={run}")
    lived = time.perf_counter() - started
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout
    # each epoch's "done" line times that epoch in this process, the resumed one from the resume
    seconds = [float(s) for s in re.findall(r"epoch \d+/3 done, step \d+, ([\d.]+) s", resumed.stdout)]
    assert seconds and all(s <= lived for s in seconds), (seconds, lived)
    assert_identical(weights(straight), weights(run))
