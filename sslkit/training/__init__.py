"""Building and loading a training: the config tree and its checks (``config``, ``schema``),
the Lightning module (``module``), building module, data and Trainer from a config
(``build``), pre-flight checks, checkpoints, and export of a trained encoder. A service layer:
the evaluation, the priors and the command lines use it; it imports none of them."""
