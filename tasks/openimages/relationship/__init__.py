"""The visual-relationship track: ``protocol.py`` (the challenge score, numpy, and the track's Kaggle
file), ``metrics.py`` (its torchmetrics wrapper), ``model.py`` (pair classifier on the shared detector)
and ``module.py`` (OpenImagesRelationshipTask). Kept import-free so the scoring command runs with numpy alone."""
