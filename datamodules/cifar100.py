"""CIFAR-100 in its official python layout: ``<root>/cifar-100-python/{train,test,meta}``.

Each split file is a pickled dict (Python 2 era, so keys load as bytes) with ``data`` (N x 3072
uint8, the red, green, then blue 32x32 planes of each image, row-major), ``fine_labels``,
``coarse_labels`` and ``filenames``; ``meta`` holds ``fine_label_names``. torchvision's reader
checks the official md5 sums, so it cannot read user-made or generated copies; this one reads the
same format and validates it instead. There is no official validation split: ``val_fraction`` of
train is held out with a fixed seed."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from core.data import DataFormatError, require_file
from datamodules.image_classification import ImageClassificationDataModule

FOLDER = "cifar-100-python"


def _get(record: dict, key: str, path: Path):
    for candidate in (key.encode(), key):
        if candidate in record:
            return record[candidate]
    raise DataFormatError(path, f"missing key {key!r} (has {sorted(map(str, record))[:6]})")


def load_cifar_pickle(path: Path) -> dict:
    require_file(path, "a CIFAR-100 pickle file")
    try:
        with open(path, "rb") as f:
            record = pickle.load(f, encoding="bytes")
    except Exception as err:
        raise DataFormatError(path, f"not a readable pickle ({err})") from err
    if not isinstance(record, dict):
        raise DataFormatError(path, f"expected a pickled dict, found {type(record).__name__}")
    return record


def read_cifar100_split(root: Path, split: str) -> tuple[np.ndarray, list[int]]:
    """Images (N, 32, 32, 3) uint8 and fine labels of the ``train`` or ``test`` file."""
    path = root / FOLDER / split
    record = load_cifar_pickle(path)
    data = np.asarray(_get(record, "data", path), dtype=np.uint8)
    labels = [int(v) for v in _get(record, "fine_labels", path)]
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataFormatError(path, f"'data' must be N x 3072, found shape {data.shape}")
    if len(labels) != len(data):
        raise DataFormatError(path, f"{len(data)} images but {len(labels)} fine_labels")
    if labels and not 0 <= min(labels) <= max(labels) < 100:
        raise DataFormatError(path, f"fine_labels must lie in 0..99, found {min(labels)}..{max(labels)}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


class Cifar100DataModule(ImageClassificationDataModule):
    def __init__(self, *args, val_fraction: float = 0.1, split_seed: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.val_fraction = val_fraction
        self.split_seed = split_seed

    def read_class_names(self) -> list[str]:
        path = self.root / FOLDER / "meta"
        names = _get(load_cifar_pickle(path), "fine_label_names", path)
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]

    def read_split(self, split: str):
        if split == "test":
            return read_cifar100_split(self.root, "test")
        images, labels = read_cifar100_split(self.root, "train")
        order = np.random.default_rng(self.split_seed).permutation(len(labels))
        n_val = int(round(self.val_fraction * len(labels)))
        chosen = order[:n_val] if split == "val" else order[n_val:]
        return images[chosen], [labels[i] for i in chosen]
