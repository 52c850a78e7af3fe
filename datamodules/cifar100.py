"""CIFAR-100 in its official python layout: ``<root>/cifar-100-python/{train,test,meta}``.

Each split file is a pickled dict (Python 2 era, so keys load as bytes) with ``data`` (N x 3072
uint8, the red, green, then blue 32x32 planes of each image, row-major), ``fine_labels``,
``coarse_labels`` and ``filenames``; ``meta`` holds ``fine_label_names``. torchvision's reader
checks the official md5 sums, so it cannot read user-made or generated copies; this one reads the
same format and validates it instead. There is no official validation split: ``val_fraction`` of
train is held out with a fixed seed.

The files are pickles, so they are read with a restricted unpickler: dicts, lists, strings, bytes,
numbers and numpy arrays (the only things the format holds) load; any other global a pickle names
(the way a crafted pickle runs code) is refused with the file and the name."""

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


# The globals a CIFAR-100 pickle names: numpy's array/scalar reconstruction and dtypes (module
# ``numpy.core`` in files written by numpy 1.x, ``numpy._core`` by numpy 2), and ``_codecs.encode``,
# which protocol-2 pickles written by Python 3 use for bytes (a text-to-bytes conversion, nothing more).
ALLOWED_GLOBALS = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class ForbiddenPickleError(pickle.UnpicklingError):
    """The pickle names a global outside what the CIFAR-100 format holds."""


class CifarUnpickler(pickle.Unpickler):
    """Loads only containers, strings, numbers and numpy arrays; nothing a pickle could run."""

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise ForbiddenPickleError(
                f"refused to load {module}.{name}: a CIFAR-100 file holds only dicts, lists, "
                "strings, bytes, numbers and numpy arrays"
            )
        return super().find_class(module, name)


def load_cifar_pickle(path: Path) -> dict:
    require_file(path, "a CIFAR-100 pickle file")
    try:
        with open(path, "rb") as f:
            record = CifarUnpickler(f, encoding="bytes").load()
    except ForbiddenPickleError as err:
        raise DataFormatError(path, str(err)) from None
    except Exception as err:
        raise DataFormatError(path, f"not a readable pickle ({err})") from err
    if not isinstance(record, dict):
        raise DataFormatError(path, f"expected a pickled dict, found {type(record).__name__}")
    return record


def read_cifar100_split(root: Path, split: str) -> tuple[np.ndarray, list[int]]:
    """Images (N, 32, 32, 3) uint8 and fine labels of the ``train`` or ``test`` file."""
    path = root / FOLDER / split
    record = load_cifar_pickle(path)
    data = _get(record, "data", path)
    if not isinstance(data, np.ndarray):
        raise DataFormatError(path, f"'data' must be a numpy array of uint8 pixels, found {type(data).__name__}")
    if data.dtype != np.uint8:
        if data.dtype.kind not in "iu" or (data.size and not 0 <= data.min() <= data.max() <= 255):
            found = str(data.dtype)
            if data.size and data.dtype.kind in "iuf":
                found += f" values {data.min()}..{data.max()}"
            raise DataFormatError(path, f"'data' must hold uint8 pixels 0..255, found {found}")
        data = data.astype(np.uint8)  # integer pixels, all in range: exact
    raw_labels = _get(record, "fine_labels", path)
    if not isinstance(raw_labels, (list, tuple, np.ndarray)):
        raise DataFormatError(path, f"'fine_labels' must be a list of integers, found {type(raw_labels).__name__}")
    for k, v in enumerate(raw_labels):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise DataFormatError(path, f"fine_labels[{k}] = {v!r} is not an integer class index")
    labels = [int(v) for v in raw_labels]
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
