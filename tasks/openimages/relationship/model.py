"""A visual relationship detector on the Faster R-CNN of tasks/openimages/model.py.

Inference: the detector finds boxes; every ordered pair (subject, object) of its best
``boxes_per_image`` detections is classified into one of the relationships or "no relationship"
from pairwise features: RoI features of the subject, the object and their union box (pooled from the
detector's feature map with the detector's own RoI pooling), the pair's box geometry, and embeddings
of the two detected classes. A triplet's score is

    score(subject, relationship, object) = subject score * object score * p(relationship | pair)

(the detector's two class scores and the pair classifier's softmax probability). Attribute
relationships ("is": the object is an attribute such as Wooden, with the subject's box) come from an
attribute classifier on each detected box (its RoI feature and class embedding, one sigmoid per
attribute): score = detection score * p(attribute | box). The ``relationships_per_image`` best
triplets of an image are kept.

Training: the detector with the challenge's label rules (``challenge_detection_losses``), plus the
pair classifier on pairs of ground-truth boxes: the entities of an image are its relationship boxes
and its other annotated boxes; an ordered pair annotated with relationships has them as its target,
every other ordered pair is "no relationship" (class 0); the attribute classifier on the same
entities, an attribute positive where an "is" relationship gives it to the entity, else negative."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.transform import resize_boxes

from core.metrics import box_iou
from tasks.openimages.model import challenge_detection_losses, faster_rcnn

NO_RELATIONSHIP = 0
# Two annotations of one class whose boxes overlap this much are one entity (the relationship file
# repeats an object's box in each of its relationships; the box file has it once more).
SAME_ENTITY_IOU = 0.9
GEOMETRY_FEATURES = 15


def ordered_pairs(num_boxes: int, device: torch.device | None = None) -> torch.Tensor:
    """Every ordered pair (subject, object) of ``num_boxes`` boxes with subject != object: (n(n-1), 2),
    subject-major order."""
    index = torch.arange(num_boxes, device=device)
    subject, obj = torch.meshgrid(index, index, indexing="ij")
    keep = subject != obj
    return torch.stack([subject[keep], obj[keep]], 1)


def union_boxes(subject_boxes: torch.Tensor, object_boxes: torch.Tensor) -> torch.Tensor:
    """The smallest box enclosing each subject box and its object box (the phrase box of the challenge)."""
    return torch.cat(
        [
            torch.minimum(subject_boxes[:, :2], object_boxes[:, :2]),
            torch.maximum(subject_boxes[:, 2:], object_boxes[:, 2:]),
        ],
        1,
    )


def pair_geometry(subject_boxes: torch.Tensor, object_boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Box geometry of each pair, (P, 15): both boxes normalized by the image (width, height);
    the object's centre offset and log size ratio relative to the subject box (the R-CNN box
    encoding); IoU and the intersection over each box's own area."""
    width, height = image_size
    scale = subject_boxes.new_tensor([width, height, width, height])
    sw = (subject_boxes[:, 2] - subject_boxes[:, 0]).clamp(min=1.0)
    sh = (subject_boxes[:, 3] - subject_boxes[:, 1]).clamp(min=1.0)
    ow = (object_boxes[:, 2] - object_boxes[:, 0]).clamp(min=1.0)
    oh = (object_boxes[:, 3] - object_boxes[:, 1]).clamp(min=1.0)
    dx = ((object_boxes[:, 0] + object_boxes[:, 2]) - (subject_boxes[:, 0] + subject_boxes[:, 2])) / (2 * sw)
    dy = ((object_boxes[:, 1] + object_boxes[:, 3]) - (subject_boxes[:, 1] + subject_boxes[:, 3])) / (2 * sh)
    iw = torch.minimum(subject_boxes[:, 2], object_boxes[:, 2]) - torch.maximum(subject_boxes[:, 0], object_boxes[:, 0])
    ih = torch.minimum(subject_boxes[:, 3], object_boxes[:, 3]) - torch.maximum(subject_boxes[:, 1], object_boxes[:, 1])
    inter = iw.clamp(min=0) * ih.clamp(min=0)
    iou = inter / (sw * sh + ow * oh - inter)
    relative = torch.stack(
        [dx, dy, torch.log(ow / sw), torch.log(oh / sh), iou, inter / (sw * sh), inter / (ow * oh)], 1
    )
    return torch.cat([subject_boxes / scale, object_boxes / scale, relative], 1)


def relationship_entities(
    boxes: torch.Tensor,
    labels: torch.Tensor,
    subject_boxes: torch.Tensor,
    subject_labels: torch.Tensor,
    object_boxes: torch.Tensor,
    object_labels: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The entities of an image for pair training: each relationship's subject and object box once
    (same class and IoU >= ``SAME_ENTITY_IOU`` is one entity), then the image's other annotated boxes
    (``boxes``, ``labels``). Returns entity boxes (E, 4), labels (E,), and the entity index of each
    relationship's subject and of its object (R,)."""
    ent_boxes: list[torch.Tensor] = []
    ent_labels: list[int] = []

    def index_of(box: torch.Tensor, label: int) -> int:
        if ent_boxes:
            iou = box_iou(box[None], torch.stack(ent_boxes))[0]
            same = (torch.tensor(ent_labels, device=box.device) == label) & (iou >= SAME_ENTITY_IOU)
            if same.any():
                return int(torch.where(same, iou, iou.new_tensor(-1.0)).argmax())
        ent_boxes.append(box)
        ent_labels.append(label)
        return len(ent_boxes) - 1

    subject_index = [index_of(b, int(label)) for b, label in zip(subject_boxes, subject_labels)]
    object_index = [index_of(b, int(label)) for b, label in zip(object_boxes, object_labels)]
    for b, label in zip(boxes, labels):
        index_of(b, int(label))
    device = boxes.device
    return (
        torch.stack(ent_boxes) if ent_boxes else torch.zeros(0, 4, device=device),
        torch.tensor(ent_labels, dtype=torch.int64, device=device),
        torch.tensor(subject_index, dtype=torch.int64, device=device),
        torch.tensor(object_index, dtype=torch.int64, device=device),
    )


def pair_targets(
    num_entities: int,
    subject_index: torch.Tensor,
    object_index: torch.Tensor,
    relationships: torch.Tensor,
    num_relationships: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ordered pair of ``num_entities`` entities with its target distribution over
    ``num_relationships + 1`` classes (0 = no relationship, r + 1 = relationship r): a pair annotated
    with k relationships has 1/k on each, any other pair 1 on "no relationship".
    Returns pairs (P, 2) and targets (P, num_relationships + 1)."""
    pairs = ordered_pairs(num_entities, subject_index.device)
    targets = torch.zeros(len(pairs), num_relationships + 1, device=subject_index.device)
    row = {(int(s), int(o)): k for k, (s, o) in enumerate(pairs.tolist())}
    for s, o, r in zip(subject_index.tolist(), object_index.tolist(), relationships.tolist()):
        if s != o:  # a relationship of a box with itself ("is" an attribute) has no pair of two boxes
            targets[row[(s, o)], r + 1] = 1.0
    negative = targets.sum(1) == 0
    targets[negative, NO_RELATIONSHIP] = 1.0
    return pairs, targets / targets.sum(1, keepdim=True)


def rank_triplets(
    pairs: torch.Tensor, box_scores: torch.Tensor, pair_probs: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k`` best triplets of an image: score = subject score * object score * p(relationship)
    over every pair (``pairs`` (P, 2) indices into ``box_scores``) and relationship (``pair_probs``
    (P, R + 1), column 0 "no relationship", never a triplet). Returns (pair index, relationship id
    (0-based), score), best first."""
    probs = pair_probs[:, 1:]
    triplet = box_scores[pairs[:, 0], None] * box_scores[pairs[:, 1], None] * probs
    scores, flat = triplet.flatten().topk(min(k, triplet.numel()))
    return flat // probs.shape[1], flat % probs.shape[1], scores


class PairClassifier(nn.Module):
    """Relationship logits (incl. "no relationship" at 0) of (subject, object) pairs from the RoI
    features of the subject, object and union boxes (one shared two-layer head), the pair's geometry
    and the embeddings of the two classes."""

    def __init__(
        self, pooled_features: int, num_classes: int, num_relationships: int, hidden: int = 256, embedding: int = 32
    ):
        super().__init__()
        self.roi_head = TwoMLPHead(pooled_features, hidden)
        self.class_embedding = nn.Embedding(num_classes, embedding)
        self.geometry = nn.Sequential(nn.Linear(GEOMETRY_FEATURES, 64), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(
            nn.Linear(3 * hidden + 64 + 2 * embedding, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_relationships + 1),
        )

    def forward(
        self,
        subject_features: torch.Tensor,
        object_features: torch.Tensor,
        union_features: torch.Tensor,
        geometry: torch.Tensor,
        subject_labels: torch.Tensor,
        object_labels: torch.Tensor,
    ) -> torch.Tensor:
        n = len(geometry)
        roi = self.roi_head(torch.cat([subject_features, object_features, union_features], 0))
        return self.classifier(
            torch.cat(
                [
                    roi[:n],
                    roi[n : 2 * n],
                    roi[2 * n :],
                    self.geometry(geometry),
                    self.class_embedding(subject_labels),
                    self.class_embedding(object_labels),
                ],
                1,
            )  # fmt: skip
        )


class RelationshipDetector(nn.Module):
    """Faster R-CNN (tasks/openimages/model.py's builder; ``detector``: its arguments) plus a
    :class:`PairClassifier` on its feature map. ``forward(images)`` (eval mode) gives the triplets of each image;
    ``losses(images, targets)`` the detector's challenge losses and the pair loss."""

    def __init__(
        self,
        num_classes: int,
        num_relationships: int,
        detector: dict | None = None,
        hidden: int = 256,
        embedding: int = 32,
        boxes_per_image: int = 16,
        relationships_per_image: int = 100,
        max_pairs_per_image: int = 64,
        num_attributes: int = 0,
    ):
        super().__init__()
        self.num_classes, self.num_relationships = num_classes, num_relationships
        self.num_attributes = num_attributes
        self.boxes_per_image = boxes_per_image
        self.relationships_per_image = relationships_per_image
        self.max_pairs_per_image = max_pairs_per_image
        self.detector = faster_rcnn(num_classes, **(detector or {}))
        size = self.detector.roi_heads.box_roi_pool.output_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        pooled = self.detector.backbone.out_channels * size[0] * size[1]
        self.pair_classifier = PairClassifier(pooled, num_classes, num_relationships, hidden, embedding)
        if num_attributes:  # "is" relationships: attributes of one box, from its RoI feature and class
            self.attribute_classifier = nn.Sequential(
                nn.Linear(hidden + embedding, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_attributes)
            )

    def _features(self, features: torch.Tensor | dict) -> dict[str, torch.Tensor]:
        return {"0": features} if isinstance(features, torch.Tensor) else features

    def pair_logits(
        self,
        features: dict[str, torch.Tensor],
        image_sizes: list[tuple[int, int]],
        boxes: list[torch.Tensor],
        labels: list[torch.Tensor],
        pairs: list[torch.Tensor],
    ) -> list[torch.Tensor]:
        """Logits (P_i, R + 1) of the ``pairs[i]`` (subject, object indices into ``boxes[i]``, boxes in
        the coordinates of the transformed images of ``image_sizes``: (height, width))."""
        pool = self.detector.roi_heads.box_roi_pool
        subj = [b[p[:, 0]] for b, p in zip(boxes, pairs)]
        obj = [b[p[:, 1]] for b, p in zip(boxes, pairs)]
        union = [union_boxes(s, o) for s, o in zip(subj, obj)]
        counts = [len(p) for p in pairs]
        if sum(counts) == 0:
            return [boxes[0].new_zeros(0, self.num_relationships + 1) for _ in pairs]
        geometry = torch.cat([pair_geometry(s, o, (w, h)) for s, o, (h, w) in zip(subj, obj, image_sizes)])
        logits = self.pair_classifier(
            pool(features, subj, image_sizes).flatten(1),
            pool(features, obj, image_sizes).flatten(1),
            pool(features, union, image_sizes).flatten(1),
            geometry,
            torch.cat([lab[p[:, 0]] for lab, p in zip(labels, pairs)]),
            torch.cat([lab[p[:, 1]] for lab, p in zip(labels, pairs)]),
        )
        return list(logits.split(counts))

    def attribute_logits(
        self,
        features: dict[str, torch.Tensor],
        image_sizes: list[tuple[int, int]],
        boxes: list[torch.Tensor],
        labels: list[torch.Tensor],
    ) -> list[torch.Tensor]:
        """Attribute logits (n_i, num_attributes) of ``boxes[i]`` (transformed image coordinates) of
        classes ``labels[i]``: the pair classifier's RoI head and class embedding, then a small MLP."""
        counts = [len(b) for b in boxes]
        pooled = self.detector.roi_heads.box_roi_pool(features, boxes, image_sizes).flatten(1)
        x = torch.cat(
            [self.pair_classifier.roi_head(pooled), self.pair_classifier.class_embedding(torch.cat(labels))], 1
        )
        return list(self.attribute_classifier(x).split(counts))

    def losses(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        """The detector's losses with the challenge's label rules (``targets[i]``: ``boxes`` in pixels,
        ``labels``, ``group_of``, ``known``) plus ``loss_relationship``: cross-entropy of the pair
        classifier on ground-truth pairs (``subject_boxes``, ``subject_labels``, ``object_boxes``,
        ``object_labels``, ``relationships``), at most ``max_pairs_per_image`` pairs an image (every
        annotated pair kept, the "no relationship" pairs drawn at random). With attributes,
        ``loss_attribute``: binary cross-entropy of every entity's attributes, positive where an "is"
        relationship (``attribute_boxes``, ``attribute_labels`` (class ids), ``attributes`` (attribute
        ids); optional keys) gives the entity that attribute."""
        captured: dict = {}

        def capture(name: str, pick):
            def hook(module, inputs, output) -> None:  # returns None: the output stays as it is
                captured[name] = pick(output)

            return hook

        hooks = [
            self.detector.transform.register_forward_hook(capture("images", lambda out: out[0])),
            self.detector.backbone.register_forward_hook(capture("features", lambda out: out)),
        ]
        try:  # the detector's pass, whose feature map the pair classifier reuses
            losses = challenge_detection_losses(self.detector, images, targets)
        finally:
            for hook in hooks:
                hook.remove()
        image_list, features = captured["images"], self._features(captured["features"])
        boxes, labels, pairs, pair_target, attribute_target = [], [], [], [], []
        for image, t, size in zip(images, targets, image_list.image_sizes):
            empty = t["subject_labels"][:0]
            attribute_boxes = t.get("attribute_boxes", t["subject_boxes"][:0])
            attribute_labels, attributes = t.get("attribute_labels", empty), t.get("attributes", empty)
            ent_boxes, ent_labels, s_idx, o_idx = relationship_entities(
                t["boxes"], t["labels"], torch.cat([t["subject_boxes"], attribute_boxes]),
                torch.cat([t["subject_labels"], attribute_labels]), t["object_boxes"], t["object_labels"],
            )  # fmt: skip
            s_idx, a_idx = s_idx[: len(t["subject_labels"])], s_idx[len(t["subject_labels"]) :]
            a_target = torch.zeros(len(ent_boxes), self.num_attributes, device=ent_boxes.device)
            a_target[a_idx, attributes] = 1.0
            attribute_target.append(a_target)
            p, target = pair_targets(len(ent_boxes), s_idx, o_idx, t["relationships"], self.num_relationships)
            if len(p) > self.max_pairs_per_image:
                positive = torch.where(target[:, NO_RELATIONSHIP] == 0)[0]
                negative = torch.where(target[:, NO_RELATIONSHIP] > 0)[0]
                room = max(self.max_pairs_per_image - len(positive), 0)
                keep = torch.cat([positive, negative[torch.randperm(len(negative), device=negative.device)[:room]]])
                p, target = p[keep], target[keep]
            boxes.append(resize_boxes(ent_boxes, list(image.shape[-2:]), list(size)))
            labels.append(ent_labels)
            pairs.append(p)
            pair_target.append(target)
        logits = torch.cat(self.pair_logits(features, image_list.image_sizes, boxes, labels, pairs))
        if len(logits):
            losses["loss_relationship"] = F.cross_entropy(logits, torch.cat(pair_target))
        else:  # no image of the batch has two entities: a zero that keeps the graph connected
            losses["loss_relationship"] = sum(p.sum() for p in self.pair_classifier.parameters()) * 0.0
        if self.num_attributes:
            logits = torch.cat(self.attribute_logits(features, image_list.image_sizes, boxes, labels))
            if len(logits):
                losses["loss_attribute"] = F.binary_cross_entropy_with_logits(logits, torch.cat(attribute_target))
            else:
                losses["loss_attribute"] = sum(p.sum() for p in self.attribute_classifier.parameters()) * 0.0
        return losses

    def forward(
        self,
        images: list[torch.Tensor],
        pair_classes: torch.Tensor | None = None,
        attribute_relationship: int | None = None,
    ) -> list[dict[str, torch.Tensor]]:
        """Triplets of each image (eval mode), best first: ``subject_boxes``, ``object_boxes`` (n, 4,
        pixels of the input image), ``subject_labels``, ``object_labels`` (0-based class ids, or
        attribute ids where ``object_is_attribute``), ``relationships`` (0-based), ``scores``; also the
        detector's ``detections`` (``boxes``, ``labels``, ``scores``). ``pair_classes`` (num_classes,)
        bool: only detections of these classes are paired (the track's classes).

        Two boxes: score = subject score * object score * p(relationship | pair). With attributes and
        ``attribute_relationship`` (the id of "is"): each detection also gives (box, "is", attribute,
        the same box) with score = detection score * p(attribute | box), and pairs never get "is"."""
        det = self.detector
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        image_list, _ = det.transform(images)
        features = self._features(det.backbone(image_list.tensors))
        proposals, _ = det.rpn(image_list, features)
        detections, _ = det.roi_heads(features, proposals, image_list.image_sizes)
        if pair_classes is not None:
            detections = [{k: v[pair_classes[d["labels"] - 1]] for k, v in d.items()} for d in detections]
        # torchvision returns each image's detections sorted by score: keep the best for pairing
        kept = [{k: v[: self.boxes_per_image] for k, v in d.items()} for d in detections]
        pairs = [ordered_pairs(len(d["boxes"]), d["boxes"].device) for d in kept]
        labels = [d["labels"] - 1 for d in kept]
        kept_boxes = [d["boxes"] for d in kept]
        logits = self.pair_logits(features, image_list.image_sizes, kept_boxes, labels, pairs)
        with_attributes = bool(self.num_attributes) and attribute_relationship is not None
        if with_attributes:
            attribute_probs = [
                a.sigmoid() for a in self.attribute_logits(features, image_list.image_sizes, kept_boxes, labels)
            ]
        out = []
        k = self.relationships_per_image
        for i, (d, lab, p, logit) in enumerate(zip(kept, labels, pairs, logits)):
            boxes = resize_boxes(d["boxes"], list(image_list.image_sizes[i]), list(original_sizes[i]))
            pair, relationship, scores = rank_triplets(p, d["scores"], logit.softmax(1), k)
            subject, obj, object_label = p[pair, 0], p[pair, 1], lab[p[pair, 1]]
            is_attribute = torch.zeros_like(relationship, dtype=torch.bool)
            if with_attributes:
                two_boxes = relationship != attribute_relationship  # "is" takes an attribute, not a box
                a_scores = d["scores"][:, None] * attribute_probs[i]
                a_best, flat = a_scores.flatten().topk(min(k, a_scores.numel()))
                box, attribute = flat // self.num_attributes, flat % self.num_attributes
                subject = torch.cat([subject[two_boxes], box])
                obj = torch.cat([obj[two_boxes], box])
                object_label = torch.cat([object_label[two_boxes], attribute])
                relationship = torch.cat([relationship[two_boxes], torch.full_like(attribute, attribute_relationship)])
                is_attribute = torch.cat([is_attribute[two_boxes], torch.ones_like(attribute, dtype=torch.bool)])
                scores = torch.cat([scores[two_boxes], a_best])
                order = scores.argsort(descending=True)[:k]
                subject, obj, object_label = subject[order], obj[order], object_label[order]
                relationship, is_attribute, scores = relationship[order], is_attribute[order], scores[order]
            out.append(
                {
                    "subject_boxes": boxes[subject], "object_boxes": boxes[obj],
                    "subject_labels": lab[subject], "object_labels": object_label,
                    "object_is_attribute": is_attribute, "relationships": relationship, "scores": scores,
                    "detections": {"boxes": boxes, "labels": lab, "scores": d["scores"]},
                }
            )  # fmt: skip
        return out
