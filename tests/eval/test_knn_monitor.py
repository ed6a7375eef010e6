"""The online kNN monitor (sslkit/eval/knn_monitor.py) in a real Trainer: its bank is the last
``bank_size`` training-step features, it runs no forward pass of its own, and its top-1 matches a
plain weighted kNN written here."""

from __future__ import annotations

import lightning as L
import torch

from sslkit.launch.api import compose
from sslkit.eval.knn_monitor import KNNMonitor
from sslkit.training.build import build_datamodule, build_module


class Recorder(L.Callback):
    """The training step's features and labels, the validation outputs, and how many times the
    module's ``features`` (a forward pass over images) ran in training and in validation."""

    def __init__(self) -> None:
        self.train, self.val, self.calls = [], [], {"train": 0, "val": 0}

    def setup(self, trainer, module, stage) -> None:
        inner = module.features

        def counted(images):
            self.calls["train" if module.training else "val"] += 1
            return inner(images)

        module.features = counted

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.train.append((outputs["features"].float(), outputs["labels"]))

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.val.append((outputs["features"].float(), outputs["labels"]))


def weighted_knn_top1(bank, bank_labels, queries, labels, classes, k, t) -> float:
    hits = 0
    bank = bank / bank.norm(dim=1, keepdim=True)
    for q, y in zip(queries, labels):
        sims = bank @ (q / q.norm())
        top = sims.argsort(descending=True)[:k]
        votes = torch.zeros(classes, dtype=torch.float64)
        for i in top:
            votes[bank_labels[i]] += float(torch.exp(sims[i].double() / t))
        hits += int(votes.argmax() == y)
    return hits / len(labels)


def test_bank_is_the_last_training_features_and_no_extra_pass(tmp_path):
    torch.set_num_threads(1)
    cfg, _, _ = compose(["experiment=smoke"], run_dir=tmp_path)
    torch.manual_seed(0)
    module, dm = build_module(cfg), build_datamodule(cfg)
    knn, rec = KNNMonitor(every_n_epochs=1, k=7, temperature=0.1, bank_size=150), Recorder()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, num_sanity_val_steps=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False,
                        callbacks=[rec, knn], default_root_dir=str(tmp_path))
    trainer.fit(module, datamodule=dm)
    val_batches = len(dm.val_dataloader())
    # validation features are computed once per batch, for every monitor; training computes none
    assert rec.calls == {"train": 0, "val": val_batches} and len(rec.val) == val_batches
    bank = torch.cat([f for f, _ in rec.train])[-150:]
    bank_labels = torch.cat([y for _, y in rec.train])[-150:]
    queries = torch.cat([f for f, _ in rec.val])
    labels = torch.cat([y for _, y in rec.val])
    expected = weighted_knn_top1(bank, bank_labels, queries, labels, dm.num_classes, 7, 0.1)
    assert abs(float(trainer.callback_metrics["val/knn_top1"]) - expected) < 1e-6
    assert knn._chunks == [] and knn._bank is None  # nothing held between validations
    # the queries are the validation split (training images held out), never the test split; the
    # bank holds pretraining images only, so no query finds itself in it
    val = dm.split("validation")
    assert torch.equal(labels, val.labels) and len(labels) != len(dm.split(dm.test_split))
    assert not set(dm.split("pretrain").origin.tolist()) & set(val.origin.tolist())


def test_idle_epochs_collect_nothing(tmp_path):
    torch.set_num_threads(1)
    cfg, _, _ = compose(["experiment=smoke", "trainer.max_epochs=3"], run_dir=tmp_path)
    module, dm = build_module(cfg), build_datamodule(cfg)
    held = []

    class Watch(L.Callback):
        def on_validation_epoch_start(self, trainer, pl_module) -> None:  # after knn's
            held.append(0 if knn._bank is None else len(knn._bank[1]))

    knn = KNNMonitor(every_n_epochs=2, k=5, bank_size=None)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=3, num_sanity_val_steps=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False,
                        callbacks=[knn, Watch()], default_root_dir=str(tmp_path))
    trainer.fit(module, datamodule=dm)
    n = len(dm.split("pretrain"))
    # epochs 2 (every 2nd) and 3 (the last) keep every labelled training image; epoch 1 none
    assert held == [0, n, n]


def test_labelled_global_batch_is_shared_by_the_monitors_and_drops_unlabelled_rows(monkeypatch):
    import sslkit.runtime.distributed as distributed

    gathers = []
    monkeypatch.setattr(distributed, "gather_no_grad", lambda x: gathers.append(x) or x)
    feats = torch.randn(4, 3).bfloat16()
    outputs = {"features": feats, "labels": torch.tensor([0, 1, 2, 3])}
    got_feats, got_labels = distributed.labelled_global_batch(outputs)
    assert got_feats.dtype == torch.float32 and torch.equal(got_feats, feats.float())
    assert distributed.labelled_global_batch(outputs)[0] is got_feats  # second monitor: no new gather
    assert len(gathers) == 2  # features and labels, once

    mixed = {"features": feats, "labels": torch.tensor([0, -1, 2, -1])}
    kept_feats, kept_labels = distributed.labelled_global_batch(mixed)
    assert kept_labels.tolist() == [0, 2] and torch.equal(kept_feats, feats.float()[[0, 2]])
    assert distributed.labelled_global_batch({"features": feats, "labels": -torch.ones(4, dtype=torch.long)}) is None


def test_similarity_follows_the_training_precision_unless_set():
    from types import SimpleNamespace

    import pytest

    from sslkit.errors import ConfigError

    for similarity, precision, dtype in [("auto", "bf16-mixed", torch.bfloat16), ("auto", "32-true", torch.float32),
                                         ("float32", "bf16-mixed", torch.float32),
                                         ("bfloat16", "32-true", torch.bfloat16)]:
        knn = KNNMonitor(similarity=similarity)
        knn.setup(SimpleNamespace(precision=precision), None, "fit")
        assert knn._dtype == dtype
    with pytest.raises(ConfigError, match="auto, float32, bfloat16"):
        KNNMonitor(similarity="fp16")
