"""TALNet's late fusion as one workflow (``workflow=talnet_late_fusion``): both streams train as jobs of
one multirun, each keeps its best checkpoint by its own validation mAP, one more job fuses them and
scores the test split once; a workflow started again reuses the streams that finished."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from core.training import evaluate
from tests.conftest import SMALL_DATA
from tests.helpers import read_metrics, read_wandb_run, read_wandb_run_info, run_entry

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

WORKFLOW = [
    "experiment=talnet_demo",
    "workflow=talnet_late_fusion",
    *SMALL_DATA["thumos14"],
    "trainer.max_epochs=3",
    "trainer.num_sanity_val_steps=0",
    "callbacks.rich_progress_bar=null",
    "logger=many",
]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # small CPU models on a shared 2-core machine


def best_epoch_by_validation(run_dir: Path, metric: str = "val/mAP") -> int:
    """The epoch ModelCheckpoint keeps (mode max, the first of equal values), read from the CSV logger."""
    with (run_dir / "csv" / "metrics.csv").open(newline="") as f:
        rows = [(int(r["epoch"]), float(r[metric])) for r in csv.DictReader(f) if r.get(metric) not in (None, "")]
    assert rows, f"{run_dir}: no {metric} logged"
    best = max(value for _, value in rows)
    return next(epoch for epoch, value in rows if value == best)


def test_late_fusion_workflow_fuses_the_validation_best_streams_and_reuses_them(tmp_path, cfg_eval):
    sweep = tmp_path / "sweep"
    args = [
        *WORKFLOW,
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.data_dir={tmp_path / 'data'}",
        "run_id=fusion-workflow",
        f"hydra.sweep.dir={sweep}",
    ]
    run_entry("train.py", args, timeout=900, env=ONE_THREAD)
    record = json.loads((sweep / "late_fusion.json").read_text())

    for num, name in enumerate(("rgb", "flow")):
        stream, run = record["streams"][name], sweep / str(num)
        metrics = read_metrics(run)
        assert stream["dir"] == str(run) and stream["selected_by"] == {"metric": "val/mAP", "mode": "max"}
        # the checkpoint fused is the stream's best by its validation mAP, and the stream never saw test
        assert stream["checkpoint"] == metrics["best_checkpoint"]
        assert Path(stream["checkpoint"]).name == f"epoch_{best_epoch_by_validation(run):03d}.ckpt"
        assert not [key for key in metrics["metrics"] if key.startswith("test/")]

    # the fused number equals eval.py on the same two checkpoints, run on its own
    fused = read_metrics(sweep / "2")["metrics"]
    assert record["fusion"]["metrics"] == fused
    alone = evaluate(
        cfg_eval(
            [
                "task=talnet_fusion",
                *SMALL_DATA["thumos14"],
                f"data.root={tmp_path / 'data' / 'thumos14'}",
                "ckpt_path=null",
                *[f"task.stream_checkpoints.{n}={s['checkpoint']}" for n, s in record["streams"].items()],
            ],
            run_dir=tmp_path / "eval",
            data_dir=tmp_path / "data",
        )
    )
    assert alone["test/mAP"] == pytest.approx(fused["test/mAP"], abs=1e-6)

    # the fused run names the stream runs it came from, in its W&B run too, grouped with them
    (wandb_file,) = (sweep / "2" / "wandb").glob("offline-run-*/run-*.wandb")
    _, config = read_wandb_run(wandb_file)
    assert config["task"]["stream_checkpoints"] == {n: s["checkpoint"] for n, s in record["streams"].items()}
    groups = {read_wandb_run_info(f)["group"] for f in sweep.glob("*/wandb/offline-run-*/run-*.wandb")}
    assert groups == {"fusion-workflow"}

    # killed after the rgb stream finished: started again, it reuses that stream and redoes the rest
    rgb_metrics = (sweep / "0" / "metrics.json").stat().st_mtime_ns
    shutil.rmtree(sweep / "1")
    shutil.rmtree(sweep / "2")
    proc = run_entry("train.py", args, timeout=900, env=ONE_THREAD)
    assert "stream 'rgb' (job 0) finished earlier; reusing it" in proc.stdout + proc.stderr
    assert (sweep / "0" / "metrics.json").stat().st_mtime_ns == rgb_metrics
    again = json.loads((sweep / "late_fusion.json").read_text())
    assert again["streams"]["rgb"] == record["streams"]["rgb"] and (sweep / "2" / "metrics.json").exists()
