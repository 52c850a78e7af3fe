"""The visual-relationship files of the generated Open Images set (called by
``datamodules.synthetic.openimages.generate_openimages`` with each split's drawn objects).

Written under ``root`` (published names and columns)::

    {train,validation,test}-annotations-vrd.csv     ImageID,LabelName1,LabelName2,XMin1,XMax1,YMin1,YMax1,
                                                    XMin2,XMax2,YMin2,YMax2,RelationshipLabel
    challenge-2019-validation-vrd.csv               the validation relationships (challenge name)
    challenge-2019-validation-vrd-labels.csv        ImageID,Source,LabelName,Confidence of the validation images
    challenge-2019-classes-vrd.csv                  MID,DisplayName of the track's classes (no header row)
    challenge-2019-attributes-description.csv       attribute MIDs (objects of "is"; none is drawn here)
    challenge-2019-relationships-description.csv    relationship names (no header row)

Signal: the label is a deterministic function of the pair's classes and of the drawn boxes, so it can be
read off the image. Every pair of annotated, non-group-of objects of an image gives one row; the subject
is the object whose class comes first in the leaf list, the object the other one, and

- "holds": an animal (Dog, Cat) subject whose box meets a Ball's box;
- else, when the two boxes overlap horizontally: "on" if the subject's centre is higher, else "under";
- else (side by side): "at".

No randomness: images and boxes of the generator are untouched."""

from __future__ import annotations

import csv
from pathlib import Path

from datamodules.openimages_files import RELATIONSHIP_COLUMNS
from datamodules.openimages_relationships import CHALLENGE_VRD_FILES, split_vrd_file

RELATIONSHIPS = ("at", "on", "holds", "under")
ANIMALS = ("/m/0sy003", "/m/0sy004")  # Dog, Cat
BALL = "/m/0sy005"
ATTRIBUTES = (("/m/0sy201", "Wooden"), ("/m/0sy202", "Transparent"))  # listed as published; never drawn


def pair_relationship(subject: dict, obj: dict) -> str:
    """The relationship of ``subject`` to ``obj`` (generator object dicts), by the module's rules."""
    ax1, ay1, ax2, ay2 = subject["box"]
    bx1, by1, bx2, by2 = obj["box"]
    overlap_x = min(ax2, bx2) - max(ax1, bx1) > 0
    overlap_y = min(ay2, by2) - max(ay1, by1) > 0
    if subject["mid"] in ANIMALS and obj["mid"] == BALL and overlap_x and overlap_y:
        return "holds"
    if overlap_x:
        return "on" if (ay1 + ay2) < (by1 + by2) else "under"
    return "at"


def relationship_rows(drawn: list[tuple[str, list[dict]]], class_order: list[str]) -> list[list]:
    """The CSV rows of every annotated non-group-of pair of each image."""
    rows = []
    for image_id, objects in drawn:
        single = sorted((o for o in objects if not o["group_of"]), key=lambda o: class_order.index(o["mid"]))
        for i, subject in enumerate(single):
            for obj in single[i + 1 :]:
                (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = subject["box"], obj["box"]
                rows.append(
                    [image_id, subject["mid"], obj["mid"]]
                    + [f"{v:.6f}" for v in (ax1, ax2, ay1, ay2, bx1, bx2, by1, by2)]
                    + [pair_relationship(subject, obj)]
                )
    return rows


def _write(path: Path, header: list[str] | None, rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        if header:
            writer.writerow(header)
        writer.writerows(rows)


def write_relationship_files(
    root: str | Path, split: str, drawn: list[tuple[str, list[dict]]], classes: list[tuple[str, str]]
) -> None:
    """Write ``split``'s relationship file (and, for validation, the challenge's files) plus the name
    lists into ``root``, from the generator's ``drawn`` list and its leaf ``classes`` (MID, name)."""
    root = Path(root)
    class_order = [mid for mid, _ in classes]
    rows = relationship_rows(drawn, class_order)
    _write(root / split_vrd_file(split), list(RELATIONSHIP_COLUMNS), rows)
    if split == "validation":
        _write(root / CHALLENGE_VRD_FILES["relationships"], list(RELATIONSHIP_COLUMNS), rows)
        labels = []
        for image_id, objects in drawn:
            for mid in dict.fromkeys(o["mid"] for o in objects):
                labels.append([image_id, "verification", mid, 1])
        _write(root / CHALLENGE_VRD_FILES["image_labels"], ["ImageID", "Source", "LabelName", "Confidence"], labels)
    _write(root / CHALLENGE_VRD_FILES["classes"], None, [list(c) for c in classes])
    _write(root / CHALLENGE_VRD_FILES["attributes"], None, [list(a) for a in ATTRIBUTES])
    _write(root / CHALLENGE_VRD_FILES["relationship_names"], None, [[r, r] for r in RELATIONSHIPS])
