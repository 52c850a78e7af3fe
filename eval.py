"""Evaluate a checkpoint: ``python eval.py task=<task> data=<dataset> ckpt_path=<file>``."""

import hydra
from omegaconf import DictConfig

import core  # noqa: F401  (registers the config resolvers)
from core.training import evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
