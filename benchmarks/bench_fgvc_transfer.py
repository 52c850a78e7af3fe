"""Domain-specific transfer (Cui et al. 2018) on generated data: pre-training on the source subset
chosen by EMD domain similarity against a random subset of the same size.

Source: an iNaturalist 2019 copy of 24 species (every other generator species) whose families
alternate between two imaging domains (textured field, plain herbarium sheet). Target: a Herbarium
2019 copy of 6 new species (a fin and one spot: never in the source) on sheets. Steps, all through
train.py and the transfer command:
1. a feature network trained on the whole source;
2. ``python -m tasks.fgvc.transfer`` ranks the source classes by exp(-0.01 EMD) to the target and
   writes the subset (half of the source images);
3. a random subset with as many classes;
4. pre-training on each subset, then fine-tuning each on the target (``task.pretrained_path``);
   the target's test top-1 error is reported (and training from scratch for reference).

    python benchmarks/bench_fgvc_transfer.py [--epochs 8 --finetune-epochs 8 --out /tmp/fgvc_transfer]
"""

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


def run(args: list[str]) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--finetune-epochs", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--out", default="/tmp/fgvc_transfer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from core.data import ensure_generated
    from datamodules.synthetic.fgvc import MIXED_DOMAINS, write_herbarium2019, write_inaturalist2019

    out = Path(args.out)
    source, target = out / "source_inat", out / "target_herbarium"
    ensure_generated(
        source,
        partial(
            write_inaturalist2019,
            num_classes=24,
            max_per_class=40,
            imbalance=4.0,
            test_total=100,
            test_prior="train",
            image_size=64,
            seed=args.seed,
            domain=MIXED_DOMAINS,
            class_step=2,
        ),
    )
    ensure_generated(
        target,
        partial(
            write_herbarium2019,
            num_classes=6,
            max_per_class=16,
            imbalance=3.0,
            val_fraction=0.5,
            test_total=240,
            test_prior="train",
            image_size=64,
            seed=args.seed + 1,
            domain=1,
            first_class=48,
            class_step=4,
        ),
    )
    common = [
        f"task.backbone={args.backbone}",
        f"data.image_size={args.image_size}",
        "data.num_workers=0",
        "data.batch_size=32",
        "logger=csv",
        "callbacks.rich_progress_bar=null",
        "task.optimizer.opt=adamw",
        "task.optimizer.lr=0.002",
        "task.optimizer.weight_decay=0.02",
        f"seed={args.seed}",
        "data.augment.scale=[0.7,1.0]",
    ]
    src = [
        "task=fgvc",
        "data=inaturalist2019",
        f"data.root={source}",
        "data.num_classes=24",
        "data.taxonomy_sizes=null",
        "task.competition=inaturalist2019",
    ]
    tgt = [
        "task=fgvc",
        "data=herbarium2019",
        f"data.root={target}",
        "data.num_classes=6",
        "task.competition=herbarium2019",
    ]

    def train(name: str, extra: list[str], epochs: int) -> dict:
        run_dir = out / name
        if not (run_dir / "metrics.json").exists():
            run(["train.py", *common, *extra, f"trainer.max_epochs={epochs}", f"hydra.run.dir={run_dir}"])
        return json.loads((run_dir / "metrics.json").read_text())

    features = train("features_full_source", src, args.epochs)
    subset = out / "emd_subset.json"
    source_spec = " ".join(src[1:4] + ["data.taxonomy_sizes=null", f"data.image_size={args.image_size}"])
    target_spec = " ".join(tgt[1:4] + [f"data.image_size={args.image_size}"])
    source_images = sum(1 for _ in json.loads((source / "train2019.json").read_text())["annotations"])
    print(
        run(
            [
                "-m",
                "tasks.fgvc.transfer",
                "--ckpt",
                features["last_checkpoint"],
                "--source",
                source_spec,
                "--target",
                target_spec,
                "--max-images",
                str(source_images // 2),
                "--out",
                str(subset),
            ]
        ).strip()
    )
    chosen = json.loads(subset.read_text())
    rng = np.random.default_rng(args.seed)
    random_classes = sorted(rng.choice(24, size=len(chosen["chosen_classes"]), replace=False).tolist())
    random_subset = out / "random_subset.json"
    random_subset.write_text(json.dumps({"chosen_classes": random_classes}))
    sheet = lambda classes: sum((2 * c // 12) % 2 == 1 for c in classes)  # noqa: E731  (class c draws species 2c)
    results = {}
    for name, path in (("EMD subset", subset), ("random subset", random_subset)):
        key = name.split()[0].lower()
        pre = train(f"pretrain_{key}", [*src, f"data.class_subset={path}"], args.epochs)
        fine = train(f"finetune_{key}", [*tgt, f"task.pretrained_path={pre['last_checkpoint']}"], args.finetune_epochs)
        classes = json.loads(path.read_text())["chosen_classes"]
        results[name] = (len(classes), sheet(classes), fine["metrics"]["test/top1_error"])
    scratch = train("finetune_scratch", tgt, args.finetune_epochs)
    print("| pre-training | source classes | of them on sheets | target test top-1 error |")
    print("| --- | --- | --- | --- |")
    for name, (n, on_sheet, error) in results.items():
        print(f"| {name} | {n} | {on_sheet} | {error:.4f} |")
    print(f"| none (from scratch) | 0 | 0 | {scratch['metrics']['test/top1_error']:.4f} |")


if __name__ == "__main__":
    main()
