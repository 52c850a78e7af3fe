"""iWildCam 2019 (FGVC6): camera-trap images with sequences. ``train.csv`` / ``test.csv`` (columns
``category_id, date_captured, file_name, frame_num, id, location, rights_holder, seq_id,
seq_num_frames, width, height``; test without ``category_id``), images ``train_images/<file_name>``,
``test_images/<file_name>``. 23 label ids, 0 = empty."""

from __future__ import annotations

from typing import Any

import numpy as np

from core.data import DataFormatError, resolve_inside
from datamodules.fgvc.base import FineGrainedDataModule, parse_int, read_csv_rows

TRAIN_COLUMNS = ("category_id", "file_name", "id", "location", "seq_id", "seq_num_frames", "frame_num")
TEST_COLUMNS = ("file_name", "id", "location", "seq_id", "seq_num_frames", "frame_num")
CLASS_NAMES = (
    "empty",
    "deer",
    "moose",
    "squirrel",
    "rodent",
    "small_mammal",
    "elk",
    "pronghorn_antelope",
    "rabbit",
    "bighorn_sheep",
    "fox",
    "coyote",
    "black_bear",
    "raccoon",
    "skunk",
    "wolf",
    "bobcat",
    "cat",
    "dog",
    "opossum",
    "bison",
    "mountain_goat",
    "mountain_lion",
)


class IWildCam2019DataModule(FineGrainedDataModule):
    """Validation holds out whole camera locations (``val_fraction`` of the locations, with
    ``seed``): the test set's cameras are unseen, so images of a validation camera must be too.
    :attr:`test_groups` gives each test image's ``seq_id`` (a task may average a sequence's frames)."""

    def __init__(self, root: str, num_classes: int = 23, **kwargs: Any) -> None:
        super().__init__(root, num_classes, **kwargs)
        self._train_rows: list | None = None
        self.groups: dict[str, list[str]] = {}

    def read_class_names(self) -> list[str]:
        if self.num_classes != len(CLASS_NAMES):
            raise ValueError(f"data.num_classes={self.num_classes}: iWildCam 2019 has {len(CLASS_NAMES)} label ids")
        self.label_ids = [str(i) for i in range(len(CLASS_NAMES))]
        return list(CLASS_NAMES)

    def _check_row(self, path, line, row, folder: str) -> None:
        frames = parse_int(row["seq_num_frames"], path, line, "seq_num_frames")
        frame = parse_int(row["frame_num"], path, line, "frame_num")
        if not 1 <= frame <= frames:
            raise DataFormatError(path, f"frame_num {frame} outside 1 .. seq_num_frames={frames}", line)
        if not row["file_name"] or not row["seq_id"]:
            raise DataFormatError(path, "empty file_name or seq_id", line)
        resolve_inside(self.root / folder, row["file_name"], path, line)  # a name never leaves its folder

    def _rows(self):
        if self._train_rows is None:
            path = self.root / "train.csv"
            rows = read_csv_rows(path, TRAIN_COLUMNS, "iWildCam training list")
            for line, row in rows:
                label = parse_int(row["category_id"], path, line, "category_id")
                if not 0 <= label < self.num_classes:
                    raise DataFormatError(
                        path, f"unknown category_id {label} (label ids are 0 .. {self.num_classes - 1})", line
                    )
                self._check_row(path, line, row, "train_images")
            self._train_rows = rows
        return self._train_rows

    def read_labeled(self, split: str):
        rows = self._rows()
        locations = sorted({row["location"] for _, row in rows})
        rng = np.random.default_rng(self.seed)
        n_val = max(1, int(round(len(locations) * self.val_fraction))) if len(locations) > 1 else 0
        val_locations = set(rng.permutation(locations)[:n_val].tolist())
        chosen = [row for _, row in rows if (row["location"] in val_locations) == (split == "val")]
        self.groups[split] = [row["seq_id"] for row in chosen]
        paths = [self.root / "train_images" / row["file_name"] for row in chosen]
        return paths, [int(row["category_id"]) for row in chosen], [row["id"] for row in chosen]

    def read_test(self):
        path = self.root / "test.csv"
        rows = read_csv_rows(path, TEST_COLUMNS, "iWildCam test list")
        for line, row in rows:
            self._check_row(path, line, row, "test_images")
        self.test_groups = [row["seq_id"] for _, row in rows]
        return [self.root / "test_images" / row["file_name"] for _, row in rows], [row["id"] for _, row in rows]
