"""task.pretrained: timm's published weights read from a Hugging Face cache in the hub's real layout,
offline (HF_HUB_OFFLINE=1), through the tasks' real configs (core/backbones.py)."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import constants as hub_constants
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from safetensors.torch import save_file

from core.backbones import PretrainedWeightsUnavailable, create_backbone
from core.checkpoint import read_checkpoint
from core.training import evaluate
from tests.helpers import run_entry

REVISION = "0123456789abcdef0123456789abcdef01234567"  # a commit hash, as refs/main holds


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache under tmp_path, offline, as on a compute node. Returns
    ``publish(weights, state)`` that stores ``state`` where the hub cache keeps timm's ``weights``."""
    home = tmp_path / "hf"
    cache = home / "hub"
    cache.mkdir(parents=True)
    for name, value in {"HF_HOME": home, "HF_HUB_CACHE": cache, "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(name, str(value))  # for child processes
    # huggingface_hub read the environment when it was imported: this process needs its constants set.
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)

    def publish(weights: str, state: dict[str, torch.Tensor]) -> Path:
        """models--timm--<name>/{blobs/<sha256>, snapshots/<rev>/model.safetensors -> blob, refs/main}:
        the layout hf_hub_download writes and reads."""
        repo = timm.models.get_pretrained_cfg(weights).hf_hub_id
        folder = cache / ("models--" + repo.replace("/", "--"))
        (folder / "blobs").mkdir(parents=True)
        staged = folder / "blobs" / "incoming"
        save_file({k: v.contiguous() for k, v in state.items()}, str(staged))
        blob = staged.rename(folder / "blobs" / hashlib.sha256(staged.read_bytes()).hexdigest())
        snapshot = folder / "snapshots" / REVISION
        snapshot.mkdir(parents=True)
        (snapshot / "model.safetensors").symlink_to(os.path.relpath(blob, snapshot))
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text(REVISION)
        return snapshot / "model.safetensors"

    return publish


def published_state(architecture: str, seed: int) -> dict[str, torch.Tensor]:
    """A 1000-class state dict of ``architecture`` whose values no fresh initialization reproduces."""
    generator = torch.Generator().manual_seed(seed)
    state = timm.create_model(architecture, pretrained=False).state_dict()
    return {k: torch.randn(v.shape, generator=generator).to(v.dtype) for k, v in state.items()}


def assert_loaded(state: dict[str, torch.Tensor], published: dict[str, torch.Tensor], skip: str = "\0") -> int:
    """Every tensor of ``state`` (but those starting with ``skip``) equals the published one; returns the count."""
    compared = 0
    for key, value in state.items():
        if key.startswith(skip) or key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(value, published[key]), key
        compared += 1
    return compared


SHAPES = ["data=shapes", "data.image_size=32"]


def test_task_pretrained_true_loads_the_published_weights_and_a_new_classifier(hub_cache, cfg_train, caplog):
    published = published_state("test_resnet", seed=1)
    hub_cache("test_resnet.r160_in1k", published)
    cfg = cfg_train([*SHAPES, "task.backbone=test_resnet", "task.pretrained=true"])
    with caplog.at_level(logging.INFO, logger="core.backbones"):
        task = instantiate(cfg.task, _convert_="all")
    state = task.model.state_dict()
    assert assert_loaded(state, published, skip="fc.") == len(published) - 2 - sum("num_batches" in k for k in state)
    # the 1000-way classifier does not fit the data set's classes: re-initialized, and said so
    assert state["fc.weight"].shape == (cfg.data.num_classes, published["fc.weight"].shape[1])
    assert not torch.equal(state["fc.weight"], published["fc.weight"][: cfg.data.num_classes])
    assert f"classifier fc has 1000 classes, the task {cfg.data.num_classes}: re-initialized" in caplog.text
    assert "starts from timm's published weights test_resnet.r160_in1k" in caplog.text


def test_a_pretrained_tag_selects_which_published_weights(hub_cache, cfg_train):
    ra = published_state("efficientnet_b0", seed=2)
    ra4 = published_state("efficientnet_b0", seed=3)
    hub_cache("efficientnet_b0.ra_in1k", ra)
    hub_cache("efficientnet_b0.ra4_e3600_r224_in1k", ra4)
    for tag, expected in [("ra4_e3600_r224_in1k", ra4), ("efficientnet_b0.ra_in1k", ra)]:  # bare and full tag
        cfg = cfg_train([*SHAPES, "task.backbone=efficientnet_b0", f"task.pretrained={tag}"])
        task = instantiate(cfg.task, _convert_="all")
        assert assert_loaded(task.model.state_dict(), expected, skip="classifier.") > 200


def test_offline_without_the_file_is_one_error_naming_it_and_both_remedies(hub_cache, cfg_train):
    cfg = cfg_train([*SHAPES, "task.backbone=test_resnet", "task.pretrained=true"])
    started = time.monotonic()
    with pytest.raises(InstantiationException) as err:
        instantiate(cfg.task, _convert_="all")
    assert time.monotonic() - started < 5
    cause = err.value.__cause__
    assert isinstance(cause, PretrainedWeightsUnavailable) and isinstance(cause, FileNotFoundError)
    message = str(cause)
    assert "\n" not in message
    assert "https://huggingface.co/timm/test_resnet.r160_in1k/blob/main/model.safetensors" in message
    assert f"not in the Hugging Face cache {hub_constants.HF_HUB_CACHE}" in message
    assert "HF_HUB_OFFLINE=1 forbids downloading it" in message
    assert "timm.create_model('test_resnet.r160_in1k', pretrained=True)" in message  # fill it on a login node
    assert "task.pretrained_path=<file>" in message


def test_an_unreachable_hub_fails_at_once_instead_of_retrying(hub_cache, monkeypatch):
    with socket.socket() as probe:  # a local port nobody listens on: the connection is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(PretrainedWeightsUnavailable, match=f"http://127.0.0.1:{port} is unreachable"):
        create_backbone("test_resnet", True, num_classes=3)
    assert time.monotonic() - started < 5  # huggingface_hub alone retries for ~25 s per file


def test_a_local_file_wins_over_the_published_weights(hub_cache, cfg_train, tmp_path):
    local = published_state("test_resnet", seed=4)
    torch.save(local, tmp_path / "mine.pth")
    cfg = cfg_train(
        [*SHAPES, "task.backbone=test_resnet", "task.pretrained=true", f"task.pretrained_path={tmp_path / 'mine.pth'}"]
    )
    task = instantiate(cfg.task, _convert_="all")  # the empty cache is never asked
    assert assert_loaded(task.model.state_dict(), local, skip="fc.") > 50


def test_an_unknown_tag_lists_the_published_ones(hub_cache):
    with pytest.raises(ValueError, match=r"no published weights 'test_resnet.nope'.*test_resnet.r160_in1k"):
        create_backbone("test_resnet", "nope")
    with pytest.raises(ValueError, match="task.pretrained_path=<file>"):
        create_backbone("tiny_vit_5m_224.nothing", True)


def test_efficientnet_transfer_recipe_starts_from_the_papers_imagenet_checkpoint(hub_cache, cfg_train, caplog):
    """The recipe's tf_efficientnet_b0.in1k (the paper's TF checkpoint as timm publishes it) loads into this
    project's compound_scaled_efficientnet: every tensor but the new 100-way head."""
    published = published_state("tf_efficientnet_b0", seed=5)
    hub_cache("tf_efficientnet_b0.in1k", published)
    cfg = cfg_train(["experiment=efficientnet_b0_cifar100", "data.image_size=32"])
    assert cfg.task.pretrained == "tf_efficientnet_b0.in1k" and cfg.task.pretrained_path is None
    with caplog.at_level(logging.WARNING):
        task = instantiate(cfg.task, _convert_="all")
    assert assert_loaded(task.model.state_dict(), published, skip="classifier.") == 309  # every conv, BN, SE tensor
    assert "timm weights tf_efficientnet_b0.in1k: 2 shape_mismatch keys" in caplog.text


def test_every_other_task_with_a_timm_backbone_loads_them(hub_cache, cfg_train):
    """Landmarks and Open Images (features_only bodies), a torchvision ResNet body, Photobooth, the atlas."""
    from tasks.atlas.network import load_classifier
    from tasks.openimages.model import faster_rcnn

    published = published_state("test_resnet", seed=6)
    hub_cache("test_resnet.r160_in1k", published)
    landmarks = instantiate(cfg_train(["experiment=landmarks_global"]).task, _convert_="all")
    assert assert_loaded(landmarks.descriptor.backbone.state_dict(), published) > 50
    cfg = cfg_train(
        ["experiment=openimages_detection", "task.detector.backbone=test_resnet", "task.detector.pretrained=true"]
    )
    detector = instantiate(cfg.task, _convert_="all")
    assert assert_loaded(detector.model.backbone.body.state_dict(), published) > 50
    atlas = load_classifier(backbone="test_resnet", num_classes=1000, pretrained=True)
    atlas_state = atlas.model.state_dict()
    assert assert_loaded(atlas_state, published) == sum(not k.endswith("num_batches_tracked") for k in atlas_state)

    resnet18 = published_state("resnet18", seed=8)  # timm's ResNet tensors are named as torchvision's
    hub_cache("resnet18.tv_in1k", resnet18)
    torchvision_body = faster_rcnn(3, backbone="resnet18", pretrained="tv_in1k").backbone.body
    assert assert_loaded(torchvision_body.state_dict(), resnet18) == 100  # 20 convs, 20 frozen BNs x 4

    mobilenet = published_state("mobilenetv3_small_050", seed=9)
    hub_cache("mobilenetv3_small_050.lamb_in1k", mobilenet)
    cfg = cfg_train(["experiment=photobooth_expression", "task.pretrained=true"])
    expression = instantiate(cfg.task, _convert_="all")
    assert assert_loaded(expression.model.backbone.state_dict(), mobilenet) > 100  # the 1000-way classifier dropped
    assert "classifier.weight" not in expression.model.backbone.state_dict()


@pytest.mark.slow  # ~35 s on 2 busy cores: a training subprocess and an evaluation
def test_train_py_reads_the_cache_from_the_environment_and_eval_needs_no_cache(
    hub_cache, small_data, shared_data_dir, cfg_eval, tmp_path, monkeypatch
):
    """The offline compute node: train.py sees HF_HUB_CACHE / HF_HUB_OFFLINE=1 only through its
    environment. Its checkpoint then evaluates where no cache is (the weights are the checkpoint's)."""
    published = published_state("test_resnet", seed=7)
    hub_cache("test_resnet.r160_in1k", published)
    run_dir = tmp_path / "run"
    data = [*small_data("shapes"), f"paths.data_dir={shared_data_dir}", "logger=csv"]
    task = ["task.backbone=test_resnet", "task.pretrained=true", "task.optimizer.lr=0.0"]  # lr 0: weights stay
    run = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false", f"hydra.run.dir={run_dir}"]
    proc = run_entry("train.py", [*data, *task, *run, "callbacks.rich_progress_bar=null"])
    assert "starts from timm's published weights test_resnet.r160_in1k" in proc.stdout + proc.stderr
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    saved = read_checkpoint(checkpoint)["state_dict"]
    network = {k[len("model.") :]: v for k, v in saved.items() if k.startswith("model.") and "running_" not in k}
    assert assert_loaded(network, published, skip="fc.") > 30  # BN running statistics moved; weights did not

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "no_cache_here"))
    metrics = evaluate(cfg_eval([*data, *task, f"ckpt_path={checkpoint}"], tmp_path / "eval"))
    assert "test/acc_top1" in metrics  # rebuilt from the checkpoint without asking the (empty) cache
