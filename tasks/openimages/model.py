"""Faster R-CNN and Mask R-CNN from torchvision's builders with a named backbone, and the challenge's
label rules in the box classifier's loss (plus the mask loss for Mask R-CNN).

Backbones: ``tiny_convnet`` (four stride-2 conv blocks, one feature map; trains from scratch in
minutes on a CPU), any torchvision ResNet name (``resnet18``, ``resnet50``, ...) through
``resnet_fpn_backbone``, or any other timm model name (``convnext_tiny``, ``efficientnet_b0``, ...)
through its ``features_only`` maps and torchvision's FPN; from scratch or a user's local weights
(``pretrained_path``, loaded into the backbone's body)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads, project_masks_on_boxes
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops import boxes as box_ops
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from core.config_check import check_node

# resnet_fpn_backbone's names: the builders of torchvision.models.resnet (resnet18 ... wide_resnet101_2).
TORCHVISION_RESNETS = tuple(name for name in resnet.__all__ if name[0].islower())


def tiny_convnet(width: int = 64) -> nn.Module:
    """Four stride-2 conv-BN-ReLU blocks and one stride-1 block (output stride 16), ``out_channels`` = width."""
    layers, c_in = [], 3
    for c_out in (width // 4, width // 2, width, width):
        layers += [nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        c_in = c_out
    layers += [nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
    body = nn.Sequential(*layers)
    body.out_channels = width
    return body


class TimmFPN(nn.Module):
    """A timm model's last four feature maps through torchvision's FeaturePyramidNetwork plus a
    max-pooled level: the five maps ("0" to "3", "pool") that ``resnet_fpn_backbone`` gives, so the
    detector's defaults (RoI pooling, anchors per level) apply unchanged."""

    def __init__(self, name: str, out_channels: int = 256, pretrained: bool | str = False):
        super().__init__()
        import timm

        from core.backbones import create_backbone

        if name not in timm.list_models():
            raise ValueError(f"backbone {name!r} is neither tiny_convnet, a torchvision ResNet nor a timm model")
        self.body = create_backbone(name, pretrained, features_only=True)
        channels = self.body.feature_info.channels()
        if len(channels) < 4:
            raise ValueError(f"backbone {name!r} gives {len(channels)} feature maps; an FPN needs 4")
        self.fpn = FeaturePyramidNetwork(channels[-4:], out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = self.body(x)[-4:]
        return self.fpn({str(i): m for i, m in enumerate(maps)})


def region_cnn(
    num_classes: int,
    backbone: str = "tiny_convnet",
    min_size: int = 120,
    max_size: int = 160,
    anchor_sizes: list[int] = (16, 32, 64),
    pretrained_path: str | None = None,
    masks: bool = False,
    pretrained: bool | str = False,
) -> FasterRCNN:
    """torchvision's FasterRCNN (or, with ``masks``, its MaskRCNN) for ``num_classes`` object classes
    (+1 background) on the named backbone; ``pretrained``: timm's published weights of the backbone
    (core.backbones; a torchvision ResNet takes them too: same tensor names), unless ``pretrained_path``."""
    builder = MaskRCNN if masks else FasterRCNN
    pretrained = False if pretrained_path else pretrained  # a user's local file wins
    if backbone == "tiny_convnet" and pretrained:
        raise ValueError("task.pretrained: tiny_convnet has no published weights; choose a timm or torchvision model")
    if backbone == "tiny_convnet":
        body = tiny_convnet()
        anchors = AnchorGenerator(sizes=(tuple(anchor_sizes),), aspect_ratios=((0.5, 1.0, 2.0),))
        pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2)
        heads = {}
        if masks:  # two 64-channel convs instead of four 256-channel ones: the same head, CPU-sized
            heads = {
                "mask_roi_pool": MultiScaleRoIAlign(featmap_names=["0"], output_size=14, sampling_ratio=2),
                "mask_head": MaskRCNNHeads(body.out_channels, [64, 64], 1),
                "mask_predictor": MaskRCNNPredictor(64, 64, num_classes + 1),
            }
        # A small box head and fewer proposals than the ImageNet-sized defaults: CPU minutes, not hours.
        model = builder(
            body, num_classes=None, min_size=min_size, max_size=max_size,
            rpn_anchor_generator=anchors, box_roi_pool=pool,
            box_head=TwoMLPHead(body.out_channels * 7 * 7, 256), box_predictor=FastRCNNPredictor(256, num_classes + 1),
            rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=200, rpn_pre_nms_top_n_test=300,
            rpn_post_nms_top_n_test=100, box_batch_size_per_image=64,
            image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25], **heads,
        )  # fmt: skip
    else:
        if backbone in TORCHVISION_RESNETS:
            body = resnet_fpn_backbone(backbone_name=backbone, weights=None, trainable_layers=5)
            if pretrained:
                from core.backbones import create_backbone, published_name
                from core.weights import load_matching

                weights = create_backbone(backbone, pretrained).state_dict()
                load_matching(body.body, weights, f"timm weights {published_name(backbone, pretrained)}")
        else:
            body = TimmFPN(backbone, pretrained=pretrained)
        anchors = AnchorGenerator(
            sizes=tuple((s,) for s in anchor_sizes) + ((anchor_sizes[-1] * 2,),) * 2,
            aspect_ratios=((0.5, 1.0, 2.0),) * (len(anchor_sizes) + 2),
        )
        model = builder(
            body, num_classes=num_classes + 1, min_size=min_size, max_size=max_size, rpn_anchor_generator=anchors
        )
    if pretrained_path:  # a user's local backbone weights (a torchvision or timm state dict, say)
        from core.weights import load_pretrained

        load_pretrained(model.backbone if backbone == "tiny_convnet" else model.backbone.body, pretrained_path)
    return model


def detector_arguments(detector: Mapping[str, Any] | None = None, where: str = "task.detector") -> dict[str, Any]:
    """The ``detector:`` config of every track (the keyword arguments of :func:`region_cnn` but
    ``num_classes`` and ``masks``) completed with region_cnn's defaults, as plain values for the
    hyper-parameters; an unknown key or a value of the wrong type is refused with its name."""
    params = inspect.signature(region_cnn).parameters
    defaults = {k: p.default for k, p in params.items() if k not in ("num_classes", "masks")}
    given = dict(detector or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; the detector takes {sorted(defaults)}")
    check_node({"_target_": f"{__name__}.region_cnn", **given}, where)
    merged = {**defaults, **given}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in merged.items()}


def faster_rcnn(num_classes: int, **detector: Any) -> FasterRCNN:
    """torchvision's FasterRCNN for ``num_classes`` object classes (+1 background); ``detector``:
    :func:`region_cnn`'s arguments (:func:`detector_arguments`)."""
    return region_cnn(num_classes, masks=False, **detector_arguments(detector))


def mask_rcnn(num_classes: int, **detector: Any) -> MaskRCNN:
    """torchvision's MaskRCNN for ``num_classes`` object classes (+1 background); ``detector`` as for
    :func:`faster_rcnn`."""
    return region_cnn(num_classes, masks=True, **detector_arguments(detector))


def group_of_background_weights(
    proposals: torch.Tensor, labels: torch.Tensor, group_boxes: torch.Tensor
) -> torch.Tensor:
    """Classifier-loss weight per sampled proposal: 0 for a background proposal (label 0) whose
    intersection over its own area with some group-of box is >= 0.5 (the challenge's group-of match,
    so not a false positive there), else 1."""
    weights = torch.ones(len(labels), device=proposals.device)
    if len(group_boxes) == 0 or len(labels) == 0:
        return weights
    ix1 = torch.maximum(proposals[:, None, 0], group_boxes[None, :, 0])
    iy1 = torch.maximum(proposals[:, None, 1], group_boxes[None, :, 1])
    ix2 = torch.minimum(proposals[:, None, 2], group_boxes[None, :, 2])
    iy2 = torch.minimum(proposals[:, None, 3], group_boxes[None, :, 3])
    inter = (ix2 - ix1).clamp(min=0) * (iy2 - iy1).clamp(min=0)
    area = ((proposals[:, 2] - proposals[:, 0]) * (proposals[:, 3] - proposals[:, 1])).clamp(min=1e-6)
    inside = (inter / area[:, None]).max(1).values >= 0.5
    return torch.where((labels == 0) & inside, torch.zeros_like(weights), weights)


class SigmoidRoIHeads(RoIHeads):
    """torchvision's RoI heads scoring each class by its own sigmoid (no softmax competition, the
    background logit unused): a box can be "Dog" and "Animal" at once, as the challenge's hierarchy
    wants. Then, as torchvision: per-class boxes clipped, score threshold, tiny boxes dropped,
    per-class NMS, the top ``detections_per_img``."""

    def postprocess_detections(self, class_logits, box_regression, proposals, image_shapes):
        counts = [len(p) for p in proposals]
        boxes_all = self.box_coder.decode(box_regression, proposals).split(counts)
        scores_all = torch.sigmoid(class_logits).split(counts)
        out_boxes, out_scores, out_labels = [], [], []
        for boxes, scores, shape in zip(boxes_all, scores_all, image_shapes):
            boxes = box_ops.clip_boxes_to_image(boxes[:, 1:], shape).reshape(-1, 4)
            labels = torch.arange(1, scores.shape[1], device=scores.device).repeat(len(scores))
            scores = scores[:, 1:].reshape(-1)
            wide = (boxes[:, 2] - boxes[:, 0] >= 1e-2) & (boxes[:, 3] - boxes[:, 1] >= 1e-2)
            keep = torch.where((scores > self.score_thresh) & wide)[0]
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = box_ops.batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
            out_boxes.append(boxes[keep])
            out_scores.append(scores[keep])
            out_labels.append(labels[keep])
        return out_boxes, out_scores, out_labels


def use_sigmoid_scores(model: FasterRCNN) -> FasterRCNN:
    """The model with :class:`SigmoidRoIHeads` (same parameters; only inference scoring changes)."""
    model.roi_heads.__class__ = SigmoidRoIHeads
    return model


def with_ancestors(classes: torch.Tensor, ancestors: list[list[int]]) -> torch.Tensor:
    """0-based class ids plus all their ancestors, each once."""
    out = set(classes.tolist())
    for c in classes.tolist():
        out.update(ancestors[c] if 0 <= c < len(ancestors) else ())
    return torch.as_tensor(sorted(out), dtype=torch.long, device=classes.device)


def sigmoid_classification_loss(
    logits: torch.Tensor,
    labels: list[torch.Tensor],
    proposals: list[torch.Tensor],
    targets: list[dict],
    scale: list[torch.Tensor],
    ancestors: list[list[int]],
) -> torch.Tensor:
    """Per-class sigmoid cross-entropy on the sampled proposals with the challenge's label rules, as
    the TF Object Detection API's Open Images configs weigh it (a weighted sigmoid loss whose class
    weights are the image's labeled classes, ``groundtruth_labeled_classes``):

    - target 1 for the proposal's matched class and every ancestor of it (a dog box is an animal box),
      0 for the other classes;
    - weight 1 only for the image's known classes (boxed classes and their ancestors, and the
      expanded human-verified labels, present or absent); a class nobody looked for gets weight 0;
    - a background proposal inside a group-of box (IoA >= 0.5) is not a negative for that box's class
      and its ancestors.

    ``labels``: the proposals' 1-based matched labels (0 background); ``scale`` per image turns the
    targets' boxes into the proposals' coordinates. Summed over classes, averaged over proposals."""
    targets_1h, weights = [], []
    num = logits.shape[1] - 1
    for lab, props, t, ratio in zip(labels, proposals, targets, scale):
        target = torch.zeros(len(lab), num, device=logits.device)
        weight = torch.zeros(len(lab), num, device=logits.device)
        known = with_ancestors(torch.cat([t["known"], t["labels"]]).to(logits.device), ancestors)
        weight[:, known] = 1.0
        for i in torch.where(lab > 0)[0].tolist():
            mine = with_ancestors(lab[i : i + 1] - 1, ancestors)
            target[i, mine] = 1.0
            weight[i, mine] = 1.0
        group = t["group_of"].to(logits.device).bool()
        if group.any() and len(lab):
            boxes = t["boxes"][group].to(logits.device) * ratio
            for box, cls in zip(boxes, t["labels"][group].to(logits.device)):
                inside = group_of_background_weights(props, lab, box[None]) == 0
                weight[torch.where(inside)[0][:, None], with_ancestors(cls[None], ancestors)[None, :]] = 0.0
        targets_1h.append(target)
        weights.append(weight)
    target, weight = torch.cat(targets_1h), torch.cat(weights)
    loss = F.binary_cross_entropy_with_logits(logits[:, 1:], target, weight=weight, reduction="sum")
    return loss / max(len(target), 1)


def challenge_detection_losses(
    model: FasterRCNN,
    images: list[torch.Tensor],
    targets: list[dict],
    classifier: str = "softmax",
    ancestors: list[list[int]] | None = None,
) -> dict[str, torch.Tensor]:
    """Faster R-CNN's (or Mask R-CNN's) training losses with the Open Images label rules in the box
    classifier:

    - a class neither annotated (boxed) nor verified for an image is not a negative there: its logit
      is left out of the softmax of that image's proposals (so no proposal pushes it down);
    - a background proposal lying inside a group-of box (IoA >= 0.5, the challenge's group-of match)
      is ignored, not a negative: the challenge does not count such detections as false positives.

    ``classifier="sigmoid"`` replaces the masked softmax by :func:`sigmoid_classification_loss` (one
    sigmoid per class: a proposal on a dog box learns "Dog" and every ancestor of it, ``ancestors``
    being each class's ancestor ids) and trains the box regression of the ancestors too, so a parent
    class is detected by the network itself; infer with :func:`use_sigmoid_scores`.

    With a mask head (MaskRCNN) ``loss_mask`` is added (:func:`instance_mask_loss`): only positive
    proposals matched to an instance that has a mask count; group-of boxes have none.

    ``targets[i]``: ``boxes`` (pixels), ``labels`` (0-based), ``group_of``, ``known`` (class ids
    annotated or verified for the image); for Mask R-CNN also ``masks`` (m, H, W) in the image's
    pixels and optionally ``has_mask`` (m,) bool (default: not group-of)."""
    with_masks = model.roi_heads.has_mask()
    original_sizes = [img.shape[-2:] for img in images]
    tv_targets = []
    for t in targets:
        tv = {"boxes": t["boxes"], "labels": t["labels"] + 1}
        if with_masks:
            tv["masks"] = t["masks"].to(torch.uint8)
        tv_targets.append(tv)
    image_list, tv_targets = model.transform(images, tv_targets)
    features = model.backbone(image_list.tensors)
    if isinstance(features, torch.Tensor):
        features = {"0": features}
    proposals, rpn_losses = model.rpn(image_list, features, tv_targets)
    heads = model.roi_heads
    proposals, matched_idxs, labels, regression_targets = heads.select_training_samples(proposals, tv_targets)
    box_features = heads.box_head(heads.box_roi_pool(features, proposals, image_list.image_sizes))
    class_logits, box_regression = heads.box_predictor(box_features)

    if classifier not in ("softmax", "sigmoid"):
        raise ValueError(f"classifier={classifier!r}: expected softmax or sigmoid")
    device = class_logits.device
    ratios = []
    for i in range(len(targets)):
        ratio = torch.tensor(image_list.image_sizes[i][::-1] * 2, device=device, dtype=torch.float32)
        ratios.append(ratio / torch.tensor(original_sizes[i][::-1] * 2, device=device, dtype=torch.float32))
    num_classes = class_logits.shape[1]
    allowed, weights = [], []
    for props, lab, t, ratio in zip(proposals, labels, targets, ratios):
        row = torch.zeros(num_classes, dtype=torch.bool, device=device)
        row[0] = True
        row[t["known"].to(row.device) + 1] = True
        row[lab] = True
        allowed.append(row.expand(len(lab), -1))
        group = t["group_of"].to(row.device)
        w = group_of_background_weights(props, lab, t["boxes"][group].to(row.device) * ratio)
        weights.append(w)
    losses = dict(rpn_losses)
    if with_masks:
        has_mask = [t.get("has_mask", ~t["group_of"].bool()) for t in targets]
        losses["loss_mask"] = instance_mask_loss(
            model, features, image_list.image_sizes, proposals, matched_idxs, labels, tv_targets, has_mask
        )
    if classifier == "sigmoid":
        ancestors = ancestors or [[] for _ in range(num_classes - 1)]
        loss = sigmoid_classification_loss(class_logits, labels, proposals, targets, ratios, ancestors)
        labels, regression_targets = torch.cat(labels, 0), torch.cat(regression_targets, 0)
        rows, cols = [], []
        for i in torch.where(labels > 0)[0].tolist():  # the matched class and each ancestor regress alike
            mine = [int(labels[i]) - 1, *ancestors[int(labels[i]) - 1]]
            rows += [i] * len(mine)
            cols += [c + 1 for c in mine]
        rows_t = torch.as_tensor(rows, dtype=torch.long, device=device)
        cols_t = torch.as_tensor(cols, dtype=torch.long, device=device)
        box_regression = box_regression.reshape(len(labels), box_regression.size(-1) // 4, 4)
        box_loss = (
            F.smooth_l1_loss(box_regression[rows_t, cols_t], regression_targets[rows_t], beta=1 / 9, reduction="sum")
            / labels.numel()
        )
        return {"loss_classifier": loss, "loss_box_reg": box_loss, **losses}
    allowed = torch.cat(allowed, 0)
    weights = torch.cat(weights, 0)
    labels = torch.cat(labels, 0)
    regression_targets = torch.cat(regression_targets, 0)
    logits = class_logits.masked_fill(~allowed, float("-inf"))
    ce = F.cross_entropy(logits, labels, reduction="none")
    classifier_loss = (ce * weights).sum() / weights.sum().clamp(min=1.0)
    positive = torch.where(labels > 0)[0]
    box_regression = box_regression.reshape(len(labels), box_regression.size(-1) // 4, 4)
    box_loss = (
        F.smooth_l1_loss(
            box_regression[positive, labels[positive]], regression_targets[positive], beta=1 / 9, reduction="sum"
        )
        / labels.numel()
    )
    return {"loss_classifier": classifier_loss, "loss_box_reg": box_loss, **losses}


def instance_mask_loss(
    model: MaskRCNN,
    features: dict[str, torch.Tensor],
    image_sizes: list[tuple[int, int]],
    proposals: list[torch.Tensor],
    matched_idxs: list[torch.Tensor],
    labels: list[torch.Tensor],
    targets: list[dict],
    has_mask: list[torch.Tensor],
) -> torch.Tensor:
    """Mask R-CNN's per-pixel sigmoid loss on the ground-truth class's channel (He et al. 2017, sec.
    3), over the sampled positive proposals whose matched instance has a mask: a group-of box (or any
    box without a segmentation) gives no mask target, so its proposals are left out. ``targets``
    are the transformed torchvision targets (``masks`` at the network's input size); ``labels`` the
    sampled proposals' 1-based labels."""
    heads = model.roi_heads
    keep_props, keep_idxs, keep_labels = [], [], []
    for props, idxs, lab, t, flags in zip(proposals, matched_idxs, labels, targets, has_mask):
        flags = flags.to(idxs.device).bool()
        keep = (lab > 0) & (flags[idxs] if len(flags) else torch.zeros_like(lab, dtype=torch.bool))
        keep_props.append(props[keep])
        keep_idxs.append(idxs[keep])
        keep_labels.append(t["labels"][idxs[keep]])
    mask_logits = heads.mask_predictor(heads.mask_head(heads.mask_roi_pool(features, keep_props, image_sizes)))
    if sum(len(p) for p in keep_props) == 0:
        return mask_logits.sum() * 0  # keeps the graph (and DDP's gradient bookkeeping) intact
    size = mask_logits.shape[-1]
    mask_targets = torch.cat(
        [project_masks_on_boxes(t["masks"], p, i, size) for t, p, i in zip(targets, keep_props, keep_idxs)
         if len(p)]
    )  # fmt: skip
    keep_labels = torch.cat(keep_labels)
    chosen = mask_logits[torch.arange(len(keep_labels), device=keep_labels.device), keep_labels]
    return F.binary_cross_entropy_with_logits(chosen, mask_targets)


def ancestor_copies(labels: torch.Tensor, ancestors: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index, labels)`` of the detections expanded up the hierarchy: the originals first, then one
    copy per ancestor class of each (``index`` says which detection each row copies)."""
    index, out = list(range(len(labels))), labels.tolist()
    for k, label in enumerate(labels.tolist()):
        for parent in ancestors[label] if 0 <= label < len(ancestors) else ():
            index.append(k)
            out.append(parent)
    return torch.as_tensor(index, dtype=torch.long, device=labels.device), labels.new_tensor(out)


def expand_to_ancestors(
    labels: torch.Tensor, scores: torch.Tensor, boxes: torch.Tensor, ancestors: list[list[int]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each detection copied to every ancestor class of its label (same box and score): the
    evaluator expands only the ground truth, so parent classes must be predicted explicitly."""
    index, expanded = ancestor_copies(labels, ancestors)
    return expanded, scores[index], boxes[index]


def merge_copies(
    labels: torch.Tensor, scores: torch.Tensor, boxes: torch.Tensor, iou_threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class NMS over expanded detections: a parent copied from two children on one object (or
    from a child onto the network's own parent detection) is one detection, at the best score; the
    challenge would count the second copy as a false positive."""
    if len(labels) == 0:
        return labels, scores, boxes
    keep = box_ops.batched_nms(boxes.float(), scores.float(), labels, iou_threshold)
    return labels[keep], scores[keep], boxes[keep]
