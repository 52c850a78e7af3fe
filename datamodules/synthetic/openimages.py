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
    {train,validation,test}-annotations-object-segmentation.csv   MaskPath,ImageID,LabelName,BoxID,...
    {train,validation,test}-masks/<ImageID>_<MID without slashes>_<BoxID>.png
    challenge-2019-validation-segmentation-bbox.csv     ImageID,LabelName,XMin,XMax,YMin,YMax,IsGroupOf
    challenge-2019-validation-segmentation-labels.csv   ImageID,LabelName,Confidence
    challenge-2019-validation-segmentation-masks.csv    the validation mask rows, PNGs in
    challenge-2019-validation-masks/                    (what the -masks-[0-f].zip archives extract to)
    challenge-2019-label300-segmentable-hierarchy.json  challenge-2019-classes-description-segmentable.csv

Signal: each leaf class is a filled shape of its own colour and form on a noisy background. The
hierarchy has parents that are never drawn (Vehicle, Animal, Toy, Sports equipment) and a
multi-parent class (Ball: Toy and Sports equipment). Some boxes are group-of (a box around a cluster
of small shapes), each image has a verified-absent label, and some images hold a drawn object that
is neither boxed nor labelled (an unannotated class).

Masks: every non-group-of box has a mask PNG drawn from the object's shape at a resolution unlike
the image's (2x wide, 1.5x high), as released masks differ from their images. Group-of boxes get
none: the challenge's segmentation files list them in the bbox file only, and the evaluator treats
them (like any box without a mask) as regions where detections are ignored. The masks use their own
random stream, so the images and boxes do not change with them."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from datamodules.openimages_masks import mask_file_name
from datamodules.synthetic.openimages_relationships import write_relationship_files

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
SEGMENTATION_HEADER = [
    "MaskPath", "ImageID", "LabelName", "BoxID", "BoxXMin", "BoxXMax", "BoxYMin", "BoxYMax",
    "PredictedIoU", "Clicks",
]  # fmt: skip
CHALLENGE_BOX_HEADER = ["ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax", "IsGroupOf"]
MASK_SCALE = (2.0, 1.5)  # mask size / image size along x and y: not proportional, as in the release


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


def _mask_rows(
    masks_dir: Path, drawn: list[tuple[str, list[dict]]], image_size: tuple[int, int], rng: np.random.Generator
) -> list[list]:
    """Write a mask PNG for each non-group-of object of ``drawn``; returns the segmentation CSV rows."""
    masks_dir.mkdir(parents=True, exist_ok=True)
    mw, mh = round(image_size[0] * MASK_SCALE[0]), round(image_size[1] * MASK_SCALE[1])
    rows = []
    for image_id, objects in drawn:
        for obj in objects:
            if obj["group_of"]:
                continue
            box_id = f"{int(rng.integers(0, 2**32)):08x}"
            mask = Image.new("L", (mw, mh), 0)
            for px1, py1, px2, py2 in obj["parts"]:
                _draw(ImageDraw.Draw(mask), obj["shape"], 255, (px1 * mw, py1 * mh, px2 * mw, py2 * mh))
            name = mask_file_name(image_id, obj["mid"], box_id)
            mask.save(masks_dir / name)
            x1, y1, x2, y2 = obj["box"]
            clicks = ";".join(
                f"{rng.uniform(x1, x2):.5f} {rng.uniform(y1, y2):.5f} {int(rng.integers(0, 2))}" for _ in range(3)
            )
            rows.append(
                [name, image_id, obj["mid"], box_id, f"{x1:.6f}", f"{x2:.6f}", f"{y1:.6f}", f"{y2:.6f}",
                 f"{rng.uniform(0.6, 0.95):.5f}", clicks]
            )  # fmt: skip
    return rows


def _write_challenge_segmentation(root: Path, box_rows: list, label_rows: list, seg_rows: list) -> None:
    """The challenge's validation segmentation files under their official names (the scoring CLI's
    ``--track segmentation`` input): the challenge's shorter box and label columns, the mask rows and
    their PNGs copied into the folder the challenge's mask archives extract to."""
    col = {name: i for i, name in enumerate(BOX_HEADER)}
    _write_csv(
        root / "challenge-2019-validation-segmentation-bbox.csv",
        CHALLENGE_BOX_HEADER,
        [[r[col[c]] for c in CHALLENGE_BOX_HEADER] for r in box_rows],
    )
    _write_csv(
        root / "challenge-2019-validation-segmentation-labels.csv",
        ["ImageID", "LabelName", "Confidence"],
        [[r[0], r[2], r[3]] for r in label_rows],
    )
    _write_csv(root / "challenge-2019-validation-segmentation-masks.csv", SEGMENTATION_HEADER, seg_rows)
    out = root / "challenge-2019-validation-masks"
    out.mkdir(exist_ok=True)
    for row in seg_rows:
        shutil.copyfile(root / "validation-masks" / row[0], out / row[0])


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
    mask_rng = np.random.default_rng(seed + 1)  # its own stream: images and boxes stay as they were
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
        write_relationship_files(root, split, drawn, [(m, n) for m, n, *_ in LEAVES])
        seg_rows = _mask_rows(root / f"{split}-masks", drawn, image_size, mask_rng)
        _write_csv(root / f"{split}-annotations-object-segmentation.csv", SEGMENTATION_HEADER, seg_rows)
        if split == "validation":
            _write_challenge_segmentation(root, box_rows, label_rows, seg_rows)
    classes = [[m, n] for m, n, *_ in LEAVES] + [list(p) for p in PARENTS]
    _write_csv(root / "class-descriptions-boxable.csv", None, classes)
    _write_csv(root / "challenge-2019-classes-description-500.csv", ["MID", "DisplayName"], classes)
    _write_csv(root / "challenge-2019-classes-description-segmentable.csv", None, classes)
    for name in (
        "bbox_labels_600_hierarchy.json",
        "challenge-2019-label500-hierarchy.json",
        "challenge-2019-label300-segmentable-hierarchy.json",
    ):
        (root / name).write_text(json.dumps(HIERARCHY, indent=1))
    return root
