"""Training from LitData shards on the local SLURM cluster: sbatch, 2 DDP ranks (srun tasks), each
rank streams its own half of every epoch, and a job requeued mid-epoch resumes that epoch from the
loader state in its checkpoint. Run with ``pytest -m slurm``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from core.resolvers import PROJECT_ROOT
from datamodules.pack import main as pack_main
from tests.datamodules.test_shards import SHAPES, TRAIN, data_config, datamodule, read_journal

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(900)]


def submit_from_shards(cluster, tmp_path, shared_data_dir, *overrides: str) -> tuple[str, Path]:
    """Pack the small shapes set (as FGVC class folders) into shards and sbatch a 2-rank DDP run that
    trains from them with a journal of its samples; returns the job id and the journal's path."""
    config = data_config(SHAPES, tmp_path / "compose", shared_data_dir)
    datamodule(config)  # the small shapes set, generated once
    fgvc = ["data=fgvc_imagefolder", f"data.root={config.root}", "data.num_classes=10", "data.test_flat=false",
            "data.solution_file=null", "data.image_size=32"]  # fmt: skip
    shards = tmp_path / "shards"
    assert pack_main([*fgvc, "--out", str(shards), "--workers", "2"]) == 0
    journal = tmp_path / "journal.jsonl"
    out = cluster.run(
        "sbatch", "--parsable", "--gpus-per-node=0", "--cpus-per-task=1", "--mem=3G", "--time=20",
        "--nodes=1", "--ntasks-per-node=2", f"--output={tmp_path}/%j.out",
        str(PROJECT_ROOT / "slurm" / "train_ddp.sbatch"),
        "experiment=fgvc_icassava2019", *fgvc,
        "data._target_=tests.datamodules.shard_journal.IndexedTrainClassFolders",
        "data.sampler=instance", "data.num_workers=0", "data.format=shards", f"data.shards={shards}",
        "task.prior_adjustment=none", "task.backbone=test_efficientnet", "task.pretrained=false",
        "callbacks.rich_progress_bar=null", "logger=csv", "trainer.max_epochs=2",
        f"paths.log_dir={tmp_path / 'logs'}",
        "+callbacks.journal._target_=tests.datamodules.shard_journal.SampleJournal",
        f"+callbacks.journal.path={journal}", *overrides,
        env=cluster.env(VISIONLAB_TRAINER="slurm_cpu", VISIONLAB_PYTHON=sys.executable),
    ).stdout  # fmt: skip
    return out.strip().split(";")[0], journal


def test_two_ranks_train_from_shards_each_on_its_own_half(slurm_cluster, tmp_path, shared_data_dir):
    job, journal = submit_from_shards(slurm_cluster, tmp_path, shared_data_dir, "data.batch_size=10")
    info = slurm_cluster.wait_finished(job, timeout=600)
    log = (tmp_path / f"{job}.out").read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", log[-3000:]
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in log and "GLOBAL_RANK: 1, MEMBER: 2/2" in log

    records = read_journal(journal)
    seen = {(e, r): [i for x in records if (x["epoch"], x["rank"]) == (e, r) for i in x["indices"]]
            for e in (0, 1) for r in (0, 1)}  # fmt: skip
    for epoch in (0, 1):
        a, b = seen[(epoch, 0)], seen[(epoch, 1)]
        assert len(a) == len(b) == TRAIN // 2 and not set(a) & set(b), f"epoch {epoch}: ranks overlap"
        assert sorted(a + b) == list(range(TRAIN)), f"epoch {epoch}: the ranks' union is not the split"
    assert seen[(0, 0)] != seen[(1, 0)], "the order did not change with the epoch"
    run_dir = next((tmp_path / "logs").glob(f"*/runs/slurm{job}"))
    assert json.loads((run_dir / "metrics.json").read_text())["metrics"]  # trained, validated, written


def test_a_requeued_job_resumes_its_epoch_from_the_shard_loader_state(slurm_cluster, tmp_path, shared_data_dir):
    """SIGUSR1 mid-epoch: the job is requeued at a batch end and resumes from ``last.ckpt`` (saved every 3
    steps with the loader state); the interrupted epoch then trains each sample exactly once per rank pair."""
    job, journal = submit_from_shards(
        slurm_cluster,
        tmp_path,
        shared_data_dir,
        "data.batch_size=5",
        "test=false",
        "callbacks.last_checkpoint.every_n_train_steps=3",
        "+callbacks.journal.pace=0.5",
    )
    slurm_cluster.wait_for(job, {"RUNNING"}, timeout=300)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # 12 steps per epoch: signal after step 5 (a checkpoint at step 3)
        if journal.exists() and max((r["step"] for r in read_journal(journal)), default=0) >= 5:
            break
        assert slurm_cluster.job_info(job)["JobState"] == "RUNNING", (tmp_path / f"{job}.out").read_text()[-3000:]
        time.sleep(0.3)
    slurm_cluster.preempt_and_finish(job, tmp_path / f"{job}.out")

    records = read_journal(journal)
    second = [r for r in records if r["attempt"] == 1]
    resumed_from = min(r["step"] for r in second) - 1  # the step of the last.ckpt the second attempt loaded
    assert 0 < resumed_from < 12, f"not resumed mid-epoch 0 (from step {resumed_from})"
    before = [i for r in records if r["attempt"] == 0 and r["step"] <= resumed_from for i in r["indices"]]
    after = [i for r in second if r["epoch"] == 0 for i in r["indices"]]
    assert not set(before) & set(after), "a sample trained before the checkpoint was trained again"
    assert sorted(before + after) == list(range(TRAIN)), "the resumed epoch did not cover the rest of the split"
    next_epoch = [i for r in second if r["epoch"] == 1 for i in r["indices"]]
    assert sorted(next_epoch) == list(range(TRAIN))
