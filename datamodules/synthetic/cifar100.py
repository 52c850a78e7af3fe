"""Writes a small CIFAR-100 copy in the official python-pickle layout (see datamodules/cifar100.py)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from datamodules.cifar100 import FOLDER
from datamodules.synthetic.shapes import SHAPES, render_dataset


def _split_record(num_classes: int, per_class: int, seed: int, name: str) -> dict:
    data, labels, names = [], [], []
    for i, (c, image) in enumerate(render_dataset(num_classes, per_class, 32, seed)):
        data.append(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).reshape(-1))
        labels.append(c)
        names.append(f"synthetic_{name}_{i:06d}.png".encode())
    return {
        b"filenames": names,
        b"batch_label": f"{name} batch (generated)".encode(),
        b"fine_labels": labels,
        b"coarse_labels": [c // 5 for c in labels],
        b"data": np.stack(data),
    }


def write_cifar100(root: str | Path, train_per_class: int = 20, test_per_class: int = 5, seed: int = 0) -> Path:
    """All 100 fine classes, ``train_per_class`` / ``test_per_class`` images each."""
    folder = Path(root) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for split, per_class, offset in (("train", train_per_class, 0), ("test", test_per_class, 1)):
        with open(folder / split, "wb") as f:
            pickle.dump(_split_record(100, per_class, seed + offset, split), f, protocol=2)
    meta = {
        b"fine_label_names": [f"{SHAPES[c % 10]}_{c // 10}".encode() for c in range(100)],
        b"coarse_label_names": [f"group_{g}".encode() for g in range(20)],
    }
    with open(folder / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return Path(root)
