"""Build an activation atlas of the trained network when training ends."""

from __future__ import annotations

import copy
from pathlib import Path

import pytorch_lightning as pl

from tasks.atlas.builder import ActivationAtlas, atlas_dataset
from tasks.atlas.network import IMAGENET_MEAN, IMAGENET_STD, Classifier


class BuildActivationAtlas(pl.Callback):
    """At the end of fit, on global rank 0, builds ``atlas`` of the task's network (``task.model``,
    copied, so training state is untouched) over the DataModule's images into
    ``<run dir>/<output_subdir>`` and logs its images to the run's loggers (core.media)."""

    def __init__(self, atlas: ActivationAtlas, output_subdir: str = "atlas") -> None:
        self.atlas = atlas
        self.output_subdir = output_subdir

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return
        datamodule = trainer.datamodule
        if datamodule is None:
            raise ValueError("BuildActivationAtlas needs the images of a DataModule: pass datamodule= to fit()")
        network = copy.deepcopy(getattr(pl_module, "model", pl_module)).cpu()
        classifier = Classifier(
            network, tuple(getattr(datamodule, "mean", IMAGENET_MEAN)), tuple(getattr(datamodule, "std", IMAGENET_STD))
        )
        dataset = atlas_dataset(datamodule, self.atlas.split)
        self.atlas.build(
            classifier,
            dataset,
            Path(trainer.default_root_dir) / self.output_subdir,
            getattr(datamodule, "class_names", ()),
            trainer.loggers,
        )
