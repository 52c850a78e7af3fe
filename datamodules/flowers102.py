"""Oxford Flowers-102 in its official layout: ``<root>/jpg/image_00001.jpg ...``,
``<root>/imagelabels.mat`` (``labels``: 1 x N, classes 1..102) and ``<root>/setid.mat``
(``trnid``, ``valid``, ``tstid``: 1-based image ids of each split).

torchvision's reader checks the official md5 sums, so it cannot read generated copies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.io import loadmat

from core.data import DataFormatError, require_file
from datamodules.image_classification import ImageClassificationDataModule

SPLIT_KEYS = {"train": "trnid", "val": "valid", "test": "tstid"}


def load_mat(path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    require_file(path, "a MATLAB file of the Flowers-102 release")
    try:
        mat = loadmat(str(path))
    except Exception as err:
        raise DataFormatError(path, f"not a readable .mat file ({err})") from err
    missing = [k for k in keys if k not in mat]
    if missing:
        raise DataFormatError(path, f"missing variables {missing}")
    return {k: integer_values(path, k, mat[k]) for k in keys}


def integer_values(path: Path, key: str, value) -> np.ndarray:
    """A MATLAB variable as int64, refusing what is not a whole number (MATLAB stores the official
    labels and ids as doubles, so integral floats are fine; 1.7 is not a class)."""
    array = np.asarray(value)
    if array.dtype.kind in "iu":
        return array.reshape(-1).astype(np.int64)
    if array.dtype.kind != "f":
        raise DataFormatError(path, f"variable '{key}' must hold integers, found {array.dtype}")
    flat = array.reshape(-1)
    bad = np.flatnonzero(~np.isfinite(flat) | (flat != np.round(flat)))
    if bad.size:
        raise DataFormatError(
            path,
            f"variable '{key}' must hold whole numbers; {key}[{bad[0]}] = {float(flat[bad[0]])!r} "
            f"({bad.size} such values)",
        )
    return flat.astype(np.int64)


class Flowers102DataModule(ImageClassificationDataModule):
    def image_path(self, image_id: int) -> Path:
        return self.root / "jpg" / f"image_{image_id:05d}.jpg"

    def labels(self) -> np.ndarray:
        """Zero-based class per image id - 1."""
        labels = load_mat(self.root / "imagelabels.mat", ["labels"])["labels"]
        if labels.size and labels.min() < 1:
            raise DataFormatError(self.root / "imagelabels.mat", "labels are 1-based; found a value < 1")
        return labels - 1

    def read_class_names(self) -> list[str]:
        return [f"flower_{c + 1:03d}" for c in range(int(self.labels().max()) + 1)]

    def read_split(self, split: str):
        labels = self.labels()
        setid = self.root / "setid.mat"
        ids = load_mat(setid, [SPLIT_KEYS[split]])[SPLIT_KEYS[split]]
        bad = ids[(ids < 1) | (ids > len(labels))]
        if bad.size:
            raise DataFormatError(setid, f"{SPLIT_KEYS[split]} has ids outside 1..{len(labels)}: {bad[:5].tolist()}")
        return [self.image_path(i) for i in ids], [int(labels[i - 1]) for i in ids]
