"""Photobooth networks: a face-expression model on crops, a kiss model on the whole frame, and an
attention model that turns a variable number of faces into one global expression score per frame."""

from __future__ import annotations

import torch
from torch import nn

from core.backbones import create_backbone
from datamodules.photobooth import EXPRESSIONS

NUM_EXPRESSIONS = len(EXPRESSIONS)
# Output layout of FaceExpressionNet: expression logits, then eyes_closed, talking, attending logits.
FACE_OUTPUTS = NUM_EXPRESSIONS + 3


class FaceExpressionNet(nn.Module):
    """A MobileNet-class timm backbone on a face crop with heads for the expression (5 key
    expressions + neutral) and the quality attributes eyes closed, talking, attending."""

    def __init__(
        self, backbone: str = "mobilenetv3_small_050", drop_rate: float = 0.0, pretrained: bool | str = False
    ) -> None:
        super().__init__()
        self.backbone = create_backbone(backbone, pretrained, num_classes=0, drop_rate=drop_rate)
        # What the pooled backbone returns (MobileNetV3 adds a 1x1 conv head after num_features).
        self.num_features = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.head = nn.Linear(self.num_features, FACE_OUTPUTS)

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """crops (N, 3, s, s) -> (logits (N, FACE_OUTPUTS), features (N, num_features))."""
        features = self.backbone(crops)
        return self.head(features), features


class KissNet(nn.Module):
    """A frame-level kiss logit from a MobileNet-class backbone on the whole (resized) frame."""

    def __init__(self, backbone: str = "mobilenetv3_small_050", pretrained: bool | str = False) -> None:
        super().__init__()
        self.backbone = create_backbone(backbone, pretrained, num_classes=1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.backbone(frames).squeeze(-1)


class FaceAttention(nn.Module):
    """Per face an expression-quality embedding and a weight; a softmax over the real faces only
    (padding masked out) pools them into one global expression score per frame.

    The weight logit is an MLP of the embedding plus ``size_prior`` * log(face area): a learnable
    prior, initialised positive, so foreground (larger) faces weigh more from the start."""

    def __init__(self, face_dim: int, embed_dim: int = 32, size_prior: float = 1.0) -> None:
        super().__init__()
        # The face's outputs (expression/quality probabilities), its features and its box geometry.
        self.embed = nn.Sequential(
            nn.Linear(face_dim + FACE_OUTPUTS + 5, embed_dim), nn.ReLU(), nn.Linear(embed_dim, embed_dim)
        )
        self.weight = nn.Sequential(nn.ReLU(), nn.Linear(embed_dim, 1))
        self.score = nn.Sequential(nn.ReLU(), nn.Linear(embed_dim, 1))
        self.size_prior = nn.Parameter(torch.tensor(float(size_prior)))

    def forward(
        self, face_logits: torch.Tensor, face_features: torch.Tensor, boxes: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, F, ...) faces, ``mask`` (B, F) True for real faces -> (global logit (B,), weights (B, F)).
        A frame without faces gets weights 0 and a logit of -10 (score ~0)."""
        probs = torch.cat(
            [face_logits[..., :NUM_EXPRESSIONS].softmax(-1), face_logits[..., NUM_EXPRESSIONS:].sigmoid()], -1
        )
        wh = (boxes[..., 2:] - boxes[..., :2]).clamp_min(1e-4)
        area = wh[..., 0] * wh[..., 1]
        geometry = torch.cat([boxes, area.log().unsqueeze(-1)], -1)
        embedding = self.embed(torch.cat([face_features, probs, geometry], -1))
        logits = self.weight(embedding).squeeze(-1) + self.size_prior * area.log()
        logits = logits.masked_fill(~mask, float("-inf"))
        any_face = mask.any(-1, keepdim=True)
        weights = torch.where(any_face, logits.softmax(-1), torch.zeros_like(logits)).nan_to_num(0.0)
        pooled = (weights.unsqueeze(-1) * embedding).sum(1)
        score = self.score(pooled).squeeze(-1)
        return torch.where(any_face.squeeze(-1), score, torch.full_like(score, -10.0)), weights


def uniform_expression_score(face_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The no-attention baseline: the mean over real faces of P(key expression) * P(attending)."""
    probs = face_logits[..., :NUM_EXPRESSIONS].softmax(-1)
    key = (1 - probs[..., 0]) * face_logits[..., NUM_EXPRESSIONS + 2].sigmoid()
    m = mask.float()
    return (key * m).sum(-1) / m.sum(-1).clamp_min(1.0)


def size_prior_expression_score(face_logits: torch.Tensor, boxes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The size prior alone (what ``FaceAttention`` starts from, without its learned part): each real
    face weighted by its area share, P(key expression) * P(attending) pooled with those weights."""
    probs = face_logits[..., :NUM_EXPRESSIONS].softmax(-1)
    key = (1 - probs[..., 0]) * face_logits[..., NUM_EXPRESSIONS + 2].sigmoid()
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp_min(1e-4)
    area = wh[..., 0] * wh[..., 1] * mask.float()
    return (key * area).sum(-1) / area.sum(-1).clamp_min(1e-12)


class PhotoboothNet(nn.Module):
    """Faces -> expression/quality per face -> attention -> global expression score; frame -> kiss."""

    def __init__(
        self,
        face_backbone: str = "mobilenetv3_small_050",
        kiss_backbone: str = "mobilenetv3_small_050",
        embed_dim: int = 32,
        size_prior: float = 1.0,
        pretrained: bool | str = False,
    ) -> None:
        super().__init__()
        self.face = FaceExpressionNet(face_backbone, pretrained=pretrained)
        self.kiss = KissNet(kiss_backbone, pretrained)
        self.attention = FaceAttention(self.face.num_features, embed_dim, size_prior)

    def forward(self, frames: torch.Tensor, crops: torch.Tensor, boxes: torch.Tensor, mask: torch.Tensor) -> dict:
        """frames (B, 3, H, W), crops (B, F, 3, s, s), boxes (B, F, 4) in [0, 1], mask (B, F)."""
        b, f = mask.shape
        face_logits = crops.new_zeros(b, f, FACE_OUTPUTS)
        face_features = crops.new_zeros(b, f, self.face.num_features)
        if mask.any():  # only the real faces go through the backbone
            logits, features = self.face(crops[mask])
            face_logits = face_logits.masked_scatter(mask.unsqueeze(-1), logits)
            face_features = face_features.masked_scatter(mask.unsqueeze(-1), features)
        expression_logit, weights = self.attention(face_logits, face_features, boxes, mask)
        return {
            "face_logits": face_logits,
            "weights": weights,
            "expression_logit": expression_logit,
            "kiss_logit": self.kiss(frames),
        }
