"""Configs refuse what they do not understand: unknown keys, mistyped and out-of-range values
are one line naming key, value and what is expected, before any work."""

from __future__ import annotations


import pytest

import sslkit
from sslkit.training.config import config_dir
from sslkit.data.fashion_mnist import FashionMNIST
from sslkit.data.imagefolder import ImageFolder
from sslkit.data.synthetic import Synthetic
from sslkit.errors import ConfigError, DataError
from sslkit.training.schema import validate
from tests.conftest import make_image_folder

# every option of every group (sweeps and Hydra's own aside): a new config file is checked as
# soon as it exists
GROUPS = sorted(p.name for p in config_dir().iterdir() if p.is_dir() and p.name not in ("hydra", "sweep"))
OPTIONS = [f"{g}={p.stem}" for g in GROUPS for p in sorted((config_dir() / g).glob("*.yaml"))]


@pytest.mark.parametrize("option", OPTIONS)
def test_every_shipped_option_passes_its_schema(option, tmp_path):
    # image-folder datasets have no default root (???): any path composes, nothing is read
    extra = ["data.root=/nowhere"] if option.startswith("data=") else []
    cfg, _, _ = sslkit.compose([option, *extra], run_dir=tmp_path)
    validate(cfg)


@pytest.mark.parametrize("override,message", [
    ("trainer.max_epochs=ten", "trainer.max_epochs='ten': expected an int >= 1"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0: expected an int >= 1"),
    ("data.batch_size=0", "data.batch_size=0: expected an int >= 1"),
    ("data.val_size=0", "data.val_size=0: expected an int >= 1 or null"),
    ("augment.flip_p=1.5", "augment.flip_p=1.5: expected a number in [0, 1]"),
    ("optim.optimizer.lr=-1", "optim.optimizer.lr=-1: expected a number > 0"),
    ("loss.temperature=0", "loss.temperature=0: expected a number > 0"),
    ("encoder.widths=[a,b]", "encoder.widths=['a', 'b']: expected a list of ints"),
    ("threads=two", "threads='two': expected one of 'auto' or an int >= 1"),
    ("checkpoint.every_n_train_steps=0", "checkpoint.every_n_train_steps=0: expected an int >= 1"),
    ("trainer.precision=banana", "trainer.precision='banana': expected 'auto' or one of"),
    ("matmul_precision=low", "matmul_precision='low': expected one of 'highest', 'high', 'medium'"),
    ("+data.bacth_size=64", "unknown key data.bacth_size: Synthetic has no parameter 'bacth_size'; "
                            "did you mean batch_size"),
    ("+trainer.max_epoch=3", "did you mean max_epochs"),
    ("+loss.foo=1", "unknown key loss.foo: InfoNCE has no parameter 'foo'; it takes chunk_size, normalize, temperature"),
    ("+model.projector.hidden=3", "unknown key model.projector.hidden"),
    ("+monitor.knn.kk=3", "unknown key monitor.knn.kk"),
    ("+eval.callbacks.knn.every_n_epochs=5", "eval.callbacks is not an evaluator (no _target_)"),
])
def test_bad_values_are_refused_by_name(override, message, tmp_path):
    cfg, _, _ = sslkit.compose(["experiment=smoke", "loss=infonce", override], run_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_api_refuses_before_writing_anything(tmp_path):
    with pytest.raises(ConfigError, match="expected an int >= 1"):
        sslkit.train(["experiment=smoke", "trainer.max_epochs=ten"], run_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="unknown loss 'nope'; choose one of: .*infonce"):
        sslkit.train(["loss=nope"], run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_data_modules_refuse_unknown_and_contradicting_keys(tmp_path):
    with pytest.raises(TypeError, match="bacth_size"):
        FashionMNIST(bacth_size=64)
    with pytest.raises(ConfigError, match="data.num_classes=5 contradicts fashion_mnist.*num_classes=10"):
        FashionMNIST(num_classes=5)
    with pytest.raises(ConfigError, match="data.image_size=32 contradicts fashion_mnist"):
        FashionMNIST(image_size=32)
    with pytest.raises(ConfigError, match=r"data.mean=\[0.1, 0.2\] has 2 values for 1 channel"):
        FashionMNIST(mean=[0.1, 0.2])
    FashionMNIST(in_chans=1, image_size=28, num_classes=10, mean=[0.3], std=[0.3])
    # where the values are free parameters of the dataset they are taken, and must agree
    assert Synthetic(in_chans=3, mean=[0.5] * 3, std=[0.2] * 3).in_chans == 3
    with pytest.raises(ConfigError, match="data.std"):
        Synthetic(in_chans=3, std=[0.2])
    make_image_folder(tmp_path)  # 3 classes
    with pytest.raises(DataError, match="data.num_classes=5 but .* has 3 class folders; set data.num_classes=3"):
        ImageFolder(root=str(tmp_path), image_size=8, num_classes=5).split("train")
    assert ImageFolder(root=str(tmp_path), image_size=8, num_classes=None).split("train") is not None


def test_cli_prints_one_line_and_starts_nothing(tmp_path):
    from tests.test_train import one_line_error, train

    msg = one_line_error(train("experiment=smoke", "trainer.max_epochs=ten", f"hydra.run.dir={tmp_path}"))
    assert msg == "error: trainer.max_epochs='ten': expected an int >= 1"
    msg = one_line_error(train("experiment=smoke", "data=fashion_mnist", "data.num_classes=5",
                               f"hydra.run.dir={tmp_path}"))
    assert "data.num_classes=5 contradicts fashion_mnist" in msg
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("switch", ["adversarial=null", "adversarial=none"])
def test_optional_groups_switch_off_a_recipes_choice(switch, tmp_path):
    cfg, _, _ = sslkit.compose(["experiment=robust_fmnist", switch], run_dir=tmp_path)
    assert cfg.adversarial is None
    validate(cfg)
    cfg, _, _ = sslkit.compose(["experiment=smoke", "adversarial=pgd", "adversarial/divergence=gan",
                                "adversarial/divergence=null", "prior=null"], run_dir=tmp_path)
    assert cfg.adversarial.divergence is None and cfg.prior is None and cfg.adversarial._target_
    # the GPU recipe's ACL baseline (its header's command): no divergence left behind
    cfg, _, _ = sslkit.compose(["experiment=robust_cifar10", "adversarial/divergence=none",
                                "adversarial.sam_rho=0"], run_dir=tmp_path)
    assert cfg.adversarial.divergence is None and cfg.adversarial.sam_rho == 0


def test_null_for_a_required_group_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="unknown data 'null'; choose one of: cifar10"):
        sslkit.compose(["data=null"], run_dir=tmp_path)


def test_a_recipes_evaluator_settings_survive_leaving_the_evaluator_out(tmp_path):
    # robust_fmnist sets eval.robust.* and selects robust; eval=[knn] leaves it out: its settings
    # stay behind without a _target_ and are not an error (the runner skips them)
    cfg, _, _ = sslkit.compose(["experiment=robust_fmnist", "eval=[knn]"], run_dir=tmp_path)
    assert "_target_" not in cfg.eval.robust and "_target_" in cfg.eval.knn
    validate(cfg)
