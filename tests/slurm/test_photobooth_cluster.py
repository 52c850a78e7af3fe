"""The Photobooth system as a sweep through the SLURM launcher on the local cluster: two jobs of one
array (attention size prior 0 vs 1), each a 2-task DDP run whose captured-moments metric is summed
over both ranks' clips. Run with ``pytest -m slurm``."""

from __future__ import annotations

import json

import pytest

from tasks.photobooth.metrics import match_shots
from tests.slurm.conftest import run_ddp_sweep

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
    sweep = run_ddp_sweep(slurm_cluster, tmp_path, TINY, "task.size_prior=0.0,1.0")
    test_clips = json.loads((tmp_path / "data" / "photobooth_clips" / "test.json").read_text())["clips"]
    moments = sum(len(c["moments"]) for c in test_clips)
    for job in sweep.jobs:
        run_dir = sweep.run_dir(job)
        metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
        # Both ranks' test clips, each once, in the shots file; its counts give the logged recall.
        rows = json.loads((run_dir / "test_shots.json").read_text())
        assert sorted(r["clip"] for r in rows) == list(range(len(test_clips)))
        captured = sum(match_shots(r["shots"], [tuple(m) for m in r["moments"]]) for r in rows)
        assert metrics["test/recall"] == pytest.approx(captured / moments, abs=1e-6)
