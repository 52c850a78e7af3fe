"""The network an atlas looks into: a classification checkpoint of this project, or a timm model
with a local weights file, and one of its layers found by module path."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn
from typing_extensions import Self

from core.backbones import create_backbone
from core.weights import load_pretrained

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Classifier:
    """An eval-mode classifier and the input statistics its images were normalized with."""

    model: nn.Module
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def num_classes(self) -> int:
        return int(getattr(self.model, "num_classes", 0))


def load_classifier(
    ckpt_path: str | None = None,
    backbone: str | None = None,
    weights_path: str | None = None,
    num_classes: int | None = None,
    backbone_kwargs: dict | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    pretrained: bool | str = False,
) -> Classifier:
    """Load the network from a checkpoint of the classification task (``ckpt_path``), or build
    ``timm.create_model(backbone)`` and load ``weights_path`` into it, or else timm's published weights
    (``pretrained``: true or a tag, from the Hugging Face cache; core.backbones)."""
    if ckpt_path:
        model = _network_from_checkpoint(Path(ckpt_path))
    elif backbone:
        kwargs = dict(backbone_kwargs or {})
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        model = create_backbone(backbone, False if weights_path else pretrained, **kwargs)
        if weights_path:
            load_pretrained(model, weights_path)
    else:
        raise ValueError("give ckpt_path (a classification checkpoint) or backbone (a timm model name)")
    model.eval().requires_grad_(False)
    return Classifier(model, tuple(mean), tuple(std))


def _network_from_checkpoint(path: Path) -> nn.Module:
    """The ``task.model`` of a classification checkpoint (ImageClassificationTask or a subclass such
    as the EfficientNet task), rebuilt from its saved hyper-parameters and ``model.*`` weights, so
    any task class that trains a timm classifier works."""
    from core.checkpoint import URL_SCHEME, read_checkpoint
    from core.registry import register_models

    if not URL_SCHEME.match(str(path)) and not path.exists():
        raise FileNotFoundError(f"ckpt_path={path}: no such checkpoint file")
    checkpoint = read_checkpoint(path)
    hparams = checkpoint.get("hyper_parameters") or {}
    missing = [k for k in ("backbone", "num_classes") if k not in hparams]
    if missing:
        raise ValueError(f"{path}: not a classification checkpoint (hyper-parameters lack {missing})")
    register_models()
    model = timm.create_model(
        hparams["backbone"],
        pretrained=False,
        num_classes=hparams["num_classes"],
        **(hparams.get("backbone_kwargs") or {}),
    )
    state = {k[len("model.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    return model


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """The sub-module at module path ``name`` (as in ``named_modules``, e.g. ``blocks.5``); a wrong
    name raises with the nearest existing names."""
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return modules[name]
    names = [n for n in modules if n]
    near = difflib.get_close_matches(name, names, n=8, cutoff=0.4)
    if not near:  # fall back to the top-level blocks so the user sees the naming scheme
        near = [n for n in names if "." not in n][:8]
    raise KeyError(f"layer {name!r} not found in {type(model).__name__}; nearest names: {near}")


class LayerTap:
    """Records the output of one layer on every forward pass (a forward hook), for collection and
    for the feature-visualization objective.

    With ``grad_leaf`` the output is cut from the graph below it and kept as ``leaf``, a tensor
    that requires grad, so logits can be differentiated with respect to the layer's activations
    of a frozen network; a copy of it flows on, so in-place ops downstream do not touch the leaf."""

    def __init__(self, model: nn.Module, layer: str, grad_leaf: bool = False) -> None:
        self.layer_name = layer
        self.grad_leaf = grad_leaf
        self.output: torch.Tensor | None = None
        self.leaf: torch.Tensor | None = None
        self._handle = find_layer(model, layer).register_forward_hook(self._record)

    def _record(self, module, inputs, output):
        if isinstance(output, (tuple, list)):
            if self.grad_leaf:
                raise ValueError(f"layer {self.layer_name!r} returns a tuple; pick a layer with one tensor output")
            output = output[0]
        if not self.grad_leaf or not torch.is_grad_enabled():
            self.output = output.clone()  # a later in-place op (ReLU(inplace=True)) must not change it
            return None
        self.leaf = output.detach().requires_grad_(True)
        self.output = self.leaf.clone()
        return self.output

    def remove(self) -> None:
        self._handle.remove()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def spatial_view(output: torch.Tensor) -> torch.Tensor:
    """A layer output as (B, C, P): channels first, P spatial positions (H*W of a feature map, the
    tokens of a transformer block, or 1 for a vector)."""
    if output.dim() == 4:  # (B, C, H, W)
        return output.flatten(2)
    if output.dim() == 3:  # (B, N, C) tokens
        return output.transpose(1, 2)
    if output.dim() == 2:
        return output.unsqueeze(-1)
    raise ValueError(f"cannot take activations from a layer output of shape {tuple(output.shape)}")
