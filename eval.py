"""Evaluate a checkpoint: ``python eval.py task=<task> data=<dataset> ckpt_path=<file>``."""

import hydra
from omegaconf import DictConfig

from core.resolvers import register_resolvers
from core.training import evaluate

register_resolvers()  # before @hydra.main composes the config


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
