"""Evaluation from shards under DDP: LitData gives each rank whole chunks of an evaluation split, so the
ranks hold different numbers of samples. The FGVC task's test gather and its EM calibration on the
validation split must still see every sample exactly once (Lightning's ``all_gather`` needs equal shapes;
core.metrics.gather_rows does not)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import pytest

from core.resolvers import PROJECT_ROOT
from datamodules.pack import main as pack_main
from tests.datamodules.test_shards import TEST, shapes, train_args  # noqa: F401  (shapes: a fixture)


@pytest.mark.slow
def test_ranks_holding_different_counts_evaluate_every_sample_once(shapes, tmp_path):  # noqa: F811
    config, _ = shapes
    root = tmp_path / "shapes"
    shutil.copytree(config.root, root)
    for split in ("val", "test"):  # 39 images: LitData's two ranks get 20 and 19
        min(path for path in (root / split).rglob("*") if path.is_file()).unlink()
    val_counts = [len([f for f in d.iterdir() if f.is_file()]) for d in sorted((root / "val").iterdir())]
    out = tmp_path / "shards"
    args = [f"data.root={root}", "data.num_classes=10", "data.test_flat=false", "data.solution_file=null"]
    assert pack_main(["data=fgvc_imagefolder", *args, "data.image_size=32", "--out", str(out), "--workers", "2"]) == 0

    run_dir = tmp_path / "run"
    overrides = [
        *[a.replace(str(config.root), str(root)) for a in train_args(config, out, run_dir, tmp_path / "journal")],
        "trainer=ddp_cpu",
        "trainer.max_epochs=1",
        "task.prior_adjustment=em",
        "task.calibration=ts",
    ]
    done = subprocess.run([sys.executable, "train.py", *overrides], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]

    with open(run_dir / "predictions.csv", newline="") as f:
        indices = [int(row["index"]) for row in csv.DictReader(f)]
    assert indices == list(range(TEST - 1))  # every test image once, in file order, from both ranks' parts
    priors = json.loads((run_dir / "priors.json").read_text())
    assert priors["calibration"] == "ts"
    # the class frequencies of the whole validation split (Jeffreys' 1/2 added to each), not of one rank's part
    assert priors["calibration_split_prior"] == pytest.approx([(n + 0.5) / (sum(val_counts) + 5) for n in val_counts])
    assert len(priors["test_prior"]) == 10 and sum(priors["test_prior"]) == pytest.approx(1.0)
