"""The visual-relationship files of Open Images V5 / Challenge 2019, read with the standard library
only (the scoring CLI imports no torch), with errors that name the file and line.

Layouts (as published):

- relationships ``ImageID,LabelName1,LabelName2,XMin1,XMax1,YMin1,YMax1,XMin2,XMax2,YMin2,YMax2,
  RelationshipLabel`` (normalized coordinates, X,X,Y,Y order per box): ``{split}-annotations-vrd.csv``
  of V5 and the challenge's ``challenge-2019-train-vrd.csv`` / ``challenge-2019-validation-vrd.csv``
  (:func:`vrd_files` finds whichever a download holds).
  Columns are found by header name.
- the challenge's image-level labels for the validation images, ``challenge-2019-validation-vrd-labels.csv``
  (``ImageID,Source,LabelName,Confidence``; read by ``datamodules.openimages_files.read_image_labels``).
- two-column name lists without header row (a ``MID,DisplayName`` style header is accepted too):
  ``challenge-2019-classes-vrd.csv`` (the object classes of the track), ``challenge-2019-attributes-
  description.csv`` (the attributes that are the object of an "is" relationship) and
  ``challenge-2019-relationships-description.csv`` (``at,at`` ...: the relationship names).

The "is" relationship: ``LabelName2`` is an attribute (e.g. Wooden, Transparent) of the subject, and
the published rows repeat the subject's box as the second box. The official evaluator has no special
case for it (it scores "is" tuples like any other, both boxes compared), so the reader keeps both boxes;
where a release leaves the second box empty on an "is" row, the subject's box is used, which is what
the releases that fill it contain. An empty second box on any other relationship is an error."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.data import DataFormatError, csv_header, csv_rows
from datamodules.openimages_files import RELATIONSHIP_COLUMNS, check_box

ATTRIBUTE_RELATIONSHIP = "is"

# Official names of the challenge's relationship files in an annotations folder (the scoring CLI's input).
CHALLENGE_VRD_FILES = {
    "relationships": "challenge-2019-validation-vrd.csv",
    "image_labels": "challenge-2019-validation-vrd-labels.csv",
    "classes": "challenge-2019-classes-vrd.csv",
    "attributes": "challenge-2019-attributes-description.csv",
    "relationship_names": "challenge-2019-relationships-description.csv",
}
TRAIN_VRD_FILE = "challenge-2019-train-vrd.csv"


def split_vrd_file(split: str) -> str:
    """The V5 relationship file of a split: ``train-annotations-vrd.csv`` and so on."""
    return f"{split}-annotations-vrd.csv"


def vrd_files(root: str | Path, split: str) -> tuple[Path, Path | None]:
    """A split's relationship file and its image-level label file, under the names of the release the
    download holds: V5's ``{split}-annotations-vrd.csv`` (labels: the detection track's
    ``{split}-annotations-human-imagelabels-boxable.csv``) or the challenge's ``challenge-2019-{split}-vrd.csv``
    (labels: ``challenge-2019-{split}-vrd-labels.csv``). The V5 name is returned when neither exists,
    so a missing file is named; the label file is None when the release has none for the split."""
    root = Path(root)
    releases = (
        (split_vrd_file(split), f"{split}-annotations-human-imagelabels-boxable.csv"),
        (f"challenge-2019-{split}-vrd.csv", f"challenge-2019-{split}-vrd-labels.csv"),
    )
    relationships, labels = next(((r, lab) for r, lab in releases if (root / r).exists()), releases[0])
    return root / relationships, (root / labels if (root / labels).exists() else None)


@dataclass
class Relationship:
    """One annotated (or predicted) relationship: subject ``label1`` in ``box1`` stands in
    ``relationship`` to object ``label2`` in ``box2``; boxes normalized (x1, y1, x2, y2)."""

    label1: str
    label2: str
    box1: tuple[float, float, float, float]
    box2: tuple[float, float, float, float]
    relationship: str


def _box(path: Path, line: int, row: list[str], col: dict[str, int], k: int) -> tuple[float, float, float, float]:
    values = []
    for name in (f"XMin{k}", f"XMax{k}", f"YMin{k}", f"YMax{k}"):
        text = row[col[name]]
        try:
            values.append(float(text))
        except ValueError:
            raise DataFormatError(path, f"{name} = {text!r} is not a number", line) from None
    xmin, xmax, ymin, ymax = values
    check_box(path, line, xmin, xmax, ymin, ymax)
    return (xmin, ymin, xmax, ymax)


def read_relationships(path: str | Path, skip_corrupt: bool = False) -> tuple[dict[str, list[Relationship]], int]:
    """``({ImageID: [Relationship]}, rows skipped)`` from a relationship CSV (V5 or challenge layout).
    A malformed row (field count, non-numeric coordinate, box outside [0, 1] or with min > max, empty
    label) raises DataFormatError naming the file and line, or with ``skip_corrupt`` is skipped and
    counted. An "is" row with an empty second box takes the subject's box (module docstring)."""
    path = Path(path)
    rows = csv_rows(path)
    col = csv_header(path, rows, RELATIONSHIP_COLUMNS)
    out: dict[str, list[Relationship]] = {}
    skipped = 0
    second = ("XMin2", "XMax2", "YMin2", "YMax2")
    for line, row in rows:
        try:
            if len(row) != len(col):
                raise DataFormatError(path, f"{len(row)} fields, the header has {len(col)}", line)
            image_id, label1, label2, relationship = (
                row[col[c]].strip() for c in ("ImageID", "LabelName1", "LabelName2", "RelationshipLabel")
            )
            for name, value in (("ImageID", image_id), ("LabelName1", label1), ("LabelName2", label2)):
                if not value:
                    raise DataFormatError(path, f"empty {name}", line)
            if not relationship:
                raise DataFormatError(path, "empty RelationshipLabel", line)
            box1 = _box(path, line, row, col, 1)
            if relationship == ATTRIBUTE_RELATIONSHIP and all(not row[col[c]].strip() for c in second):
                box2 = box1
            else:
                box2 = _box(path, line, row, col, 2)
        except DataFormatError:
            if not skip_corrupt:
                raise
            skipped += 1
            continue
        out.setdefault(image_id, []).append(Relationship(label1, label2, box1, box2, relationship))
    return out, skipped
