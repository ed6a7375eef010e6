"""Time the 2-D embedding libraries the t-SNE/UMAP picture can use, on the same 10k points
(the ``embedding`` section of scripts/bench.py, alone).

    python scripts/bench_embedding.py                  # 10k Fashion-MNIST test images (PCA-50)
    python scripts/bench_embedding.py --n 2000 --out /tmp/e.json
    python scripts/bench_embedding.py --libraries openTSNE   # one library only

On a busy machine run it twice, once with ``--tsne-first``, and compare the two orders.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.embedding import FITS, FMNIST_ROOT, measure  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--root", default=FMNIST_ROOT)
    parser.add_argument("--out", default="results/bench_embedding.json")
    parser.add_argument("--tsne-first", action="store_true", help="time openTSNE first")
    parser.add_argument("--libraries", nargs="+", choices=list(FITS), default=list(FITS),
                        help="which libraries to time (default: both)")
    args = parser.parse_args()
    results = measure(args.n, args.root, args.tsne_first, libraries=tuple(args.libraries))
    print(json.dumps(results, indent=2, default=float))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
