"""The cluster environment of a SLURM job: Lightning's SLURMEnvironment, with the requeue done at a batch
boundary (``trainer.plugins`` in conf/trainer/slurm.yaml builds it with :func:`slurm_environment`).

On the requeue signal (SIGUSR1 by default, sent by SLURM ``--signal=USR1@<s>`` before the time limit,
or by ``scancel --signal=USR1``) the handler only raises a flag. :class:`RequeueAtBatchEnd` (a guard
every Trainer gets) reads it at the end of the next training batch on every rank (any rank's flag
counts), saves ``hpc_ckpt_<n>.ckpt`` in the run directory, rank 0 completes the attempt's logs and runs
``scontrol requeue <job>``, and the attempt exits (it must not go on to test and write its results).
Lightning's own handler does that work inside the signal handler, which deadlocks a multi-rank job:
the rank the signal interrupts waits in the checkpoint's barrier while another rank waits in a
gradient collective that can never complete (seen on the local cluster with 2 gloo ranks). The
requeued job keeps its job id, so the run directory (keyed on it) is the same and core.training
resumes from ``checkpoints/last.ckpt``.

Requeue must have exactly one owner (submitit #1709, Lightning #14610): submitit's launcher handles
``SUBMITIT_PREEMPT_SIGNAL`` (USR2 by default) and is configured never to receive it
(conf/hydra/launcher/slurm.yaml sends USR1); when both would handle the same signal, Lightning
silently leaves it to submitit, so :func:`slurm_environment` refuses that combination."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
from types import FrameType

import pytorch_lightning as pl
from lightning_fabric.plugins.environments import SLURMEnvironment

from core.loggers import finish_loggers

log = logging.getLogger(__name__)

SUBMITIT_SIGNAL_ENV = "SUBMITIT_PREEMPT_SIGNAL"


def _signal_named(name: str) -> signal.Signals:
    key = name.upper()
    key = key if key.startswith("SIG") else "SIG" + key
    try:
        return signal.Signals[key]
    except KeyError:
        raise ValueError(f"requeue_signal={name!r} is not a signal name (e.g. SIGUSR1, SIGUSR2)") from None


def slurm_environment(auto_requeue: bool = True, requeue_signal: str = "SIGUSR1") -> SLURMEnvironment:
    """Lightning's SLURM cluster environment for a job started by srun (one task per device).

    Raises if the process is not a SLURM task, or if submitit would also handle ``requeue_signal``."""
    if "SLURM_JOB_ID" not in os.environ or "SLURM_PROCID" not in os.environ:
        raise RuntimeError(
            "trainer=slurm / slurm_cpu is for processes started by SLURM (sbatch slurm/train_ddp.sbatch, "
            "srun, or python train.py -m hydra/launcher=slurm): SLURM_JOB_ID / SLURM_PROCID are not set. "
            "Use trainer=ddp or ddp_cpu outside SLURM."
        )
    sig = _signal_named(requeue_signal)
    submitit_sig = os.environ.get(SUBMITIT_SIGNAL_ENV)
    if auto_requeue and submitit_sig and _signal_named(submitit_sig) == sig:
        raise RuntimeError(
            f"{SUBMITIT_SIGNAL_ENV}={submitit_sig} makes submitit handle {sig.name}, the signal Lightning "
            "requeues on; requeue must have one owner. Unset it (submitit then uses USR2) or choose "
            "another trainer.plugins[0].requeue_signal."
        )
    return SLURMEnvironment(auto_requeue=auto_requeue, requeue_signal=sig)


def slurm_job_id() -> str:
    """The id ``scontrol requeue`` takes: ``<array job>_<task>`` for a task of a job array."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ["SLURM_JOB_ID"]
    if not re.fullmatch(r"[0-9_]+", job):
        raise RuntimeError(f"SLURM job id {job!r} is not a job id")
    return job


class RequeueAtBatchEnd(pl.Callback):
    """Requeue a SLURM job at the end of a training batch after its requeue signal (see the module doc).

    Active when the Trainer's cluster environment is a SLURMEnvironment with ``auto_requeue``. Its signal
    handler, installed before Lightning's, only sets a flag, so Lightning leaves the signal to it."""

    def __init__(self) -> None:
        self.signalled = False

    @staticmethod
    def environment(trainer: pl.Trainer) -> SLURMEnvironment | None:
        # where Lightning's signal connector reads it (a single-device strategy has no cluster_environment)
        env = trainer._accelerator_connector.cluster_environment
        return env if isinstance(env, SLURMEnvironment) and env.auto_requeue else None

    def _raise_flag(self, signum: int, frame: FrameType | None) -> None:
        self.signalled = True  # nothing else here: a collective inside a signal handler can deadlock

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        env = self.environment(trainer)
        if stage == "fit" and env is not None:
            signal.signal(env.requeue_signal, self._raise_flag)

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if self.environment(trainer) is None or not trainer.strategy.reduce_boolean_decision(self.signalled, all=False):
            return
        self.signalled = False
        trainer.save_checkpoint(trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir))
        requeued = False
        if trainer.is_global_zero:
            # Before the requeue: SLURM's SIGTERM reaches every process of the job, W&B's service included,
            # so the attempt's logs are flushed and its W&B run completed (marked preempting) first.
            for logger in trainer.loggers:
                logger.finalize("finished")
            finish_loggers(trainer, preempted=True)
            job = slurm_job_id()
            try:
                result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, check=False)
                requeued, problem = result.returncode == 0, result.stderr.strip()
            except OSError as err:  # no scontrol on this node
                problem = str(err)
            if requeued:
                log.info("Requeued SLURM job: %s", job)
            else:
                log.warning("Requeuing SLURM job %s failed: %s; training goes on", job, problem)
        if trainer.strategy.broadcast(requeued, src=0):
            # The job is back in the queue and its checkpoint saved: this attempt ends here. Going on (or
            # letting Lightning stop gracefully on the SIGTERM that follows) would test the model and write
            # metrics.json as if the run were done.
            logging.shutdown()
            os._exit(0)
