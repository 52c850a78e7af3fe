"""Open Images on a user's images (predict.py): the challenge's Kaggle submission for those images and
a picture per image, for each track.

    python predict.py task=openimages_detection ckpt_path=<checkpoint> input=<folder of images>
    python predict.py task=openimages_segmentation ckpt_path=<checkpoint> input=<folder of images>
    python predict.py task=openimages_relationship ckpt_path=<checkpoint> input=<folder of images>

``submission.csv``: the track's Kaggle file (``ImageId`` is the file name without its suffix, or the
relative name where two files share one; class MIDs; boxes normalized to the image): detection groups
``label conf xmin ymin xmax ymax``; segmentation ``ImageID,ImageWidth,ImageHeight`` and groups ``label
conf mask`` (COCO RLE of the mask at the image's own size, zlib, base64); relationships groups ``conf
label1 box1 label2 box2 relationship``. Pictures, each image at its own resolution:
``detections/<name>.png`` (boxes over ``draw_threshold`` captioned with display names and scores; a box
copied to the ancestors of its class gets one frame captioned with all of them),
``segmentations/<name>.png`` (masks blended in too), ``relationships/<name>.png`` (the best triplets).

Each image is resized to the training data's image size (``task.detector.max_size`` wide, ``task.detector.min_size``
high, as the task configs set them from ``data.image_size``), as the DataModules do, so predictions on
a data set's own images equal its test submission's."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from core.io import atomic_path
from core.prediction import ProductWriter
from tasks.openimages.submission import write_detection_submission

log = logging.getLogger(__name__)

SUBMISSION_FILE = "submission.csv"
PICTURE_DIR = "detections"
# One colour per class (cycled), bright on the darker photos most users have.
PALETTE = (
    (255, 64, 64), (64, 200, 64), (64, 128, 255), (255, 200, 0), (230, 64, 230),
    (0, 220, 220), (255, 128, 0), (160, 96, 255), (128, 255, 128), (255, 255, 255),
)  # fmt: skip


def image_ids(paths: list[Path], fallback: list[str]) -> list[str]:
    """Submission ids: the file names without suffix (the release's ``<ImageID>.jpg``) when they are
    unique, else ``fallback`` (each input's relative name), with a warning."""
    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    warnings.warn(
        "two input files share a name without suffix: the submission's ImageId is each file's relative "
        "name ('/' written '__') instead",
        stacklevel=2,
    )
    return list(fallback)


def to_tensor(image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """The DataModule's preprocessing: RGB resized (bilinear) to ``size`` = (width, height), in [0, 1]."""
    image = image.convert("RGB").resize(size, Image.BILINEAR)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)


def draw_detections(
    image: Image.Image,
    boxes: np.ndarray,
    captions: list[str],
    colours: list[tuple[int, int, int]],
    masks: list[np.ndarray] | None = None,
) -> Image.Image:
    """``image`` with each box (pixels, x1 y1 x2 y2) framed in its colour and captioned; a mask
    (bool, the image's height x width) is blended in the same colour first."""
    canvas = image.convert("RGB")
    if masks:
        pixels = np.asarray(canvas, dtype=np.float32)
        for mask, colour in zip(masks, colours):
            pixels[mask] = 0.5 * pixels[mask] + 0.5 * np.asarray(colour, dtype=np.float32)
        canvas = Image.fromarray(pixels.round().astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(min(canvas.size) / 200))
    for (x1, y1, x2, y2), caption, colour in zip(boxes, captions, colours):
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        left, top, right, bottom = draw.textbbox((x1, y1), caption)
        # the caption above the box (inside it at the top edge), moved left to stay in the picture
        top_y = y1 - (bottom - top) - 2 if y1 - (bottom - top) - 2 >= 0 else y1
        x = max(0, min(x1, canvas.width - (right - left) - 4))
        draw.rectangle([x, top_y, x + (right - left) + 3, top_y + (bottom - top) + 2], fill=colour)
        draw.text((x + 2, top_y + 1 - (top - y1)), caption, fill=(0, 0, 0))
    return canvas


def merge_copies(scores: list[float], boxes: np.ndarray, labels: list[int]) -> list[tuple[list[int], float, int]]:
    """Detections that share their box and score exactly (a detection and its copies to the ancestors
    of its class) as one entry: ([classes, the detected one first], score, index of the first), in
    the given order."""
    merged: dict[tuple, tuple[list[int], float, int]] = {}
    for index, (label, score, box) in enumerate(zip(labels, scores, boxes)):
        key = (float(score), *np.asarray(box, dtype=np.float64).tolist())
        if key in merged:
            merged[key][0].append(label)
        else:
            merged[key] = ([label], float(score), index)
    return list(merged.values())


class OpenImagesDetectionProduct(ProductWriter):
    """The Kaggle detection submission for a user's images and a picture per image.

    ``class_descriptions``: a ``MID,DisplayName`` file (class-descriptions-boxable.csv) for a
    checkpoint that holds no class names; ``image_size`` ([width, height]) overrides the training
    size; ``draw_threshold``: the lowest score drawn (the submission keeps every detection)."""

    input_kind = "images"

    def __init__(
        self,
        draw_threshold: float = 0.3,
        pictures: bool = True,
        class_descriptions: str | None = None,
        image_size: list[int] | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= draw_threshold <= 1.0:
            raise ValueError(f"product.writer.draw_threshold={draw_threshold}: must be in [0, 1]")
        self.draw_threshold, self.pictures = float(draw_threshold), bool(pictures)
        self.class_descriptions = class_descriptions
        self.image_size = tuple(int(v) for v in image_size) if image_size else None
        self.class_names: list[str] = []
        self.display_names: list[str] = []

    def bind(self, task, checkpoint: dict[str, Any]) -> None:
        num_classes = int(task.hparams.num_classes)
        if self.class_descriptions:
            from datamodules.openimages_files import read_class_descriptions

            classes = read_class_descriptions(Path(self.class_descriptions))
            names, shown = list(classes), list(classes.values())
            source = self.class_descriptions
        else:
            names, source = list(task.class_names), "the checkpoint"
            shown = list(task.display_names) or names
            if not names:
                raise ValueError(
                    "the checkpoint holds no class MIDs (the submission names classes by MID): give "
                    "product.writer.class_descriptions=<class-descriptions-boxable.csv of its training data>"
                )
        if len(names) != num_classes:
            raise ValueError(f"{source}: {len(names)} classes for a {num_classes}-class model")
        self.class_names, self.display_names = names, shown
        if self.image_size is None:
            self.image_size = (int(task.hparams.detector["max_size"]), int(task.hparams.detector["min_size"]))

    def prepare(self, image) -> dict[str, Any]:
        return {"image": to_tensor(image, self.image_size), "size": image.size}

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return {"image": [s["image"] for s in samples], "size": [s["size"] for s in samples]}

    def detections(self, prediction: dict) -> tuple[list[int], list[float], np.ndarray]:
        labels = prediction["labels"].tolist()
        scores = prediction["scores"].float().tolist()
        return labels, scores, prediction["boxes"].double().numpy().reshape(-1, 4)

    def caption(self, classes: list[int], score: float) -> str:
        return f"{', '.join(self.display_names[c] for c in classes)} {score:.2f}"

    def picture(self, path: str, prediction: dict, masks: np.ndarray | None = None) -> Image.Image:
        """The input at its own size with the detections over ``draw_threshold`` drawn (and their
        ``masks``, bool (n, height, width) at that size, where given)."""
        labels, scores, boxes = self.detections(prediction)
        kept = [m for m in merge_copies(scores, boxes, labels) if m[1] >= self.draw_threshold]
        with Image.open(path) as image:
            image = image.convert("RGB")
        w, h = image.size
        return draw_detections(
            image,
            np.array([boxes[i] * [w, h, w, h] for _, _, i in kept]).reshape(-1, 4),
            [self.caption(classes, score) for classes, score, _ in kept],
            [PALETTE[classes[0] % len(PALETTE)] for classes, _, _ in kept],
            [masks[i] for _, _, i in kept] if masks is not None else None,
        )

    picture_dir = PICTURE_DIR

    def write_item(self, run_dir: Path, name: str, prediction: dict, batch: dict, index: int) -> dict:
        labels, scores, boxes = self.detections(prediction)
        record = {
            "labels": [self.class_names[c] for c in labels],
            "scores": scores,  # float32 values, exact: rounding them would merge scores into ties
            "boxes": boxes.tolist(),
            "width": int(batch["size"][index][0]),
            "height": int(batch["size"][index][1]),
        }
        masks = self.full_masks(prediction, record["width"], record["height"])
        if masks is not None:
            from tasks.openimages.submission import encode_mask

            record["masks"] = [encode_mask(m) for m in masks]
        if self.pictures:
            picture = self.picture(batch["inputs"][index], prediction, masks)
            with atomic_path(run_dir / self.picture_dir / f"{name}.png") as tmp:
                picture.save(tmp, format="PNG")
            record["picture"] = f"{self.picture_dir}/{name}.png"
        return record

    def full_masks(self, prediction: dict, width: int, height: int) -> np.ndarray | None:
        """The detections' bool masks at the input's own size (None: a detector has no masks)."""
        return None

    def write_submission(self, path: Path, ids: list[str], records: list[dict[str, Any]]) -> None:
        predictions = {
            image_id: (r["labels"], r["scores"], np.asarray(r["boxes"], dtype=np.float64).reshape(-1, 4))
            for image_id, r in zip(ids, records)
        }
        write_detection_submission(path, predictions)

    def merge(self, run_dir: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        ids = image_ids([Path(r["input"]) for r in records], [r["name"] for r in records])
        self.write_submission(run_dir / SUBMISSION_FILE, ids, records)
        products = {"submission_csv": SUBMISSION_FILE, **self.counts(records)}
        if self.pictures:
            products["pictures"] = self.picture_dir
        return products

    def counts(self, records: list[dict[str, Any]]) -> dict[str, int]:
        """What the summary counts over all images."""
        return {"detections": sum(len(r["labels"]) for r in records)}


class DecodedMasks(Mapping):
    """``{image id: (width, height, labels, scores, masks)}`` over journal records whose masks are
    challenge text, decoding one image's masks at a time (the writer's input, without every image's
    full-resolution masks in memory at once)."""

    def __init__(self, ids: list[str], records: list[dict[str, Any]]) -> None:
        self.records = dict(zip(ids, records))

    def __getitem__(self, image_id: str) -> tuple:
        from tasks.openimages.submission import decode_mask

        r = self.records[image_id]
        width, height = r["width"], r["height"]
        masks = np.zeros((len(r["masks"]), height, width), dtype=bool)
        for k, text in enumerate(r["masks"]):
            masks[k] = decode_mask(text, height, width)
        return width, height, r["labels"], r["scores"], masks

    def __iter__(self) -> Iterator[str]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)


class OpenImagesSegmentationProduct(OpenImagesDetectionProduct):
    """The Kaggle instance-segmentation submission for a user's images (``submission.csv``:
    ``ImageID,ImageWidth,ImageHeight,PredictionString``, groups ``label conf mask``, each mask the COCO
    RLE of the full-resolution mask, zlib-compressed, base64) and ``segmentations/<name>.png`` (masks
    and boxes drawn). Masks are Mask R-CNN's probabilities at the network's input size resized to the
    image's own size and binarized, as the segmentation task's test submission makes them."""

    picture_dir = "segmentations"

    def full_masks(self, prediction: dict, width: int, height: int) -> np.ndarray:
        from tasks.openimages.segmentation.module import full_resolution_masks

        return full_resolution_masks(prediction["masks"], (height, width)).numpy()

    def write_submission(self, path: Path, ids: list[str], records: list[dict[str, Any]]) -> None:
        from tasks.openimages.submission import write_segmentation_submission

        write_segmentation_submission(path, DecodedMasks(ids, records))


class OpenImagesRelationshipProduct(OpenImagesDetectionProduct):
    """The Kaggle visual-relationship submission for a user's images (``submission.csv``:
    ``ImageId,PredictionString``, groups ``conf label1 xmin1 ymin1 xmax1 ymax1 label2 xmin2 ymin2 xmax2
    ymax2 relationship``, entity MIDs and relationship names, normalized boxes) and
    ``relationships/<name>.png``: the ``triplets_drawn`` best triplets scoring at least
    ``draw_threshold``, subject and object framed in one colour per triplet, the subject captioned
    "subject relationship object score" and the object with its class."""

    picture_dir = "relationships"

    def __init__(
        self,
        draw_threshold: float = 0.3,
        pictures: bool = True,
        triplets_drawn: int = 5,
        image_size: list[int] | None = None,
    ) -> None:
        super().__init__(draw_threshold=draw_threshold, pictures=pictures, image_size=image_size)
        if triplets_drawn < 0:
            raise ValueError(f"product.writer.triplets_drawn={triplets_drawn}: must be >= 0")
        self.triplets_drawn = int(triplets_drawn)
        self.entity_names: list[str] = []
        self.entity_display_names: list[str] = []
        self.relationship_names: list[str] = []

    def bind(self, task, checkpoint: dict[str, Any]) -> None:
        self.entity_names = list(task.entity_names)
        if not self.entity_names:
            raise ValueError(
                "the checkpoint holds no entity MIDs (the submission names subjects and objects by MID): "
                "it was saved without its relationship DataModule"
            )
        self.entity_display_names = list(task.entity_display_names) or self.entity_names
        self.relationship_names = list(task.relationship_names)
        if self.image_size is None:
            self.image_size = (int(task.hparams.detector["max_size"]), int(task.hparams.detector["min_size"]))

    def write_item(self, run_dir: Path, name: str, prediction: dict, batch: dict, index: int) -> dict:
        columns = zip(
            prediction["scores"].float().tolist(),
            prediction["subject_labels"].tolist(),
            prediction["object_labels"].tolist(),
            prediction["relationships"].tolist(),
            prediction["subject_boxes"].double().tolist(),
            prediction["object_boxes"].double().tolist(),
        )
        triplets = [
            {
                "score": score,  # float32 value, exact
                "label1": self.entity_names[s],
                "label2": self.entity_names[o],
                "box1": b1,
                "box2": b2,
                "relationship": self.relationship_names[r],
                "caption": (self.entity_display_names[s], self.relationship_names[r], self.entity_display_names[o]),
            }
            for score, s, o, r, b1, b2 in columns
        ]
        record = {
            "triplets": triplets,
            "width": int(batch["size"][index][0]),
            "height": int(batch["size"][index][1]),
        }
        if self.pictures:
            picture = self.triplet_picture(batch["inputs"][index], triplets)
            with atomic_path(run_dir / self.picture_dir / f"{name}.png") as tmp:
                picture.save(tmp, format="PNG")
            record["picture"] = f"{self.picture_dir}/{name}.png"
        return record

    def triplet_picture(self, path: str, triplets: list[dict]) -> Image.Image:
        """The input at its own size with its best triplets (they come best first) drawn."""
        shown = [t for t in triplets if t["score"] >= self.draw_threshold][: self.triplets_drawn]
        with Image.open(path) as image:
            image = image.convert("RGB")
        w, h = image.size
        boxes, captions, colours = [], [], []
        for k, t in enumerate(shown):
            subject, relationship, obj = t["caption"]
            boxes += [np.asarray(t["box1"]) * [w, h, w, h], np.asarray(t["box2"]) * [w, h, w, h]]
            captions += [f"{subject} {relationship} {obj} {t['score']:.2f}", obj]
            colours += [PALETTE[k % len(PALETTE)]] * 2
        return draw_detections(image, np.array(boxes).reshape(-1, 4), captions, colours)

    def write_submission(self, path: Path, ids: list[str], records: list[dict[str, Any]]) -> None:
        from datamodules.openimages_relationships import Relationship
        from tasks.openimages.relationship.protocol import write_relationship_submission

        predictions = {
            image_id: [
                (
                    t["score"],
                    Relationship(t["label1"], t["label2"], tuple(t["box1"]), tuple(t["box2"]), t["relationship"]),
                )
                for t in r["triplets"]
            ]
            for image_id, r in zip(ids, records)
        }
        write_relationship_submission(path, predictions)

    def counts(self, records: list[dict[str, Any]]) -> dict[str, int]:
        return {"triplets": sum(len(r["triplets"]) for r in records)}
