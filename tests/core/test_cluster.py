"""The SLURM requeue signal is acted on at a batch end, not inside the signal handler (where a multi-rank
job deadlocks): a real Trainer, a real signal, the hpc checkpoint of the batch that was running."""

from __future__ import annotations

import logging
import os
import signal

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from core.cluster import RequeueAtBatchEnd, slurm_environment
from core.guards import guards

SLURM_TASK = {
    "SLURM_JOB_ID": "4242",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
    "SLURM_NTASKS": "1",
    "SLURM_NTASKS_PER_NODE": "1",
    "SLURM_JOB_NAME": "train",
    "SLURM_NODELIST": "localhost",
    "SLURM_JOB_NUM_NODES": "1",
}


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class SignalDuringBatch(pl.Callback):
    """Sends the requeue signal to this process while batch ``at`` runs, and records the handler."""

    def __init__(self, at: int) -> None:
        self.at, self.handler = at, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.at:
            self.handler = signal.getsignal(signal.SIGUSR1)
            os.kill(os.getpid(), signal.SIGUSR1)


def test_the_requeue_signal_is_handled_at_the_end_of_the_running_batch(tmp_path, monkeypatch, caplog):
    for key, value in SLURM_TASK.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no scontrol: the requeue fails, and training goes on
    previous = signal.getsignal(signal.SIGUSR1)
    sender = SignalDuringBatch(at=2)
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        plugins=[slurm_environment(requeue_signal="SIGUSR1")],
        callbacks=[*guards(), sender],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    data = DataLoader(TensorDataset(torch.randn(16, 2)), batch_size=2)
    with caplog.at_level(logging.WARNING, logger="core.cluster"):
        trainer.fit(Tiny(), data)
    signal.signal(signal.SIGUSR1, previous)

    # our flag handler, not Lightning's checkpoint-saving one, received the signal
    requeue = next(c for c in trainer.callbacks if isinstance(c, RequeueAtBatchEnd))
    assert sender.handler == requeue._raise_flag
    # the hpc checkpoint holds the state after the batch the signal interrupted (batch 2: 3 steps)
    (saved,) = tmp_path.glob("hpc_ckpt_*.ckpt")
    assert torch.load(saved, weights_only=True)["global_step"] == 3
    assert "Requeuing SLURM job 4242 failed" in caplog.text
    assert trainer.global_step == 8  # no scontrol: the run went on to the end of its epoch
