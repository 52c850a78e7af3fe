"""The FGVC6 DataModules' shared base: an image-classification DataModule with a long-tail sampler,
a held-out validation split for competitions that publish none, the test items' ids, and the test
labels from a Kaggle solution file when one exists.

A subclass reads its layout: ``read_class_names``, ``read_labeled(split)`` -> (paths, labels, ids)
for "train"/"val", ``read_test()`` -> (paths, ids), and ``label_ids`` (the competition's label id of
each class, as written in submissions)."""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from core.data import DataFormatError, read_json
from datamodules.fgvc.sampling import POWERS, class_sampler
from datamodules.image_classification import ImageClassificationDataModule, ImageDataset

log = logging.getLogger(__name__)

UNLABELED = -1


class IndexedDataset(Dataset):
    """(image, target, index): the index lets a task put test predictions back in file order under
    DDP (a DistributedSampler interleaves and pads)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, target = self.dataset[index]
        return image, target, index


def read_csv_rows(path: Path, header: Sequence[str] | None, what: str) -> list[tuple[int, dict[str, str] | list[str]]]:
    """(line number, row) of a CSV. With ``header`` the file's header must contain those columns and
    rows come as dicts; without, rows are lists. Raises DataFormatError naming the file and line."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: expected the {what}, but it does not exist")
    out = []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        columns = None
        if header is not None:
            columns = next(reader, None)
            missing = [c for c in header if c not in (columns or [])]
            if columns is None or missing:
                raise DataFormatError(path, f"header {columns} lacks columns {missing} ({what})", 1)
        for line, row in enumerate(reader, start=2 if header is not None else 1):
            if not row or all(not v.strip() for v in row):
                continue
            if columns is not None:
                if len(row) != len(columns):
                    raise DataFormatError(
                        path, f"expected {len(columns)} fields ({','.join(columns)}), found {len(row)}", line
                    )
                out.append((line, dict(zip(columns, row))))
            else:
                out.append((line, row))
    return out


def parse_int(value: str, path: Path, line: int, field: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DataFormatError(path, f"{field} must be an integer, found {value!r}", line) from None


class FineGrainedDataModule(ImageClassificationDataModule):
    """Long-tailed fine-grained classification data.

    ``sampler``: ``instance`` (shuffle), ``sqrt`` or ``class_balanced`` (see datamodules.fgvc.sampling).
    ``val_fraction``: share of the training images held out for validation where the competition
    publishes no validation split (chosen with ``seed``, never from the test split).
    ``solution_file``: a Kaggle solution CSV under ``root`` holding the test labels; absent, the
    test split is unlabeled (predictions and a submission only). ``class_subset``: a JSON file with
    ``chosen_classes`` (as written by ``python -m tasks.fgvc.transfer``): train and validate on those
    classes only (domain-specific pre-training)."""

    def __init__(
        self,
        root: str,
        num_classes: int,
        sampler: str = "instance",
        val_fraction: float = 0.1,
        solution_file: str | None = "solution.csv",
        class_subset: str | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, num_classes, **kwargs)
        class_sampler([0], sampler)  # fails early on an unknown mode
        if self.format == "shards" and (sampler != "instance" or class_subset):
            asked = f"data.sampler={sampler!r}" if sampler != "instance" else f"data.class_subset={class_subset!r}"
            raise ValueError(
                f"{asked} needs the folder reader: data.format=shards streams each split in LitData's shuffled "
                "order (use data.sampler=instance and data.class_subset=null, or data.format=folder)"
            )
        self.sampler = sampler
        self.val_fraction = val_fraction
        self.solution_file = solution_file
        self.class_subset = class_subset
        self.seed = seed
        self.ids: dict[str, list[str]] = {}
        self.label_ids: list[str] = []
        self.test_groups: list[str] | None = None

    # --- what a subclass provides -------------------------------------------------------------
    def read_labeled(self, split: str) -> tuple[list[Path], list[int], list[str]]:
        raise NotImplementedError

    def read_test(self) -> tuple[list[Path], list[str]]:
        raise NotImplementedError

    def solution_label(self, value: str, path: Path, line: int) -> int:
        """The class index of a label as written in the solution file (default: a label id)."""
        index = {v: i for i, v in enumerate(self.label_ids)}
        if value not in index:
            raise DataFormatError(path, f"unknown label {value!r} (not among the data set's {len(index)} labels)", line)
        return index[value]

    # --- splits ---------------------------------------------------------------------------------
    def holdout(self, items: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Indices of (train, val) for a competition with no validation split."""
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(items))
        n_val = int(round(len(items) * self.val_fraction))
        return np.sort(order[n_val:]), np.sort(order[:n_val])

    def read_split(self, split: str):
        if split == "test":
            paths, ids = self.read_test()
            self.ids["test"] = ids
            return paths, self.test_labels(ids)
        paths, labels, ids = self.read_labeled(split)
        self.ids[split] = ids
        return paths, labels

    def test_labels(self, ids: list[str]) -> list[int]:
        """Test labels from the solution file, or UNLABELED (-1) for every item without one."""
        if not self.solution_file or not (self.root / self.solution_file).exists():
            return [UNLABELED] * len(ids)
        path = self.root / self.solution_file
        rows = read_csv_rows(path, None, "solution file")
        truth: dict[str, int] = {}
        for line, row in rows[1:]:
            if len(row) < 2:
                raise DataFormatError(path, f"expected 2 fields (id, label), found {row!r}", line)
            truth[row[0]] = self.solution_label(row[1].split()[0] if row[1].split() else "", path, line)
        missing = [i for i in ids if i not in truth]
        if missing:
            raise DataFormatError(path, f"{len(missing)} test ids have no solution row, e.g. {missing[:3]}")
        return [truth[i] for i in ids]

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        super().setup(stage)
        if self.class_subset:
            self._restrict_to_subset(Path(self.class_subset))

    def _restrict_to_subset(self, path: Path) -> None:
        chosen = set(int(c) for c in read_json(path, "class subset file (data.class_subset)").get("chosen_classes", []))
        if not chosen:
            raise DataFormatError(path, "no chosen_classes in the class subset file")
        for split in ("train", "val"):
            ds = self.datasets[split]
            keep = [i for i, label in enumerate(ds.labels) if label in chosen]
            images = [ds.images[i] for i in keep]
            self.datasets[split] = ImageDataset(images, [ds.labels[i] for i in keep], ds.transform, ds.skip_corrupt)
            self.ids[split] = [self.ids[split][i] for i in keep]
        log.info("class subset %s: %d classes, %d training images", path, len(chosen), len(self.datasets["train"]))

    @property
    def train_class_counts(self) -> np.ndarray:
        labels = np.asarray(self.datasets["train"].labels)
        return np.bincount(labels[labels >= 0], minlength=self.num_classes)

    @property
    def train_prior(self) -> list[float]:
        """The class prior the network was trained under, p_t(w) (what the EM prior estimation starts
        from): the training split's class frequencies as the sampler draws them, n_c^q normalized
        (q = 1 instance, 1/2 sqrt, 0 class-balanced)."""
        counts = self.train_class_counts.astype(float)
        drawn = np.where(counts > 0, counts ** POWERS[self.sampler], 0.0)
        return (drawn / max(drawn.sum(), 1e-12)).tolist()

    # --- loaders --------------------------------------------------------------------------------
    indexed_splits = ("val", "test")
    packed_attributes = ("label_ids", "test_groups", "taxonomy", "taxonomy_names")

    def train_dataloader(self) -> DataLoader:
        if self.format == "shards":
            return self._loader("train", shuffle=True)
        sampler = (
            class_sampler(self.datasets["train"].labels, self.sampler, self.seed)
            if self.sampler != "instance"
            else None
        )
        return DataLoader(
            self.datasets["train"],
            batch_size=self.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
        )

    def _indexed_loader(self, split: str) -> DataLoader:
        if self.format == "shards":  # the shards carry each sample's index
            return self._loader(split, shuffle=False)
        return DataLoader(
            IndexedDataset(self.datasets[split]),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return self._indexed_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._indexed_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._indexed_loader("test")


def multi_hot(ids: Sequence[int], size: int) -> torch.Tensor:
    target = torch.zeros(size)
    target[list(ids)] = 1.0
    return target
