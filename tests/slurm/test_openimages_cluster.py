"""The Open Images detection system as a sweep through the SLURM launcher on the local cluster: two
jobs of one array (trained with the challenge's label rules or with torchvision's plain losses), each
a 2-task DDP run whose challenge mAP is computed over both ranks' images and whose test submission
gathers both ranks' rows. Run with ``pytest -m slurm``."""

from __future__ import annotations

import json
import shutil

import pytest

from tasks.openimages.evaluate import score_detection
from tests.slurm.conftest import logged_value, run_ddp_sweep

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(900)]

TINY = [
    "experiment=openimages_detection",
    "data.num_workers=0",
    "data.batch_size=2",
    "data.generator.num_train=8",
    "data.generator.num_val=4",
    "data.generator.num_test=4",
    "callbacks.rich_progress_bar=null",
    "logger=csv",
]
# The test split's files under the challenge's names, as the scoring CLI reads them.
CHALLENGE_NAMES = [
    ("test-annotations-bbox.csv", "challenge-2019-validation-detection-bbox.csv"),
    ("test-annotations-human-imagelabels-boxable.csv", "challenge-2019-validation-detection-human-imagelabels.csv"),
    ("bbox_labels_600_hierarchy.json", "challenge-2019-label500-hierarchy.json"),
    ("challenge-2019-classes-description-500.csv", "challenge-2019-classes-description-500.csv"),
]


def test_openimages_sweep_on_the_submitit_launcher(slurm_cluster, tmp_path):
    sweep = run_ddp_sweep(slurm_cluster, tmp_path, TINY, "task.label_rules=True,False")
    root = tmp_path / "data" / "openimages"
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    for src, dst in CHALLENGE_NAMES:
        shutil.copy(root / src, annotations / dst)
    test_ids = sorted(p.stem for p in (root / "test").glob("*.jpg"))
    for job in sweep.jobs:
        run_dir = sweep.run_dir(job)
        metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
        # the summary's value is what the job logged (its CSV log, written apart from metrics.json)
        assert job["value"] == pytest.approx(logged_value(run_dir, "val/map"), abs=1e-7)
        # both ranks' test images, each once, in the submission; the CLI scores it to the logged mAP
        submission = run_dir / "test_submission.csv"
        assert [line.split(",")[0] for line in submission.read_text().splitlines()[1:]] == test_ids
        scored = score_detection(submission, annotations)
        assert scored["mAP"] == pytest.approx(metrics["test/map"], abs=1e-6)
