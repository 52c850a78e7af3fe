"""Fixtures that compose the real Hydra configs, with every path inside a temporary folder."""

from __future__ import annotations

import ast
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


# Small generated copies of each data set: each data set's overrides live beside its DataModule's tests, as the
# dict literal ``SMALL_DATA`` of tests/datamodules/test_<module>.py; this gathers them. Take them through the
# ``small_data`` fixture (or this dict where a module-level list is needed).
def gather_small_data(folder: Path = PROJECT_ROOT / "tests" / "datamodules") -> dict[str, list[str]]:
    """Every ``SMALL_DATA = {name: overrides}`` of ``folder``'s test modules, merged. Read as a literal
    (ast), not imported: gathering runs no test module's imports, and those modules may import this one."""
    found: dict[str, list[str]] = {}
    for path in sorted(folder.glob("test_*.py")):
        for node in ast.parse(path.read_text(), str(path)).body:
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            if not any(isinstance(target, ast.Name) and target.id == "SMALL_DATA" for target in targets):
                continue
            for name, overrides in ast.literal_eval(node.value).items():
                if name in found:
                    raise ValueError(f"{path}: SMALL_DATA[{name!r}] is also declared in another test module")
                found[name] = list(overrides)
    return found


SMALL_DATA: dict[str, list[str]] = gather_small_data()


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
