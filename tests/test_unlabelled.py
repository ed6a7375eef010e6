"""``data=unlabelled``: a folder of images without class folders pretrains; the evaluators read
labelled folders (``data.probe_root``, ``data.test_root``) and, without them, are refused in one
line before training. Real JPEGs, short real runs (``run_entry``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sslkit.data.unlabelled import UnlabelledFolder
from sslkit.errors import ConfigError
from tests.conftest import run_entry
from tests.test_cache import jpeg, jpeg_tree

PHOTOS = 20  # 14 in the folder itself, 6 one or two sub-folders down
SMALL = ["experiment=smoke", "data=unlabelled", "data.image_size=16", "data.load_size=20",
         "augment=simclr", "data.batch_size=8", "data.num_workers=0", "threads=1"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("unlabelled")
    for i in range(PHOTOS):
        sub = ("trip", "trip/day2", "")[i % 3] if i % 3 == 0 or i < 6 else ""
        jpeg(root / "photos" / sub / f"photo_{i}.jpg", 100 + i, (40 + i, 30 + i % 4))
    (root / "photos" / "notes.txt").write_text("not an image\n")
    jpeg_tree(root / "labelled", classes=3, per_class=6, val=3)
    return {"photos": root / "photos", "probe": root / "labelled" / "train", "test": root / "labelled" / "val"}


def test_every_image_of_the_folder_and_its_sub_folders_pretrains_unlabelled(folders):
    dm = UnlabelledFolder(root=str(folders["photos"]), image_size=16, load_size=20, val_size=3, batch_size=4)
    dm.setup("fit")
    data = dm.split("pretrain")
    assert len(data) == PHOTOS and bool((data.labels == -1).all())
    assert len({p.parent for p, _ in data.samples}) > 1  # sub-folders are read, and are not classes
    assert not dm.labelled and not dm.has_validation and dm.validation_index() is None
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 20, 20) and batch["image"].dtype == torch.uint8
    assert batch["label"].tolist() == [-1] * 4
    # the probes' splits are refused in one line, naming both fixes
    with pytest.raises(ConfigError) as err:
        dm.split("probe")
    assert "\n" not in str(err.value) and "data.probe_root=DIR and data.test_root=DIR" in str(err.value)


def test_labelled_folders_give_the_probes_their_splits(folders):
    dm = UnlabelledFolder(root=str(folders["photos"]), probe_root=str(folders["probe"]),
                          test_root=str(folders["test"]), image_size=16, load_size=20, val_size=3)
    dm.setup("fit")
    assert len(dm.split("pretrain")) == PHOTOS  # validation images come from the probe folder
    assert len(dm.split("validation")) == 3 and len(dm.split("probe")) == 18 - 3
    assert len(dm.split("test")) == 9 and dm.num_classes == 3
    assert sorted(set(dm.split("test").labels.tolist())) == [0, 1, 2]


def test_only_one_labelled_folder_is_refused():
    with pytest.raises(ConfigError, match=r"^data.probe_root is set but data.test_root is not"):
        UnlabelledFolder(root="x", probe_root="y")


def test_evaluation_without_labelled_images_is_refused_before_training(folders, tmp_path):
    proc = run_entry(["train.py", *SMALL, f"data.root={folders['photos']}", f"hydra.run.dir={tmp_path}"])
    assert proc.returncode != 0
    assert proc.stderr.strip() == (
        "error: data=unlabelled has no labelled images (needed by eval=[linear,knn], "
        "monitor.online_probe, monitor.knn); set data.probe_root=DIR and data.test_root=DIR (labelled "
        "folders of <class>/<image>), or pretrain only: eval=[] monitor.online_probe=null monitor.knn=null")
    assert not (tmp_path / "checkpoints").exists()


def test_an_unlabelled_folder_pretrains_and_is_evaluated_on_a_labelled_one(folders, tmp_path):
    # pretraining only, then the offline evaluation of its checkpoint on the labelled folders
    run = tmp_path / "pretrain"
    proc = run_entry(["train.py", *SMALL, f"data.root={folders['photos']}", "eval=[]",
                      "monitor.online_probe=null", "monitor.knn=null", f"hydra.run.dir={run}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 2 * (PHOTOS // 8)  # every photo, 2 epochs of the global batch
    assert "linear_probe_top1" not in summary
    ckpt = run / "checkpoints" / "last.ckpt"
    refused = run_entry(["scripts/evaluate.py", f"checkpoint={ckpt}", "eval=[linear]"])
    assert refused.returncode != 0 and refused.stderr.strip().startswith(
        "error: data=unlabelled has no labelled images (needed by the probes' train split)")
    proc = run_entry(["scripts/evaluate.py", f"checkpoint={ckpt}", "eval=[linear]",
                      f"data.probe_root={folders['probe']}", f"data.test_root={folders['test']}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    linear = json.loads((run / "eval" / "linear.json").read_text())
    assert linear["n_test"] == 9 and 0 <= linear["top1"] <= 1


def test_a_run_with_labelled_folders_pretrains_and_probes(folders, tmp_path):
    proc = run_entry(["train.py", *SMALL, f"data.root={folders['photos']}", f"data.probe_root={folders['probe']}",
                      f"data.test_root={folders['test']}", "data.val_size=3", "eval=[linear]",
                      f"hydra.run.dir={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["global_step"] == 2 * (PHOTOS // 8) and summary["val/images"] == 3
    assert 0 <= summary["linear_probe_top1"] <= 1 and 0 <= summary["val/linear_probe_top1"] <= 1
    # the online probe never saw a label: no best.ckpt following its chance-level validation top-1
    assert summary["best_checkpoint"] is None and (tmp_path / "checkpoints" / "last.ckpt").exists()
