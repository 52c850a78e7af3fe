"""The landmark models: a global descriptor (timm backbone, GeM, whitening) trained with sub-center
ArcFace, and the Detect-to-Retrieve landmark box detector (torchvision Faster R-CNN)."""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn

from core.backbones import create_backbone


class GeM(nn.Module):
    """Generalized-mean pooling (Radenović et al., TPAMI 2018): ``(mean x^p)^(1/p)`` per channel,
    ``p`` learned (p=1 average, p->inf max)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x.clamp(min=self.eps).pow(self.p), x.shape[-2:]).pow(1.0 / self.p).flatten(1)


class GlobalDescriptor(nn.Module):
    """Image -> L2-normalised global descriptor, plus the stride-16 local feature map D2R aggregates.

    A timm backbone (``features_only``: its last two stages), GeM on the last, a learned whitening
    (a linear projection with bias, as the whitening layer of Radenović et al.) to ``dim``. Images
    come in [0, 1]; the backbone's normalisation is applied here."""

    def __init__(self, backbone: str, dim: int = 128, gem_p: float = 3.0, pretrained: bool | str = False) -> None:
        super().__init__()
        self.backbone = create_backbone(backbone, pretrained, features_only=True, out_indices=(-2, -1))
        channels = self.backbone.feature_info.channels()
        self.local_dim = channels[0]
        self.pool = GeM(gem_p)
        self.whiten = nn.Linear(channels[1], dim)
        config = timm.data.resolve_data_config({}, model=self.backbone)
        self.register_buffer("mean", torch.tensor(config["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config["std"]).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, dim) descriptors and the (B, C, h, w) local feature map."""
        local, last = self.backbone((images - self.mean) / self.std)
        return F.normalize(self.whiten(self.pool(last)), dim=-1), local


class _StageBackbone(nn.Module):
    """A timm backbone's stride-16 stage as a torchvision detection backbone (``out_channels``)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.body = timm.create_model(name, pretrained=False, features_only=True, out_indices=(-2,))
        self.out_channels = self.body.feature_info.channels()[0]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"0": self.body(x)[0]}


def landmark_detector(backbone: str = "test_resnet", image_size: int = 128, head_dim: int = 128) -> nn.Module:
    """A one-class (landmark vs background) Faster R-CNN (torchvision) on a timm backbone's
    stride-16 stage, trained from scratch on the D2R box annotations (nothing is downloaded).
    Sized for small images: anchors of 1/4 to 1 of the image side, 3 aspect ratios, a
    ``head_dim``-wide box head, few proposals."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    body = _StageBackbone(backbone)
    sizes = tuple(int(image_size * f) for f in (0.25, 0.5, 0.75, 1.0))
    return FasterRCNN(
        body,
        num_classes=None,
        min_size=image_size,
        max_size=image_size,
        rpn_anchor_generator=AnchorGenerator((sizes,), ((0.5, 1.0, 2.0),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(body.out_channels * 49, head_dim),
        box_predictor=FastRCNNPredictor(head_dim, 2),
        rpn_pre_nms_top_n_train=300,
        rpn_post_nms_top_n_train=100,
        rpn_pre_nms_top_n_test=200,
        rpn_post_nms_top_n_test=50,
        rpn_batch_size_per_image=64,
        box_batch_size_per_image=64,
        box_detections_per_img=10,
        # [0, 1] images; the timm backbone's own statistics
        image_mean=list(body.body.pretrained_cfg.get("mean", (0.485, 0.456, 0.406))),
        image_std=list(body.body.pretrained_cfg.get("std", (0.229, 0.224, 0.225))),
    )


class AttentionHead(nn.Module):
    """DELF's keypoint attention (Noh et al., ICCV 2017, Sec. 4): two 1x1 convolutions give each
    feature-map cell a softplus score. Trained as DELF trains it: the L2-normalised cells, weighted
    by their scores and averaged, feed a linear landmark classifier under cross-entropy; the
    backbone's features are detached, so this loss moves the attention only (DELF's second stage,
    the stop-gradient of DELG). At test time the best-scored cells are the local features."""

    def __init__(self, channels: int, num_classes: int, hidden: int = 512) -> None:
        super().__init__()
        self.score = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 1),
            nn.Softplus(),
        )
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, local: torch.Tensor) -> torch.Tensor:
        """(B, h, w) attention scores of a (B, C, h, w) feature map."""
        return self.score(local)[:, 0]

    def logits(self, local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, num_classes) landmark logits of the attention-pooled map, and the (B, h, w) scores."""
        local = local.detach()
        scores = self(local)
        pooled = (F.normalize(local, dim=1) * scores[:, None]).mean((2, 3))
        return self.classifier(pooled), scores
