"""Parent-class AP of the Open Images detector, softmax vs sigmoid classifier, with the prediction
expansion off and on, on the generated copy's validation split (docs/openimages.md).

    python benchmarks/bench_openimages_parent_ap.py --epochs 8 --root /tmp/oi_parent
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np
import pytorch_lightning as pl
import torch

from datamodules.openimages import OpenImagesDetectionDataModule
from datamodules.synthetic.openimages import generate_openimages
from tasks.openimages.detection.module import OpenImagesDetectionTask


def validation_ap(task: OpenImagesDetectionTask, dm, expand: bool) -> dict[int, float]:
    """Per-class AP on the validation split with ``expand_predictions`` set to ``expand``."""
    task.hparams.expand_predictions = expand
    task.val_map.reset()
    task.eval()
    with torch.inference_mode():
        for batch in dm.val_dataloader():
            preds = task.detect([item["image"] for item in batch])
            scored, targets = task.metric_inputs(batch, preds)
            task.val_map.update([b["image_id"] for b in batch], scored, targets)
    values = task.val_map.compute()
    task.val_map.reset()
    return {int(k[3:]): float(v) for k, v in values.items() if k.startswith("ap/")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="/tmp/oi_parent_ap")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=160)
    args = parser.parse_args()
    gen = functools.partial(generate_openimages, num_train=args.num_train, num_val=32, num_test=32, seed=0)
    rows = []
    for classifier in ("softmax", "sigmoid"):
        pl.seed_everything(args.seed, workers=True)
        dm = OpenImagesDetectionDataModule(args.root, num_classes=9, batch_size=8, generator=gen)
        dm.prepare_data()
        dm.setup()
        task = OpenImagesDetectionTask(
            9, classifier=classifier, num_sample_images=0,
            optimizer={"opt": "adamw", "lr": 0.002, "weight_decay": 0.0001},
            scheduler={"name": "cosine", "warmup_epochs": 1.0},
        )  # fmt: skip
        trainer = pl.Trainer(
            max_epochs=args.epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
            enable_progress_bar=False, num_sanity_val_steps=0, limit_val_batches=0, enable_model_summary=False,
        )  # fmt: skip
        start = time.time()
        trainer.fit(task, datamodule=dm)
        parents = sorted({a for anc in dm.class_ancestors for a in anc})
        leaves = [c for c in range(9) if c not in parents]
        for expand in (False, True):
            ap = validation_ap(task, dm, expand)
            rows.append(
                (classifier, expand, np.mean([ap.get(c, 0.0) for c in parents]),
                 np.mean([ap.get(c, 0.0) for c in leaves]), np.mean(list(ap.values())), time.time() - start)
            )  # fmt: skip
        names = [dm.display_names[c] for c in parents]
    print(f"parents: {names}; {args.epochs} epochs, seed {args.seed}, validation split (32 images)")
    print("classifier  expand  parent mAP  leaf mAP  mAP")
    for classifier, expand, parent, leaf, total, seconds in rows:
        print(f"{classifier:10s}  {str(expand):6s}  {parent:10.3f}  {leaf:8.3f}  {total:.3f}   ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
