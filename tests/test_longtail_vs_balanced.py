"""scripts/longtail_vs_balanced.py: a long-tailed run's class groups against the same classes
after balanced pretraining, checked by hand on hand-written run dirs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

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
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split(" | ") for line in lines[2:lines.index("")]]
    cacr_few = next(r for r in rows if r[1] == "cacr" and r[2].startswith("few"))
    # balanced few-shot accuracy = mean of classes 2 and 3: cacr 0.9 (seed 0) and 1.0 (seed 1) -> 0.95;
    # long-tailed 0.96 and 0.92: per-seed changes +0.06 and -0.08, mean -0.01 over 2 pairs
    assert cacr_few[2] == "few (2 3)" and cacr_few[3].startswith("0.9500")
    assert cacr_few[5].startswith("-0.0100") and cacr_few[5].endswith("(2 pairs)")
    # infonce: balanced 0.95 and 0.9, long-tailed 0.90 and 0.88: changes -0.05 and -0.02; cacr's
    # minus infonce's per seed: +0.11 and -0.06, mean +0.025, a one-sample t-interval of the two
    d = script.difference_of_changes({"0": 0.96, "1": 0.92}, {"0": 0.9, "1": 1.0},
                                     {"0": 0.90, "1": 0.88}, {"0": 0.95, "1": 0.9})
    ref = scipy_stats.ttest_1samp([0.11, -0.06], 0.0)
    assert d["test"] == "paired" and d["n"] == 2 and d["diff"] == pytest.approx(0.025)
    assert (d["low"], d["high"]) == pytest.approx(tuple(ref.confidence_interval(0.95)))
    assert cacr_few[6].rstrip(" |").startswith("+0.0250") and "(2 pairs)" in cacr_few[6]
    # the family on the few-shot classes: cacr - infonce long-tailed (+0.06, +0.04) and the
    # difference of changes, Holm over the two
    family = [line.split(" | ") for line in lines if "(long-tailed)" in line or "change from balanced" in line]
    assert [r[1] for r in family] == ["cacr - infonce (long-tailed)", "cacr's change from balanced - infonce's"]
    assert family[0][3].startswith("+0.0500") and family[1][3].startswith("+0.0250")
    assert all(r[7] == "2" for r in family)


def family_dirs(tmp_path, seeds_lt=(0, 1, 2, 3), seeds_bal=(0, 1, 2, 3)):
    """Three heads at ratio 100 (few-shot classes 2 and 3), infonce the reference: cacr loses less
    than infonce from balanced on every seed, au the same as infonce."""
    groups = ["many", "medium", "few", "few"]
    bal = {"infonce": [0.90, 0.92, 0.91, 0.93], "cacr": [0.90, 0.91, 0.92, 0.92], "au": [0.89, 0.92, 0.90, 0.93]}
    lt = {"infonce": [0.80, 0.83, 0.80, 0.84], "cacr": [0.86, 0.89, 0.87, 0.88], "au": [0.79, 0.83, 0.80, 0.84]}
    for loss in bal:
        for s in seeds_bal:
            write_run(tmp_path / "bal" / f"{loss}{s}", [f"loss={loss}", f"seed={s}"], "linear",
                      {"per_class_top1": [0.95, 0.9, bal[loss][s], bal[loss][s]]})
        for s in seeds_lt:
            write_run(tmp_path / "lt" / f"{loss}{s}", [f"loss={loss}", "data.imbalance_ratio=100", f"seed={s}"],
                      "longtail", {"class_groups": groups,
                                   "linear": {"many_top1": 0.9, "medium_top1": 0.85, "few_top1": lt[loss][s]}})
    return bal, lt


def test_family_is_paired_by_seed_and_holm_corrected(tmp_path):
    """Claim 8's family: each head minus the reference after long-tailed pretraining and the
    claim's head's change minus the reference's, every one a paired t-test over the seeds
    (scipy's ttest_1samp of the per-seed contrasts), Holm over the family (m = 3 with
    ``--changes cacr``, 4 without); a seed one side lacks is dropped and counted."""
    from sslkit.stats.compare import holm

    script = load_script()
    bal, lt = family_dirs(tmp_path, seeds_bal=(0, 1, 2, 3), seeds_lt=(0, 1, 2, 3))
    runs_lt, runs_bal = script.longtail_runs(tmp_path / "lt"), script.balanced_runs([tmp_path / "bal"])
    fam = script.family(runs_lt, runs_bal, "infonce", "few", ["cacr"], 0.003, "within 0.3", "higher")["100"]
    assert [c["label"] for c in fam] == ["au - infonce (long-tailed)", "cacr - infonce (long-tailed)",
                                         "cacr's change from balanced - infonce's"]
    per_seed = [[lt["au"][s] - lt["infonce"][s] for s in range(4)],
                [lt["cacr"][s] - lt["infonce"][s] for s in range(4)],
                [(lt["cacr"][s] - bal["cacr"][s]) - (lt["infonce"][s] - bal["infonce"][s]) for s in range(4)]]
    p = [scipy_stats.ttest_1samp(x, 0.0).pvalue for x in per_seed]
    assert [c["p"] for c in fam] == pytest.approx(p, rel=1e-9)
    assert [c["p_holm"] for c in fam] == pytest.approx(holm(p), rel=1e-9)
    assert all(c["test"] == "paired" and c["n"] == 4 and c["family_size"] == 3 for c in fam)
    assert fam[1]["verdict"] == "holds" and fam[2]["verdict"] == "holds"
    # every head's change joins by default: m = 4
    every = script.family(runs_lt, runs_bal, "infonce", "few", None, 0.003, "within 0.3", None)["100"]
    assert [c["label"] for c in every[2:]] == ["au's change from balanced - infonce's",
                                               "cacr's change from balanced - infonce's"]
    assert all(c["family_size"] == 4 for c in every) and every[3]["p_holm"] >= fam[2]["p_holm"]


def test_a_seed_without_its_balanced_run_is_dropped(tmp_path):
    script = load_script()
    family_dirs(tmp_path, seeds_bal=(0, 1, 2), seeds_lt=(0, 1, 2, 3))
    runs_lt, runs_bal = script.longtail_runs(tmp_path / "lt"), script.balanced_runs([tmp_path / "bal"])
    fam = script.family(runs_lt, runs_bal, "infonce", "few", ["cacr"], None, None, None)["100"]
    change = fam[2]
    assert change["n"] == 3 and change["dropped"] == (4 + 3 + 4 + 3) - 3 * 4  # values given - used
    assert fam[1]["n"] == 4 and fam[1]["dropped"] == 0


def test_the_command_prints_the_family_and_refuses_an_unknown_head(tmp_path, capsys):
    script = load_script()
    family_dirs(tmp_path)
    args = [str(tmp_path / "lt"), str(tmp_path / "bal"), "--reference", "infonce"]
    assert script.main([*args, "--changes", "cacr", "--predict", "higher"]) == 0
    out = capsys.readouterr().out
    assert "| 100 | cacr's change from balanced - infonce's | 4 pairs |" in out and "| 3 | holds |" in out
    assert script.main([*args, "--changes", "simclr"]) == 2
    assert "simclr: no long-tailed run of that head" in capsys.readouterr().err


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
    assert script.balanced_runs([tmp_path / "bal"]) == {"cacr": {"0": [0.8, 0.8, 0.9, 1.0], "1": [0.8, 0.8, 0.9, 1.0]}}


def test_a_seed_twice_for_one_head_is_refused_naming_both_runs(tmp_path, capsys):
    script = load_script()
    result = {"class_groups": ["many", "few"], "linear": {"many_top1": 0.9, "few_top1": 0.8}}
    for name in ("first", "copy"):
        write_run(tmp_path / "lt" / name, ["loss=infonce", "data.imbalance_ratio=10", "seed=0"],
                  "longtail", result)
    write_run(tmp_path / "lt" / "unseeded", ["loss=cacr", "data.imbalance_ratio=10"], "longtail", result)
    write_run(tmp_path / "bal" / "a", ["loss=infonce", "seed=0"], "linear", {"per_class_top1": [0.9, 0.9]})
    assert script.main([str(tmp_path / "lt"), str(tmp_path / "bal")]) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("error: ") and "\n" not in message
    assert str(tmp_path / "lt" / "first") in message and str(tmp_path / "lt" / "copy") in message
    assert "seed 0" in message and "infonce" in message
    # runs without a seed are never duplicates of each other
    seeded = {}
    for name in ("u1", "u2"):
        script._add(seeded, "cacr", None, 0.5, type("Run", (), {"path": tmp_path / name})())
    assert len(seeded["cacr"]) == 2
