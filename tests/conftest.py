"""Fixtures that compose the real Hydra configs, with every path inside a temporary folder."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import core  # noqa: F401  (registers the config resolvers)
from core.resolvers import PROJECT_ROOT

CONFIG_DIR = PROJECT_ROOT / "conf"


def compose_config(
    config_name: str, overrides: list[str], output_dir: Path, data_dir: Optional[Path] = None
) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` as ``python <entry>.py <overrides>`` would, with the run
    directory at ``output_dir`` and, if given, the data sets under ``data_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir.parent / "logs")
        if data_dir is not None:
            cfg.paths.data_dir = str(data_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory) -> Path:
    """One data folder for the whole session, so each generated data set is written once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def cfg_train(tmp_path, shared_data_dir) -> Callable[..., DictConfig]:
    """``cfg_train(overrides, run_dir=None, data_dir=None)``: conf/train.yaml composed for a test."""

    def make(overrides: list[str], run_dir: Optional[Path] = None, data_dir: Optional[Path] = None):
        return compose_config("train", overrides, run_dir or tmp_path / "run", data_dir or shared_data_dir)

    return make


@pytest.fixture
def cfg_eval(tmp_path, shared_data_dir) -> Callable[..., DictConfig]:
    """``cfg_eval(overrides, run_dir=None, data_dir=None)``: conf/eval.yaml composed for a test."""

    def make(overrides: list[str], run_dir: Optional[Path] = None, data_dir: Optional[Path] = None):
        return compose_config("eval", overrides, run_dir or tmp_path / "eval", data_dir or shared_data_dir)

    return make


@pytest.fixture
def one_thread():
    """One intra-op thread for small CPU models: on a loaded 2-core machine two threads spin against
    each other (measured 6-20x slower). Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
