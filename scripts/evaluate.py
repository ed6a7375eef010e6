"""Evaluate sslkit checkpoints with the offline evaluators of configs/eval/.

    python scripts/evaluate.py checkpoint=runs/.../checkpoints/last.ckpt
    python scripts/evaluate.py checkpoint=PATH eval=[linear,knn,metrics] eval.knn.k=[10]
    python scripts/evaluate.py checkpoint=PATH eval=all
    python scripts/evaluate.py checkpoint=[seed0/checkpoints/last.ckpt,seed1/checkpoints/last.ckpt]

The same command is installed as ``sslkit-eval`` (sslkit/launch/eval_cli.py says what it does); from
Python: ``sslkit.evaluate(checkpoint, overrides=[...])``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sslkit.launch.eval_cli import main  # noqa: E402

if __name__ == "__main__":
    main()
