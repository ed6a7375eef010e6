"""sslkit: self-supervised contrastive representation learning on Lightning + Hydra.

``sslkit.train(overrides=[...])`` runs what ``python train.py ...`` runs and returns its summary;
``sslkit.compose(overrides)`` gives the config it would use; ``sslkit.evaluate(checkpoint,
[...])`` runs what ``scripts/evaluate.py`` runs and returns its results;
``sslkit.from_pretrained(folder)`` returns the encoder of a model folder written by
``scripts/export.py format=hf``. Loss heads: ``sslkit.losses``.
"""

from __future__ import annotations

__all__ = ["train", "compose", "evaluate", "from_pretrained"]


def __getattr__(name: str):
    # lazy: `import sslkit` stays light for the CLI, which parses arguments before torch loads
    if name in __all__:
        from sslkit.launch import api

        return getattr(api, name)
    raise AttributeError(f"module 'sslkit' has no attribute {name!r}")
