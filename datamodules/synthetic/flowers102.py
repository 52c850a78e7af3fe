"""Writes a small Flowers-102 copy in the official layout (see datamodules/flowers102.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.io import savemat

from datamodules.synthetic.shapes import render_dataset


def write_flowers102(
    root: str | Path,
    num_classes: int = 102,
    train_per_class: int = 6,
    val_per_class: int = 2,
    test_per_class: int = 2,
    image_size: int = 64,
    seed: int = 0,
) -> Path:
    root = Path(root)
    (root / "jpg").mkdir(parents=True, exist_ok=True)
    per_class = train_per_class + val_per_class + test_per_class
    labels, splits = [], {"trnid": [], "valid": [], "tstid": []}
    seen = [0] * num_classes
    for image_id, (c, image) in enumerate(render_dataset(num_classes, per_class, image_size, seed), start=1):
        image.save(root / "jpg" / f"image_{image_id:05d}.jpg", quality=92)
        labels.append(c + 1)
        k = seen[c]
        key = "trnid" if k < train_per_class else "valid" if k < train_per_class + val_per_class else "tstid"
        splits[key].append(image_id)
        seen[c] += 1
    savemat(str(root / "imagelabels.mat"), {"labels": np.asarray([labels], dtype=np.uint8)})
    savemat(str(root / "setid.mat"), {k: np.asarray([v], dtype=np.uint16) for k, v in splits.items()})
    return root
