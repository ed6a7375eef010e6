"""Domain probe: domain accuracy on features that do / do not encode the domain, the class
probe's per-domain breakdown against a plain reference, the domain field's order, and the
refusal of data without domains (before any work)."""

from __future__ import annotations

import json

import pytest
import torch

from sslkit.data.domainfolder import DomainFolder
from sslkit.data.synthetic import Synthetic
from sslkit.errors import ConfigError
from sslkit.eval.context import EvalContext
from sslkit.eval.domain import DomainProbe
from sslkit.eval.linear import LinearProbe, select_and_fit
from tests.conftest import make_pacs, train_run

STYLES = ["plain", "invert", "low_contrast"]
SETTINGS = dict(l2_grid=[1e-4, 1e-2, 1.0], holdout_fraction=0.1, max_iter=100)
# hand-made features have no projector of their own: the encoder space only
HAND_MADE = dict(SETTINGS, projector=False)


def shifted_data(styles=STYLES) -> Synthetic:
    dm = Synthetic(num_train=600, num_test=300, image_size=8, num_classes=4, batch_size=16,
                   eval_batch_size=64, domain_shift=styles)
    dm.setup("validate")
    return dm


def made_features(labels, domains, domain_scale: float, seed: int, noisy_domain: int | None = None):
    """Class means (radius 1) plus ``domain_scale`` times a domain mean, Gaussian noise 0.3 (1.5
    on the images of ``noisy_domain``, whose classes are then harder to tell)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(8, 12, generator=torch.Generator().manual_seed(7))
    means = torch.nn.functional.normalize(means, dim=1)
    noise = torch.full((len(labels), 1), 0.3)
    if noisy_domain is not None:
        noise[domains == noisy_domain] = 1.5
    return means[labels] + domain_scale * means[4 + domains] + noise * torch.randn(len(labels), 12, generator=g)


def context(smoke_parts, tmp_path, dm, domain_scale: float, noisy_domain: int | None = None) -> EvalContext:
    """An EvalContext over ``dm`` whose features are made from each sample's label and domain."""
    _, module, _ = smoke_parts
    ctx = EvalContext(module=module, datamodule=dm, run_dir=tmp_path, seed=0)
    for i, split in enumerate((dm.probe_split, dm.test_split)):
        data = dm.split(split)
        x = made_features(data.labels, data.fields["domain"], domain_scale, seed=i, noisy_domain=noisy_domain)
        ctx._cache[split] = (x, data.labels)
    return ctx


def test_domain_encoded_near_one_and_not_encoded_near_chance(smoke_parts, tmp_path):
    dm = shifted_data()
    encoded = DomainProbe(**HAND_MADE)(context(smoke_parts, tmp_path, dm, domain_scale=2.0))
    assert encoded["domains"] == STYLES and encoded["n_domains"] == 3
    assert encoded["chance"] == pytest.approx(1 / 3)
    assert encoded["top1"] > 0.97 and min(encoded["per_domain_top1"].values()) > 0.95
    assert encoded["n_train"] == 600 and encoded["n_test"] == 300
    blind = DomainProbe(**HAND_MADE)(context(smoke_parts, tmp_path, dm, domain_scale=0.0))
    assert abs(blind["top1"] - 1 / 3) < 0.1  # 300 test images: sd of the accuracy about 0.03
    # both encode the class: the class probe is good either way
    assert encoded["class_top1"] > 0.9 and blind["class_top1"] > 0.9


def test_breakdowns_match_a_plain_reference_and_linear_is_shared(smoke_parts, tmp_path):
    dm = shifted_data()
    ctx = context(smoke_parts, tmp_path, dm, domain_scale=0.5, noisy_domain=2)
    linear = LinearProbe(**SETTINGS)(ctx)
    out = DomainProbe(**HAND_MADE)(ctx)
    assert out["projector"] is None
    assert len(ctx._memo) == 1  # one class probe for both evaluators
    assert out["class_top1"] == pytest.approx(linear["top1"])

    x, y = ctx._cache[dm.probe_split]
    tx, ty = ctx._cache[dm.test_split]
    d, td = dm.split(dm.probe_split).fields["domain"], dm.split(dm.test_split).fields["domain"]
    class_probe, class_l2, _ = select_and_fit(x, y, 4, SETTINGS["l2_grid"], 0.1, 0, 100)
    domain_probe, l2, _ = select_and_fit(x, d, 3, SETTINGS["l2_grid"], 0.1, 0, 100)
    class_pred = class_probe.logits(tx).argmax(1).tolist()
    domain_pred = domain_probe.logits(tx).argmax(1).tolist()
    for k, name in enumerate(STYLES):
        rows = [i for i in range(len(ty)) if int(td[i]) == k]
        class_ref = sum(class_pred[i] == int(ty[i]) for i in rows) / len(rows)
        domain_ref = sum(domain_pred[i] == k for i in rows) / len(rows)
        assert out["class_top1_per_domain"][name] == pytest.approx(class_ref)
        assert out["per_domain_top1"][name] == pytest.approx(domain_ref)
    assert out["top1"] == pytest.approx(sum(p == int(t) for p, t in zip(domain_pred, td)) / len(td))
    assert (out["l2"], out["class_l2"]) == (l2, class_l2)
    # the noisy domain's classes are the hard ones
    per_domain = out["class_top1_per_domain"]
    assert per_domain["low_contrast"] < min(per_domain["plain"], per_domain["invert"]) - 0.1


def test_projector_space_matches_a_plain_reference(smoke_parts, tmp_path):
    _, module, _ = smoke_parts
    dm = shifted_data(["plain", "invert"])
    ctx = EvalContext(module=module, datamodule=dm, run_dir=tmp_path, seed=0)
    out = DomainProbe(**SETTINGS)(ctx)
    (x, y), (tx, ty) = ctx.features("probe"), ctx.features("test")
    d, td = ctx.field("probe", "domain"), ctx.field("test", "domain")
    with torch.no_grad():
        z, tz = module.online.projector(x), module.online.projector(tx)
    assert not torch.allclose(z, x)
    domain_probe, l2, _ = select_and_fit(z, d, 2, SETTINGS["l2_grid"], 0.1, 0, 100)
    class_probe, _, _ = select_and_fit(z, y, 4, SETTINGS["l2_grid"], 0.1, 0, 100)
    proj = out["projector"]
    assert proj["l2"] == l2
    assert proj["top1"] == pytest.approx((domain_probe.logits(tz).argmax(1) == td).float().mean().item(), abs=1e-6)
    right = class_probe.logits(tz).argmax(1) == ty
    for k, name in enumerate(["plain", "invert"]):
        assert proj["class_top1_per_domain"][name] == pytest.approx(right[td == k].float().mean().item(), abs=1e-6)


def test_domain_field_is_in_feature_order(smoke_parts, tmp_path):
    _, module, _ = smoke_parts
    dm = shifted_data(["plain", "invert"])
    ctx = EvalContext(module=module, datamodule=dm, run_dir=tmp_path, seed=0)
    for split in ("probe", "test"):
        loader = dm.eval_dataloader(ctx.split_name(split))
        in_loader_order = torch.cat([batch["domain"] for batch in loader])
        assert torch.equal(ctx.field(split, "domain"), in_loader_order)
        assert len(ctx.features(split)[0]) == len(in_loader_order)


def test_data_without_domains_refused(smoke_parts, tmp_path):
    dm = Synthetic(num_train=64, num_test=16, image_size=8, batch_size=16)
    dm.setup("validate")
    with pytest.raises(ConfigError, match=r"needs the domain.*data.domain_shift=\[plain,invert\].*domainfolder"):
        DomainProbe().check(dm)


def test_held_out_test_domains_refused_and_folder_names_used(tmp_path):
    root = make_pacs(tmp_path / "pacs")
    held_out = DomainFolder(root=str(root), image_size=8, batch_size=4, test_domains=["sketch"])
    held_out.setup("fit")
    with pytest.raises(ConfigError, match=r"domains \['sketch'\] that the probe split lacks"):
        DomainProbe().check(held_out)
    every = DomainFolder(root=str(root), image_size=8, batch_size=4, domains=["art", "sketch"])
    every.setup("fit")
    DomainProbe().check(every)
    from sslkit.eval.domain import domain_names

    assert domain_names(every, [0, 2]) == ["art", "sketch"]


def test_train_refuses_eval_domain_without_domains_before_training(tmp_path):
    import sslkit

    with pytest.raises(ConfigError, match=r"data.domain_shift=\[plain,invert\]"):
        sslkit.train(["experiment=smoke", "eval=[linear,domain]", "threads=1"], run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_runs_on_other_domains_are_other_experiments():
    from sslkit.stats.aggregate import identity

    run = {"seed": 0, "loss": {"alpha": 1.0}, "data": {"_target_": "S", "domain_shift": ["plain", "invert"]}}
    assert identity(run) == identity({**run, "seed": 1})
    assert identity(run) != identity({**run, "data": {"_target_": "S", "domain_shift": None}})
    assert identity(run) != identity({**run, "loss": {"alpha": 0.0}})


def test_train_writes_domain_json_and_summary_keys(tmp_path):
    # train.py in this process, one epoch of 2 steps: the evaluators' files and keys are checked
    train_run(tmp_path, "experiment=smoke", "data.domain_shift=[plain,invert]", "eval=[linear,domain]",
              "threads=1", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
              "monitor.knn.every_n_epochs=0")
    result = json.loads((tmp_path / "eval" / "domain.json").read_text())
    assert set(DomainProbe.result_keys) <= set(result)
    assert result["domains"] == ["plain", "invert"] and result["chance"] == 0.5
    assert set(result["class_top1_per_domain"]) == {"plain", "invert"}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["eval/domain/top1"] == result["top1"]
    assert summary["eval/domain/class_top1_per_domain/invert"] == result["class_top1_per_domain"]["invert"]
    # the class probe is the linear evaluator's own fit
    assert summary["eval/domain/class_top1"] == summary["linear_probe_top1"]
