"""Semi-supervised protocol: the label subsets are class-balanced, seeded, nested and of the
right size; on the session's smoke checkpoint the linear probe and fine-tune of each subset
select on the validation split only (poisoned test labels change no choice); the picture is a
PNG; scripts/evaluate.py with two checkpoints draws one line each."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from sslkit.errors import ConfigError
from sslkit.eval.finetune import FineTune
from sslkit.eval.semi import SemiSupervised, balanced_subset
from tests.conftest import copy_run, run_entry
from tests.eval.test_finetune import trained_context
from tests.test_test_split_decides_nothing import poison_test_labels


def semi(finetune: bool = True) -> SemiSupervised:
    return SemiSupervised(fractions=[0.05, 0.25], draws=2, full=True,
                          finetune=FineTune(epochs=1, batch_size=32, lr_grid=[0.1, 0.5]) if finetune else None)


def test_subsets_are_class_balanced_seeded_nested_and_of_the_right_size():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 4 + [3] * 16)  # 100 images, 4 classes
    small = balanced_subset(labels, 0.1, 4, seed=0, draw=0)  # round(0.1 * 100 / 4) = 2 a class
    assert torch.bincount(labels[small], minlength=4).tolist() == [2, 2, 2, 2]
    large = balanced_subset(labels, 0.4, 4, seed=0, draw=0)  # 10 a class, class 2 has only 4
    assert torch.bincount(labels[large], minlength=4).tolist() == [10, 10, 4, 10]
    assert set(small.tolist()) <= set(large.tolist())  # nested across fractions
    assert torch.equal(balanced_subset(labels, 0.1, 4, seed=0, draw=0), small)  # seeded
    assert not torch.equal(balanced_subset(labels, 0.4, 4, seed=0, draw=1), large)  # draws differ
    assert not torch.equal(balanced_subset(labels, 0.4, 4, seed=1, draw=0), large)
    tiny = balanced_subset(labels, 0.001, 4, seed=0, draw=0)  # at least one of each class
    assert torch.bincount(labels[tiny], minlength=4).tolist() == [1, 1, 1, 1]


def test_semi_reports_every_fraction_with_its_interval_and_a_png(smoke_session_run, tmp_path):
    out = semi()(trained_context(smoke_session_run, tmp_path))
    # 512 labelled training images, 4 classes: round(0.05 * 128) = 6 and 32 a class, then all
    assert out["n_labels"] == {"5%": 24, "25%": 128, "100%": 512}
    for protocol in ("linear", "finetune"):
        for key, n in (("5%", 2), ("25%", 2), ("100%", 1)):
            entry = out[protocol][key]
            assert len(entry["draws"]) == n and entry["top1"]["n"] == n
            assert entry["top1"]["mean"] == pytest.approx(sum(d["top1"] for d in entry["draws"]) / n)
            assert math.isnan(entry["top1"]["ci95"]) == (n == 1)  # one draw: no interval
    assert out["linear"]["100%"]["top1"]["mean"] > 0.6  # 4 classes: chance is 0.25
    png = tmp_path / out["figure"]
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 300


def test_poisoned_test_labels_change_no_choice_of_the_semi_protocol(smoke_session_run, tmp_path, monkeypatch):
    def choices(result):
        return {p: {k: [{c: d[c] for c in ("l2", "lr", "epoch", "val_top1") if c in d} for d in v["draws"]]
                    for k, v in result[p].items()} for p in ("linear", "finetune")}

    clean = semi()(trained_context(smoke_session_run, tmp_path))
    poison_test_labels(monkeypatch)
    poisoned = semi()(trained_context(smoke_session_run, tmp_path))
    assert choices(clean) == choices(poisoned) and clean["n_labels"] == poisoned["n_labels"]
    assert clean["linear"]["100%"]["top1"]["mean"] > 0.6 and poisoned["linear"]["100%"]["top1"]["mean"] < 0.45


def test_bad_fractions_are_refused_in_one_line():
    for fractions in ([], [0.0], [1.5], [1.0]):
        with pytest.raises(ConfigError, match=r"eval.semi.fractions=.*give fractions in \(0, 1\)"):
            SemiSupervised(fractions=fractions)


def test_evaluate_py_draws_one_line_per_checkpoint(smoke_session_run, cacr_session_run, tmp_path):
    run_dir = copy_run(smoke_session_run, tmp_path / "smoke")
    other = copy_run(cacr_session_run, tmp_path / "cacr")
    ckpts = f"[{run_dir}/checkpoints/last.ckpt,{other}/checkpoints/last.ckpt]"
    picture = tmp_path / "curves.png"
    proc = run_entry(["scripts/evaluate.py", f"checkpoint={ckpts}", "eval=[semi]", "eval.semi.finetune=null",
                      "eval.semi.draws=2", "eval.semi.fractions=[0.05,0.25]", f"label_efficiency_out={picture}",
                      "threads=1", "eval_device=cpu"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "label-efficiency curves of 2 checkpoints written to" in proc.stdout
    out = json.loads((run_dir / "eval" / "semi.json").read_text())
    assert out["finetune"] is None and set(out["linear"]) == {"5%", "25%", "100%"}
    with Image.open(picture) as image:
        assert image.format == "PNG"
