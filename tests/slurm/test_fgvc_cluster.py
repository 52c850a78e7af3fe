"""The FGVC system as a sweep through the SLURM launcher on the local cluster: two jobs of one array
(square-root vs class-balanced sampling), each a 2-task DDP run whose test predictions are gathered
over both ranks before EM and grading. Run with ``pytest -m slurm``."""

from __future__ import annotations

import json
import sys

import pytest

from core.resolvers import PROJECT_ROOT
from tasks.fgvc.grading import competition, score_files

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(900)]

TINY = [
    "experiment=fgvc_inaturalist2019",
    "task.backbone=test_efficientnet",
    "data.image_size=32",
    "data.num_workers=0",
    "data.batch_size=16",
    "data.generator.max_per_class=12",
    "data.augment.auto_augment=null",
    "callbacks.rich_progress_bar=null",
    "logger=csv",
]


def test_fgvc_sweep_on_the_submitit_launcher(slurm_cluster, tmp_path):
    sweep = tmp_path / "sweep"
    proc = slurm_cluster.run(
        sys.executable,
        str(PROJECT_ROOT / "train.py"),
        "-m",
        "hydra/launcher=slurm_cpu",
        "trainer=slurm_cpu",
        "trainer.devices=2",
        "hydra.launcher.timeout_min=15",
        "hydra.launcher.mem_gb=4",
        *TINY,
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.data_dir={tmp_path / 'data'}",
        "trainer.max_epochs=1",
        "data.sampler=sqrt,class_balanced",
        f"hydra.sweep.dir={sweep}",
        timeout=840,
    )
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["num_jobs"] == 2 and summary["num_done"] == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = sorted(summary["jobs"], key=lambda j: int(j["job"]))
    assert [next(o for o in j["overrides"] if o.startswith("data.sampler=")) for j in jobs] == [
        "data.sampler=sqrt",
        "data.sampler=class_balanced",
    ]
    solution = tmp_path / "data" / "fgvc" / "inaturalist2019" / "solution.csv"
    test_ids = len(solution.read_text().splitlines()) - 1
    for j in jobs:
        logs = "".join(p.read_text() for p in (sweep / ".submitit" / j["job_id"]).glob("*.out"))
        assert "GLOBAL_RANK: 0, MEMBER: 1/2" in logs and "GLOBAL_RANK: 1, MEMBER: 2/2" in logs, logs[-3000:]
        run_dir = sweep / j["job"]
        metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
        assert j["value"] == metrics["val/top1_error"]
        # Both ranks' test predictions, each test image once, in the submission; its score equals
        # the logged (EM-adjusted) test metric.
        submission = run_dir / "submission.csv"
        assert len(submission.read_text().splitlines()) - 1 == test_ids
        score = score_files(competition("inaturalist2019"), submission, solution)
        assert score == pytest.approx(metrics["test/top1_error_em"], abs=1e-6)
        assert json.loads((run_dir / "priors.json").read_text())["converged"]
