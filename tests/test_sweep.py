"""Sweeps: every configs/sweep file composes; a real tiny multirun of train.py; sweep_report."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import run_entry

ROOT = Path(__file__).resolve().parent.parent
SWEEPS = sorted((ROOT / "configs" / "sweep").glob("*.yaml"))


def load_report_module():
    spec = importlib.util.spec_from_file_location("sweep_report", ROOT / "scripts" / "sweep_report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["sweep_report"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def compose_train(*overrides: str):
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_sweep_files_exist_and_say_how_to_run():
    names = {p.stem for p in SWEEPS}
    assert {"temperature_x_loss", "batch_size_x_loss", "gca_epsilon_x_iterations", "seeds",
            "optuna_infonce"} <= names
    for path in SWEEPS:
        lines = path.read_text().splitlines()
        # Hydra reads the package header only before any other comment, so it comes first;
        # the next line says what the file sweeps and how to run it
        assert lines[0] == "# @package _global_", path
        assert lines[1].startswith("# ") and f"python train.py -m +sweep={path.stem}" in lines[1], path


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_composes_with_params(path):
    cfg = compose_train(f"+sweep={path.stem}")
    params = cfg.hydra.sweeper.params
    assert params, f"{path.name} sets no hydra.sweeper.params"
    assert path.stem in cfg.hydra.sweep.dir
    # every swept key exists in the config of each swept head, and every swept group option
    # (loss, adversarial, experiment) composes with the sweep's other groups' first options
    groups = {k: str(v).split(",") for k, v in params.items() if (ROOT / "configs" / k).is_dir()}
    fixed = [f"{k}={v[0]}" for k, v in groups.items() if k != "loss"]
    for loss in groups.get("loss", [cfg.hydra.runtime.choices.get("loss", "infonce")]):
        job = compose_train(f"+sweep={path.stem}", f"loss={loss}", *fixed)
        for key in params:
            if key not in groups:
                assert OmegaConf.select(job, key) is not None, (loss, key)
    for key, options in groups.items():
        for option in options:
            assert (ROOT / "configs" / key / f"{option}.yaml").is_file(), (key, option)
            job = compose_train(f"+sweep={path.stem}", *fixed, f"{key}={option}")
            assert job.hydra.runtime.choices[key] == option


def test_sweep_values_fit_the_heads():
    """Each head a grid sweeps takes the parameters the grid sets."""
    for name in ("temperature_x_loss", "gca_epsilon_x_iterations"):
        params = yaml.safe_load((ROOT / "configs" / "sweep" / f"{name}.yaml").read_text())["hydra"]["sweeper"]["params"]
        for loss in str(params["loss"]).split(","):
            head = yaml.safe_load((ROOT / "configs" / "loss" / f"{loss}.yaml").read_text())
            for key in params:
                if key.startswith("loss."):
                    assert key.split(".", 1)[1] in head, (name, loss, key)


def test_optuna_sweep_selects_the_optuna_sweeper():
    cfg = compose_train("+sweep=optuna_infonce")
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.objective == "val/linear_probe_top1"


def test_slurm_launcher_config():
    cfg = compose_train("hydra/launcher=slurm", "trainer=gpu", "trainer.devices=4")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == 4 and launcher.gpus_per_node == 4 and launcher.nodes == 1
    assert launcher.timeout_min > 0 and launcher.cpus_per_task > 0


def test_cli_checks_every_value_of_a_multirun_list():
    from sslkit.launch.train_cli import check_choices

    check_choices(["loss=infonce,dcl", "+sweep=seeds", "loss=glob(gca_*)"])
    with pytest.raises(SystemExit):
        check_choices(["loss=infonce,nope"])


def test_report_statistics_by_hand(tmp_path):
    report_mod = load_report_module()
    values = {("0.1", "0"): 0.5, ("0.1", "1"): 0.7, ("0.1", "2"): 0.6, ("0.2", "0"): 0.9}
    for i, ((temp, seed), acc) in enumerate(values.items()):
        run = tmp_path / str(i)
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text(
            f"- +sweep=x\n- loss.temperature={temp}\n- seed={seed}\n")
        if i < 4:
            (run / "summary.json").write_text(json.dumps({"linear_probe_top1": acc}))
    unfinished = tmp_path / "4"
    (unfinished / ".hydra").mkdir(parents=True)
    (unfinished / ".hydra" / "overrides.yaml").write_text("- +sweep=x\n- loss.temperature=0.2\n- seed=1\n")
    rep = report_mod.build_report(tmp_path, ["linear_probe_top1"])
    assert rep["keys"] == ["loss.temperature"] and rep["fixed"] == {"sweep": "x"}
    assert rep["missing"] == [str(unfinished)]
    first, second = rep["rows"]
    assert first["n"] == 3 and first["seeds"] == "0 1 2"
    assert first["linear_probe_top1_mean"] == pytest.approx(0.6)
    # t(0.975, 2) = 4.302653; std = 0.1
    assert first["linear_probe_top1_ci95"] == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-6)
    assert second["n"] == 1 and math.isnan(second["linear_probe_top1_ci95"])


def write_runs(root: Path, runs: list[tuple[list[str], float]]) -> None:
    for i, (overrides, acc) in enumerate(runs):
        run = root / str(i)
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        (run / "summary.json").write_text(json.dumps({"linear_probe_top1": acc}))


def test_report_compare_pairs_shared_seeds_else_welch(tmp_path):
    from scipy import stats as scipy_stats

    report_mod = load_report_module()
    infonce, cacr = [0.80, 0.82, 0.81], [0.84, 0.83, 0.87]
    write_runs(tmp_path, [([f"loss={loss}", f"seed={i}"], acc)
                          for loss, accs in (("infonce", infonce), ("cacr", cacr)) for i, acc in enumerate(accs)])
    rep = report_mod.build_report(tmp_path, ["linear_probe_top1"], compare=("loss", "infonce"))
    rows = {r["loss"]: r for r in rep["rows"]}
    # seeds 0, 1, 2 on both sides: a paired interval of the per-seed differences
    ref = scipy_stats.ttest_rel(cacr, infonce).confidence_interval(0.95)
    diff, ci = rows["cacr"]["linear_probe_top1_diff"], rows["cacr"]["linear_probe_top1_diff_ci95"]
    assert rows["cacr"]["linear_probe_top1_test"] == "paired" and rows["cacr"]["linear_probe_top1_n"] == 3
    assert diff == pytest.approx(statistics.mean(cacr) - statistics.mean(infonce))
    assert (diff - ci, diff + ci) == pytest.approx((ref.low, ref.high), rel=1e-9)
    assert rows["infonce"]["linear_probe_top1_diff"] == pytest.approx(0.0)
    # unpaired (forced here; by itself where the rows share no seed): Welch
    rep = report_mod.build_report(tmp_path, ["linear_probe_top1"], compare=("loss", "infonce"), paired=False)
    cacr_row = next(r for r in rep["rows"] if r["loss"] == "cacr")
    ref = scipy_stats.ttest_ind(cacr, infonce, equal_var=False).confidence_interval(0.95)
    diff, ci = cacr_row["linear_probe_top1_diff"], cacr_row["linear_probe_top1_diff_ci95"]
    assert cacr_row["linear_probe_top1_test"] == "welch"
    assert (diff - ci, diff + ci) == pytest.approx((ref.low, ref.high), rel=1e-9)
    with pytest.raises(ValueError, match="loss: infonce, cacr"):
        report_mod.build_report(tmp_path, ["linear_probe_top1"], compare=("loss", "moco"))


def test_report_pools_sweeps_and_filters(tmp_path):
    """Two sweep dirs in one table; --where keeps matching runs (a key a run lacks reads -)."""
    report_mod = load_report_module()
    write_runs(tmp_path / "main", [(["loss=infonce", "seed=0"], 0.80), (["loss=dunif", "seed=0"], 0.70),
                                   (["loss=dunif", "seed=1"], 0.72)])
    write_runs(tmp_path / "priors", [(["loss=dunif", "prior=labels", "seed=0"], 0.90),
                                     (["loss=dunif", "prior=labels", "seed=1"], 0.92)])
    rep = report_mod.build_report([tmp_path / "main", tmp_path / "priors"], ["linear_probe_top1"],
                                  where={"loss": "dunif"}, compare=("prior", "-"))
    assert rep["keys"] == ["prior"] and [r["prior"] for r in rep["rows"]] == ["-", "labels"]
    labels = rep["rows"][1]
    assert labels["n"] == 2 and labels["linear_probe_top1_diff"] == pytest.approx(0.20)
    out = tmp_path / "table"
    code = report_mod.main([str(tmp_path / "main"), str(tmp_path / "priors"), "--where", "loss=dunif",
                            "--compare", "prior=-", "--out", str(out), "--no-plot"])
    assert code == 0
    with open(out / "report.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert float(rows[1]["linear_probe_top1_diff"]) == pytest.approx(0.20)
    with open(out / "runs.csv") as fh:
        runs = list(csv.DictReader(fh))
    assert [(r["prior"], r["seed"], float(r["linear_probe_top1"])) for r in runs] == [
        ("-", "0", 0.70), ("-", "1", 0.72), ("labels", "0", 0.90), ("labels", "1", 0.92)]
    assert report_mod.main([str(tmp_path / "main"), "--compare", "loss"]) == 2
    markdown = report_mod.markdown_table(rep).splitlines()
    assert markdown[0] == "| prior | n | seeds | linear_probe_top1 | Δ linear_probe_top1 vs prior=- |"
    # 0.91 ± t(0.975, 1) 0.01414 / sqrt 2; paired over seeds 0 and 1: both differences 0.2
    assert markdown[3] == "| labels | 2 | 0 1 | 0.9100 ± 0.1271 | +0.2000 ± 0.0000 |"


def test_report_takes_later_evaluations_and_plots_a_scatter(tmp_path):
    """eval/NAME.json written after the run (scripts/evaluate.py) joins its numbers; the summary's
    own keys win; --scatter draws the rows in two metrics."""
    report_mod = load_report_module()
    write_runs(tmp_path, [([f"loss={loss}", f"seed={i}"], acc) for loss in ("infonce", "au")
                          for i, acc in enumerate((0.8, 0.82))])
    for i, run in enumerate(sorted(p for p in tmp_path.iterdir() if p.is_dir())):
        (run / "eval").mkdir()
        (run / "eval" / "metrics.json").write_text(json.dumps(
            {"projector": {"alignment": 0.1 * (i + 1), "uniformity": -1.0 - i}, "num_samples": 64}))
        (run / "eval" / "linear.json").write_text(json.dumps({"top1": 0.5}))  # not the summary's
    rep = report_mod.build_report(tmp_path, ["linear_probe_top1", "eval/metrics/projector/alignment"])
    infonce, au = rep["rows"]
    assert infonce["linear_probe_top1_mean"] == pytest.approx(0.81)
    assert infonce["eval/metrics/projector/alignment_mean"] == pytest.approx(0.15)
    assert au["eval/metrics/projector/alignment_mean"] == pytest.approx(0.35)
    code = report_mod.main([str(tmp_path), "--scatter", "eval/metrics/projector/alignment",
                            "eval/metrics/projector/uniformity"])
    assert code == 0 and (tmp_path / "report_scatter.png").read_bytes()[:4] == b"\x89PNG"


def test_report_reads_a_key_one_sweep_does_not_override_from_the_run_config(tmp_path):
    report_mod = load_report_module()
    write_runs(tmp_path / "main", [(["+sweep=main", "loss=infonce", "seed=0"], 0.80),
                                   (["+sweep=main", "loss=au", "seed=0"], 0.70)])
    for run in (tmp_path / "main").iterdir():
        (run / ".hydra" / "config.yaml").write_text("data:\n  batch_size: 256\nloss:\n  temperature: 0.5\n")
    write_runs(tmp_path / "batch", [(["+sweep=batch", "loss=infonce", "data.batch_size=64", "seed=0"], 0.75)])
    rep = report_mod.build_report([tmp_path / "main", tmp_path / "batch"], ["linear_probe_top1"],
                                  where={"loss": "infonce,cacr"})
    assert rep["keys"] == ["data.batch_size"]  # the sweep file's name is not a setting
    assert [(r["data.batch_size"], r["n"]) for r in rep["rows"]] == [("64", 1), ("256", 1)]
    # a value only the configs hold (a sweep file's body, not an override) groups with --keys
    (tmp_path / "batch" / "0" / ".hydra" / "config.yaml").write_text("data:\n  batch_size: 64\nloss:\n  temperature: 0.2\n")
    rep = report_mod.build_report([tmp_path / "main", tmp_path / "batch"], ["linear_probe_top1"],
                                  where={"loss": "infonce"}, keys=["loss.temperature"])
    assert rep["keys"] == ["data.batch_size", "loss.temperature"]
    assert [(r["data.batch_size"], r["loss.temperature"]) for r in rep["rows"]] == [("64", "0.2"), ("256", "0.5")]


def test_report_reads_group_choices_and_compares_with_a_baseline_that_sets_no_key(tmp_path):
    """Pooled: a main sweep (loss overridden, no prior) and a prior sweep (loss chosen in the sweep
    file's defaults, prior x sigma overridden); the no-prior row is every prior row's reference."""
    report_mod = load_report_module()
    hydra_yaml = "hydra:\n  runtime:\n    choices:\n      loss: {loss}\n      prior: {prior}\n"
    main = [0.80, 0.81, 0.82]
    write_runs(tmp_path / "main", [([f"loss={loss}", f"seed={i}"], acc + (0.1 if loss == "au" else 0))
                                   for loss in ("dunif", "au") for i, acc in enumerate(main)])
    for run in (tmp_path / "main").iterdir():
        loss = "au" if int(run.name) >= 3 else "dunif"
        (run / ".hydra" / "config.yaml").write_text("loss:\n  sigma: null\n")
        (run / ".hydra" / "hydra.yaml").write_text(hydra_yaml.format(loss=loss, prior="null"))
    prior = {("labels", "1.0"): [0.85, 0.86, 0.84], ("labels", "5.0"): [0.83, 0.83, 0.82]}
    write_runs(tmp_path / "priors", [([f"prior={p}", f"loss.sigma={s}", f"seed={i}"], acc)
                                     for (p, s), accs in prior.items() for i, acc in enumerate(accs)])
    for run in (tmp_path / "priors").iterdir():
        (run / ".hydra" / "config.yaml").write_text("loss:\n  sigma: 1.0\n")
        (run / ".hydra" / "hydra.yaml").write_text(hydra_yaml.format(loss="dunif", prior="labels"))
    rep = report_mod.build_report([tmp_path / "main", tmp_path / "priors"], ["linear_probe_top1"],
                                  where={"loss": "dunif"}, compare=("prior", "null"))
    assert rep["keys"] == ["prior", "loss.sigma"]
    rows = {(r["prior"], r["loss.sigma"]): r for r in rep["rows"]}
    assert set(rows) == {("null", "-"), ("labels", "1.0"), ("labels", "5.0")}  # au filtered out
    for key, accs in prior.items():
        assert rows[key]["linear_probe_top1_diff"] == pytest.approx(statistics.mean(accs) - statistics.mean(main))
    # the other way round: a row without the key against the one reference that has it; with
    # two candidate references there is no difference rather than a guess
    rep = report_mod.build_report([tmp_path / "main", tmp_path / "priors"], ["linear_probe_top1"],
                                  where={"loss": "dunif"}, compare=("prior", "labels"))
    rows = {(r["prior"], r["loss.sigma"]): r for r in rep["rows"]}
    assert math.isnan(rows[("null", "-")]["linear_probe_top1_diff"])
    rep = report_mod.build_report([tmp_path / "main", tmp_path / "priors"], ["linear_probe_top1"],
                                  where={"loss": "dunif", "loss.sigma": "-,1.0"}, compare=("prior", "labels"))
    rows = {(r["prior"], r["loss.sigma"]): r for r in rep["rows"]}
    assert rows[("null", "-")]["linear_probe_top1_diff"] == pytest.approx(statistics.mean(main) - 0.85)


def test_short_keeps_labels_readable():
    report_mod = load_report_module()
    assert report_mod.short("0.2588170214937917") == "0.2588"
    assert report_mod.short("0.005") == "0.005"
    assert report_mod.short("/home/me/multirun/main/0/checkpoints/last.ckpt") == ".../main/0/checkpoints/last.ckpt"
    assert report_mod.short("configs/loss/x.yaml") == "configs/loss/x.yaml"


def test_tiny_multirun_and_report(tmp_path):
    """A real `python train.py -m` over 2 temperatures x 2 seeds (Hydra's launcher runs the jobs
    one after another in this process: ``run_entry``), then sweep_report on it in a fresh
    interpreter (the report command's own exit code and output)."""
    sweep_dir = tmp_path / "sweep"
    proc = run_entry(
        ["train.py", "-m", "+sweep=temperature_x_loss", "experiment=smoke",
         "loss=infonce", "loss.temperature=0.2,0.5", "seed=0,1", "trainer.max_epochs=1",
         "+trainer.limit_train_batches=2", "monitor.knn.every_n_epochs=0", "eval.linear.max_iter=50",
         f"hydra.sweep.dir={sweep_dir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert len(runs) == 4 and all((r / "summary.json").exists() for r in runs)
    assert (sweep_dir / "multirun.yaml").exists()

    # the runs' own numbers, keyed by temperature
    by_temp: dict[str, list[dict]] = {}
    for run in runs:
        overrides = dict(o.lstrip("+").split("=", 1) for o in yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()))
        by_temp.setdefault(overrides["loss.temperature"], []).append(json.loads((run / "summary.json").read_text()))

    proc = subprocess.run([sys.executable, "scripts/sweep_report.py", str(sweep_dir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loss.temperature" in proc.stdout and "±" in proc.stdout
    assert (sweep_dir / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(sweep_dir / "report.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["loss.temperature"] for r in rows] == ["0.2", "0.5"]
    for row in rows:
        summaries = by_temp[row["loss.temperature"]]
        assert row["n"] == "2" and row["seeds"] == "0 1"
        for metric in ("linear_probe_top1", "knn_top1", "wall_seconds"):
            values = [s[metric] for s in summaries]
            assert float(row[f"{metric}_mean"]) == pytest.approx(statistics.mean(values), rel=1e-9)
            ci = 12.706205 * statistics.stdev(values) / math.sqrt(2)  # t(0.975, 1)
            assert float(row[f"{metric}_ci95"] or 0) == pytest.approx(ci, rel=1e-6, abs=1e-12)


def test_report_group_by_pools_runs_that_reached_a_setting_by_different_overrides(tmp_path):
    """One set of runs chose its arm through a config group (adversarial=pgd_gan), another set
    overrode the key itself (adversarial.w_div=0.1) and a data path: --group-by pools them by
    the value the runs' configs hold."""
    report_mod = load_report_module()
    write_runs(tmp_path / "sweep", [([f"adversarial={arm}", f"seed={s}"], acc + s / 100)
                                    for arm, acc in (("pgd", 0.60), ("pgd_gan", 0.70)) for s in (1, 2)])
    for run in (tmp_path / "sweep").iterdir():
        w_div = 0.0 if int(run.name) < 2 else 0.1
        (run / ".hydra" / "config.yaml").write_text(f"seed: {1 + int(run.name) % 2}\nadversarial:\n  w_div: {w_div}\n")
    write_runs(tmp_path / "single", [(["adversarial.w_div=0.1", "data.root=/elsewhere"], 0.73)])
    (tmp_path / "single" / "0" / ".hydra" / "config.yaml").write_text("seed: 0\nadversarial:\n  w_div: 0.1\n")
    rep = report_mod.build_report([tmp_path / "sweep", tmp_path / "single"], ["linear_probe_top1"],
                                  group_by=["adversarial.w_div"])
    assert rep["keys"] == ["adversarial.w_div"]
    rows = {r["adversarial.w_div"]: r for r in rep["rows"]}
    assert sorted(rows) == ["0.0", "0.1"] and rows["0.1"]["n"] == 3 and rows["0.1"]["seeds"] == "0 1 2"
    assert math.isclose(rows["0.1"]["linear_probe_top1_mean"], statistics.mean([0.71, 0.72, 0.73]))
    assert math.isclose(rows["0.0"]["linear_probe_top1_mean"], statistics.mean([0.61, 0.62]))
    # without it, the differently written runs stay apart
    plain = report_mod.build_report([tmp_path / "sweep", tmp_path / "single"], ["linear_probe_top1"])
    assert len(plain["rows"]) == 3


def documented_sweep_command(name: str) -> list[str]:
    """The command docs/benchmarks.md gives for a sweep (``python train.py -m +sweep=NAME ...``)."""
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("python train.py -m") and f"+sweep={name}" in ln)
    return line.split("#")[0].split()[1:]


def test_default_job_sweep_runs_two_trials_at_smoke_scale_on_a_validation_key(tmp_path):
    """docs/benchmarks.md's recipe search of the default job, at smoke scale (synthetic data, one
    short epoch; batch size and epochs fixed, which takes them out of the search) with 2 trials:
    each trial samples the other knobs, and the study maximises the validation split's probe."""
    sweep_dir = tmp_path / "sweep"
    argv = documented_sweep_command("optuna_default_job")
    assert argv[:3] == ["train.py", "-m", "+sweep=optuna_default_job"]
    proc = run_entry([*argv, "experiment=smoke", "threads=1", "hydra.sweeper.n_trials=2",
                      "data.batch_size=64", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
                      "monitor.knn.every_n_epochs=0", "eval.linear.max_iter=50", f"hydra.sweep.dir={sweep_dir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [r.name for r in runs] == ["0", "1"]
    cfg = OmegaConf.load(runs[0] / ".hydra" / "config.yaml")
    assert cfg.objective.startswith("val/") and cfg.trainer.max_time == "00:00:08:40"
    sampled = {"optim.optimizer.lr", "optim.weight_decay", "loss.t", "optim.warmup_epochs", "augment.scale"}
    values = []
    for run in runs:
        overrides = dict(o.lstrip("+").split("=", 1) for o in yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()))
        assert sampled <= set(overrides) and overrides["data.batch_size"] == "64", overrides
        values.append(json.loads((run / "summary.json").read_text())[cfg.objective])
    result = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert result["best_value"] == max(values) and set(result["best_params"]) == sampled


def test_default_job_sweep_on_a_test_key_is_refused_before_any_trial(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_entry([*documented_sweep_command("optuna_default_job"), "experiment=smoke",
                      "objective=linear_probe_top1", f"hydra.sweep.dir={sweep_dir}"])
    assert proc.returncode == 2 and proc.stderr.strip().startswith(
        "error: objective=linear_probe_top1 is a score on the test split"), proc.stderr[-2000:]
    assert not sweep_dir.exists()
