"""The Open Images V5 / Challenge 2019 annotation files, read with the standard library and numpy only
(the scoring CLI imports no torch), with errors that name the file and line.

Layouts (as published):

- boxes ``ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,
  IsDepiction,IsInside`` (normalized coordinates, X,X,Y,Y order). The challenge's
  ``challenge-2019-validation-detection-bbox.csv`` has fewer columns (``ImageID,LabelName,XMin,XMax,
  YMin,YMax,IsGroupOf``): columns are found by header name, so both read.
- class descriptions ``MID,DisplayName`` (no header row in some releases: both are accepted).
- human-verified image-level labels ``ImageID,Source,LabelName,Confidence`` (1 present, 0 verified absent).
- the class hierarchy JSON (``LabelName`` / ``Subcategory``; a class may have several parents).

Hierarchy expansion follows the official pipeline (tensorflow/models research/object_detection/
dataset_tools/oid_hierarchical_labels_expansion.py): a box, and a positive image label, is copied to
every ancestor of its class (each ancestor once, though a multi-parent class reaches it by several
paths); a negative image label (Confidence 0) is copied to every descendant. The hierarchy's root
(``/m/0bl9f``, "Entity") is skipped, as there."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.data import DataFormatError, csv_header, csv_rows, read_json, resolve_inside

BOX_COLUMNS = (
    "ImageID", "Source", "LabelName", "Confidence", "XMin", "XMax", "YMin", "YMax",
    "IsOccluded", "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside",
)  # fmt: skip
BOX_REQUIRED = ("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax", "IsGroupOf")
IMAGE_LABEL_COLUMNS = ("ImageID", "Source", "LabelName", "Confidence")
CLASS_COLUMNS = ("MID", "DisplayName")
SEGMENTATION_COLUMNS = (
    "MaskPath", "ImageID", "LabelName", "BoxID", "BoxXMin", "BoxXMax", "BoxYMin", "BoxYMax",
    "PredictedIoU", "Clicks",
)  # fmt: skip
RELATIONSHIP_COLUMNS = (
    "ImageID", "LabelName1", "LabelName2", "XMin1", "XMax1", "YMin1", "YMax1",
    "XMin2", "XMax2", "YMin2", "YMax2", "RelationshipLabel",
)  # fmt: skip

# The detection files of a release, as published: Open Images V5 and the Challenge 2019 training and
# validation files (storage.googleapis.com/openimages/challenge_2019/). ``{split}``: train, validation, test.
V5_DETECTION_FILES = {
    "classes": "class-descriptions-boxable.csv",
    "hierarchy": "bbox_labels_600_hierarchy.json",
    "boxes": "{split}-annotations-bbox.csv",
    "image_labels": "{split}-annotations-human-imagelabels-boxable.csv",
    "segmentations": "{split}-annotations-object-segmentation.csv",
    "masks_dir": "{split}-masks",
}
CHALLENGE_2019_DETECTION_FILES = {
    "classes": "challenge-2019-classes-description-500.csv",
    "hierarchy": "challenge-2019-label500-hierarchy.json",
    "boxes": "challenge-2019-{split}-detection-bbox.csv",
    "image_labels": "challenge-2019-{split}-detection-human-imagelabels.csv",
}
# The instance-segmentation track's own class list (300 segmentable classes), boxes and image labels.
CHALLENGE_2019_SEGMENTATION_FILES = {
    "classes": "challenge-2019-classes-description-segmentable.csv",
    "hierarchy": "challenge-2019-label300-segmentable-hierarchy.json",
    "boxes": "challenge-2019-{split}-segmentation-bbox.csv",
    "image_labels": "challenge-2019-{split}-segmentation-labels.csv",
    "segmentations": "challenge-2019-{split}-segmentation-masks.csv",
    "masks_dir": "challenge-2019-{split}-masks",  # what challenge-2019-{split}-masks-[0-f].zip extract to
}


def find_release(root: str | Path, releases: list[dict[str, str]]) -> dict[str, str]:
    """The first release whose class list is in ``root``; the first release when none is (so the error
    then names that release's file)."""
    for files in releases:
        if (Path(root) / files["classes"]).exists():
            return files
    return releases[0]


# Official names of the challenge's files in an annotations folder (the scoring CLI's input).
CHALLENGE_FILES = {
    "boxes": "challenge-2019-validation-detection-bbox.csv",
    "image_labels": "challenge-2019-validation-detection-human-imagelabels.csv",
    "hierarchy": "challenge-2019-label500-hierarchy.json",
    "classes": "challenge-2019-classes-description-500.csv",
}


IMAGE_ID = re.compile(r"[0-9a-fA-F]{16}")  # the published ImageID form, e.g. 000002b66c9c498e


def image_file(folder: str | Path, image_id: str, path: str | Path, line: int) -> Path:
    """``<folder>/<ImageID>.jpg`` for an ImageID read at ``line`` of ``path``. The id names a file, so
    it must stay inside ``folder`` (core.data.resolve_inside) and have the published form, 16
    hexadecimal digits; anything else is refused naming the file and line."""
    file = resolve_inside(folder, image_id, path, line, ".jpg")
    if not IMAGE_ID.fullmatch(image_id):
        raise DataFormatError(
            path, f"ImageID {image_id!r} is not an Open Images image id (16 hexadecimal digits); refused", line
        )
    return file


def _float(path: Path, line: int, name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise DataFormatError(path, f"{name} = {text!r} is not a number", line) from None


def _flag(path: Path, line: int, name: str, text: str) -> bool:
    if text in ("1", "0"):
        return text == "1"
    if text in ("", "-1"):  # unknown in some releases: not set
        return False
    raise DataFormatError(path, f"{name} = {text!r}; expected 0, 1 or -1", line)


def check_box(path: Path, line: int, xmin: float, xmax: float, ymin: float, ymax: float) -> None:
    """A normalized box must lie in [0, 1] with min <= max; else DataFormatError naming the line."""
    if not all(0.0 <= v <= 1.0 for v in (xmin, xmax, ymin, ymax)):
        raise DataFormatError(path, f"box ({xmin}, {xmax}, {ymin}, {ymax}) leaves [0, 1]", line)
    if xmin > xmax or ymin > ymax:
        raise DataFormatError(path, f"box has min > max (XMin {xmin}, XMax {xmax}, YMin {ymin}, YMax {ymax})", line)


@dataclass
class ImageBoxes:
    """One image's boxes: ``labels`` (n,) class MIDs, ``boxes`` (n, 4) normalized x1, y1, x2, y2,
    ``group_of`` (n,) bool."""

    labels: list[str] = field(default_factory=list)
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    group_of: list[bool] = field(default_factory=list)

    def arrays(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        return (
            list(self.labels),
            np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4),
            np.asarray(self.group_of, dtype=bool),
        )


def read_boxes(
    path: str | Path, skip_corrupt: bool = False, image_folder: str | Path | None = None
) -> tuple[dict[str, ImageBoxes], int]:
    """``({ImageID: ImageBoxes}, rows skipped)`` from a box CSV. A malformed row raises
    DataFormatError naming the file and line, or with ``skip_corrupt`` is skipped and counted.
    With ``image_folder`` (a DataModule, which opens ``<folder>/<ImageID>.jpg``) every ImageID must
    name a file there (:func:`image_file`), whatever ``skip_corrupt`` says."""
    path = Path(path)
    rows = csv_rows(path)
    col = csv_header(path, rows, BOX_REQUIRED)
    images: dict[str, ImageBoxes] = {}
    skipped = 0
    for line, row in rows:
        try:
            if len(row) != len(col):
                raise DataFormatError(path, f"{len(row)} fields, the header has {len(col)}", line)
            x1, x2, y1, y2 = (_float(path, line, c, row[col[c]]) for c in ("XMin", "XMax", "YMin", "YMax"))
            check_box(path, line, x1, x2, y1, y2)
            group = _flag(path, line, "IsGroupOf", row[col["IsGroupOf"]])
        except DataFormatError:
            if not skip_corrupt:
                raise
            skipped += 1
            continue
        if image_folder is not None and row[col["ImageID"]] not in images:
            image_file(image_folder, row[col["ImageID"]], path, line)
        item = images.setdefault(row[col["ImageID"]], ImageBoxes())
        item.labels.append(row[col["LabelName"]])
        item.boxes.append((x1, y1, x2, y2))
        item.group_of.append(group)
    return images, skipped


def read_image_labels(path: str | Path, image_folder: str | Path | None = None) -> dict[str, dict[str, int]]:
    """``{ImageID: {LabelName: 1 present | 0 verified absent}}`` from a human-verified labels CSV
    (``image_folder``: every ImageID must name a file there, as in :func:`read_boxes`)."""
    path = Path(path)
    rows = csv_rows(path)
    col = csv_header(path, rows, ("ImageID", "LabelName", "Confidence"))
    labels: dict[str, dict[str, int]] = {}
    for line, row in rows:
        if len(row) != len(col):
            raise DataFormatError(path, f"{len(row)} fields, the header has {len(col)}", line)
        confidence = row[col["Confidence"]]
        if confidence not in ("0", "1", "0.0", "1.0"):
            raise DataFormatError(path, f"Confidence = {confidence!r}; expected 0 or 1", line)
        if image_folder is not None and row[col["ImageID"]] not in labels:
            image_file(image_folder, row[col["ImageID"]], path, line)
        labels.setdefault(row[col["ImageID"]], {})[row[col["LabelName"]]] = int(float(confidence))
    return labels


MID = re.compile(r"/[mg]/[0-9a-z_]+")  # a Freebase / Knowledge Graph id, e.g. /m/011k07


def read_class_descriptions(path: str | Path) -> dict[str, str]:
    """``{name: display name}`` in file order from a two-column list: the class descriptions
    (``MID,DisplayName``), and likewise the VRD class, attribute and relationship lists. The official
    files have no header row; circulating copies add one (``MID,DisplayName``, ``LabelName,DisplayName``,
    ``label,class``, ``id,name``). A first row whose first field is not a MID, in a list whose second
    row starts with one, is such a header, not a class."""
    path = Path(path)
    classes: dict[str, str] = {}
    rows = list(csv_rows(path))
    for line, row in rows:
        if len(row) != 2:
            raise DataFormatError(path, f"{len(row)} fields; expected MID,DisplayName", line)
        if line == rows[0][0] and _is_header(row, rows[1][1] if len(rows) > 1 else None):
            continue
        name = row[0].strip()
        if not name:
            raise DataFormatError(path, "empty name", line)
        if name in classes:
            raise DataFormatError(path, f"class {name!r} listed twice", line)
        classes[name] = row[1]
    if not classes:
        raise DataFormatError(path, "no classes")
    return classes


def _is_header(first: list[str], second: list[str] | None) -> bool:
    names = tuple(r.strip() for r in first)
    if names in (CLASS_COLUMNS, ("LabelName", "DisplayName")):
        return True
    return not MID.fullmatch(names[0]) and second is not None and bool(MID.fullmatch(second[0].strip()))


def _trail(labels: tuple[str, ...]) -> str:
    """The path of a node from the root for messages, shortened when deep."""
    shown = labels if len(labels) <= 6 else (*labels[:2], f"... ({len(labels) - 5} more)", *labels[-3:])
    return " > ".join(shown)


def hierarchy_nodes(tree: dict, source: str | Path) -> list[tuple[str, tuple[str, ...]]]:
    """(LabelName, its ancestors without the root) of every node below the root, validated once:
    ``LabelName`` a string, ``Subcategory`` a list of objects, no class among its own ancestors (a
    self-loop or a cycle would make a class its own parent and change every expanded count). Walked
    with an explicit stack, so a deep file raises no RecursionError. Errors name the node's path."""
    out: list[tuple[str, tuple[str, ...]]] = []
    stack: list[tuple[object, tuple[str, ...], str]] = [(tree, (), "the root")]
    while stack:
        node, trail, where = stack.pop()
        if not isinstance(node, dict) or "LabelName" not in node:
            raise DataFormatError(source, f"hierarchy node {where} ({node!r:.80}) has no 'LabelName'")
        name, children = node["LabelName"], node.get("Subcategory", [])
        if not isinstance(name, str) or not name:
            raise DataFormatError(source, f"hierarchy node {where}: LabelName {name!r:.40} is not a class name")
        path = (*trail, name)
        if name in trail:
            kind = "a self-loop: it lists itself" if trail[-1] == name else "a cycle: it is its own ancestor"
            raise DataFormatError(source, f"hierarchy node {_trail(path)}: {kind}")
        if not isinstance(children, list):
            raise DataFormatError(
                source, f"hierarchy node {_trail(path)}: Subcategory must be a list, found {children!r:.40}"
            )
        if trail:
            out.append((name, trail[1:]))  # the root (trail[0]) is no class's ancestor
        for i, child in enumerate(reversed(children)):
            stack.append((child, path, f"{_trail(path)} > Subcategory[{len(children) - 1 - i}]"))
    return out


class Hierarchy:
    """The class hierarchy JSON as ``ancestors`` / ``descendants`` maps (sets, root excluded)."""

    def __init__(self, tree: dict, source: str | Path = "<hierarchy>"):
        self.root = tree.get("LabelName") if isinstance(tree, dict) else None
        if self.root is None:
            raise DataFormatError(source, "hierarchy root has no 'LabelName'")
        self.ancestors: dict[str, set[str]] = {}
        self.descendants: dict[str, set[str]] = {}
        for name, path in hierarchy_nodes(tree, source):
            self.ancestors.setdefault(name, set()).update(path)
            self.descendants.setdefault(name, set())
            for parent in path:
                self.descendants[parent].add(name)

    @classmethod
    def read(cls, path: str | Path) -> Hierarchy:
        return cls(read_json(path, "class hierarchy JSON"), path)

    def expand_labels(self, label: str) -> list[str]:
        """``label`` and its ancestors (the official box / positive-label expansion)."""
        return [label, *sorted(self.ancestors.get(label, ()))]

    def expand_negative(self, label: str) -> list[str]:
        """``label`` and its descendants (the official negative-label expansion)."""
        return [label, *sorted(self.descendants.get(label, ()))]


def expand_boxes(images: dict[str, ImageBoxes], hierarchy: Hierarchy) -> dict[str, ImageBoxes]:
    """Every box copied to each ancestor class of its label (ground truth only, as the challenge)."""
    out: dict[str, ImageBoxes] = {}
    for image_id, item in images.items():
        new = ImageBoxes()
        for label, box, group in zip(item.labels, item.boxes, item.group_of):
            for name in hierarchy.expand_labels(label):
                new.labels.append(name)
                new.boxes.append(box)
                new.group_of.append(group)
        out[image_id] = new
    return out


def expand_image_labels(labels: dict[str, dict[str, int]], hierarchy: Hierarchy) -> dict[str, set[str]]:
    """``{ImageID: verified classes}`` after expansion: positives up to ancestors, negatives down to
    descendants. Presence or absence does not matter to the detection metric, only "verified"."""
    out: dict[str, set[str]] = {}
    for image_id, per_label in labels.items():
        verified: set[str] = set()
        for label, confidence in per_label.items():
            verified.update(hierarchy.expand_labels(label) if confidence == 1 else hierarchy.expand_negative(label))
        out[image_id] = verified
    return out
