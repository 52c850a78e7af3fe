"""The cluster layer on a real local SLURM cluster: sbatch DDP, a sweep through the submitit launcher,
and preemption (SIGUSR1 -> requeue -> resume from the last checkpoint). Run with ``pytest -m slurm``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import torch

from core.resolvers import PROJECT_ROOT
from tests.slurm.conftest import logged_value, run_ddp_sweep

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(900)]

TINY = [
    "data.generator.train_per_class=12",
    "data.generator.val_per_class=4",
    "data.generator.test_per_class=4",
    "data.image_size=32",
    "data.num_workers=0",
    "task.backbone=test_efficientnet",
    "callbacks.rich_progress_bar=null",
    "logger=csv",
]
TRAIN_IMAGES = 10 * 12


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("slurm_data")


def submit(cluster, tmp_path: Path, sbatch_args: list[str], train_args: list[str]) -> str:
    """sbatch slurm/train_ddp.sbatch on CPU (no GPUs requested); returns the job id."""
    out = cluster.run(
        "sbatch",
        "--parsable",
        "--gpus-per-node=0",
        "--cpus-per-task=1",
        "--mem=3G",
        "--time=20",
        f"--output={tmp_path}/%j.out",
        *sbatch_args,
        str(PROJECT_ROOT / "slurm" / "train_ddp.sbatch"),
        *train_args,
        env=cluster.env(VISIONLAB_TRAINER="slurm_cpu", VISIONLAB_PYTHON=sys.executable),
    ).stdout
    return out.strip().split(";")[0]


def read_journal(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def journal_args(path: Path) -> list[str]:
    return [
        "+callbacks.journal._target_=tests.slurm.epoch_journal.EpochJournal",
        f"+callbacks.journal.path={path}",
    ]


def test_sbatch_template_trains_with_two_ddp_ranks(slurm_cluster, tmp_path, data_dir):
    """2 tasks on one node: both ranks train every epoch in one gloo group, each on half the data."""
    journal = tmp_path / "journal.jsonl"
    batch_size = 16
    job = submit(
        slurm_cluster,
        tmp_path,
        ["--nodes=1", "--ntasks-per-node=2"],
        [
            *TINY,
            f"data.batch_size={batch_size}",
            f"paths.log_dir={tmp_path / 'logs'}",
            f"paths.data_dir={data_dir}",
            "trainer.max_epochs=2",
            *journal_args(journal),
        ],
    )
    info = slurm_cluster.wait_finished(job, timeout=600)
    log = (tmp_path / f"{job}.out").read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", log[-3000:]
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in log and "GLOBAL_RANK: 1, MEMBER: 2/2" in log

    records = read_journal(journal)
    ends = sorted((r["rank"], r["epoch"]) for r in records if r["event"] == "end")
    assert ends == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert {r["world_size"] for r in records} == {2}
    # Each rank sees half of the 120 training images: ceil(60 / 16) = 4 steps per epoch, not 8.
    steps_per_epoch = -(-TRAIN_IMAGES // 2 // batch_size)
    assert {r["global_step"] for r in records if r["event"] == "end" and r["epoch"] == 1} == {2 * steps_per_epoch}

    run_dir = next((tmp_path / "logs").glob(f"*/runs/slurm{job}"))
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    # metrics.json holds the test accuracy the run logged (its CSV logger's file, written apart)
    assert metrics["test/acc_top1"] == pytest.approx(logged_value(run_dir, "test/acc_top1"), rel=1e-6)


def test_sigusr1_requeues_and_resumes_without_losing_an_epoch(slurm_cluster, tmp_path, data_dir):
    """SIGUSR1 after two finished epochs: Lightning checkpoints and requeues the job; the second
    attempt (same job id, same run folder) resumes from last.ckpt right after the last finished epoch
    and completes. The monitored metric is made to peak at epoch 0 (``epoch``, mode min), so the
    last checkpoint must be written for epochs that are not the best."""
    journal = tmp_path / "journal.jsonl"
    # Epochs left after the signal must outlast its delivery (scancel -> slurmd -> srun -> the task):
    # a quiet machine runs an epoch of this tiny set in well under a second.
    max_epochs = 12
    job = submit(
        slurm_cluster,
        tmp_path,
        ["--nodes=1", "--ntasks-per-node=1"],
        [
            *TINY,
            "data.batch_size=8",
            f"paths.log_dir={tmp_path / 'logs'}",
            f"paths.data_dir={data_dir}",
            f"trainer.max_epochs={max_epochs}",
            "test=false",
            *journal_args(journal),
            "callbacks.model_checkpoint.monitor=epoch",
            "callbacks.model_checkpoint.mode=min",
        ],
    )

    # Wait for two finished epochs (each writes last.ckpt), then signal while training.
    slurm_cluster.wait_for(job, {"RUNNING"}, timeout=300)
    start = time.monotonic()
    while time.monotonic() - start < 600:
        if journal.exists() and sum(r["event"] == "end" for r in read_journal(journal)) >= 2:
            break
        assert slurm_cluster.job_info(job)["JobState"] == "RUNNING", (tmp_path / f"{job}.out").read_text()[-3000:]
        time.sleep(0.5)
    slurm_cluster.preempt_and_finish(job, tmp_path / f"{job}.out")
    log = (tmp_path / f"{job}.out").read_text()

    run_dir = next((tmp_path / "logs").glob(f"*/runs/slurm{job}"))
    assert "Requeued SLURM job" in log
    assert f"Restoring states from the checkpoint path at {run_dir / 'checkpoints' / 'last.ckpt'}" in log

    records = read_journal(journal)
    first = [r for r in records if r["attempt"] == 0]
    second = [r for r in records if r["attempt"] == 1]
    finished_first = [r["epoch"] for r in first if r["event"] == "end"]
    finished_second = [r["epoch"] for r in second if r["event"] == "end"]
    assert len(finished_first) >= 2 and second, records
    # The second attempt starts right after the last epoch the first one finished: none lost, none redone.
    assert second[0]["event"] == "start" and second[0]["epoch"] == max(finished_first) + 1, records
    assert finished_first + finished_second == list(range(max_epochs))

    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == max_epochs - 1
    assert ckpt["global_step"] == max_epochs * -(-TRAIN_IMAGES // 8)
    assert (run_dir / "metrics.json").exists()


def test_multirun_on_the_submitit_launcher_summarizes_every_job(slurm_cluster, tmp_path, data_dir):
    """``python train.py -m hydra/launcher=slurm_cpu trainer.devices=2 ...``: three SLURM jobs of one
    array, each a 2-task DDP run (tasks per node = trainer.devices), all in one sweep folder, and a
    summary that lists each with its SLURM job id and metrics."""
    overrides = ["++hydra.callbacks.sweep_summary._target_=core.sweeps.SweepSummary", *TINY, "data.batch_size=16"]
    sweep = run_ddp_sweep(slurm_cluster, tmp_path, overrides, "seed=1,2,3", data_dir=data_dir)
    assert [j["job"] for j in sweep.jobs] == ["0", "1", "2"]
    # One SLURM job array: <array id>_<index> for each job, each with submitit's log folder.
    assert [j["job_id"].split("_")[1] for j in sweep.jobs] == ["0", "1", "2"]
    for j in sweep.jobs:
        assert j["value"] == j["metrics"]["val/acc_top1"]
        assert j["value"] == pytest.approx(logged_value(Path(j["dir"]), "val/acc_top1"), rel=1e-6)
    assert sweep.summary["best"]["value"] == max(j["value"] for j in sweep.jobs)
    assert (sweep.folder / "sweep_summary.csv").read_text().count("\n") == 4
