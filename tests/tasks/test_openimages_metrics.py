"""The Open Images Challenge 2019 detection metric, every protocol rule on a hand-worked case, the
torchmetrics wrapper against the numpy core, and the scoring CLI on generated challenge files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.openimages_files import Hierarchy, expand_boxes, expand_image_labels, read_boxes
from datamodules.synthetic.openimages import generate_openimages
from tasks.openimages.metrics import OpenImagesChallengeMAP
from tasks.openimages.protocol import (
    ImageDetections,
    ImageGroundTruth,
    average_precision,
    evaluate_detections,
)
from tasks.openimages.submission import detection_csv_text, read_detection_submission
from tests.ddp import DDPCase

PROJECT_ROOT = Path(__file__).resolve().parents[2]
A, B = 0, 1  # two classes


def gt(labels=(), boxes=(), group_of=(), verified=()):
    return ImageGroundTruth(
        labels=np.array(labels, dtype=np.int64),
        boxes=np.array(boxes, dtype=np.float64).reshape(-1, 4),
        group_of=np.array(group_of, dtype=bool),
        verified=np.array(verified, dtype=np.int64),
    )


def det(labels=(), scores=(), boxes=()):
    return ImageDetections(
        labels=np.array(labels, dtype=np.int64),
        scores=np.array(scores, dtype=np.float64),
        boxes=np.array(boxes, dtype=np.float64).reshape(-1, 4),
    )


BOX1 = (0.1, 0.1, 0.4, 0.4)
BOX2 = (0.6, 0.6, 0.9, 0.9)


def test_all_point_ap_by_hand():
    # ranks: TP, FP, TP of 2 ground truths: P = 1, 1/2, 2/3 at R = 1/2, 1/2, 1 -> 1/2*1 + 1/2*2/3
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([1.0, 0.0, 1.0]), 2) == pytest.approx(5 / 6)
    assert average_precision(np.zeros(0), np.zeros(0), 3) == 0.0


def test_duplicate_detection_is_a_false_positive():
    images = [("i1", gt([A, A], [BOX1, BOX2], [0, 0]))]
    dets = {"i1": det([A, A, A], [0.9, 0.8, 0.7], [BOX1, BOX1, BOX2])}
    mean_ap, ap = evaluate_detections(2, images, dets)
    assert ap[A] == pytest.approx(5 / 6)  # T F T of 2, as in test_all_point_ap_by_hand
    assert np.isnan(ap[B]) and mean_ap == pytest.approx(5 / 6)  # B has no ground truth: not averaged


def test_verified_negative_counts_a_false_positive():
    # i2 verifies A absent: its A detection (0.95) is a false positive ranked first -> P = 0, 1/2; AP 1/2
    images = [("i1", gt([A], [BOX1], [0], [A])), ("i2", gt(verified=[A]))]
    dets = {"i1": det([A], [0.9], [BOX1]), "i2": det([A], [0.95], [BOX2])}
    assert evaluate_detections(2, images, dets)[1][A] == pytest.approx(0.5)


def test_unannotated_class_is_ignored():
    # i2 neither boxes nor verifies A: its A detection is dropped, AP stays 1
    images = [("i1", gt([A], [BOX1], [0], [A])), ("i2", gt([B], [BOX1], [0], [B]))]
    dets = {"i1": det([A], [0.9], [BOX1]), "i2": det([A, B], [0.95, 0.5], [BOX2, BOX1])}
    _, ap = evaluate_detections(2, images, dets)
    assert ap[A] == pytest.approx(1.0) and ap[B] == pytest.approx(1.0)


def test_group_of_box_counts_once_with_its_best_detection():
    group = (0.0, 0.0, 0.5, 0.5)
    inside = [(0.0, 0.0, 0.1, 0.1), (0.2, 0.2, 0.3, 0.3), (0.3, 0.3, 0.5, 0.5)]
    half_out = (0.4, 0.4, 0.6, 0.5)  # area 0.02, inside the group box 0.1 x 0.1 = 0.01: IoA 0.5 -> matched
    mostly_out = (0.45, 0.0, 0.65, 0.1)  # IoA 0.05 x 0.1 / 0.02 = 0.25 -> false positive
    images = [("i1", gt([A, A], [group, BOX2], [1, 0], [A]))]
    dets = {"i1": det([A] * 6, [0.3, 0.9, 0.8, 0.85, 0.95, 0.99], inside + [BOX2, half_out, mostly_out])}
    # entries: 0.99 FP, 0.85 TP (BOX2), group box TP at max(0.3, 0.9, 0.8, 0.95) = 0.95 -> F T T of 2
    # P = 0, 1/2, 2/3 at R = 0, 1/2, 1 -> AP = 1/2 * 2/3 + 1/2 * 2/3
    assert evaluate_detections(2, images, dets)[1][A] == pytest.approx(2 / 3)


def test_group_of_box_with_only_zero_scores_gives_nothing():
    # official "scores_group_of > 0": a group-of box whose best detection scores 0 is a miss, and that
    # detection is gone too
    images = [("i1", gt([A, A], [(0, 0, 0.5, 0.5), BOX2], [1, 0], [A]))]
    dets = {"i1": det([A, A], [0.0, 0.7], [(0.1, 0.1, 0.2, 0.2), BOX2])}
    assert evaluate_detections(2, images, dets)[1][A] == pytest.approx(0.5)


def test_true_positive_before_group_of_and_empty_boxes_dropped():
    # a detection matching a single box (IoU >= 0.5) is a TP even inside a group-of box; an empty box
    # (x2 <= x1) is removed before matching
    images = [("i1", gt([A, A], [(0, 0, 1, 1), BOX1], [1, 0], [A]))]
    dets = {"i1": det([A, A, A], [0.5, 0.9, 0.99], [BOX1, (0.5, 0.5, 0.6, 0.6), (0.3, 0.3, 0.3, 0.4)])}
    # entries: 0.5 TP (BOX1), group at 0.9 TP -> AP 1
    assert evaluate_detections(2, images, dets)[1][A] == pytest.approx(1.0)


def test_hierarchy_expansion_multi_parent(tmp_path):
    tree = {
        "LabelName": "/m/0bl9f",
        "Subcategory": [
            {
                "LabelName": "thing",
                "Subcategory": [  # ball has two parents, both under "thing": "thing" is reached twice
                    {"LabelName": "toy", "Subcategory": [{"LabelName": "ball"}]},
                    {"LabelName": "sport", "Subcategory": [{"LabelName": "ball"}, {"LabelName": "bike"}]},
                ],
            },
            {"LabelName": "bike"},
        ],
    }
    h = Hierarchy(tree)
    assert h.expand_labels("ball") == ["ball", "sport", "thing", "toy"]  # each ancestor once
    assert h.expand_negative("sport") == ["sport", "ball", "bike"]
    path = tmp_path / "b.csv"
    path.write_text(
        "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside\n"
        "img,xclick,ball,1,0.1,0.2,0.3,0.4,0,0,1,0,0\n"
    )
    boxes, skipped = read_boxes(path)
    expanded = expand_boxes(boxes, h)["img"]
    assert skipped == 0 and sorted(expanded.labels) == ["ball", "sport", "thing", "toy"]
    assert expanded.boxes == [(0.1, 0.3, 0.2, 0.4)] * 4 and expanded.group_of == [True] * 4
    verified = expand_image_labels({"img": {"ball": 1, "sport": 0}}, h)["img"]
    assert verified == {"ball", "toy", "sport", "thing", "bike"}


def test_torchmetrics_wrapper_equals_numpy_core():
    rng = np.random.default_rng(3)
    images, dets, ids, preds, targets = [], {}, [], [], []
    for i in range(12):
        m, n = int(rng.integers(0, 4)), int(rng.integers(0, 6))
        xy = rng.uniform(0, 0.6, (m, 2))
        g_boxes = np.concatenate([xy, xy + rng.uniform(0.1, 0.4, (m, 2))], 1)
        g = gt(
            rng.integers(0, 3, m), g_boxes, rng.random(m) < 0.3, rng.choice(3, int(rng.integers(0, 3)), replace=False)
        )
        jitter = g_boxes[rng.integers(0, m, n)] + rng.normal(0, 0.03, (n, 4)) if m else rng.uniform(0, 1, (n, 4))
        d = det(rng.integers(0, 3, n), np.round(rng.random(n), 1), np.sort(jitter.reshape(n, 2, 2), 1).reshape(n, 4))
        images.append((f"{i:03d}", g))
        dets[f"{i:03d}"] = d
        ids.append(i)
        preds.append(
            {"labels": torch.tensor(d.labels), "scores": torch.tensor(d.scores), "boxes": torch.tensor(d.boxes)}
        )
        targets.append(
            {"labels": torch.tensor(g.labels), "boxes": torch.tensor(g.boxes), "group_of": torch.tensor(g.group_of),
             "verified": torch.tensor(g.verified)}
        )  # fmt: skip
    mean_ap, ap = evaluate_detections(3, images, dets)
    metric = OpenImagesChallengeMAP(num_classes=3)
    metric.update(ids[:5], preds[:5], targets[:5])
    metric.update(ids[5:], preds[5:], targets[5:])
    out = metric.compute()
    assert float(out["map"]) == pytest.approx(mean_ap)
    assert {k: float(v) for k, v in out.items() if k != "map"} == pytest.approx(
        {f"ap/{c}": ap[c] for c in range(3) if not np.isnan(ap[c])}
    )


def test_metric_without_ground_truth_raises():
    metric = OpenImagesChallengeMAP(num_classes=2)
    metric.update([0], [{"labels": [0], "scores": [0.5], "boxes": [BOX1]}], [
        {"labels": [], "boxes": torch.zeros(0, 4), "group_of": [], "verified": [0]}
    ])  # fmt: skip
    with pytest.raises(ValueError, match="no class has ground-truth"):
        metric.compute()


def _perfect_submission(root: Path) -> dict:
    """Every expanded ground-truth box of the generated validation set, score 1."""
    from datamodules.openimages_files import CHALLENGE_FILES

    h = Hierarchy.read(root / CHALLENGE_FILES["hierarchy"])
    boxes = expand_boxes(read_boxes(root / CHALLENGE_FILES["boxes"])[0], h)
    return {k: (v.labels, [1.0] * len(v.labels), np.array(v.boxes)) for k, v in boxes.items()}


def test_cli_scores_generated_challenge_files(tmp_path):
    root = generate_openimages(tmp_path / "oi", num_train=1, num_val=12, num_test=1)
    sub = tmp_path / "perfect.csv"
    sub.write_text(detection_csv_text(_perfect_submission(root)))
    out = tmp_path / "metrics.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tasks.openimages.evaluate", str(sub), "--annotations", str(root),
         "--track", "detection", "--out", str(out)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    metrics = json.loads(out.read_text())
    assert metrics["mAP"] == pytest.approx(1.0) and "mAP: 1.000000" in proc.stdout
    assert "/m/0sy101" in metrics["per_class_AP"]  # a parent class, scored through the expansion
    # dropping every parent-class prediction: the evaluator expands only the ground truth
    leaves_only = {
        k: ([n for n in ls if n.startswith("/m/0sy0")], [1.0] * sum(n.startswith("/m/0sy0") for n in ls),
            b[[n.startswith("/m/0sy0") for n in ls]])
        for k, (ls, _, b) in _perfect_submission(root).items()
    }  # fmt: skip
    sub.write_text(detection_csv_text(leaves_only))
    subprocess.run(
        [sys.executable, "-m", "tasks.openimages.evaluate", str(sub), "--annotations", str(root), "--out", str(out)],
        cwd=PROJECT_ROOT, check=True, capture_output=True,
    )  # fmt: skip
    metrics = json.loads(out.read_text())
    assert metrics["per_class_AP"]["/m/0sy101"] == 0.0 and metrics["per_class_AP"]["/m/0sy001"] == pytest.approx(1.0)


def test_cli_imports_no_torch(tmp_path):
    code = "import sys, tasks.openimages.evaluate; print('torch' in sys.modules, 'lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_submission_round_trip_and_errors(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text(
        detection_csv_text(
            {"img1": (["/m/a", "/m/b"], [0.5, 0.25], np.array([BOX1, BOX2])), "img2": ([], [], np.zeros((0, 4)))}
        )
    )
    got = read_detection_submission(path, {"/m/a": 0, "/m/b": 1})
    assert got["img1"].labels.tolist() == [0, 1] and got["img1"].scores.tolist() == [0.5, 0.25]
    assert np.allclose(got["img1"].boxes, [BOX1, BOX2]) and len(got["img2"].labels) == 0
    path.write_text("ImageId,PredictionString\nimg1,/m/a 0.5 0.1 0.1 0.2\n")
    with pytest.raises(ValueError, match=r"s\.csv:2: 5 values"):
        read_detection_submission(path, {"/m/a": 0})
    path.write_text("ImageId,PredictionString\nimg1,/m/z 0.5 0.1 0.1 0.2 0.2\n")
    with pytest.raises(ValueError, match=r"s\.csv:2: unknown class"):
        read_detection_submission(path, {"/m/a": 0})
    path.write_text("ImageId,PredictionString\nimg1,\nimg1,\n")
    with pytest.raises(ValueError, match=r"s\.csv:3: image 'img1' appears twice"):
        read_detection_submission(path, {"/m/a": 0})


def test_generated_files_follow_the_published_headers(tmp_path):
    root = generate_openimages(tmp_path / "oi", num_train=3, num_val=3, num_test=1)
    with open(root / "train-annotations-bbox.csv") as f:
        assert next(csv.reader(f)) == (
            "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,"
            "IsDepiction,IsInside"
        ).split(",")
    with open(root / "train-annotations-human-imagelabels-boxable.csv") as f:
        assert next(csv.reader(f)) == ["ImageID", "Source", "LabelName", "Confidence"]
    assert not (root / "class-descriptions-boxable.csv").read_text().startswith("MID")  # no header, as released
    images, _ = read_boxes(root / "train-annotations-bbox.csv")
    for image_id in images:
        assert (root / "train" / f"{image_id}.jpg").exists() and len(image_id) == 16


# --- DDP cases (run on 2 gloo processes by tests/test_ddp_metrics.py) --------------------------------


def _ddp_batches() -> list[tuple]:
    """Open Images: 5 batches of images with group-of boxes, verified labels and scored detections."""
    g = torch.Generator().manual_seed(31)
    out, image = [], 0
    for size in (3, 2, 4, 1, 3):
        ids, preds, targets = [], [], []
        for _ in range(size):
            m, n = int(torch.randint(0, 4, (1,), generator=g)), int(torch.randint(0, 6, (1,), generator=g))
            xy = torch.rand(m, 2, generator=g, dtype=torch.float64) * 0.6
            boxes = torch.cat([xy, xy + 0.1 + 0.3 * torch.rand(m, 2, generator=g, dtype=torch.float64)], 1)
            picked = boxes[torch.randint(0, max(m, 1), (n,), generator=g)] if m else torch.rand(n, 4, generator=g)
            det = picked + 0.03 * torch.randn(n, 4, generator=g, dtype=torch.float64)
            ids.append(image)
            preds.append({"boxes": det, "scores": torch.rand(n, generator=g).mul(10).round().div(10),
                          "labels": torch.randint(0, 3, (n,), generator=g)})  # fmt: skip
            verified = torch.randperm(3, generator=g)[: int(torch.randint(0, 3, (1,), generator=g))]
            targets.append({"boxes": boxes, "labels": torch.randint(0, 3, (m,), generator=g),
                            "group_of": torch.rand(m, generator=g) < 0.3, "verified": verified})  # fmt: skip
            image += 1
        out.append((ids, preds, targets))
    return out


DDP_CASES = {
    f"openimages/challenge_map{'_padded' if padded else ''}": DDPCase(
        lambda: OpenImagesChallengeMAP(num_classes=3), _ddp_batches, padded=padded, covers=(OpenImagesChallengeMAP,)
    )
    for padded in (False, True)
}
