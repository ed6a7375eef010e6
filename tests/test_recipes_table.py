"""docs/recipes.md's table of the official runs ("The official runs, setting by setting") against
the recipes: every paper recipe has rows, and every `key=value` of a row's "keys" column is what
the composed recipe holds, so the table and the configs cannot drift apart. Also the two claims
the table rests on that are not config values: the GCA lr as the official code's scheduler runs
under Lightning, and the start-up line of a run on another process count."""

from __future__ import annotations

import functools
import math
import re
import sys

import pytest
import yaml
from omegaconf import OmegaConf, open_dict

from tests.test_experiments import BASELINES, RECIPES, ROOT, _compose

SECTION = "## The official runs, setting by setting"
# sslkit's own CPU-scale recipes and the study grids are not paper recipes
PAPER_RECIPES = sorted(r for r in RECIPES if r not in BASELINES and "_fmnist" not in r
                       and r != "smoke" and not r.startswith("results_") and r != "robust_fmnist")


def table_rows() -> list[dict]:
    """The table's rows: recipes, setting, and the (key, value) pairs of the keys column."""
    text = (ROOT / "docs" / "recipes.md").read_text()
    assert SECTION in text, f"docs/recipes.md has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0] in ("recipe", "---"):
            continue
        recipes = re.findall(r"`(\w+)`", cells[0])
        keys = []
        for item in re.findall(r"`([^`]+)`", cells[4]):
            key, _, value = item.partition("=")
            keys.append((key, _number(yaml.safe_load(value))))
        rows.append({"recipes": recipes, "setting": cells[1], "keys": keys, "source": cells[5]})
    return rows


def _number(value):
    """YAML 1.1 reads ``1e-06`` as a string; the table means the number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def effective_lr(cfg) -> float:
    """The lr the optimiser gets: ``optim.optimizer.lr`` scaled by ``optim.lr_scaling`` from
    ``optim.base_batch_size`` to the global batch (as given where the config has no rule)."""
    lr, rule = cfg.optim.optimizer.lr, cfg.optim.get("lr_scaling") or "none"
    ratio = cfg.data.batch_size * (cfg.trainer.get("accumulate_grad_batches") or 1) / cfg.optim.get(
        "base_batch_size", 256)
    return {"none": lr, "linear": lr * ratio, "sqrt": lr * math.sqrt(ratio)}[rule]


ROWS = table_rows()


@functools.lru_cache(maxsize=None)
def composed(name: str):
    cfg = _compose(name)
    with open_dict(cfg):
        cfg.data.root = "unused"
    return cfg


def test_the_table_parses_and_names_real_recipes():
    assert len(ROWS) >= 30
    for row in ROWS:
        assert row["recipes"], row
        assert set(row["recipes"]) <= set(RECIPES), f"unknown recipe in {row['recipes']}"
        assert row["keys"], f"row {row['recipes']} / {row['setting']} states no config value"
        assert row["source"], f"row {row['recipes']} / {row['setting']} names no source"


def test_every_paper_recipe_has_rows():
    listed = {r for row in ROWS for r in row["recipes"]}
    missing = sorted(set(PAPER_RECIPES) - listed)
    assert not missing, f"paper recipes without rows in docs/recipes.md's table: {missing}"


def test_the_table_has_no_assumed_values():
    section = (ROOT / "docs" / "recipes.md").read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
    assert "ASSUMED" not in section
    for name in ("robust_cifar10", "gca_cifar10", "gca_cifar100"):
        assert "ASSUMED" not in (ROOT / "configs" / "experiment" / f"{name}.yaml").read_text()


def _same(got, want) -> bool:
    if isinstance(want, float) or isinstance(got, float):
        return got is not None and not isinstance(got, (bool, str)) and math.isclose(got, want, rel_tol=1e-9)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(_same, got, want))
    return got == want


@pytest.mark.parametrize("name", sorted({r for row in ROWS for r in row["recipes"]}))
def test_the_table_states_what_the_recipe_holds(name):
    cfg = composed(name)
    for row in ROWS:
        if name not in row["recipes"]:
            continue
        for key, want in row["keys"]:
            # `lr`: the learning rate the optimiser gets, after the config's batch scaling rule
            got = effective_lr(cfg) if key == "lr" else OmegaConf.select(cfg, key)
            got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
            assert _same(got, want), (f"docs/recipes.md says {key}={want!r} for {name} "
                                      f"({row['setting']}); the recipe holds {got!r}")


def test_a_drifted_value_is_caught():
    cfg = composed("gca_cifar10")
    assert not _same(OmegaConf.select(cfg, "data.batch_size"), 512)
    assert not _same(OmegaConf.select(cfg, "optim.final_lr_ratio"), 0.0016667)
    assert _same(OmegaConf.to_container(OmegaConf.select(composed("robust_cifar10"), "augment.scale")),
                 [0.1, 1.0])


# -- what the table's GCA rows rest on ----------------------------------------------------------
def test_official_gca_scheduler_under_lightning_is_stepped_per_epoch():
    """The official construction (LambdaLR written for 500 x 97 steps, returned without
    ``interval: step``) run by a real Lightning Trainer: the lr is constant within each epoch and
    follows the lambda of the epoch number, so it is 0.12 at epoch 0 and 0.11997 at epoch 499."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from gca_official_lr import OFFICIAL, measure, official_factor
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    total = OFFICIAL["max_epochs"] * OFFICIAL["len_train_loader"]
    lrs = measure(epochs=3, steps_per_epoch=3)
    for epoch, lr in enumerate(lrs):
        assert lr == pytest.approx(0.2 * official_factor(epoch, total, 0.6, 1e-3), rel=1e-12)
    assert lrs[0] == pytest.approx(0.12, rel=1e-12)
    assert round(0.2 * official_factor(499, total, 0.6, 1e-3), 5) == 0.11997
    # a per-step schedule would have fallen to 2e-4; the per-epoch one stays within 0.03% of 0.12
    assert 0.2 * official_factor(total, total, 0.6, 1e-3) == pytest.approx(2e-4)
    assert effective_lr(composed("gca_cifar10")) == 0.12
    assert composed("gca_cifar10").optim.final_lr_ratio == 1.0


def test_a_run_on_another_process_count_gets_one_line_of_what_differs():
    from sslkit.training.preflight import official_scope_note

    cfg = composed("gca_cifar10").copy()
    assert official_scope_note(cfg) is None  # 2 processes, as the official run
    with open_dict(cfg):
        cfg.trainer.devices = 1
    line = official_scope_note(cfg)
    assert line and "\n" not in line
    assert "2 processes x 512" in line and "1 x 1024" in line and "loss sees 1024" in line
    assert "BatchNorm" not in line  # synchronised officially: the same 1024 on one GPU
    cfg = composed("cacr_imagenet100").copy()
    with open_dict(cfg):
        cfg.trainer.devices = 1
    line = official_scope_note(cfg)
    assert "8 processes x 32" in line and "BatchNorm normalises 256 per process (official 32)" in line
    with open_dict(cfg):
        cfg.trainer.devices = "auto"
    assert official_scope_note(cfg) is None  # unknown before the trainer starts
