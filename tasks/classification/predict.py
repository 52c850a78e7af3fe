"""Image classification on a user's images (predict.py): top-k labels and scores per image in
``predictions.csv`` and a grid of the images with their top label in ``predictions_grid.png``."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.data import DataFormatError
from core.images import decode_image
from core.io import atomic_path, atomic_write_text
from core.prediction import ProductWriter

log = logging.getLogger(__name__)

CSV_FILE = "predictions.csv"
GRID_FILE = "predictions_grid.png"
# Written into the checkpoint by ImageClassificationTask.on_save_checkpoint: the data set's class
# names and its evaluation transform, so a checkpoint alone classifies a user's images.
CHECKPOINT_KEY = "predict_preprocessing"


def read_class_names(path: str | Path) -> list[str]:
    """Class names from a text file: one per line, or ``<id> <name>`` lines (ImageNet synsets.txt)."""
    lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    if lines and all(" " in line for line in lines):
        return [line.partition(" ")[2].strip() for line in lines]
    return lines


class ClassificationProduct(ProductWriter):
    """Top-``top_k`` classes per image (CSV) and a captioned grid of the first ``grid_images``.

    Preprocessing is the evaluation transform of the training data set, read from the checkpoint;
    ``crop_pct``/``mean``/``std`` override it, and ``class_names`` (a text file) overrides or
    supplies the names (checkpoints saved before names were stored hold none: classes are then
    called ``class_<index>``)."""

    input_kind = "images"

    def __init__(
        self,
        top_k: int = 5,
        grid_images: int = 64,
        grid_columns: int = 8,
        thumbnail: int = 128,
        class_names: str | None = None,
        crop_pct: float | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if top_k < 1:
            raise ValueError(f"product.writer.top_k={top_k}: must be >= 1")
        self.top_k, self.grid_images, self.grid_columns = top_k, grid_images, grid_columns
        self.thumbnail = thumbnail
        self.class_names_file, self.crop_pct, self.mean, self.std = class_names, crop_pct, mean, std
        self.names: list[str] = []
        self.transform = None

    def bind(self, task, checkpoint: dict[str, Any]) -> None:
        from timm.data import create_transform

        stored = checkpoint.get(CHECKPOINT_KEY) or {}
        num_classes = int(task.hparams.num_classes)
        if self.class_names_file:
            names = read_class_names(self.class_names_file)
        else:
            names = list(stored.get("class_names") or [])
            if not names:
                log.warning(
                    "The checkpoint holds no class names; classes are called class_<index> "
                    "(give product.writer.class_names=<file> to name them)"
                )
                names = [f"class_{i}" for i in range(num_classes)]
        if len(names) != num_classes:
            raise ValueError(
                f"{self.class_names_file or 'checkpoint'}: {len(names)} class names for a {num_classes}-class model"
            )
        self.names = names
        self.top_k = min(self.top_k, num_classes)
        self.transform = create_transform(
            int(task.hparams.image_size),
            is_training=False,
            mean=tuple(self.mean or stored.get("mean") or (0.485, 0.456, 0.406)),
            std=tuple(self.std or stored.get("std") or (0.229, 0.224, 0.225)),
            crop_pct=float(self.crop_pct or stored.get("crop_pct") or 0.875),
        )

    def prepare(self, image) -> dict[str, Any]:
        return {"image": self.transform(image)}

    def write_item(self, run_dir: Path, name: str, prediction: torch.Tensor, batch: dict, index: int) -> dict:
        scores, classes = torch.as_tensor(prediction).float().topk(self.top_k)
        return {
            "classes": classes.tolist(),
            "labels": [self.names[c] for c in classes.tolist()],
            "scores": [round(float(s), 6) for s in scores],
        }

    def merge(self, run_dir: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        header = ["input"]
        for k in range(1, self.top_k + 1):
            header += [f"class_{k}", f"label_{k}", f"score_{k}"]
        writer.writerow(header)
        for record in records:
            row = [record["input"]]
            for c, label, score in zip(record["classes"], record["labels"], record["scores"]):
                row += [c, label, f"{score:.6f}"]
            writer.writerow(row)
        atomic_write_text(run_dir / CSV_FILE, buffer.getvalue())
        products = {"predictions_csv": CSV_FILE}
        if self.grid_images > 0:
            write_grid(run_dir / GRID_FILE, records[: self.grid_images], self.grid_columns, self.thumbnail)
            products["grid"] = GRID_FILE
        return products


def write_grid(path: Path, records: list[dict[str, Any]], columns: int, size: int) -> Path:
    """The images as ``size``-pixel thumbnails, each captioned with its top label and score."""
    from PIL import Image, ImageDraw, ImageOps

    caption = 14
    columns = max(1, min(columns, len(records)))
    rows = (len(records) + columns - 1) // columns
    grid = Image.new("RGB", (columns * size, rows * (size + caption)), "white")
    draw = ImageDraw.Draw(grid)
    for i, record in enumerate(records):
        x, y = (i % columns) * size, (i // columns) * (size + caption)
        try:
            thumb = ImageOps.contain(decode_image(record["input"], what="input image"), (size, size))
        except (OSError, DataFormatError):  # the file changed since it was predicted: leave its cell empty
            thumb = Image.fromarray(np.full((size, size, 3), 200, np.uint8))
        grid.paste(thumb, (x + (size - thumb.width) // 2, y + (size - thumb.height) // 2))
        text = f"{record['labels'][0]} {record['scores'][0]:.2f}"
        draw.text((x + 2, y + size + 1), text[: size // 6], fill="black")
    with atomic_path(path) as tmp:
        grid.save(tmp, format="PNG")
    return path
