"""The Open Images V5 instance-segmentation files, read with numpy, PIL and the standard library only
(the scoring CLI imports no torch).

Layout (as published): ``<split>-annotations-object-segmentation.csv`` (and the challenge's
``challenge-2019-validation-segmentation-masks.csv``) with columns ``MaskPath,ImageID,LabelName,BoxID,
BoxXMin,BoxXMax,BoxYMin,BoxYMax,PredictedIoU,Clicks``, and the mask PNGs the ``<split>-masks-[0-f].zip``
archives extract to, named ``<ImageID>_<MID without slashes>_<BoxID>.png``. A mask's resolution
differs from its image's, so :func:`load_mask` resizes it (nearest) to the image size."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from core.data import DataFormatError, csv_header, csv_rows, resolve_inside
from datamodules.openimages_files import SEGMENTATION_COLUMNS, check_box, image_file


@dataclass
class InstanceMask:
    """One annotated instance: its class MID, box (normalized x1, y1, x2, y2) and mask PNG."""

    image_id: str
    label: str
    box_id: str
    box: tuple[float, float, float, float]
    mask_path: Path
    predicted_iou: float
    clicks: str


def mask_file_name(image_id: str, label: str, box_id: str) -> str:
    """The published mask PNG name: ``<ImageID>_<MID without slashes>_<BoxID>.png``."""
    return f"{image_id}_{label.replace('/', '')}_{box_id}.png"


def _float(path: Path, line: int, name: str, text: str, default: float | None = None) -> float:
    if text == "" and default is not None:
        return default
    try:
        return float(text)
    except ValueError:
        raise DataFormatError(path, f"{name} = {text!r} is not a number", line) from None


def read_segmentations(
    csv_path: str | Path, masks_dir: str | Path, skip_corrupt: bool = False, image_folder: str | Path | None = None
) -> tuple[dict[str, list[InstanceMask]], int]:
    """``({ImageID: [InstanceMask]}, rows skipped)`` from a segmentation CSV whose MaskPath names
    files in ``masks_dir``. A malformed row (field count, number, box outside [0, 1] or min > max)
    raises DataFormatError naming the file and line, or with ``skip_corrupt`` is skipped and counted;
    a MaskPath leaving ``masks_dir`` (``..``, absolute) is always refused: it is not a data error but
    a file acting outside its folder; so is, with ``image_folder`` (a DataModule's), an ImageID that is
    not a file name there. Whether the PNGs exist is checked when they are loaded."""
    path = Path(csv_path)
    rows = csv_rows(path)
    col = csv_header(path, rows, SEGMENTATION_COLUMNS)
    out: dict[str, list[InstanceMask]] = {}
    skipped = 0
    for line, row in rows:
        if len(row) == len(col):
            mask_path = resolve_inside(masks_dir, row[col["MaskPath"]], path, line)
        try:
            if len(row) != len(col):
                raise DataFormatError(path, f"{len(row)} fields, the header has {len(col)}", line)
            x1, x2, y1, y2 = (_float(path, line, c, row[col[c]]) for c in ("BoxXMin", "BoxXMax", "BoxYMin", "BoxYMax"))
            check_box(path, line, x1, x2, y1, y2)
            iou = _float(path, line, "PredictedIoU", row[col["PredictedIoU"]], 0.0)  # empty in some rows
        except DataFormatError:
            if not skip_corrupt:
                raise
            skipped += 1
            continue
        if image_folder is not None and row[col["ImageID"]] not in out:
            image_file(image_folder, row[col["ImageID"]], path, line)
        out.setdefault(row[col["ImageID"]], []).append(
            InstanceMask(
                image_id=row[col["ImageID"]],
                label=row[col["LabelName"]],
                box_id=row[col["BoxID"]],
                box=(x1, y1, x2, y2),
                mask_path=mask_path,
                predicted_iou=iou,
                clicks=row[col["Clicks"]],
            )
        )
    return out, skipped


def load_mask(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """The mask PNG as bool (height, width), resized (nearest) to ``size = (width, height)``, the
    image's size (None: the PNG's own). Any non-zero pixel is foreground."""
    from PIL import Image

    from core.images import decode_image

    path = Path(path)
    try:
        image = decode_image(path, "L", what="mask PNG named by the segmentation CSV")
    except DataFormatError as err:
        raise DataFormatError(path, f"not a readable mask PNG: {err.problem}") from None
    if size is not None and image.size != tuple(size):
        image = image.resize(tuple(int(s) for s in size), Image.NEAREST)
    return np.asarray(image) > 0


# Official names of the challenge's instance-segmentation validation files (the scoring CLI's input).
CHALLENGE_SEGMENTATION_FILES = {
    "boxes": "challenge-2019-validation-segmentation-bbox.csv",
    "image_labels": "challenge-2019-validation-segmentation-labels.csv",
    "masks": "challenge-2019-validation-segmentation-masks.csv",
    "masks_dir": "challenge-2019-validation-masks",  # what challenge-2019-validation-masks-[0-f].zip extract to
    "hierarchy": "challenge-2019-label300-segmentable-hierarchy.json",
    "classes": "challenge-2019-classes-description-segmentable.csv",
}


def expand_masks(images: dict[str, list[InstanceMask]], hierarchy) -> dict[str, list[InstanceMask]]:
    """Every mask copied to each ancestor class of its label (the official expansion of the
    segmentation CSV, ``oid_hierarchical_labels_expansion.py --annotation_type=1``)."""
    return {
        image_id: [replace(m, label=name) for m in items for name in hierarchy.expand_labels(m.label)]
        for image_id, items in images.items()
    }
