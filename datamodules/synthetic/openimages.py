"""A small Open Images V5 / Challenge 2019 detection set in the published layout, with a learnable signal.

Layout written under ``root`` (the names and columns of the real release)::

    train/<ImageID>.jpg  validation/<ImageID>.jpg  test/<ImageID>.jpg
    class-descriptions-boxable.csv                      MID,DisplayName (no header row, as released)
    bbox_labels_600_hierarchy.json                      LabelName / Subcategory tree
    {train,validation,test}-annotations-bbox.csv        ImageID,Source,LabelName,Confidence,XMin,...
    {train,validation,test}-annotations-human-imagelabels-boxable.csv   ImageID,Source,LabelName,Confidence
    challenge-2019-validation-detection-bbox.csv        the validation boxes (challenge names, for the
    challenge-2019-validation-detection-human-imagelabels.csv           scoring CLI)
    challenge-2019-label500-hierarchy.json
    challenge-2019-classes-description-500.csv          (with the MID,DisplayName header)

Signal: each leaf class is a filled shape of its own colour and form on a noisy background. The
hierarchy has parents that are never drawn (Vehicle, Animal, Toy, Sports equipment) and a
multi-parent class (Ball: Toy and Sports equipment). Some boxes are group-of (a box around a cluster
of small shapes), each image has a verified-absent label, and some images hold a drawn object that
is neither boxed nor labelled (an unannotated class)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT_MID = "/m/0bl9f"  # "Entity", the root of the released hierarchy
# (MID, display name, RGB colour, shape); MIDs are made up in the published /m/ form.
LEAVES = (
    ("/m/0sy001", "Car", (220, 40, 40), "rectangle"),
    ("/m/0sy002", "Bicycle", (40, 200, 40), "ellipse"),
    ("/m/0sy003", "Dog", (40, 40, 220), "rectangle"),
    ("/m/0sy004", "Cat", (220, 220, 40), "ellipse"),
    ("/m/0sy005", "Ball", (220, 40, 220), "ellipse"),
)
PARENTS = (
    ("/m/0sy101", "Vehicle"),
    ("/m/0sy102", "Animal"),
    ("/m/0sy103", "Toy"),
    ("/m/0sy104", "Sports equipment"),
)
HIERARCHY = {
    "LabelName": ROOT_MID,
    "Subcategory": [
        {"LabelName": "/m/0sy101", "Subcategory": [{"LabelName": "/m/0sy001"}, {"LabelName": "/m/0sy002"}]},
        {"LabelName": "/m/0sy102", "Subcategory": [{"LabelName": "/m/0sy003"}, {"LabelName": "/m/0sy004"}]},
        {"LabelName": "/m/0sy103", "Subcategory": [{"LabelName": "/m/0sy005"}]},
        {"LabelName": "/m/0sy104", "Subcategory": [{"LabelName": "/m/0sy005"}, {"LabelName": "/m/0sy002"}]},
    ],
}
BOX_HEADER = [
    "ImageID", "Source", "LabelName", "Confidence", "XMin", "XMax", "YMin", "YMax",
    "IsOccluded", "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside",
]  # fmt: skip
LABEL_HEADER = ["ImageID", "Source", "LabelName", "Confidence"]


def class_names() -> list[str]:
    """Every MID of the generated label map, leaves first."""
    return [m for m, *_ in LEAVES] + [m for m, _ in PARENTS]


def _draw(draw: ImageDraw.ImageDraw, shape: str, colour, xy) -> None:
    (draw.rectangle if shape == "rectangle" else draw.ellipse)(xy, fill=colour)


def _write_csv(path: Path, header: list[str] | None, rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        if header:
            writer.writerow(header)
        writer.writerows(rows)


def generate_openimages(
    root: str | Path,
    num_train: int = 48,
    num_val: int = 16,
    num_test: int = 8,
    image_size: tuple[int, int] = (160, 120),
    seed: int = 0,
) -> Path:
    """Write the data set (layout in the module docstring) into ``root``; returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    width, height = image_size
    mids = [m for m, *_ in LEAVES]
    for split, count in (("train", num_train), ("validation", num_val), ("test", num_test)):
        (root / split).mkdir(parents=True, exist_ok=True)
        box_rows, label_rows = [], []
        drawn: list[tuple[str, list[dict]]] = []  # (ImageID, its annotated objects), for the track writers
        for index in range(count):
            image_id = f"{('train', 'validation', 'test').index(split):02x}{seed:04x}{index:010x}"  # 16 hex digits
            pixels = rng.integers(90, 140, size=(height, width, 3), dtype=np.uint8)
            image = Image.fromarray(pixels)
            draw = ImageDraw.Draw(image)
            present = rng.choice(len(LEAVES), size=int(rng.integers(1, 4)), replace=False)
            objects: list[dict] = []
            for k in present:
                mid, _, colour, shape = LEAVES[k]
                w, h = rng.uniform(0.2, 0.45), rng.uniform(0.2, 0.45)
                x1, y1 = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
                x2, y2 = x1 + w, y1 + h
                group = rng.random() < 0.2
                if group:  # a cluster of small shapes, annotated as one group-of box
                    parts = []
                    for _ in range(4):
                        sx, sy = rng.uniform(x1, x2 - w / 3), rng.uniform(y1, y2 - h / 3)
                        parts.append((sx, sy, sx + w / 3, sy + h / 3))
                else:
                    parts = [(x1, y1, x2, y2)]
                for px1, py1, px2, py2 in parts:
                    _draw(draw, shape, colour, (px1 * width, py1 * height, px2 * width, py2 * height))
                objects.append(
                    {"mid": mid, "shape": shape, "box": (x1, y1, x2, y2), "group_of": bool(group), "parts": parts}
                )
                box_rows.append(
                    [image_id, "xclick", mid, 1, f"{x1:.6f}", f"{x2:.6f}", f"{y1:.6f}", f"{y2:.6f}",
                     0, 0, int(group), 0, 0]
                )  # fmt: skip
                label_rows.append([image_id, "verification", mid, 1])
            absent = [k for k in range(len(LEAVES)) if k not in present]
            if absent and rng.random() < 0.5:  # a drawn object nobody annotated: neither boxed nor verified
                k = int(rng.choice(absent))
                absent.remove(k)
                _, _, colour, shape = LEAVES[k]
                x1, y1 = rng.uniform(0, 0.75), rng.uniform(0, 0.75)
                _draw(draw, shape, colour, (x1 * width, y1 * height, (x1 + 0.2) * width, (y1 + 0.2) * height))
            if absent:  # a verified-absent class
                label_rows.append([image_id, "verification", mids[int(rng.choice(absent))], 0])
            image.save(root / split / f"{image_id}.jpg", quality=92)
            drawn.append((image_id, objects))
        _write_csv(root / f"{split}-annotations-bbox.csv", BOX_HEADER, box_rows)
        _write_csv(root / f"{split}-annotations-human-imagelabels-boxable.csv", LABEL_HEADER, label_rows)
        if split == "validation":
            _write_csv(root / "challenge-2019-validation-detection-bbox.csv", BOX_HEADER, box_rows)
            _write_csv(root / "challenge-2019-validation-detection-human-imagelabels.csv", LABEL_HEADER, label_rows)
        # The segmentation and relationship writers take `drawn` (annotated objects per image) here.
    classes = [[m, n] for m, n, *_ in LEAVES] + [list(p) for p in PARENTS]
    _write_csv(root / "class-descriptions-boxable.csv", None, classes)
    _write_csv(root / "challenge-2019-classes-description-500.csv", ["MID", "DisplayName"], classes)
    for name in ("bbox_labels_600_hierarchy.json", "challenge-2019-label500-hierarchy.json"):
        (root / name).write_text(json.dumps(HIERARCHY, indent=1))
    return root
