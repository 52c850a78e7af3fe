"""The landmark system as a sweep through the SLURM launcher on the local cluster: two jobs of one
array (R-ASMK vs R-VLAD regional aggregation), each a 2-task DDP run whose test descriptors are
gathered over both ranks before search and scoring. Run with ``pytest -m slurm``."""

from __future__ import annotations

import json

import pytest

from tasks.landmarks.protocol import score
from tests.slurm.conftest import run_ddp_sweep

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(900)]

TINY = [
    "experiment=landmarks_d2r",
    "task.pretrained=false",  # the recipe starts from ImageNet weights; the generated copy trains from scratch
    "data.image_size=64",
    "data.num_workers=0",
    "data.batch_size=8",
    "data.generator.num_landmarks=5",
    "data.generator.train_per_landmark=6",
    "data.generator.index_per_landmark=2",
    "data.generator.index_distractors=3",
    "data.generator.test_distractors=3",
    "task.d2r.codebook_size=8",
    "task.detector.score_threshold=0.0",
    "callbacks.rich_progress_bar=null",
    "logger=csv",
]


def test_landmarks_sweep_on_the_submitit_launcher(slurm_cluster, tmp_path):
    sweep = run_ddp_sweep(slurm_cluster, tmp_path, TINY, "task.d2r.aggregation=rasmk,rvlad")
    root = tmp_path / "data" / "gldv2"
    test_ids = len((root / "test.csv").read_text().splitlines()) - 1
    for job in sweep.jobs:
        run_dir = sweep.run_dir(job)
        metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
        # Both ranks' queries, each once, in the submissions; their CLI score equals the logged metric.
        for track, name in (("recognition", "gap"), ("retrieval", "map100")):
            submission = run_dir / f"submission_{track}_d2r.csv"
            assert len(submission.read_text().splitlines()) - 1 == test_ids
            scored = score(submission, root / f"{track}_solution_v2.1.csv", track)
            assert scored["private"] == pytest.approx(metrics[f"test/{name}_d2r_private"], abs=1e-6)
