"""The Photobooth system as a sweep through the SLURM launcher on the local cluster: two jobs of one
array (attention size prior 0 vs 1), each a 2-task DDP run whose captured-moments metric is summed
over both ranks' clips. Run with ``pytest -m slurm``."""

from __future__ import annotations

import json
import sys

import pytest

from core.resolvers import PROJECT_ROOT

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(900)]

TINY = [
    "experiment=photobooth_clips",
    "data.num_workers=0",
    "data.batch_size=8",
    "data.generator.train_clips=4",
    "data.generator.val_clips=2",
    "data.generator.test_clips=3",
    "data.generator.frames_per_clip=24",
    "callbacks.rich_progress_bar=null",
    "callbacks.sample_images=null",
    "logger=csv",
]


def test_photobooth_sweep_on_the_submitit_launcher(slurm_cluster, tmp_path):
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
        "task.size_prior=0.0,1.0",
        f"hydra.sweep.dir={sweep}",
        timeout=840,
    )
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["num_jobs"] == 2 and summary["num_done"] == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = sorted(summary["jobs"], key=lambda j: int(j["job"]))
    assert [next(o for o in j["overrides"] if o.startswith("task.size_prior=")) for j in jobs] == [
        "task.size_prior=0.0",
        "task.size_prior=1.0",
    ]
    test_clips = json.loads((tmp_path / "data" / "photobooth_clips" / "test.json").read_text())["clips"]
    moments = sum(len(c["moments"]) for c in test_clips)
    for j in jobs:
        logs = "".join(p.read_text() for p in (sweep / ".submitit" / j["job_id"]).glob("*.out"))
        assert "GLOBAL_RANK: 0, MEMBER: 1/2" in logs and "GLOBAL_RANK: 1, MEMBER: 2/2" in logs, logs[-3000:]
        run_dir = sweep / j["job"]
        metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
        assert j["value"] == metrics["val/f1"]
        # Both ranks' test clips, each once, in the shots file; its counts give the logged recall.
        rows = json.loads((run_dir / "test_shots.json").read_text())
        assert sorted(r["clip"] for r in rows) == list(range(len(test_clips)))
        from tasks.photobooth.metrics import match_shots

        captured = sum(match_shots(r["shots"], [tuple(m) for m in r["moments"]]) for r in rows)
        assert metrics["test/recall"] == pytest.approx(captured / moments, abs=1e-6)
