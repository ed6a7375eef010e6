"""Which runs pool into one setting (sslkit.stats.identity, .aggregate, .sweep): every config key
but the seed and a short list of paths and run-time keys; one seed twice is refused; everything
written is strict JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from scipy import stats as scipy_stats

from sslkit.stats.aggregate import aggregate, compare_groups, identity
from sslkit.stats.identity import NOT_SETTINGS, DuplicateSeedError
from sslkit.stats.jsonio import dumps
from sslkit.stats.sweep import build_report

ROOT = Path(__file__).resolve().parents[2]


def strict_loads(text: str):
    def refuse(name):
        raise ValueError(f"bare {name} in JSON")

    return json.loads(text, parse_constant=refuse)


def config(seed: int = 0, **changes) -> dict:
    cfg = {"seed": seed, "threads": 1, "loss": {"_target_": "InfoNCE", "temperature": 0.5},
           "data": {"_target_": "F", "root": "data", "seed": seed, "batch_size": 256},
           "trainer": {"max_epochs": 1}, "adversarial": None, "logger": {"csv": {"save_dir": f"/runs/{seed}"}}}
    for key, value in changes.items():
        node = cfg
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return cfg


def test_identity_leaves_out_the_seed_paths_and_threads_only():
    base = identity(config())
    assert identity(config(seed=3)) == base  # data.seed follows the seed
    assert identity(config(**{"data.root": "/elsewhere", "threads": 2, "logger.csv.save_dir": "x"})) == base
    assert identity(config(**{"monitor.recorder.seed": 0})) == identity(config(seed=1, **{"monitor.recorder.seed": 0}))
    assert len(NOT_SETTINGS) <= 15


@pytest.mark.parametrize("change", [{"adversarial": {"w_div": 0.1}}, {"trainer.max_epochs": 2},
                                    {"loss.temperature": 0.1}, {"model.micro_batch": 64},
                                    {"data.batch_size": 64}])
def test_groups_split_on_any_differing_config_key(change):
    runs = [(config(s), {"linear": {"top1": 0.8 + s / 100}}, f"clean/{s}/last.ckpt") for s in (0, 1)]
    runs += [(config(s, **change), {"linear": {"top1": 0.6 + s / 100}}, f"other/{s}/last.ckpt") for s in (0, 1)]
    groups = aggregate(runs)
    assert len(groups) == 2 and [g["n"] for g in groups] == [2, 2]
    assert groups[0]["metrics"]["linear.top1"]["mean"] == pytest.approx(0.805)
    assert groups[1]["metrics"]["linear.top1"]["mean"] == pytest.approx(0.605)
    assert groups[0]["setting"] and set(groups[0]["setting"]) == set(groups[1]["setting"])


def test_aggregate_refuses_one_seed_twice_naming_both_files():
    runs = [(config(0), {"linear": {"top1": 0.8}}, "runs/a/checkpoints/last.ckpt"),
            (config(0), {"linear": {"top1": 0.81}}, "runs/a/checkpoints/best.ckpt")]
    with pytest.raises(DuplicateSeedError) as err:
        aggregate(runs)
    message = str(err.value)
    assert "\n" not in message and "runs/a/checkpoints/last.ckpt" in message
    assert "runs/a/checkpoints/best.ckpt" in message and "seed 0" in message
    with pytest.raises(DuplicateSeedError, match="run 1 and run 2"):  # without sources: by position
        aggregate([(c, r) for c, r, _ in runs])


def test_compare_groups_pairs_shared_seeds_and_is_one_holm_family():
    a, b = [0.80, 0.82, 0.81], [0.84, 0.83, 0.87]
    runs = [(config(s), {"linear": {"top1": v}}) for s, v in enumerate(a)]
    runs += [(config(s, **{"loss.temperature": 0.1}), {"linear": {"top1": v}, "knn": {"top1": v - 0.1}})
             for s, v in enumerate(b)]
    groups = aggregate(runs)
    out = compare_groups(groups)
    assert [c["metric"] for c in out] == ["linear.top1"]  # knn only on one side
    c = out[0]
    assert c["test"] == "paired" and c["n"] == 3
    assert c["p"] == pytest.approx(scipy_stats.ttest_rel(b, a).pvalue)
    assert c["p_holm"] == pytest.approx(c["p"]) and c["family_size"] == 1
    strict_loads(dumps(groups))  # one-seed groups, NaN intervals: still strict JSON


def test_json_never_holds_a_bare_nan(tmp_path):
    value = {"mean": math.nan, "ci95": math.inf, "nested": [1.0, -math.inf, {"x": math.nan}], 3: Path("a")}
    text = dumps(value)
    assert strict_loads(text) == {"mean": None, "ci95": None, "nested": [1.0, None, {"x": None}], "3": "a"}
    one_seed = aggregate([(config(0), {"linear": {"top1": 0.8}})])
    assert one_seed[0]["metrics"]["linear.top1"]["ci95"] != one_seed[0]["metrics"]["linear.top1"]["ci95"]
    assert strict_loads(dumps(one_seed))[0]["metrics"]["linear.top1"]["ci95"] is None


def write_run(path: Path, overrides: list[str], summary: dict, cfg: dict | None = None) -> None:
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (path / "summary.json").write_text(json.dumps(summary))
    if cfg is not None:
        (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))


def test_sweep_rows_split_on_a_config_key_no_override_names(tmp_path):
    """Two sweeps of loss=infonce, one adversarially trained by its sweep file (no override says
    so): two rows, the key that tells them apart a column."""
    for i, s in enumerate((0, 1)):
        write_run(tmp_path / "clean" / str(i), ["loss=infonce", f"seed={s}"], {"linear_probe_top1": 0.88},
                  config(s))
        write_run(tmp_path / "adv" / str(i), ["loss=infonce", f"seed={s}"], {"linear_probe_top1": 0.87},
                  config(s, adversarial={"w_div": 0.0}))
    rep = build_report([tmp_path / "clean", tmp_path / "adv"], ["linear_probe_top1"])
    assert len(rep["rows"]) == 2 and all(r["n"] == 2 for r in rep["rows"])
    assert "adversarial" in rep["keys"] or "adversarial.w_div" in rep["keys"]
    # told that the key does not matter, the rows pool, and then hold each seed twice
    with pytest.raises(DuplicateSeedError, match="seed 0"):
        build_report([tmp_path / "clean", tmp_path / "adv"], ["linear_probe_top1"], ignore=["adversarial"])


def test_sweep_refuses_a_row_with_one_seed_twice(tmp_path):
    write_run(tmp_path / "a", ["loss=infonce", "seed=0"], {"linear_probe_top1": 0.88})
    write_run(tmp_path / "b", ["loss=infonce", "seed=0"], {"linear_probe_top1": 0.87})
    write_run(tmp_path / "c", ["loss=cacr", "seed=0"], {"linear_probe_top1": 0.89})
    with pytest.raises(DuplicateSeedError) as err:
        build_report(tmp_path, ["linear_probe_top1"])
    message = str(err.value)
    assert str(tmp_path / "a" / "summary.json") in message and str(tmp_path / "b" / "summary.json") in message
    assert "loss=infonce" in message and "\n" not in message


def test_sweep_report_files_are_strict_json_with_paired_comparisons(tmp_path):
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("sweep_report", ROOT / "scripts" / "sweep_report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["sweep_report"] = module
    spec.loader.exec_module(module)
    infonce, cacr = [0.80, 0.82, 0.81], [0.84, 0.83, 0.87]
    for loss, accs in (("infonce", infonce), ("cacr", cacr)):
        for s, acc in enumerate(accs):
            write_run(tmp_path / "sweep" / f"{loss}{s}", [f"loss={loss}", f"seed={s}"],
                      {"linear_probe_top1": acc, "knn_top1": acc - 0.1})
    # one seed of a third head: its row has no interval (NaN inside, null in the JSON)
    write_run(tmp_path / "sweep" / "au0", ["loss=au", "seed=0"], {"linear_probe_top1": 0.9, "knn_top1": math.nan})
    out = tmp_path / "out"
    code = module.main([str(tmp_path / "sweep"), "--metrics", "linear_probe_top1", "knn_top1",
                        "--compare", "loss=infonce", "--compare-on", "linear_probe_top1", "knn_top1",
                        "--out", str(out), "--no-plot", "--markdown"])
    assert code == 0
    report = strict_loads((out / "report.json").read_text())
    assert report["primary"] == "linear_probe_top1"
    by_label = {(c["label"], c["metric"]): c for c in report["comparisons"]}
    c = by_label[("cacr - infonce", "linear_probe_top1")]
    ref = scipy_stats.ttest_rel(cacr, infonce)
    assert c["test"] == "paired" and c["n"] == 3 and c["p"] == pytest.approx(ref.pvalue)
    # one Holm family per metric; au (one seed) is untested and not counted
    assert c["family"] == "linear_probe_top1" and c["family_size"] == 1 and c["p_holm"] == pytest.approx(c["p"])
    au = by_label[("au - infonce", "knn_top1")]
    assert au["p"] is None and au["verdict"] == "untested (n < 2)" and au["n"] == 0 and au["dropped"] == 4
    assert by_label[("au - infonce", "linear_probe_top1")]["n"] == 1
    # the same table from the runs.csv it wrote, through the command line; one family for all
    again = tmp_path / "again"
    assert module.main([str(out / "runs.csv"), "--compare", "loss=infonce", "--compare-on", "linear_probe_top1",
                        "knn_top1", "--family", "all", "--out", str(again), "--no-plot"]) == 0
    together = {(x["label"], x["metric"]): x for x in strict_loads((again / "report.json").read_text())["comparisons"]}
    c2 = together[("cacr - infonce", "linear_probe_top1")]
    assert c2["p"] == pytest.approx(c["p"]) and c2["family_size"] == 2
    assert c2["p_holm"] == pytest.approx(min(1.0, 2 * c["p"]))  # two equal p-values: both times 2


def test_interaction_is_the_paired_difference_of_differences(tmp_path):
    acc = {("infonce", "64"): [0.885, 0.884, 0.886], ("infonce", "1024"): [0.870, 0.880, 0.881],
           ("cacr", "64"): [0.891, 0.890, 0.892], ("cacr", "1024"): [0.880, 0.876, 0.884]}
    for (loss, batch), values in acc.items():
        for s, v in enumerate(values):
            write_run(tmp_path / f"{loss}_{batch}_{s}", [f"loss={loss}", f"data.batch_size={batch}", f"seed={s}"],
                      {"linear_probe_top1": v})
    rep = build_report(tmp_path, ["linear_probe_top1"], pairs=["data.batch_size=64:data.batch_size=1024"],
                       interactions=["loss=cacr:loss=infonce"])
    (c,) = [c for c in rep["comparisons"] if c["kind"] == "interaction"]
    per_seed = [acc["cacr", "64"][s] - acc["cacr", "1024"][s] - acc["infonce", "64"][s] + acc["infonce", "1024"][s]
                for s in range(3)]
    ref = scipy_stats.ttest_1samp(per_seed, 0.0)
    assert c["label"] == "(data.batch_size=64 - data.batch_size=1024) for cacr - infonce"
    assert c["test"] == "paired" and c["diff"] == pytest.approx(sum(per_seed) / 3) and c["p"] == pytest.approx(ref.pvalue)
    assert c["family_size"] == 3  # two sensitivities and their difference, on one metric


def test_sweep_report_prints_each_verdict_of_the_rule(tmp_path, capsys):
    """scripts/sweep_report.py on a runs.csv built so that its four comparisons (one Holm family,
    16 paired seeds) come out holds, does not hold, within 0.3 and inconclusive against a
    predicted gain; without --predict the called ones read higher / lower."""
    import csv
    import importlib.util
    import sys

    import numpy as np

    spec = importlib.util.spec_from_file_location("sweep_report", ROOT / "scripts" / "sweep_report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["sweep_report"] = module
    spec.loader.exec_module(module)
    rng = np.random.default_rng(0)
    z = rng.normal(size=16)
    unit = (z - z.mean()) / z.std(ddof=1)
    base = 0.85 + 0.01 * rng.normal(size=16)
    heads = {"infonce": base, "gain": base + 0.01 + 0.002 * unit, "loss": base - 0.01 + 0.002 * unit[::-1],
             "same": base + 0.0002 + 0.001 * np.roll(unit, 3), "noisy": base + 0.001 + 0.01 * np.roll(unit, 7)}
    runs_csv = tmp_path / "runs.csv"
    with open(runs_csv, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["loss", "seed", "run", "linear_probe_top1"])
        for loss, values in heads.items():
            writer.writerows([loss, s, f"runs/{loss}/{s}", repr(float(v))] for s, v in enumerate(values))
    pairs = [f"loss={h}:loss=infonce" for h in ("gain", "loss", "same", "noisy")]
    out = tmp_path / "out"
    assert module.main([str(runs_csv), "--pairs", *pairs, "--predict", "higher", "--markdown", "--no-plot",
                        "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = strict_loads((out / "report.json").read_text())
    verdicts = {c["label"]: c["verdict"] for c in report["comparisons"]}
    assert verdicts == {"gain - infonce": "holds", "loss - infonce": "does not hold",
                        "same - infonce": "within 0.3", "noisy - infonce": "inconclusive"}
    assert "| same - infonce | linear_probe_top1 | paired | 16 pairs |" in printed
    assert "within 0.3: not called, and the interval at the Bonferroni level 0.05 / m lies inside ±0.3" in printed
    rows = list(csv.DictReader(open(out / "comparisons.csv")))
    same = next(r for r in rows if r["label"] == "same - infonce")
    assert -0.003 < float(same["bonferroni_low"]) < float(same["bonferroni_high"]) < 0.003
    assert same["predicted"] == "higher" and same["verdict"] == "within 0.3"
    # one sign per selection; no prediction: the sign of a called difference
    assert module.main([str(runs_csv), "--pairs", *pairs, "--predict", "higher", "lower", "none", "higher",
                        "--no-plot", "--out", str(out)]) == 0
    verdicts = {c["label"]: c["verdict"] for c in strict_loads((out / "report.json").read_text())["comparisons"]}
    assert verdicts["loss - infonce"] == "holds" and verdicts["same - infonce"] == "holds (within 0.3)"
    assert module.main([str(runs_csv), "--pairs", *pairs, "--no-plot", "--out", str(out)]) == 0
    verdicts = {c["label"]: c["verdict"] for c in strict_loads((out / "report.json").read_text())["comparisons"]}
    assert [verdicts[f"{h} - infonce"] for h in ("gain", "loss", "same", "noisy")] == [
        "higher", "lower", "within 0.3", "inconclusive"]
    # --within 0: no label; a wrong count of signs is refused in one line
    assert module.main([str(runs_csv), "--pairs", *pairs, "--within", "0", "--no-plot", "--out", str(out)]) == 0
    verdicts = {c["label"]: c["verdict"] for c in strict_loads((out / "report.json").read_text())["comparisons"]}
    assert verdicts["same - infonce"] == "inconclusive"
    capsys.readouterr()
    assert module.main([str(runs_csv), "--pairs", *pairs, "--predict", "higher", "lower", "--no-plot"]) == 2
    assert "--predict: 2 signs for 4 selections" in capsys.readouterr().err
