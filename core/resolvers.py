"""OmegaConf resolvers the configs use; importing ``core`` registers them."""

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


def register_resolvers() -> None:
    for name, fn in {
        "unique_run_id": unique_run_id,
        "project_root": lambda: str(PROJECT_ROOT),
    }.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
