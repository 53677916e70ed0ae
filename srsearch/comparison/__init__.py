"""Comparing the searched model with baselines under the same training: `srsearch compare`,
its report, and the training-compute bookkeeping that makes the comparison fair."""
