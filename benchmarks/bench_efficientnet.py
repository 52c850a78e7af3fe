"""Training throughput of EfficientNet-B0 at 224 px: through the task (Lightning Trainer, our
compound-scaled builder) versus timm's own ``efficientnet_b0`` in a plain PyTorch loop.

Both train on the same fixed batch with the same optimizer (RMSProp-TF) and loss, so the ratio is
the overhead of the task + Lightning + our builder. Prints img/s for each and the ratio.

    python benchmarks/bench_efficientnet.py                       # CPU, batch 8, 3 timed steps
    python benchmarks/bench_efficientnet.py --device cuda --batch-size 128 --steps 50 \
        --channels-last --bf16
"""

from __future__ import annotations

import argparse
import time

import pytorch_lightning as pl
import timm
import torch
from timm.optim import create_optimizer_v2
from torch.utils.data import DataLoader, Dataset

from core.registry import register_models
from tasks.classification.module import ImageClassificationTask

register_models()  # the compound_scaled_* timm models

OPTIMIZER = {"opt": "rmsproptf", "lr": 0.008, "momentum": 0.9, "eps": 0.001, "weight_decay": 1e-5}


class SameBatch(Dataset):
    """``length`` copies of one pre-built batch (the loader uses batch_size=None)."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, length: int) -> None:
        self.images, self.targets, self.length = images, targets, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        return self.images, self.targets


class StepTimer(pl.Callback):
    """Wall time from the start of step ``warmup`` to the end of the last step."""

    def __init__(self, warmup: int, sync) -> None:
        self.warmup, self.sync = warmup, sync
        self.start = self.end = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.sync()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.sync()
        self.end = time.perf_counter()


def plain_loop(args, images, targets, sync) -> float:
    model = timm.create_model("efficientnet_b0", num_classes=1000, drop_rate=0.2, drop_path_rate=0.2)
    model = model.to(args.device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = create_optimizer_v2(model, **OPTIMIZER)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    model.train()
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            sync()
            start = time.perf_counter()
        with torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.bf16):
            loss = criterion(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync()
    return args.steps * args.batch_size / (time.perf_counter() - start)


def through_task(args, images, targets, sync) -> float:
    task = ImageClassificationTask(
        backbone="compound_scaled_efficientnet",
        num_classes=1000,
        image_size=args.image_size,
        drop_rate=0.2,
        drop_path_rate=0.2,
        label_smoothing=0.1,
        optimizer=OPTIMIZER,
        scheduler=None,
        channels_last=args.channels_last,
    )
    timer = StepTimer(args.warmup, sync)
    accelerator = "gpu" if args.device.startswith("cuda") else "cpu"
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        max_steps=args.warmup + args.steps,
        precision="bf16-mixed" if args.bf16 else "32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    loader = DataLoader(SameBatch(images.cpu(), targets.cpu(), args.warmup + args.steps), batch_size=None)
    trainer.fit(task, train_dataloaders=loader)
    return args.steps * args.batch_size / (timer.end - timer.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=3, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    args = parser.parse_args()

    torch.manual_seed(0)
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=args.device)
    targets = torch.randint(0, 1000, (args.batch_size,), device=args.device)

    ours = sum(p.numel() for p in timm.create_model("compound_scaled_efficientnet").parameters())
    theirs = sum(p.numel() for p in timm.create_model("efficientnet_b0").parameters())
    print(f"parameters: task's B0 {ours:,}  timm efficientnet_b0 {theirs:,}")
    timm_ips = plain_loop(args, images, targets, sync)
    task_ips = through_task(args, images, targets, sync)
    where = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"EfficientNet-B0 {args.image_size}px training, batch {args.batch_size}, {args.steps} timed steps "
        f"on {where}{', channels_last' if args.channels_last else ''}{', bf16' if args.bf16 else ''}"
    )
    print(f"  timm plain loop : {timm_ips:8.2f} img/s")
    print(f"  through the task: {task_ips:8.2f} img/s")
    print(f"  ratio task / timm: {task_ips / timm_ips:.3f}")


if __name__ == "__main__":
    main()
