"""Hydra sweeper plugin: the constrained (alpha, beta, gamma) grid of EfficientNet compound scaling.

Select it with ``override /hydra/sweeper: compound_scaling`` (conf/hparams_search/compound_scaling*.yaml).
"""
