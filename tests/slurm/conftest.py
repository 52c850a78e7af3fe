"""A real single-node SLURM cluster for the tests marked ``slurm``, started once per session.

The session fixture starts munged, slurmctld and slurmd through slurm/start_local_cluster.sh, in a
fresh state folder on free ports (so a cluster a user already runs is left alone), and stops exactly
the daemons that script recorded. When the cluster cannot start, the tests fail with the reason
under CI (the environment variable CI is set) and are skipped with it elsewhere."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.resolvers import PROJECT_ROOT

SLURM_DIR = PROJECT_ROOT / "slurm"
FINISHED = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
}


def cluster_unavailable(reason: str) -> None:
    message = f"local SLURM cluster unavailable: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalCluster:
    """What a test needs to talk to the cluster: its slurm.conf and an environment that uses it."""

    state_dir: Path
    conf: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "SLURM_CONF": str(self.conf),
            "PYTHONUNBUFFERED": "1",
            "WANDB_SILENT": "true",
        }
        env.pop("VISIONLAB_RUN_ID", None)  # each job resolves its own run id (its SLURM job id)
        env.update(extra)
        return env

    def run(self, *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            list(args),
            env=kwargs.pop("env", self.env()),
            capture_output=True,
            text=True,
            cwd=PROJECT_ROOT,
            check=False,
            **kwargs,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def job_info(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (accounting is off here, so no sacct)."""
        out = self.run("scontrol", "-o", "show", "job", job_id).stdout
        info = {}
        for field in out.split():
            key, _, value = field.partition("=")
            info.setdefault(key, value)
        return info

    def wait_for(self, job_id: str, states: set[str], timeout: float) -> dict[str, str]:
        """Poll until the job is in one of ``states``; raises with the job's state on timeout."""
        deadline = time.monotonic() + timeout
        info: dict[str, str] = {}
        while time.monotonic() < deadline:
            info = self.job_info(job_id)
            if info.get("JobState") in states:
                return info
            time.sleep(1.0)
        raise AssertionError(
            f"job {job_id} not in {sorted(states)} after {timeout:.0f} s: {info.get('JobState')} ({info.get('Reason')})"
        )

    def wait_finished(self, job_id: str, timeout: float) -> dict[str, str]:
        return self.wait_for(job_id, FINISHED, timeout)

    def preempt(self, job_id: str) -> bool:
        """What a preemption does to a running job: SIGUSR1 (the launcher's ``--signal``), and the job
        requeues itself once; it is then released at once (SLURM would hold it ~2 minutes, its
        BeginTime). False when the job ended before the signal could act (it was already past training)."""
        for _ in range(30):  # "Job can not be altered now" while slurmctld is busy with it: ask again
            if self.run("scancel", "--signal=USR1", job_id, check=False).returncode == 0:
                break
            if self.job_info(job_id).get("JobState") != "RUNNING":
                break
            time.sleep(1.0)
        info = self.wait_for(job_id, {"PENDING", *FINISHED}, timeout=180)
        if info["JobState"] != "PENDING":
            return False
        assert info["Restarts"] == "1", info
        self.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")
        return True

    def preempt_and_finish(self, job_id: str, log: Path, timeout: float = 600) -> dict[str, str]:
        """:meth:`preempt`, then the job runs to the end. Returns its final info; asserts one restart and a
        clean end, with the end of ``log`` if not."""
        assert self.preempt(job_id), f"job {job_id} ended before SIGUSR1 reached it:\n{log.read_text()[-3000:]}"
        info = self.wait_finished(job_id, timeout=timeout)
        assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", log.read_text()[-3000:]
        return info


@pytest.fixture(scope="session")
def slurm_cluster() -> LocalCluster:
    if os.geteuid() != 0:
        cluster_unavailable("the SLURM daemons must run as root")
    missing = [
        c
        for c in ("munged", "slurmctld", "slurmd", "sbatch", "scontrol")
        if shutil.which(c) is None and not Path("/usr/sbin", c).exists()
    ]
    if missing:
        cluster_unavailable(f"{', '.join(missing)} not installed; run: bash slurm/install_local_cluster.sh")
    # Not under pytest's tmp folder: munged (user munge) must be able to reach its socket folder.
    state = Path(tempfile.mkdtemp(prefix="visionlab-slurm-test-"))
    env = {**os.environ, "SLURMCTLD_PORT": str(_free_port()), "SLURMD_PORT": str(_free_port())}
    proc = subprocess.run(
        ["bash", str(SLURM_DIR / "start_local_cluster.sh"), str(state)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    cluster: LocalCluster | None = None
    try:
        if proc.returncode != 0:
            cluster_unavailable(
                f"slurm/start_local_cluster.sh failed ({proc.returncode}): {(proc.stdout + proc.stderr).strip()}"
            )
        cluster = LocalCluster(state_dir=state, conf=state / "slurm.conf")
        yield cluster
    finally:
        stop = subprocess.run(
            ["bash", str(SLURM_DIR / "stop_local_cluster.sh"), str(state)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if stop.returncode == 0 and not (state / "pids").exists():
            shutil.rmtree(state, ignore_errors=True)


def logged_value(run_dir: Path, name: str) -> float:
    """The last value of metric ``name`` that the CSV logger wrote into ``<run_dir>/csv/metrics.csv``:
    a second record of what the run logged, written apart from ``metrics.json``."""
    import csv

    with (Path(run_dir) / "csv" / "metrics.csv").open(newline="") as f:
        values = [row[name] for row in csv.DictReader(f) if row.get(name) not in (None, "")]
    assert values, f"{run_dir}/csv/metrics.csv: no {name} logged"
    return float(values[-1])


@dataclass
class SweepResult:
    """A finished SLURM multirun: its folder, its summary and its jobs in job-number order."""

    folder: Path
    summary: dict
    jobs: list[dict]

    def job_log(self, job: dict) -> str:
        """Everything submitit captured of one job's tasks (stdout of every rank)."""
        return "".join(p.read_text() for p in (self.folder / ".submitit" / job["job_id"]).glob("*.out"))

    def run_dir(self, job: dict) -> Path:
        return self.folder / job["job"]


def run_ddp_sweep(
    cluster: LocalCluster, tmp_path: Path, overrides: list[str], sweep: str, data_dir: Path | None = None
) -> SweepResult:
    """``python train.py -m`` through the submitit launcher: one SLURM job array with a job per value of
    ``sweep`` (``key=v1,v2,...``), each a 2-task DDP run (tasks per node = trainer.devices).

    Checks what every system's cluster sweep must show: every job done, one array, the job's own
    override, both DDP ranks started, and the summary's value equal to the job's monitored metric."""
    folder = tmp_path / "sweep"
    proc = cluster.run(
        sys.executable,
        str(PROJECT_ROOT / "train.py"),
        "-m",
        "hydra/launcher=slurm_cpu",
        "trainer=slurm_cpu",
        "trainer.devices=2",
        "hydra.launcher.timeout_min=15",
        "hydra.launcher.mem_gb=4",
        *overrides,
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.data_dir={data_dir or tmp_path / 'data'}",
        "trainer.max_epochs=1",
        sweep,
        f"hydra.sweep.dir={folder}",
        timeout=840,
    )
    key, _, values = sweep.partition("=")
    values = values.split(",")
    summary = json.loads((folder / "sweep_summary.json").read_text())
    assert summary["num_jobs"] == len(values) and summary["num_done"] == len(values), (
        proc.stdout[-3000:] + proc.stderr[-3000:]
    )
    result = SweepResult(folder, summary, sorted(summary["jobs"], key=lambda j: int(j["job"])))
    assert [next(o for o in j["overrides"] if o.startswith(f"{key}=")) for j in result.jobs] == [
        f"{key}={v}" for v in values
    ]
    ids = [re.fullmatch(r"(\d+)_(\d+)", j["job_id"] or "") for j in result.jobs]
    assert all(ids) and len({m.group(1) for m in ids}) == 1, [j["job_id"] for j in result.jobs]
    for job in result.jobs:
        log = result.job_log(job)
        assert "GLOBAL_RANK: 0, MEMBER: 1/2" in log and "GLOBAL_RANK: 1, MEMBER: 2/2" in log, log[-3000:]
        written = json.loads((result.run_dir(job) / "metrics.json").read_text())
        assert job["value"] == written["metrics"][written["monitor"]["metric"]]
    return result
