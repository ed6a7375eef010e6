"""``embedding`` section: fit time of the 2-D embedding libraries the t-SNE/UMAP picture can use
(umap-learn, openTSNE), on the same points (Fashion-MNIST test images, PCA to 50 dims).

Each library is timed after a small warm-up fit (numba compiles UMAP's kernels on their first
call; the warm-up time is reported apart). One thread each. ``scripts/bench_embedding.py`` runs
this section alone with its own options.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks.timing import Series

RATIO_KEY = "ratio_to_umap"
FMNIST_ROOT = "/usr/share/datasets/fashion-mnist"


def load_points(n: int, root: str) -> tuple[np.ndarray, str]:
    path = Path(root) / "t10k-images-idx3-ubyte.gz"
    if path.exists():
        from sslkit.data.idx import read_idx

        x = read_idx(path).reshape(-1, 784).float().numpy()[:n] / 255.0
        what = f"{len(x)} Fashion-MNIST test images"
    else:
        x = np.random.default_rng(0).normal(size=(n, 784)).astype(np.float32)
        what = f"{n} Gaussian points (Fashion-MNIST not found at {root})"
    from sklearn.decomposition import PCA

    return PCA(50, random_state=0).fit_transform(x).astype(np.float32), what + ", PCA to 50 dims"


def run_umap(x: np.ndarray) -> np.ndarray:
    import umap

    return umap.UMAP(n_components=2, random_state=0, n_jobs=1).fit_transform(x)


def run_opentsne(x: np.ndarray) -> np.ndarray:
    from openTSNE import TSNE

    from sslkit.eval.plots import tsne_affinities

    # TSNE(...).fit(x) exactly, with the affinities built as sslkit's plots build them: without
    # the pynndescent import (and its numba compilation) openTSNE makes to pick its index
    affinities = tsne_affinities(x, 30.0, "euclidean", 1, 0)
    return np.asarray(TSNE(n_components=2, random_state=0, n_jobs=1).fit(x, affinities=affinities))


FITS = {"umap-learn": run_umap, "openTSNE": run_opentsne}


def measure(n: int, root: str = FMNIST_ROOT, tsne_first: bool = False, repeats: int = 1,
            libraries: tuple[str, ...] = tuple(FITS)) -> dict:
    x, what = load_points(n, root)
    warm_n = min(500, len(x))
    fits = {name: FITS[name] for name in FITS if name in libraries}
    series = {name: Series(name, len(x), unit="points", threads=1) for name in fits}
    warmup = {}
    order = list(fits)[::-1] if tsne_first else list(fits)
    for name in order:
        t0 = time.perf_counter()
        fits[name](x[:warm_n])
        warmup[name] = round(time.perf_counter() - t0, 2)
    for _ in range(repeats):
        for name in order:
            t0 = time.perf_counter()
            fits[name](x)
            series[name].add(time.perf_counter() - t0)
    umap_series = series.get("umap-learn")
    rows = [series[name].record(None if name == "umap-learn" else umap_series, RATIO_KEY)
            for name in fits]
    for row in rows:
        row[f"warmup_{warm_n}_seconds"] = warmup[row["name"]]
    return {
        "title": "2-D embeddings: points/s of umap-learn and openTSNE fits (one thread each)",
        "settings": {"points": what, "order": order,
                     "note": "ratio_to_umap < 1: openTSNE slower than UMAP; warm-up fits (numba "
                             "compilation) excluded"},
        "rows": rows,
    }


def section_embedding(args, device) -> dict:
    return measure(300 if args.quick else 10_000, repeats=1 if args.quick else args.repeats)


run = section_embedding
