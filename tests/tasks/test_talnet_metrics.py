"""tIoU, ActivityNet detection mAP (official tie order) and AR@N on hand-worked cases, the scoring
command (out-of-set detections, Ambiguous segments, bad input), and the metric under DDP."""

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from core.metrics import temporal_iou
from core.overlap import temporal_iou as numpy_temporal_iou
from tasks.talnet.metrics import (
    AverageRecallAtN,
    TemporalActionDetectionMAP,
    evaluate_detections,
    match_detections,
)
from tasks.talnet.protocol import official_ranking
from tests.ddp import DDPCase


def test_tiou_hand_worked_and_equal_to_core():
    got = numpy_temporal_iou([[0, 10]], np.array([[0, 10], [5, 15], [10, 20], [0, 20], [2, 4]]), zero_union=None)
    np.testing.assert_allclose(got[0], [1.0, 5 / 15, 0.0, 0.5, 0.2])
    # the official 0/0 of two zero-length segments is NaN (what the scorer asks for); by default 0
    assert np.isnan(numpy_temporal_iou([[3, 3]], [[3, 3]], zero_union=None)[0, 0])
    assert temporal_iou([[3, 3]], [[3, 3]])[0, 0] == 0.0
    rng = np.random.default_rng(0)
    a = np.sort(rng.uniform(0, 50, (40, 2)), 1)
    b = np.sort(rng.uniform(0, 50, (30, 2)), 1)
    # the scorer's form and core's (numpy and float64 tensor paths), bit for bit
    official = numpy_temporal_iou(a, b, zero_union=None)
    np.testing.assert_array_equal(official, temporal_iou(a, b))
    np.testing.assert_array_equal(official, temporal_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy())
    # the official segment_iou's operand order (candidates' length first) gives the same bits
    union = (b[:, 1] - b[:, 0])[None, :] + (a[:, 1] - a[:, 0])[:, None]
    inter = (np.minimum(a[:, None, 1], b[None, :, 1]) - np.maximum(a[:, None, 0], b[None, :, 0])).clip(0)
    np.testing.assert_array_equal(official, inter / (union - inter))


def _numpy_first_of_tie() -> int:
    """Which of two equal scores the official ``argsort()[::-1]`` ranks first (NumPy's choice)."""
    return int(np.argsort(np.array([0.5, 0.5]))[::-1][0])


def _ap(dets, gts, thresholds=(0.5,), num_classes=1):
    res = evaluate_detections(np.array(dets, float), np.array(gts, float), num_classes, thresholds, thresholds)
    return res


def test_duplicate_detection_is_a_false_positive():
    gts = [[0, 0, 0, 10], [0, 0, 20, 30]]
    dets = [[0, 0, 0, 10, 0.9], [0, 0, 0, 10, 0.8], [0, 0, 20, 30, 0.7]]
    # ranks TP, FP, TP over 2 positives: AP = 0.5 * 1 + 0.5 * 2/3
    assert _ap(dets, gts).ap[0, 0] == pytest.approx(0.5 + 1 / 3)


def test_tied_scores_follow_the_official_reversed_argsort():
    gts = [[0, 0, 0, 10]]
    fp_tp = [[0, 0, 50, 60, 0.5], [0, 0, 0, 10, 0.5]]  # file order: false positive, true positive
    # ranked best first by argsort()[::-1]: if it puts the 2nd detection first, the TP leads
    # (precision 1 at recall 1: AP 1); otherwise the FP leads (precision 1/2 at recall 1: AP 0.5)
    tp_first = _numpy_first_of_tie() == 1
    assert _ap(fp_tp, gts).ap[0, 0] == pytest.approx(1.0 if tp_first else 0.5)
    assert _ap(fp_tp[::-1], gts).ap[0, 0] == pytest.approx(0.5 if tp_first else 1.0)
    scores = np.round(np.random.default_rng(1).random(500), 1)  # many ties, beyond insertion sort
    np.testing.assert_array_equal(official_ranking(scores), np.argsort(scores)[::-1])


def test_equal_tiou_candidates_follow_the_official_reversed_argsort():
    # D1 [5,10] overlaps GT1 [0,10] and GT2 [5,15] both at exactly 5/10; D2 [0,5] only GT1 (0.5).
    # If D1 takes GT2 (the official order puts the 2nd candidate first), D2 still finds GT1: both
    # TP, AP 1. If D1 takes GT1, D2 is a false positive: AP = 1/2 (recall 1/2 at precision 1).
    gts = [[0, 0, 0, 10], [0, 0, 5, 15]]
    dets = [[0, 0, 5, 10, 0.9], [0, 0, 0, 5, 0.8]]
    second_first = _numpy_first_of_tie() == 1
    assert _ap(dets, gts).ap[0, 0] == pytest.approx(1.0 if second_first else 0.5)
    # a duplicated annotation line: two identical ground truths, two identical detections
    dup = _ap([[0, 0, 0, 10, 0.9], [0, 0, 0, 10, 0.8]], [[0, 0, 0, 10], [0, 0, 0, 10]])
    assert dup.ap[0, 0] == pytest.approx(1.0)


def test_bad_scores_and_reversed_segments_are_refused():
    gts = [[0, 0, 0, 10]]
    with pytest.raises(ValueError, match="NaN or infinite score"):
        _ap([[0, 0, 0, 10, float("nan")]], gts)
    with pytest.raises(ValueError, match="end before they start"):
        _ap([[0, 0, 10, 0, 0.5]], gts)


def _scoring_files(tmp_path, results):
    database = {
        "video_test_0000001": {
            "subset": "Test",
            "duration": 60.0,
            "fps": 30.0,
            "annotations": [
                {"label": "BaseballPitch", "segment": [0.0, 10.0]},
                {"label": "Ambiguous", "segment": [20.0, 30.0]},
            ],
        },
        "video_validation_0000001": {
            "subset": "Validation",
            "duration": 60.0,
            "fps": 30.0,
            "annotations": [{"label": "BaseballPitch", "segment": [0.0, 10.0]}],
        },
    }
    gt = tmp_path / "thumos14.json"
    gt.write_text(json.dumps({"version": "t", "database": database}))
    res = tmp_path / "results.json"
    res.write_text(json.dumps({"version": "t", "results": results, "external_data": {}}))
    return str(res), str(gt)


def _det(score, start, end, label="BaseballPitch"):
    return {"label": label, "score": score, "segment": [start, end]}


def test_scoring_command_counts_out_of_set_detections_as_false_positives(tmp_path):
    from tasks.talnet.evaluate import main as score

    results = {
        # a validation video is outside the Test set: its better-scored detection is a FP
        "video_validation_0000001": [_det(0.9, 0.0, 10.0)],
        "video_test_0000001": [_det(0.8, 0.0, 10.0)],
    }
    res, gt = _scoring_files(tmp_path, results)
    with pytest.warns(UserWarning, match="1 detections are on videos outside the evaluated set"):
        metrics = score([res, "--annotations", gt])
    # ranks FP, TP over one positive: precision 1/2 at recall 1 -> AP 0.5 at every threshold
    assert metrics["mAP@0.5"] == pytest.approx(0.5) and metrics["outside_detections"] == 1


def test_scoring_command_ignores_false_positives_on_ambiguous_only_on_request(tmp_path):
    from tasks.talnet.evaluate import main as score

    # Ground truth BaseballPitch [0, 10], Ambiguous [20, 30]. Ranked: 0.95 [8, 22] (tIoU 2/22 with
    # the GT: a FP at 0.5, overlapping Ambiguous), 0.9 [25, 35] (FP, overlapping Ambiguous),
    # 0.8 [0, 10] (TP), 0.7 [40, 50] (FP, clear of Ambiguous).
    results = {
        "video_test_0000001": [
            _det(0.95, 8.0, 22.0),
            _det(0.9, 25.0, 35.0),
            _det(0.8, 0.0, 10.0),
            _det(0.7, 40.0, 50.0),
        ]
    }
    res, gt = _scoring_files(tmp_path, results)
    kept = score([res, "--annotations", gt])
    # FP, FP, TP, FP: precision 1/3 at recall 1 -> AP 1/3
    assert kept["mAP@0.5"] == pytest.approx(1 / 3) and kept["ambiguous_overlapping"] == 0
    dropped = score([res, "--annotations", gt, "--ambiguous", "drop"])
    # the two false positives on Ambiguous leave the ranking: TP, FP -> AP 1
    assert dropped["mAP@0.5"] == pytest.approx(1.0) and dropped["ambiguous_overlapping"] == 2
    # a true positive that overlaps Ambiguous stays: [0, 21] has tIoU 10/21 with the GT, a TP at
    # 0.3 (AP 1 once the other FP leaves) and a FP overlapping Ambiguous at 0.5 (nothing left: 0)
    results["video_test_0000001"] = [_det(0.95, 0.0, 21.0), _det(0.9, 25.0, 35.0)]
    res, gt = _scoring_files(tmp_path, results)
    dropped = score([res, "--annotations", gt, "--ambiguous", "drop"])
    assert dropped["mAP@0.3"] == pytest.approx(1.0) and dropped["mAP@0.5"] == pytest.approx(0.0)


def test_scoring_command_names_the_bad_entry(tmp_path):
    from core.data import DataFormatError
    from tasks.talnet.evaluate import main as score

    res, gt = _scoring_files(tmp_path, {"video_test_0000001": [_det(float("inf"), 0.0, 10.0)]})
    with pytest.raises(DataFormatError, match=r"results.json: results.video_test_0000001\[0\]: score is inf"):
        score([res, "--annotations", gt])
    res, gt = _scoring_files(tmp_path, {"video_test_0000001": [_det(0.5, 10.0, 2.0)]})
    with pytest.raises(DataFormatError, match="ends before it starts"):
        score([res, "--annotations", gt])


def test_scoring_command_imports_no_torch(tmp_path):
    import subprocess
    import sys

    res, gt = _scoring_files(tmp_path, {"video_test_0000001": [_det(0.8, 0.0, 10.0)]})
    code = (
        "import sys; from tasks.talnet.evaluate import main; main(sys.argv[1:]); "
        "heavy = [m for m in ('torch', 'pytorch_lightning', 'lightning', 'decord', 'pandas') "
        "if m in sys.modules]; assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code, res, "--annotations", gt], check=True)


def test_threshold_is_inclusive_and_per_threshold():
    # tIoU([0,10],[0,20]) = 0.5 exactly: a match at 0.5, a miss at 0.6.
    res = _ap([[0, 0, 0, 10, 1.0]], [[0, 0, 0, 20]], thresholds=(0.5, 0.6))
    np.testing.assert_allclose(res.ap[:, 0], [1.0, 0.0])


def test_taken_ground_truth_falls_back_to_next_best():
    gts = [[0, 0, 0, 10], [0, 0, 5, 15]]
    dets = [[0, 0, 0, 10, 0.9], [0, 0, 1, 11, 0.8]]
    # second detection: tIoU 9/11 with the taken GT, 6/14 with the free one.
    tp = match_detections(
        np.zeros(2),
        np.array([[0, 10], [1, 11]]),
        np.array([0.9, 0.8]),
        np.zeros(2),
        np.array([[0, 10], [5, 15]]),
        (0.4, 0.5),
    )
    np.testing.assert_array_equal(tp, [[True, True], [True, False]])
    res = _ap(dets, gts, thresholds=(0.4, 0.5))
    np.testing.assert_allclose(res.ap[:, 0], [1.0, 0.5])


def test_detection_in_video_without_ground_truth_is_false_positive():
    gts = [[0, 0, 0, 10]]
    dets = [[7, 0, 0, 10, 0.9], [0, 0, 0, 10, 0.5]]
    assert _ap(dets, gts).ap[0, 0] == pytest.approx(0.5)


def test_class_without_detections_scores_zero_and_class_without_gt_is_left_out():
    gts = [[0, 0, 0, 10], [0, 1, 20, 30]]
    dets = [[0, 0, 0, 10, 0.9], [0, 2, 40, 50, 0.9]]  # class 1 undetected, class 2 has no GT
    res = evaluate_detections(np.array(dets), np.array(gts), 3, (0.5,), (0.5,))
    assert res.ap[0, 0] == 1.0 and res.ap[0, 1] == 0.0 and np.isnan(res.ap[0, 2])
    assert res.average_map == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no ground-truth"):
        evaluate_detections(np.array(dets), np.zeros((0, 4)), 3)


def test_thumos_keys_and_average():
    res = evaluate_detections(np.array([[0, 0, 0, 10, 1.0]]), np.array([[0, 0, 0, 20]]), 1)
    d = res.as_dict()
    assert [k for k in d] == [f"mAP@{t}" for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)] + ["mAP"]
    # matched up to 0.5: thresholds 0.3, 0.4, 0.5 of the five 0.3..0.7 hit
    assert d["mAP"] == pytest.approx(3 / 5)


def test_metric_matches_function_and_counts_repeated_video_once():
    metric = TemporalActionDetectionMAP(num_classes=1, tiou_thresholds=(0.5,), average_thresholds=(0.5,))
    det_v0 = torch.tensor([[0, 0, 10, 0.9], [0, 0, 10, 0.8]])
    gt_v0 = torch.tensor([[0, 0, 10.0]])
    metric.update([0], [det_v0], [gt_v0])
    metric.update([1], [torch.tensor([[0, 20, 30, 0.7]])], [torch.tensor([[0, 20, 30.0]])])
    metric.update([0], [det_v0], [gt_v0])  # a padded repeat of video 0
    assert metric.compute()["mAP"].item() == pytest.approx(0.5 + 1 / 3)


def test_average_recall_at_n_hand_worked():
    metric = AverageRecallAtN(max_proposals=(1, 2))
    metric.update([0], [torch.tensor([[0, 10, 0.5], [0, 9, 0.9]])], [torch.tensor([[0, 10.0]])])
    metric.update([1], [torch.zeros(0, 3)], [torch.tensor([[0, 10.0]])])  # no proposals
    out = metric.compute()
    # video 0: top-1 is [0,9] (tIoU 0.9: 9 of the 10 thresholds 0.5..0.95); video 1 recalls nothing
    assert out["AR@1"].item() == pytest.approx(0.9 / 2)
    assert out["AR@2"].item() == pytest.approx(1.0 / 2)


def _ddp_worker(rank, world, port, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    metric = TemporalActionDetectionMAP(num_classes=2)
    for vid in range(rank, 6, world):
        det, gt = _video(vid)
        metric.update([vid], [det], [gt])
    if rank == 1:  # DistributedSampler-style padding: rank 1 sees video 0 again
        det, gt = _video(0)
        metric.update([0], [det], [gt])
    out = metric.compute()
    queue.put((rank, out["mAP"].item(), out["mAP@0.1"].item()))
    torch.distributed.destroy_process_group()


def _video(vid):
    g = torch.Generator().manual_seed(vid)
    gt = torch.tensor([[vid % 2, 10.0 * vid, 10.0 * vid + 5]])
    det = torch.cat(
        [
            torch.randint(0, 2, (5, 1), generator=g).double(),
            (10.0 * vid + torch.rand(5, 1, generator=g) * 4).double(),
            (10.0 * vid + 5 + torch.rand(5, 1, generator=g) * 3).double(),
            torch.rand(5, 1, generator=g).double(),
        ],
        1,
    )
    return det, gt


@pytest.mark.slow
def test_metric_on_two_gloo_processes_equals_one_process():
    single = TemporalActionDetectionMAP(num_classes=2)
    for vid in range(6):
        det, gt = _video(vid)
        single.update([vid], [det], [gt])
    expected = single.compute()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert 0 < expected["mAP@0.1"].item() < 1
    for _, m, m01 in results:
        assert m == pytest.approx(expected["mAP"].item())
        assert m01 == pytest.approx(expected["mAP@0.1"].item())


# --- DDP cases (run on 2 gloo processes by tests/test_ddp_metrics.py) --------------------------------


def _segments(g: torch.Generator, n: int, duration: float = 100.0) -> torch.Tensor:
    start = torch.rand(n, generator=g, dtype=torch.float64) * duration * 0.8
    length = 2.0 + torch.rand(n, generator=g, dtype=torch.float64) * 15.0
    return torch.stack([start, start + length], 1)


def ddp_detection_batches() -> list[tuple]:
    """Per video: 0-7 detections (label, start, end, score) and 1-3 ground truths (label, start,
    end), some detections near a ground truth so the AP is neither 0 nor 1."""
    g = torch.Generator().manual_seed(1)
    batches, video = [], 0
    for videos_in_batch in (2, 3, 1, 2, 2):
        ids, dets, gts = [], [], []
        for _ in range(videos_in_batch):
            m = int(torch.randint(1, 4, (1,), generator=g))
            gt_seg = _segments(g, m)
            gt_lab = torch.randint(0, 3, (m, 1), generator=g).double()
            n = int(torch.randint(0, 8, (1,), generator=g))
            near = (
                gt_seg[torch.randint(0, m, (n,), generator=g)] + torch.randn(n, 2, generator=g, dtype=torch.float64) * 2
            )
            far = _segments(g, n)
            use_near = torch.rand(n, 1, generator=g, dtype=torch.float64) < 0.6
            seg = torch.where(use_near, near, far).sort(dim=1).values
            lab = torch.where(
                use_near,
                gt_lab[torch.randint(0, m, (n,), generator=g)],
                torch.randint(0, 3, (n, 1), generator=g).double(),
            )
            score = torch.rand(n, 1, generator=g, dtype=torch.float64)
            ids.append(video)
            dets.append(torch.cat([lab, seg, score], 1))
            gts.append(torch.cat([gt_lab, gt_seg], 1))
            video += 1
        batches.append((ids, dets, gts))
    return batches


def _ddp_proposal_batches() -> list[tuple]:
    """Per video: 0-12 class-agnostic proposals (start, end, score) and 1-3 ground truths (start, end)."""
    return [(ids, [d[:, 1:4] for d in dets], [gt[:, 1:3] for gt in gts]) for ids, dets, gts in ddp_detection_batches()]


DDP_CASES = {
    f"talnet/{name}{'_padded' if padded else ''}": DDPCase(make, batches, padded=padded, covers=(cls,))
    for name, make, batches, cls in (
        (
            "detection_mAP",
            lambda: TemporalActionDetectionMAP(num_classes=3),
            ddp_detection_batches,
            TemporalActionDetectionMAP,
        ),
        ("proposal_AR", lambda: AverageRecallAtN(max_proposals=(1, 3, 5)), _ddp_proposal_batches, AverageRecallAtN),
    )
    for padded in (False, True)
}
