"""Google Landmarks Dataset v2 (GLDv2) as published: the CSV readers and the DataModule.

Files under ``root`` (names as published by cvdfoundation/google-landmark and the 2019 Kaggle
competitions): ``train.csv`` (``id,url,landmark_id``; ``id,landmark_id`` in the 2020 and 2021 Kaggle
releases), ``train_clean.csv`` (``landmark_id,images``,
space-separated ids), ``index.csv`` and ``test.csv`` (``id`` first; ``url`` may follow),
``recognition_solution_v2.1.csv`` (``id,landmarks,Usage``), ``retrieval_solution_v2.1.csv``
(``id,images,Usage``) and the Detect-to-Retrieve boxes ``boxes_split1.csv`` / ``boxes_split2.csv``
(``id,box``: ``top left bottom right`` relative to the image size; several boxes of one image are
several rows, or a multiple of 4 numbers). Images are ``<split>/<id[0]>/<id[1]>/<id[2]>/<id>.jpg``.
Every reader raises :class:`core.data.DataFormatError` naming the file and line."""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from core.data import DataFormatError, ensure_generated
from core.images import decode_image, positive_size
from datamodules.gldv2_files import RECOGNITION, RETRIEVAL, read_solution

log = logging.getLogger(__name__)

SOLUTION_FILES = {RECOGNITION: "recognition_solution_v2.1.csv", RETRIEVAL: "retrieval_solution_v2.1.csv"}
# D2R: the detector trains on split 1 and is validated on split 2 (Teichmann et al., Sec. 5).
BOX_FILES = ("boxes_split1.csv",)
VAL_BOX_FILES = ("boxes_split2.csv",)


def image_path(root: str | Path, split: str, image_id: str) -> Path:
    """``<root>/<split>/a/b/c/<id>.jpg`` for id ``abc...``."""
    return Path(root) / split / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"


def _check_id(value: str, path: Path, line: int) -> str:
    if len(value) < 3 or not value.isalnum():
        raise DataFormatError(path, f"image id {value!r} is not an alphanumeric id of 3+ characters", line)
    return value


def read_table(path: str | Path, columns: Sequence[str], what: str) -> list[tuple[int, list[str]]]:
    """(line, row) of a CSV whose header starts with ``columns``; a missing file, another header or a
    row of another width raises with the file and line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: expected the {what}, but it does not exist")
    out = []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None or header[: len(columns)] != list(columns):
                raise DataFormatError(path, f"header {header}; the {what} starts with {list(columns)}", 1)
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataFormatError(
                        path, f"{len(row)} fields; expected {len(header)} ({','.join(header)})", reader.line_num
                    )
                out.append((reader.line_num, row))
        except (csv.Error, UnicodeDecodeError) as err:
            raise DataFormatError(path, f"not a readable CSV ({err})", reader.line_num) from None
    return out


# train.csv as released: with the image URLs (GLDv2, 2019 competitions) or without (the 2020 and 2021
# Kaggle landmark-recognition / landmark-retrieval releases ship ``id,landmark_id``).
TRAIN_HEADERS = (["id", "url", "landmark_id"], ["id", "landmark_id"])


def _train_header(path: Path) -> list[str]:
    """Which of the published train.csv headers ``path`` has (the first when the file is missing, so
    read_table names the file)."""
    if not path.exists():
        return TRAIN_HEADERS[0]
    with open(path, newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), None)
    for columns in TRAIN_HEADERS:
        if header == columns:
            return columns
    raise DataFormatError(path, f"header {header}; GLDv2 train.csv is id,url,landmark_id or id,landmark_id", 1)


def read_train(path: str | Path) -> list[tuple[str, int]]:
    """``train.csv`` (``id,url,landmark_id`` or ``id,landmark_id``): [(id, landmark_id)]."""
    path = Path(path)
    columns = _train_header(path)
    at = columns.index("landmark_id")
    out = []
    for line, row in read_table(path, columns, f"GLDv2 train.csv ({','.join(columns)})"):
        try:
            landmark = int(row[at])
        except ValueError:
            raise DataFormatError(path, f"landmark_id {row[at]!r} is not an integer", line) from None
        out.append((_check_id(row[0], path, line), landmark))
    return out


def read_train_clean(path: str | Path) -> list[tuple[str, int]]:
    """``train_clean.csv`` (landmark_id, space-separated ids): [(id, landmark_id)]."""
    path = Path(path)
    out = []
    for line, row in read_table(path, ["landmark_id", "images"], "GLDv2 train_clean.csv (landmark_id,images)"):
        try:
            landmark = int(row[0])
        except ValueError:
            raise DataFormatError(path, f"landmark_id {row[0]!r} is not an integer", line) from None
        out += [(_check_id(i, path, line), landmark) for i in row[1].split()]
    return out


def read_ids(path: str | Path, what: str) -> list[str]:
    """``index.csv`` / ``test.csv``: the image ids (first column ``id``)."""
    path = Path(path)
    return [_check_id(row[0], path, line) for line, row in read_table(path, ["id"], what)]


def read_boxes(path: str | Path) -> dict[str, list[tuple[float, float, float, float]]]:
    """A D2R box file: {id: [(x1, y1, x2, y2) relative]}, from ``top left bottom right`` rows."""
    path = Path(path)
    out: dict[str, list] = {}
    for line, row in read_table(path, ["id", "box"], "Detect-to-Retrieve box file (id,box)"):
        try:
            values = [float(v) for v in row[1].split()]
        except ValueError:
            raise DataFormatError(path, f"box {row[1]!r} is not numbers", line) from None
        if not values or len(values) % 4:
            raise DataFormatError(path, f"box {row[1]!r}: expected 4 numbers (top left bottom right) per box", line)
        for k in range(0, len(values), 4):
            top, left, bottom, right = values[k : k + 4]
            if not (0 <= top < bottom <= 1 and 0 <= left < right <= 1):
                raise DataFormatError(path, f"box {values[k : k + 4]} is not top<bottom, left<right in [0, 1]", line)
            out.setdefault(_check_id(row[0], path, line), []).append((left, top, right, bottom))
    return out


def load_solution(path: str | Path, track: str) -> tuple[dict[str, dict[str, list]], set[str]]:
    """A solution file (tasks.landmarks.protocol.read_solution) whose errors name the file and line."""
    return read_solution(path, track)


class LandmarkImages(Dataset):
    """Images of one split: a dict with ``image`` (C, H, W float in [0, 1]), ``label`` (class index,
    -1 without), ``index`` and ``boxes`` (n, 4 relative x1 y1 x2 y2; n may be 0). An unreadable or
    missing image raises naming the file (``skip_missing``: a grey image, counted)."""

    def __init__(
        self,
        paths: list[Path],
        labels: list[int],
        boxes: list[list],
        image_size: int,
        train: bool = False,
        skip_missing: bool = False,
    ) -> None:
        self.paths, self.labels, self.boxes = paths, labels, boxes
        self.image_size, self.train, self.skip_missing = image_size, train, skip_missing
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Image.Image:
        path = self.paths[index]
        try:
            return decode_image(path, what="image listed in the split's CSV")
        except (FileNotFoundError, DataFormatError) as err:
            if not self.skip_missing:
                raise
            log.warning("replacing an unreadable image by grey: %s", err)
            self.skipped += 1
            return Image.new("RGB", (self.image_size, self.image_size), (128, 128, 128))

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self.load(index).resize((self.image_size, self.image_size), Image.BILINEAR)
        boxes = np.asarray(self.boxes[index], dtype=np.float32).reshape(-1, 4)
        array = np.asarray(image, dtype=np.float32) / 255.0
        if self.train:
            rng = np.random.default_rng()
            if rng.random() < 0.5:  # colour jitter: light changes between photos
                array = np.clip(array * rng.uniform(0.7, 1.3) + rng.uniform(-0.1, 0.1), 0, 1)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))),
            "label": int(self.labels[index]),
            "index": index,
            "boxes": torch.from_numpy(boxes),
        }


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images, labels and indices; boxes stay a list (a variable number per image)."""
    return {
        "image": torch.stack([i["image"] for i in items]),
        "label": torch.tensor([i["label"] for i in items]),
        "index": torch.tensor([i["index"] for i in items]),
        "boxes": [i["boxes"] for i in items],
    }


class GLDv2DataModule(pl.LightningDataModule):
    """GLDv2 for landmark recognition and retrieval.

    Splits: ``train`` (``train_file``: train.csv or train_clean.csv, less a held-out share),
    ``val`` (``val_fraction`` of the training images, chosen with ``seed``: the validation metric
    never looks at test.csv), ``index`` (index.csv), ``test`` (test.csv) and ``gallery_train`` (all
    training images, the database recognition searches). Landmark ids map to class indices in
    increasing id order (``landmark_ids``). D2R boxes of the training images come from
    ``box_files`` (detector training) and ``val_box_files`` (``validation_boxes``: {position in
    gallery_train: boxes}, held out to score the detector); absent files are skipped.
    ``num_classes`` must equal the number of landmarks."""

    def __init__(
        self,
        root: str,
        num_classes: int,
        image_size: int = 128,
        batch_size: int = 32,
        num_workers: int = 2,
        train_file: str = "train.csv",
        val_fraction: float = 0.1,
        box_files: Sequence[str] = BOX_FILES,
        val_box_files: Sequence[str] = VAL_BOX_FILES,
        skip_missing: bool = False,
        seed: int = 0,
        generator: Callable[[Path], object] | None = None,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.num_classes, self.image_size = num_classes, positive_size(image_size)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.train_file, self.val_fraction = train_file, val_fraction
        self.box_files, self.val_box_files = list(box_files), list(val_box_files)
        self.skip_missing, self.seed = skip_missing, seed
        self.validation_boxes: dict[int, list] = {}
        self.generator = generator
        self.datasets: dict[str, LandmarkImages] = {}
        self.ids: dict[str, list[str]] = {}
        self.landmark_ids: list[int] = []
        self.solutions: dict[str, tuple[dict[str, dict[str, list]], set[str]]] = {}

    @property
    def class_names(self) -> list[str]:
        return [str(i) for i in self.landmark_ids]

    @property
    def skipped_samples(self) -> int:
        return sum(d.skipped for d in self.datasets.values())

    def prepare_data(self) -> None:
        ensure_generated(self.root, self.generator)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        ensure_generated(self.root, None)
        train_path = self.root / self.train_file
        rows = read_train_clean(train_path) if self.train_file.startswith("train_clean") else read_train(train_path)
        self.landmark_ids = sorted({lm for _, lm in rows})
        if len(self.landmark_ids) != self.num_classes:
            raise DataFormatError(
                train_path, f"{len(self.landmark_ids)} landmarks, but data.num_classes={self.num_classes}"
            )
        to_class = {lm: k for k, lm in enumerate(self.landmark_ids)}
        boxes: dict[str, list] = {}
        for name in self.box_files:
            if (self.root / name).exists():
                boxes.update(read_boxes(self.root / name))
        held_out: dict[str, list] = {}
        for name in self.val_box_files:
            if (self.root / name).exists():
                held_out.update(read_boxes(self.root / name))
        self.validation_boxes = {n: held_out[i] for n, (i, _) in enumerate(rows) if i in held_out}
        order = np.random.default_rng(self.seed).permutation(len(rows))
        n_val = int(round(len(rows) * self.val_fraction))
        parts = {"train": np.sort(order[n_val:]), "val": np.sort(order[:n_val]), "gallery_train": np.arange(len(rows))}
        for split, keep in parts.items():
            ids = [rows[i][0] for i in keep]
            self.ids[split] = ids
            self.datasets[split] = LandmarkImages(
                [image_path(self.root, "train", i) for i in ids],
                [to_class[rows[i][1]] for i in keep],
                [boxes.get(i, []) for i in ids],
                self.image_size,
                train=split == "train",
                skip_missing=self.skip_missing,
            )
        for split in ("index", "test"):
            ids = read_ids(self.root / f"{split}.csv", f"GLDv2 {split}.csv (id,...)")
            self.ids[split] = ids
            self.datasets[split] = LandmarkImages(
                [image_path(self.root, split, i) for i in ids],
                [-1] * len(ids),
                [[] for _ in ids],
                self.image_size,
                skip_missing=self.skip_missing,
            )
        for track, name in SOLUTION_FILES.items():
            if (self.root / name).exists():
                self.solutions[track] = load_solution(self.root / name, track)

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate,
            drop_last=shuffle and len(self.datasets[split]) > self.batch_size,
            persistent_workers=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> list[DataLoader]:
        """Three loaders: the training images (recognition's database), index.csv, test.csv."""
        return [self._loader(s) for s in TEST_SPLITS]


# The order of the test loaders (dataloader_idx in the task's test_step).
TEST_SPLITS = ("gallery_train", "index", "test")
