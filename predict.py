"""Run a trained model on your own files:
``python predict.py task=<task> ckpt_path=<file> input=<file | folder | glob>``."""

import hydra
from omegaconf import DictConfig

import core  # noqa: F401  (registers the config resolvers)
from core.prediction import predict


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    predict(cfg)


if __name__ == "__main__":
    main()
