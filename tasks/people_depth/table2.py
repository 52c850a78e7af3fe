"""Table 2 of Li et al. (CVPR 2019) on generated data: train I, IDCM and IDCMK, test each, and write
the table (si-full, si-env, si-hum, si-intra, si-inter, RMSE, Rel; lower is better) as CSV and
Markdown.

    python -m tasks.people_depth.table2 [--out logs/people_depth_table2] [--epochs 12] [--seeds 42 1] [-- key=value ...]

Each model is one ``train.py experiment=people_depth_<model>`` run (its own process, the real entry
point) with the small CPU settings below (a quarter-width hourglass at 48x64 on 16 generated train
clips: a few minutes per run on 2 cores); extra Hydra overrides after ``--`` go to every run. The
data set is generated once under ``<out>/data``. Test numbers come from the checkpoint with the best
validation si-full. With several ``--seeds`` each model is trained once per seed and the table holds
the mean over seeds (``table2_runs.csv`` keeps every run)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from core.io import atomic_write_text

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODELS = ("I", "IDCM", "IDCMK")
COLUMNS = (
    ("si-full", "test/si_full"),
    ("si-env", "test/si_env"),
    ("si-hum", "test/si_hum"),
    ("si-intra", "test/si_intra"),
    ("si-inter", "test/si_inter"),
    ("RMSE", "test/rmse"),
    ("Rel", "test/rel"),
)
CPU_SETTINGS = (
    "data.image_size=[48,64]",
    "data.batch_size=4",
    "data.generator.train_clips=16",
    "data.generator.validation_clips=4",
    "data.generator.test_clips=4",
    "data.generator.frames_per_clip=6",
    "data.generator.width=64",
    "data.generator.height=48",
    "task.width=0.25",
    "task.scheduler=null",
    "task.optimizer.lr=0.002",
    "task.video_frames=4",
    "trainer.num_sanity_val_steps=0",
    "logger=csv",
)


def run_model(model: str, out: Path, epochs: int, extra: Sequence[str], seed: int = 42) -> dict[str, float]:
    """Train and test one model in its own ``train.py`` process; its test metrics."""
    name = f"{model}_seed{seed}"
    run_dir = out / "runs" / name
    overrides = [
        f"experiment=people_depth_{model}",
        *CPU_SETTINGS,
        f"trainer.max_epochs={epochs}",
        f"paths.data_dir={out / 'data'}",
        f"data.root={out / 'data' / 'mannequin_challenge'}",
        f"hydra.run.dir={run_dir}",
        f"run_id=table2_{name}",
        f"seed={seed}",
        *extra,
    ]
    start = time.perf_counter()
    log_file = out / f"{name}.log"
    # One intra-op thread unless the caller says otherwise: on a shared 2-core machine two torch
    # threads spin against each other (an epoch measured 9 min wall with 2 threads, 16 s with 1).
    env = {"OMP_NUM_THREADS": "1", **os.environ}
    with open(log_file, "w") as log:
        done = subprocess.run(
            [sys.executable, str(PROJECT_ROOT / "train.py"), *overrides],
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    if done.returncode != 0:
        raise SystemExit(f"{name}: train.py failed ({done.returncode}); see {log_file}")
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    print(f"{name}: {time.perf_counter() - start:.0f} s, test si-full {metrics['test/si_full']:.4f}", flush=True)
    return metrics


def table_rows(results: dict[str, list[dict[str, float]]]) -> list[list]:
    """One row per model: the mean of each column over that model's runs."""
    return [
        [model, *(round(sum(run[key] for run in runs) / len(runs), 4) for _, key in COLUMNS)]
        for model, runs in results.items()
    ]


def to_csv(rows: list[list], first: str = "model") -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([first, *(name for name, _ in COLUMNS)])
    writer.writerows(rows)
    return buffer.getvalue()


def to_markdown(rows: list[list]) -> str:
    """The table with the best (lowest) value of each column in bold."""
    names = [name for name, _ in COLUMNS]
    best = [min(r[i + 1] for r in rows) for i in range(len(names))]
    lines = ["| model | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for row in rows:
        cells = [f"**{v:.4f}**" if v == best[i] else f"{v:.4f}" for i, v in enumerate(row[1:])]
        lines.append(f"| {row[0]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Table 2 (I, IDCM, IDCMK) on generated data, as CSV and Markdown.")
    parser.add_argument("--out", default=str(PROJECT_ROOT / "logs" / "people_depth_table2"))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 1], help="one run per seed; the table is the mean")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for model in args.models:
        results[model] = [run_model(model, out, args.epochs, args.overrides, seed) for seed in args.seeds]
    rows = table_rows(results)
    runs = [
        [f"{model}_seed{seed}", *(round(run[key], 4) for _, key in COLUMNS)]
        for model in results
        for seed, run in zip(args.seeds, results[model])
    ]
    atomic_write_text(out / "table2_runs.csv", to_csv(runs, first="run"))
    atomic_write_text(out / "table2.csv", to_csv(rows))
    atomic_write_text(out / "table2.md", to_markdown(rows))
    print(to_markdown(rows))
    print(f"wrote {out / 'table2.csv'}, {out / 'table2.md'} and {out / 'table2_runs.csv'}")


if __name__ == "__main__":
    main()
