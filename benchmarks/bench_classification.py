"""Lightning overhead: the classification task's training step through a Trainer against a plain
PyTorch loop on the same model, batches and optimizer, in one process.

    python benchmarks/bench_classification.py [--backbone tinynet_e --image-size 64 --batch-size 64]

Prints steps/s of each and the ratio Lightning / plain (target: within 3 %)."""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from tasks.classification.module import ImageClassificationTask


def plain_loop(task: ImageClassificationTask, batches: list) -> float:
    model, criterion = task.model, task.criterion
    optimizer = task.configure_optimizers()  # scheduler=None (constant): the optimizer alone
    model.train()
    start = time.perf_counter()
    for images, targets in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(images), targets)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


class _StepTimer(pl.Callback):
    """Times the fit loop from the first to the last training batch (excludes Trainer set-up)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.elapsed = time.perf_counter() - self.start


def lightning_loop(task: ImageClassificationTask, batches: list) -> float:
    timer = _StepTimer()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer],
    )
    trainer.fit(task, train_dataloaders=DataLoader(batches, batch_size=None, shuffle=False))
    return timer.elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tinynet_e")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    batches = [
        (torch.randn(args.batch_size, 3, args.image_size, args.image_size), torch.randint(0, 10, (args.batch_size,)))
        for _ in range(args.steps)
    ]
    base = ImageClassificationTask(
        args.backbone, 10, args.image_size, scheduler=None, optimizer={"opt": "adamw", "lr": 1e-3}
    )
    plain_loop(copy.deepcopy(base), batches[:3])  # warm-up (allocator, kernels)
    plain, light = [], []
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits both alike
        plain.append(plain_loop(copy.deepcopy(base), batches))
        light.append(lightning_loop(copy.deepcopy(base), batches))
    p, lt = statistics.median(plain), statistics.median(light)
    print(
        f"backbone={args.backbone} image_size={args.image_size} batch={args.batch_size} steps={args.steps} "
        f"threads={torch.get_num_threads()}"
    )
    print(f"plain PyTorch loop : {args.steps / p:8.2f} steps/s  ({args.steps * args.batch_size / p:8.1f} img/s)")
    print(f"Lightning Trainer  : {args.steps / lt:8.2f} steps/s  ({args.steps * args.batch_size / lt:8.1f} img/s)")
    print(f"time ratio Lightning / plain: {lt / p:.3f}  (overhead {100 * (lt / p - 1):+.1f} %)")


if __name__ == "__main__":
    main()
