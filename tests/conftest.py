"""Fixtures that compose the real Hydra configs, with every path inside a temporary folder."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

# Tests never download weights (task.pretrained reads timm's from the Hugging Face cache, core/backbones.py):
# set before huggingface_hub is first imported (below, through timm), which reads it once; subprocesses inherit it.
os.environ["HF_HUB_OFFLINE"] = "1"

from core.resolvers import PROJECT_ROOT, register_resolvers  # noqa: E402

register_resolvers()  # every test composes the real configs
CONFIG_DIR = PROJECT_ROOT / "conf"

# Small generated copies of each data set: one place for the overrides every test shares. Take
# them through the ``small_data`` fixture (or this dict where a module-level list is needed).
SMALL_DATA: dict[str, list[str]] = {
    "shapes": [
        "data=shapes",
        "data.generator.train_per_class=12",
        "data.generator.val_per_class=4",
        "data.generator.test_per_class=4",
        "data.image_size=32",
        "data.num_workers=0",
        "data.batch_size=16",
    ],
    "cifar100": [
        "data=cifar100",
        "data.num_workers=0",
        "data.generator.train_per_class=3",
        "data.generator.test_per_class=1",
        "data.batch_size=32",
    ],
    "flowers102": [
        "data=flowers102",
        "data.num_workers=0",
        "data.image_size=32",
        "data.generator.train_per_class=1",
        "data.generator.val_per_class=1",
        "data.generator.test_per_class=1",
        "data.batch_size=32",
    ],
    "thumos14": [
        "data=thumos14",
        "data.generator.num_validation_videos=4",
        "data.generator.num_test_videos=3",
        "data.generator.min_duration=6",
        "data.generator.max_duration=9",
        "data.generator.size=32",
        "data.batch_size=2",
    ],
    "gldv2": [
        "data=gldv2",
        "data.generator.num_landmarks=5",
        "data.generator.train_per_landmark=6",
        "data.generator.index_per_landmark=2",
        "data.generator.test_per_landmark=2",
        "data.generator.index_distractors=3",
        "data.generator.test_distractors=3",
        "data.image_size=64",
        "data.batch_size=8",
    ],
    "mannequin_challenge": [
        "data=mannequin_challenge",
        "data.image_size=[48,64]",
        "data.batch_size=4",
        "data.generator.train_clips=2",
        "data.generator.validation_clips=1",
        "data.generator.test_clips=1",
        "data.generator.frames_per_clip=4",
        "data.generator.width=64",
        "data.generator.height=48",
    ],
}


def keyed_data_root(cfg: DictConfig) -> str | None:
    """``<data.root>-<hash of the generator's resolved arguments>`` for a data set that generates
    itself, so two tests that generate it differently never share (or race for) one folder, and
    test order cannot change what data a test sees. None without a root or a generator."""
    data = cfg.get("data")
    if data is None or data.get("root") is None or data.get("generator") is None:
        return None
    params = OmegaConf.to_container(data.generator, resolve=True)
    digest = hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{data.root}-{digest}"


def compose_config(
    config_name: str, overrides: list[str], output_dir: Path, data_dir: Path | None = None
) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` as ``python <entry>.py <overrides>`` would, with the run
    directory at ``output_dir`` and, if given, the data sets under ``data_dir``. Unless the
    overrides name ``data.root``, a generated data set's root is keyed on its generator's arguments
    (:func:`keyed_data_root`)."""
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
    if not any(o.lstrip("+").startswith("data.root=") for o in overrides):
        root = keyed_data_root(cfg)
        if root is not None:
            with open_dict(cfg):
                cfg.data.root = root
    return cfg


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory) -> Path:
    """One data folder for the whole session, so each generated data set is written once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def small_data(shared_data_dir, tmp_path_factory) -> Callable[[str], list[str]]:
    """``small_data(name)``: the overrides of a small generated copy of data set ``name`` (a key of
    :data:`SMALL_DATA`), with ``data.root`` pinned to its keyed folder in the session's data folder,
    so the same list works for ``cfg_train`` and for train.py / eval.py run as subprocesses (with
    ``paths.data_dir`` set to ``shared_data_dir``)."""

    def make(name: str) -> list[str]:
        overrides = list(SMALL_DATA[name])
        cfg = compose_config("train", overrides, tmp_path_factory.mktemp("compose"), shared_data_dir)
        return [*overrides, f"data.root={cfg.data.root}"]

    return make


@pytest.fixture
def cfg_train(tmp_path, shared_data_dir) -> Callable[..., DictConfig]:
    """``cfg_train(overrides, run_dir=None, data_dir=None)``: conf/train.yaml composed for a test."""

    def make(overrides: list[str], run_dir: Path | None = None, data_dir: Path | None = None):
        return compose_config("train", overrides, run_dir or tmp_path / "run", data_dir or shared_data_dir)

    return make


@pytest.fixture
def cfg_eval(tmp_path, shared_data_dir) -> Callable[..., DictConfig]:
    """``cfg_eval(overrides, run_dir=None, data_dir=None)``: conf/eval.yaml composed for a test."""

    def make(overrides: list[str], run_dir: Path | None = None, data_dir: Path | None = None):
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
