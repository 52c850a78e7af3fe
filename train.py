"""Train any task on any compatible data set: ``python train.py task=<task> data=<dataset>``."""

from typing import Optional

import hydra
from omegaconf import DictConfig

import core  # noqa: F401  (registers the config resolvers)
from core.training import monitored_value, train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> Optional[float]:
    metrics = train(cfg)
    return monitored_value(cfg, metrics)


if __name__ == "__main__":
    main()
