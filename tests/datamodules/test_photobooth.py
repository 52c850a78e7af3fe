"""Photobooth data: both face-expression layouts and the clips JSON through the real readers, with
errors that name the file and line, and the per-frame inputs (crops, targets) by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.data import DataFormatError
from datamodules.photobooth import (
    EXPRESSIONS,
    PhotoboothClipsDataModule,
    PhotoboothFacesDataModule,
    crop_faces,
    expression_target,
    read_clips,
    read_expression_csv,
)
from datamodules.synthetic.photobooth import write_face_expressions, write_photobooth_clips


@pytest.fixture(scope="module")
def faces_csv(tmp_path_factory):
    return write_face_expressions(tmp_path_factory.mktemp("faces") / "csv", 3, 1, 1, image_size=32)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_photobooth_clips(tmp_path_factory.mktemp("clips") / "c", 2, 1, 1, frames_per_clip=20)


@pytest.mark.parametrize("layout", ["csv", "folders"])
def test_both_face_layouts_load(layout, faces_csv, tmp_path):
    root = faces_csv if layout == "csv" else write_face_expressions(tmp_path / "f", 3, 1, 1, 32, layout="folders")
    dm = PhotoboothFacesDataModule(str(root), image_size=24, batch_size=4)
    dm.setup()
    assert len(dm.datasets["train"]) == 3 * len(EXPRESSIONS)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 24, 24) and labels.shape == (4, 4)
    if layout == "folders":
        assert (labels[:, 1:] == -1).all()  # attributes are not labelled in class folders
    else:
        assert set(labels[:, 1:].flatten().tolist()) <= {0, 1}


def test_expression_csv_errors_name_file_and_line(faces_csv, tmp_path):
    text = (faces_csv / "train.csv").read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([text[0], text[1], text[2].replace(text[2].split(",")[1], "grin", 1)]) + "\n")
    with pytest.raises(DataFormatError, match=r"bad.csv:3: unknown expression 'grin'"):
        read_expression_csv(bad, faces_csv)
    bad.write_text(text[0] + "\n../outside.png,smile,0,0,1\n")
    with pytest.raises(DataFormatError, match=r"bad.csv:2: .*'\.\.'"):
        read_expression_csv(bad, faces_csv)
    bad.write_text(text[0] + "\nimages/x.png,smile,2,0,1\n")
    with pytest.raises(DataFormatError, match=r"bad.csv:2: column 'eyes_closed' must be 0, 1 or empty"):
        read_expression_csv(bad, faces_csv)
    bad.write_text("image,label\n")
    with pytest.raises(DataFormatError, match=r"bad.csv:1: header"):
        read_expression_csv(bad, faces_csv)


def test_clips_json_errors_name_file_and_line(clips, tmp_path):
    data = json.loads((clips / "train.json").read_text())
    data["clips"][1]["frames"][3]["faces"][0]["box"] = [10, 10, 5, 20]
    bad = tmp_path / "train.json"
    bad.write_text(json.dumps(data, indent=1))
    line = next(i for i, t in enumerate(bad.read_text().splitlines(), 1) if data["clips"][1]["video"] in t)
    with pytest.raises(DataFormatError, match=rf"train.json:{line}: clip 1 .* frame 3: empty box"):
        read_clips(bad, clips)
    bad.write_text('{"clips": [}')
    with pytest.raises(DataFormatError, match=r"train.json:1: not valid JSON"):
        read_clips(bad, clips)


def test_clip_batches(clips):
    dm = PhotoboothClipsDataModule(str(clips), crop_size=32, frame_size=(48, 80), max_faces=4, batch_size=5)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["crops"].shape == (5, 4, 3, 32, 32) and batch["frame"].shape == (5, 3, 48, 80)
    assert (batch["face_labels"][~batch["mask"]] == -1).all() and batch["mask"].any(-1).all()
    clip = next(iter(dm.val_dataloader()))
    assert clip["crops"].shape[:2] == (20, 4) and clip["moments"] == dm.clips["val"][0]["moments"]
    assert clip["moments"], "a generated clip has at least one labelled moment"


def test_crop_faces_and_expression_target_by_hand():
    frame = np.zeros((40, 60, 3), np.uint8)
    frame[10:20, 30:40] = (255, 0, 0)
    crop = crop_faces(frame, np.array([[30, 10, 40, 20]]), 8)[0]
    assert (crop[1:-1, 1:-1] == (255, 0, 0)).all()
    labels = np.array([[1, 0, 0, 1], [2, 0, 0, 0], [0, 0, 0, 1]])  # key+attending, key not attending, neutral
    # (intensity, importance): the attending face at intensity 0.5 with importance 16 of 24 in all
    quality = np.array([[0.5, 16.0], [1.0, 4.0], [0.0, 4.0]], np.float32)
    assert expression_target(labels, quality) == pytest.approx(0.5 * 16 / 24)
    assert expression_target(np.zeros((0, 4)), np.zeros((0, 2))) == 0.0
    assert torch.is_tensor(torch.as_tensor(expression_target(labels, quality)))
