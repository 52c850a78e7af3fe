"""Compound-scaled baselines registered with timm: EfficientNet-B0, MobileNetV2 and ResNet-50.

Each constructor takes the baseline's ``width_multiplier`` / ``depth_multiplier`` (1.0 for the
paper's baselines; the B1-B7 settings; or a small CPU-sized baseline) and the compound-scaling
coefficients (``phi``, ``alpha``, ``beta``) that scale it further, applies the rounding rules of
``scaling.py`` stage by stage, and builds the network from timm's blocks (``EfficientNet`` with its
MBConv / inverted-residual builder, ``ResNet`` with ``Bottleneck``). The input resolution is not a
model argument: it reaches the data and the task through the ``compound_resolution`` resolver.
Registered names work with ``timm.create_model`` and hence with the classification task's
``task.backbone``, so checkpoints reload by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch.nn as nn
from timm.models import register_model
from timm.models._builder import build_model_with_cfg
from timm.models._efficientnet_builder import decode_arch_def
from timm.models._registry import generate_default_cfgs
from timm.models.efficientnet import EfficientNet
from timm.models.resnet import Bottleneck, ResNet, downsample_conv

from tasks.efficientnet.scaling import (
    EFFICIENTNET_FAMILY,
    EfficientNetSetting,
    resolve_multipliers,
    round_filters,
    round_repeats,
)

# timm's create_model hands these to every entrypoint; none applies to a model built from scratch.
_TIMM_FACTORY_ARGS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


# Registered before the entrypoints: timm attaches a model's default config when it is registered.
def _cfg(**kwargs: Any) -> dict:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        **kwargs,
    }


def _variant_cfg(setting: EfficientNetSetting) -> dict:
    """B0-B7 default config: native resolution, the reference evaluation crop, bicubic resizing."""
    size = setting.resolution
    return _cfg(
        input_size=(3, size, size),
        pool_size=(-(-size // 32),) * 2,
        crop_pct=round(setting.crop_pct, 4),
        first_conv="conv_stem",
        classifier="classifier",
    )


default_cfgs = generate_default_cfgs(
    {
        "compound_scaled_efficientnet": _cfg(first_conv="conv_stem", classifier="classifier"),
        "compound_scaled_mobilenetv2": _cfg(first_conv="conv_stem", classifier="classifier"),
        "compound_scaled_resnet50": _cfg(first_conv="conv1", classifier="fc"),
        **{f"compound_scaled_efficientnet_{name}": _variant_cfg(s) for name, s in EFFICIENTNET_FAMILY.items()},
    }
)


@dataclass(frozen=True)
class MBConvStage:
    """One stage of a mobile baseline: ``repeats`` blocks of kernel ``kernel``, first with ``stride``."""

    block: str  # "ds": depthwise-separable (expansion 1), "ir": inverted residual (MBConv)
    repeats: int
    kernel: int
    stride: int
    expansion: int
    channels: int
    se_ratio: float = 0.0

    def block_string(self, repeats: int) -> str:
        """The stage in timm's compact block notation, with the (already scaled) repeat count."""
        s = f"{self.block}_r{repeats}_k{self.kernel}_s{self.stride}_e{self.expansion}_c{self.channels}"
        return s + (f"_se{self.se_ratio:g}" if self.se_ratio else "")


# EfficientNet-B0, the paper's Table 1: MBConv1/MBConv6 stages with squeeze-excitation 0.25.
EFFICIENTNET_B0_STAGES = (
    MBConvStage("ds", 1, 3, 1, 1, 16, 0.25),
    MBConvStage("ir", 2, 3, 2, 6, 24, 0.25),
    MBConvStage("ir", 2, 5, 2, 6, 40, 0.25),
    MBConvStage("ir", 3, 3, 2, 6, 80, 0.25),
    MBConvStage("ir", 3, 5, 1, 6, 112, 0.25),
    MBConvStage("ir", 4, 5, 2, 6, 192, 0.25),
    MBConvStage("ir", 1, 3, 1, 6, 320, 0.25),
)
# MobileNetV2 (Sandler et al. 2018, Table 2): (t, c, n, s) inverted residuals, 3x3 depthwise, no SE.
MOBILENETV2_STAGES = (
    MBConvStage("ds", 1, 3, 1, 1, 16),
    MBConvStage("ir", 2, 3, 2, 6, 24),
    MBConvStage("ir", 3, 3, 2, 6, 32),
    MBConvStage("ir", 4, 3, 2, 6, 64),
    MBConvStage("ir", 3, 3, 1, 6, 96),
    MBConvStage("ir", 3, 3, 2, 6, 160),
    MBConvStage("ir", 1, 3, 1, 6, 320),
)
# ResNet-50 (He et al. 2016): bottleneck stages of (blocks, planes); outputs are 4 x planes.
RESNET50_LAYERS = (3, 4, 6, 3)
RESNET50_PLANES = (64, 128, 256, 512)


def scaled_block_args(stages: Sequence[MBConvStage], depth_multiplier: float) -> list:
    """timm block arguments for ``stages`` with each stage's repeats rounded up after scaling."""
    arch_def = [[stage.block_string(round_repeats(stage.repeats, depth_multiplier))] for stage in stages]
    return decode_arch_def(arch_def)


def _drop_factory_args(kwargs: dict) -> dict:
    if kwargs.get("pretrained"):
        raise ValueError(
            "compound-scaled models have no published weights; pass a local checkpoint as the "
            "task's pretrained_path instead"
        )
    return {k: v for k, v in kwargs.items() if k not in _TIMM_FACTORY_ARGS}


def _mobile_network(
    variant: str,
    stages: Sequence[MBConvStage],
    width: float,
    depth: float,
    act_layer: str,
    norm_layer: Any,
    num_features: int,
    **kwargs: Any,
) -> EfficientNet:
    round_chs = partial(round_filters, width_multiplier=width)
    return build_model_with_cfg(
        EfficientNet,
        variant,
        pretrained=False,
        block_args=scaled_block_args(stages, depth),
        num_features=num_features,
        stem_size=32,
        round_chs_fn=round_chs,
        act_layer=act_layer,
        norm_layer=norm_layer,
        **kwargs,
    )


@register_model
def compound_scaled_efficientnet(
    phi: float = 0.0,
    alpha: float = 1.2,
    beta: float = 1.1,
    width_multiplier: float = 1.0,
    depth_multiplier: float = 1.0,
    drop_rate: float = 0.2,
    drop_path_rate: float = 0.2,
    bn_momentum: float = 0.01,
    bn_eps: float = 1e-3,
    **kwargs: Any,
) -> EfficientNet:
    """EfficientNet-B0 with baseline multipliers (B1-B7 settings) scaled further by alpha^phi, beta^phi.

    Swish, squeeze-excitation, stochastic depth (``drop_path_rate``, 0.2 in the paper), dropout
    before the classifier (``drop_rate``). Batch norm as in the paper: decay 0.99 (PyTorch momentum
    0.01), eps 1e-3; runs of a few hundred steps want momentum 0.1, or the running statistics lag."""
    width, depth = resolve_multipliers(phi, alpha, beta, width_multiplier, depth_multiplier)
    return _mobile_network(
        "compound_scaled_efficientnet",
        EFFICIENTNET_B0_STAGES,
        width,
        depth,
        act_layer="swish",
        norm_layer=partial(nn.BatchNorm2d, eps=bn_eps, momentum=bn_momentum),
        num_features=round_filters(1280, width),
        drop_rate=drop_rate,
        drop_path_rate=drop_path_rate,
        **_drop_factory_args(kwargs),
    )


def _efficientnet_variant(name: str, setting: EfficientNetSetting):
    """The timm entrypoint of EfficientNet-``name``: B0 at the variant's width and depth multipliers,
    with its dropout; everything else as ``compound_scaled_efficientnet``."""

    def build(drop_rate: float = setting.dropout, **kwargs: Any) -> EfficientNet:
        kwargs = {"width_multiplier": setting.width, "depth_multiplier": setting.depth, **kwargs}
        model = compound_scaled_efficientnet(drop_rate=drop_rate, **kwargs)
        model.pretrained_cfg = model.default_cfg = default_cfgs[
            f"compound_scaled_efficientnet_{name}"
        ].default.to_dict()
        return model

    build.__name__ = build.__qualname__ = f"compound_scaled_efficientnet_{name}"
    build.__doc__ = (
        f"EfficientNet-{name.upper()} (width {setting.width}, depth {setting.depth}, "
        f"{setting.resolution} px, dropout {setting.dropout})."
    )
    return register_model(build)


for _name, _setting in EFFICIENTNET_FAMILY.items():
    globals()[f"compound_scaled_efficientnet_{_name}"] = _efficientnet_variant(_name, _setting)


@register_model
def compound_scaled_mobilenetv2(
    phi: float = 0.0,
    alpha: float = 1.2,
    beta: float = 1.1,
    width_multiplier: float = 1.0,
    depth_multiplier: float = 1.0,
    drop_rate: float = 0.2,
    drop_path_rate: float = 0.0,
    **kwargs: Any,
) -> EfficientNet:
    """MobileNetV2 scaled like EfficientNet (ReLU6, no SE); the head keeps at least 1280 channels
    as in the MobileNetV2 paper."""
    width, depth = resolve_multipliers(phi, alpha, beta, width_multiplier, depth_multiplier)
    return _mobile_network(
        "compound_scaled_mobilenetv2",
        MOBILENETV2_STAGES,
        width,
        depth,
        act_layer="relu6",
        norm_layer=nn.BatchNorm2d,
        num_features=max(1280, round_filters(1280, width)),
        drop_rate=drop_rate,
        drop_path_rate=drop_path_rate,
        **_drop_factory_args(kwargs),
    )


@register_model
def compound_scaled_resnet50(
    phi: float = 0.0,
    alpha: float = 1.2,
    beta: float = 1.1,
    width_multiplier: float = 1.0,
    depth_multiplier: float = 1.0,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    **kwargs: Any,
) -> ResNet:
    """ResNet-50 scaled like EfficientNet: blocks per stage rounded up, stem and bottleneck widths
    rounded to multiples of 8 (the paper's "scaling other networks", Table 3)."""
    width, depth = resolve_multipliers(phi, alpha, beta, width_multiplier, depth_multiplier)
    model = build_model_with_cfg(
        ResNet,
        "compound_scaled_resnet50",
        pretrained=False,
        block=Bottleneck,
        layers=tuple(round_repeats(n, depth) for n in RESNET50_LAYERS),
        channels=tuple(round_filters(c, width) for c in RESNET50_PLANES),
        drop_rate=drop_rate,
        drop_path_rate=drop_path_rate,
        **_drop_factory_args(kwargs),
    )
    _widen_stem(model, round_filters(64, width))
    return model


def _widen_stem(model: ResNet, stem_width: int) -> None:
    """Give the 7x7 stem ``stem_width`` channels. timm's ResNet fixes its plain stem at 64, so the
    stem, the first bottleneck's input convolution and its projection shortcut are rebuilt for the
    new width and initialized as timm initializes its ResNet."""
    if stem_width == model.conv1.out_channels:
        return
    model.conv1 = nn.Conv2d(model.conv1.in_channels, stem_width, 7, stride=2, padding=3, bias=False)
    model.bn1 = type(model.bn1)(stem_width)
    first = model.layer1[0]
    first.conv1 = nn.Conv2d(stem_width, first.conv1.out_channels, 1, bias=False)
    first.downsample = downsample_conv(stem_width, first.conv3.out_channels, kernel_size=1)
    model.feature_info[0]["num_chs"] = stem_width
    for conv in (model.conv1, first.conv1, first.downsample[0]):
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # as timm's ResNet
