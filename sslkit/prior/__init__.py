"""Prior knowledge for decoupled uniformity's kernel: one ``[P]`` vector per pretraining sample.

``prior=labels|attributes|features|vae`` (configs/prior/) builds a source; :func:`setup_prior`
computes its ``[N, P]`` table for the stored training split and attaches it to the pretraining
split by each sample's original index, so batches carry a ``prior`` field (docs/priors.md).
"""
