"""Open Images visual-relationship task: the relationship detector of model.py (Faster
R-CNN + pair classifier) trained on the relationship files, scored with the challenge's relationship
score (val/score, monitor), a Kaggle relationship submission for the test split, pictures of the best
triplets to the loggers."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torchvision.utils import draw_bounding_boxes

from core.io import make_dirs
from core.media import log_image
from core.metrics import gather_objects
from core.optim import configure_optimizers
from datamodules.openimages_relationships import ATTRIBUTE_RELATIONSHIP, Relationship
from tasks.openimages.model import detector_arguments
from tasks.openimages.relationship.metrics import OpenImagesRelationshipScore
from tasks.openimages.relationship.model import RelationshipDetector
from tasks.openimages.relationship.protocol import write_relationship_submission

LOGGED = ("score", "map_relationship", "recall50_relationship", "map_phrase")
# Submission precision (tasks/openimages/relationship/protocol.py writes boxes with 6 decimals): the metric
# sees the boxes rounded alike, so the written file re-scores to the logged number.
BOX_DECIMALS = 6
TRIPLET_COLOURS = ("red", "blue", "yellow", "cyan", "magenta", "orange")


class OpenImagesRelationshipTask(pl.LightningModule):
    """Visual relationship detection on Open Images (docs/openimages.md, "Relationship detector").

    Classes: ``num_classes`` detection classes (class-descriptions-boxable.csv); relationships are
    scored over the data set's entities (the track's classes, then attributes) and
    ``num_relationships`` relationship names, both read from the DataModule in ``setup`` and kept in
    checkpoints. A triplet's score = subject score * object score * p(relationship | pair); with
    ``num_attributes`` (the data set's attributes) and an "is" relationship, attribute triplets score
    detection score * p(attribute | box). ``relationship_loss_weight`` scales the pair (and attribute)
    classifier's loss against the detector's (challenge label rules). ``detector``: the shared
    region-CNN arguments (tasks/openimages/model.py, ``region_cnn``), as for the detection task."""

    def __init__(
        self,
        num_classes: int,
        num_relationships: int,
        detector: dict | None = None,
        hidden_dim: int = 256,
        embedding_dim: int = 32,
        boxes_per_image: int = 16,
        relationships_per_image: int = 100,
        max_pairs_per_image: int = 64,
        num_attributes: int = 0,
        relationship_loss_weight: float = 1.0,
        score_threshold: float = 0.01,
        num_sample_images: int = 4,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
    ):
        super().__init__()
        detector = detector_arguments(detector)  # saved complete: predict.py reads the input size from it
        self.save_hyperparameters()
        self.model = RelationshipDetector(
            num_classes, num_relationships, detector, hidden_dim, embedding_dim, boxes_per_image,
            relationships_per_image, max_pairs_per_image, num_attributes,
        )  # fmt: skip
        self.model.detector.roi_heads.score_thresh = score_threshold
        self.val_score = OpenImagesRelationshipScore(num_relationships)
        self.test_score = OpenImagesRelationshipScore(num_relationships)
        # Label maps (set from the DataModule; without one, every detection class is an entity)
        self.class_names: list[str] = []
        self.entity_names: list[str] = []
        self.entity_display_names: list[str] = []
        self.entity_classes: list[int] = list(range(num_classes))
        self.relationship_names: list[str] = [str(r) for r in range(num_relationships)]
        self._test_rows: list[tuple] = []

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not getattr(dm, "entity_names", None):
            return
        attributes = sum(c < 0 for c in dm.entity_classes)
        if self.hparams.num_attributes not in (0, attributes):
            raise ValueError(f"task.num_attributes={self.hparams.num_attributes}, but the data set has {attributes}")
        if dm.num_classes != self.hparams.num_classes or dm.num_relationships != self.hparams.num_relationships:
            raise ValueError(
                f"task.num_classes={self.hparams.num_classes}, task.num_relationships="
                f"{self.hparams.num_relationships}, but the data set has {dm.num_classes} classes and "
                f"{dm.num_relationships} relationships"
            )
        self.class_names = list(dm.class_names)
        self.entity_names = list(dm.entity_names)
        self.entity_display_names = list(dm.entity_display_names)
        self.entity_classes = list(dm.entity_classes)
        self.relationship_names = list(dm.relationship_names)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["openimages_relationships"] = {
            key: getattr(self, key)
            for key in ("class_names", "entity_names", "entity_display_names", "entity_classes", "relationship_names")
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        for key, value in checkpoint.get("openimages_relationships", {}).items():
            setattr(self, key, value)

    # -- label maps: entity ids (data set, metric, submission) <-> detection class ids (model) -------
    def _entity_class(self) -> torch.Tensor:
        return torch.tensor(self.entity_classes, dtype=torch.int64, device=self.device)

    def _attribute_entities(self) -> torch.Tensor:
        """Entity id of each attribute (the entities without a detection class, in order)."""
        return torch.tensor(
            [e for e, c in enumerate(self.entity_classes) if c < 0], dtype=torch.int64, device=self.device
        )

    @property
    def attribute_relationship(self) -> int | None:
        """The id of "is" when attribute triplets are predicted (the model has attributes), else None."""
        if not self.hparams.num_attributes or ATTRIBUTE_RELATIONSHIP not in self.relationship_names:
            return None
        return self.relationship_names.index(ATTRIBUTE_RELATIONSHIP)

    def _class_entity(self) -> torch.Tensor:
        out = torch.full((self.hparams.num_classes,), -1, dtype=torch.int64, device=self.device)
        for entity, cls in enumerate(self.entity_classes):
            if cls >= 0:
                out[cls] = entity
        return out

    def training_step(self, batch: list[dict], batch_idx: int) -> torch.Tensor:
        entity_class = self._entity_class()
        entity_attribute = torch.full_like(entity_class, -1)
        entity_attribute[self._attribute_entities()] = torch.arange(len(self._attribute_entities()), device=self.device)
        targets = []
        for b in batch:
            subject, obj = entity_class[b["subject_labels"]], entity_class[b["object_labels"]]
            keep = (subject >= 0) & (obj >= 0)  # two boxes: the pair classifier
            attribute = entity_attribute[b["object_labels"]]
            is_rel = b["relationships"] == (-1 if self.attribute_relationship is None else self.attribute_relationship)
            has = (subject >= 0) & (attribute >= 0) & is_rel  # "is" an attribute: the attribute classifier
            targets.append(
                {
                    "boxes": b["boxes"], "labels": b["labels"], "group_of": b["group_of"],
                    "known": torch.unique(torch.cat([b["labels"], b["verified"]])),
                    "subject_boxes": b["subject_boxes"][keep], "subject_labels": subject[keep],
                    "object_boxes": b["object_boxes"][keep], "object_labels": obj[keep],
                    "relationships": b["relationships"][keep],
                    "attribute_boxes": b["subject_boxes"][has], "attribute_labels": subject[has],
                    "attributes": attribute[has],
                }
            )  # fmt: skip
        losses = self.model.losses([b["image"] for b in batch], targets)
        if "loss_attribute" in losses and self.attribute_relationship is None:
            # no "is" in the relationship names: the attributes are never predicted, so not trained
            # (a zero loss keeps their parameters in the graph, as DDP wants)
            losses["loss_attribute"] = losses["loss_attribute"] * 0.0
        pair_losses = ("loss_relationship", "loss_attribute")
        loss = sum(v for k, v in losses.items() if k not in pair_losses)
        loss = loss + self.hparams.relationship_loss_weight * sum(v for k, v in losses.items() if k in pair_losses)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, batch_size=len(batch))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def detect(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Triplets per image with entity ids and boxes normalized to the image, rounded as the
        submission writes them (and the detector's raw output under ``detections``)."""
        class_entity, attribute_entity = self._class_entity(), self._attribute_entities()
        out = []
        triplets = self.model(
            images, pair_classes=class_entity >= 0, attribute_relationship=self.attribute_relationship
        )
        for image, p in zip(images, triplets):
            h, w = image.shape[-2:]
            scale = torch.tensor([w, h, w, h], dtype=torch.float64, device=image.device)
            object_entity = class_entity[p["object_labels"].clamp(max=len(class_entity) - 1)]
            if len(attribute_entity):  # an attribute triplet's object label is an attribute id
                attribute = attribute_entity[p["object_labels"].clamp(max=len(attribute_entity) - 1)]
                object_entity = torch.where(p["object_is_attribute"], attribute, object_entity)
            out.append(
                {
                    "subject_labels": class_entity[p["subject_labels"]],
                    "object_labels": object_entity,
                    "relationships": p["relationships"],
                    "scores": p["scores"],
                    "subject_boxes": (p["subject_boxes"].double() / scale).clamp(0, 1).round(decimals=BOX_DECIMALS),
                    "object_boxes": (p["object_boxes"].double() / scale).clamp(0, 1).round(decimals=BOX_DECIMALS),
                }
            )
        return out

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict[str, torch.Tensor]]:
        """predict.py: per image of ``batch["image"]`` its triplets as :meth:`detect` gives them (entity
        and relationship ids, scores, normalized boxes; tasks/openimages/predict.py writes them)."""
        if not batch["inputs"]:  # every file of the batch was unreadable
            return []
        return [{k: v.cpu() for k, v in p.items() if torch.is_tensor(v)} for p in self.detect(list(batch["image"]))]

    def _evaluate(self, batch: list[dict], batch_idx: int, metric: OpenImagesRelationshipScore, stage: str) -> None:
        if not batch:
            return
        preds = self.detect([b["image"] for b in batch])
        targets = []
        for b in batch:
            h, w = b["image"].shape[-2:]
            scale = torch.tensor([w, h, w, h], dtype=torch.float64, device=b["image"].device)
            targets.append(
                {
                    "subject_labels": b["subject_labels"], "object_labels": b["object_labels"],
                    "relationships": b["relationships"], "image_labels": b["image_labels"],
                    "subject_boxes": b["subject_boxes"].double() / scale,
                    "object_boxes": b["object_boxes"].double() / scale,
                }
            )  # fmt: skip
        metric.update([b["image_id"] for b in batch], preds, targets)
        if stage == "test":  # rows of the Kaggle submission: names, normalized boxes
            names = self.relationship_names
            for b, p in zip(batch, preds):
                columns = zip(
                    p["scores"].tolist(), p["subject_labels"].tolist(), p["object_labels"].tolist(),
                    p["relationships"].tolist(), p["subject_boxes"].tolist(), p["object_boxes"].tolist(),
                )  # fmt: skip
                rows = [
                    (score, Relationship(self._entity(s), self._entity(o), tuple(sb), tuple(ob), names[r]))
                    for score, s, o, r, sb, ob in columns
                ]
                self._test_rows.append((b["image_name"], rows))
        if batch_idx == 0 and self.hparams.num_sample_images > 0:
            self._log_pictures(batch, preds, f"{stage}/relationships")

    def _entity(self, entity: int, display: bool = False) -> str:
        names = (self.entity_display_names if display else self.entity_names) or self.entity_names
        return names[entity] if entity < len(names) else str(entity)

    def _log_pictures(self, batch: list[dict], preds: list[dict], key: str, per_image: int = 3) -> None:
        """Each image with its ``per_image`` best triplets: subject box labelled "subject relationship
        object", object box labelled with its class, one colour per triplet."""
        pictures = []
        for item, pred in list(zip(batch, preds))[: self.hparams.num_sample_images]:
            h, w = item["image"].shape[-2:]
            scale = pred["subject_boxes"].new_tensor([w, h, w, h])
            boxes, labels, colours = [], [], []  # subject and object box of each shown triplet
            for k in range(min(per_image, len(pred["scores"]))):
                s = self._entity(int(pred["subject_labels"][k]), display=True)
                o = self._entity(int(pred["object_labels"][k]), display=True)
                r = self.relationship_names[int(pred["relationships"][k])]
                boxes += [pred["subject_boxes"][k] * scale, pred["object_boxes"][k] * scale]
                labels += [f"{s} {r} {o} {float(pred['scores'][k]):.2f}", o]
                colours += [TRIPLET_COLOURS[k % len(TRIPLET_COLOURS)]] * 2
            image = (item["image"].clamp(0, 1) * 255).to(torch.uint8).cpu()
            if boxes:
                image = draw_bounding_boxes(image, torch.stack(boxes).float().cpu(), labels=labels, colors=colours)
            pictures.append(image)
        log_image(self, key, pictures)

    def validation_step(self, batch: list[dict], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, self.val_score, "val")

    def test_step(self, batch: list[dict], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, self.test_score, "test")

    def _log_metric(self, metric: OpenImagesRelationshipScore, stage: str) -> None:
        values = metric.compute()
        for key in LOGGED:
            self.log(f"{stage}/{key}", values[key].float(), sync_dist=False)
        metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metric(self.val_score, "val")

    def on_test_epoch_end(self) -> None:
        self._log_metric(self.test_score, "test")
        rows = gather_objects(self._test_rows)  # collective: every rank calls it
        self._test_rows = []
        if self.trainer.is_global_zero and rows:
            out = make_dirs(self.trainer.default_root_dir) / "test_submission.csv"
            write_relationship_submission(out, dict(sorted(rows, key=lambda row: row[0])))

    def configure_optimizers(self) -> Any:
        return configure_optimizers(self, self.hparams.optimizer, self.hparams.scheduler)
