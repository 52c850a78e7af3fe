"""Open Images detection task: Faster R-CNN trained with the challenge's label rules, scored with the
challenge metric (val/map), predictions expanded up the class hierarchy, pictures to the loggers."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torchvision.utils import draw_bounding_boxes

from core.io import make_dirs
from core.media import log_image
from core.metrics import gather_objects
from core.optim import configure_optimizers
from tasks.openimages.metrics import OpenImagesChallengeMAP
from tasks.openimages.model import (
    challenge_detection_losses,
    detector_arguments,
    expand_to_ancestors,
    faster_rcnn,
    merge_copies,
    use_sigmoid_scores,
)
from tasks.openimages.submission import write_detection_submission


class OpenImagesDetectionTask(pl.LightningModule):
    """Faster R-CNN (torchvision builder) on Open Images boxes; ``detector``: the arguments of
    ``tasks.openimages.model.region_cnn`` (backbone, input size, anchors, weights), shared by all tracks.

    ``label_rules``: train with the challenge's rules (classes neither annotated nor verified are not
    negatives; background proposals inside group-of boxes ignored; tasks/openimages/model.py); false
    gives torchvision's plain losses. ``classifier``: ``softmax`` (one class per box; the unknown
    classes masked out) or ``sigmoid`` (one sigmoid per class, a box's class and all its ancestors as
    positives, only the image's known classes weighted: the TF Object Detection API's weighting of the
    verified labels, so parent classes are learned, not pushed down). ``expand_predictions``: copy each
    detection to the ancestors of its class (the evaluator expands only the ground truth), then merge
    the copies that land on one object of one class (per-class NMS)."""

    def __init__(
        self,
        num_classes: int,
        detector: dict | None = None,
        label_rules: bool = True,
        classifier: str = "softmax",
        expand_predictions: bool = True,
        score_threshold: float = 0.01,
        detections_per_image: int = 100,
        num_sample_images: int = 4,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
    ):
        super().__init__()
        detector = detector_arguments(detector)  # saved complete: predict.py reads the input size from it
        self.save_hyperparameters()
        if classifier not in ("softmax", "sigmoid"):
            raise ValueError(f"task.classifier={classifier!r}: expected softmax or sigmoid")
        if classifier == "sigmoid" and not label_rules:
            raise ValueError("task.classifier=sigmoid is trained with the label rules: set task.label_rules=true")
        self.model = self.build_model()
        if classifier == "sigmoid":
            use_sigmoid_scores(self.model)
        self.model.roi_heads.score_thresh = score_threshold
        self.model.roi_heads.detections_per_img = detections_per_image
        self.val_map = self.metric_class(num_classes)
        self.test_map = self.metric_class(num_classes)
        self.class_ancestors: list[list[int]] = [[] for _ in range(num_classes)]
        self.class_names: list[str] = []
        self.display_names: list[str] = []
        self._test_rows: list[tuple] = []

    metric_class = OpenImagesChallengeMAP
    picture_key = "detections"  # pictures logged under <stage>/<picture_key>

    def build_model(self) -> torch.nn.Module:
        """The network the hyper-parameters describe (subclasses: Mask R-CNN)."""
        return faster_rcnn(self.hparams.num_classes, **self.hparams.detector)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and getattr(dm, "class_ancestors", None):
            if dm.num_classes != self.hparams.num_classes:
                raise ValueError(f"task.num_classes={self.hparams.num_classes} but the data set has {dm.num_classes}")
            self.class_ancestors = [list(a) for a in dm.class_ancestors]
            self.class_names = list(dm.class_names)
            self.display_names = list(getattr(dm, "display_names", []) or dm.class_names)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["openimages"] = {
            "class_ancestors": self.class_ancestors,
            "class_names": self.class_names,
            "display_names": self.display_names,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("openimages", {})
        self.class_ancestors = saved.get("class_ancestors", self.class_ancestors)
        self.class_names = saved.get("class_names", self.class_names)
        self.display_names = saved.get("display_names", self.display_names)

    def training_step(self, batch: list[dict], batch_idx: int) -> torch.Tensor:
        images = [item["image"] for item in batch]
        targets = self.training_targets(batch)
        if self.hparams.label_rules:
            losses = challenge_detection_losses(
                self.model, images, targets, self.hparams.classifier, self.class_ancestors
            )
        else:
            plain = [{k: v for k, v in t.items() if k not in ("group_of", "known")} for t in targets]
            losses = self.model(images, [{**t, "labels": t["labels"] + 1} for t in plain])
        loss = sum(losses.values())
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, batch_size=len(batch))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def training_targets(self, batch: list[dict]) -> list[dict[str, torch.Tensor]]:
        """Per image: ``boxes``, 0-based ``labels``, ``group_of`` and ``known`` (classes annotated or
        verified there), as :func:`challenge_detection_losses` takes them."""
        return [
            {"boxes": b["boxes"], "labels": b["labels"], "group_of": b["group_of"],
             "known": torch.unique(torch.cat([b["labels"], b["verified"]]))}
            for b in batch
        ]  # fmt: skip

    def detect(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Detections per image (pixels, 0-based labels), expanded to ancestors if configured."""
        out = []
        for d in self.model(images):
            labels, scores, boxes = d["labels"] - 1, d["scores"], d["boxes"]
            if self.hparams.expand_predictions:
                labels, scores, boxes = expand_to_ancestors(labels, scores, boxes, self.class_ancestors)
                labels, scores, boxes = merge_copies(labels, scores, boxes, self.model.roi_heads.nms_thresh)
            out.append({"labels": labels, "scores": scores, "boxes": boxes})
        return out

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict[str, torch.Tensor]]:
        """predict.py: per image of ``batch["image"]`` its detections with boxes normalized to the
        image ([0, 1], x1 y1 x2 y2), as in the submission, and the mask probabilities at the input
        size where ``detect`` gives them (tasks/openimages/predict.py writes them)."""
        if not batch["inputs"]:  # every file of the batch was unreadable
            return []
        out = []
        for image, pred in zip(batch["image"], self.detect(list(batch["image"]))):
            h, w = image.shape[-2:]
            boxes = (pred["boxes"] / pred["boxes"].new_tensor([w, h, w, h])).clamp(0, 1)
            item = {"labels": pred["labels"].cpu(), "scores": pred["scores"].cpu(), "boxes": boxes.cpu()}
            if "masks" in pred:
                item["masks"] = pred["masks"].cpu()
            out.append(item)
        return out

    def _evaluate(self, batch: list[dict], batch_idx: int, metric: OpenImagesChallengeMAP, stage: str) -> None:
        if not batch:
            return
        preds = self.detect([item["image"] for item in batch])
        scored, targets = self.metric_inputs(batch, preds)
        metric.update([b["image_id"] for b in batch], scored, targets)
        if stage == "test":
            self._test_rows.extend(self.submission_rows(batch, scored))
        if batch_idx == 0 and self.hparams.num_sample_images > 0:
            self._log_pictures(batch, preds, f"{stage}/{self.picture_key}")

    def metric_inputs(self, batch: list[dict], preds: list[dict]) -> tuple[list[dict], list[dict]]:
        """What the challenge metric scores: the predictions and the expanded ground truth per image."""
        targets = [
            {
                "boxes": b["eval_boxes"],
                "labels": b["eval_labels"],
                "group_of": b["eval_group_of"],
                "verified": b["verified"],
            }
            for b in batch
        ]
        return preds, targets

    def class_mids(self, labels: torch.Tensor) -> list[str]:
        """Class MIDs of class ids (the id itself where the class list is unknown)."""
        return [self.class_names[i] if i < len(self.class_names) else str(i) for i in labels.tolist()]

    def submission_rows(self, batch: list[dict], preds: list[dict]) -> list[tuple]:
        """Rows of the Kaggle detection submission: image, class MIDs, scores, normalized boxes."""
        rows = []
        for b, p in zip(batch, preds):
            h, w = b["image"].shape[-2:]
            scale = p["boxes"].new_tensor([w, h, w, h])
            boxes = (p["boxes"] / scale).clamp(0, 1).cpu().numpy()
            rows.append((b["image_name"], (self.class_mids(p["labels"]), p["scores"].cpu().tolist(), boxes)))
        return rows

    def write_submission(self, predictions: dict[str, tuple]) -> None:
        """The test split's Kaggle submission, ``test_submission.csv`` in the run folder (atomic)."""
        write_detection_submission(make_dirs(self.trainer.default_root_dir) / "test_submission.csv", predictions)

    def draw(self, image: torch.Tensor, pred: dict, keep: torch.Tensor, names: list[str]) -> torch.Tensor:
        """One picture: the uint8 image with the kept predictions drawn."""
        return draw_bounding_boxes(image, pred["boxes"][keep].cpu(), labels=names, colors="white")

    def _log_pictures(self, batch: list[dict], preds: list[dict], key: str) -> None:
        pictures = []
        for item, pred in list(zip(batch, preds))[: self.hparams.num_sample_images]:
            keep = pred["scores"] >= 0.3
            shown = self.display_names or self.class_names
            names = [shown[i] if i < len(shown) else str(i) for i in pred["labels"][keep].tolist()]
            image = (item["image"].clamp(0, 1) * 255).to(torch.uint8).cpu()
            pictures.append(self.draw(image, pred, keep, names))
        log_image(self, key, pictures)

    def validation_step(self, batch: list[dict], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, self.val_map, "val")

    def test_step(self, batch: list[dict], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, self.test_map, "test")

    def _log_metric(self, metric: OpenImagesChallengeMAP, stage: str) -> None:
        values = metric.compute()
        self.log(f"{stage}/map", values["map"].float(), sync_dist=False)
        metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metric(self.val_map, "val")

    def on_test_epoch_end(self) -> None:
        self._log_metric(self.test_map, "test")
        rows = gather_objects(self._test_rows)  # collective: every rank calls it
        self._test_rows = []
        if self.trainer.is_global_zero and rows:
            self.write_submission(dict(sorted(dict(rows).items())))

    def configure_optimizers(self) -> Any:
        return configure_optimizers(self, self.hparams.optimizer, self.hparams.scheduler)
