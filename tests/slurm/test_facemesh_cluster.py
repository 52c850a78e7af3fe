"""The face-mesh system as a sweep through the SLURM launcher on the local cluster: the light and the
full mesh variant as two jobs of one array, each a 2-task DDP run (gloo) whose NME and AP are computed
over both ranks. Run with ``pytest -m slurm`` (the coordinator runs it at integration)."""

from __future__ import annotations

import pytest

from tests.helpers import mediapipe_topology_file
from tests.slurm.conftest import logged_value, run_ddp_sweep

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(900)]

TINY = [
    "task=facemesh",
    "data=facemesh",
    "data.batch_size=4",
    "data.generator.rendered=[8,4,4]",
    "data.generator.annotated=[4,4,4]",
    "data.generator.unlabeled=4",
    "data.generator.clip_frames=10",
    "data.generator.image_size=128",
    "data.generator.clip_size=128",
    "task.sample_images=2",
    "callbacks.rich_progress_bar=null",
    "logger=csv",
]


def test_facemesh_variants_sweep_on_the_submitit_launcher(slurm_cluster, tmp_path):
    # the default topology, MediaPipe's canonical mesh (`make mediapipe-models`), from the project's data folder
    overrides = [*TINY, f"data.generator.topology={mediapipe_topology_file()}"]
    sweep = run_ddp_sweep(slurm_cluster, tmp_path, overrides, "task.variant=light,full")
    for job in sweep.jobs:
        metrics = job["metrics"]
        # the summary holds what each job logged (its CSV logger's file, written apart from metrics.json)
        for name in ("val/nme", "val/ap50", "test/nme", "test/ap50"):
            assert metrics[name] == pytest.approx(logged_value(sweep.run_dir(job), name), rel=1e-6), name
        assert metrics["val/nme"] > 0
    assert sweep.summary["best"]["value"] == min(j["value"] for j in sweep.jobs)
