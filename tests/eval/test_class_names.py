"""The embedding picture's legend names the classes (T-shirt/top, Trouser, ...) where the dataset
has names, and shows class ids where it has none."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sslkit.data.cifar import CIFAR10, CIFAR100
from sslkit.data.fashion_mnist import FashionMNIST
from sslkit.data.imagefolder import ImageFolder
from sslkit.data.stl10 import STL10
from sslkit.data.svhn import SVHN
from sslkit.data.synthetic import Synthetic
from sslkit.data.utzappos import UTZappos
from sslkit.eval import plots
from sslkit.eval.context import EvalContext
from sslkit.eval.plots import class_names, plot_embedding
from tests.conftest import make_fashion_mnist, make_image_folder


@pytest.mark.parametrize("cls,first,last", [
    (FashionMNIST, "T-shirt/top", "Ankle boot"), (CIFAR10, "airplane", "truck"),
    (CIFAR100, "apple", "worm"), (STL10, "airplane", "truck"), (SVHN, "0", "9"),
    (UTZappos, "Ankle", "Sneakers and Athletic Shoes"),
])
def test_datasets_name_their_classes_in_label_order(cls, first, last):
    names = class_names(cls())
    assert len(names) == cls.num_classes and names[0] == first and names[-1] == last
    assert len(set(names)) == len(names)


def test_image_folders_name_their_classes_and_synthetic_data_has_none(tmp_path):
    make_image_folder(tmp_path / "folder")  # cat, dog, eel
    dm = ImageFolder(root=str(tmp_path / "folder"), image_size=8, num_classes=None)
    dm.split("train")  # the class count is known once a split is read
    assert class_names(dm) == ["cat", "dog", "eel"]
    assert class_names(Synthetic(num_train=8, num_test=8)) is None


def test_the_legend_shows_names_or_ids():
    xy, y = np.random.default_rng(0).random((30, 2)), np.arange(30) % 3
    legend = plot_embedding(xy, y, "t", ["T-shirt/top", "Trouser", "Pullover"]).axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["T-shirt/top", "Trouser", "Pullover"]
    legend = plot_embedding(xy, y, "t").axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["0", "1", "2"]


def test_the_plots_evaluator_labels_fashion_mnist_by_name(tmp_path, monkeypatch):
    from sslkit.training.build import build_datamodule, build_module
    from sslkit.training.config import compose_config

    make_fashion_mnist(tmp_path / "data", n_train=64, n_test=40)
    cfg = compose_config("train", ["experiment=smoke", "data=fashion_mnist", f"data.root={tmp_path / 'data'}",
                                   "data.val_size=8", "logger=[]"])
    torch.manual_seed(0)
    module, dm = build_module(cfg).eval(), build_datamodule(cfg)
    dm.setup("validate")
    legends = []

    def recording(*args, **kwargs):  # the real figure; its legend's texts kept
        fig = real(*args, **kwargs)
        legends.append([t.get_text() for t in fig.axes[0].get_legend().get_texts()])
        return fig

    real = plots.plot_embedding
    monkeypatch.setattr(plots, "plot_embedding", recording)
    out = plots.Plots(max_points=100, n_jobs=1)(EvalContext(module=module, datamodule=dm, run_dir=tmp_path))
    present = sorted(set(dm.split("test").labels.tolist()))
    assert legends == [[FashionMNIST.class_names[c] for c in present]]
    with Image.open(tmp_path / out["files"]["embedding"]) as image:
        assert image.format == "PNG"
