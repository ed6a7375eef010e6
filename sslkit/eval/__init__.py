"""Evaluation: feature extraction, linear probe, weighted kNN, and the callbacks using them."""
