"""Every command of docs/evaluation.md runs, at smoke scale (synthetic data, paths in a temp dir)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from tests.conftest import make_cifar, run_entry

ROOT = Path(__file__).resolve().parent.parent
# appended at smoke scale: training of 2 steps an epoch without the kNN monitor; eval=all with
# every evaluator at its smallest (the robust one's attacks at 2 steps)
SHORT_TRAIN = ["+trainer.limit_train_batches=2", "monitor.knn.every_n_epochs=0"]
SMALL_EVAL_ALL = ["eval.plots.max_points=100", "eval.plots.n_jobs=1", "eval.metrics.num_samples=64",
                  "eval.robust.test_size=32", "eval.robust.slf.epochs=5", "eval.robust.alf.train_size=32",
                  "eval.robust.aff.train_size=32",
                  *(f"eval.robust.{a}.steps=2" for a in ("attacks.pgd20_linf_8", "attacks.pgd20_linf_2",
                                                          "attacks.pgd20_l2_0p5", "train_attack")),
                  "eval.finetune.epochs=1", "eval.semi.draws=2", "eval.semi.finetune.epochs=1"]


def doc_commands() -> list[list[str]]:
    text = (ROOT / "docs" / "evaluation.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [shlex.split(line) for block in blocks for line in block.splitlines()
            if line.startswith("python ")]


def test_the_doc_has_commands():
    scripts = {cmd[1] for cmd in doc_commands()}
    assert {"train.py", "scripts/evaluate.py", "scripts/sweep_report.py"} <= scripts


def test_doc_commands_run_at_smoke_scale(tmp_path):
    """Each command through its entry point in this process (``run_entry``), the multirun too;
    the transfer's data root is a tiny CIFAR-10 in the official format."""
    cifar = make_cifar(tmp_path / "data", 10, n=20)
    for cmd in doc_commands():
        args = [re.sub(r"(^|=|\[|,)(runs|multirun)/", lambda m: f"{m.group(1)}{tmp_path}/{m.group(2)}/", a)
                for a in cmd[1:]]
        if args[0] == "train.py":
            args.insert(1 + (args[1] == "-m"), "experiment=smoke")
            args += SHORT_TRAIN
        if "eval=all" in args:
            args += SMALL_EVAL_ALL
        args = [f"eval.transfer.root={cifar}" if a.startswith("eval.transfer.root=") else a for a in args]
        proc = run_entry(args)
        assert proc.returncode == 0, f"{shlex.join(cmd)}\n{proc.stderr[-3000:]}"
    assert (tmp_path / "runs" / "eval_demo" / "eval" / "linear_sgd.json").exists()
    assert (tmp_path / "runs" / "eval_longtail" / "eval" / "longtail.json").exists()
    assert (tmp_path / "runs" / "eval_domain" / "eval" / "domain.json").exists()
    assert (tmp_path / "runs" / "eval_finetune" / "eval" / "finetune.json").exists()
    demo = tmp_path / "runs" / "eval_demo"
    assert (demo / "eval" / "semi.json").exists() and (demo / "plots" / "label_efficiency.png").exists()
    assert json.loads((demo / "eval" / "transfer.json").read_text())["data"] == "cifar10"
