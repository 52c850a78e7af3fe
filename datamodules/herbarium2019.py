"""Herbarium 2019 (FGVC6): class folders ``train/``, ``validation/``, flat ``test/``."""

from datamodules.fgvc.class_folders import Herbarium2019DataModule

__all__ = ["Herbarium2019DataModule"]
