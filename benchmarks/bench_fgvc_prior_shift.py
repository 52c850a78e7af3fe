"""EM test-prior re-estimation (Saerens et al. 2002) on generated long-tailed fine-grained data.

Trains the FGVC task on a generated iNaturalist 2019 copy (long-tailed training split, imbalance
10), then grades two test sets of the same classes: one whose class prior is the training tail
reversed (shifted) and one drawn from the training prior (no shift), each with and without the EM
prior adjustment. Everything goes through train.py / eval.py and the real readers.

    python benchmarks/bench_fgvc_prior_shift.py [--epochs 12 --image-size 48 --out /tmp/fgvc_prior]

Prints top-1 error with / without EM per test set and the L1 distance of the EM prior from the
true test prior (vs the training prior's distance)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run(script: str, args: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--max-per-class", type=int, default=200)
    parser.add_argument("--num-classes", type=int, default=12)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--class-step", type=int, default=4, help="4: one marking; head, tail, body differ")
    parser.add_argument("--out", default="/tmp/fgvc_prior_shift")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from core.data import ensure_generated
    from datamodules.synthetic.fgvc import write_inaturalist2019

    out = Path(args.out)
    roots = {}
    for prior in ("reversed", "train"):
        roots[prior] = out / f"inat_test_{prior}"
        # the same training split (same seed), different test priors; written whole or not at all
        ensure_generated(
            roots[prior],
            partial(
                write_inaturalist2019,
                num_classes=args.num_classes,
                max_per_class=args.max_per_class,
                imbalance=10.0,
                test_total=600,
                test_prior=prior,
                image_size=64,
                seed=args.seed,
                class_step=args.class_step,
            ),
        )
    common = [
        "task.backbone=" + args.backbone,
        f"data.image_size={args.image_size}",
        "data.num_workers=0",
        "data.batch_size=32",
        "logger=csv",
        "data.augment.auto_augment=null",
        "data.augment.re_prob=0.0",
        "data.augment.scale=[0.9,1.0]",
        "+data.augment.ratio=[0.9,1.1]",
        "data.sampler=instance",
        "task.taxonomy=null",
        f"data.num_classes={args.num_classes}",
        "data.taxonomy_sizes=null",
    ]
    train_dir = out / "train_run"
    if not (train_dir / "metrics.json").exists():
        run(
            "train.py",
            [
                "experiment=fgvc_inaturalist2019",
                *common,
                f"data.root={roots['reversed']}",
                f"trainer.max_epochs={args.epochs}",
                "task.optimizer.opt=adamw",
                f"task.optimizer.lr={args.lr}",
                "task.optimizer.weight_decay=0.02",
                "~task.optimizer.momentum",
                "callbacks.rich_progress_bar=null",
                "~callbacks.ema",
                f"hydra.run.dir={train_dir}",
                f"seed={args.seed}",
            ],
        )
    ckpt = json.loads((train_dir / "metrics.json").read_text())["best_checkpoint"]
    rows = {}
    for prior, root in roots.items():
        eval_dir = out / f"eval_{prior}"
        run(
            "eval.py",
            [
                "experiment=fgvc_inaturalist2019",
                *common,
                f"data.root={root}",
                f"ckpt_path={ckpt}",
                f"hydra.run.dir={eval_dir}",
            ],
        )
        metrics = json.loads((eval_dir / "metrics.json").read_text())["metrics"]
        priors = json.loads((eval_dir / "priors.json").read_text())
        true, train, em = (np.array(priors[k]) for k in ("true_test_prior", "train_prior", "test_prior"))
        rows[prior] = (
            metrics["test/top1_error"],
            metrics.get("test/top1_error_calibrated", float("nan")),
            metrics["test/top1_error_em"],
            np.abs(train - true).sum(),
            np.abs(em - true).sum(),
        )
    print(f"checkpoint: {ckpt}")
    print("| test prior | top-1 error | BCTS | BCTS + EM | L1(train prior, true) | L1(EM prior, true) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for prior, (plain, calibrated, em, l1_train, l1_em) in rows.items():
        label = "shifted (reversed tail)" if prior == "reversed" else "as training (no shift)"
        print(f"| {label} | {plain:.4f} | {calibrated:.4f} | {em:.4f} | {l1_train:.3f} | {l1_em:.3f} |")


if __name__ == "__main__":
    main()
