"""Open Images readers on the published headers, their errors, and the DataModule on generated files."""

from __future__ import annotations

import functools

import pytest

from core.data import DataFormatError
from datamodules.openimages import OpenImagesDetectionDataModule
from datamodules.openimages_files import read_boxes, read_class_descriptions, read_image_labels
from datamodules.synthetic.openimages import generate_openimages

HEADER = (
    "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside\n"
)


def test_box_reader_real_header_and_challenge_header(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text(HEADER + "000a1249af2bc5f0,xclick,/m/01g317,1,0.1,0.3,0.2,0.6,0,1,1,0,0\n")
    images, skipped = read_boxes(path)
    item = images["000a1249af2bc5f0"]
    assert skipped == 0 and item.labels == ["/m/01g317"]
    assert item.boxes == [(0.1, 0.2, 0.3, 0.6)] and item.group_of == [True]  # X,X,Y,Y -> x1,y1,x2,y2
    path.write_text("ImageID,LabelName,XMin,XMax,YMin,YMax,IsGroupOf\nimg,/m/a,0.0,1.0,0.0,1.0,0\n")
    assert read_boxes(path)[0]["img"].boxes == [(0.0, 0.0, 1.0, 1.0)]


@pytest.mark.parametrize(
    "row, problem",
    [
        ("img,xclick,/m/a,1,0.1,0.3,0.2,1.2,0,0,0,0,0", "box \\(.*\\) leaves \\[0, 1\\]"),
        ("img,xclick,/m/a,1,0.5,0.3,0.2,0.4,0,0,0,0,0", "box has min > max"),
        ("img,xclick,/m/a,1,0.1,abc,0.2,0.4,0,0,0,0,0", "XMax = 'abc' is not a number"),
        ("img,xclick,/m/a,1,0.1,0.3", "6 fields, the header has 13"),
        ("img,xclick,/m/a,1,0.1,0.3,0.2,0.4,0,0,7,0,0", "IsGroupOf = '7'"),
    ],
)
def test_bad_box_row_names_file_and_line_or_is_skipped(tmp_path, row, problem):
    path = tmp_path / "boxes.csv"
    path.write_text(HEADER + "ok,xclick,/m/a,1,0.1,0.3,0.2,0.4,0,0,0,0,0\n" + row + "\n")
    with pytest.raises(DataFormatError, match=rf"boxes\.csv:3: {problem}"):
        read_boxes(path)
    images, skipped = read_boxes(path, skip_corrupt=True)
    assert skipped == 1 and list(images) == ["ok"]


def test_header_and_label_errors(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("ImageID,LabelName,XMin\n")
    with pytest.raises(DataFormatError, match=r"b\.csv:1: header .* lacks column\(s\) \['XMax'"):
        read_boxes(path)
    path.write_text(
        "ImageID,Source,LabelName,Confidence\nimg,verification,/m/a,1\nimg,verification,/m/b,0\nimg,v,/m/c,x\n"
    )
    with pytest.raises(DataFormatError, match=r"b\.csv:4: Confidence = 'x'"):
        read_image_labels(path)
    path.write_text("ImageID,Source,LabelName,Confidence\nimg,verification,/m/a,1\nimg,verification,/m/b,0\n")
    assert read_image_labels(path) == {"img": {"/m/a": 1, "/m/b": 0}}


def test_class_descriptions_with_and_without_header(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("/m/011k07,Tortoise\n/m/011q46kg,Container\n")
    assert read_class_descriptions(path) == {"/m/011k07": "Tortoise", "/m/011q46kg": "Container"}
    path.write_text("MID,DisplayName\n/m/011k07,Tortoise\n")
    assert read_class_descriptions(path) == {"/m/011k07": "Tortoise"}
    path.write_text("/m/011k07,Tortoise\n/m/011k07,Again\n")
    with pytest.raises(DataFormatError, match=r"c\.csv:2: class '/m/011k07' listed twice"):
        read_class_descriptions(path)


def test_datamodule_reads_generated_files(tmp_path):
    root = tmp_path / "oi"
    gen = functools.partial(generate_openimages, num_train=6, num_val=4, num_test=2)
    dm = OpenImagesDetectionDataModule(str(root), num_classes=9, batch_size=4, generator=gen)
    dm.prepare_data()
    dm.setup()
    assert dm.class_names[0] == "/m/0sy001" and dm.display_names[0] == "Car"
    ball = dm.class_names.index("/m/0sy005")
    assert sorted(dm.class_names[a] for a in dm.class_ancestors[ball]) == ["/m/0sy103", "/m/0sy104"]  # two parents
    batch = next(iter(dm.val_dataloader()))
    item = batch[0]
    assert item["image"].shape == (3, 120, 160)
    assert len(item["eval_labels"]) > len(item["labels"])  # every box also counts for its parents
    assert set(item["labels"].tolist()) <= set(item["verified"].tolist())
    assert (item["boxes"][:, 2] <= 160).all() and (item["boxes"][:, 3] <= 120).all()
    # a corrupt box row: an error naming the line, or skipped and counted
    path = root / "train-annotations-bbox.csv"
    path.write_text(path.read_text() + "x,xclick,/m/0sy001,1,0.1,0.3,0.2,1.5,0,0,0,0,0\n")
    lines = len(path.read_text().splitlines())
    with pytest.raises(DataFormatError, match=rf"train-annotations-bbox\.csv:{lines}: box"):
        OpenImagesDetectionDataModule(str(root), num_classes=9).setup()
    lenient = OpenImagesDetectionDataModule(str(root), num_classes=9, skip_corrupt=True)
    lenient.setup()
    assert lenient.skipped_samples == 1
    with pytest.raises(DataFormatError, match="9 classes, but data.num_classes=5"):
        OpenImagesDetectionDataModule(str(root), num_classes=5).setup()


@pytest.mark.parametrize("header", ["", "MID,DisplayName\n", "LabelName,DisplayName\n", "label,class\n", "id,name\n"])
def test_class_descriptions_header_forms(tmp_path, header):
    # the first rows of class-descriptions-boxable.csv (official: no header); circulating copies add one
    path = tmp_path / "c.csv"
    path.write_text(header + "/m/011k07,Tortoise\n/m/011q46kg,Container\n")
    assert read_class_descriptions(path) == {"/m/011k07": "Tortoise", "/m/011q46kg": "Container"}


def test_datamodule_reads_the_challenge_2019_file_names(tmp_path):
    """The same annotations under the Challenge 2019 names (storage.googleapis.com/openimages/challenge_2019/)
    read as the V5 names do; the validation box file in the challenge's reduced column set."""
    v5 = tmp_path / "v5"
    generate_openimages(v5, num_train=6, num_val=4, num_test=2)
    reference = OpenImagesDetectionDataModule(str(v5), num_classes=9, batch_size=4)
    reference.setup()
    root = tmp_path / "challenge"
    root.mkdir()
    (root / "challenge-2019-classes-description-500.csv").write_text(
        "LabelName,DisplayName\n" + (v5 / "class-descriptions-boxable.csv").read_text()
    )
    (root / "challenge-2019-label500-hierarchy.json").write_text((v5 / "bbox_labels_600_hierarchy.json").read_text())
    for split in ("train", "validation"):
        (root / split).symlink_to(v5 / split)
        boxes = (v5 / f"{split}-annotations-bbox.csv").read_text().splitlines()
        if split == "validation":  # ImageID,LabelName,XMin,XMax,YMin,YMax,IsGroupOf
            boxes = [",".join(r.split(",")[i] for i in (0, 2, 4, 5, 6, 7, 10)) for r in boxes]
        (root / f"challenge-2019-{split}-detection-bbox.csv").write_text("\n".join(boxes) + "\n")
        labels = (v5 / f"{split}-annotations-human-imagelabels-boxable.csv").read_text()
        (root / f"challenge-2019-{split}-detection-human-imagelabels.csv").write_text(labels)
    dm = OpenImagesDetectionDataModule(str(root), num_classes=9, batch_size=4)
    dm.setup()
    assert dm.class_names == reference.class_names and dm.class_ancestors == reference.class_ancestors
    assert set(dm._datasets) == {"train", "val"}  # the challenge publishes no test annotations
    for key in ("train", "val"):
        ours, theirs = dm._datasets[key].records, reference._datasets[key].records
        assert [r["image_id"] for r in ours] == [r["image_id"] for r in theirs]
        assert [(r["labels"], r["eval_labels"], r["verified"]) for r in ours] == [
            (r["labels"], r["eval_labels"], r["verified"]) for r in theirs
        ]
    with pytest.raises(FileNotFoundError, match="no challenge-2019-test-detection-bbox.csv for the test split"):
        dm.test_dataloader()


def test_segmentation_datamodule_reads_the_challenge_2019_segmentation_names(tmp_path):
    """The segmentation track's files under their own names: the generator's validation files as the
    challenge writes them (challenge-2019-validation-segmentation-{bbox,labels,masks}.csv, masks in
    challenge-2019-validation-masks/) and the training files renamed to the challenge's train names."""
    from datamodules.openimages import OpenImagesSegmentationDataModule

    v5 = tmp_path / "v5"
    generate_openimages(v5, num_train=4, num_val=4, num_test=2)
    root = tmp_path / "challenge"
    root.mkdir()
    links = {
        "challenge-2019-classes-description-segmentable.csv": "challenge-2019-classes-description-segmentable.csv",
        "challenge-2019-label300-segmentable-hierarchy.json": "challenge-2019-label300-segmentable-hierarchy.json",
        "train": "train",
        "validation": "validation",
        "challenge-2019-train-segmentation-bbox.csv": "train-annotations-bbox.csv",
        "challenge-2019-train-segmentation-labels.csv": "train-annotations-human-imagelabels-boxable.csv",
        "challenge-2019-train-segmentation-masks.csv": "train-annotations-object-segmentation.csv",
        "challenge-2019-train-masks": "train-masks",
        **{
            f"challenge-2019-validation-{name}": f"challenge-2019-validation-{name}"
            for name in ("segmentation-bbox.csv", "segmentation-labels.csv", "segmentation-masks.csv", "masks")
        },
    }
    for name, source in links.items():
        (root / name).symlink_to(v5 / source)
    dm = OpenImagesSegmentationDataModule(str(root), num_classes=9, batch_size=2)
    dm.setup()
    assert set(dm._datasets) == {"train", "val"}
    item = next(iter(dm.val_dataloader()))[0]
    assert item["has_mask"].any() and item["masks"][item["has_mask"]].flatten(1).any(1).all()
