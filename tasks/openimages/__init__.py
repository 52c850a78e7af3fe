"""Open Images V5 challenge tracks: detection, instance segmentation and visual relationships; the
challenge metrics (numpy cores + torchmetrics wrappers) and Kaggle submission files. The files' readers
live in ``datamodules/openimages_*.py``."""
