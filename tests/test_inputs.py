"""Head inputs beyond z: batch fields (prior, domain, labels, any new name), their pre-flight
check, the prior sources, the synthetic domain shift and PACS-style domain folders."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from sslkit.data.domainfolder import DomainFolder
from sslkit.data.domains import shift_domains
from sslkit.data.fashion_mnist import CLASS_ATTRIBUTES, FashionMNIST
from sslkit.data.fields import attach, check_head_inputs
from sslkit.data.synthetic import Synthetic
from sslkit.errors import ConfigError, DataError
from sslkit.losses.base import LossOutput
from sslkit.losses.dunif import DecoupledUniformity
from sslkit.losses.gca import GCAINCE
from sslkit.prior.attributes import AttributePrior
from sslkit.prior.base import setup_prior
from sslkit.prior.features import FeaturePrior
from sslkit.prior.labels import LabelPrior
from sslkit.prior.vae import VAEPrior

from tests.conftest import ROOT, make_fashion_mnist, make_pacs

torch.set_num_threads(1)
F64 = torch.float64


def synthetic(**kw) -> Synthetic:
    dm = Synthetic(num_train=64, num_test=16, image_size=8, num_classes=4, batch_size=16, **kw)
    dm.setup("fit")
    return dm


class Needs(nn.Module):
    """A head that records what the module passes it and needs ``names``."""

    def __init__(self, *names: str) -> None:
        super().__init__()
        self.requires = frozenset(names)
        self.seen: list[dict] = []
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, z, **extras):
        self.seen.append({k: v.clone() for k, v in extras.items()})
        return LossOutput(self.scale * z.square().mean(), {})


# -- fields: original index survives subsets and sharding -----------------------------------------
def test_prior_keyed_by_original_index_under_longtail_and_sharding():
    dm = synthetic(imbalance_ratio=4.0)
    stored, pretrain = dm.split("train"), dm.split("pretrain")
    assert len(pretrain) < len(stored)
    table = torch.arange(len(stored), dtype=torch.float32)[:, None] * 10  # row i marks sample i
    attach(pretrain, "prior", table)
    assert torch.equal(pretrain.images, stored.images[pretrain.origin])
    for rank in range(2):
        for batch in dm.loader(pretrain, 8, True, True, rank=rank, world_size=2):
            # the image and its prior row belong to the same stored sample
            orig = pretrain.origin[batch["index"]]
            assert torch.equal(batch["prior"][:, 0], orig.float() * 10)
            assert torch.equal(batch["image"], stored.images[orig])


def test_module_passes_any_required_batch_field():
    """A new input is a batch field plus a name in requires: no module code names it."""
    from hydra import compose, initialize_config_dir

    from sslkit.training.build import instantiate

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=smoke"])
    dm = synthetic()
    data = dm.split("pretrain")
    data.fields["weather"] = torch.arange(len(data)) * 3
    head = Needs("weather", "labels", "index")
    module = instantiate(cfg.model, "model")(
        encoder=instantiate(cfg.encoder, "encoder"), head=head,
        augment=instantiate(cfg.augment, "augment"),
        optimizer=instantiate(cfg.optim.optimizer, "optim.optimizer"))
    check_head_inputs(head, dm)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, limit_val_batches=0, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    assert len(head.seen) == 2
    for seen in head.seen:
        assert set(seen) == {"weather", "labels", "index"}
        assert torch.equal(seen["weather"], seen["index"] * 3)
        assert torch.equal(seen["labels"], data.labels[seen["index"]])


def test_missing_inputs_refused_in_one_line_with_the_fix():
    dm = synthetic()
    with pytest.raises(ConfigError, match=r"DecoupledUniformity needs `prior`.*add prior=labels"):
        check_head_inputs(DecoupledUniformity(kernel="rbf", sigma=1.0), dm)
    with pytest.raises(ConfigError, match=r"GCAINCE needs `domains`.*data.domain_shift"):
        check_head_inputs(GCAINCE(alpha=0.5), dm)
    with pytest.raises(ConfigError, match=r"needs `weather`.*`weather` field"):
        check_head_inputs(Needs("weather"), dm)
    dm.split("pretrain").labels[3] = -1
    with pytest.raises(ConfigError, match="unlabelled"):
        check_head_inputs(GCAINCE(alpha=0.5, groups="labels"), dm)
    check_head_inputs(DecoupledUniformity(), dm)  # no kernel, no prior needed
    check_head_inputs(GCAINCE(), dm)


def test_prior_without_kernel_refused():
    with pytest.raises(ConfigError, match=r"prior=labels is set but loss DecoupledUniformity"):
        setup_prior(LabelPrior(), synthetic(), DecoupledUniformity())


# -- prior sources ----------------------------------------------------------------------------------
def test_label_prior_is_one_hot():
    dm = synthetic()
    table = LabelPrior().table(dm)
    labels = dm.split("train").labels
    assert table.shape == (64, 4) and torch.equal(table.argmax(1), labels)
    assert torch.equal(table.sum(1), torch.ones(64))


def test_fashion_mnist_attribute_table(tmp_path):
    dm = FashionMNIST(root=str(make_fashion_mnist(tmp_path)), batch_size=8)
    dm.setup("fit")
    table = AttributePrior().table(dm)
    labels = dm.split("train").labels
    assert torch.equal(table, CLASS_ATTRIBUTES[labels])
    # every garment is worn somewhere or is a bag; footwear and tops exclude each other
    assert (CLASS_ATTRIBUTES[:, :4].sum(1) >= 1).all()
    assert not (CLASS_ATTRIBUTES[:, 0] * CLASS_ATTRIBUTES[:, 2]).any()


def test_attributes_missing_refused(tmp_path):
    dm = DomainFolder(root=str(make_pacs(tmp_path)), image_size=8, batch_size=4)
    with pytest.raises(DataError, match="carries no attributes"):
        AttributePrior().table(dm)


@pytest.mark.parametrize("suffix", [".npy", ".pt"])
def test_feature_prior_from_file(tmp_path, suffix):
    dm = synthetic()
    values = np.random.default_rng(0).normal(size=(64, 5)).astype(np.float32)
    path = tmp_path / f"f{suffix}"
    np.save(path, values) if suffix == ".npy" else torch.save(torch.from_numpy(values), path)
    assert torch.equal(FeaturePrior(path=str(path)).table(dm), torch.from_numpy(values))
    np.save(tmp_path / "short.npy", values[:10])
    with pytest.raises(DataError, match=r"one row per training sample, shape \[64, P\]"):
        FeaturePrior(path=str(tmp_path / "short.npy")).table(dm)
    with pytest.raises(ConfigError, match="exactly one of"):
        FeaturePrior()


def test_vae_prior_learns_and_is_cached(tmp_path):
    dm = Synthetic(num_train=256, num_test=16, image_size=16, num_classes=4, batch_size=16)
    dm.setup("fit")
    settings = dict(latent_dim=4, hidden_dim=64, input_size=16, batch_size=32, lr=3e-3,
                    cache_dir=str(tmp_path))
    prior = VAEPrior(epochs=1, **settings)
    first = prior.table(dm)
    one_epoch = prior.last_loss
    assert first.shape == (256, 4) and len(list(tmp_path.glob("*.pt"))) == 1
    cached = VAEPrior(epochs=1, **settings)
    assert torch.equal(cached.table(dm), first) and cached.last_loss is None  # read, not trained
    longer = VAEPrior(epochs=15, **settings)
    means = longer.table(dm)
    assert longer.last_loss < one_epoch  # the negative ELBO falls with training
    assert len(list(tmp_path.glob("*.pt"))) == 2
    # the class structure shows in the means: the nearest other sample is mostly of the same
    # class (chance: 1/4; raw pixels: 1.0 on this data)
    labels = dm.split("train").labels
    d = torch.cdist(means, means).fill_diagonal_(math.inf)
    assert (labels[d.argmin(1)] == labels).float().mean() > 0.6


def test_prior_sources_leave_the_global_rng_alone(tmp_path):
    dm = synthetic()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    VAEPrior(latent_dim=2, hidden_dim=8, input_size=8, epochs=1, cache_dir=str(tmp_path)).table(dm)
    assert torch.equal(torch.rand(3), expected)


def test_label_prior_narrow_kernel_gives_class_means():
    """One-hot priors, rbf with a narrow bandwidth: K is block-diagonal with blocks of ones,
    (J + lam I)^-1 J = J / (n + lam), so each centroid becomes n_c/(n_c + lam) times its class
    mean (the class mean itself as lam -> 0)."""
    dm = synthetic()
    batch = next(iter(dm.loader(dm.split("train"), 16, True, True)))
    prior = LabelPrior().table(dm)[batch["index"]]
    labels = batch["label"]
    z = torch.randn(16, 2, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    lam = 1e-3
    head = DecoupledUniformity(kernel="rbf", sigma=0.1, lam=lam)
    # plain reference: per-sample centroids of unit views, averaged per class
    units = [[z[i, v] / z[i, v].norm() for v in range(2)] for i in range(16)]
    mu = [(units[i][0] + units[i][1]) / 2 for i in range(16)]
    expected = []
    for i in range(16):
        same = [j for j in range(16) if labels[j] == labels[i]]
        n = len(same)
        expected.append(sum(mu[j] for j in same) / n * n / (n + lam))
    expected = torch.stack(expected)
    alpha = head.cme_weights(prior, 16, F64)
    got = alpha @ torch.stack(mu)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    # and the loss is the uniformity of those class-mean centroids
    pots = [torch.exp(-2.0 * (expected[i] - expected[j]).square().sum())
            for i in range(16) for j in range(i + 1, 16)]
    torch.testing.assert_close(head(z, prior=prior).loss, torch.log(torch.stack(pots).mean()),
                               rtol=0, atol=1e-12)


# -- domains ----------------------------------------------------------------------------------------
def test_synthetic_domain_shift():
    images = torch.randint(0, 256, (40, 1, 6, 6), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    shifted, dom = shift_domains(images, ["plain", "invert", "rotate90"], seed=0, split="train")
    assert torch.bincount(dom).tolist() == [14, 13, 13]  # balanced
    assert torch.equal(shifted[dom == 0], images[dom == 0])
    assert torch.equal(shifted[dom == 1], 255 - images[dom == 1])
    assert torch.equal(shifted[dom == 2], torch.rot90(images[dom == 2], 1, dims=(-2, -1)))
    again, dom2 = shift_domains(images, ["plain", "invert", "rotate90"], seed=0, split="train")
    assert torch.equal(again, shifted) and torch.equal(dom2, dom)
    with pytest.raises(ConfigError, match="at least two styles out of plain, invert"):
        shift_domains(images, ["plain", "sepia"], seed=0, split="train")


def test_domain_shift_in_batches_and_gca_domain_plan():
    dm = synthetic(domain_shift=["plain", "invert"])
    batch = next(iter(dm.train_dataloader()))
    assert batch["domain"].shape == (16,) and set(batch["domain"].tolist()) == {0, 1}
    check_head_inputs(GCAINCE(alpha=0.5), dm)


def test_gca_group_targets_from_domains_or_labels():
    """groups=labels is the supervised target plan: same as passing the plan built by hand."""
    z = torch.randn(6, 2, 5, generator=torch.Generator().manual_seed(1), dtype=F64)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    assert GCAINCE().requires == frozenset()
    assert GCAINCE(alpha=0.5).requires == {"domains"}
    head = GCAINCE(alpha=0.7, beta=0.1, groups="labels")
    assert head.requires == {"labels"}
    n = 12
    inst = torch.arange(n) % 6
    lab = labels[inst]
    plan = torch.where(lab[:, None] == lab[None, :], torch.tensor(0.7, dtype=F64),
                       torch.tensor(0.1, dtype=F64))
    plan[inst[:, None] == inst[None, :]] = 1.0
    plan.fill_diagonal_(0.0)
    got = head(z, labels=labels).loss
    torch.testing.assert_close(got, GCAINCE()(z, target_plan=plan).loss, rtol=0, atol=1e-12)
    dom = GCAINCE(alpha=0.7, beta=0.1)(z, domains=labels).loss
    torch.testing.assert_close(dom, got, rtol=0, atol=1e-12)
    assert abs(float(got) - float(GCAINCE()(z).loss)) > 1e-3
    with pytest.raises(ValueError, match="groups must be one of"):
        GCAINCE(groups="colour")


def test_domain_folder_reads_domains_and_holds_one_out(tmp_path):
    root = make_pacs(tmp_path / "pacs")
    dm = DomainFolder(root=str(root), image_size=8, batch_size=4, test_domains=["sketch"])
    dm.setup("fit")
    train, test = dm.split("train"), dm.split("test")
    assert len(train) == 8 and len(test) == 4 and dm.num_classes == 2
    assert train.fields["domain"].tolist() == [0] * 4 + [1] * 4
    assert test.fields["domain"].tolist() == [2] * 4
    item = train[5]
    assert item["domain"] == 1 and item["image"].shape == (3, 8, 8)
    assert int(item["label"]) == int(train.labels[5])
    batch = next(iter(dm.train_dataloader()))
    assert batch["domain"].shape == (4,)
    with pytest.raises(DataError, match=r"no folder for domains \['cartoon'\]"):
        DomainFolder(root=str(root), image_size=8, test_domains=["cartoon"]).setup("fit")
