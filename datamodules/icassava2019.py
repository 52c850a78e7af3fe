"""iCassava 2019 (FGVC6): five class folders under ``train/``, test images under ``test/0/``."""

from datamodules.fgvc.class_folders import ICassava2019DataModule

__all__ = ["ICassava2019DataModule"]
