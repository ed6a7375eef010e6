"""scripts/longtail_vs_balanced.py: a long-tailed run's class groups against the same classes
after balanced pretraining, checked by hand on hand-written run dirs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_script():
    spec = importlib.util.spec_from_file_location("longtail_vs_balanced", ROOT / "scripts" / "longtail_vs_balanced.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["longtail_vs_balanced"] = module
    spec.loader.exec_module(module)
    return module


def write_run(path: Path, overrides: list[str], name: str, result: dict) -> None:
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (path / "summary.json").write_text("{}")
    (path / "eval").mkdir()
    (path / "eval" / f"{name}.json").write_text(json.dumps(result))


def test_group_changes_by_hand(tmp_path, capsys):
    script = load_script()
    groups = ["many", "many", "few", "few"]
    per_class = {"infonce": [[0.8, 0.9, 0.9, 1.0], [0.8, 0.8, 0.9, 0.9]],
                 "cacr": [[0.9, 0.9, 0.9, 0.9], [0.8, 0.8, 1.0, 1.0]]}
    few = {"infonce": [0.90, 0.88], "cacr": [0.96, 0.92]}
    for loss in per_class:
        for seed in (0, 1):
            write_run(tmp_path / "bal" / f"{loss}{seed}", [f"loss={loss}", f"seed={seed}"], "linear",
                      {"per_class_top1": per_class[loss][seed]})
            write_run(tmp_path / "lt" / f"{loss}{seed}", [f"loss={loss}", "data.imbalance_ratio=10", f"seed={seed}"],
                      "longtail", {"class_groups": groups,
                                   "linear": {"many_top1": 0.85, "few_top1": few[loss][seed]}})
    assert script.main([str(tmp_path / "lt"), str(tmp_path / "bal"), "--reference", "infonce"]) == 0
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()[2:]]
    cacr_few = next(r for r in rows if r[1] == "cacr" and r[2].startswith("few"))
    # balanced few-shot accuracy = mean of classes 2 and 3: cacr 0.9 and 1.0 -> 0.95; long-tailed 0.94
    assert cacr_few[2] == "few (2 3)" and cacr_few[3].startswith("0.9500")
    assert cacr_few[5].startswith("-0.0100")
    # infonce: balanced 0.95 and 0.9 -> 0.925, long-tailed 0.89: change -0.035; cacr minus that: +0.025
    diff, half = script.difference_of_changes([0.96, 0.92], [0.9, 1.0], [0.90, 0.88], [0.95, 0.9])
    assert diff == pytest.approx(0.025) and half > 0
    assert cacr_few[6].rstrip(" |").startswith("+0.0250")


def test_refuses_dirs_without_matching_runs(tmp_path):
    script = load_script()
    (tmp_path / "a").mkdir()
    assert script.main([str(tmp_path / "a"), str(tmp_path / "a")]) == 1
    assert script.main([str(tmp_path / "missing"), str(tmp_path / "a")]) == 2


def test_a_head_chosen_by_the_sweep_file_is_found(tmp_path):
    """Balanced runs of a sweep whose file picks the head (``override /loss: cacr``) carry no
    loss override; the head comes from the run's .hydra/hydra.yaml."""
    script = load_script()
    for seed in (0, 1):
        run = tmp_path / "bal" / str(seed)
        write_run(run, [f"seed={seed}"], "linear", {"per_class_top1": [0.8, 0.8, 0.9, 1.0]})
        (run / ".hydra" / "config.yaml").write_text(f"seed: {seed}\n")
        (run / ".hydra" / "hydra.yaml").write_text("hydra:\n  runtime:\n    choices:\n      loss: cacr\n")
    assert script.balanced_runs([tmp_path / "bal"]) == {"cacr": [[0.8, 0.8, 0.9, 1.0]] * 2}
