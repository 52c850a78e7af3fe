"""The W&B run of a job: its own id in a multirun (stable, so a resumed job continues it), and the
sweep id as its group."""

from __future__ import annotations

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from core.resolvers import job_run_id, sweep_group
from tests.conftest import compose_config


def test_single_run_keeps_the_run_id_and_no_group(tmp_path):
    cfg = compose_config("train", ["logger=wandb", "run_id=abc"], tmp_path / "run")
    assert (job_run_id("abc"), sweep_group("abc")) == ("abc", "")
    assert (cfg.logger.wandb.id, cfg.logger.wandb.group) == ("abc", "")


def test_multirun_job_gets_run_id_plus_job_number_grouped_by_the_sweep(tmp_path):
    cfg = compose_config("train", ["logger=wandb", "run_id=sweep7"], tmp_path / "run")
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.mode = "MULTIRUN"
        cfg.hydra.job.num = 3
    HydraConfig.instance().set_config(cfg)
    assert (cfg.logger.wandb.id, cfg.logger.wandb.group) == ("sweep7-3", "sweep7")
    assert cfg.logger.wandb.name.endswith("-sweep7-3")
    # the same job resolved again (a requeue, a resume) names the same W&B run
    HydraConfig.instance().set_config(cfg)
    assert job_run_id("sweep7") == "sweep7-3"
