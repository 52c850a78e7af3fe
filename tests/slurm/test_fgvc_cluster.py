"""The FGVC system as a sweep through the SLURM launcher on the local cluster: two jobs of one array
(square-root vs class-balanced sampling), each a 2-task DDP run whose test predictions are gathered
over both ranks before EM and grading. Run with ``pytest -m slurm``."""

from __future__ import annotations

import json

import pytest

from tasks.fgvc.protocol import competition, score_files
from tests.slurm.conftest import run_ddp_sweep

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(900)]

TINY = [
    "experiment=fgvc_inaturalist2019",
    "task.backbone=test_efficientnet",
    "task.pretrained=false",  # the recipe starts from ImageNet weights; the generated copy trains from scratch
    "data.image_size=32",
    "data.num_workers=0",
    "data.batch_size=16",
    "data.generator.max_per_class=12",
    "data.augment.auto_augment=null",
    "callbacks.rich_progress_bar=null",
    "logger=csv",
]


def test_fgvc_sweep_on_the_submitit_launcher(slurm_cluster, tmp_path):
    sweep = run_ddp_sweep(slurm_cluster, tmp_path, TINY, "data.sampler=sqrt,class_balanced")
    solution = tmp_path / "data" / "fgvc" / "inaturalist2019" / "solution.csv"
    test_ids = len(solution.read_text().splitlines()) - 1
    for job in sweep.jobs:
        run_dir = sweep.run_dir(job)
        metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
        # Both ranks' test predictions, each test image once, in the submission; its score equals
        # the logged (EM-adjusted) test metric.
        submission = run_dir / "submission.csv"
        assert len(submission.read_text().splitlines()) - 1 == test_ids
        score = score_files(competition("inaturalist2019"), submission, solution)
        assert score == pytest.approx(metrics["test/top1_error_em"], abs=1e-6)
        assert json.loads((run_dir / "priors.json").read_text())["converged"]
