"""Writes a small data set in the ImageNet folder-per-class layout.

``<root>/{train,val,test}/<wnid>/<wnid>_<index>.JPEG`` with WordNet-style synset folder names and a
``synsets.txt`` listing ``<wnid> <name>`` per line, as the ImageNet devkit does."""

from __future__ import annotations

from pathlib import Path

from datamodules.synthetic.shapes import SHAPES, render_dataset


def synset_ids(num_classes: int) -> list[str]:
    return [f"n{10000000 + 1117 * c:08d}" for c in range(num_classes)]


def write_image_folder(
    root: str | Path,
    num_classes: int = 10,
    train_per_class: int = 200,
    val_per_class: int = 50,
    test_per_class: int = 50,
    image_size: int = 64,
    seed: int = 0,
) -> Path:
    root = Path(root)
    wnids = synset_ids(num_classes)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "synsets.txt", "w") as f:
        for c, wnid in enumerate(wnids):
            f.write(f"{wnid} {SHAPES[c % len(SHAPES)]}_{c // len(SHAPES)}\n")
    splits = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
    for offset, (split, per_class) in enumerate(splits.items()):
        counts = [0] * num_classes
        for c, image in render_dataset(num_classes, per_class, image_size, seed + 1000 * offset):
            folder = root / split / wnids[c]
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"{wnids[c]}_{counts[c]:05d}.JPEG", quality=92)
            counts[c] += 1
    return root
