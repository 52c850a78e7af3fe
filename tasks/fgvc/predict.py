"""FGVC predictions on a user's images (predict.py). Single-label tasks use the classification
product (top-k classes per image). The multi-label task (iMet) writes each image's attributes scored
above the threshold tuned on validation (kept in the checkpoint), as in its submission."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import torch

from core.io import atomic_write_text
from tasks.classification.predict import ClassificationProduct

ATTRIBUTES_FILE = "attributes.csv"


class AttributeProduct(ClassificationProduct):
    """``attributes.csv``: input, the attributes above the threshold (names and scores; the top one
    when none is), plus the top-k table and grid of the classification product."""

    def bind(self, task, checkpoint: dict[str, Any]) -> None:
        super().bind(task, checkpoint)
        self.threshold = float(checkpoint.get("f2_threshold", getattr(task, "threshold", 0.5)))

    def write_item(self, run_dir: Path, name: str, prediction: torch.Tensor, batch: dict, index: int) -> dict:
        record = super().write_item(run_dir, name, prediction, batch, index)
        scores = torch.as_tensor(prediction).float()
        chosen = torch.nonzero(scores > self.threshold).flatten().tolist() or [int(scores.argmax())]
        record["attributes"] = [self.names[c] for c in chosen]
        record["attribute_scores"] = [round(float(scores[c]), 6) for c in chosen]
        return record

    def merge(self, run_dir: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        products = super().merge(run_dir, records)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["input", "attributes", "scores", "threshold"])
        for record in records:
            writer.writerow(
                [
                    record["input"],
                    " ".join(record["attributes"]),
                    " ".join(f"{s:.4f}" for s in record["attribute_scores"]),
                    self.threshold,
                ]
            )
        atomic_write_text(run_dir / ATTRIBUTES_FILE, buffer.getvalue())
        return {**products, "attributes_csv": ATTRIBUTES_FILE}
