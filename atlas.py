"""Build an activation atlas of a trained classifier: ``python atlas.py ckpt_path=<file> data=<dataset>``."""

import hydra
from omegaconf import DictConfig

import core  # noqa: F401  (registers the config resolvers)
from tasks.atlas.run import build_atlas


@hydra.main(version_base="1.3", config_path="conf", config_name="atlas")
def main(cfg: DictConfig) -> None:
    build_atlas(cfg)


if __name__ == "__main__":
    main()
