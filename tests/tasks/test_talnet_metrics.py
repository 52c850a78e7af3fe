"""tIoU, ActivityNet-style detection mAP and AR@N on hand-worked cases, and the metric under DDP."""

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from tasks.talnet.metrics import (
    AverageRecallAtN,
    TemporalActionDetectionMAP,
    evaluate_detections,
    match_detections,
    pairwise_tiou,
    tiou,
)


def test_tiou_hand_worked():
    got = tiou([0, 10], np.array([[0, 10], [5, 15], [10, 20], [0, 20], [2, 4]]))
    np.testing.assert_allclose(got, [1.0, 5 / 15, 0.0, 0.5, 0.2])
    np.testing.assert_allclose(pairwise_tiou([[0, 10]], [[5, 15]]), [[1 / 3]])
    assert tiou([3, 3], np.array([[3, 3]]))[0] == 0.0  # zero union


def _ap(dets, gts, thresholds=(0.5,), num_classes=1):
    res = evaluate_detections(
        np.array(dets, float), np.array(gts, float), num_classes, thresholds, thresholds
    )
    return res


def test_duplicate_detection_is_a_false_positive():
    gts = [[0, 0, 0, 10], [0, 0, 20, 30]]
    dets = [[0, 0, 0, 10, 0.9], [0, 0, 0, 10, 0.8], [0, 0, 20, 30, 0.7]]
    # ranks TP, FP, TP over 2 positives: AP = 0.5 * 1 + 0.5 * 2/3
    assert _ap(dets, gts).ap[0, 0] == pytest.approx(0.5 + 1 / 3)


def test_ties_keep_input_order():
    gts = [[0, 0, 0, 10]]
    fp_first = [[0, 0, 50, 60, 0.5], [0, 0, 0, 10, 0.5]]
    assert _ap(fp_first, gts).ap[0, 0] == pytest.approx(0.5)
    assert _ap(fp_first[::-1], gts).ap[0, 0] == pytest.approx(1.0)


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
    metric = TemporalActionDetectionMAP(
        num_classes=1, tiou_thresholds=(0.5,), average_thresholds=(0.5,)
    )
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
