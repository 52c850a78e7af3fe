"""Train any task on any compatible data set: ``python train.py task=<task> data=<dataset>``."""

import hydra
from omegaconf import DictConfig

from core.resolvers import register_resolvers
from core.training import monitored_value, train

register_resolvers()  # before @hydra.main composes the config


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return monitored_value(cfg, metrics)


if __name__ == "__main__":
    main()
