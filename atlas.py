"""Build an activation atlas of a trained classifier: ``python atlas.py ckpt_path=<file> data=<dataset>``."""

import hydra
from omegaconf import DictConfig

from core.resolvers import register_resolvers
from tasks.atlas.run import build_atlas

register_resolvers()  # before @hydra.main composes the config


@hydra.main(version_base="1.3", config_path="conf", config_name="atlas")
def main(cfg: DictConfig) -> None:
    build_atlas(cfg)


if __name__ == "__main__":
    main()
