"""Pictures of a run: the head recorder, the plots evaluator on smoke runs, its data readers."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from sslkit.errors import CheckpointError
from sslkit.eval.loading import context_from_checkpoint
from sslkit.training.checkpoint import run_dir_of
from sslkit.eval.plots import Plots, embed_2d, plan_of, read_metrics
from sslkit.eval.recorders import load_records
from tests.conftest import copy_run, train_run

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cacr_run(cacr_session_run) -> Path:
    """The session's CACR smoke run with records at epochs 0, 1 and 2 (read-only)."""
    return cacr_session_run


@pytest.fixture(scope="module")
def gca_run(tmp_path_factory) -> Path:
    """GCA-InfoNCE, 3 short epochs (2 steps each), records every 2 epochs and at the end."""
    return train_run(tmp_path_factory.mktemp("gca"), "experiment=smoke", "threads=1", "loss=gca_ince",
                     "trainer.max_epochs=3", "+trainer.limit_train_batches=2",
                     "monitor.knn.every_n_epochs=0", "eval.linear.max_iter=50",
                     "monitor.recorder.every_n_epochs=2")


def assert_picture(path: Path) -> None:
    assert path.exists() and path.stat().st_size > 0, path
    image = imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 100
    assert image[..., :3].std() > 0.05, f"{path} is blank"


def test_recorder_writes_records_at_the_chosen_epochs(cacr_run, gca_run):
    cacr = load_records(cacr_run)
    assert [r["epochs_done"] for r in cacr] == [0, 1, 2]  # before training, every epoch
    assert [r["step"] for r in cacr] == [0, 8, 16]
    gca = load_records(gca_run)
    assert [r["epochs_done"] for r in gca] == [0, 2, 3]  # every 2 epochs and the last
    rec = cacr[-1]
    assert rec["head"] == "CACR" and rec["views"] == 2
    b = rec["batch"]
    assert rec["labels"].shape == (b,)
    t = rec["tensors"]
    assert t["neg_pair_weight"].shape == t["neg_pair_sqdist"].shape == (1, b, b)
    # each query's negative weights are a distribution over the other instances
    torch.testing.assert_close(t["neg_pair_weight"].sum(-1), torch.ones(1, b))
    assert (t["neg_pair_weight"].diagonal(dim1=-2, dim2=-1) == 0).all()
    assert (t["neg_pair_sqdist"] >= 0).all() and (t["neg_pair_sqdist"] <= 4 + 1e-5).all()
    # the same fixed batch every time, and the weights change as the encoder trains
    assert all(torch.equal(r["labels"], rec["labels"]) for r in cacr)
    assert not torch.allclose(cacr[0]["tensors"]["neg_pair_weight"], t["neg_pair_weight"])


def test_recorder_leaves_training_unchanged(cacr_run, tmp_path):
    plain = train_run(tmp_path / "plain", "experiment=smoke", "threads=1", "loss=cacr")
    a = torch.load(cacr_run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(plain / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for key in a:  # weights and BatchNorm running statistics alike
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert not (plain / "records").exists()


def test_plots_of_a_cacr_smoke_run(cacr_run, tmp_path):
    cacr_run = copy_run(cacr_run, tmp_path / "cacr")  # the pictures are written into the run dir
    ctx = context_from_checkpoint(cacr_run / "checkpoints" / "last.ckpt", device="cpu")
    out = Plots(method="tsne", n_jobs=1)(ctx)
    assert set(out["files"]) == {"embedding", "curves", "weights"}
    assert "plan" in out["skipped"]
    for rel in out["files"].values():
        assert_picture(cacr_run / rel)
    assert out["files"]["embedding"] == "plots/embedding_tsne.png"
    assert out["embedding_points"] == len(ctx.labelled("test")[0])


def test_plots_of_a_gca_smoke_run(gca_run, tmp_path):
    gca_run = copy_run(gca_run, tmp_path / "gca")  # the pictures are written into the run dir
    ctx = context_from_checkpoint(gca_run / "checkpoints" / "last.ckpt", device="cpu")
    out = Plots(method="tsne", max_points=100, n_jobs=1)(ctx)
    assert set(out["files"]) == {"embedding", "curves", "plan"}
    assert out["embedding_points"] == 100
    for rel in out["files"].values():
        assert_picture(gca_run / rel)


def test_recorded_plan_is_the_heads_plan(gca_run):
    rec = load_records(gca_run)[-1]
    plan, mu, nu, labels = plan_of(rec)
    n = rec["batch"] * rec["views"]
    assert plan.shape == (n, n) and labels.shape == (n,)
    # gca_ince: unit marginals; 10 Sinkhorn iterations leave the rows and columns close to them
    np.testing.assert_allclose(mu, 1.0), np.testing.assert_allclose(nu, 1.0)
    np.testing.assert_allclose(plan.sum(0), nu, rtol=1e-4)
    np.testing.assert_allclose(plan.sum(1), mu, rtol=1e-3)
    row_err = np.abs(plan.sum(1) - mu).sum() / mu.sum()
    assert row_err == pytest.approx(rec["scalars"]["plan_row_err"], rel=1e-3, abs=1e-6)


def test_plots_without_records_or_metrics_say_why(tmp_path):
    from types import SimpleNamespace

    x = torch.randn(40, 5) + torch.arange(40)[:, None] % 2 * 5
    y = torch.arange(40) % 2
    ctx = SimpleNamespace(run_dir=tmp_path, labelled=lambda split: (x, y),
                          datamodule=SimpleNamespace(name="toy"), module=None)
    out = Plots(method="tsne", n_jobs=1)(ctx)
    assert out["files"] == {"embedding": "plots/embedding_tsne.png"}
    assert "recorder" in out["skipped"]["weights"] and "metrics.csv" in out["skipped"]["curves"]
    assert_picture(tmp_path / out["files"]["embedding"])


def test_read_metrics_drops_empty_cells(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train/loss,val/knn_top1,lr-AdamW\n"
                    "0,0,2.5,,0.1\n0,1,2.0,,0.2\n0,1,,0.5,\n1,3,nan,0.75,0.3\n")
    series = read_metrics(path)
    assert set(series) == {"train/loss", "val/knn_top1", "lr-AdamW"}
    np.testing.assert_array_equal(series["train/loss"][0], [0, 1])
    np.testing.assert_array_equal(series["train/loss"][1], [2.5, 2.0])
    np.testing.assert_array_equal(series["val/knn_top1"][0], [1, 3])
    np.testing.assert_array_equal(series["val/knn_top1"][1], [0.5, 0.75])


def test_embedding_subsamples_with_a_seed():
    x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    y = np.arange(300) % 3
    xy, y_used = embed_2d(x, y, "tsne", 120, 15, "cosine", 1, seed=0)
    assert xy.shape == (120, 2) and np.isfinite(xy).all()
    _, again = embed_2d(x, y, "tsne", 120, 15, "cosine", 1, seed=0)
    np.testing.assert_array_equal(y_used, again)


def test_umap_branch_passes_the_settings_and_the_subsample(monkeypatch):
    """embed_2d's UMAP branch with a stand-in for umap-learn (whose numba kernels take tens of
    seconds to compile): the settings and the seeded subsample reach ``umap.UMAP``, its 2-D map
    comes back with the kept labels, and n_neighbors shrinks below the number of points."""
    import sys
    from types import SimpleNamespace

    made = []

    class UMAP:
        def __init__(self, **kwargs):
            self.kwargs = kwargs
            made.append(self)

        def fit_transform(self, x):
            self.x = x
            return x[:, :2] * 2

    monkeypatch.setitem(sys.modules, "umap", SimpleNamespace(UMAP=UMAP))
    x = np.random.default_rng(0).normal(size=(300, 8))
    y = np.arange(300) % 3
    xy, y_used = embed_2d(x, y, "umap", 120, 15, "cosine", 1, seed=0)
    (reducer,) = made
    assert reducer.kwargs == {"n_components": 2, "n_neighbors": 15, "metric": "cosine", "random_state": 0,
                              "n_jobs": 1}
    assert reducer.x.dtype == np.float32 and reducer.x.flags.c_contiguous and reducer.x.shape == (120, 8)
    keep = np.sort(np.random.default_rng(0).permutation(300)[:120])
    np.testing.assert_array_equal(reducer.x, x[keep].astype(np.float32))
    np.testing.assert_array_equal(y_used, y[keep])
    np.testing.assert_array_equal(xy, x[keep, :2].astype(np.float32) * 2)
    embed_2d(x[:10], y[:10], "umap", 120, 15, "euclidean", 2, seed=3)
    assert made[-1].kwargs == {"n_components": 2, "n_neighbors": 9, "metric": "euclidean", "random_state": 3,
                               "n_jobs": 2}


@pytest.mark.slow  # umap-learn itself (numba compilation); fast twin: test_umap_branch_passes_the_settings_and_the_subsample
def test_umap_embedding():
    x = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    xy, _ = embed_2d(x, np.zeros(200), "umap", 10_000, 15, "cosine", 1, seed=0)
    assert xy.shape == (200, 2) and np.isfinite(xy).all()


class _Refuse:
    """A ``sys.meta_path`` finder that records and refuses every import of ``name``."""

    def __init__(self, name: str) -> None:
        self.name, self.asked = name, []

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] == self.name:
            self.asked.append(fullname)
            raise ImportError(f"{fullname} refused by the test")
        return None


def test_tsne_builds_opentsnes_auto_affinities_without_pynndescent(monkeypatch):
    """embed_2d's t-SNE equals openTSNE's own ``TSNE.fit(x)`` (its neighbours="auto": exact
    search below 1,000 points, Annoy from 1,000 on, for these metrics), and never makes openTSNE
    import pynndescent, whose numba kernels take a minute to compile in a new environment."""
    from openTSNE import TSNE
    from openTSNE.affinity import MultiscaleMixture

    from sslkit.eval.plots import tsne_affinities

    refuse = _Refuse("pynndescent")
    monkeypatch.delitem(sys.modules, "pynndescent", raising=False)
    monkeypatch.setattr(sys, "meta_path", [refuse, *sys.meta_path])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    xy, _ = embed_2d(x, np.zeros(60), "tsne", 10_000, 15, "cosine", 1, seed=3)
    ours = {(n, metric): tsne_affinities(rng.normal(size=(n, 8)).astype(np.float32), 30.0, metric, 1, 0)
            for n in (999, 1000) for metric in ("cosine", "euclidean")}
    assert refuse.asked == []
    assert type(ours[999, "cosine"].knn_index).__name__ == "Sklearn"
    assert type(ours[1000, "cosine"].knn_index).__name__ == "Annoy"
    assert tsne_affinities(x, 19.7, "chebyshev", 1, 0) is None  # openTSNE chooses for the rest
    # openTSNE's own choice, taken where pynndescent is missing (for these metrics it is the same)
    perplexity = (60 - 1) / 3.0
    reference = TSNE(n_components=2, perplexity=perplexity, metric="cosine", random_state=3, n_jobs=1)
    np.testing.assert_array_equal(xy, np.asarray(reference.fit(x)))
    rng = np.random.default_rng(0)
    rng.normal(size=(60, 8))
    for (n, metric), affinities in ours.items():
        data = rng.normal(size=(n, 8)).astype(np.float32)
        theirs = MultiscaleMixture(data, 30.0, metric=metric, n_jobs=1, random_state=0)
        assert (affinities.P != theirs.P).nnz == 0, (n, metric)


def test_unknown_method_and_foreign_checkpoint_are_refused(tmp_path):
    with pytest.raises(ValueError, match="umap, tsne"):
        Plots(method="pca")
    foreign = tmp_path / "run" / "checkpoints" / "last.ckpt"
    foreign.parent.mkdir(parents=True)
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not written by sslkit"):
        context_from_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="no such file"):
        context_from_checkpoint(tmp_path / "missing.ckpt")
    assert run_dir_of(foreign) == (tmp_path / "run").resolve()


def test_tensor_logs_stay_out_of_the_nonfinite_message():
    from sslkit.losses.cacr import CACR
    from sslkit.parts.guard import NonFiniteError, NonFiniteGuard

    z = torch.randn(4, 2, 3)
    z[0, 0, 0] = float("nan")
    out = CACR()(z)
    with pytest.raises(NonFiniteError) as err:
        NonFiniteGuard("stop").should_skip("loss", "epoch 0 step 0", {"loss": out.loss, **out.logs},
                                           None)
    message = str(err.value)
    assert "attraction=" in message and "neg_pair_weight" not in message
    assert "tensor(" not in message and len(message.splitlines()) == 1


def test_pictures_go_to_an_attached_wandb_logger(tmp_path, monkeypatch):
    import lightning as L
    from lightning.pytorch.loggers import WandbLogger

    from sslkit.eval.plots import plot_embedding, save
    from sslkit.runtime.loggers import log_pictures

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(project="sslkit-test", save_dir=str(tmp_path), offline=True)
    trainer = L.Trainer(logger=logger, enable_checkpointing=False, enable_progress_bar=False)
    png = save(plot_embedding(np.random.rand(20, 2), np.arange(20) % 2, "toy"), tmp_path / "e.png", 50)
    assert log_pictures(trainer.loggers, {"embedding": png}) == ["wandb"]
    logger.experiment.finish()
    logged = list((tmp_path / "wandb").rglob("media/images/plots/embedding_*.png"))
    assert len(logged) == 1 and logged[0].stat().st_size > 0
    # no logger that shows pictures (the csv logger; scripts/evaluate.py has none): no error
    assert log_pictures([], {"embedding": png}) == []
