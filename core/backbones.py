"""timm backbones with the published weights timm users get: ``task.pretrained=true`` (the backbone's
default weights) or a pretrained tag (``resnet50.tv_in1k``), through ``timm.create_model(...,
pretrained=True)``, its pretrained configs and the Hugging Face cache. An offline node reads the cache a
login node filled (``HF_HUB_OFFLINE=1``); a missing file is one error naming it, never a wait on the
network."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import timm
import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import get_session, try_to_load_from_cache
from huggingface_hub.errors import LocalEntryNotFoundError
from timm.models import get_pretrained_cfg, split_model_name_tag
from torch import nn

from core.weights import load_matching

log = logging.getLogger(__name__)

# Seconds to wait for the hub before calling it unreachable: a compute node without a route fails at
# once or times out here, instead of timm's download retrying for a minute per file.
PROBE_TIMEOUT_S = 5.0
# What timm asks the hub for when a config names no file: safetensors first, then the pickle.
HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")


class PretrainedWeightsUnavailable(FileNotFoundError):
    """The published weights are neither in the local cache nor downloadable from here."""


def published_name(backbone: str, pretrained: bool | str) -> str | None:
    """The timm ``architecture.tag`` whose weights ``pretrained`` asks for: None for False, the
    backbone itself for True (timm's default tag), ``<architecture>.<tag>`` for a bare tag."""
    if pretrained is False or pretrained is None or pretrained == "":
        return None
    if pretrained is True:
        name = backbone
    elif not isinstance(pretrained, str):
        raise TypeError(f"task.pretrained={pretrained!r}: expected true, false or a timm pretrained tag")
    elif "." in pretrained:
        name = pretrained
    else:
        name = f"{split_model_name_tag(backbone)[0]}.{pretrained}"
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:  # a tag the architecture does not have
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        architecture = split_model_name_tag(name)[0]
        known = timm.list_pretrained(f"{architecture}.*")
        hint = f"timm {timm.__version__} publishes {known[:8]}" if known else "timm publishes no weights for it"
        raise ValueError(
            f"task.pretrained={pretrained!r}: no published weights {name!r} ({hint}); "
            "pass a local file with task.pretrained_path=<file> instead"
        )
    return f"{cfg.architecture}.{cfg.tag}" if cfg.tag and cfg.architecture else name


def create_backbone(name: str, pretrained: bool | str = False, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, **kwargs)`` starting from the published weights ``pretrained`` names
    (see :func:`published_name`). A classifier of another size (``num_classes``) is re-initialized and
    logged. A tag of another architecture (e.g. ``tf_efficientnet_b0.in1k`` for this project's
    ``compound_scaled_efficientnet``) is built by timm and its same-named, same-shaped tensors copied."""
    weights = published_name(name, pretrained)
    if weights is None:
        return timm.create_model(name, pretrained=False, **kwargs)
    ensure_cached(weights)
    same_architecture = split_model_name_tag(weights)[0] == split_model_name_tag(name)[0]
    try:
        if same_architecture:
            model = timm.create_model(weights, pretrained=True, **kwargs)
        else:
            model = timm.create_model(name, pretrained=False, **kwargs)
            source = timm.create_model(weights, pretrained=True)
            load_matching(model, source.state_dict(), f"timm weights {weights}")
    except LocalEntryNotFoundError as err:  # the cache changed under us, or the hub went away mid-way
        raise PretrainedWeightsUnavailable(missing_message(weights, str(err).splitlines()[0])) from None
    log.info("Backbone %s starts from timm's published weights %s", name, weights)
    if same_architecture:
        log_new_classifier(weights, kwargs.get("num_classes"))
    return model


def log_new_classifier(weights: str, num_classes: int | None) -> None:
    """Say that timm left the classifier at its initialization (its loader only logs at debug level)."""
    cfg = get_pretrained_cfg(weights)
    if num_classes is None or not cfg.classifier or num_classes == cfg.num_classes:
        return
    if num_classes == 0:
        log.info("%s: classifier %s (%d classes) dropped (no classifier)", weights, cfg.classifier, cfg.num_classes)
        return
    log.warning(
        "%s: classifier %s has %d classes, the task %d: re-initialized (shape_mismatch keys, e.g. %s.weight)",
        weights,
        cfg.classifier,
        cfg.num_classes,
        num_classes,
        cfg.classifier,
    )


def hub_source(weights: str) -> tuple[str, str | None, tuple[str, ...]]:
    """(repository, revision, candidate files) of the hub copy timm reads for ``weights``."""
    cfg = get_pretrained_cfg(weights)
    repo, _, revision = cfg.hf_hub_id.partition("@")
    return repo, revision or None, (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HUB_FILENAMES


def ensure_cached(weights: str) -> None:
    """Return when timm can load ``weights`` from here: already cached, or the hub is reachable to
    download them. Otherwise raise :class:`PretrainedWeightsUnavailable` at once, naming the file."""
    cfg = get_pretrained_cfg(weights)
    if cfg.file:
        if not Path(cfg.file).is_file():
            raise PretrainedWeightsUnavailable(f"{cfg.file}: the weights file timm's config for {weights} names")
        return
    if from_torch_hub(cfg):  # timm's older download location, which it still prefers when filled
        if torch_hub_file(cfg.url).is_file():
            return
        server = cfg.url
    else:
        repo, revision, filenames = hub_source(weights)
        if any(isinstance(try_to_load_from_cache(repo, f, revision=revision), str) for f in filenames):
            return
        server = hub_constants.ENDPOINT
    problem = offline_reason(server)
    if problem:
        raise PretrainedWeightsUnavailable(missing_message(weights, problem))


def from_torch_hub(cfg: Any) -> bool:
    """Whether timm reads these weights from a URL through torch.hub (no hub copy, or one already
    downloaded there) rather than from the Hugging Face hub."""
    return bool(cfg.url) and (not cfg.hf_hub_id or torch_hub_file(cfg.url).is_file())


def torch_hub_file(url: str) -> Path:
    """Where torch.hub keeps a downloaded ``url`` (timm's older weights, before the hub)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def offline_reason(url: str) -> str | None:
    """Why nothing can be downloaded from ``url`` now (offline mode, or no answer within
    :data:`PROBE_TIMEOUT_S`), or None when its server answers."""
    if hub_constants.is_offline_mode():
        return "HF_HUB_OFFLINE=1 forbids downloading it"
    server = "{0.scheme}://{0.netloc}".format(urlparse(url))
    try:
        get_session().head(server, timeout=PROBE_TIMEOUT_S)
    except Exception as err:  # noqa: BLE001  (DNS, refused, timeout, proxy: any of them means no download)
        return f"{server} is unreachable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    return None


def missing_message(weights: str, problem: str) -> str:
    """One line: the file timm asked for, why it cannot be had, and the two ways to provide it."""
    cfg = get_pretrained_cfg(weights)
    if not from_torch_hub(cfg):
        repo, revision, filenames = hub_source(weights)
        where = f"{hub_constants.ENDPOINT}/{repo}/blob/{revision or 'main'}/{filenames[0]}"
        cache = f"the Hugging Face cache {hub_constants.HF_HUB_CACHE}"
    else:
        where, cache = cfg.url, f"the torch hub cache {torch_hub_file(cfg.url).parent}"
    fill = f"python -c \"import timm; timm.create_model('{weights}', pretrained=True)\""
    return (
        f"published weights {weights} ({where}) are not in {cache} and {problem}. Either fill the cache "
        f"on a machine with network (e.g. a login node: {fill}, with the same HF_HOME/HF_HUB_CACHE) and set "
        f"HF_HUB_OFFLINE=1 here, or pass a local weights file: task.pretrained_path=<file> task.pretrained=false"
    )
