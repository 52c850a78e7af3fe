"""The detection track: ``module.py`` (OpenImagesDetectionTask, Faster R-CNN with the challenge's label rules)."""
