"""The entry points, above everything they call: a training run end to end (``run``), the
``train.py`` / ``sslkit-train`` and ``scripts/evaluate.py`` / ``sslkit-eval`` command lines,
and the Python API (``sslkit.train``, ``sslkit.compose``, ``sslkit.evaluate``)."""
