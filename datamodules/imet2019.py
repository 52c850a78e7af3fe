"""iMet Collection 2019 (FGVC6): multi-label art attributes. ``labels.csv``
(``attribute_id,attribute_name``, names ``culture::...`` or ``tag::...``), ``train.csv``
(``id,attribute_ids``, ids space-separated), images ``train/<id>.png`` and ``test/<id>.png``, test ids
from ``sample_submission.csv``."""

from __future__ import annotations

import numpy as np
import torch

from core.data import DataFormatError
from datamodules.fgvc.base import UNLABELED, FineGrainedDataModule, parse_int, read_csv_rows
from datamodules.image_classification import ImageDataset


class MultiLabelImageDataset(ImageDataset):
    """An ImageDataset whose target is a multi-hot row of ``targets`` (N, C); unlabeled rows are -1."""

    def __init__(self, images, targets: torch.Tensor, transform=None, skip_corrupt: bool = False) -> None:
        super().__init__(images, list(range(len(targets))), transform, skip_corrupt)
        self.targets = targets

    def __getitem__(self, index: int):
        image, row = super().__getitem__(index)
        return image, self.targets[row]


class IMet2019DataModule(FineGrainedDataModule):
    """Multi-label: targets are multi-hot float vectors over the attributes of ``labels.csv``
    (class index = rank of the attribute id). No validation split is published: ``val_fraction``
    of train.csv is held out. The sampler option does not apply (``instance`` only)."""

    def read_class_names(self) -> list[str]:
        path = self.root / "labels.csv"
        rows = read_csv_rows(path, ("attribute_id", "attribute_name"), "iMet label list")
        ids, names = [], []
        for line, row in rows:
            attribute = parse_int(row["attribute_id"], path, line, "attribute_id")
            name = row["attribute_name"]
            if not (name.startswith("culture::") or name.startswith("tag::")):
                raise DataFormatError(path, f"attribute_name {name!r} must start with 'culture::' or 'tag::'", line)
            if attribute in ids:
                raise DataFormatError(path, f"attribute_id {attribute} listed twice", line)
            ids.append(attribute)
            names.append(name)
        order = np.argsort(ids, kind="stable")
        self.label_ids = [str(ids[i]) for i in order]
        return [names[i] for i in order]

    def _targets(self, rows, path) -> torch.Tensor:
        index = {v: i for i, v in enumerate(self.label_ids)}
        targets = torch.zeros(len(rows), len(index))
        for r, (line, attribute_ids) in enumerate(rows):
            values = attribute_ids.split()
            if not values:
                raise DataFormatError(path, "attribute_ids is empty", line)
            for value in values:
                parse_int(value, path, line, "attribute_ids")
                if value not in index:
                    raise DataFormatError(path, f"unknown attribute_id {value} (not in labels.csv)", line)
                targets[r, index[value]] = 1.0
        return targets

    def _train_rows(self):
        path = self.root / "train.csv"
        rows = read_csv_rows(path, ("id", "attribute_ids"), "iMet training list")
        return path, rows

    def read_labeled(self, split: str):
        path, rows = self._train_rows()
        train, val = self.holdout(rows)
        keep = train if split == "train" else val
        chosen = [rows[i] for i in keep]
        ids = [row["id"] for _, row in chosen]
        targets = self._targets([(line, row["attribute_ids"]) for line, row in chosen], path)
        return [self.root / "train" / f"{i}.png" for i in ids], targets, ids

    def read_test(self):
        path = self.root / "sample_submission.csv"
        rows = read_csv_rows(path, ("id", "attribute_ids"), "iMet sample submission (the test ids)")
        ids = [row["id"] for _, row in rows]
        return [self.root / "test" / f"{i}.png" for i in ids], ids

    def test_targets(self, ids: list[str]) -> torch.Tensor | None:
        if not self.solution_file or not (self.root / self.solution_file).exists():
            return None
        path = self.root / self.solution_file
        rows = read_csv_rows(path, ("id", "attribute_ids"), "solution file")
        by_id = {row["id"]: (line, row["attribute_ids"]) for line, row in rows}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise DataFormatError(path, f"{len(missing)} test ids have no solution row, e.g. {missing[:3]}")
        return self._targets([by_id[i] for i in ids], path)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if self.sampler != "instance":
            raise ValueError(f"data.sampler={self.sampler!r}: class samplers need single labels; iMet is multi-label")
        if self.format == "shards":  # multi-hot targets come from the pack's meta.json
            super().setup(stage)
            return
        from core.data import ensure_generated

        ensure_generated(self.root, None)
        self.class_names = self.read_class_names()
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{self.root}: the data set has {len(self.class_names)} attributes but the config says "
                f"data.num_classes={self.num_classes}"
            )
        for split in ("train", "val"):
            paths, targets, ids = self.read_labeled(split)
            self.ids[split] = ids
            self.datasets[split] = MultiLabelImageDataset(
                paths, targets, self.transform(split == "train"), self.skip_corrupt
            )
        paths, ids = self.read_test()
        self.ids["test"] = ids
        targets = self.test_targets(ids)
        if targets is None:
            targets = torch.full((len(ids), self.num_classes), float(UNLABELED))
        self.datasets["test"] = MultiLabelImageDataset(paths, targets, self.transform(False), self.skip_corrupt)

    @property
    def train_class_counts(self) -> np.ndarray:
        return self.datasets["train"].targets.sum(0).numpy().astype(np.int64)
