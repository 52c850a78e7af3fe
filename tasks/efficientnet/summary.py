"""Collect a compound-scaling sweep: accuracy, measured FLOPs and parameters of every run, the best
(alpha, beta, gamma), compound vs single-dimension scaling, a table and an accuracy-vs-FLOPs plot.

    python -m tasks.efficientnet.summary <sweep dir> [--wandb]

It reads only the sweep folder (each job's ``config_resolved.yaml`` and ``metrics.json``), so it
works whichever launcher ran the jobs, and on a sweep that is still partly running (missing jobs
are listed as pending). The compound-scaling sweeper calls it when its jobs are back."""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from core.io import atomic_path, atomic_write_json, atomic_write_text
from core.sweeps import RUN_CONFIG, best_job, job_folders, read_job
from tasks.efficientnet.complexity import measure_backbone
from tasks.efficientnet.grid import Candidate

log = logging.getLogger(__name__)

COLUMNS = (
    "job",
    "dimension",
    "phi",
    "alpha",
    "beta",
    "gamma",
    "flops_factor",
    "backbone",
    "image_size",
    "params_m",
    "gmacs",
    "val_accuracy",
    "test_accuracy",
    "status",
)


def read_run(run_dir: Path) -> dict[str, Any] | None:
    """One job's row, or None for a folder that is not a job of a compound-scaling sweep. The job's
    status, metrics and monitor come from core.sweeps.read_job, the one reader of sweep folders."""
    config_file = run_dir / RUN_CONFIG
    if not config_file.exists():
        return None
    cfg = OmegaConf.load(config_file)
    scaling = cfg.get("scaling")
    if scaling is None:
        return None
    job = read_job(run_dir)
    candidate = Candidate(float(scaling.alpha), float(scaling.beta), float(scaling.gamma), float(scaling.phi))
    image_size = int(cfg.data.image_size)
    kwargs = OmegaConf.to_container(cfg.task.get("backbone_kwargs") or {})
    complexity = measure_backbone(cfg.task.backbone, image_size, num_classes=int(cfg.task.num_classes), **kwargs)
    metric = (job["monitor"] or {}).get("metric")
    row: dict[str, Any] = {
        "job": run_dir.name,
        "dimension": candidate.dimension,
        "phi": candidate.phi,
        "alpha": candidate.alpha,
        "beta": candidate.beta,
        "gamma": candidate.gamma,
        "flops_factor": candidate.flops_factor,
        "backbone": cfg.task.backbone,
        "image_size": image_size,
        "params_m": complexity.params_m,
        "gmacs": complexity.gmacs,
        "val_accuracy": job["value"],
        "test_accuracy": job["metrics"].get(metric.replace("val/", "test/", 1)) if metric else None,
        "status": job["status"] if job["status"] != "done" or job["value"] is not None else "no-metric",
        # what core.sweeps.best_job reads: the monitored value under monitor.mode
        "value": job["value"],
        "monitor": job["monitor"],
        "metrics": job["metrics"],
    }
    if row["status"] == "unfinished":
        row["status"] = "pending"
    return row


def collect_runs(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of every job folder in ``sweep_dir`` (numbered folders in job order)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir}: sweep folder does not exist")
    rows = [row for row in (read_run(p) for p in job_folders([sweep_dir])) if row is not None]
    if not rows:
        raise FileNotFoundError(
            f"{sweep_dir}: no job folder with {RUN_CONFIG} and a `scaling` block; is this the sweep "
            "folder of a compound-scaling sweep (hparams_search=compound_scaling*)?"
        )
    return rows


def best_run(rows: Sequence[dict], dimension: str = "compound", phi: float | None = None) -> dict | None:
    """The finished run of ``dimension`` (at ``phi``) with the best monitored value, under the
    sweep's ``monitor.mode`` (core.sweeps.best_job)."""
    done = [
        r
        for r in rows
        if r["status"] == "done" and r["dimension"] == dimension and (phi is None or math.isclose(r["phi"], phi))
    ]
    return best_job(done) if done else None


def compare_dimensions(rows: Sequence[dict]) -> list[dict]:
    """Per phi: the best compound triple against depth-, width- and resolution-only scaling (the same
    nominal FLOPs growth), with each one's measured multiply-adds."""
    table = []
    for phi in sorted({r["phi"] for r in rows if r["phi"] > 0}):
        entry: dict[str, Any] = {"phi": phi}
        for dimension in ("compound", "depth", "width", "resolution"):
            run = best_run(rows, dimension, phi)
            entry[dimension] = (
                None
                if run is None
                else {k: run[k] for k in ("job", "alpha", "beta", "gamma", "gmacs", "params_m", "val_accuracy")}
            )
        table.append(entry)
    return table


def format_markdown(rows: Sequence[dict]) -> str:
    head = (
        "| job | dimension | phi | alpha | beta | gamma | a*b^2*g^2 | res | params (M) | MACs (M) | val acc "
        "| test acc |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]

    def pct(v: float | None) -> str:
        return "" if v is None else f"{100 * v:.2f}"

    for r in rows:
        lines.append(
            f"| {r['job']} | {r['dimension']} | {r['phi']:g} | {r['alpha']:.3f} | {r['beta']:.3f} | "
            f"{r['gamma']:.3f} | {r['flops_factor']:.3f} | {r['image_size']} | {r['params_m']:.3f} | "
            f"{1000 * r['gmacs']:.1f} | {pct(r['val_accuracy'])} | {pct(r['test_accuracy'])} |"
        )
    return "\n".join(lines)


def plot_accuracy_vs_flops(rows: Sequence[dict], path: Path) -> Path:
    """Validation accuracy against measured multiply-adds, one marker per scaling dimension."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = {
        "baseline": ("k", "*"),
        "compound": ("tab:red", "o"),
        "depth": ("tab:blue", "s"),
        "width": ("tab:green", "^"),
        "resolution": ("tab:orange", "D"),
    }
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for dimension, (color, marker) in style.items():
        pts = [r for r in rows if r["dimension"] == dimension and r["status"] == "done"]
        if pts:
            ax.scatter(
                [1000 * r["gmacs"] for r in pts],
                [100 * r["val_accuracy"] for r in pts],
                c=color,
                marker=marker,
                label=dimension,
                s=40,
                zorder=3,
            )
    best = best_run(rows)
    if best is not None:
        ax.annotate(
            f"best: a={best['alpha']:.2f} b={best['beta']:.2f} g={best['gamma']:.2f}",
            (1000 * best["gmacs"], 100 * best["val_accuracy"]),
            textcoords="offset points",
            xytext=(6, -12),
            fontsize=8,
        )
    ax.set_xlabel("multiply-adds per image (M)")
    ax.set_ylabel("validation top-1 accuracy (%)")
    ax.set_title("Compound vs single-dimension scaling")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def log_to_wandb(sweep_dir: Path, rows: Sequence[dict], summary: dict, plot: Path) -> None:
    """Log the table, the plot and the best triple as an offline W&B run in the sweep folder
    (through core.media, like every task's media), grouped with the sweep's job runs."""
    from pytorch_lightning.loggers import WandbLogger

    from core.media import log_image, log_table

    logger = WandbLogger(
        project="visionlab",
        name=f"compound-scaling-{sweep_dir.name}",
        job_type="sweep-summary",
        group=sweep_dir.name,
        save_dir=str(sweep_dir),
        offline=True,
    )
    log_table(logger, "sweep/summary", list(COLUMNS), [[r.get(c) for c in COLUMNS] for r in rows], step=0)
    log_image(logger, "sweep/accuracy_vs_flops", plot, step=0)
    if summary["best"]:
        logger.experiment.summary.update({f"best/{k}": v for k, v in summary["best"].items()})
    logger.experiment.finish()


SCALE_UP_PHI = (1.0, 2.0)
# Overrides that belong to the search itself, not to the settings a scale-up shares with it.
SEARCH_ONLY = ("hydra.sweeper.", "run_id=", "hydra.sweep.dir=", "hydra.sweep.subdir=", "hydra.mode=")


def scale_up_command(sweep_dir: Path, best: dict, phis: Sequence[float] = SCALE_UP_PHI) -> str:
    """The command that trains the best triple at each compound coefficient in ``phis`` (Tan & Le's
    step 2) as jobs of one new sweep, with the search's own command-line settings (launcher, trainer,
    data) read from its ``multirun.yaml``."""
    import shlex

    given: list[str] = []
    multirun = sweep_dir / "multirun.yaml"
    if multirun.exists():
        config = OmegaConf.load(multirun)
        for kind in ("hydra", "task"):  # the launcher's settings are Hydra overrides, the rest the task's
            given += [str(o) for o in OmegaConf.select(config, f"hydra.overrides.{kind}", default=[]) or []]
    shared = [o for o in given if not o.startswith(SEARCH_ONLY)]
    triple = [f"hydra.sweeper.{k}=[{best[k]:.4g}]" for k in ("alpha", "beta", "gamma")]
    steps = [
        f"hydra.sweeper.phi=[{','.join(f'{phi:g}' for phi in phis)}]",
        "hydra.sweeper.dimensions=[compound]",
        "hydra.sweeper.include_baseline=false",
    ]
    return " ".join(["python", "train.py", "-m", *map(shlex.quote, [*shared, *triple, *steps])])


def summarize_sweep(sweep_dir: str | Path, wandb: bool = False) -> dict:
    """Write summary.json / summary.csv / summary.md / accuracy_vs_flops.png into ``sweep_dir``."""
    sweep_dir = Path(sweep_dir)
    rows = collect_runs(sweep_dir)
    best = best_run(rows)
    summary = {
        "sweep_dir": str(sweep_dir),
        "best": None
        if best is None
        else {
            k: best[k]
            for k in (
                "job",
                "phi",
                "alpha",
                "beta",
                "gamma",
                "flops_factor",
                "image_size",
                "params_m",
                "gmacs",
                "val_accuracy",
                "test_accuracy",
            )
        },
        "comparison": compare_dimensions(rows),
        "scale_up_command": None if best is None else scale_up_command(sweep_dir, best),
        "runs": rows,
    }
    atomic_write_json(sweep_dir / "summary.json", summary)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(sweep_dir / "summary.csv", buffer.getvalue())
    atomic_write_text(sweep_dir / "summary.md", format_markdown(rows) + "\n")
    plot = plot_accuracy_vs_flops(rows, sweep_dir / "accuracy_vs_flops.png")
    if wandb:
        log_to_wandb(sweep_dir, rows, summary, plot)
    if best is not None:
        log.info(
            "Best triple: alpha=%.3f beta=%.3f gamma=%.3f (val accuracy %.4f, %.1f M MACs, %.3f M params)",
            best["alpha"],
            best["beta"],
            best["gamma"],
            best["val_accuracy"],
            1000 * best["gmacs"],
            best["params_m"],
        )
        log.info("Scale it up: %s", summary["scale_up_command"])
    return summary


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--wandb", action="store_true", help="also log the table and plot to W&B (offline)")
    args = parser.parse_args(argv)
    summary = summarize_sweep(args.sweep_dir, wandb=args.wandb)
    print(format_markdown(summary["runs"]))
    print()
    if summary["best"]:
        b = summary["best"]
        print(
            f"best triple: alpha={b['alpha']:.3f} beta={b['beta']:.3f} gamma={b['gamma']:.3f} "
            f"(val acc {100 * b['val_accuracy']:.2f} %, {1000 * b['gmacs']:.1f} M MACs, {b['params_m']:.3f} M params)"
        )
        print(f"scale it up (phi = 1, 2): {summary['scale_up_command']}")
    for entry in summary["comparison"]:
        parts = [f"phi={entry['phi']:g}"]
        for dimension in ("compound", "depth", "width", "resolution"):
            run = entry[dimension]
            if run:
                parts.append(f"{dimension}: {100 * run['val_accuracy']:.2f} % @ {1000 * run['gmacs']:.1f} M MACs")
        print("  ".join(parts))
    print(f"wrote {args.sweep_dir}/summary.json, summary.csv, summary.md, accuracy_vs_flops.png")
    return summary


if __name__ == "__main__":
    main()
