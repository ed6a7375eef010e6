"""Evaluation: offline evaluators (``configs/eval/``, run by ``sslkit.eval.runner``) and online
monitors (``configs/monitor/``, Lightning callbacks), sharing feature extraction and maths."""
