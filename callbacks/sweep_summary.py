"""One summary of a multirun, whichever launcher ran its jobs (in-process, local subprocesses, SLURM).

Each job leaves ``<sweep dir>/<job num>/`` with ``.hydra/overrides.yaml``, ``.hydra/hydra.yaml``
(``hydra.job.id``: the SLURM job id under the SLURM launcher) and, when it finished, ``metrics.json``
(core.training). The summary lists every job with its overrides, status, metrics and checkpoints,
and names the best job by ``monitor.metric`` / ``monitor.mode``:

    python -m callbacks.sweep_summary <sweep dir> [<sweep dir> ...]     # any time, even mid-sweep

writes ``sweep_summary.json`` and ``sweep_summary.csv`` into the first folder and prints a table
(task-specific summaries, such as the compound-scaling sweeper's ``summary.*``, keep their names).
As a Hydra callback (``hydra.callbacks.sweep_summary._target_=callbacks.sweep_summary.SweepSummary``)
it runs when the sweep's jobs are back."""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from core.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

SUMMARY_JSON = "sweep_summary.json"
SUMMARY_CSV = "sweep_summary.csv"


def _job_folders(sweep_dirs: Iterable[Path]) -> list[Path]:
    folders = {
        p.resolve()
        for d in sweep_dirs
        if d.is_dir()
        for p in d.iterdir()
        if (p / ".hydra").is_dir()
    }
    return sorted(
        folders, key=lambda p: (0, int(p.name), str(p)) if p.name.isdigit() else (1, 0, str(p))
    )


def read_job(folder: Path) -> dict[str, Any]:
    """One job's record: its number, launcher job id, overrides, status and final metrics."""
    overrides_file = folder / ".hydra" / "overrides.yaml"
    hydra_file = folder / ".hydra" / "hydra.yaml"
    overrides = list(OmegaConf.load(overrides_file)) if overrides_file.exists() else []
    job_id = None
    if hydra_file.exists():
        job_id = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.job.id", default=None)
    record: dict[str, Any] = {
        "job": folder.name,
        "job_id": None if job_id is None else str(job_id),
        "dir": str(folder),
        "overrides": [str(o) for o in overrides],
        "status": "unfinished",
        "monitor": None,
        "value": None,
        "metrics": {},
        "best_checkpoint": None,
        "last_checkpoint": None,
    }
    metrics_file = folder / "metrics.json"
    if metrics_file.exists():
        result = json.loads(metrics_file.read_text())
        record["metrics"] = result.get("metrics", {})
        # What a later step reads, e.g. the late fusion of streams trained as jobs of one sweep.
        record["best_checkpoint"] = result.get("best_checkpoint")
        record["last_checkpoint"] = result.get("last_checkpoint")
        monitor = result.get("monitor") or {}
        record["monitor"] = monitor
        record["value"] = record["metrics"].get(monitor.get("metric"))
        record["status"] = "done"
    return record


def best_job(jobs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The finished job with the best monitored value (its own ``monitor.mode``), NaN ignored."""
    scored = [j for j in jobs if j["value"] is not None and not math.isnan(j["value"])]
    if not scored:
        return None
    sign = -1.0 if scored[0]["monitor"].get("mode") == "min" else 1.0
    return max(scored, key=lambda j: sign * j["value"])


def summarize(sweep_dirs: Sequence[str | Path]) -> dict[str, Any]:
    """Collect every job folder of ``sweep_dirs``; raises if there is none."""
    dirs = [Path(d) for d in sweep_dirs]
    folders = _job_folders(dirs)
    if not folders:
        raise FileNotFoundError(f"no job folders (with .hydra/) in {', '.join(map(str, dirs))}")
    jobs = [read_job(f) for f in folders]
    best = best_job(jobs)
    return {
        "sweep_dirs": [str(d) for d in dirs],
        "num_jobs": len(jobs),
        "num_done": sum(j["status"] == "done" for j in jobs),
        "best": None
        if best is None
        else {
            k: best[k]
            for k in ("job", "job_id", "dir", "overrides", "monitor", "value", "best_checkpoint")
        },
        "jobs": jobs,
    }


def to_csv(summary: dict[str, Any]) -> str:
    """One row per job: job, job_id, status, overrides, monitored value, then every metric."""
    names = sorted({name for j in summary["jobs"] for name in j["metrics"]})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["job", "job_id", "status", "overrides", "monitor", "value", *names])
    for j in summary["jobs"]:
        monitor = (j["monitor"] or {}).get("metric", "")
        writer.writerow(
            [
                j["job"],
                j["job_id"] or "",
                j["status"],
                " ".join(j["overrides"]),
                monitor,
                "" if j["value"] is None else j["value"],
                *[j["metrics"].get(n, "") for n in names],
            ]
        )
    return out.getvalue()


def swept_overrides(jobs: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Each job's overrides without those every job shares: what the sweep varied."""
    common = set.intersection(*(set(j["overrides"]) for j in jobs)) if len(jobs) > 1 else set()
    return [[o for o in j["overrides"] if o not in common] for j in jobs]


def format_table(summary: dict[str, Any]) -> str:
    lines = [f"{'job':>4}  {'job id':<10} {'status':<10} {'value':>10}  swept overrides"]
    for j, swept in zip(summary["jobs"], swept_overrides(summary["jobs"])):
        value = "" if j["value"] is None else f"{j['value']:.4f}"
        lines.append(
            f"{j['job']:>4}  {j['job_id'] or '':<10} {j['status']:<10} {value:>10}  {' '.join(swept)}"
        )
    best = summary["best"]
    lines.append(
        f"{summary['num_done']}/{summary['num_jobs']} jobs done"
        + (
            ""
            if best is None
            else f"; best: job {best['job']} ({best['monitor']['metric']}={best['value']:.4f})"
        )
    )
    return "\n".join(lines)


def write_summary(sweep_dirs: Sequence[str | Path]) -> dict[str, Any]:
    """Write sweep_summary.json and sweep_summary.csv (atomically) into the first sweep folder."""
    summary = summarize(sweep_dirs)
    target = Path(sweep_dirs[0])
    atomic_write_json(target / SUMMARY_JSON, summary)
    atomic_write_text(target / SUMMARY_CSV, to_csv(summary))
    return summary


def sweep_folders(config: DictConfig) -> list[Path]:
    """The multirun's sweep folder, and the folders of the same sweep under other task/data names
    (a sweep over ``task=`` or ``data=`` puts its jobs under each ``<task>-<data>/multiruns/<run_id>``)."""
    primary = Path(str(config.hydra.sweep.dir))
    dirs = [primary]
    run_id = OmegaConf.select(config, "run_id", default=None)
    log_dir = OmegaConf.select(config, "paths.log_dir", default=None)
    if run_id and log_dir:
        dirs += sorted(
            p
            for p in Path(log_dir).glob(f"*/multiruns/{run_id}")
            if p.resolve() != primary.resolve()
        )
    return dirs


class SweepSummary(Callback):
    """Hydra callback: after a multirun, write its summary into the sweep folder.

    It also gives Hydra's ``${hydra:...}`` resolver a config before the launcher is built: Hydra sets
    none in the multirun process, so a sweep folder named with ``${hydra:runtime.choices.task}``
    could not be resolved there (the submitit launcher resolves it to place its logs)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not HydraConfig.initialized():
            HydraConfig.instance().set_config(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            summary = write_summary(sweep_folders(config))
        except FileNotFoundError as err:
            log.warning("sweep summary: %s", err)
            return
        log.info(
            "sweep summary (%s):\n%s",
            Path(summary["sweep_dirs"][0]) / SUMMARY_JSON,
            format_table(summary),
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "sweep_dirs", nargs="+", help="sweep folder(s); the summary goes into the first"
    )
    args = parser.parse_args(argv)
    print(format_table(write_summary(args.sweep_dirs)))


if __name__ == "__main__":
    main()
