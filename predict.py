"""Run a trained model on your own files:
``python predict.py task=<task> ckpt_path=<file> input=<file | folder | glob>``."""

import hydra
from omegaconf import DictConfig

from core.prediction import predict
from core.resolvers import register_resolvers

register_resolvers()  # before @hydra.main composes the config


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    predict(cfg)


if __name__ == "__main__":
    main()
