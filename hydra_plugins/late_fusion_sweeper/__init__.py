"""Hydra sweeper plugin: a late-fusion workflow, streams trained as parallel jobs, then one fusion job.

Select it with ``override /hydra/sweeper: late_fusion`` (conf/experiment/talnet_late_fusion.yaml).
"""
