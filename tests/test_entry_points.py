"""train.py / eval.py as a user runs them: sweeps, DDP on CPU, a killed run that resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.resolvers import PROJECT_ROOT
from tests.helpers import read_metrics, read_wandb_run, read_wandb_run_info, run_entry


@pytest.fixture
def tiny(small_data) -> list[str]:
    """The small shapes data set and the CSV logger."""
    return [*small_data("shapes"), "logger=csv"]


def paths(tmp_path: Path, data_dir: Path) -> list[str]:
    return [f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={data_dir}"]


def test_basic_sweep_runs_every_job_into_the_sweep_folder(tmp_path, shared_data_dir, tiny):
    """No hydra.sweep.dir given: the sweep lands in logs/<task>-<data>/multiruns/<run id>/."""
    run_entry(
        "train.py", ["-m", *tiny, *paths(tmp_path, shared_data_dir), "trainer=debug", "task.optimizer.lr=0.001,0.01"]
    )
    (sweep,) = (tmp_path / "logs").glob("classification-shapes/multiruns/*")
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    assert all("test/acc_top1" in read_metrics(j)["metrics"] for j in jobs)
    configs = [(j / "config_resolved.yaml").read_text() for j in jobs]
    assert "lr: 0.001" in configs[0] and "lr: 0.01" in configs[1]
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert len(summary["jobs"]) == 2


def test_every_job_of_a_multirun_gets_its_own_finished_wandb_run(tmp_path, shared_data_dir, tiny):
    """2 jobs, logger=wandb: two offline runs with ids <sweep id>-<job>, grouped by the sweep id,
    each finished and holding its own job's metrics."""
    tiny_wandb = [o for o in tiny if not o.startswith("logger=")] + ["logger=wandb"]
    run_entry(
        "train.py",
        [
            "-m",
            *tiny_wandb,
            *paths(tmp_path, shared_data_dir),
            "run_id=wbsweep",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "test=false",
            "callbacks=model_checkpoint",
            "task.optimizer.lr=0.001,0.01",
        ],
    )
    sweep = tmp_path / "logs" / "classification-shapes" / "multiruns" / "wbsweep"
    seen = set()
    for job, lr in (("0", 0.001), ("1", 0.01)):
        files = list((sweep / job / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(files) == 1, f"job {job}: {files}"
        info = read_wandb_run_info(files[0])
        assert info["id"] == f"wbsweep-{job}" and info["group"] == "wbsweep"
        assert info["exit_code"] == 0, f"job {job}: the W&B run was not finished"
        history, config = read_wandb_run(files[0])
        metrics = read_metrics(sweep / job)["metrics"]
        assert history["val/acc_top1"][-1] == pytest.approx(metrics["val/acc_top1"])
        assert config["task"]["optimizer"]["lr"] == lr
        seen.add(info["id"])
    assert len(seen) == 2


def test_optuna_search_space_names_real_config_keys(cfg_train):
    """Every parameter the Optuna search varies is a key of the composed config (Hydra's sweeper
    itself is Hydra's to test)."""
    from omegaconf import OmegaConf

    cfg = cfg_train(["hparams_search=classification_optuna"])
    params = cfg.hydra.sweeper.params
    assert params, "the search space is empty"
    for key in params:
        assert OmegaConf.select(cfg, key, throw_on_missing=False) is not None, key
    assert cfg.hydra.sweeper.direction == ("maximize" if cfg.monitor.mode == "max" else "minimize")


def test_multirun_refuses_lightning_spawned_ddp(tmp_path, shared_data_dir, tiny):
    with pytest.raises(AssertionError, match="would make Lightning spawn processes"):
        run_entry(
            "train.py",
            [
                "-m",
                *tiny,
                *paths(tmp_path, shared_data_dir),
                "trainer=ddp_cpu",
                "trainer.fast_dev_run=true",
                f"hydra.sweep.dir={tmp_path / 's'}",
                "seed=1,2",
            ],
        )


@pytest.mark.slow
def test_ddp_cpu_metric_equals_single_process(tmp_path, shared_data_dir, tiny):
    """2 gloo processes evaluate the same checkpoint to the same accuracy as one process."""
    common = [*tiny, *paths(tmp_path, shared_data_dir)]
    run_entry("train.py", [*common, "trainer.max_epochs=1", "test=false", "run_id=ddp_src"])
    ckpt = next((tmp_path / "logs").glob("*/runs/ddp_src/checkpoints/last.ckpt"))
    single = tmp_path / "single"
    double = tmp_path / "double"
    run_entry("eval.py", [*common, f"ckpt_path={ckpt}", f"hydra.run.dir={single}"])
    out = run_entry("eval.py", [*common, f"ckpt_path={ckpt}", f"hydra.run.dir={double}", "trainer=ddp_cpu"])
    assert "distributed_backend=gloo" in out.stdout + out.stderr
    a, b = read_metrics(single)["metrics"], read_metrics(double)["metrics"]
    assert b["test/acc_top1"] == pytest.approx(a["test/acc_top1"], abs=1e-7)
    assert b["test/acc_top5"] == pytest.approx(a["test/acc_top5"], abs=1e-7)
    # Both ranks' predictions were gathered into one file.
    assert len((double / "predictions.csv").read_text().splitlines()) - 1 == 40


@pytest.mark.slow
def test_killed_run_resumes_from_last_checkpoint(tmp_path, shared_data_dir, tiny):
    """SIGKILL in the middle of epoch 2, run again with the same run_id: training completes all
    epochs from the step checkpoint; the checkpoint left by the killed run is loadable."""
    args = [
        *tiny,
        *paths(tmp_path, shared_data_dir),
        "run_id=killed",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=6",
        "test=false",
        "callbacks=model_checkpoint",
        "callbacks.last_checkpoint.every_n_train_steps=2",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("VISIONLAB_RUN_ID", None)
    proc = subprocess.Popen(
        [sys.executable, "train.py", *args],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = None
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            found = list((tmp_path / "logs").glob("*/runs/killed/checkpoints/last.ckpt"))
            if found:
                last = found[0]
                try:
                    state = torch.load(last, weights_only=True)
                except Exception:  # a rename in progress is fine; a torn file is not (checked below)
                    continue
                if state["global_step"] >= 8:  # inside epoch 2 (steps 7..12)
                    break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert last is not None, "no checkpoint appeared before the deadline"
    killed_state = torch.load(last, weights_only=True)
    assert 8 <= killed_state["global_step"] < 18
    run_entry("train.py", args)
    final = torch.load(last, weights_only=True)
    # Saved at the last step of the third epoch: all 3 x 6 steps were taken, none twice.
    assert final["epoch"] == 2 and final["global_step"] == 18
    metrics = read_metrics(last.parent.parent)["metrics"]
    assert "val/acc_top1" in metrics
