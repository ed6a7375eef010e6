"""Data modules read the real formats and refuse bad files by name."""

import gzip

import lightning as L
import numpy as np
import pytest
import torch

from sslkit.data.cifar import CIFAR10, CIFAR100
from sslkit.data.fashion_mnist import FashionMNIST
from sslkit.data.idx import read_idx
from sslkit.data.imagefolder import ImageFolder
from sslkit.data.longtail import longtail_indices
from sslkit.data.sampler import EpochBatchSampler
from sslkit.data.stl10 import STL10
from sslkit.data.synthetic import Synthetic
from sslkit.errors import ConfigError, DataError
from tests.conftest import make_cifar, make_fashion_mnist, make_image_folder, make_stl10, write_idx


def test_idx_roundtrip(tmp_path):
    arr = np.arange(2 * 3 * 4).reshape(2, 3, 4) % 256
    for gz in (True, False):
        path = write_idx(tmp_path / f"a{gz}.idx{'.gz' if gz else ''}", arr, gz)
        assert torch.equal(read_idx(path), torch.from_numpy(arr.astype(np.uint8)))


def test_idx_refuses_bad_magic_and_truncation(tmp_path):
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as fh:
        fh.write(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="bad.gz.*magic"):
        read_idx(bad)
    good = write_idx(tmp_path / "t.gz", np.zeros((4, 5), np.uint8))
    raw = gzip.open(good).read()
    trunc = tmp_path / "trunc.gz"
    with gzip.open(trunc, "wb") as fh:
        fh.write(raw[:-3])
    with pytest.raises(DataError, match="trunc.gz.*truncated"):
        read_idx(trunc)


@pytest.mark.parametrize("layout", ["flat", "torchvision", "plain"])
def test_fashion_mnist_layouts(tmp_path, layout):
    folder = {"flat": tmp_path, "torchvision": tmp_path / "FashionMNIST" / "raw", "plain": tmp_path}[layout]
    make_fashion_mnist(folder, gz=layout != "plain")
    dm = FashionMNIST(root=str(tmp_path), download=False)
    train, test = dm.split("train"), dm.split("test")
    assert train.images.shape == (64, 1, 28, 28) and train.images.dtype == torch.uint8
    assert len(test) == 32 and train.labels.tolist()[:3] == [0, 1, 2]


def test_fashion_mnist_missing_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setattr("sslkit.data.fashion_mnist.DEBIAN_DIR", tmp_path / "nowhere")
    dm = FashionMNIST(root=str(tmp_path / "empty"), download=False)
    with pytest.raises(DataError) as err:
        dm.split("train")
    msg = str(err.value)
    assert "empty" in msg and "apt-get install dataset-fashion-mnist" in msg and "data.download=true" in msg
    assert not (tmp_path / "empty").exists()  # nothing downloaded, nothing created


@pytest.mark.parametrize("cls,classes", [(CIFAR10, 10), (CIFAR100, 100)])
def test_cifar(tmp_path, cls, classes):
    make_cifar(tmp_path, classes)
    dm = cls(root=str(tmp_path))
    train, test = dm.split("train"), dm.split("test")
    assert train.images.shape == ((100 if classes == 10 else 20), 3, 32, 32)
    assert len(test) == 20 and int(train.labels.max()) < classes


def test_cifar_missing_key_refused(tmp_path):
    import pickle

    make_cifar(tmp_path, 10)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}))
    with pytest.raises(DataError, match="test_batch.*labels"):
        CIFAR10(root=str(tmp_path)).split("test")


def test_stl10(tmp_path):
    make_stl10(tmp_path)
    dm = STL10(root=str(tmp_path))
    pre = dm.split("pretrain")
    assert pre.images.shape == (12, 3, 96, 96) and (pre.labels[6:] == -1).all()
    assert dm.split("train").labels.tolist() == list(range(6))
    with pytest.raises(DataError, match="train_split"):
        STL10(root=str(tmp_path), train_split="nope")


def test_image_folder_and_class_list(tmp_path):
    make_image_folder(tmp_path)
    dm = ImageFolder(root=str(tmp_path), image_size=16, load_size=20)
    item = dm.split("train")[0]
    assert item["image"].shape == (3, 20, 20) and item["image"].dtype == torch.uint8
    assert dm.num_classes == 3
    lst = tmp_path / "classes.txt"
    lst.write_text("dog\neel\n")
    dm2 = ImageFolder(root=str(tmp_path), image_size=16, class_list=str(lst))
    assert dm2.split("test").classes == ["dog", "eel"] and len(dm2.split("test")) == 6
    batch = next(iter(dm2.eval_dataloader("test")))
    assert batch["image"].shape == (6, 3, 16, 16)


def test_image_folder_refusals(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no images found"):
        ImageFolder(root=str(tmp_path)).split("train")
    make_image_folder(tmp_path / "x")
    (tmp_path / "x" / "train" / "cat" / "broken.png").write_bytes(b"not a png")
    dm = ImageFolder(root=str(tmp_path / "x"), image_size=8)
    data = dm.split("train")
    broken = [i for i, (p, _) in enumerate(data.samples) if p.name == "broken.png"][0]
    with pytest.raises(DataError, match="broken.png"):
        data[broken]


def test_longtail_profile():
    labels = torch.arange(10).repeat_interleave(100)
    keep = longtail_indices(labels, imbalance_ratio=100, seed=0)
    counts = torch.bincount(labels[keep], minlength=10)
    assert counts[0] == 100 and counts[-1] == 1
    assert all(counts[i] >= counts[i + 1] for i in range(9))
    assert torch.equal(keep, longtail_indices(labels, 100, seed=0))


def test_datamodule_longtail_only_on_pretraining_split(tmp_path):
    dm = Synthetic(num_train=400, num_classes=4, imbalance_ratio=10)
    assert len(dm.split("train")) == 400
    counts = torch.bincount(dm.split("pretrain").labels)
    assert counts[0] == 100 and counts[3] == 10


def test_sampler_shards_one_global_batch():
    single = list(EpochBatchSampler(103, 8, seed=3))
    ranks = [list(EpochBatchSampler(103, 4, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 12
    for step, batch in enumerate(single):
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(batch)
    s = EpochBatchSampler(103, 8, seed=3)
    s.set_epoch(1)
    assert list(s) != single  # a new order each epoch
    s.set_epoch(0)
    assert list(s) == single  # and the same order for the same epoch


def test_global_batch_must_divide_devices():
    dm = Synthetic(batch_size=30)
    with pytest.raises(ConfigError, match="divisible"):
        dm.per_rank_batch(4)


def test_synthetic_deterministic():
    a, b = Synthetic(seed=1).split("train"), Synthetic(seed=1).split("train")
    assert torch.equal(a.images, b.images) and a.images.shape == (512, 1, 16, 16)


def test_imagenet100_config_uses_the_shipped_class_list(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from sslkit.training.config import CONFIG_DIR

    classes = (CONFIG_DIR.parent / "sslkit" / "data" / "imagenet100_classes.txt").read_text().split()
    assert len(classes) == len(set(classes)) == 100
    make_image_folder(tmp_path, classes=classes[:100] + ["n99999999"], per_class=1, size=(8, 8))
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["data=imagenet100", f"data.root={tmp_path}", "data.image_size=8"])
    dm = instantiate(cfg.data)
    train = dm.split("train")
    assert train.classes == classes and len(train) == 100 and dm.num_classes == 100


def test_resume_position_recorded_only_for_an_unfinished_epoch():
    from types import SimpleNamespace

    def fake_trainer(epoch, processed, batches=8):
        progress = SimpleNamespace(current=SimpleNamespace(processed=processed))
        loop = SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress))
        return SimpleNamespace(current_epoch=epoch, fit_loop=loop, num_training_batches=batches)

    dm = Synthetic(batch_size=64)
    dm.trainer = fake_trainer(epoch=1, processed=3)
    assert dm.state_dict() == {"epoch": 1, "batches_done": 3}
    # saved between epochs: the epoch number has moved on, the count is the old epoch's
    dm.trainer = fake_trainer(epoch=2, processed=8)
    assert dm.state_dict() == {"epoch": 2, "batches_done": 0}
    dm.load_state_dict({"epoch": 1, "batches_done": 3})
    sampler = dm.loader(dm.split("pretrain"), 64, True, True).batch_sampler
    sampler.resume_skip = dm._take_resume_skip
    sampler.set_epoch(1)
    assert len(list(sampler)) == 5  # 3 of 8 batches skipped once
    assert len(list(sampler)) == 8  # and only once


# -- data.val_size: the validation split, carved from the training images -----------------------
def _rank_trainer(rank: int, world: int):
    from types import SimpleNamespace

    return SimpleNamespace(global_rank=rank, world_size=world)


def _loader_images(loader) -> torch.Tensor:
    return torch.cat([b["image"] for b in loader])


def test_validation_is_a_seeded_part_of_the_training_split_held_out_of_training():
    dm = Synthetic(num_train=200, num_test=100, val_size=30, eval_batch_size=8, seed=3)
    train, test, val = dm.split("train"), dm.split("test"), dm.split("validation")
    pretrain, probe = dm.split("pretrain"), dm.split(dm.probe_split)
    assert len(val) == 30 and len(set(val.origin.tolist())) == 30
    assert torch.equal(val.images, train.images[val.origin])
    assert torch.equal(val.labels, train.labels[val.origin])
    # held out of pretraining and of the probes' training set; together they are the whole split
    for part in (pretrain, probe):
        assert not set(part.origin.tolist()) & set(val.origin.tolist())
        assert sorted(part.origin.tolist() + val.origin.tolist()) == list(range(len(train)))
    # reproducible from the data seed; another seed draws another part
    assert torch.equal(Synthetic(num_train=200, val_size=30, seed=3).split("validation").origin, val.origin)
    assert not torch.equal(Synthetic(num_train=200, val_size=30, seed=4).split("validation").origin, val.origin)
    # the validation loader serves exactly that part, the same images every epoch
    loader = dm.val_dataloader()
    first = _loader_images(loader)
    assert torch.equal(first, val.images)
    loader.batch_sampler.set_epoch(5)
    assert torch.equal(_loader_images(loader), first)
    # the test split is untouched and read whole by the final evaluation
    assert torch.equal(_loader_images(dm.eval_dataloader(dm.test_split)), test.images)


def test_val_size_null_is_no_validation_split_and_sizes_are_checked():
    dm = Synthetic(num_train=100, val_size=None)
    assert dm.val_dataloader() == [] and not dm.has_validation
    assert dm.split(dm.probe_split) is dm.split("train") and len(dm.split("pretrain")) == 100
    with pytest.raises(ConfigError, match="data.val_size=null: synthetic has no validation split"):
        dm.split("validation")
    with pytest.raises(ConfigError, match=r"data.val_size=0: .*>= 1.*or null"):
        Synthetic(val_size=0)
    # at most half the labelled training images: as many remain to train on
    assert len(Synthetic(num_train=100, val_size=10_000).split("validation")) == 50
    with pytest.raises(ConfigError, match="data.val_size=5: the train split of synthetic has 1 labelled"):
        Synthetic(num_train=1, val_size=5).split("validation")


def test_validation_comes_from_labelled_images_and_leaves_the_unlabelled_ones(tmp_path):
    # STL-10: drawn from the 5k labelled `train` images, removed from the `train+unlabeled`
    # pretraining split at the same positions (train comes first); unlabelled images all stay
    make_stl10(tmp_path, n=8)
    dm = STL10(root=str(tmp_path), val_size=3, batch_size=2)
    stored, val, pre = dm.split("train+unlabeled"), dm.split("validation"), dm.split("pretrain")
    assert dm.split("train").labels.tolist() == stored.labels[:8].tolist()
    assert len(val) == 3 and (val.labels >= 0).all() and int(val.origin.max()) < 8
    assert len(pre) == 13 and not set(pre.origin.tolist()) & set(val.origin.tolist())
    assert torch.equal(val.images, stored.images[val.origin])
    assert len(dm.split(dm.probe_split)) == 5 and (dm.split(dm.probe_split).labels >= 0).all()


def test_long_tail_is_drawn_from_what_the_validation_split_leaves():
    dm = Synthetic(num_train=400, num_classes=4, val_size=40, imbalance_ratio=10, imbalance_profile="step")
    val, pre = dm.split("validation"), dm.split("pretrain")
    assert not set(pre.origin.tolist()) & set(val.origin.tolist())
    counts = torch.bincount(pre.labels, minlength=4).tolist()
    assert counts[0] == max(counts) and counts[3] * 9 <= counts[0] <= counts[3] * 11
    assert len(dm.split(dm.probe_split)) == 360  # the probe trains on the balanced rest


def test_validation_on_a_per_item_dataset(tmp_path):
    make_image_folder(tmp_path)  # 9 training images
    dm = ImageFolder(root=str(tmp_path), image_size=16, load_size=16, val_size=4, eval_batch_size=3)
    train, val = dm.split("train"), dm.split("validation")
    assert len(val) == 4 and torch.equal(val.labels, train.labels[val.origin])
    images = _loader_images(dm.val_dataloader())
    assert torch.equal(images, torch.stack([train[int(i)]["image"] for i in val.origin]))
    assert len(dm.split("pretrain")) == len(dm.split(dm.probe_split)) == 5


def test_ddp_validation_shards_partition_the_validation_split():
    # what each of 2 ranks' validation loaders serves (the real sampler, the rank from the trainer):
    # together the validation split, each image once, whatever the uneven last batch; every rank
    # draws the same split
    seen, origins = [], []
    for rank in range(2):
        dm = Synthetic(num_train=100, val_size=29, eval_batch_size=4, seed=1)
        dm.trainer = _rank_trainer(rank, 2)
        seen.append(torch.cat([b["index"] for b in dm.val_dataloader()]))
        origins.append(dm.split("validation").origin)
    assert torch.equal(origins[0], origins[1])
    assert len(seen[0]) + len(seen[1]) == 29
    assert sorted(origins[0][torch.cat(seen)].tolist()) == origins[0].tolist()


class ValImages(L.Callback):
    """Saves, per validation epoch after the sanity check, the images the monitors scored."""

    def __init__(self, path: str) -> None:
        self.path, self.epochs = path, []

    def on_validation_epoch_start(self, trainer, module) -> None:
        self.epochs.append([])

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self.epochs[-1].append(batch["image"])

    def on_fit_end(self, trainer, module) -> None:
        torch.save([torch.cat(e) for e in self.epochs if e], self.path)


class TrainIndices(L.Callback):
    """Saves the pretraining split's positions of every training batch."""

    def __init__(self, path: str) -> None:
        self.path, self.seen = path, []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.seen.append(trainer.datamodule.split("pretrain").origin[batch["index"]])

    def on_fit_end(self, trainer, module) -> None:
        torch.save(torch.cat(self.seen), self.path)


def test_smoke_run_with_val_size(tmp_path):
    import json

    import sslkit

    seen, trained = tmp_path / "val.pt", tmp_path / "train.pt"
    run = tmp_path / "run"
    sslkit.train(overrides=["experiment=smoke", "threads=1", "data.val_size=16", "data.eval_batch_size=8",
                            "+monitor.val_images._target_=tests.test_data.ValImages",
                            f"+monitor.val_images.path={seen}",
                            "+monitor.train_indices._target_=tests.test_data.TrainIndices",
                            f"+monitor.train_indices.path={trained}"], run_dir=run)
    dm = Synthetic(num_train=576, val_size=16, seed=0)
    val = dm.split("validation")
    epochs = torch.load(seen, weights_only=True)
    # the monitors scored the same 16 training images every epoch, none of which was trained on
    assert len(epochs) == 2 and all(torch.equal(e, val.images) for e in epochs)
    assert not set(torch.load(trained, weights_only=True).tolist()) & set(val.origin.tolist())
    header, *rows = (run / "metrics.csv").read_text().splitlines()
    column = header.split(",").index("val/online_probe_top1")
    tops = [float(r.split(",")[column]) for r in rows if r.split(",")[column]]
    assert len(tops) == 2 and all((t * 16).is_integer() for t in tops)
    # the final probe trains on the training split without them and scores the whole test split
    linear = json.loads((run / "eval" / "linear.json").read_text())
    assert linear["n_train"] == 576 - 16 and linear["n_test"] == 256
    summary = json.loads((run / "summary.json").read_text())
    assert summary["val/images"] == 16 and (summary["val/linear_probe_top1"] * 16).is_integer()
    assert summary["val/online_probe_top1"] == summary["online_probe_top1"] == tops[-1]
