"""GLDv2 GAP and mAP@100 on hand-worked cases, the scoring CLI (Public/Private, Ignored rows), the
submission/solution readers' errors, and the torchmetrics Metrics against the CSV scorer."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from core.data import DataFormatError
from core.resolvers import PROJECT_ROOT
from datamodules.gldv2_files import read_solution, read_submission
from tasks.landmarks.metrics import GlobalAveragePrecision, MeanAveragePrecisionAtK
from tasks.landmarks.protocol import average_precision_at_k, global_average_precision, mean_average_precision_at_k
from tests.ddp import DDPCase


def test_gap_counts_non_landmark_predictions_and_unpredicted_landmarks():
    # Sorted by score: q1 right (P=1/1), q3 a non-landmark (wrong), q2 right (P=2/3); q4 has a
    # landmark but no prediction: only in N=3. GAP = (1 + 2/3) / 3.
    solution = {"q1": [10], "q2": [20], "q3": [], "q4": [30]}
    predictions = {"q1": (10, 0.9), "q3": (5, 0.8), "q2": (20, 0.7)}
    assert global_average_precision(predictions, solution) == pytest.approx((1 + 2 / 3) / 3)
    # Without the non-landmark prediction both right ones have precision 1: GAP = 2/3.
    del predictions["q3"]
    assert global_average_precision(predictions, solution) == pytest.approx(2 / 3)


def test_gap_breaks_score_ties_by_query_id_and_accepts_any_listed_landmark():
    solution = {"qa": [9], "qb": [2, 7]}
    # Equal scores: qa (wrong) ranks before qb (right): P = 1/2 at qb, N = 2.
    assert global_average_precision({"qa": (1, 0.5), "qb": (7, 0.5)}, solution) == pytest.approx(0.25)
    assert global_average_precision({"qa": (9, 0.5), "qb": (1, 0.5)}, solution) == pytest.approx(0.5)


def test_gap_without_any_landmark_query_raises():
    with pytest.raises(ValueError, match="no query of the solution has a landmark"):
        global_average_precision({"q": (1, 1.0)}, {"q": []})


def test_map_skips_duplicate_ids_but_keeps_their_positions():
    # a at 1 (1/1), a again (skipped), x, b at 4 (2/4): AP = (1 + 0.5) / 2.
    assert average_precision_at_k(["a", "a", "x", "b"], ["a", "b"]) == pytest.approx(0.75)


def test_map_caps_at_100_relevant_images_and_counts_queries_without_predictions():
    many = [f"r{i}" for i in range(150)]
    perfect = many[:100]
    shifted = ["x", *many[:99]]
    assert average_precision_at_k(perfect, many) == pytest.approx(1.0)  # divided by min(150, 100)
    assert average_precision_at_k(shifted, many) == pytest.approx(sum(j / (j + 1) for j in range(1, 100)) / 100)
    assert average_precision_at_k(perfect + ["r100"], many) == pytest.approx(1.0)  # rank 101 not counted
    solution = {"q1": ["a", "b"], "q2": many, "q3": ["c"]}
    predictions = {"q1": ["a", "a", "x", "b"], "q2": perfect}
    assert mean_average_precision_at_k(predictions, solution) == pytest.approx((0.75 + 1.0 + 0.0) / 3)


def write(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def recognition_files(tmp_path):
    solution = write(
        tmp_path / "recognition_solution_v2.1.csv",
        "id,landmarks,Usage\naaa1,10,Public\naaa2,,Public\nbbb1,20 21,Private\nbbb2,30,Private\nccc1,40,Ignored\n",
    )
    submission = write(
        tmp_path / "submission.csv",
        "id,landmarks\naaa1,10 0.9\naaa2,7 0.95\nbbb1,21 0.4\nbbb2,\nccc1,99 1.0\n",
    )
    return submission, solution


def test_cli_prints_public_and_private_separately_and_drops_ignored(recognition_files, tmp_path):
    submission, solution = recognition_files
    out = tmp_path / "m.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tasks.landmarks.evaluate",
            str(submission),
            "--solution",
            str(solution),
            "--track",
            "recognition",
            "--out",
            str(out),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    # Public: aaa2 (non-landmark, 0.95) wrong, then aaa1 right at 2: (1/2) / 1. Private: bbb1 right,
    # bbb2 without prediction: 1 / 2. The Ignored ccc1 counts nowhere.
    assert "GAP Public:  0.500000" in proc.stdout and "GAP Private: 0.500000" in proc.stdout
    assert json.loads(out.read_text())["public"] == pytest.approx(0.5)


def test_cli_imports_no_torch():
    code = "import sys, tasks.landmarks.evaluate; print('torch' in sys.modules, 'pytorch_lightning' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["False", "False"]


def test_retrieval_cli_on_published_headers(tmp_path):
    solution = write(
        tmp_path / "retrieval_solution_v2.1.csv",
        "id,images,Usage\nq01,i1 i2,Public\nq02,i3,Private\nq03,,Ignored\n",
    )
    submission = write(tmp_path / "s.csv", "id,images\nq01,i9 i1 i2\nq02,i3\nq03,i1\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tasks.landmarks.evaluate",
            str(submission),
            "--solution",
            str(solution),
            "--track",
            "retrieval",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    # q01: (1/2 + 2/3) / 2; q02: 1.
    assert f"mAP@100 Public:  {(0.5 + 2 / 3) / 2:.6f}" in proc.stdout
    assert "mAP@100 Private: 1.000000" in proc.stdout


@pytest.mark.parametrize(
    "text, problem",
    [
        ("id,landmarks\naaa1,10 0.9\naaa1,10 0.8\n", "appears twice"),
        ("id,landmarks\naaa1,10 0.9 3\n", "has 3 fields"),
        ("id,landmarks\naaa1,ten 0.9\n", "is not '<landmark_id> <score>'"),
        ("id,landmarks\nzzz9,10 0.9\n", "not in the solution"),
    ],
)
def test_malformed_submission_row_names_file_and_line(recognition_files, tmp_path, text, problem):
    _, solution = recognition_files
    bad = write(tmp_path / "bad.csv", text)
    parsed, ignored = read_solution(solution, "recognition")
    with pytest.raises(DataFormatError, match=problem) as err:
        read_submission(bad, "recognition", parsed, ignored)
    assert err.value.path == bad and err.value.line == text.count("\n")


def test_malformed_solution_rows(tmp_path):
    bad_usage = write(tmp_path / "s1.csv", "id,landmarks,Usage\naaa1,10,Public\naaa2,3,Secret\n")
    with pytest.raises(DataFormatError, match=r"s1.csv:3: Usage 'Secret'"):
        read_solution(bad_usage, "recognition")
    bad_header = write(tmp_path / "s2.csv", "id,images,Usage\n")
    with pytest.raises(DataFormatError, match=r"s2.csv:1: header"):
        read_solution(bad_header, "recognition")


def test_torchmetrics_gap_and_map_equal_the_scorer():
    solution = {0: [10], 1: [20], 2: [], 3: [30]}
    gap = GlobalAveragePrecision()
    gap.update([0, 2], [10, 5], [0.9, 0.8], [[10], []])
    gap.update([1, 3], [20, 0], [0.7, 0.0], [[20], [30]], predicted=[True, False])
    expected = global_average_precision({0: (10, 0.9), 2: (5, 0.8), 1: (20, 0.7)}, solution)
    assert float(gap.compute()) == pytest.approx(expected)
    mean_ap = MeanAveragePrecisionAtK(100)
    mean_ap.update(torch.tensor([0, 1]), [["a", "a", "x", "b"], []], [["a", "b"], ["c"]])
    assert float(mean_ap.compute()) == pytest.approx(0.75 / 2)


# --- DDP cases (run on 2 gloo processes by tests/test_ddp_metrics.py) --------------------------------


def _ddp_gap_batches() -> list[tuple]:
    """GLDv2 recognition: 5 batches of queries, some non-landmark, some without prediction, tied scores."""
    g = torch.Generator().manual_seed(20)
    out, sample = [], 0
    for size in (3, 5, 2, 4, 3):
        ids = list(range(sample, sample + size))
        sample += size
        landmarks = torch.randint(0, 4, (size,), generator=g)
        scores = torch.round(torch.rand(size, generator=g) * 4) / 4
        kinds = torch.rand(size, generator=g) < 0.25  # non-landmark queries
        truths = [[] if k else [int(t)] for k, t in zip(kinds, torch.randint(0, 4, (size,), generator=g))]
        predicted = (torch.rand(size, generator=g) > 0.2).tolist()
        out.append((ids, landmarks, scores, truths, predicted))
    return out


def _ddp_map_batches() -> list[tuple]:
    """GLDv2 retrieval: rankings with repeated ids and empty rankings."""
    g = torch.Generator().manual_seed(21)
    out, sample = [], 0
    for size in (2, 4, 3, 1, 3):
        ids = list(range(sample, sample + size))
        sample += size
        lengths = torch.randint(0, 8, (size,), generator=g).tolist()
        rankings = [torch.randint(0, 12, (n,), generator=g).tolist() for n in lengths]
        counts = torch.randint(1, 5, (size,), generator=g).tolist()
        relevant = [torch.randperm(12, generator=g)[:n].tolist() for n in counts]
        out.append((ids, rankings, relevant))
    return out


DDP_CASES = {
    f"landmarks/{name}{'_padded' if padded else ''}": DDPCase(make, batches, padded=padded, covers=(cls,))
    for name, make, batches, cls in (
        ("gap", GlobalAveragePrecision, _ddp_gap_batches, GlobalAveragePrecision),
        ("map100", lambda: MeanAveragePrecisionAtK(100), _ddp_map_batches, MeanAveragePrecisionAtK),
    )
    for padded in (False, True)
}
