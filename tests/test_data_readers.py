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


# -- image folders: one class numbering for every split ------------------------------------------
def _folder(root, split: str, classes: dict[str, int]) -> None:
    from PIL import Image

    for name, count in classes.items():
        (root / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", (6, 6), (40 * i, 0, 0)).save(root / split / name / f"{i}.png")


def test_image_folder_numbers_classes_by_name_over_both_splits(tmp_path):
    from sslkit.data.imagefolder import ImageFolder

    # the test split lacks `bird`: numbering each split on its own would make its `cat` 0
    _folder(tmp_path, "train", {"bird": 2, "cat": 2, "dog": 2})
    _folder(tmp_path, "val", {"cat": 1, "dog": 1})
    dm = ImageFolder(root=str(tmp_path), image_size=6)
    train, test = dm.split("train"), dm.split("test")
    assert dm.num_classes == 3 and train.classes == test.classes == ["bird", "cat", "dog"]
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2] and test.labels.tolist() == [1, 2]
    assert [p.parent.name for p, _ in test.samples] == ["cat", "dog"]
    with pytest.raises(DataError, match=r"data.num_classes=2 but .* \(train/ and val/ together\) has 3 class folders"):
        ImageFolder(root=str(tmp_path), image_size=6, num_classes=2).split("train")


def test_image_folder_refuses_a_test_class_never_seen_in_training(tmp_path):
    from sslkit.data.imagefolder import ImageFolder

    _folder(tmp_path, "train", {"cat": 2, "dog": 2})
    _folder(tmp_path, "val", {"cat": 1, "dog": 1, "eel": 1})
    dm = ImageFolder(root=str(tmp_path), image_size=6)
    assert dm.split("train").labels.tolist() == [0, 0, 1, 1]  # the union names eel 2; train has none
    with pytest.raises(DataError) as err:
        dm.split("test")
    assert "\n" not in str(err.value) and "['eel']" in str(err.value) and "none in" in str(err.value)


def test_domain_folder_numbers_classes_over_every_domain(tmp_path):
    from sslkit.data.domainfolder import DomainFolder

    # the held-out domain lacks `dog`; the training domains lack nothing
    _folder(tmp_path / "art", "", {"dog": 1, "horse": 1})
    _folder(tmp_path / "photo", "", {"dog": 1, "horse": 2})
    _folder(tmp_path / "sketch", "", {"horse": 2})
    dm = DomainFolder(root=str(tmp_path), image_size=6, test_domains=["sketch"])
    train, test = dm.split("train"), dm.split("test")
    assert dm.num_classes == 2 and train.labels.tolist() == [0, 1, 0, 1, 1]
    assert test.labels.tolist() == [1, 1]  # horse stays 1 without a dog folder beside it
    _folder(tmp_path / "sketch", "", {"cat": 1})
    dm = DomainFolder(root=str(tmp_path), image_size=6, test_domains=["sketch"])
    assert dm.split("train").labels.tolist() == [1, 2, 1, 2, 2]  # cat 0 over every domain
    with pytest.raises(DataError, match=r"\['cat'\].*none in the training domains"):
        dm.split("test")


def test_domain_folder_validation_keeps_the_domain_field(tmp_path):
    from sslkit.data.domainfolder import DomainFolder

    _folder(tmp_path / "art", "", {"dog": 3, "horse": 3})
    _folder(tmp_path / "photo", "", {"dog": 3, "horse": 3})
    dm = DomainFolder(root=str(tmp_path), image_size=6, val_size=4)
    stored, probe, val = dm.split("train"), dm.split(dm.probe_split), dm.split("validation")
    assert len(probe) == 8 and len(val) == 4
    for part in (probe, val):  # per-sample fields follow the images into the derived splits
        assert torch.equal(part.fields["domain"], stored.fields["domain"][part.origin])
        assert int(part[1]["domain"]) == int(stored.fields["domain"][part.origin[1]])
