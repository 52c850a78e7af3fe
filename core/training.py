"""What train.py and eval.py do: build everything from the config, fit/test, write metrics.json."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from pytorch_lightning.callbacks import LearningRateMonitor
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from core.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


def instantiate_group(group: Optional[DictConfig]) -> list[Any]:
    """Instantiate every ``_target_`` entry of a config group such as ``callbacks`` or ``logger``."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if isinstance(node, DictConfig) and "_target_" in node]


def check_launch(cfg: DictConfig) -> None:
    """Refuse a Hydra multirun whose jobs would make Lightning spawn DDP processes itself.

    Lightning's launcher re-runs the script with Hydra's argv, and under ``-m`` each child would
    start a sweep of its own (Lightning #11300). On a cluster, srun / submitit start one process per
    device instead, which is allowed."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    devices = cfg.trainer.get("devices", 1)
    many = (isinstance(devices, int) and devices > 1) or cfg.trainer.get("num_nodes", 1) > 1
    launched_outside = "SLURM_NTASKS" in os.environ or "LOCAL_RANK" in os.environ
    if many and not launched_outside:
        raise RuntimeError(
            f"trainer.devices={devices} inside a multirun would make Lightning spawn processes that "
            "each start the sweep again. Run multi-device sweeps through the SLURM launcher "
            "(hydra/launcher=slurm, one task per device), or use trainer.devices=1 locally."
        )


def resume_checkpoint(cfg: DictConfig) -> Optional[str]:
    """The checkpoint fit() resumes from: an explicit path, or this run directory's last.ckpt."""
    last = Path(cfg.paths.output_dir) / LAST_CHECKPOINT
    requested = cfg.get("ckpt_path")
    if requested is None:
        return str(last) if last.exists() else None
    if requested == "last":
        if not last.exists():
            raise FileNotFoundError(
                f"ckpt_path=last: {last} does not exist. Pass the run_id of the run to resume "
                "(run_id=<folder name under runs/>) or a checkpoint path."
            )
        return str(last)
    if not Path(requested).exists():
        raise FileNotFoundError(f"ckpt_path={requested}: no such checkpoint file")
    return str(requested)


def log_run_config(cfg: DictConfig, trainer: pl.Trainer) -> None:
    """Write the resolved config into the run directory and send it to every logger (rank 0)."""
    if not trainer.is_global_zero:
        return
    resolved = OmegaConf.to_container(cfg, resolve=True)
    atomic_write_text(Path(cfg.paths.output_dir) / "config_resolved.yaml", OmegaConf.to_yaml(resolved))
    for logger in trainer.loggers:
        logger.log_hyperparams(resolved)


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for name, value in metrics.items():
        try:
            out[name] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def write_metrics(cfg: DictConfig, trainer: pl.Trainer, metrics: dict[str, float], extra: dict) -> None:
    if trainer.is_global_zero:
        record = {"monitor": OmegaConf.to_container(cfg.monitor), "metrics": metrics, **extra}
        atomic_write_json(Path(cfg.paths.output_dir) / "metrics.json", record)


def build_trainer(cfg: DictConfig, with_callbacks: bool = True) -> pl.Trainer:
    callbacks = instantiate_group(cfg.get("callbacks")) if with_callbacks else []
    loggers = instantiate_group(cfg.get("logger"))
    if not loggers:  # nothing to report learning rates to (logger=none): Lightning would refuse
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit and/or test the task on the data set; return the final metrics (also in metrics.json)."""
    check_launch(cfg)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)

    datamodule: pl.LightningDataModule = instantiate(cfg.data)
    task: pl.LightningModule = instantiate(cfg.task, _convert_="all")
    trainer = build_trainer(cfg)
    log_run_config(cfg, trainer)

    metrics: dict[str, float] = {}
    extra: dict[str, Any] = {}
    if cfg.get("train"):
        trainer.fit(task, datamodule=datamodule, ckpt_path=resume_checkpoint(cfg))
        metrics.update(_scalars(trainer.callback_metrics))
        if trainer.checkpoint_callback is not None:
            extra["best_checkpoint"] = trainer.checkpoint_callback.best_model_path or None
        last = Path(cfg.paths.output_dir) / LAST_CHECKPOINT
        extra["last_checkpoint"] = str(last) if last.exists() else None
    if cfg.get("test"):
        best = extra.get("best_checkpoint")
        if not cfg.get("train") or not best:
            best = None  # test the weights in memory (e.g. fast_dev_run saves no checkpoint)
        trainer.test(task, datamodule=datamodule, ckpt_path=best)
        metrics.update(_scalars(trainer.callback_metrics))
    write_metrics(cfg, trainer, metrics, extra)
    return metrics


def load_task(cfg: DictConfig) -> pl.LightningModule:
    """The task to evaluate: rebuilt from ``ckpt_path`` alone, or from its config when null."""
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path)
        if not path.exists():
            raise FileNotFoundError(f"ckpt_path={path}: no such checkpoint file")
        return get_class(cfg.task._target_).load_from_checkpoint(path, map_location="cpu")
    return instantiate(cfg.task, _convert_="all")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test a checkpoint on the data set's test split; write metrics.json and the task's outputs."""
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
    datamodule = instantiate(cfg.data)
    task = load_task(cfg)
    trainer = build_trainer(cfg, with_callbacks=False)
    log_run_config(cfg, trainer)
    trainer.test(task, datamodule=datamodule)
    metrics = _scalars(trainer.callback_metrics)
    write_metrics(cfg, trainer, metrics, {"checkpoint": cfg.get("ckpt_path")})
    return metrics


def monitored_value(cfg: DictConfig, metrics: dict[str, float]) -> Optional[float]:
    """The number a Hydra sweeper optimizes: ``monitor.metric`` from the final metrics."""
    name = cfg.monitor.metric
    if name not in metrics:
        log.warning("monitor.metric %r was not logged; logged: %s", name, sorted(metrics))
        return None
    return metrics[name]
