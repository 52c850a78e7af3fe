"""Landmark recognition and retrieval on a user's images (predict.py task=landmarks):

    python predict.py task=landmarks ckpt_path=<checkpoint> input=<query images> \
        product.writer.index=<folder of index images>

Per query: the landmark of the ArcFace head (the checkpoint's landmark ids) and its cosine score
(``recognition.csv``, the competition's ``id,landmarks`` layout with ``<landmark_id> <score>``; the
id is the file name without suffix, or the relative name where two files share one);
with an ``index`` folder, its images ranked by descriptor similarity with faiss
(``retrieval.csv``: ``id,images`` best first, plus ``scores``) and a picture of the first queries
with their top images (``retrieval_examples.png``)."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from core.data import DataFormatError
from core.images import IMAGE_SUFFIXES, decode_image
from core.io import atomic_path, atomic_write_text
from core.prediction import ProductWriter
from tasks.landmarks.search import build_index, search
from tasks.landmarks.visualize import QUERY, UNKNOWN, framed_thumbnail_rows

log = logging.getLogger(__name__)


def to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """The evaluation preprocessing of the landmark task: RGB, resized to size x size, [0, 1]."""
    array = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def image_ids(paths: list[Path], fallback: list[str]) -> list[str]:
    """Ids as in GLDv2 (the file name without suffix) when they are unique, else ``fallback``
    (the input's relative name)."""
    stems = [p.stem for p in paths]
    return stems if len(set(stems)) == len(stems) else list(fallback)


class LandmarkProduct(ProductWriter):
    """Recognition of each input, and retrieval from ``index`` (a folder of images, searched
    recursively) when given: the ``top_k`` most similar, with a ``index_kind`` faiss index."""

    input_kind = "images"

    def __init__(
        self,
        index: str | None = None,
        top_k: int = 10,
        index_kind: str = "flat",
        figure_queries: int = 4,
        figure_top: int = 5,
        batch_size: int = 32,
    ) -> None:
        super().__init__()
        self.index, self.top_k, self.index_kind = index, top_k, index_kind
        self.figure_queries, self.figure_top, self.batch_size = figure_queries, figure_top, batch_size
        self.task = None
        self.size = 128
        self.landmark_ids: list[int] = []

    def bind(self, task, checkpoint: dict[str, Any]) -> None:
        self.task = task
        self.size = int(task.hparams.image_size)
        self.landmark_ids = list(checkpoint.get("landmark_ids") or range(int(task.hparams.num_classes)))
        if self.index is not None and not Path(self.index).is_dir():
            raise FileNotFoundError(f"{self.index}: product.writer.index must be a folder of index images")

    def prepare(self, image) -> dict[str, Any]:
        return {"image": to_tensor(image, self.size)}

    def write_item(self, run_dir: Path, name: str, prediction: dict, batch: dict, index: int) -> dict:
        return {
            "landmark": int(self.landmark_ids[int(prediction["class"])]),
            "score": round(float(prediction["score"]), 6),
            "descriptor": [round(float(v), 7) for v in prediction["descriptor"]],
        }

    def index_descriptors(self) -> tuple[list[Path], np.ndarray]:
        """Descriptors of the index folder's readable images (unreadable ones are skipped, warned)."""
        files = sorted(p for p in Path(self.index).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        kept, tensors = [], []
        for path in files:
            try:
                tensors.append(to_tensor(decode_image(path, what="index image"), self.size))
                kept.append(path)
            except (OSError, DataFormatError) as err:
                log.warning("index image %s skipped: %s", path, err)
        if not kept:
            raise FileNotFoundError(f"{self.index}: no readable index images")
        task = self.task
        task.eval()  # Lightning puts the module back in training mode after the predict loop
        out = []
        with torch.no_grad():
            for start in range(0, len(tensors), self.batch_size):
                images = torch.stack(tensors[start : start + self.batch_size]).to(task.device)
                out.append(task.descriptor(images)[0].float().cpu().numpy())
        return kept, np.concatenate(out)

    def merge(self, run_dir: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        done = [r for r in records if "descriptor" in r]
        query_ids = image_ids([Path(r["input"]) for r in done], [r["name"] for r in done])
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["id", "landmarks"])
        for query, r in zip(query_ids, done):
            writer.writerow([query, f"{r['landmark']} {r['score']:.6f}"])
        atomic_write_text(run_dir / "recognition.csv", buffer.getvalue())
        products = {"recognition_csv": "recognition.csv"}
        if self.index is None:
            return products
        paths, database = self.index_descriptors()
        queries = np.asarray([r["descriptor"] for r in done], dtype=np.float32)
        sims, ids = search(build_index(database, self.index_kind), queries, self.top_k)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["id", "images", "scores"])
        names = image_ids(paths, [str(p.relative_to(self.index)) for p in paths])
        for query, row_sims, row_ids in zip(query_ids, sims, ids):
            keep = row_ids >= 0
            writer.writerow(
                [query, " ".join(names[i] for i in row_ids[keep]), " ".join(f"{s:.4f}" for s in row_sims[keep])]
            )
        atomic_write_text(run_dir / "retrieval.csv", buffer.getvalue())
        products["retrieval_csv"] = "retrieval.csv"
        if self.figure_queries > 0:
            figure = self.figure([Path(r["input"]) for r in done], query_ids, sims, ids, paths, names)
            with atomic_path(run_dir / "retrieval_examples.png") as tmp:
                figure.save(tmp, format="PNG")
            products["retrieval_png"] = "retrieval_examples.png"
        return products

    def figure(
        self, queries: list[Path], query_ids: list[str], sims, ids, paths: list[Path], names: list[str], thumb: int = 96
    ) -> Image.Image:
        """Rows: a query (blue frame) and its top index images (grey frames: no ground truth here),
        each captioned with its id and, for the index images, the similarity."""
        rows = min(self.figure_queries, len(queries))
        top = min(self.figure_top, ids.shape[1])
        grid = []
        for r in range(rows):
            cells = [(queries[r], QUERY, ["query", query_ids[r]])]
            hits = [(s, i) for s, i in zip(sims[r][:top], ids[r][:top]) if i >= 0]
            cells += [(paths[i], UNKNOWN, [f"{s:.3f}", names[i]]) for s, i in hits]
            grid.append(cells)
        return framed_thumbnail_rows(grid, thumb)
