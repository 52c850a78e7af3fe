"""What atlas.py does: build the data set, the network and the atlas from the config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from core.training import instantiate_group, seed_run
from tasks.atlas.builder import atlas_dataset


def build_atlas(cfg: DictConfig) -> dict[str, Any]:
    """Collect, lay out, render and write the atlas into the run directory; returns its summary."""
    seed_run(cfg)
    datamodule = instantiate(cfg.data)
    dataset = atlas_dataset(datamodule, cfg.atlas.split)
    stats = {k: list(getattr(datamodule, k)) for k in ("mean", "std") if hasattr(datamodule, k)}
    classifier = instantiate(cfg.model, **stats, _convert_="all")
    atlas = instantiate(cfg.atlas, _convert_="all")
    loggers = instantiate_group(cfg.get("logger"))
    summary = atlas.build(
        classifier, dataset, Path(cfg.paths.output_dir), getattr(datamodule, "class_names", ()), loggers
    )
    for logger in loggers:
        logger.finalize("success")
    return summary
