"""The Open Images Challenge 2019 instance-segmentation metric, its submission encoding and scoring CLI.

Every expected number is worked by hand from the official protocol (tensorflow/models
object_detection: ``PerImageEvaluation`` in mask mode, ``OpenImagesChallengeEvaluator(evaluate_masks=
True)``, ``compute_average_precision``), written out in the comments; none is read from our code."""

from __future__ import annotations

import base64
import csv
import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.data import DataFormatError
from tasks.openimages.metrics import OpenImagesChallengeMaskMAP
from tasks.openimages.protocol import (
    ImageMaskDetections,
    ImageMaskGroundTruth,
    SegmentationAccumulator,
    mask_box,
    match_masks_class_in_image,
)
from tasks.openimages.submission import (
    decode_mask,
    encode_mask,
    read_segmentation_submission,
    write_segmentation_submission,
)
from tests.ddp import DDPCase

H, W = 10, 10


def rect(y1: int, y2: int, x1: int, x2: int, h: int = H, w: int = W) -> np.ndarray:
    """A bool mask with rows y1..y2-1 and columns x1..x2-1 set."""
    m = np.zeros((h, w), dtype=bool)
    m[y1:y2, x1:x2] = True
    return m


def nbox(y1: int, y2: int, x1: int, x2: int) -> list[float]:
    """The normalized x1 y1 x2 y2 box of the same rectangle on the 10 x 10 grid."""
    return [x1 / W, y1 / H, x2 / W, y2 / H]


def score(gt: ImageMaskGroundTruth, det: ImageMaskDetections, num_classes: int = 1, weight: float = 1.0):
    acc = SegmentationAccumulator(num_classes, group_of_weight=weight)
    acc.add_image(gt, det)
    return acc.compute()


def gt_of(masks, boxes, group_of=None, labels=None, verified=()):
    n = len(boxes)
    return ImageMaskGroundTruth(
        labels=np.zeros(n, dtype=np.int64) if labels is None else np.asarray(labels),
        boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        group_of=np.zeros(n, dtype=bool) if group_of is None else np.asarray(group_of),
        masks=np.asarray(masks, dtype=bool).reshape(-1, H, W),
        verified=np.asarray(verified, dtype=np.int64),
    )


def det_of(masks, scores, labels=None):
    n = len(scores)
    return ImageMaskDetections(
        labels=np.zeros(n, dtype=np.int64) if labels is None else np.asarray(labels),
        scores=np.asarray(scores, dtype=np.float64),
        masks=np.asarray(masks, dtype=bool).reshape(-1, H, W),
    )


# --- mask IoU matching ---------------------------------------------------------------------------


def test_mask_iou_matching_with_a_duplicate():
    # GT: rows 0-3 x cols 0-3 (16 px).
    # d1 score .95: rows 0-3 x cols 2-7 (24 px), intersection 8, union 32, IoU .25 -> FP
    # d2 score .90: the GT mask, IoU 1 -> TP
    # d3 score .80: the GT mask again, its best GT already taken -> FP (duplicate)
    # ranked: FP, TP, FP; num_gt 1: precision at the TP = 1/2, recall 1 -> AP = 0.5
    gt = gt_of([rect(0, 4, 0, 4)], [nbox(0, 4, 0, 4)])
    det = det_of([rect(0, 4, 2, 8), rect(0, 4, 0, 4), rect(0, 4, 0, 4)], [0.95, 0.9, 0.8])
    mean_ap, ap = score(gt, det)
    assert mean_ap == pytest.approx(0.5)
    assert ap[0] == pytest.approx(0.5)


def test_masks_not_boxes_decide_a_match():
    # GT: an L shape inside rows 0-7 x cols 0-7: column 0 (8 px) plus row 7 (7 more) = 15 px.
    # Detection: the full 8 x 8 square, the same enclosing box (box IoU 1) but mask IoU 15/64 < .5: FP.
    L = np.zeros((H, W), dtype=bool)
    L[0:8, 0] = True
    L[7, 0:8] = True
    gt = gt_of([L], [nbox(0, 8, 0, 8)])
    mean_ap, _ = score(gt, det_of([rect(0, 8, 0, 8)], [0.9]))
    assert mean_ap == 0.0
    # and IoU exactly 0.5 matches (>=): GT 4 x 4 (16 px), detection rows 0-3 x cols 0-1 (8 px inside): 8/16
    mean_ap, _ = score(gt_of([rect(0, 4, 0, 4)], [nbox(0, 4, 0, 4)]), det_of([rect(0, 4, 0, 2)], [0.9]))
    assert mean_ap == 1.0


def test_rank_order_takes_the_highest_score_first():
    # Two GTs A (rows 0-3, cols 0-3) and B (rows 5-8, cols 5-8); detections (score, mask):
    # .3 A (TP), .9 B (TP), .6 outside both (FP). Ranked .9 TP, .6 FP, .3 TP; num_gt 2:
    # precisions 1, 1/2, 2/3 at recalls 1/2, 1/2, 1 -> envelope 1 then 2/3 -> AP = .5 * 1 + .5 * 2/3
    gt = gt_of([rect(0, 4, 0, 4), rect(5, 9, 5, 9)], [nbox(0, 4, 0, 4), nbox(5, 9, 5, 9)])
    det = det_of([rect(0, 4, 0, 4), rect(5, 9, 5, 9), rect(0, 2, 7, 10)], [0.3, 0.9, 0.6])
    assert score(gt, det)[0] == pytest.approx(0.5 + 0.5 * 2 / 3)


# --- boxes without a mask, group-of ----------------------------------------------------------------


def test_box_without_mask_is_ignored_once_then_false_positive():
    # GT 1: masked, rows 0-3 x cols 0-3. GT 2: a box rows 5-9 x cols 5-9 with *no* mask (empty):
    # not counted (num_gt 1). d1 .9 fills GT 2's box: box IoU 1 -> ignored (neither TP nor FP);
    # d2 .8, the same: GT 2 already taken -> FP; d3 .7 the masked GT -> TP.
    # Ranked: .8 FP, .7 TP -> precision 1/2 at recall 1 -> AP .5 (with d1 counted as FP it would be 1/3)
    gt = gt_of([rect(0, 4, 0, 4), np.zeros((H, W))], [nbox(0, 4, 0, 4), nbox(5, 10, 5, 10)])
    det = det_of([rect(5, 10, 5, 10), rect(5, 10, 5, 10), rect(0, 4, 0, 4)], [0.9, 0.8, 0.7])
    assert score(gt, det)[0] == pytest.approx(0.5)
    scores, tp = match_masks_class_in_image(det.masks, det.scores, gt.boxes, gt.masks, gt.group_of)
    assert sorted(zip(scores.tolist(), tp.tolist())) == [(0.7, 1.0), (0.8, 0.0)]


def test_true_positive_is_not_taken_again_by_a_box_without_mask():
    # A masked GT and a maskless box at the same place (rows 0-3 x cols 0-3). The detection equal to
    # the mask is a TP at the mask stage; the box stage looks only at detections still unmatched, so
    # it stays a TP: num_gt 1 -> AP 1 (ignoring it instead would leave AP 0).
    gt = gt_of([rect(0, 4, 0, 4), np.zeros((H, W))], [nbox(0, 4, 0, 4), nbox(0, 4, 0, 4)])
    assert score(gt, det_of([rect(0, 4, 0, 4)], [0.8]))[0] == 1.0


def test_group_of_box_without_mask_is_an_ignore_region():
    # The challenge's group-of boxes have no mask: detections inside (box IoA >= .5) are dropped and
    # the box is no ground truth. GT: masked rows 0-3 x cols 0-3; group-of box rows 4-9 x cols 0-9.
    # d1 .9 and d2 .8 small squares inside the group-of box -> ignored; d3 .7 outside everything
    # (rows 0-1, cols 6-9: IoA with the group box 0) -> FP; d4 .6 the masked GT -> TP.
    # Ranked: .7 FP, .6 TP -> AP .5 for either group-of weight (the box has no mask).
    gt = gt_of([rect(0, 4, 0, 4), np.zeros((H, W))], [nbox(0, 4, 0, 4), nbox(4, 10, 0, 10)], group_of=[False, True])
    det = det_of([rect(5, 7, 1, 3), rect(7, 9, 5, 8), rect(0, 2, 6, 10), rect(0, 4, 0, 4)], [0.9, 0.8, 0.7, 0.6])
    for weight in (1.0, 0.0):
        assert score(gt, det, weight=weight)[0] == pytest.approx(0.5)
    # a class whose only ground truth is a maskless group-of box has no AP at all
    only_group = gt_of([np.zeros((H, W))], [nbox(4, 10, 0, 10)], group_of=[True])
    with pytest.raises(ValueError, match="no class has ground-truth"):
        score(only_group, det_of([rect(5, 7, 1, 3)], [0.9]))


def test_group_of_box_with_mask_counts_once_with_group_of_weight():
    # A group-of box *with* a mask (rows 4-9 x cols 0-9, 60 px) and a masked single (rows 0-3, cols 0-3).
    # d1 .9 and d2 .4 inside the group mask (mask IoA 1) -> removed; the group adds one entry at .9.
    # d3 .5 the single -> TP. weight 1 (metrics/oid_challenge_evaluation.py): num_gt 2, entries
    # (.9 TP-group, .5 TP) -> AP 1. weight 0 (OpenImagesInstanceSegmentationChallengeEvaluator):
    # num_gt 1, entries (.5 TP) -> AP 1 too; add an FP at .7 to tell them apart:
    # weight 1: .9 TP, .7 FP, .5 TP -> precisions 1, 1/2, 2/3 at recalls 1/2, 1/2, 1 -> .5 + .5 * 2/3
    # weight 0: .7 FP, .5 TP -> 1/2
    gt = gt_of([rect(4, 10, 0, 10), rect(0, 4, 0, 4)], [nbox(4, 10, 0, 10), nbox(0, 4, 0, 4)], group_of=[True, False])
    det = det_of([rect(5, 7, 1, 3), rect(7, 9, 5, 8), rect(0, 4, 0, 4), rect(0, 2, 6, 10)], [0.9, 0.4, 0.5, 0.7])
    assert score(gt, det, weight=1.0)[0] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert score(gt, det, weight=0.0)[0] == pytest.approx(0.5)


def test_true_positive_inside_a_group_of_region_stays_a_true_positive():
    # A masked single (rows 5-7 x cols 1-3) lying inside a masked group-of region (rows 4-9, all cols).
    # The detection equal to the single is a TP at the mask-IoU stage, so the group-of stage (which
    # only looks at detections not yet matched) leaves it. Weight 0: num_gt 1, one TP -> AP 1 (were
    # it moved to the group region it would vanish: AP 0).
    gt = gt_of([rect(4, 10, 0, 10), rect(5, 8, 1, 4)], [nbox(4, 10, 0, 10), nbox(5, 8, 1, 4)], group_of=[True, False])
    assert score(gt, det_of([rect(5, 8, 1, 4)], [0.8]), weight=0.0)[0] == 1.0


# --- image-level labels ------------------------------------------------------------------------------


def test_verified_negative_is_false_positive_and_unannotated_class_is_ignored():
    # Classes 0 (masked GT), 1 (verified absent), 2 (neither boxed nor verified).
    # Detections: class 0 .5 on its GT (TP); class 1 .9 anywhere (FP of class 1, which has no GT,
    # so no AP); class 2 .9 (dropped); class 0 .8 outside (FP). Class 0: .8 FP, .5 TP -> AP .5;
    # mAP over classes with ground truth = .5
    gt = gt_of([rect(0, 4, 0, 4)], [nbox(0, 4, 0, 4)], verified=[1])
    det = det_of(
        [rect(0, 4, 0, 4), rect(5, 9, 5, 9), rect(0, 4, 0, 4), rect(6, 9, 0, 3)], [0.5, 0.9, 0.9, 0.8], [0, 1, 2, 0]
    )
    acc = SegmentationAccumulator(3)
    acc.add_image(gt, det)
    rows = {c: (s.tolist(), t.tolist()) for c, s, t in acc.match_image(gt, det)}
    assert rows == {0: ([0.8, 0.5], [0.0, 1.0]), 1: ([0.9], [0.0])}  # class 2 dropped
    mean_ap, ap = acc.compute()
    assert mean_ap == pytest.approx(0.5) and np.isnan(ap[1]) and np.isnan(ap[2])


def test_empty_detection_mask_is_dropped_and_mask_box_is_official():
    # _to_normalized_box: xmin = min(col) / W, xmax = (max(col) + 1) / W; an empty mask -> zeros
    assert mask_box(np.stack([rect(2, 5, 3, 4), np.zeros((H, W), bool)])).tolist() == [
        [0.3, 0.2, 0.4, 0.5],
        [0.0, 0.0, 0.0, 0.0],
    ]
    gt = gt_of([rect(0, 4, 0, 4)], [nbox(0, 4, 0, 4)])
    det = det_of([np.zeros((H, W)), rect(0, 4, 0, 4)], [0.9, 0.5])  # the empty one would be an FP
    assert score(gt, det)[0] == 1.0


# --- the torchmetrics form -------------------------------------------------------------------------


def test_torchmetric_equals_hand_worked_value():
    # Image 7: the duplicate case above (AP contribution: FP .95, TP .9, FP .8).
    # Image 8: one masked GT matched at .85, and a maskless box (pixels) taken by a .99 detection (ignored).
    # Class 0 over both: ranked .95 FP, .9 TP, .85 TP, .8 FP; num_gt 2 -> precisions 0, 1/2, 2/3 at
    # recalls 0, 1/2, 1 -> envelope 2/3 at both steps -> AP = 2/3
    metric = OpenImagesChallengeMaskMAP(num_classes=2)
    t = torch.as_tensor
    preds = [
        {"labels": t([0, 0, 0]), "scores": t([0.95, 0.9, 0.8]),
         "masks": t(np.stack([rect(0, 4, 2, 8), rect(0, 4, 0, 4), rect(0, 4, 0, 4)]))},
        {"labels": t([0, 0]), "scores": t([0.99, 0.85]), "masks": t(np.stack([rect(5, 10, 5, 10), rect(0, 4, 0, 4)]))},
    ]  # fmt: skip
    targets = [
        {"labels": t([0]), "boxes": t([[0.0, 0.0, 4.0, 4.0]]), "masks": t(rect(0, 4, 0, 4)[None]),
         "group_of": t([False]), "verified": t([], dtype=torch.int64)},
        {"labels": t([0, 0]), "boxes": t([[0.0, 0.0, 4.0, 4.0], [5.0, 5.0, 10.0, 10.0]]),
         "masks": t(np.stack([rect(0, 4, 0, 4), np.zeros((H, W), bool)])), "group_of": t([False, False]),
         "verified": t([0])},
    ]  # fmt: skip
    metric.update([7, 8], preds, targets)
    out = metric.compute()
    assert float(out["map"]) == pytest.approx(2 / 3)
    assert set(out) == {"map", "ap/0"}


def test_torchmetric_mask_sizes():
    # an empty prediction stack may carry any size (the GT's grid scales the boxes); masks of two
    # sizes on one image are an error. One GT, no detection: AP 0.
    t = torch.as_tensor
    target = {"labels": t([0]), "boxes": t([[0.0, 0.0, 4.0, 4.0]]), "masks": t(rect(0, 4, 0, 4)[None]),
              "group_of": t([False]), "verified": t([0])}  # fmt: skip
    metric = OpenImagesChallengeMaskMAP(num_classes=1)
    empty = {"labels": t([], dtype=torch.int64), "scores": t([]), "masks": torch.zeros(0, 3, 5, dtype=torch.bool)}
    metric.update([0], [empty], [target])
    assert float(metric.compute()["map"]) == 0.0
    wrong = {"labels": t([0]), "scores": t([0.5]), "masks": torch.ones(1, 3, 5, dtype=torch.bool)}
    with pytest.raises(ValueError, match="differ in size"):
        metric.update([1], [wrong], [target])


# --- submission encoding ---------------------------------------------------------------------------


def test_encode_decode_round_trip():
    rng = np.random.default_rng(0)
    for h, w in ((1, 1), (7, 5), (64, 33)):
        for mask in (np.zeros((h, w), bool), np.ones((h, w), bool), rng.random((h, w)) < 0.3):
            text = encode_mask(mask)
            assert text.isascii() and " " not in text
            assert np.array_equal(decode_mask(text, h, w), mask)


def test_decode_of_a_hand_built_rle():
    # COCO RLE runs a column-major (Fortran) scan, starting with zeros. On a 5 x 7 mask with rows 1-2
    # of columns 2-5 set and pixel (4, 0) set: col 0 = 0000 1, col 1 = 00000, cols 2-5 = 0 11 00,
    # col 6 = 00000 -> runs 4, 1, 6, 2, 3, 2, 3, 2, 3, 2, 7 (sum 35).
    from pycocotools import mask as coco_mask

    expected = np.zeros((5, 7), bool)
    expected[1:3, 2:6] = True
    expected[4, 0] = True
    rle = coco_mask.frPyObjects({"size": [5, 7], "counts": [4, 1, 6, 2, 3, 2, 3, 2, 3, 2, 7]}, 5, 7)
    text = base64.b64encode(zlib.compress(rle["counts"])).decode()
    assert np.array_equal(decode_mask(text, 5, 7), expected)
    # our encoding of the same mask carries the same compressed counts
    assert zlib.decompress(base64.b64decode(encode_mask(expected))) == rle["counts"]


def test_segmentation_submission_write_read(tmp_path):
    masks = np.stack([rect(0, 4, 0, 4), rect(5, 9, 2, 3)])
    path = write_segmentation_submission(
        tmp_path / "sub.csv", {"img1": (W, H, ["/m/a", "/m/b"], [0.5, 0.25], masks), "img2": (W, H, [], [], [])}
    )
    rows = list(csv.reader(open(path)))
    assert rows[0] == ["ImageID", "ImageWidth", "ImageHeight", "PredictionString"]
    assert rows[2] == ["img2", "10", "10", ""]
    sub = read_segmentation_submission(path, {"/m/a": 0, "/m/b": 1})
    assert sub["img1"].labels.tolist() == [0, 1] and sub["img1"].scores.tolist() == [0.5, 0.25]
    assert np.array_equal(sub["img1"].decode(), masks)
    assert len(sub["img2"].labels) == 0


@pytest.mark.parametrize(
    "row, problem",
    [
        ("img1,10,10,/m/a 0.5", "groups of 3"),
        ("img1,10,10,/m/z 0.5 eJw=", "unknown class"),
        ("img1,ten,10,", "not integers"),
        ("img1,10,10,/m/a high eJw=", "not a number"),
    ],
)
def test_segmentation_submission_errors_name_the_line(tmp_path, row, problem):
    path = tmp_path / "sub.csv"
    path.write_text("ImageID,ImageWidth,ImageHeight,PredictionString\nimg0,10,10,\n" + row + "\n")
    with pytest.raises(DataFormatError, match=problem) as err:
        read_segmentation_submission(path, {"/m/a": 0})
    assert err.value.line == 3


# --- the scoring CLI --------------------------------------------------------------------------------

HIERARCHY = {
    "LabelName": "/m/0bl9f",
    "Subcategory": [{"LabelName": "/m/animal", "Subcategory": [{"LabelName": "/m/dog"}, {"LabelName": "/m/cat"}]}],
}


def write_challenge_folder(root: Path) -> None:
    """Two 10 x 10 images, one dog (mask PNG at 20 x 5, a different resolution), a cat group-of box
    without a mask, image labels with a verified-absent cat on image b."""
    masks = root / "challenge-2019-validation-masks"
    masks.mkdir(parents=True)
    png = np.zeros((5, 20), np.uint8)  # mask of rows 0-3 x cols 0-3 at half height, double width
    png[0:2, 0:8] = 255
    Image.fromarray(png).save(masks / "a_mdog_b1.png")
    (root / "challenge-2019-label300-segmentable-hierarchy.json").write_text(json.dumps(HIERARCHY))
    (root / "challenge-2019-classes-description-segmentable.csv").write_text(
        "/m/dog,Dog\n/m/cat,Cat\n/m/animal,Animal\n"
    )
    (root / "challenge-2019-validation-segmentation-bbox.csv").write_text(
        "ImageID,LabelName,XMin,XMax,YMin,YMax,IsGroupOf\na,/m/dog,0.0,0.4,0.0,0.4,0\na,/m/cat,0.5,1.0,0.5,1.0,1\n"
    )
    (root / "challenge-2019-validation-segmentation-labels.csv").write_text(
        "ImageID,LabelName,Confidence\na,/m/dog,1\na,/m/cat,1\nb,/m/cat,0\n"
    )
    (root / "challenge-2019-validation-segmentation-masks.csv").write_text(
        "MaskPath,ImageID,LabelName,BoxID,BoxXMin,BoxXMax,BoxYMin,BoxYMax,PredictedIoU,Clicks\n"
        "a_mdog_b1.png,a,/m/dog,b1,0.0,0.4,0.0,0.4,0.9,0.1 0.1 1\n"
    )


def test_cli_expands_ground_truth_over_the_hierarchy(tmp_path):
    # Ground truth after expansion: the dog mask of image a is also an Animal mask; the cat group-of
    # box (no mask) is also an Animal group-of box; image b has Cat verified absent (no children).
    # Image a: Animal .9 = the dog mask -> TP for Animal (the evaluator expands the ground truth only);
    # Animal .8 inside the cat group-of box -> ignored; Dog .7 = the dog mask -> TP; Animal .6 = the dog
    # mask again -> duplicate FP. Image b: Cat .95 -> FP, but Cat has no ground truth (its only box
    # has no mask) -> no AP; Dog .99: Dog neither boxed nor verified on b -> dropped.
    # Dog: .7 TP -> AP 1. Animal: .9 TP, .6 FP -> AP 1.
    from tasks.openimages.evaluate import main

    root = tmp_path / "ann"
    write_challenge_folder(root)
    dog = rect(0, 4, 0, 4)  # the 20 x 5 PNG resized (nearest) to the 10 x 10 image
    sub = tmp_path / "sub.csv"
    write_segmentation_submission(
        sub,
        {
            "a": (W, H, ["/m/animal", "/m/animal", "/m/dog", "/m/animal"], [0.9, 0.8, 0.7, 0.6],
                  np.stack([dog, rect(6, 9, 6, 9), dog, dog])),
            "b": (W, H, ["/m/cat", "/m/dog"], [0.95, 0.99], np.stack([rect(0, 3, 0, 3), rect(0, 3, 0, 3)])),
        },
    )  # fmt: skip
    args = [str(sub), "--annotations", str(root), "--track", "segmentation", "--out", str(tmp_path / "m.json")]
    assert main(args) == 0
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["per_class_AP"] == {"/m/dog": 1.0, "/m/animal": 1.0}
    assert result["mAP"] == 1.0 and result["num_images"] == 2 and result["masks_without_box"] == 0
    # Animal only, duplicate first by position but lower in score: .9 TP, .5 FP -> AP 1; Dog: no
    # detection -> AP 0 (a leaf is not credited with its parent's detections); mAP .5.
    write_segmentation_submission(sub, {"a": (W, H, ["/m/animal", "/m/animal"], [0.5, 0.9], np.stack([dog, dog]))})
    main(args)
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["per_class_AP"] == {"/m/dog": 0.0, "/m/animal": 1.0} and result["mAP"] == 0.5


def test_cli_joins_boxes_and_masks_on_identical_coordinates(tmp_path):
    # merge_boxes_and_masks is an outer join on class and exact coordinates: a mask row whose XMax
    # reads 0.41 instead of the box's 0.4 is an instance of its own and the box becomes maskless (an
    # ignore region). Dog: the mask instance is the only ground truth; the detection on it is a TP,
    # a second one on the same place is ignored by the maskless box (box IoU of rows/cols 0-3 with
    # 0-.4 is 1): AP 1, not .5. Two masks (Dog and its Animal copy) found no box.
    from tasks.openimages.evaluate import score_segmentation

    root = tmp_path / "ann"
    write_challenge_folder(root)
    path = root / "challenge-2019-validation-segmentation-masks.csv"
    path.write_text(path.read_text().replace(",0.0,0.4,0.0,0.4,", ",0.0,0.41,0.0,0.4,"))
    sub = tmp_path / "sub.csv"
    write_segmentation_submission(
        sub, {"a": (W, H, ["/m/dog", "/m/dog"], [0.9, 0.8], np.stack([rect(0, 4, 0, 4)] * 2))}
    )
    result = score_segmentation(sub, root)
    assert result["per_class_AP"] == {"/m/dog": 1.0, "/m/animal": 0.0}
    assert result["masks_without_box"] == 2


def _perfect_submission(root: Path, drop: str | None = None) -> tuple[dict, set]:
    """Every ground-truth mask of the generated validation split under its class and each ancestor
    (score .9), except class ``drop``; and the classes that have a mask."""
    from datamodules.openimages_files import Hierarchy
    from datamodules.openimages_masks import CHALLENGE_SEGMENTATION_FILES as F
    from datamodules.openimages_masks import load_mask, read_segmentations

    hierarchy = Hierarchy.read(root / F["hierarchy"])
    instances, _ = read_segmentations(root / F["masks"], root / F["masks_dir"])
    preds, classes = {}, set()
    for image_id, items in instances.items():
        w, h = Image.open(root / "validation" / f"{image_id}.jpg").size
        labels, masks = [], []
        for m in items:
            mask = load_mask(m.mask_path, (w, h))
            classes.update(hierarchy.expand_labels(m.label))
            for name in hierarchy.expand_labels(m.label):
                if name != drop:
                    labels.append(name)
                    masks.append(mask)
        preds[image_id] = (w, h, labels, [0.9] * len(labels), np.array(masks, dtype=bool).reshape(-1, h, w))
    return preds, classes


def test_cli_end_to_end_on_generated_files_imports_no_torch(tmp_path):
    """Perfect predictions score AP 1 on every class with a mask (group-of boxes, maskless, are ignore
    regions); without one class's predictions that class gets AP 0. The CLI never imports torch."""
    from datamodules.synthetic.openimages import generate_openimages
    from tasks.openimages.evaluate import score_segmentation

    root = generate_openimages(tmp_path / "oi", num_train=2, num_val=12, num_test=2)
    preds, classes = _perfect_submission(root)
    sub, out = tmp_path / "sub.csv", tmp_path / "m.json"
    write_segmentation_submission(sub, preds)
    code = (
        "import sys; from tasks.openimages.evaluate import main; "
        f"main([{str(sub)!r}, '--annotations', {str(root)!r}, '--track', 'segmentation', '--out', {str(out)!r}]); "
        "sys.exit(3 if 'torch' in sys.modules else 0)"
    )
    repo = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr + run.stdout
    assert "mAP: 1.000000" in run.stdout
    result = json.loads(out.read_text())
    assert set(result["per_class_AP"]) == classes and len(classes) > 4
    assert result["mAP"] == pytest.approx(1.0)

    dropped = sorted(classes)[0]
    write_segmentation_submission(sub, _perfect_submission(root, drop=dropped)[0])
    result = score_segmentation(sub, root)
    assert result["per_class_AP"][dropped] == 0.0
    assert result["mAP"] == pytest.approx((len(classes) - 1) / len(classes))


# --- DDP cases (run on 2 gloo processes by tests/test_ddp_metrics.py) --------------------------------


def _ddp_mask_batches() -> list[tuple]:
    """5 batches of 12 x 16 images with masked, maskless and group-of boxes, verified labels,
    shifted / duplicated / random detection masks with tied scores."""
    g = torch.Generator().manual_seed(41)
    out, image, h, w = [], 0, 12, 16
    for size in (3, 2, 4, 1, 3):
        ids, preds, targets = [], [], []
        for _ in range(size):
            m, n = int(torch.randint(0, 4, (1,), generator=g)), int(torch.randint(0, 6, (1,), generator=g))
            y1, x1 = torch.randint(0, h - 4, (m,), generator=g), torch.randint(0, w - 4, (m,), generator=g)
            y2, x2 = y1 + torch.randint(2, 5, (m,), generator=g), x1 + torch.randint(2, 5, (m,), generator=g)
            masks = torch.zeros(m, h, w, dtype=torch.bool)
            for k in range(m):
                if torch.rand(1, generator=g) < 0.8:  # the rest: boxes without a mask
                    masks[k, y1[k] : y2[k], x1[k] : x2[k]] = True
            pick = torch.randint(0, max(m, 1), (n,), generator=g)
            det = torch.zeros(n, h, w, dtype=torch.bool)
            for k in range(n):
                if m and torch.rand(1, generator=g) < 0.7:  # on a ground truth, shifted by a pixel half the time
                    shift = torch.randint(-1, 2, (2,), generator=g) * (torch.rand(1, generator=g) < 0.5)
                    dy, dx = (int(v) for v in shift)
                    p = int(pick[k])
                    det[k, max(y1[p] + dy, 0) : y2[p] + dy, max(x1[p] + dx, 0) : x2[p] + dx] = True
                else:
                    y, x = (int(v) for v in torch.randint(0, h - 3, (2,), generator=g))
                    det[k, y : y + 3, x : x + 3] = True
            labels = torch.randint(0, 3, (m,), generator=g)
            other = torch.randint(0, 3, (n,), generator=g)
            det_labels = torch.where(torch.rand(n, generator=g) < 0.8, labels[pick] if m else 0, other)
            scores = torch.rand(n, generator=g).mul(10).round().div(10)
            verified = torch.randperm(3, generator=g)[: int(torch.randint(0, 3, (1,), generator=g))]
            ids.append(image)
            preds.append({"labels": det_labels, "scores": scores, "masks": det})
            targets.append({"labels": labels, "boxes": torch.stack([x1, y1, x2, y2], 1).double(), "masks": masks,
                            "group_of": torch.rand(m, generator=g) < 0.3, "verified": verified})  # fmt: skip
            image += 1
        out.append((ids, preds, targets))
    return out


DDP_CASES = {
    f"openimages/challenge_mask_map{'_padded' if padded else ''}": DDPCase(
        lambda: OpenImagesChallengeMaskMAP(num_classes=3),
        _ddp_mask_batches,
        padded=padded,
        covers=(OpenImagesChallengeMaskMAP,),
    )
    for padded in (False, True)
}
