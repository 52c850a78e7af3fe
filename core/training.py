"""What train.py and eval.py do: build everything from the config, fit/test, write metrics.json."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.plugins import CheckpointIO

from core.checkpoint import URL_SCHEME, AtomicCheckpointIO, read_checkpoint
from core.checkpoint import load_task as load_checkpoint_task
from core.config_check import check_config_types
from core.guards import guards
from core.io import atomic_write_json, atomic_write_text, remove_stale_temporaries
from core.loggers import finish_loggers
from core.resolvers import register_resolvers

# A SLURM job (hydra-submitit-launcher) unpickles the entry point's main() by value, so the entry
# point's own register_resolvers() never runs there: importing this module while unpickling is
# what registers the resolvers before the job's config is resolved.
register_resolvers()

log = logging.getLogger(__name__)

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
RUN_CONFIG = "config_resolved.yaml"
# The config groups that define a run's model and data: a run directory holds one such run.
RUN_DEFINING_KEYS = ("task", "data")
# Keys that may differ between attempts of one run (they change speed, not results).
RUN_NEUTRAL_KEYS = {"data.num_workers"}


class RunMismatchError(RuntimeError):
    """The run directory belongs to a run with another model or data config."""


def instantiate_group(group: DictConfig | None) -> list[Any]:
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


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """The checkpoint fit() resumes from: an explicit path, or this run directory's last.ckpt."""
    last = Path(cfg.paths.output_dir) / LAST_CHECKPOINT
    requested = cfg.get("ckpt_path")
    if requested is None:
        chosen = last if last.exists() else None
    elif requested == "last":
        if not last.exists():
            raise FileNotFoundError(
                f"ckpt_path=last: {last} does not exist. Pass the run_id of the run to resume "
                "(run_id=<folder name under runs/>) or a checkpoint path."
            )
        chosen = last
    elif not Path(requested).exists():
        raise FileNotFoundError(f"ckpt_path={requested}: no such checkpoint file")
    else:
        chosen = Path(requested)
    if chosen is None:
        return None
    read_checkpoint(chosen, get_class(cfg.task._target_))  # whole, and saved by this task
    return str(chosen)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}


def run_config_difference(previous: dict, current: dict) -> list[str]:
    """``key: there -> here`` for every run-defining key whose value differs."""
    old = {k: v for g in RUN_DEFINING_KEYS for k, v in _flatten(previous.get(g) or {}, g).items()}
    new = {k: v for g in RUN_DEFINING_KEYS for k, v in _flatten(current.get(g) or {}, g).items()}
    missing = object()
    return [
        f"{key}: {old.get(key, '<unset>')!s} there, {new.get(key, '<unset>')!s} here"
        for key in sorted(set(old) | set(new))
        if key not in RUN_NEUTRAL_KEYS and old.get(key, missing) != new.get(key, missing)
    ]


def check_same_run(cfg: DictConfig) -> None:
    """Refuse to train in a run directory that holds another run (its config differs in the keys
    that define the model and data). Two jobs of one SLURM allocation share ``SLURM_JOB_ID`` and so
    the run directory; without this one would resume, or overwrite, the other's checkpoints."""
    previous_file = Path(cfg.paths.output_dir) / RUN_CONFIG
    if not previous_file.exists():
        return
    previous = OmegaConf.to_container(OmegaConf.load(previous_file), resolve=False)
    current = {g: OmegaConf.to_container(cfg[g], resolve=True) for g in RUN_DEFINING_KEYS if g in cfg}
    difference = run_config_difference(previous, current)
    if difference:
        shown = "; ".join(difference[:5]) + (f"; and {len(difference) - 5} more" if len(difference) > 5 else "")
        slurm, step = os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_STEP_ID")
        why = f" (both runs have SLURM_JOB_ID={slurm})" if slurm else ""
        example = f"run_id=slurm{slurm}_step{step}" if slurm and step else "run_id=<new id>"
        raise RunMismatchError(
            f"{cfg.paths.output_dir} holds another run{why} whose config differs: {shown}. Refusing to "
            f"resume or overwrite it: give this run its own folder ({example})."
        )


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


def data_report(datamodule: Any) -> dict[str, Any]:
    """``{"data_report": ...}`` when the DataModule reports what it did to its data (a plain dict
    ``data_report``, e.g. annotations clipped or dropped), for metrics.json; else nothing."""
    report = getattr(datamodule, "data_report", None)
    return {"data_report": report} if report else {}


def write_metrics(cfg: DictConfig, trainer: pl.Trainer, metrics: dict[str, float], extra: dict) -> None:
    if trainer.is_global_zero:
        record = {"monitor": OmegaConf.to_container(cfg.monitor), "metrics": metrics, **extra}
        atomic_write_json(Path(cfg.paths.output_dir) / "metrics.json", record)


def build_trainer(cfg: DictConfig, with_callbacks: bool = True) -> pl.Trainer:
    """The Trainer of the config, plus what every run gets: atomic checkpoint writes and the
    core.guards checks (finite loss, class count / feature width, task stamp in checkpoints)."""
    callbacks = instantiate_group(cfg.get("callbacks")) if with_callbacks else []
    loggers = instantiate_group(cfg.get("logger"))
    if not loggers:  # nothing to report learning rates to (logger=none): Lightning would refuse
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    plugins = [instantiate(p) for p in (cfg.trainer.get("plugins") or [])]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    return instantiate(cfg.trainer, callbacks=[*guards(), *callbacks], logger=loggers or False, plugins=plugins)


def seed_run(cfg: DictConfig) -> None:
    """Seed Python, NumPy, torch and the DataLoader workers from ``cfg.seed`` (nothing when it is null):
    the one seeding rule of every entry point, so a run and its data order repeat."""
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit and/or test the task on the data set; return the final metrics (also in metrics.json)."""
    check_launch(cfg)
    check_config_types(cfg)
    seed_run(cfg)
    Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
    check_same_run(cfg)
    if int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0:
        remove_stale_temporaries(cfg.paths.output_dir, recursive=True)

    datamodule: pl.LightningDataModule = instantiate(cfg.data)
    task: pl.LightningModule = instantiate(cfg.task, _convert_="all")
    trainer = build_trainer(cfg)
    try:
        metrics = _fit_and_test(cfg, trainer, datamodule, task)
    except BaseException:
        finish_loggers(trainer, failed=True)
        raise
    finish_loggers(trainer)
    return metrics


def _fit_and_test(
    cfg: DictConfig, trainer: pl.Trainer, datamodule: pl.LightningDataModule, task: pl.LightningModule
) -> dict[str, float]:
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
    write_metrics(cfg, trainer, metrics, {**extra, **data_report(datamodule)})
    return metrics


def load_task(cfg: DictConfig) -> pl.LightningModule:
    """The task to evaluate: rebuilt from ``ckpt_path`` alone, or from its config when null."""
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path)
        if not URL_SCHEME.match(str(cfg.ckpt_path)) and not path.exists():
            raise FileNotFoundError(f"ckpt_path={path}: no such checkpoint file")
        return load_checkpoint_task(path, get_class(cfg.task._target_))  # a URL is refused there
    return instantiate(cfg.task, _convert_="all")


def require_ckpt_path(cfg: DictConfig) -> None:
    """eval.py scores a checkpoint: leaving ``ckpt_path`` out is an error, not an untrained model."""
    if OmegaConf.is_missing(cfg, "ckpt_path") or "ckpt_path" not in cfg:
        raise ValueError(
            "eval.py needs the checkpoint to score: pass ckpt_path=<file>.ckpt. A task that builds "
            "itself from other checkpoints (task=talnet_fusion with task.stream_checkpoints.*) "
            "takes ckpt_path=null explicitly."
        )


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test a checkpoint on the data set's test split; write metrics.json and the task's outputs."""
    require_ckpt_path(cfg)
    check_config_types(cfg)
    seed_run(cfg)
    Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
    datamodule = instantiate(cfg.data)
    task = load_task(cfg)
    trainer = build_trainer(cfg, with_callbacks=False)
    try:
        log_run_config(cfg, trainer)
        trainer.test(task, datamodule=datamodule)
        metrics = _scalars(trainer.callback_metrics)
        write_metrics(cfg, trainer, metrics, {"checkpoint": cfg.get("ckpt_path"), **data_report(datamodule)})
    except BaseException:
        finish_loggers(trainer, failed=True)
        raise
    finish_loggers(trainer)
    return metrics


def monitored_value(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """The number a Hydra sweeper optimizes: ``monitor.metric`` from the final metrics."""
    name = cfg.monitor.metric
    if name not in metrics:
        log.warning("monitor.metric %r was not logged; logged: %s", name, sorted(metrics))
        return None
    return metrics[name]
