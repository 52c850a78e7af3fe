"""EM test-prior re-estimation (Saerens et al. 2002) on generated long-tailed fine-grained data, for
every training sampler the FGVC recipes use (instance, square-root, class-balanced).

Per sampler: trains the FGVC task on a generated iNaturalist 2019 copy (long-tailed training split,
imbalance 10) with train.py, then

- **validation** (what decides ``task.calibration``): the checkpoint's log-posteriors on the
  validation split, two folds: calibration fit on one half, graded on the other half as drawn (no
  shift) and resampled to the reversed class prior (shift), for each calibration mode, with and
  without EM;
- **test** (the report): eval.py on two test sets of the same classes, one whose class prior is the
  training tail reversed (shifted) and one drawn from the training prior (no shift).

    python benchmarks/bench_fgvc_prior_shift.py [--epochs 20 --samplers instance sqrt class_balanced]

Prints top-1 error: raw network, calibrated (no EM) and calibrated + EM, per sampler and test set."""

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

SAMPLERS = ("instance", "sqrt", "class_balanced")
CALIBRATIONS = ("none", "ts", "bcts")


def run(script: str, args: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def common_overrides(args) -> list[str]:
    return [
        "experiment=fgvc_inaturalist2019",
        "task.backbone=" + args.backbone,
        f"data.image_size={args.image_size}",
        "data.num_workers=0",
        "data.batch_size=32",
        "logger=csv",
        "data.augment.auto_augment=null",
        "data.augment.re_prob=0.0",
        "data.augment.scale=[0.9,1.0]",
        "+data.augment.ratio=[0.9,1.1]",
        "task.taxonomy=null",
        f"data.num_classes={args.num_classes}",
        "data.taxonomy_sizes=null",
    ]


def train_overrides(args, root: Path, sampler: str, run_dir: Path) -> list[str]:
    return [
        *common_overrides(args),
        f"data.sampler={sampler}",
        f"data.root={root}",
        f"trainer.max_epochs={args.epochs}",
        "task.optimizer.opt=adamw",
        f"task.optimizer.lr={args.lr}",
        "task.optimizer.weight_decay=0.02",
        "~task.optimizer.momentum",
        "callbacks.rich_progress_bar=null",
        "~callbacks.ema",
        f"hydra.run.dir={run_dir}",
        f"seed={args.seed}",
    ]


def validation_log_posteriors(args, root: Path, sampler: str, ckpt: str) -> tuple[np.ndarray, np.ndarray, list]:
    """The checkpoint's log-posteriors and labels on the validation split, and the sampler's prior."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from core.resolvers import register_resolvers
    from tasks.fgvc.module import FineGrainedTask

    register_resolvers()
    overrides = [*common_overrides(args), f"data.sampler={sampler}", f"data.root={root}"]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("eval", overrides)
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    task = FineGrainedTask.load_from_checkpoint(ckpt, map_location="cpu").eval()
    logits, labels = [], []
    with torch.inference_mode():
        for images, targets, _ in datamodule.val_dataloader():
            logits.append(task(images).float().log_softmax(-1))
            labels.append(targets)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy(), datamodule.train_prior


def resample(labels: np.ndarray, prior: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of the largest subset of ``labels`` (no repeats) whose class shares follow ``prior``."""
    counts = np.bincount(labels, minlength=len(prior))
    size = int(np.floor(np.min(np.where(prior > 0, counts / np.maximum(prior, 1e-12), np.inf))))
    take = np.floor(prior * size).astype(int)
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), n, replace=False) for c, n in enumerate(take)])


def validation_table(log_post: np.ndarray, labels: np.ndarray, sampler_prior, seed: int) -> dict:
    """Two-fold on the validation split: mean top-1 error per (calibration, shift, EM)."""
    from tasks.fgvc.prior import class_frequencies, em_prior, fit_prior_calibration

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    folds = (order[: len(order) // 2], order[len(order) // 2 :])
    num_classes = log_post.shape[1]
    errors: dict[tuple[str, str, str], list[float]] = {}
    for fit, held in (folds, folds[::-1]):
        natural = class_frequencies(labels[held], num_classes)
        shifted = resample(labels[held], natural[::-1] / natural[::-1].sum(), rng)
        for mode in CALIBRATIONS:
            calibration = fit_prior_calibration(log_post[fit], labels[fit], sampler_prior, mode)
            for shift, rows in (("no shift", np.arange(len(held))), ("shift", shifted)):
                posteriors = calibration.posteriors(log_post[held][rows])
                truth = labels[held][rows]
                em = em_prior(posteriors, calibration.reference_prior).posteriors
                for name, p in (("no EM", posteriors), ("EM", em)):
                    errors.setdefault((mode, shift, name), []).append(float((p.argmax(1) != truth).mean()))
    return {key: float(np.mean(v)) for key, v in errors.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--max-per-class", type=int, default=200)
    parser.add_argument("--num-classes", type=int, default=12)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--class-step", type=int, default=4, help="4: one marking; head, tail, body differ")
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    parser.add_argument("--out", default="/tmp/fgvc_prior_shift")
    parser.add_argument("--train-only", action="store_true", help="train the checkpoints and stop")
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
    checkpoints = {}
    for sampler in args.samplers:
        train_dir = out / f"train_{sampler}"
        if not (train_dir / "metrics.json").exists():
            run("train.py", train_overrides(args, roots["reversed"], sampler, train_dir))
        checkpoints[sampler] = json.loads((train_dir / "metrics.json").read_text())["best_checkpoint"]
        print(f"{sampler}: {checkpoints[sampler]}", flush=True)
    if args.train_only:
        return

    print("\nValidation (two folds of the validation split; calibration fit on one, graded on the other):")
    print("| sampler | calibration | no shift: no EM | no shift: EM | shift: no EM | shift: EM |")
    print("| --- | --- | --- | --- | --- | --- |")
    for sampler, ckpt in checkpoints.items():
        table = validation_table(*validation_log_posteriors(args, roots["reversed"], sampler, ckpt), args.seed)
        for mode in CALIBRATIONS:
            cells = [table[(mode, s, e)] for s in ("no shift", "shift") for e in ("no EM", "EM")]
            print(f"| {sampler} | {mode} | " + " | ".join(f"{v:.4f}" for v in cells) + " |", flush=True)

    print("\nTest (eval.py, task.calibration from the config):")
    print("| sampler | test prior | network | calibrated | calibrated + EM | L1(reference, true) | L1(EM, true) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for sampler, ckpt in checkpoints.items():
        for prior, root in roots.items():
            eval_dir = out / f"eval_{sampler}_{prior}"
            run(
                "eval.py",
                [
                    *common_overrides(args),
                    f"data.sampler={sampler}",
                    f"data.root={root}",
                    f"ckpt_path={ckpt}",
                    f"hydra.run.dir={eval_dir}",
                ],
            )
            metrics = json.loads((eval_dir / "metrics.json").read_text())["metrics"]
            priors = json.loads((eval_dir / "priors.json").read_text())
            true, ref, em = (np.array(priors[k]) for k in ("true_test_prior", "reference_prior", "test_prior"))
            label = "shifted (reversed tail)" if prior == "reversed" else "as training (no shift)"
            print(
                f"| {sampler} | {label} | {metrics['test/top1_error']:.4f} | "
                f"{metrics.get('test/top1_error_calibrated', float('nan')):.4f} | {metrics['test/top1_error_em']:.4f} | "
                f"{np.abs(ref - true).sum():.3f} | {np.abs(em - true).sum():.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
