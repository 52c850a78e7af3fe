"""Open Images V5 challenge tracks, one sub-package each: ``detection/`` (Faster R-CNN),
``segmentation/`` (Mask R-CNN, a subclass of the detection task) and ``relationship/`` (a pair
classifier on the detector). Shared at this level: ``model.py`` (the region-CNN builder that every
track configures through one ``detector:`` dict, and the challenge's label-rule losses),
``protocol.py`` (the box and mask mAP core, numpy), ``metrics.py`` (its torchmetrics wrappers),
``submission.py`` (Kaggle files), ``evaluate.py`` (``python -m tasks.openimages.evaluate --track ...``)
and ``predict.py`` (the ProductWriters). The files' readers live in ``datamodules/openimages_*.py``.
Kept import-free so the scoring command runs with numpy alone."""
