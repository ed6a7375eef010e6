"""Robust evaluation: attacks against closed-form worst cases of linear models, the sanity
properties of robust accuracy, gradients through the attacked model, the evaluator on a real
module, and ``scripts/evaluate.py 'eval=[robust]'`` end to end."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch
import torchattacks
from omegaconf import OmegaConf
from torch import nn

from sslkit.augment.pipeline import ViewAugment
from sslkit.errors import ConfigError
from sslkit.eval.robust import ImageClassifier, LinearHead, robust_accuracy
from tests.conftest import run_entry

ROOT = Path(__file__).resolve().parent.parent
EPS8 = 8 / 255


def linear_model(dim: int, classes: int, seed: int = 0, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    lin = nn.Linear(dim, classes).to(dtype)
    with torch.no_grad():
        lin.weight.normal_(0, 1.0 / dim**0.5)
        # decision boundaries through the middle of the [0, 1] box, where the test points lie
        lin.bias.copy_(-0.5 * lin.weight.sum(1) + 0.1 * torch.randn(classes, dtype=dtype))
    return nn.Sequential(nn.Flatten(), lin).eval()


def interior_images(n: int, dim: int, low: float, high: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (low + (high - low) * torch.rand(n, 1, 1, dim, generator=g)).double()


def margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """logit_y - logit_j for every class j ([N, C]; 0 at j = y)."""
    with torch.no_grad():
        z = model(x)
    return z.gather(1, y[:, None]) - z


# -- closed-form worst cases of a linear model ---------------------------------------------------
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_two_class_linear_attack_matches_closed_form(norm):
    """For logits W x + b with two classes the loss gradient always points along w_j - w_y, so
    PGD (no random start, enough steps) lands on the exact worst case inside the ball:
    l-inf x - eps * sign(w_y - w_j), margin reduced by eps * ||w_y - w_j||_1; l2 x - eps *
    (w_y - w_j) / ||w_y - w_j||_2, margin reduced by eps * ||w_y - w_j||_2."""
    dim = 64
    model = linear_model(dim, 2)
    x = interior_images(32, dim, 0.3, 0.7)
    y = torch.arange(32) % 2
    w = model[1].weight.detach()
    diff = w[y] - w[1 - y]  # w_y - w_j, [N, D]
    if norm == "linf":
        eps = EPS8
        attack = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=8, random_start=False)
        expected = x - eps * diff.sign().view_as(x)
        drop = eps * diff.abs().sum(1)
    else:
        eps = 0.5
        attack = torchattacks.PGDL2(model, eps=eps, alpha=eps / 4, steps=8, random_start=False)
        expected = x - eps * (diff / diff.norm(dim=1, keepdim=True)).view_as(x)
        drop = eps * diff.norm(dim=1)
    adv = attack(x, y)
    assert adv.dtype == torch.float64
    torch.testing.assert_close(adv, expected, atol=1e-8, rtol=0)
    before = margins(model, x, y).gather(1, (1 - y)[:, None]).squeeze(1)
    after = margins(model, adv, y).gather(1, (1 - y)[:, None]).squeeze(1)
    torch.testing.assert_close(before - after, drop, atol=1e-8, rtol=0)


def test_multiclass_linear_attack_bounded_by_closed_form():
    """Ten classes: no point of the l-inf ball lowers margin j below m_j - eps * ||w_y - w_j||_1,
    so PGD's adversarial margins respect that bound and PGD's accuracy is at least the exact
    robust accuracy (the fraction whose every bound stays positive); the closed-form worst point
    itself is misclassified exactly where the bound says."""
    dim, classes, eps = 64, 10, EPS8
    model = linear_model(dim, classes)
    x = interior_images(256, dim, 0.1, 0.9)
    with torch.no_grad():
        y = model(x).argmax(1)  # all clean-correct
    y[::7] = (y[::7] + 1) % classes  # some clean-wrong ones too
    w = model[1].weight.detach()
    l1 = (w[y][:, None, :] - w[None, :, :]).abs().sum(-1)  # [N, C]
    bound = margins(model, x, y) - eps * l1
    bound.scatter_(1, y[:, None], float("inf"))
    exact_robust = (bound > 0).all(1)
    adv = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=20, random_start=False)(x, y)
    assert (adv - x).abs().max() <= eps + 1e-12
    adv_margin = margins(model, adv, y)
    adv_margin.scatter_(1, y[:, None], float("inf"))
    assert (adv_margin >= bound - 1e-9).all()
    attacks = {"pgd": torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=20, random_start=False)}
    acc = robust_accuracy(model, attacks, [(x, y)], "cpu")
    assert acc["pgd"] >= exact_robust.double().mean().item() - 1e-12
    assert acc["pgd"] < acc["clean"]  # eps = 8/255 breaks some of them
    # the closed-form worst point of the most vulnerable class
    j = bound.argmin(1)
    worst = x - eps * (w[y] - w[j]).sign().view_as(x)
    with torch.no_grad():
        still_right = model(worst).argmax(1) == y
    assert torch.equal(still_right, exact_robust)


# -- sanity properties ----------------------------------------------------------------------------
def small_classifier(seed: int = 0, crop: int = 12) -> ImageClassifier:
    torch.manual_seed(seed)
    aug = ViewAugment(views=2, crop_size=crop, mean=(0.5,), std=(0.25,))
    enc = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(2), nn.Flatten())
    head = LinearHead(torch.zeros(32), torch.ones(32), 4)
    model = ImageClassifier(aug.eval_transform, enc, head)
    model.train()
    with torch.no_grad():  # give BatchNorm running statistics
        for _ in range(3):
            model(torch.rand(64, 1, 16, 16))
    return model.eval()


def labelled_batch(model: nn.Module, n: int = 128, seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, 16, 16), generator=g, dtype=torch.uint8)
    with torch.no_grad():
        y = model(x.float() / 255).argmax(1)
    y[::3] = (y[::3] + 1) % 4  # 2/3 clean-correct
    return x, y


def test_eps_zero_equals_clean_and_attacks_never_exceed_clean():
    model = small_classifier()
    x, y = labelled_batch(model)
    attacks = {
        "pgd0": torchattacks.PGD(model, eps=0.0, alpha=EPS8 / 4, steps=5, random_start=True),
        "l2_0": torchattacks.PGDL2(model, eps=0.0, alpha=0.1, steps=5, random_start=True),
        "fgsm0": torchattacks.FGSM(model, eps=0.0),
        "pgd8": torchattacks.PGD(model, eps=EPS8, alpha=EPS8 / 4, steps=10),
        "fgsm8": torchattacks.FGSM(model, eps=EPS8),
    }
    acc = robust_accuracy(model, attacks, [(x, y)], "cpu")
    assert acc["clean"] == pytest.approx(2 / 3, abs=0.02)
    assert acc["pgd0"] == acc["l2_0"] == acc["fgsm0"] == acc["clean"]
    assert acc["pgd8"] <= acc["clean"] and acc["fgsm8"] <= acc["clean"]
    assert acc["pgd8"] < acc["clean"]
    # an "attack" that moves each image towards its label (so it fixes clean mistakes) still
    # cannot lift them: robust means right on the clean point too
    lin = linear_model(64, 2)
    xl = interior_images(128, 64, 0.0, 1.0)
    yl = torch.randint(0, 2, (128,), generator=torch.Generator().manual_seed(4))
    w = lin[1].weight.detach()

    def helpful(images, labels):
        return (images + 0.5 * (w[labels] - w[1 - labels]).sign().view_as(images)).clamp(0, 1)

    acc = robust_accuracy(lin, {"helpful": helpful}, [(xl, yl)], "cpu")
    with torch.no_grad():
        raw = (lin(helpful(xl, yl)).argmax(1) == yl).double().mean().item()
    assert raw > acc["clean"] + 0.2 and acc["helpful"] == acc["clean"]


def test_more_steps_or_larger_eps_never_raise_accuracy():
    """On a fixed model, without random start: the two-class linear model provably (its
    attack direction never changes), and a small convnet at the evaluator's settings."""
    lin = linear_model(64, 2).float()
    xl = interior_images(256, 64, 0.0, 1.0).float()
    with torch.no_grad():
        yl = lin(xl).argmax(1)
    cnn = small_classifier()
    xc, yc = labelled_batch(cnn, n=256)
    for model, x, y in ((lin, xl, yl), (cnn, xc, yc)):
        eps_grid = [0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255]
        by_eps = robust_accuracy(model, {
            e: torchattacks.PGD(model, eps=e, alpha=e / 4, steps=10, random_start=False)
            for e in eps_grid}, [(x, y)], "cpu")
        seq = [by_eps[e] for e in eps_grid]
        assert all(a >= b for a, b in zip(seq, seq[1:])), seq
        assert seq[-1] < seq[0]
        steps_grid = [1, 2, 5, 10, 20]
        by_steps = robust_accuracy(model, {
            s: torchattacks.PGD(model, eps=4 / 255, alpha=1 / 255, steps=s, random_start=False)
            for s in steps_grid}, [(x, y)], "cpu")
        seq = [by_steps[s] for s in steps_grid]
        assert all(a >= b for a, b in zip(seq, seq[1:])), seq


def test_random_start_is_seeded():
    model = small_classifier()
    x, y = labelled_batch(model)
    attacks = {"pgd": torchattacks.PGD(model, eps=EPS8, alpha=EPS8 / 8, steps=2, random_start=True)}
    a = robust_accuracy(model, attacks, [(x, y)], "cpu", seed=5)
    torch.manual_seed(123)  # the global RNG does not matter
    b = robust_accuracy(model, attacks, [(x, y)], "cpu", seed=5)
    assert a == b


def test_apgd_ce_t_is_robust_only_where_both_attacks_fail():
    """The config's ``apgd_ce_t`` (torchattacks' APGD-CE, then APGD-T on what it left) on a
    ten-class linear model: an image counts as robust exactly where it is correct clean, after
    APGD-CE alone and after APGD-T alone (each torchattacks attack run here on the whole batch),
    so its accuracy is at most either's; at 4/255 APGD-T fools images APGD-CE does not."""
    from hydra.utils import instantiate

    from sslkit.eval.robust import build_attack, to_unit
    from sslkit.stats.summary import summary_entries

    cfg = robust_cfg()
    entry = cfg.attacks.apgd_ce_t
    assert "apgd_ce_t" in cfg.skip and entry.attacks.apgd_ce.loss == "ce"
    assert all(a.steps == 100 and a.n_restarts == 1 and a.eps == pytest.approx(EPS8) and a.norm == "Linf"
               for a in entry.attacks.values())
    # 20 steps at 4/255 instead of 100 at 8/255: a linear model is fooled everywhere at 8/255
    small = {"eps": 4 / 255, "steps": 20}
    factory = instantiate(entry, attacks={"apgd_ce": small, "apgd_t": small})
    model = linear_model(64, 10, dtype=torch.float32)
    x = to_unit(interior_images(128, 64, 0.3, 0.7).float())
    with torch.no_grad():
        y = model(x).argmax(1)
    y = torch.where(torch.arange(128) % 5 == 0, (y + 1) % 10, y)  # a fifth wrong clean
    chain = build_attack(factory, model, 10, seed=0)
    ce, t = (build_attack(factory.keywords["attacks"][k], model, 10, seed=0) for k in ("apgd_ce", "apgd_t"))
    assert type(t).__name__ == "APGDT" and t.n_target_classes == 9

    def robust(attack) -> torch.Tensor:
        with torch.no_grad():
            clean = model(x).argmax(1) == y
            return clean & (model(attack(x, y)).argmax(1) == y)

    both = robust(ce) & robust(t)
    assert torch.equal(robust(chain), both)
    acc = robust_accuracy(model, {"apgd_ce_t": chain, "apgd_ce": ce, "apgd_t": t}, [(x, y)], "cpu", seed=0)
    assert acc["apgd_ce_t"] == both.float().mean().item()
    assert acc["apgd_ce_t"] <= acc["apgd_ce"] and acc["apgd_ce_t"] <= acc["apgd_t"]
    assert acc["apgd_ce_t"] < acc["apgd_ce"] < acc["clean"]  # APGD-T adds to APGD-CE here
    # run by the evaluator once out of `skip`, and named eval/robust/<mode>/apgd_ce_t in summaries
    evaluator = instantiate(robust_cfg(skip="[autoattack]"))
    assert "apgd_ce_t" in evaluator.attacks and "autoattack" not in evaluator.attacks
    assert summary_entries({"robust": {"slf": acc}})["eval/robust/slf/apgd_ce_t"] == acc["apgd_ce_t"]
    with pytest.raises(ConfigError, match="at least two"):
        build_attack(instantiate(entry, attacks={"apgd_t": None}), model, 10)


def test_gradients_reach_the_input_through_normalisation_and_resize():
    """float64 gradcheck of image -> eval_transform (resize 16 -> 12, normalise) -> encoder ->
    head: the attacked model is differentiable in the input, as attacks need."""
    torch.manual_seed(0)
    aug = ViewAugment(views=2, crop_size=12, mean=(0.5,), std=(0.25,)).double()
    enc = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    enc = enc.double()
    head = LinearHead(torch.zeros(3), torch.ones(3), 4).double()
    model = ImageClassifier(aug.eval_transform, enc, head).eval()
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(model, (x,))
    cnn = small_classifier()
    x = torch.rand(4, 1, 16, 16, requires_grad=True)
    nn.functional.cross_entropy(cnn(x), torch.tensor([0, 1, 2, 3])).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# -- the evaluator on a real module ---------------------------------------------------------------
def robust_cfg(**overrides):
    cfg = OmegaConf.load(ROOT / "configs" / "eval" / "robust.yaml")
    cfg.merge_with_dotlist([f"{k}={v}" for k, v in overrides.items()])
    return cfg


def test_config_refuses_bad_modes_and_skips():
    from sslkit.training.build import instantiate

    with pytest.raises(ConfigError, match=r"choose from \['slf', 'alf', 'aff'\]"):
        instantiate(robust_cfg(modes="[slf,nope]"), "eval.robust")
    with pytest.raises(ConfigError, match="autoattack"):
        instantiate(robust_cfg(skip="[pgd]"), "eval.robust")
    with pytest.raises(ConfigError, match="init"):
        instantiate(robust_cfg(**{"alf.init": "zeros"}), "eval.robust")
    with pytest.raises(ConfigError, match=r"eval.robust.aff: unknown \['lrr'\]"):
        instantiate(robust_cfg(**{"aff.lrr": 0.1}), "eval.robust")


def smoke_module_and_data():
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from sslkit.training.build import build_datamodule, build_module

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=smoke"])
    with open_dict(cfg):
        cfg.logger = None  # its save_dir is Hydra's runtime dir, unset outside a run
    torch.manual_seed(0)
    module = build_module(cfg).eval()
    dm = build_datamodule(cfg)
    dm.setup("validate")
    return module, dm


def test_evaluator_modes_on_a_real_module(tmp_path):
    from hydra.utils import instantiate

    from sslkit.eval.context import EvalContext

    module, dm = smoke_module_and_data()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    evaluator = instantiate(robust_cfg(test_size=48, batch_size=32, **{
        # 100 epochs of one step: SLF's head on the untrained encoder well above chance (5 left it
        # at chance); ALF and AFF start from it
        "slf.epochs": 100, "alf.train_size": 32, "alf.batch_size": 16, "aff.train_size": 32,
        "aff.batch_size": 16, "attacks.pgd20_linf_8.steps": 3, "attacks.pgd20_linf_2.steps": 3,
        "attacks.pgd20_l2_0p5.steps": 3, "train_attack.steps": 2}))
    out = evaluator(EvalContext(module=module, datamodule=dm, run_dir=tmp_path, seed=0))
    assert set(out) == {"slf", "alf", "aff", "settings"}
    for mode in ("slf", "alf", "aff"):
        assert set(out[mode]) == {"clean", "pgd20_linf_8", "pgd20_linf_2", "pgd20_l2_0p5",
                                  "fgsm_linf_8"}
        assert all(0 <= v <= out[mode]["clean"] for v in out[mode].values())
        assert out[mode]["clean"] > 0.25  # 4 separable classes, chance 0.25
    assert out["settings"]["test_size"] == 48
    # AFF trains a copy: the pretrained module is left as it was
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    json.dumps(out)


def doc_commands() -> list[str]:
    """The commands of the ```bash blocks of docs/robust.md's "## Robust evaluation" section."""
    text = (ROOT / "docs" / "robust.md").read_text()
    section = text[text.index("## Robust evaluation"):]
    nxt = section.find("\n## ", 3)
    section = section if nxt < 0 else section[:nxt]
    blocks = section.split("```bash\n")[1:]
    return [ln for b in blocks for ln in b.split("```")[0].splitlines() if ln.strip()]


SMOKE = {  # appended to the documented commands: later key=value pairs win
    "train.py": ["experiment=smoke", "+trainer.limit_train_batches=2", "monitor.knn.every_n_epochs=0"],
    "scripts/evaluate.py": ["eval.robust.test_size=32", "eval.robust.alf.train_size=32",
                               "eval.robust.aff.train_size=32", "eval.robust.slf.epochs=5",
                               # 2 PGD steps instead of 20 (10 for adversarial training)
                               *(f"eval.robust.{a}.steps=2" for a in (
                                   "attacks.pgd20_linf_8", "attacks.pgd20_linf_2",
                                   "attacks.pgd20_l2_0p5", "train_attack",
                                   "attacks.apgd_ce_t.attacks.apgd_ce", "attacks.apgd_ce_t.attacks.apgd_t"))],
}


def test_documented_commands_run_at_smoke_scale(tmp_path):
    """Each command through its entry point in this process (``run_entry``)."""
    commands = doc_commands()
    assert [shlex.split(c)[1] for c in commands] == ["train.py"] + ["scripts/evaluate.py"] * 3
    run_dir = tmp_path / "fm1"
    for command in commands:
        command = command.replace("runs/fm1", str(run_dir))
        command = command.replace("/tmp/robust.json", str(tmp_path / "robust.json"))
        python, script, *args = shlex.split(command)
        assert python == "python"
        proc = run_entry([script, *args, *SMOKE[script]])
        assert proc.returncode == 0, (command, proc.stderr[-3000:])
    attacks = {"clean", "pgd20_linf_8", "pgd20_linf_2", "pgd20_l2_0p5", "fgsm_linf_8"}
    # the last command to write eval/robust.json ran SLF with AutoAttack and APGD-CE + APGD-T
    result = json.loads((run_dir / "eval" / "robust.json").read_text())
    assert set(result) == {"slf", "settings", "seconds"}
    assert set(result["slf"]) == attacks | {"autoattack", "apgd_ce_t"}
    assert all(v <= result["slf"]["clean"] for v in result["slf"].values())
    record = json.loads((tmp_path / "robust.json").read_text())
    assert record["checkpoint"] == str(run_dir / "checkpoints" / "last.ckpt") and record["epoch"] == torch.load(
        run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
    result = record["results"]["robust"]
    assert set(result) == {"slf", "alf", "aff", "settings", "seconds"} and set(result["alf"]) == attacks


def test_evaluate_refuses_bad_robust_settings_in_one_line(tmp_path):
    """In this process (``run_entry``); tests/test_evaluate.py runs a refusal of the command in
    a fresh interpreter."""
    missing = tmp_path / "none.ckpt"
    unread = tmp_path / "unread.ckpt"  # a file, so the settings are checked (before it is read)
    unread.write_bytes(b"not a checkpoint")
    for ckpt, args, needle in ((missing, [], "no such file"),
                               (unread, ["eval.robust.modes=[slf,xlf]"], "choose from ['slf', 'alf', 'aff']"),
                               (unread, ["eval.robust.skip=[pgd]"], "unknown attacks ['pgd']")):
        proc = run_entry(["scripts/evaluate.py", f"checkpoint={ckpt}", "eval=[robust]", *args])
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        assert proc.returncode != 0 and len(lines) == 1 and needle in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr


def test_adversarial_batchnorm_branch(tmp_path):
    """``bn_branches=[clean, adversarial]``: every mode through the clean layers and through the
    adversarial copies of dual-BN pretraining (ACL's ``--bnNameCnt 1``); the swap reaches the
    encoder's features and leaves the module as it was."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import open_dict

    from sslkit.eval.context import EvalContext
    from sslkit.eval.robust import adversarial_batchnorm
    from sslkit.training.build import build_datamodule, build_module

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=smoke", "adversarial=pgd",
                                          "adversarial.bn_mode=dual"])
    with open_dict(cfg):
        cfg.logger = None
    torch.manual_seed(0)
    module = build_module(cfg).eval()
    with torch.no_grad():  # adversarial copies unlike the clean layers
        for bn in module.robust.adv_bn.values():
            bn.running_mean.add_(0.5)
            bn.weight.mul_(2.0)
    dm = build_datamodule(cfg)
    dm.setup("validate")
    images = dm.split(dm.test_split).images[:8]
    before = {k: v.clone() for k, v in module.state_dict().items()}
    clean = module.features(images)
    with adversarial_batchnorm(module):
        adv = module.features(images)
        name = next(n for n in module.robust._bn_names if n.startswith("encoder."))
        assert torch.equal(module.online.get_submodule(name).running_mean,
                           before[f"robust.adv_bn.{name.replace('.', '__')}.running_mean"])
    assert not torch.allclose(clean, adv)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())

    evaluator = instantiate(robust_cfg(test_size=16, batch_size=16, modes="[slf]",
                                       bn_branches="[clean,adversarial]", **{
        "slf.epochs": 2, "attacks.pgd20_linf_8.steps": 1, "attacks.pgd20_linf_2.steps": 1,
        "attacks.pgd20_l2_0p5.steps": 1}))
    assert evaluator.result_keys == ("slf", "slf_adv_bn", "settings")
    out = evaluator(EvalContext(module=module, datamodule=dm, run_dir=tmp_path, seed=0))
    assert set(out) == {"slf", "slf_adv_bn", "settings"}
    assert out["settings"]["bn_branches"] == ["clean", "adversarial"]
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())

    plain, _ = smoke_module_and_data()  # no dual BN: the adversarial branch is refused
    with pytest.raises(ConfigError, match=r"adversarial.bn_mode=dual"):
        with adversarial_batchnorm(plain):
            pass
    from sslkit.training.build import instantiate as checked

    with pytest.raises(ConfigError, match=r"bn_branches=\['noisy'\]"):
        checked(robust_cfg(bn_branches="[noisy]"), "eval.robust")
