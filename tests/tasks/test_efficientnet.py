"""Compound scaling: rounding rules, scaled baselines, B0-B7 against the paper, the grid's constraint."""

from __future__ import annotations

import json
import math

import pytest
import timm
import torch

from core.registry import register_models
from tasks.efficientnet import table
from tasks.efficientnet.complexity import count_macs, measure_backbone
from tasks.efficientnet.grid import Candidate, compound_candidates, grid_values, sweep_candidates
from tasks.efficientnet.scaling import (
    EFFICIENTNET_FAMILY,
    round_filters,
    round_repeats,
    round_resolution,
    satisfies_constraint,
)
from tests.conftest import compose_config

register_models()  # the compound_scaled_* timm models (core.registry)


# --- rounding rules, worked by hand -----------------------------------------------------------
@pytest.mark.parametrize(
    "channels, width, expected",
    [
        (32, 1.1, 32),  # 35.2 -> nearest multiple of 8 is 32, and 32 >= 0.9 * 35.2 = 31.68
        (40, 1.1, 48),  # 44.0 -> (44 + 4) // 8 * 8 = 48
        (112, 1.1, 120),  # 123.2 -> 120 (>= 110.9)
        (192, 1.1, 208),  # 211.2 -> 208
        (1280, 1.1, 1408),  # exact multiple stays
        (44, 0.25, 16),  # 11 -> nearest is 8, but 8 < 0.9 * 11 = 9.9, so one step up: 16
        (16, 0.25, 8),  # 4 -> never below the divisor
        (24, 1.4, 32),  # 33.6 -> 32 (>= 30.24)
    ],
)
def test_round_filters(channels, width, expected):
    assert round_filters(channels, width) == expected


@pytest.mark.parametrize(
    "repeats, depth, expected",
    [(3, 1.2, 4), (1, 1.1, 2), (2, 1.1, 3), (4, 1.0, 4), (2, 0.5, 1), (3, 0.5, 2), (4, 3.1, 13)],
)
def test_round_repeats_rounds_up(repeats, depth, expected):
    assert round_repeats(repeats, depth) == expected


@pytest.mark.parametrize(
    "base, multiplier, expected",
    [
        (224, 1.15, 256),  # 257.6 -> nearest multiple of 4 is 256
        (224, 1.15**2, 296),  # 296.24 -> 296
        (224, math.sqrt(2), 316),  # 316.78 -> 316
        (48, 1.15, 56),  # 55.2 -> 56
        (224, 1.0, 224),
    ],
)
def test_round_resolution(base, multiplier, expected):
    assert round_resolution(base, multiplier) == expected


# --- scaled networks ------------------------------------------------------------------------------
def test_efficientnet_phi1_stages_follow_the_rounding_rules():
    """B0 at phi = 1 (alpha 1.2, beta 1.1): repeats ceil(1.2 r), channels round_filters(c, 1.1)."""
    with torch.device("meta"):
        model = timm.create_model("compound_scaled_efficientnet", phi=1, alpha=1.2, beta=1.1)
    assert [len(stage) for stage in model.blocks] == [2, 3, 3, 4, 4, 5, 2]  # from 1, 2, 2, 3, 3, 4, 1
    out_channels = [
        stage[-1].conv_pw.out_channels if hasattr(stage[-1], "conv_pwl") is False else stage[-1].conv_pwl.out_channels
        for stage in model.blocks
    ]
    assert out_channels == [16, 24, 48, 88, 120, 208, 352]
    assert model.conv_stem.out_channels == 32 and model.conv_head.out_channels == 1408


def test_resnet50_phi1_layers_and_widths():
    with torch.device("meta"):
        model = timm.create_model("compound_scaled_resnet50", phi=1, alpha=1.2, beta=1.1)
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [4, 5, 8, 4]  # ceil(1.2 x 3, 4, 6, 3)
    assert model.conv1.out_channels == 72  # 70.4 -> 72
    # bottleneck planes 64, 128, 256, 512 x 1.1 -> 72, 144, 280, 560; outputs are 4 x planes
    assert [getattr(model, f"layer{i}")[-1].conv3.out_channels for i in range(1, 5)] == [288, 576, 1120, 2240]


@pytest.mark.parametrize(
    "name, params_m, gmacs",
    # The unscaled baselines: MobileNetV2 3.5M / 0.30B and ResNet-50 25.6M / 4.1B (paper Table 3).
    [("compound_scaled_mobilenetv2", 3.5, 0.30), ("compound_scaled_resnet50", 25.6, 4.1)],
)
def test_baselines_match_their_papers(name, params_m, gmacs):
    c = measure_backbone(name, 224)
    assert c.params_m == pytest.approx(params_m, rel=0.02)
    assert c.gmacs == pytest.approx(gmacs, rel=0.02)


@pytest.mark.parametrize(
    "name", ["compound_scaled_efficientnet", "compound_scaled_mobilenetv2", "compound_scaled_resnet50"]
)
def test_tiny_variant_trains_every_parameter(name):
    torch.manual_seed(0)
    # ResNet zero-initializes each block's last BN, which would leave its branch without gradient.
    extra = {"zero_init_last": False} if "resnet" in name else {}
    model = timm.create_model(name, num_classes=5, width_multiplier=0.25, depth_multiplier=0.34, phi=1, **extra)
    logits = model(torch.randn(2, 3, 40, 40))
    assert logits.shape == (2, 5)
    logits.logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_flop_counter_counts_a_convolution_exactly():
    """One 3x3 conv, 3 -> 8 channels, stride 1, 'same' padding, 10x10 input: 10*10*8*3*3*3 MACs."""
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False))
    assert count_macs(conv, 10) == 10 * 10 * 8 * 3 * 3 * 3


# --- B0-B7 through their experiment configs, against the paper's Table 2 --------------------------
@pytest.mark.parametrize("name", sorted(EFFICIENTNET_FAMILY))
def test_b_configs_match_paper_table2(name, tmp_path):
    cfg = compose_config("train", [f"experiment=efficientnet_{name}"], tmp_path)
    paper = EFFICIENTNET_FAMILY[name]
    assert cfg.data.image_size == paper.resolution and cfg.task.image_size == paper.resolution
    assert cfg.task.drop_rate == paper.dropout and cfg.data.num_classes == 1000
    assert cfg.task.backbone == f"compound_scaled_efficientnet_{name}"
    kwargs = dict(cfg.task.backbone_kwargs)
    assert kwargs == {"bn_momentum": 0.01, "bn_eps": 0.001}
    # the timm variant carries the same facts: native resolution, evaluation crop, bicubic
    default = timm.get_pretrained_cfg(cfg.task.backbone).to_dict()
    assert default["input_size"] == (3, paper.resolution, paper.resolution) and default["interpolation"] == "bicubic"
    assert cfg.data.crop_pct == pytest.approx(default["crop_pct"], abs=1e-4)
    model = timm.create_model(cfg.task.backbone, num_classes=10)
    assert model.drop_rate == paper.dropout and model.bn1.momentum == 0.01 and model.bn1.eps == 1e-3
    c = measure_backbone(cfg.task.backbone, cfg.data.image_size, num_classes=cfg.task.num_classes, **kwargs)
    assert c.params_m == pytest.approx(paper.paper_params_m, rel=0.02)
    # Multiply-adds: the paper rounds to 2 digits and B4's 4.2B is 4.4B in its own released models.
    assert c.gmacs == pytest.approx(paper.paper_gmacs, rel=0.05)


def test_table_command_prints_and_writes_json(tmp_path, capsys):
    out = tmp_path / "table.json"
    rows = table.main(["--phi", "0", "1", "--no-family", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "efficientnet_phi1" in printed and "efficientnet_phi0" in printed
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(rows))
    phi0, phi1 = written
    assert (phi0["resolution"], phi1["resolution"]) == (224, 256)
    assert phi0["params_m"] == pytest.approx(5.29, abs=0.01)
    # alpha * beta^2 * gamma^2 = 1.92 in theory; rounding (256 px, widths, ceil depths) gives ~2.2x
    assert 1.8 < phi1["gmacs"] / phi0["gmacs"] < 2.4


# --- the grid and its constraint --------------------------------------------------------------
def test_constraint_filter():
    assert satisfies_constraint(1.2, 1.1, 1.15)  # 1.920, within 0.1 of 2
    assert not satisfies_constraint(1.2, 1.1, 1.15, tolerance=0.05)
    assert not satisfies_constraint(1.2, 1.2, 1.2)  # 2.488
    assert not satisfies_constraint(0.9, 1.2, 1.25)  # 2.025, but alpha < 1
    assert satisfies_constraint(2.0, 1.0, 1.0, tolerance=0.0)


def test_compound_candidates_on_a_hand_enumerated_grid():
    """Of the 18 triples, only three satisfy the constraint: (1.2, 1.1, 1.15) with 1.920, and the
    depth-only (2, 1, 1) and resolution-only (1, 1, 1.4142) corners, which are not compound."""
    found = compound_candidates([1.0, 1.2, 2.0], [1.0, 1.1], [1.0, 1.15, 1.4142], tolerance=0.1)
    assert found == [Candidate(1.2, 1.1, 1.15, 1.0)]


def test_grid_values_and_sweep_order():
    assert grid_values("1.0:1.4:0.1") == [1.0, 1.1, 1.2, 1.3, 1.4]
    runs = sweep_candidates(
        "1.0:1.4:0.1",
        "1.0:1.4:0.1",
        "1.0:1.4:0.1",
        [1],
        ["compound", "depth", "width", "resolution"],
        include_baseline=True,
    )
    assert runs[0].dimension == "baseline"
    assert [r.dimension for r in runs[-3:]] == ["depth", "width", "resolution"]
    assert all(r.flops_factor == pytest.approx(2.0) for r in runs[-3:])
    assert len(runs) == 1 + 13 + 3
    assert all(r.dimension == "compound" and abs(r.flops_factor - 2) <= 0.1 for r in runs[1:-3])
    with pytest.raises(ValueError, match="no \\(alpha, beta, gamma\\)"):
        sweep_candidates([1.1], [1.1], [1.1], tolerance=0.01)


def test_resolution_reaches_data_and_task(tmp_path):
    cfg = compose_config("train", ["experiment=efficientnet_compound", "scaling.phi=2"], tmp_path)
    assert cfg.data.image_size == 296 and cfg.task.image_size == 296
    assert cfg.task.backbone == "compound_scaled_efficientnet"
    assert dict(cfg.task.backbone_kwargs) == {
        "phi": 2,
        "alpha": 1.2,
        "beta": 1.1,
        "width_multiplier": 1.0,
        "depth_multiplier": 1.0,
    }
