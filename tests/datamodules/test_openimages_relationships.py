"""The Open Images relationship files: the reader on the published header, its errors, the "is" rows,
the name lists, and the generator's relationship files (labels a function of classes and geometry)."""

from __future__ import annotations

import csv
import hashlib

import pytest

from core.data import DataFormatError
from datamodules.openimages_files import read_class_descriptions
from datamodules.openimages_relationships import (
    CHALLENGE_VRD_FILES,
    Relationship,
    read_relationships,
    split_vrd_file,
)
from datamodules.synthetic.openimages import LEAVES, generate_openimages
from datamodules.synthetic.openimages_relationships import RELATIONSHIPS, pair_relationship

HEADER = "ImageID,LabelName1,LabelName2,XMin1,XMax1,YMin1,YMax1,XMin2,XMax2,YMin2,YMax2,RelationshipLabel\n"
GOOD = "0002bd46a2d7c5a7,/m/04yx4,/m/0cvnqh,0.1,0.4,0.2,0.9,0.3,0.8,0.6,1.0,at\n"


def test_reader_on_the_published_header(tmp_path):
    path = tmp_path / "validation-annotations-vrd.csv"
    path.write_text(HEADER + GOOD + "0002bd46a2d7c5a7,/m/04yx4,/m/083vt,0.1,0.4,0.2,0.9,0.1,0.4,0.2,0.9,is\n")
    images, skipped = read_relationships(path)
    assert skipped == 0 and list(images) == ["0002bd46a2d7c5a7"]
    first, second = images["0002bd46a2d7c5a7"]
    # X,X,Y,Y columns -> (x1, y1, x2, y2) boxes
    assert first == Relationship("/m/04yx4", "/m/0cvnqh", (0.1, 0.2, 0.4, 0.9), (0.3, 0.6, 0.8, 1.0), "at")
    assert second.relationship == "is" and second.box2 == second.box1  # attribute: the subject's box, as published


def test_columns_are_found_by_name(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text(
        "RelationshipLabel,ImageID,LabelName1,LabelName2,XMin1,XMax1,YMin1,YMax1,XMin2,XMax2,YMin2,YMax2\n"
        "on,img,/m/a,/m/b,0,0.5,0,0.5,0.5,1,0.5,1\n"
    )
    assert read_relationships(path)[0]["img"] == [
        Relationship("/m/a", "/m/b", (0, 0, 0.5, 0.5), (0.5, 0.5, 1, 1), "on")
    ]


def test_is_row_without_a_second_box_takes_the_subject_box(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text(HEADER + "img,/m/a,/m/attr,0.1,0.4,0.2,0.9,,,,,is\n")
    (item,) = read_relationships(path)[0]["img"]
    assert item.box2 == item.box1 == (0.1, 0.2, 0.4, 0.9)
    path.write_text(HEADER + "img,/m/a,/m/b,0.1,0.4,0.2,0.9,,,,,on\n")  # only "is" may leave it out
    with pytest.raises(DataFormatError, match=r"r\.csv:2: XMin2 = '' is not a number"):
        read_relationships(path)


@pytest.mark.parametrize(
    "row, problem",
    [
        ("img,/m/a,/m/b,0.1,0.4,0.2,1.3,0.3,0.8,0.6,1.0,at", r"box \(.*\) leaves \[0, 1\]"),
        ("img,/m/a,/m/b,0.1,0.4,0.2,0.9,0.9,0.8,0.6,1.0,at", "box has min > max"),
        ("img,/m/a,/m/b,0.1,x,0.2,0.9,0.3,0.8,0.6,1.0,at", "XMax1 = 'x' is not a number"),
        ("img,/m/a,/m/b,0.1,0.4,0.2,0.9,0.3,0.8", "9 fields, the header has 12"),
        ("img,/m/a,,0.1,0.4,0.2,0.9,0.3,0.8,0.6,1.0,at", "empty LabelName2"),
        ("img,/m/a,/m/b,0.1,0.4,0.2,0.9,0.3,0.8,0.6,1.0,", "empty RelationshipLabel"),
    ],
)
def test_malformed_row_names_file_and_line_or_is_skipped(tmp_path, row, problem):
    path = tmp_path / "train-annotations-vrd.csv"
    path.write_text(HEADER + GOOD + row + "\n")
    with pytest.raises(DataFormatError, match=rf"train-annotations-vrd\.csv:3: {problem}"):
        read_relationships(path)
    images, skipped = read_relationships(path, skip_corrupt=True)
    assert skipped == 1 and sum(len(v) for v in images.values()) == 1


def test_wrong_header_and_name_lists(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("ImageID,LabelName1,LabelName2\n")
    with pytest.raises(DataFormatError, match=r"r\.csv:1: header .* lacks column\(s\) \['XMin1'"):
        read_relationships(path)
    names = tmp_path / "challenge-2019-relationships-description.csv"
    names.write_text("at,at\non,on (top of)\n")  # published without a header row
    assert read_class_descriptions(names) == {"at": "at", "on": "on (top of)"}
    names.write_text("MID,DisplayName\n/m/a,A\n/m/a,again\n")
    with pytest.raises(DataFormatError, match=r":3: class '/m/a' listed twice"):
        read_class_descriptions(names)


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_generator_writes_learnable_relationships_in_the_published_layout(tmp_path):
    root = generate_openimages(tmp_path / "oi", num_train=12, num_val=6, num_test=2, seed=3)
    for name in CHALLENGE_VRD_FILES.values():
        assert (root / name).exists(), name
    assert list(read_class_descriptions(root / CHALLENGE_VRD_FILES["relationship_names"])) == list(RELATIONSHIPS)
    assert list(read_class_descriptions(root / CHALLENGE_VRD_FILES["classes"])) == [m for m, *_ in LEAVES]
    assert (root / "validation-annotations-vrd.csv").read_bytes() == (
        root / CHALLENGE_VRD_FILES["relationships"]
    ).read_bytes()

    boxes: dict[str, list[dict]] = {}
    with open(root / "train-annotations-bbox.csv") as handle:
        for row in csv.DictReader(handle):
            box = tuple(float(row[c]) for c in ("XMin", "YMin", "XMax", "YMax"))
            boxes.setdefault(row["ImageID"], []).append(
                {"mid": row["LabelName"], "box": box, "group_of": row["IsGroupOf"] == "1"}
            )
    relationships, skipped = read_relationships(root / split_vrd_file("train"))
    assert skipped == 0 and relationships
    order = [m for m, *_ in LEAVES]
    for image_id, objects in boxes.items():
        single = [o for o in objects if not o["group_of"]]
        got = relationships.get(image_id, [])
        assert len(got) == len(single) * (len(single) - 1) // 2  # every non-group-of pair, once
        for r in got:
            subject = next(o for o in single if o["mid"] == r.label1 and o["box"] == r.box1)
            obj = next(o for o in single if o["mid"] == r.label2 and o["box"] == r.box2)
            assert order.index(r.label1) < order.index(r.label2)
            assert r.relationship == pair_relationship(subject, obj)  # a function of classes and geometry
    # the writer uses no randomness: images and boxes are those of the same seed
    again = generate_openimages(tmp_path / "again", num_train=12, num_val=6, num_test=2, seed=3)
    for name in ("train-annotations-bbox.csv", "train/" + next(iter(boxes)) + ".jpg", "train-annotations-vrd.csv"):
        assert _md5(root / name) == _md5(again / name)


def test_pair_relationship_rules():
    dog = {"mid": "/m/0sy003", "box": (0.1, 0.1, 0.4, 0.4)}
    ball = {"mid": "/m/0sy005", "box": (0.3, 0.3, 0.5, 0.5)}
    car = {"mid": "/m/0sy001", "box": (0.2, 0.6, 0.4, 0.9)}
    bike = {"mid": "/m/0sy002", "box": (0.6, 0.6, 0.9, 0.9)}
    assert pair_relationship(dog, ball) == "holds"
    assert pair_relationship(dog, car) == "on"  # overlapping in x, subject higher
    assert pair_relationship(car, dog) == "under"
    assert pair_relationship(car, bike) == "at"  # side by side


def test_datamodule_reads_the_challenge_2019_relationship_names(tmp_path):
    """The relationship track downloaded as the challenge published it: challenge-2019-{train,validation}-vrd.csv
    (+ the validation -vrd-labels.csv) beside the challenge's detection files, no V5 names anywhere."""
    from datamodules.openimages_vrd import OpenImagesRelationshipDataModule

    v5 = generate_openimages(tmp_path / "v5", num_train=6, num_val=4, num_test=2)
    reference = OpenImagesRelationshipDataModule(str(v5), num_classes=9, num_relationships=4, num_attributes=2)
    reference.setup()
    root = tmp_path / "challenge"
    root.mkdir()
    copies = {
        "challenge-2019-classes-description-500.csv": "challenge-2019-classes-description-500.csv",
        "challenge-2019-label500-hierarchy.json": "challenge-2019-label500-hierarchy.json",
        "challenge-2019-classes-vrd.csv": "challenge-2019-classes-vrd.csv",
        "challenge-2019-attributes-description.csv": "challenge-2019-attributes-description.csv",
        "challenge-2019-relationships-description.csv": "challenge-2019-relationships-description.csv",
        "challenge-2019-validation-vrd-labels.csv": "challenge-2019-validation-vrd-labels.csv",
    }
    for split in ("train", "validation"):
        (root / split).symlink_to(v5 / split)
        copies[f"challenge-2019-{split}-detection-bbox.csv"] = f"{split}-annotations-bbox.csv"
        copies[f"challenge-2019-{split}-detection-human-imagelabels.csv"] = (
            f"{split}-annotations-human-imagelabels-boxable.csv"
        )
        copies[f"challenge-2019-{split}-vrd.csv"] = f"{split}-annotations-vrd.csv"
    for name, source in copies.items():
        (root / name).write_bytes((v5 / source).read_bytes())
    dm = OpenImagesRelationshipDataModule(str(root), num_classes=9, num_relationships=4, num_attributes=2)
    dm.setup()
    assert dm.relationship_names == reference.relationship_names and dm.entity_names == reference.entity_names
    assert set(dm._datasets) == {"train", "val"}  # the challenge publishes no test relationships
    keys = ("image_id", "subject_boxes", "object_boxes", "subject_labels", "object_labels", "relationships")
    for split in ("train", "val"):
        ours, theirs = dm._datasets[split].records, reference._datasets[split].records
        assert [[r[k] for k in keys] for r in ours] == [[r[k] for k in keys] for r in theirs]
    # validation's image-level labels come from the track's own -vrd-labels.csv
    assert any(r["image_labels"] for r in dm._datasets["val"].records)
