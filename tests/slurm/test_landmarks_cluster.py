"""The landmark system as a sweep through the SLURM launcher on the local cluster: two jobs of one
array (R-ASMK vs R-VLAD regional aggregation), each a 2-task DDP run whose test descriptors are
gathered over both ranks before search and scoring. Run with ``pytest -m slurm``."""

from __future__ import annotations

import json
import sys

import pytest

from core.resolvers import PROJECT_ROOT
from tasks.landmarks.scoring import score

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(900)]

TINY = [
    "experiment=landmarks_d2r",
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
        "task.d2r.aggregation=rasmk,rvlad",
        f"hydra.sweep.dir={sweep}",
        timeout=840,
    )
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["num_jobs"] == 2 and summary["num_done"] == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = sorted(summary["jobs"], key=lambda j: int(j["job"]))
    assert [next(o for o in j["overrides"] if o.startswith("task.d2r.aggregation=")) for j in jobs] == [
        "task.d2r.aggregation=rasmk",
        "task.d2r.aggregation=rvlad",
    ]
    root = tmp_path / "data" / "gldv2"
    test_ids = len((root / "test.csv").read_text().splitlines()) - 1
    for j in jobs:
        logs = "".join(p.read_text() for p in (sweep / ".submitit" / j["job_id"]).glob("*.out"))
        assert "GLOBAL_RANK: 0, MEMBER: 1/2" in logs and "GLOBAL_RANK: 1, MEMBER: 2/2" in logs, logs[-3000:]
        run_dir = sweep / j["job"]
        metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
        assert j["value"] == metrics["val/gap"]
        # Both ranks' queries, each once, in the submissions; their CLI score equals the logged metric.
        for track, name in (("recognition", "gap"), ("retrieval", "map100")):
            submission = run_dir / f"submission_{track}_d2r.csv"
            assert len(submission.read_text().splitlines()) - 1 == test_ids
            scored = score(submission, root / f"{track}_solution_v2.1.csv", track)
            assert scored["private"] == pytest.approx(metrics[f"test/{name}_d2r_private"], abs=1e-6)
