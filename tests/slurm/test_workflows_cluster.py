"""The design card's two cluster workflows on the real local SLURM cluster (``pytest -m slurm``):

- the compound-scaling grid search: every triple that meets the FLOPs constraint plus the
  single-dimension baselines as SLURM jobs (2-rank DDP each), killed halfway and started again
  (finished jobs skipped), one job preempted with SIGUSR1 (requeued, resumed), one W&B run per job
  grouped by the sweep, and the summary's command scaling the best triple up to phi = 1, 2;
- TALNet's late fusion: both streams as parallel SLURM jobs, then the fusion job, whose test mAP
  equals the same fusion evaluated locally; started again, it reuses the streams."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra.utils import instantiate

from core.resolvers import PROJECT_ROOT
from core.training import evaluate
from tests.conftest import SMALL_DATA, compose_config
from tests.helpers import read_metrics, read_wandb_run_info
from tests.tasks.test_efficientnet_sweep import SMALL_BASELINE

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(1800)]

CLUSTER = [
    "hydra/launcher=slurm_cpu",
    "trainer=slurm_cpu",
    "hydra.launcher.timeout_min=20",
    "hydra.launcher.mem_gb=4",
    "callbacks.rich_progress_bar=null",
]

GRID = [
    "-m",
    "hparams_search=compound_scaling_cpu",
    *CLUSTER,
    "trainer.devices=2",
    # the paper's triple, depth-, width- and resolution-only scaling at the same FLOPs growth, the baseline
    "hydra.sweeper.alpha=[1.2]",
    "hydra.sweeper.beta=[1.1]",
    "hydra.sweeper.gamma=[1.15]",
    "hydra.sweeper.dimensions=[compound,depth,width,resolution]",
    "hydra.sweeper.include_baseline=true",
    *SMALL_BASELINE,
    "data.batch_size=10",
    # long enough that a SIGUSR1 after the first epoch lands during training (4 was not, on a fast machine)
    "trainer.max_epochs=10",
    "logger=many",
]


# job number -> scaling dimension, in the sweeper's fixed order
JOBS = {"0": "baseline", "1": "compound", "2": "depth", "3": "width", "4": "resolution"}


def sweep_command(tmp_path: Path, sweep: Path, run_id: str, args: list[str]) -> list[str]:
    return [
        sys.executable,
        str(PROJECT_ROOT / "train.py"),
        *args,
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.data_dir={tmp_path / 'data'}",
        f"run_id={run_id}",
        f"hydra.sweep.dir={sweep}",
    ]


def job_ids(sweep: Path) -> dict[str, str]:
    """Job number -> SLURM job id (``<array>_<index>``), from the jobs' .hydra/hydra.yaml."""
    return {job["job"]: job["job_id"] for job in json.loads((sweep / "sweep_summary.json").read_text())["jobs"]}


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float) -> None:
    """Wait until ``path`` exists while ``proc`` (the sweep) still runs."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the sweep ended before {path} appeared (its log is beside the sweep)"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout:.0f} s"
        time.sleep(1.0)


def log_file(path: Path):
    """A file for a sweep's output: a pipe nobody reads would fill and stop the sweep."""
    return path.open("w")


def squeue_jobs(cluster) -> list[tuple[str, str]]:
    """(job id, state) of every job in the queue, array tasks expanded."""
    out = cluster.run("squeue", "--noheader", "--array", "--format=%i %T").stdout
    return [tuple(line.split()) for line in out.splitlines() if line.strip()]


def test_compound_scaling_grid_search_on_the_cluster(slurm_cluster, tmp_path):
    sweep = tmp_path / "sweep"
    command = sweep_command(tmp_path, sweep, "grid", GRID)
    env = slurm_cluster.env(OMP_NUM_THREADS="1")

    # First attempt: killed (launcher and its queued jobs) once job 0 has finished.
    first = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, stdout=log_file(tmp_path / "first.log"), stderr=subprocess.STDOUT
    )
    try:
        wait_for_file(sweep / "0" / "metrics.json", first, timeout=600)
    finally:
        first.send_signal(signal.SIGINT)
        try:
            first.wait(timeout=60)
        except subprocess.TimeoutExpired:
            first.kill()
            first.wait()
    for job, _ in squeue_jobs(slurm_cluster):
        slurm_cluster.run("scancel", job, check=False)
    deadline = time.monotonic() + 120
    while squeue_jobs(slurm_cluster) and time.monotonic() < deadline:
        time.sleep(1.0)
    finished_first = sorted(p.parent.name for p in sweep.glob("*/metrics.json"))
    assert "0" in finished_first and len(finished_first) < len(JOBS), finished_first
    kept = {n: (sweep / n / "metrics.json").stat().st_mtime_ns for n in finished_first}

    # Second attempt, same run_id: finished jobs are skipped; one job is preempted once, after this
    # attempt has finished an epoch of it (its last.ckpt is newer than the attempt). A job may end
    # before the signal acts (a fast machine, a job resumed near its end): then the next one is taken.
    started = time.time()
    second = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, stdout=log_file(tmp_path / "second.log"), stderr=subprocess.STDOUT
    )
    try:
        preempted = None
        unfinished = sorted(set(JOBS) - set(finished_first), key=int)
        for array_index, candidate in enumerate(unfinished):  # the array holds the unfinished jobs in order
            last = sweep / candidate / "checkpoints" / "last.ckpt"
            deadline = time.monotonic() + 600
            while not (last.exists() and last.stat().st_mtime > started):
                assert second.poll() is None and time.monotonic() < deadline, f"job {candidate} saved no epoch"
                time.sleep(0.2)
            running = [job for job, state in squeue_jobs(slurm_cluster) if state == "RUNNING"]
            job = next((job for job in running if job.endswith(f"_{array_index}")), None)
            if job is not None and slurm_cluster.preempt(job):
                preempted = candidate
                break
        assert preempted is not None, "every job ended before SIGUSR1 reached it"
        second.wait(timeout=1500)
    finally:
        if second.poll() is None:  # a failed check above: end the sweep this test started
            second.kill()
            second.wait()
    out = (tmp_path / "second.log").read_text()
    assert second.returncode == 0, out[-6000:]
    assert f"Skipping {len(finished_first)} completed jobs" in out

    summary = json.loads((sweep / "summary.json").read_text())
    rows = [(r["job"], r["dimension"], r["status"]) for r in summary["runs"]]
    # every candidate once, all done
    assert rows == [(n, dimension, "done") for n, dimension in JOBS.items()], rows
    assert {n: (sweep / n / "metrics.json").stat().st_mtime_ns for n in finished_first} == kept
    ids = job_ids(sweep)
    assert all(ids[n] and "_" in ids[n] for n in JOBS), ids  # SLURM array jobs
    preempted_log = "".join(p.read_text() for p in (sweep / ".submitit").glob(f"{ids[preempted]}*/*.out"))
    assert "Requeued SLURM job" in preempted_log, preempted_log[-3000:]
    assert "Restoring states from the checkpoint path at" in preempted_log, preempted_log[-3000:]
    for n in JOBS:  # 2-rank DDP in every job
        log = "".join(p.read_text() for p in (sweep / ".submitit").glob(f"{ids[n]}*/*.out"))
        assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log or n in finished_first, log[-2000:]
    # one W&B run per job, each its own id, all grouped by the sweep
    infos = [read_wandb_run_info(f) for f in sweep.glob("[0-9]/wandb/offline-run-*/run-*.wandb")]
    assert {i["id"] for i in infos} == {f"grid-{n}" for n in JOBS} and {i["group"] for i in infos} == {"grid"}
    assert (sweep / "accuracy_vs_flops.png").exists()

    # Step 2: the summary's command trains the best triple at phi = 1 and 2, as cluster jobs.
    scale_up = shlex.split(summary["scale_up_command"])
    assert "hydra/launcher=slurm_cpu" in scale_up
    scaled = tmp_path / "scaled"
    proc = slurm_cluster.run(sys.executable, *scale_up[1:], f"hydra.sweep.dir={scaled}", "run_id=scaled", timeout=1200)
    runs = json.loads((scaled / "summary.json").read_text())["runs"]
    assert [(r["dimension"], r["phi"], r["status"]) for r in runs] == [
        ("compound", 1.0, "done"),
        ("compound", 2.0, "done"),
    ], proc.stdout[-3000:]
    best = summary["best"]
    assert all(
        (r["alpha"], r["beta"], r["gamma"]) == pytest.approx((best["alpha"], best["beta"], best["gamma"])) for r in runs
    )
    assert all("_" in (i or "") for i in job_ids(scaled).values())


FUSION = [
    "experiment=talnet_demo",
    "workflow=talnet_late_fusion",
    *CLUSTER,
    "trainer.devices=1",
    *SMALL_DATA["thumos14"],
    "trainer.max_epochs=3",
    "trainer.num_sanity_val_steps=0",
    "logger=csv",
]


def test_talnet_late_fusion_workflow_on_the_cluster(slurm_cluster, tmp_path, cfg_eval):
    # The data set and its features exist before the jobs start (two jobs must not extract at once).
    root = tmp_path / "data" / "thumos14"
    cfg = compose_config("train", ["task=talnet", *SMALL_DATA["thumos14"], f"data.root={root}"], tmp_path / "prep")
    instantiate(cfg.data).prepare_data()

    sweep = tmp_path / "sweep"
    command = sweep_command(tmp_path, sweep, "fusion", [*FUSION, f"data.root={root}"])
    slurm_cluster.run(*command, env=slurm_cluster.env(OMP_NUM_THREADS="1"), timeout=1500)
    record = json.loads((sweep / "late_fusion.json").read_text())
    ids = job_ids(sweep)
    # the two streams are the two tasks of one job array (they run in parallel); the fusion comes after
    stream_arrays = {ids[n].split("_")[0] for n in ("0", "1")}
    assert len(stream_arrays) == 1 and ids["2"].split("_")[0] not in stream_arrays, ids
    for num, name in enumerate(("rgb", "flow")):
        assert record["streams"][name]["checkpoint"] == read_metrics(sweep / str(num))["best_checkpoint"]
    fused = read_metrics(sweep / "2")["metrics"]["test/mAP"]

    local = evaluate(
        cfg_eval(
            [
                "task=talnet_fusion",
                *SMALL_DATA["thumos14"],
                f"data.root={root}",
                "ckpt_path=null",
                *[f"task.stream_checkpoints.{n}={s['checkpoint']}" for n, s in record["streams"].items()],
            ],
            run_dir=tmp_path / "local",
        )
    )
    assert local["test/mAP"] == pytest.approx(fused, abs=1e-6)

    # started again: both streams are reused, nothing retrains, the fused result is the same
    proc = slurm_cluster.run(*command, env=slurm_cluster.env(OMP_NUM_THREADS="1"), timeout=900)
    out = proc.stdout + proc.stderr
    assert "stream 'rgb' (job 0) finished earlier; reusing it" in out
    assert "stream 'flow' (job 1) finished earlier; reusing it" in out
    assert json.loads((sweep / "late_fusion.json").read_text()) == record
