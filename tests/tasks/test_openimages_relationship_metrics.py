"""The Open Images Challenge 2019 relationship score on hand-worked cases (from the official definition:
tensorflow/models vrd_evaluation.py / per_image_vrd_evaluation.py / metrics.py), the torchmetric, the
Kaggle submission file and the scoring CLI end to end."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data import DataFormatError
from datamodules.openimages_relationships import CHALLENGE_VRD_FILES, Relationship, read_relationships
from datamodules.synthetic.openimages import generate_openimages
from tasks.openimages.evaluate import main as evaluate_main
from tasks.openimages.relationship.metrics import OpenImagesRelationshipScore
from tasks.openimages.relationship.protocol import (
    ImageRelationships,
    evaluate_relationships,
    read_relationship_submission,
    write_relationship_submission,
)
from tests.ddp import DDPCase

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _image(rows, scores=None, image_labels=()):
    """rows: (subject, object, relationship, subject box, object box) with ids and x1 y1 x2 y2 boxes."""
    arr = lambda i: np.array([r[i] for r in rows], dtype=np.int64)  # noqa: E731
    box = lambda i: np.array([r[i] for r in rows], dtype=np.float64).reshape(-1, 4)  # noqa: E731
    return ImageRelationships(
        arr(0), arr(1), arr(2), box(3), box(4),
        None if scores is None else np.asarray(scores, dtype=np.float64),
        np.asarray(image_labels, dtype=np.int64),
    )  # fmt: skip


S1, O1 = (0.0, 0.0, 0.5, 0.5), (0.5, 0.5, 1.0, 1.0)  # ground truth 1: phrase box (0, 0, 1, 1)
S2, O2 = (0.6, 0.0, 1.0, 0.3), (0.6, 0.1, 0.9, 0.4)  # ground truth 2: phrase box (0.6, 0, 1, 0.4)


def _hand_case():
    """One image, two ground-truth tuples (0, 1, relationship 0); five detections:
    d4 0.95 relationship 1 on GT 1's boxes: no ground truth of relationship 1 -> FP (not in mAP);
    d1 0.9 exact GT 1 -> TP; d2 0.8 the same again -> duplicate, FP (relationship and phrase);
    d3 0.7 GT 1's subject, object (0.8, 0.8, 1, 1) (IoU 0.16) -> FP; its phrase box (0, 0, 1, 1) is
       GT 1's, already matched -> FP;
    d5 0.6 GT 2's subject, object (0.6, 0, 0.7, 0.1) (IoU 0 with O2) -> FP; phrase box (0.6, 0, 1, 0.3)
       has IoU 0.12 / 0.16 = 0.75 with GT 2's -> phrase TP."""
    gt = _image([(0, 1, 0, S1, O1), (0, 1, 0, S2, O2)], image_labels=[0, 1])
    det = _image(
        [
            (0, 1, 1, S1, O1),
            (0, 1, 0, S1, O1),
            (0, 1, 0, S1, O1),
            (0, 1, 0, S1, (0.8, 0.8, 1.0, 1.0)),
            (0, 1, 0, S2, (0.6, 0.0, 0.7, 0.1)),
        ],
        scores=[0.95, 0.9, 0.8, 0.7, 0.6],
    )
    return {"img": gt}, {"img": det}


def test_relationship_tp_fp_duplicate_phrase_and_the_weighted_score():
    gt, det = _hand_case()
    r = evaluate_relationships(gt, det)
    # relationships, relationship 0: TP, FP, FP, FP over num_gt 2 -> precision 1 at recall 0.5 -> AP 0.5
    assert r["ap_relationship"] == {0: pytest.approx(0.5)}
    assert r["map_relationship"] == pytest.approx(0.5)
    # phrases: TP, FP, FP, TP -> envelope 1 on recall (0, 0.5], 2/4 on (0.5, 1] -> AP 0.75
    assert r["map_phrase"] == pytest.approx(0.75)
    assert r["recall50_relationship"] == pytest.approx(0.5)  # 1 of 2 ground truths found
    # weighted AP: all pairs (d4 FP first) against num_gt 2 -> 1/2 precision at recall 1/2 -> 0.25
    assert r["weighted_ap_relationship"] == pytest.approx(0.25)
    # the challenge score: 0.4 * 0.5 + 0.2 * 0.5 + 0.4 * 0.75
    assert r["score"] == pytest.approx(0.6)


def test_phrase_matches_on_the_enclosing_box_only():
    """Subject IoU 0.25 (relationship FP) but the pair's enclosing box is the ground truth's (phrase TP):
    score 0.4 * 0 + 0.2 * 0 + 0.4 * 1."""
    gt = {"a": _image([(0, 1, 0, (0.0, 0.0, 0.4, 0.4), (0.6, 0.6, 1.0, 1.0))])}
    det = {"a": _image([(0, 1, 0, (0.0, 0.0, 0.2, 0.2), (0.5, 0.5, 1.0, 1.0))], scores=[0.3])}
    r = evaluate_relationships(gt, det)
    assert (r["map_relationship"], r["recall50_relationship"], r["map_phrase"]) == (0.0, 0.0, 1.0)
    assert r["score"] == pytest.approx(0.4)


def test_recall_at_50_counts_the_50_best_of_each_image():
    """Image A: 2 ground truths, 60 detections: one TP ranked 1st, 58 FPs, one TP ranked 60th.
    Image B: 1 ground truth found by its only detection at score 0.01. Recall@50 = (1 + 1) / 3 (a global
    top 50 would give 1/3, no cut 3/3)."""
    a1, a2 = ((0.0, 0.0, 0.3, 0.3), (0.3, 0.3, 0.6, 0.6)), ((0.5, 0.5, 0.7, 0.7), (0.7, 0.7, 1.0, 1.0))
    far = ((0.9, 0.0, 1.0, 0.1), (0.0, 0.9, 0.1, 1.0))
    rows = [(0, 1, 0, *a1)] + [(0, 1, 0, *far)] * 58 + [(0, 1, 0, *a2)]
    scores = [0.99] + list(np.linspace(0.97, 0.5, 58)) + [0.1]
    gt = {"A": _image([(0, 1, 0, *a1), (0, 1, 0, *a2)]), "B": _image([(2, 3, 1, *a1)])}
    det = {"A": _image(rows, scores), "B": _image([(2, 3, 1, *a1)], [0.01])}
    r = evaluate_relationships(gt, det)
    assert r["recall50_relationship"] == pytest.approx(2 / 3)
    assert evaluate_relationships(gt, det, recall_at=100)["recall50_relationship"] == pytest.approx(1.0)
    # relationship 0: TP at rank 1, TP at rank 60 -> AP = 0.5 * 1 + 0.5 * 2/60; relationship 1: AP 1
    assert r["ap_relationship"][0] == pytest.approx(0.5 + 0.5 * 2 / 60)
    assert r["map_relationship"] == pytest.approx((0.5 + 0.5 * 2 / 60 + 1.0) / 2)


def test_image_level_labels_limit_what_is_scored():
    """Ground truth (0, 1, r0); image labels {0, 2}: class 2 verified but in no relationship -> negative.
    Detections: exact TP 0.5; (2, 1, r0) 0.9 -> kept, sure FP; (3, 1, r0) 0.99 -> class 3 neither in a
    relationship nor labelled: dropped. Ranking FP, TP -> AP 0.5 (1/3 if the unverified one counted).
    Detections on an image without any ground truth are dropped."""
    gt = {"img": _image([(0, 1, 0, S1, O1)], image_labels=[0, 2])}
    rows = [(0, 1, 0, S1, O1), (2, 1, 0, S1, O1), (3, 1, 0, S1, O1)]
    det = {"img": _image(rows, [0.5, 0.9, 0.99]), "other": _image(rows, [1.0, 1.0, 1.0])}
    r = evaluate_relationships(gt, det)
    assert r["map_relationship"] == pytest.approx(0.5)
    assert r["recall50_relationship"] == pytest.approx(1.0)


def test_attribute_is_relationship_with_identical_boxes():
    """ "is": the object is an attribute (class 9) with the subject's box; scored like any tuple."""
    gt = {"img": _image([(0, 9, 3, S1, S1)])}
    det = {"img": _image([(0, 9, 3, S1, S1), (0, 9, 3, S1, (0.0, 0.0, 0.1, 0.1))], [0.9, 0.95])}
    r = evaluate_relationships(gt, det)
    assert r["map_relationship"] == pytest.approx(0.5)  # FP then TP
    assert r["map_phrase"] == pytest.approx(1.0)  # both phrase boxes are S1: the 0.95 one takes it, then a duplicate


def test_no_ground_truth_raises():
    with pytest.raises(ValueError, match="no relationship"):
        evaluate_relationships({"img": _image([], image_labels=[0])}, {})


def _as_target(item: ImageRelationships, with_scores: bool) -> dict:
    out = {
        "subject_labels": torch.as_tensor(item.subject_labels),
        "object_labels": torch.as_tensor(item.object_labels),
        "relationships": torch.as_tensor(item.relationships),
        "subject_boxes": torch.as_tensor(item.subject_boxes),
        "object_boxes": torch.as_tensor(item.object_boxes),
    }
    if with_scores:
        out["scores"] = torch.as_tensor(item.scores)
    else:
        out["image_labels"] = torch.as_tensor(item.image_labels)
    return out


def test_torchmetric_gives_the_hand_worked_numbers():
    gt, det = _hand_case()
    metric = OpenImagesRelationshipScore(num_relationships=2)
    metric.update([7], [_as_target(det["img"], True)], [_as_target(gt["img"], False)])
    out = metric.compute()
    assert float(out["score"]) == pytest.approx(0.6)
    assert float(out["map_relationship"]) == pytest.approx(0.5) and float(out["map_phrase"]) == pytest.approx(0.75)
    assert float(out["recall50_relationship"]) == pytest.approx(0.5)
    assert set(out) >= {"ap_relationship/0", "ap_phrase/0"} and "ap_relationship/1" not in out
    with pytest.raises(ValueError, match=r"relationship ids must lie in \[0, 1\)"):
        OpenImagesRelationshipScore(num_relationships=1).update(
            [0], [_as_target(det["img"], True)], [_as_target(gt["img"], False)]
        )


def test_submission_round_trip_and_errors(tmp_path):
    preds = {
        "0002bd46a2d7c5a7": [
            (0.875, Relationship("/m/04yx4", "/m/0cvnqh", (0.1, 0.2, 0.4, 0.9), (0.3, 0.6, 0.8, 1.0), "at")),
            (0.25, Relationship("/m/04yx4", "/m/083vt", (0.1, 0.2, 0.4, 0.9), (0.1, 0.2, 0.4, 0.9), "is")),
        ],
        "empty": [],
    }
    path = write_relationship_submission(tmp_path / "sub.csv", preds)
    lines = path.read_text().splitlines()
    assert lines[0] == "ImageId,PredictionString"
    # Kaggle's order: confidence label1 xmin1 ymin1 xmax1 ymax1 label2 xmin2 ymin2 xmax2 ymax2 relationship
    assert lines[1].split(",")[1].split()[:12] == [
        "0.875", "/m/04yx4", "0.100000", "0.200000", "0.400000", "0.900000",
        "/m/0cvnqh", "0.300000", "0.600000", "0.800000", "1.000000", "at",
    ]  # fmt: skip
    assert read_relationship_submission(path) == preds
    path.write_text("ImageId,PredictionString\nimg,0.5 /m/a 0 0 1 1 /m/b 0 0 1 1\n")
    with pytest.raises(DataFormatError, match=r"sub\.csv:2: 11 values: groups of 12"):
        read_relationship_submission(path)
    path.write_text("ImageId,PredictionString\nimg,0.5 /m/a 0 0 1 1 /m/b 0 0 1 1 on\nimg,\n")
    with pytest.raises(DataFormatError, match=r"sub\.csv:3: image 'img' appears twice"):
        read_relationship_submission(path)
    path.write_text("ImageId,PredictionString\nimg,0.5 /m/a 0 0 1 1 /m/x 0 0 1 1 on\n")
    with pytest.raises(DataFormatError, match=r"sub\.csv:2: unknown class '/m/x'"):
        read_relationship_submission(path, {"/m/a": 0}, {"on": 0})
    path.write_text("ImageId,PredictionString\nimg,0.5 /m/a 0 0 1 1.5 /m/a 0 0 1 1 on\n")
    with pytest.raises(DataFormatError, match=r"sub\.csv:2: box .* leaves \[0, 1\]"):
        read_relationship_submission(path)


def _write_hand_folder(root: Path) -> None:
    """The hand-worked case as challenge files: classes /m/a (0), /m/b (1); relationships r0, r1."""
    root.mkdir()
    (root / CHALLENGE_VRD_FILES["classes"]).write_text("/m/a,A\n/m/b,B\n")
    (root / CHALLENGE_VRD_FILES["relationship_names"]).write_text("r0,r0\nr1,r1\n")
    header = "ImageID,LabelName1,LabelName2,XMin1,XMax1,YMin1,YMax1,XMin2,XMax2,YMin2,YMax2,RelationshipLabel\n"
    (root / CHALLENGE_VRD_FILES["relationships"]).write_text(
        header + "img,/m/a,/m/b,0,0.5,0,0.5,0.5,1,0.5,1,r0\nimg,/m/a,/m/b,0.6,1,0,0.3,0.6,0.9,0.1,0.4,r0\n"
    )
    (root / CHALLENGE_VRD_FILES["image_labels"]).write_text(
        "ImageID,Source,LabelName,Confidence\nimg,verification,/m/a,1\nimg,verification,/m/b,1\n"
    )
    rel = lambda o, r, s=S1: Relationship("/m/a", "/m/b", s, o, r)  # noqa: E731
    write_relationship_submission(
        root / "submission.csv",
        {
            "img": [
                (0.95, rel(O1, "r1")), (0.9, rel(O1, "r0")), (0.8, rel(O1, "r0")),
                (0.7, rel((0.8, 0.8, 1.0, 1.0), "r0")), (0.6, rel((0.6, 0.0, 0.7, 0.1), "r0", S2)),
            ]
        },
    )  # fmt: skip


def test_cli_scores_the_hand_worked_submission(tmp_path, capsys):
    root = tmp_path / "ann"
    _write_hand_folder(root)
    code = evaluate_main(
        [
            str(root / "submission.csv"),
            "--annotations",
            str(root),
            "--track",
            "relationship",
            "--out",
            str(tmp_path / "m.json"),
        ]
    )
    assert code == 0
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["score"] == pytest.approx(0.6)
    assert result["per_relationship_AP"] == {"r0": pytest.approx(0.5)}
    assert result["per_relationship_phrase_AP"] == {"r0": pytest.approx(0.75)}
    assert "score (0.4 / 0.2 / 0.4): 0.600000" in capsys.readouterr().out


def test_cli_on_generated_files_in_a_fresh_process(tmp_path):
    """The generator's challenge files scored through ``python -m``: the ground truth itself scores 1;
    dropping every "on" tuple removes that relationship's AP and its share of the recall. The command
    imports no torch."""
    root = generate_openimages(tmp_path / "oi", num_train=1, num_val=16, num_test=1, seed=5)
    gt, _ = read_relationships(root / CHALLENGE_VRD_FILES["relationships"])
    names = [r[0] for r in csv.reader(open(root / CHALLENGE_VRD_FILES["relationship_names"]))]
    perfect = {image: [(1.0, r) for r in rows] for image, rows in gt.items()}
    write_relationship_submission(tmp_path / "perfect.csv", perfect)
    partial = {image: [(1.0, r) for r in rows if r.relationship != "on"] for image, rows in gt.items()}
    write_relationship_submission(tmp_path / "partial.csv", partial)
    code = (
        "import sys, json; from tasks.openimages.evaluate import main; "
        "main(sys.argv[1:]); "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning'))))"
    )
    results = {}
    for name in ("perfect", "partial"):
        out = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / f"{name}.csv"), "--annotations", str(root),
             "--track", "relationship", "--out", str(tmp_path / f"{name}.json")],
            cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert json.loads(out.stdout.strip().splitlines()[-1]) == []  # no torch in the CLI path
        results[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert results["perfect"]["score"] == pytest.approx(1.0)
    present = sorted({r.relationship for rows in gt.values() for r in rows})
    assert "on" in present and set(present) <= set(names)
    n_on = sum(r.relationship == "on" for rows in gt.values() for r in rows)
    n_all = sum(len(rows) for rows in gt.values())
    mean_ap = (len(present) - 1) / len(present)
    assert results["partial"]["map_relationship"] == pytest.approx(mean_ap)
    assert results["partial"]["map_phrase"] == pytest.approx(mean_ap)
    assert results["partial"]["recall50_relationship"] == pytest.approx((n_all - n_on) / n_all)
    assert results["partial"]["score"] == pytest.approx(0.8 * mean_ap + 0.2 * (n_all - n_on) / n_all)


# --- DDP cases (run on 2 gloo processes by tests/test_ddp_metrics.py) --------------------------------


def _ddp_relationship_batches() -> list[tuple]:
    """5 batches of images with image labels, jittered / duplicated / random tuples (one image with
    60 detections, so Recall@50 cuts), tied scores, images without ground truth."""
    g = torch.Generator().manual_seed(37)
    out, image = [], 0
    for size in (3, 2, 4, 1, 3):
        ids, preds, targets = [], [], []
        for _ in range(size):
            m = int(torch.randint(0, 4, (1,), generator=g))
            xy = torch.rand(m, 2, 2, generator=g, dtype=torch.float64) * 0.5
            boxes = torch.cat([xy, xy + 0.1 + 0.3 * torch.rand(m, 2, 2, generator=g, dtype=torch.float64)], 2)
            classes = torch.randint(0, 4, (m, 3), generator=g)  # subject, object, relationship
            n = 60 if image == 5 else int(torch.randint(0, 7, (1,), generator=g))
            pick = torch.randint(0, max(m, 1), (n,), generator=g)
            copy = (torch.rand(n, generator=g) < 0.7) & (m > 0)
            det_cls = torch.where(
                copy[:, None],
                classes[pick] if m else torch.zeros(n, 3, dtype=torch.long),
                torch.randint(0, 4, (n, 3), generator=g),
            )
            det_boxes = torch.where(
                copy[:, None, None],
                boxes[pick] if m else torch.zeros(n, 2, 4, dtype=torch.float64),
                torch.rand(n, 2, 4, generator=g, dtype=torch.float64).sort(-1).values[..., [0, 2, 1, 3]],
            )
            det_boxes = (det_boxes + 0.02 * torch.randn(n, 2, 4, generator=g, dtype=torch.float64)).clamp(0, 1)
            ids.append(image)
            preds.append({"subject_labels": det_cls[:, 0], "object_labels": det_cls[:, 1],
                          "relationships": det_cls[:, 2], "scores": torch.rand(n, generator=g).mul(10).round().div(10),
                          "subject_boxes": det_boxes[:, 0], "object_boxes": det_boxes[:, 1]})  # fmt: skip
            labels = torch.randperm(4, generator=g)[: int(torch.randint(0, 3, (1,), generator=g))]
            targets.append({"subject_labels": classes[:, 0], "object_labels": classes[:, 1],
                            "relationships": classes[:, 2], "subject_boxes": boxes[:, 0], "object_boxes": boxes[:, 1],
                            "image_labels": labels})  # fmt: skip
            image += 1
        out.append((ids, preds, targets))
    return out


DDP_CASES = {
    f"openimages/relationship_score{'_padded' if padded else ''}": DDPCase(
        lambda: OpenImagesRelationshipScore(num_relationships=4),
        _ddp_relationship_batches,
        padded=padded,
        covers=(OpenImagesRelationshipScore,),
    )
    for padded in (False, True)
}
