"""The instance-segmentation track: ``module.py`` (OpenImagesSegmentationTask, Mask R-CNN on the detection task)."""
