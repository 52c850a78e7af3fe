"""The face-mesh system as a sweep through the SLURM launcher on the local cluster: the light and the
full mesh variant as two jobs of one array, each a 2-task DDP run (gloo) whose NME and AP are computed
over both ranks. Run with ``pytest -m slurm`` (the coordinator runs it at integration)."""

from __future__ import annotations

import json
import re
import sys

import pytest

from core.resolvers import PROJECT_ROOT
from tests.slurm.conftest import slurm_cluster  # noqa: F401  (the session fixture of the cluster tests)

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


def test_facemesh_variants_sweep_on_the_submitit_launcher(slurm_cluster, tmp_path):  # noqa: F811
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
        "task.variant=light,full",
        f"hydra.sweep.dir={sweep}",
        timeout=840,
    )
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["num_jobs"] == 2 and summary["num_done"] == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = sorted(summary["jobs"], key=lambda j: int(j["job"]))
    assert [next(o for o in j["overrides"] if o.startswith("task.variant=")) for j in jobs] == [
        "task.variant=light",
        "task.variant=full",
    ]
    ids = [re.fullmatch(r"(\d+)_(\d+)", j["job_id"] or "") for j in jobs]
    assert all(ids) and len({m.group(1) for m in ids}) == 1, [j["job_id"] for j in jobs]
    for j in jobs:
        logs = "".join(p.read_text() for p in (sweep / ".submitit" / j["job_id"]).glob("*.out"))
        assert "GLOBAL_RANK: 0, MEMBER: 1/2" in logs and "GLOBAL_RANK: 1, MEMBER: 2/2" in logs, logs[-3000:]
        metrics = j["metrics"]
        assert metrics["val/nme"] > 0 and 0.0 <= metrics["val/ap50"] <= 1.0 and j["value"] == metrics["val/nme"]
        assert 0.0 <= metrics["test/ap50"] <= 1.0
    assert summary["best"]["value"] == min(j["value"] for j in jobs)
