"""SVHN, CUB-200-2011 and UT-Zappos50K readers on tiny files in the real formats."""

import pytest
import torch

from sslkit.data.cub import CUB200
from sslkit.data.svhn import SVHN
from sslkit.data.utzappos import CLASSES, UTZappos
from sslkit.errors import DataError
from tests.conftest import UTZAPPOS_SUBCATEGORIES, make_cub, make_svhn, make_utzappos


def _batch(dm, split):
    return next(iter(dm.eval_dataloader(split)))


def test_svhn_reads_mat_files_and_maps_10_to_digit_0(tmp_path):
    import scipy.io

    make_svhn(tmp_path / "svhn", n=20, splits=("train", "test", "extra"))
    dm = SVHN(root=str(tmp_path), batch_size=4, eval_batch_size=64)
    train = dm.split("train")
    raw = scipy.io.loadmat(tmp_path / "svhn" / "train_32x32.mat")
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8
    # image n, channel c, row i, column j is X[i, j, c, n]
    assert train.images[5, 2, 3, 7] == raw["X"][3, 7, 2, 5]
    assert train.labels.tolist() == [(k % 10 + 1) % 10 for k in range(20)]
    assert train.labels[9] == 0  # label 10 is the digit 0
    both = SVHN(root=str(tmp_path), train_split="train+extra").split("pretrain")
    assert len(both) == 40


def test_svhn_missing_and_bad_files(tmp_path):
    with pytest.raises(DataError, match=r"no train_32x32.mat in .* and .*svhn.*data.download=true"):
        SVHN(root=str(tmp_path)).split("train")
    (tmp_path / "train_32x32.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match="train_32x32.mat: not a readable SVHN"):
        SVHN(root=str(tmp_path)).split("train")
    with pytest.raises(DataError, match="train_split"):
        SVHN(root=str(tmp_path), train_split="extra")


def test_cub_splits_labels_and_312_attributes(tmp_path):
    make_cub(tmp_path, classes=3, per_class=4)
    dm = CUB200(root=str(tmp_path), image_size=24, load_size=28, batch_size=2, eval_batch_size=16)
    train, test = dm.split("train"), dm.split("test")
    ids = {"train": [i for i in range(1, 13) if i % 2 == 1], "test": [i for i in range(1, 13) if i % 2 == 0]}
    for split, data in (("train", train), ("test", test)):
        assert len(data) == 6
        assert data.labels.tolist() == [(i - 1) // 4 for i in ids[split]]
        assert data.attributes.shape == (6, 312) and data.attributes.dtype == torch.float32
        expected = torch.tensor([[float(i * a % 3 == 0) for a in range(1, 313)] for i in ids[split]])
        assert torch.equal(data.attributes, expected)
        batch = _batch(dm, split)
        assert batch["image"].shape == (6, 3, 28, 28) and batch["image"].dtype == torch.uint8
    assert dm.num_classes == 200


def test_cub_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(DataError, match=r"CUB_200_2011 lacks images.txt.*CUB_200_2011.tgz.*download=true"):
        CUB200(root=str(tmp_path)).split("train")
    make_cub(tmp_path)
    (tmp_path / "CUB_200_2011" / "attributes" / "image_attribute_labels.txt").write_text("1 400 1 3 2.0\n")
    with pytest.raises(DataError, match="attribute id 400 out of range"):
        CUB200(root=str(tmp_path)).split("train")


def test_utzappos_split_from_the_attribute_file_labels_from_subcategory(tmp_path):
    make_utzappos(tmp_path, per_class=4)
    dm = UTZappos(root=str(tmp_path), image_size=32, batch_size=2, eval_batch_size=16)
    train, test = dm.split("train"), dm.split("test")
    assert len(train) == len(test) == 6
    # ids sorted: 7000-0, 7001-1, ...: image i (subcategory i // 4) is a training one when even
    assert train.labels.tolist() == [CLASSES.index(UTZAPPOS_SUBCATEGORIES[i // 4]) for i in range(0, 12, 2)]
    assert test.labels.tolist() == [CLASSES.index(UTZAPPOS_SUBCATEGORIES[i // 4]) for i in range(1, 12, 2)]
    expected = torch.tensor([[float((i + k) % 2) for k in range(126)] for i in range(0, 12, 2)])
    assert torch.equal(train.attributes, expected)
    assert not hasattr(test, "attributes")
    batch = _batch(dm, "train")
    assert batch["image"].shape == (6, 3, 32, 32)
    assert dm.num_classes == 21


def test_utzappos_missing_and_bad_files(tmp_path):
    with pytest.raises(DataError, match=r"image folder not found: .*ut-zap50k-images; extract"):
        UTZappos(root=str(tmp_path)).split("train")
    make_utzappos(tmp_path)
    bad = tmp_path / "meta_data_bin_train.csv"
    bad.write_text("path,attr_val_0\nx.jpg,1\n")
    with pytest.raises(DataError, match="126 'attr_val' columns"):
        UTZappos(root=str(tmp_path)).split("train")
    bad.unlink()
    with pytest.raises(DataError, match="attribute file not found.*meta_data_bin_train.csv"):
        UTZappos(root=str(tmp_path)).split("train")


def test_listed_images_carry_attached_fields(tmp_path):
    make_utzappos(tmp_path, per_class=2)
    data = UTZappos(root=str(tmp_path)).split("train")
    data.fields["prior"] = torch.arange(len(data), dtype=torch.float32)[:, None]
    assert data[2]["prior"].tolist() == [2.0]
