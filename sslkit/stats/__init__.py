"""Statistics and reports over runs: what scripts (``scripts/sweep_report.py``, the evaluation
CLI) only call. No torch import, so reports start in under a second.

- ``intervals``: mean and 95% t-interval of one setting's seeds, natural order of run names.
- ``compare``: differences between settings, paired over shared seeds or Welch, Holm's
  correction of a family, the verdict rule (with its predicted sign and the *within* label).
- ``identity``: which config keys make two runs the same experiment (all but the seed and a
  short documented list); refusal of a setting that holds one seed twice.
- ``power``: the design side: seeds a paired comparison needs for a difference, given the SD of
  the per-seed differences, the level, the power and the Holm family (``scripts/study_power.py``).
- ``aggregate``: evaluation results pooled over seeds, and compared (the evaluation CLI).
- ``runs``, ``sweep``: the runs of Hydra multiruns (or a ``runs.csv``) as a report's rows and
  comparisons; ``tables``, ``plots``: that report as tables, files and pictures.
- ``jsonio``: strict JSON (non-finite numbers as null).
"""

from sslkit.stats.compare import (
           apply_holm,
           bonferroni_interval,
           compare,
           contrast,
           holm,
           paired_contrast,
           verdict,
           welch_contrast,
)
from sslkit.stats.intervals import describe, mean_ci95, natural_key, t_quantile
from sslkit.stats.power import detectable_effect, halfwidth, paired_power, pooled_sd, required_seeds

__all__ = ["apply_holm", "bonferroni_interval", "compare", "contrast", "describe", "detectable_effect", "halfwidth", "holm",
           "mean_ci95", "natural_key", "paired_contrast", "paired_power", "pooled_sd", "required_seeds",
           "t_quantile", "verdict", "welch_contrast"]
