"""The cluster configs without a cluster: launcher resources follow the trainer, every place that
names the requeue signal names the same one, and the sweep summary reads job folders."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import submitit
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import OmegaConf

from core.cluster import slurm_environment
from core.io import atomic_write_json
from core.resolvers import PROJECT_ROOT
from core.sweeps import (
    SUMMARY_CSV,
    SUMMARY_JSON,
    format_table,
    summarize,
    write_summary,
)

SBATCH_TEMPLATE = PROJECT_ROOT / "slurm" / "train_ddp.sbatch"


def compose_train(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


class RenderOnlySlurmExecutor(submitit.SlurmExecutor):
    """submitit's own SLURM executor, allowed to render sbatch files where `srun` is absent.

    Its constructor refuses to run without `srun`; rendering needs no cluster, so the default suite
    checks the launcher configs on any machine (submitting stays with the `slurm`-marked tests)."""

    @classmethod
    def affinity(cls) -> int:
        return 1


def sbatch_text(launcher_cfg, folder: Path) -> str:
    """The sbatch file submitit writes for these launcher settings (as the launcher maps them)."""
    launcher = instantiate(launcher_cfg)
    params = {k: v for k, v in launcher.params.items() if v is not None}  # None means unset
    executor = RenderOnlySlurmExecutor(folder=folder, max_num_timeout=params.pop("max_num_timeout"))
    params.pop("submitit_folder")
    generic_names = submitit.AutoExecutor._typed_parameters()
    generic = executor._convert_parameters({k: params.pop(k) for k in list(params) if k in generic_names})
    executor.update_parameters(**generic, **params)
    return executor._make_submission_file_text("python -m submitit.core._submit x", "uid")


def test_slurm_launcher_runs_one_task_per_device(tmp_path):
    cfg = compose_train(
        [
            "hydra/launcher=slurm",
            "trainer=slurm",
            "trainer.devices=4",
            "trainer.num_nodes=2",
            "hydra.launcher.partition=gpu",
            f"hydra.sweep.dir={tmp_path}",
        ]
    )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert (launcher["tasks_per_node"], launcher["nodes"], launcher["gpus_per_node"]) == (4, 2, 4)
    text = sbatch_text(cfg.hydra.launcher, tmp_path)
    for line in (
        "--ntasks-per-node=4",
        "--nodes=2",
        "--gpus-per-node=4",
        "--partition=gpu",
        "--signal=USR1@120",
        "--requeue",
        "--open-mode=append",
    ):
        assert f"#SBATCH {line}\n" in text, line
    assert "USR2" not in text  # submitit's own preemption signal is never sent: Lightning owns requeue


def test_slurm_cpu_launcher_asks_for_no_gpus(tmp_path):
    cfg = compose_train(
        [
            "hydra/launcher=slurm_cpu",
            "trainer=slurm_cpu",
            "trainer.devices=2",
            f"hydra.sweep.dir={tmp_path}",
        ]
    )
    text = sbatch_text(cfg.hydra.launcher, tmp_path)
    assert "#SBATCH --ntasks-per-node=2\n" in text and "--cpus-per-task=1\n" in text
    assert "gpus" not in text and "gres" not in text


def test_local_launcher_is_one_process_per_job(tmp_path):
    cfg = compose_train(["hydra/launcher=local", f"hydra.sweep.dir={tmp_path}"])
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "LocalLauncher"
    assert launcher.params["tasks_per_node"] == 1 and launcher.params["gpus_per_node"] is None


def _template_signal() -> str:
    match = re.search(r"^#SBATCH --signal=(?:B:)?(\w+)@(\d+)$", SBATCH_TEMPLATE.read_text(), re.MULTILINE)
    assert match, "slurm/train_ddp.sbatch has no #SBATCH --signal line"
    return match.group(1)


@pytest.mark.parametrize("trainer", ["slurm", "slurm_cpu"])
def test_every_requeue_setting_names_the_same_signal(trainer, tmp_path):
    """The signal SLURM sends (sbatch template, launcher) is the one Lightning requeues on."""
    cfg = compose_train([f"trainer={trainer}", "hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path}"])
    plugin = cfg.trainer.plugins[0]
    assert plugin._target_ == "core.cluster.slurm_environment" and plugin.auto_requeue is True
    lightning = signal.Signals[plugin.requeue_signal]
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)["additional_parameters"]["signal"]
    assert signal.Signals["SIG" + launcher.split("@")[0]] == lightning
    assert signal.Signals["SIG" + _template_signal()] == lightning
    assert "#SBATCH --requeue" in SBATCH_TEMPLATE.read_text()


SLURM_TASK = {
    "SLURM_JOB_ID": "41",
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "0",
    "SLURM_NTASKS": "2",
    "SLURM_NTASKS_PER_NODE": "2",
    "SLURM_JOB_NAME": "train",
    "SLURM_NODELIST": "vm",
    "SLURM_JOB_NUM_NODES": "1",
}


def test_slurm_environment_from_the_trainer_config(monkeypatch, tmp_path):
    for key, value in SLURM_TASK.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    cfg = compose_train(["trainer=slurm_cpu", f"hydra.sweep.dir={tmp_path}"])
    env = instantiate(cfg.trainer.plugins[0])
    assert isinstance(env, SLURMEnvironment)
    assert env.auto_requeue and env.requeue_signal == signal.SIGUSR1
    assert (env.global_rank(), env.world_size(), env.local_rank()) == (1, 2, 1)


def test_slurm_environment_refuses_two_requeue_owners(monkeypatch):
    for key, value in SLURM_TASK.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR1")
    with pytest.raises(RuntimeError, match="requeue must have one owner"):
        slurm_environment(requeue_signal="SIGUSR1")
    assert slurm_environment(requeue_signal="USR2").requeue_signal == signal.SIGUSR2


def test_slurm_environment_outside_slurm_says_so(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    with pytest.raises(RuntimeError, match="trainer=ddp or ddp_cpu outside SLURM"):
        slurm_environment()
    monkeypatch.setenv("SLURM_JOB_ID", "1")
    monkeypatch.setenv("SLURM_PROCID", "0")
    with pytest.raises(ValueError, match="not a signal name"):
        slurm_environment(requeue_signal="SIGNOPE")


def test_sbatch_template_is_valid_bash():
    subprocess.run(["bash", "-n", str(SBATCH_TEMPLATE)], check=True)


# --- sweep summary -------------------------------------------------------------------------------------


def make_job(
    sweep: Path,
    num: int,
    job_id: str,
    overrides: list[str],
    metrics: dict | None,
    mode: str = "max",
):
    folder = sweep / str(num)
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    (folder / ".hydra" / "hydra.yaml").write_text(OmegaConf.to_yaml({"hydra": {"job": {"id": job_id, "num": num}}}))
    if metrics is not None:
        atomic_write_json(
            folder / "metrics.json",
            {
                "monitor": {"metric": "val/loss", "mode": mode},
                "metrics": metrics,
                "best_checkpoint": str(folder / "checkpoints" / "best.ckpt"),
            },
        )


def test_summary_lists_every_job_and_the_best_by_its_mode(tmp_path):
    sweep = tmp_path / "sweep"
    make_job(sweep, 0, "7_0", ["lr=0.1"], {"val/loss": 0.5, "test/acc": 0.7}, mode="min")
    make_job(sweep, 1, "7_1", ["lr=0.01"], {"val/loss": 0.25, "test/acc": 0.8}, mode="min")
    make_job(sweep, 2, "7_2", ["lr=0.001"], None)  # still running or failed: no metrics.json
    make_job(sweep, 10, "7_10", ["lr=1.0"], {"val/loss": float("nan")}, mode="min")
    (sweep / ".submitit").mkdir()  # not a job folder
    summary = write_summary([sweep])
    assert [j["job"] for j in summary["jobs"]] == ["0", "1", "2", "10"]
    assert [j["status"] for j in summary["jobs"]] == ["done", "done", "unfinished", "done"]
    assert (summary["num_jobs"], summary["num_done"]) == (4, 3)
    assert summary["best"]["job"] == "1" and summary["best"]["job_id"] == "7_1" and summary["best"]["value"] == 0.25
    written = json.loads((sweep / SUMMARY_JSON).read_text())
    assert written["best"]["overrides"] == ["lr=0.01"]
    assert written["best"]["best_checkpoint"] == str((sweep / "1" / "checkpoints" / "best.ckpt").resolve())
    rows = (sweep / SUMMARY_CSV).read_text().splitlines()
    assert rows[0] == "job,job_id,status,overrides,monitor,value,test/acc,val/loss"
    assert rows[2] == "1,7_1,done,lr=0.01,val/loss,0.25,0.8,0.25"
    assert rows[3].startswith("2,7_2,unfinished,lr=0.001,,,")


def test_summary_of_max_mode_and_of_several_folders(tmp_path):
    make_job(tmp_path / "a", 0, "3_0", ["task=x", "seed=1"], {"val/loss": 0.2}, mode="max")
    make_job(tmp_path / "b", 1, "3_1", ["task=y", "seed=1"], {"val/loss": 0.9}, mode="max")
    summary = summarize([tmp_path / "a", tmp_path / "b"])
    assert summary["best"]["job"] == "1" and summary["num_jobs"] == 2
    table = format_table(summary).splitlines()
    assert table[1].split() == [
        "0",
        "3_0",
        "done",
        "0.2000",
        "task=x",
    ]  # only what the sweep varied
    assert table[-1] == "2/2 jobs done; best: job 1 (val/loss=0.9000)"


def test_summary_of_an_empty_folder_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no job folders"):
        summarize([tmp_path])
    out = subprocess.run(
        [sys.executable, "-m", "core.sweeps", str(tmp_path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0 and "no job folders" in out.stderr


@pytest.mark.slow
def test_local_launcher_sweep_into_the_default_sweep_folder(tmp_path):
    """A sweep on the laptop launcher, its folder named from the task and data choices (resolved in
    the launching process thanks to SweepSummary), summarized when the jobs are back."""
    from tests.helpers import run_entry

    run_entry(
        "train.py",
        [
            "-m",
            "hydra/launcher=local",
            "trainer=debug",
            "hydra.launcher.timeout_min=10",
            "++hydra.callbacks.sweep_summary._target_=core.sweeps.SweepSummary",
            "data.generator.train_per_class=12",
            "data.generator.val_per_class=4",
            "data.generator.test_per_class=4",
            "data.image_size=32",
            "data.num_workers=0",
            "data.batch_size=16",
            "task.backbone=test_efficientnet",
            "logger=csv",
            f"paths.log_dir={tmp_path / 'logs'}",
            f"paths.data_dir={tmp_path / 'data'}",
            "seed=1,2",
        ],
        timeout=600,
    )
    sweep = next((tmp_path / "logs" / "classification-shapes" / "multiruns").iterdir())
    summary = json.loads((sweep / SUMMARY_JSON).read_text())
    assert (summary["num_jobs"], summary["num_done"]) == (2, 2)
    assert [o[-1] for o in (j["overrides"] for j in summary["jobs"])] == ["seed=1", "seed=2"]
    assert all((sweep / ".submitit" / j["job_id"]).is_dir() for j in summary["jobs"])


def test_a_job_error_survives_the_trip_back_from_the_cluster():
    """submitit pickles a failed job's exception; a DataFormatError must unpickle with its fields
    (it once failed to, hiding the job's real error behind a TypeError in the launcher)."""
    import pickle

    from core.data import DataFormatError

    err = pickle.loads(pickle.dumps(DataFormatError("/data/gt.csv", "expected 4 columns", 7)))
    assert str(err) == "/data/gt.csv:7: expected 4 columns"
    assert (err.path, err.problem, err.line) == (Path("/data/gt.csv"), "expected 4 columns", 7)
