"""The Open Images V5 segmentation files: the reader on the published header, bad rows, mask paths that
would leave the masks folder, mask PNGs at another resolution, and the generator's segmentation files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data import DataFormatError
from datamodules.openimages_masks import (
    CHALLENGE_SEGMENTATION_FILES,
    InstanceMask,
    load_mask,
    mask_file_name,
    read_segmentations,
)

HEADER = "MaskPath,ImageID,LabelName,BoxID,BoxXMin,BoxXMax,BoxYMin,BoxYMax,PredictedIoU,Clicks\n"
# a row in the released layout (train-annotations-object-segmentation.csv, V5)
ROW = (
    "25e2ac5e5e3ee2ab_m01g317_c38b3a3a.png,25e2ac5e5e3ee2ab,/m/01g317,c38b3a3a,"
    "0.123,0.456,0.2,0.9,0.80078,0.2 0.3 1;0.4 0.5 0\n"
)


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "masks").mkdir(exist_ok=True)
    path = tmp_path / "seg.csv"
    path.write_text(text)
    return path


def test_reads_the_published_header(tmp_path):
    path = write(tmp_path, HEADER + ROW)
    images, skipped = read_segmentations(path, tmp_path / "masks")
    assert skipped == 0
    assert images == {
        "25e2ac5e5e3ee2ab": [
            InstanceMask(
                image_id="25e2ac5e5e3ee2ab",
                label="/m/01g317",
                box_id="c38b3a3a",
                box=(0.123, 0.2, 0.456, 0.9),  # x1, y1, x2, y2 from XMin, XMax, YMin, YMax order
                mask_path=tmp_path / "masks" / "25e2ac5e5e3ee2ab_m01g317_c38b3a3a.png",
                predicted_iou=0.80078,
                clicks="0.2 0.3 1;0.4 0.5 0",
            )
        ]
    }
    assert mask_file_name("25e2ac5e5e3ee2ab", "/m/01g317", "c38b3a3a") == "25e2ac5e5e3ee2ab_m01g317_c38b3a3a.png"


@pytest.mark.parametrize("mask_path", ["../secret.png", "/etc/passwd", "sub/../../x.png"])
def test_mask_path_leaving_the_folder_is_refused(tmp_path, mask_path):
    path = write(tmp_path, HEADER + ROW + ROW.replace("25e2ac5e5e3ee2ab_m01g317_c38b3a3a.png", mask_path, 1))
    for skip in (False, True):  # never skipped quietly: a file acting outside its folder is refused
        with pytest.raises(DataFormatError, match="refused") as err:
            read_segmentations(path, tmp_path / "masks", skip_corrupt=skip)
        assert err.value.line == 3 and err.value.path == path


@pytest.mark.parametrize(
    "bad, problem",
    [
        (ROW.replace("0.123,0.456", "0.5,0.456"), "min > max"),
        (ROW.replace("0.2,0.9", "0.2,1.3"), r"leaves \[0, 1\]"),
        (ROW.replace("0.123", "abc"), "is not a number"),
        (ROW.replace(",0.80078", ""), "9 fields"),
    ],
)
def test_malformed_row_names_file_and_line_or_is_skipped(tmp_path, bad, problem):
    path = write(tmp_path, HEADER + ROW + bad + ROW.replace("c38b3a3a", "00000001"))
    with pytest.raises(DataFormatError, match=problem) as err:
        read_segmentations(path, tmp_path / "masks")
    assert err.value.line == 3 and str(path) in str(err.value)
    images, skipped = read_segmentations(path, tmp_path / "masks", skip_corrupt=True)
    assert skipped == 1 and [m.box_id for m in images["25e2ac5e5e3ee2ab"]] == ["c38b3a3a", "00000001"]


def test_header_lacking_a_column_is_an_error(tmp_path):
    path = write(tmp_path, HEADER.replace("BoxID,", "") + ROW)
    with pytest.raises(DataFormatError, match="lacks column"):
        read_segmentations(path, tmp_path / "masks")


def test_load_mask_resizes_nearest_to_the_image_size(tmp_path):
    # a 8 x 2 (width x height) PNG with its left half set, loaded for a 4 x 6 image: nearest resize
    # keeps columns 0-1 set on every row
    png = np.zeros((2, 8), np.uint8)
    png[:, :4] = 255
    Image.fromarray(png).save(tmp_path / "m.png")
    mask = load_mask(tmp_path / "m.png", (4, 6))
    expected = np.zeros((6, 4), bool)
    expected[:, :2] = True
    assert mask.dtype == bool and np.array_equal(mask, expected)
    assert load_mask(tmp_path / "m.png").shape == (2, 8)  # no size: the PNG's own
    Image.fromarray(png > 0).save(tmp_path / "one_bit.png")  # mode "1" PNGs read the same
    assert np.array_equal(load_mask(tmp_path / "one_bit.png", (4, 6)), expected)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataFormatError, match="broken.png"):
        load_mask(tmp_path / "broken.png", (4, 6))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_mask(tmp_path / "missing.png", (4, 6))


def test_generator_writes_masks_of_the_annotated_instances(tmp_path):
    """Each non-group-of box has a mask PNG named as released, at a resolution unlike the image's, whose
    shape sits in its box once resized; group-of boxes have none; the challenge files carry the
    validation split under their official names."""
    from datamodules.openimages_files import read_boxes
    from datamodules.synthetic.openimages import generate_openimages

    root = generate_openimages(tmp_path / "oi", num_train=6, num_val=6, num_test=2)
    group_boxes = 0
    for split in ("train", "validation", "test"):
        boxes, _ = read_boxes(root / f"{split}-annotations-bbox.csv")
        masks, _ = read_segmentations(root / f"{split}-annotations-object-segmentation.csv", root / f"{split}-masks")
        singles, groups = set(), 0
        for image_id, item in boxes.items():
            for label, box, group in zip(item.labels, item.boxes, item.group_of):
                groups += group
                if not group:
                    singles.add((image_id, label, tuple(round(v, 6) for v in box)))
        got = {(m.image_id, m.label, tuple(round(v, 6) for v in m.box)) for items in masks.values() for m in items}
        assert got == singles  # every single instance has a mask, no group-of box has one
        group_boxes += groups
        for items in masks.values():
            for m in items:
                assert m.mask_path.name == mask_file_name(m.image_id, m.label, m.box_id)
                image_size = Image.open(root / split / f"{m.image_id}.jpg").size
                with Image.open(m.mask_path) as png:
                    assert png.size[0] / image_size[0] != png.size[1] / image_size[1]  # not proportional
                mask = load_mask(m.mask_path, image_size)
                ys, xs = np.nonzero(mask)
                w, h = image_size
                x1, y1, x2, y2 = m.box
                assert len(xs) > 0
                assert xs.min() >= x1 * w - 1 and xs.max() <= x2 * w + 1
                assert ys.min() >= y1 * h - 1 and ys.max() <= y2 * h + 1
    assert group_boxes > 0  # the set has group-of boxes, so "none has a mask" was tested
    for name in CHALLENGE_SEGMENTATION_FILES.values():
        assert (root / name).exists(), name
    header = next(csv.reader(open(root / CHALLENGE_SEGMENTATION_FILES["boxes"])))
    assert header == ["ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax", "IsGroupOf"]
    challenge, _ = read_segmentations(
        root / CHALLENGE_SEGMENTATION_FILES["masks"], root / CHALLENGE_SEGMENTATION_FILES["masks_dir"]
    )
    validation, _ = read_segmentations(
        root / "validation-annotations-object-segmentation.csv", root / "validation-masks"
    )
    assert [m.mask_path.read_bytes() for v in challenge.values() for m in v] == [
        m.mask_path.read_bytes() for v in validation.values() for m in v
    ]
