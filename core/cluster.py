"""The cluster environment of a SLURM job: Lightning's SLURMEnvironment owns requeueing, with its
signal named (``trainer.plugins`` in conf/trainer/slurm.yaml builds it with :func:`slurm_environment`).

On the requeue signal (SIGUSR1 by default, sent by SLURM ``--signal=USR1@<s>`` before the time limit,
or by ``scancel --signal=USR1``), Lightning saves ``hpc_ckpt_<n>.ckpt`` in the run directory and rank 0
runs ``scontrol requeue $SLURM_JOB_ID``. The requeued job keeps its job id, so the run directory
(keyed on it) is the same and core.training resumes from ``checkpoints/last.ckpt``.

Requeue must have exactly one owner (submitit #1709, Lightning #14610): submitit's launcher handles
``SUBMITIT_PREEMPT_SIGNAL`` (USR2 by default) and is configured never to receive it
(conf/hydra/launcher/slurm.yaml sends USR1); when both would handle the same signal, Lightning
silently leaves it to submitit, so :func:`slurm_environment` refuses that combination."""

from __future__ import annotations

import os
import signal

from lightning_fabric.plugins.environments import SLURMEnvironment

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
