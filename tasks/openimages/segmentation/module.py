"""Open Images instance segmentation: Mask R-CNN trained with the challenge's label rules, scored with
the challenge's mask mAP at the images' own resolution (val/map), the Kaggle segmentation submission
for the test split, and pictures with boxes and masks to the loggers.

Everything but the masks is the detection task's (tasks/openimages/detection/module.py): this subclass builds
Mask R-CNN, adds the masks to the training targets (group-of boxes have none: no mask loss there),
carries the masks through the hierarchy expansion of the predictions and pastes them at full size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from core.io import make_dirs
from tasks.openimages.detection.module import OpenImagesDetectionTask
from tasks.openimages.metrics import OpenImagesChallengeMaskMAP
from tasks.openimages.model import ancestor_copies, mask_rcnn
from tasks.openimages.submission import write_segmentation_submission

MASK_THRESHOLD = 0.5  # Mask R-CNN's binarization of the per-pixel probabilities (He et al. 2017, sec. 3)


def full_resolution_masks(probabilities: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Mask probabilities (n, h, w) at the network's input size resized (bilinear) to ``size`` =
    (height, width) of the original image and binarized: the masks the challenge scores."""
    if probabilities.shape[-2:] != tuple(size) and len(probabilities):
        probabilities = F.interpolate(probabilities[:, None].float(), size=size, mode="bilinear", align_corners=False)
        probabilities = probabilities[:, 0]
    return probabilities >= MASK_THRESHOLD


class OpenImagesSegmentationTask(OpenImagesDetectionTask):
    """Mask R-CNN (torchvision builder, the ``detector`` config) on Open Images boxes and masks; the
    arguments are the detection task's. Needs the samples of
    ``datamodules.openimages.OpenImagesSegmentationDataModule`` (``masks``, ``has_mask``,
    ``eval_masks``, ``original_size``)."""

    metric_class = OpenImagesChallengeMaskMAP
    picture_key = "segmentations"

    def build_model(self) -> torch.nn.Module:
        return mask_rcnn(self.hparams.num_classes, **self.hparams.detector)

    def training_targets(self, batch: list[dict]) -> list[dict[str, torch.Tensor]]:
        """The detection targets plus ``masks`` (m, H, W) and ``has_mask`` (m,) per image."""
        targets = super().training_targets(batch)
        for target, item in zip(targets, batch):
            target["masks"] = item["masks"]
            target["has_mask"] = item["has_mask"]
        return targets

    def detect(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Detections per image (pixels, 0-based labels, ``masks`` (n, H, W) probabilities at the
        input size), each copied with its mask to the ancestors of its class if configured."""
        out = []
        for d in self.model(images):
            labels = d["labels"] - 1
            index = torch.arange(len(labels), device=labels.device)
            if self.hparams.expand_predictions:
                index, labels = ancestor_copies(labels, self.class_ancestors)
            masks = d["masks"][:, 0] if len(d["masks"]) else d["masks"].new_zeros(0, *images[0].shape[-2:])
            out.append(
                {"labels": labels, "scores": d["scores"][index], "boxes": d["boxes"][index], "masks": masks[index]}
            )
        return out

    def metric_inputs(self, batch: list[dict], preds: list[dict]) -> tuple[list[dict], list[dict]]:
        """Predictions and ground truth at each image's own size (boxes in its pixels, bool masks)."""
        scored, targets = [], []
        for item, pred in zip(batch, preds):
            width, height = item["original_size"]
            in_h, in_w = item["image"].shape[-2:]
            scale = torch.tensor([width / in_w, height / in_h] * 2, dtype=torch.float32)
            scored.append(
                {
                    "labels": pred["labels"],
                    "scores": pred["scores"],
                    "boxes": pred["boxes"] * scale.to(pred["boxes"].device),
                    "masks": full_resolution_masks(pred["masks"], (height, width)),
                }
            )
            targets.append(
                {
                    "labels": item["eval_labels"],
                    "boxes": item["eval_boxes"] * scale,
                    "masks": item["eval_masks"],
                    "group_of": item["eval_group_of"],
                    "verified": item["verified"],
                }
            )
        return scored, targets

    def submission_rows(self, batch: list[dict], preds: list[dict]) -> list[tuple]:
        """Rows of the Kaggle segmentation submission: image, its size, class MIDs, scores, full-size masks."""
        rows = []
        for item, pred in zip(batch, preds):
            width, height = item["original_size"]
            masks = pred["masks"].cpu().numpy()
            rows.append(
                (
                    item["image_name"],
                    (width, height, self.class_mids(pred["labels"]), pred["scores"].cpu().tolist(), masks),
                )
            )
        return rows

    def write_submission(self, predictions: dict[str, tuple]) -> None:
        write_segmentation_submission(make_dirs(self.trainer.default_root_dir) / "test_submission.csv", predictions)

    def draw(self, image: torch.Tensor, pred: dict, keep: torch.Tensor, names: list[str]) -> torch.Tensor:
        """The image with the kept detections' masks (one colour per class) and boxes drawn."""
        labels = pred["labels"][keep].tolist()
        colours = [_CLASS_COLOURS[label % len(_CLASS_COLOURS)] for label in labels]
        masks = pred["masks"][keep].cpu() >= MASK_THRESHOLD
        if len(masks):
            image = draw_segmentation_masks(image, masks, alpha=0.45, colors=colours)
        return draw_bounding_boxes(image, pred["boxes"][keep].cpu(), labels=names, colors=colours)


_CLASS_COLOURS = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
]  # fmt: skip
