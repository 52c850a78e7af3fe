"""OmegaConf resolvers the configs use, registered by :func:`register_resolvers`.

Importing ``core`` or this module registers nothing. ``register_resolvers()`` is called where configs
are composed: the entry points, tests/conftest.py, and ``core.training`` at import (a SLURM job
unpickles the entry point's ``main`` by value, so importing ``core.training`` is the one step that
runs there before its config is resolved)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RUN_ID_ENV = "VISIONLAB_RUN_ID"


def unique_run_id() -> str:
    """A run id that is unique and stable for the life of a job.

    Under SLURM it is the job id (plus the array index), which a requeued job keeps, so it finds its
    own run directory and resumes from it (template #146). Elsewhere it is a timestamp plus a short
    uuid, so runs started in the same second never collide (template #511). The id is stored in the
    environment so that DDP ranks launched by this process resolve the same id."""
    if RUN_ID_ENV not in os.environ:
        job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
        if job:
            task = os.environ.get("SLURM_ARRAY_TASK_ID")
            run_id = f"slurm{job}" + (f"_{task}" if task else "")
        else:
            run_id = time.strftime("%Y-%m-%d_%H-%M-%S") + "_" + uuid.uuid4().hex[:6]
        os.environ[RUN_ID_ENV] = run_id
    return os.environ[RUN_ID_ENV]


def _multirun_job_num() -> int | None:
    """This job's number within a multirun (any launcher), or None outside a multirun."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return int(hydra_cfg.job.num)


def job_run_id(run_id: str) -> str:
    """The id of one job's own experiment-logger run (W&B ``id``): ``run_id`` for a single run,
    ``<run_id>-<job num>`` for a job of a multirun, whose jobs share ``run_id`` (the sweep id).
    Stable across a requeue or a resumed run, so the job continues its own W&B run."""
    num = _multirun_job_num()
    return str(run_id) if num is None else f"{run_id}-{num}"


def sweep_group(run_id: str) -> str:
    """The W&B ``group`` of a job: the sweep id (``run_id``) in a multirun, empty for a single run."""
    return str(run_id) if _multirun_job_num() is not None else ""


def register_resolvers() -> None:
    from core.registry import RESOLVERS, lazy_function

    resolvers = {
        "unique_run_id": unique_run_id,
        "project_root": lambda: str(PROJECT_ROOT),
        "job_run_id": job_run_id,
        "sweep_group": sweep_group,
    }
    resolvers.update({name: lazy_function(target) for name, target in RESOLVERS.items()})
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
