"""Robust contrastive pretraining: adversarial views (PGD), clean/adversarial divergences, SAM."""
