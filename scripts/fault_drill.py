"""Kill-and-resume drill: does a run that is killed and resumed end bit-identical to one that
never stopped?

    python scripts/fault_drill.py --runs 5 [--epochs 8] [key=value ...]

Runs `train.py experiment=smoke` once straight, then --runs times: starts the same run, kills it
after a random delay with a random signal (SIGTERM, SIGUSR1 or SIGKILL), reruns the same command
until it completes, and compares the final weights, optimiser state and online probe with the
straight run bit for bit. Prints one line per drill and the totals.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGUSR1": signal.SIGUSR1, "SIGKILL": signal.SIGKILL}


def command(run_dir: Path, args: list[str]) -> list[str]:
    return [sys.executable, "train.py", "experiment=smoke", *args, f"hydra.run.dir={run_dir}"]


def run(run_dir: Path, args: list[str]) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command(run_dir, args), cwd=ROOT, env=env, capture_output=True).returncode


def state(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    flat = {f"model.{k}": v for k, v in ckpt["state_dict"].items()}
    for pid, st in ckpt["optimizer_states"][0]["state"].items():
        flat.update({f"optim.{pid}.{k}": v for k, v in st.items() if isinstance(v, torch.Tensor)})
    for key, cb in ckpt["callbacks"].items():
        if "OnlineLinearProbe" in key:
            flat.update({f"probe.{k}": v for k, v in cb["classifier"].items()})
    return flat


def identical(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill times and signals")
    parser.add_argument("overrides", nargs="*")
    opts = parser.parse_args()
    rng = random.Random(opts.seed)
    args = [f"trainer.max_epochs={opts.epochs}", "monitor.knn.every_n_epochs=0", *opts.overrides]
    work = Path(tempfile.mkdtemp(prefix="fault_drill_"))
    started = time.perf_counter()
    if run(work / "straight", args) != 0:
        sys.exit("the straight run failed; run it by hand to see why")
    straight_seconds = time.perf_counter() - started
    reference = state(work / "straight")
    killed = resumed = matched = 0
    for i in range(opts.runs):
        run_dir = work / f"drill{i}"
        name = rng.choice(list(SIGNALS))
        delay = rng.uniform(0.4, 0.9) * straight_seconds
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(command(run_dir, args), cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(SIGNALS[name])
            proc.wait()
            killed += 1
        restarts = 0
        while not (run_dir / "summary.json").exists() and restarts < 3:
            restarts += 1
            if run(run_dir, args) != 0:
                break
        ok = (run_dir / "summary.json").exists()
        resumed += ok and restarts > 0
        same = ok and identical(reference, state(run_dir))
        matched += same
        print(f"drill {i}: {name} after {delay:.1f}s, resumed {restarts}x, "
              f"{'identical' if same else 'DIFFERENT' if ok else 'did not finish'}", flush=True)
    print(f"{opts.runs} drills: {killed} killed, {resumed} resumed, {matched} matched the "
          f"straight run bit for bit ({work})")
    sys.exit(0 if matched == opts.runs else 1)


if __name__ == "__main__":
    main()
