"""Time the 2-D embedding libraries the t-SNE/UMAP picture can use, on the same 10k points.

    python scripts/bench_embedding.py                  # 10k Fashion-MNIST test images (PCA-50)
    python scripts/bench_embedding.py --n 2000 --out /tmp/e.json

Each library is timed once after a small warm-up fit (numba compiles UMAP's kernels on their
first call; the warm-up time is reported apart). One thread each. On a busy machine run it
twice, once with ``--tsne-first``, and compare the two orders.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


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

    return np.asarray(TSNE(n_components=2, random_state=0, n_jobs=1).fit(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--out", default="results/bench_embedding.json")
    parser.add_argument("--tsne-first", action="store_true", help="time openTSNE first")
    args = parser.parse_args()
    x, what = load_points(args.n, args.root)
    results = {"points": what, "load_average": os.getloadavg()[0]}
    order = [("umap-learn", run_umap), ("openTSNE", run_opentsne)]
    for name, fn in order[::-1] if args.tsne_first else order:
        t0 = time.perf_counter()
        fn(x[:500])
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        fn(x)
        fit = time.perf_counter() - t0
        results[name] = {"warmup_500_s": round(warm, 1), "fit_s": round(fit, 1)}
        print(name, results[name], flush=True)
    ratio = results["openTSNE"]["fit_s"] / results["umap-learn"]["fit_s"]
    results["openTSNE_over_umap"] = round(ratio, 2)
    print(json.dumps(results, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
