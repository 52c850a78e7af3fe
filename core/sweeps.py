"""Sweep folders: one reader of a multirun's jobs, and the summary written after every multirun.

Each job leaves ``<sweep dir>/<job num>/`` with ``.hydra/overrides.yaml``, ``.hydra/hydra.yaml``
(``hydra.job.id``: the SLURM job id under the SLURM launcher), ``config_resolved.yaml`` and, when it
finished, ``metrics.json`` (core.training). :func:`read_sweep` turns the folders into one record per
job (overrides, status, metrics, checkpoints, monitored value) whichever launcher ran them, even
mid-sweep; :func:`best_job` picks the best by ``monitor.metric`` / ``monitor.mode``. Task-specific
summaries (tasks/efficientnet/summary.py) build on the same records.

    python -m core.sweeps <sweep dir> [<sweep dir> ...]     # any time, even mid-sweep

writes ``sweep_summary.json`` and ``sweep_summary.csv`` into the first folder and prints a table.
:class:`SweepSummary` (conf/hydra/default.yaml) does the same when a multirun's jobs are back."""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from core.data import read_json
from core.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

SUMMARY_JSON = "sweep_summary.json"
SUMMARY_CSV = "sweep_summary.csv"
RUN_CONFIG = "config_resolved.yaml"
METRICS = "metrics.json"


def job_folders(sweep_dirs: Iterable[str | Path]) -> list[Path]:
    """The job folders of ``sweep_dirs`` (those with ``.hydra/`` or ``config_resolved.yaml``),
    numbered ones in job order first."""
    folders = {
        p.resolve()
        for d in map(Path, sweep_dirs)
        if d.is_dir()
        for p in d.iterdir()
        if (p / ".hydra").is_dir() or (p / RUN_CONFIG).is_file()
    }
    return sorted(folders, key=lambda p: (0, int(p.name), str(p)) if p.name.isdigit() else (1, 0, str(p)))


def read_job(folder: str | Path) -> dict[str, Any]:
    """One job's record: ``job`` (its number), ``job_id`` (launcher's), ``dir``, ``overrides``,
    ``status`` (done / unfinished), ``monitor`` ({metric, mode}), ``value`` (the monitored metric),
    ``metrics``, ``best_checkpoint``, ``last_checkpoint`` and ``config_file`` (its resolved config)."""
    folder = Path(folder)
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
        "config_file": str(folder / RUN_CONFIG) if (folder / RUN_CONFIG).is_file() else None,
    }
    metrics_file = folder / METRICS
    if metrics_file.exists():
        result = read_json(metrics_file, "a job's metrics.json")
        record["metrics"] = result.get("metrics", {})
        # What a later step reads, e.g. the late fusion of streams trained as jobs of one sweep.
        record["best_checkpoint"] = result.get("best_checkpoint")
        record["last_checkpoint"] = result.get("last_checkpoint")
        monitor = result.get("monitor") or {}
        record["monitor"] = monitor
        record["value"] = record["metrics"].get(monitor.get("metric"))
        record["status"] = "done"
    return record


def read_sweep(sweep_dirs: str | Path | Sequence[str | Path]) -> list[dict[str, Any]]:
    """:func:`read_job` of every job folder of one or more sweep folders; raises if there is none."""
    dirs = [Path(sweep_dirs)] if isinstance(sweep_dirs, (str, Path)) else [Path(d) for d in sweep_dirs]
    folders = job_folders(dirs)
    if not folders:
        raise FileNotFoundError(f"no job folders (with .hydra/ or {RUN_CONFIG}) in {', '.join(map(str, dirs))}")
    return [read_job(f) for f in folders]


def best_job(
    jobs: Sequence[dict[str, Any]], metric: str | None = None, mode: str | None = None
) -> dict[str, Any] | None:
    """The finished job with the best value of ``metric`` (default: each job's ``monitor.metric``)
    under ``mode`` (default: the jobs' ``monitor.mode``; ``min`` or ``max``), NaN ignored.

    Raises if the jobs disagree on the monitored metric or mode (a sweep over tasks with different
    monitors has no single best) unless ``metric`` and ``mode`` are given."""

    def value(job: dict[str, Any]) -> float | None:
        v = job["value"] if metric is None else job["metrics"].get(metric)
        return None if v is None or math.isnan(v) else float(v)

    scored = [j for j in jobs if value(j) is not None]
    if not scored:
        return None
    if metric is None and len({(j["monitor"] or {}).get("metric") for j in scored}) > 1:
        raise ValueError("the jobs monitor different metrics; pass metric= and mode= to compare them")
    if mode is None:
        modes = {(j["monitor"] or {}).get("mode", "max") for j in scored}
        if len(modes) > 1:
            raise ValueError(f"the jobs disagree on monitor.mode ({sorted(modes)}); pass mode=")
        mode = modes.pop()
    if mode not in ("min", "max"):
        raise ValueError(f"monitor.mode={mode!r}: choose min or max")
    sign = -1.0 if mode == "min" else 1.0
    return max(scored, key=lambda j: sign * value(j))


def summarize(sweep_dirs: Sequence[str | Path]) -> dict[str, Any]:
    """Collect every job folder of ``sweep_dirs``; raises if there is none."""
    dirs = [Path(d) for d in sweep_dirs]
    jobs = read_sweep(dirs)
    try:
        best = best_job(jobs)
    except ValueError as err:  # e.g. a sweep over tasks that monitor different metrics
        log.warning("sweep summary: no single best job: %s", err)
        best = None
    return {
        "sweep_dirs": [str(d) for d in dirs],
        "num_jobs": len(jobs),
        "num_done": sum(j["status"] == "done" for j in jobs),
        "best": None
        if best is None
        else {k: best[k] for k in ("job", "job_id", "dir", "overrides", "monitor", "value", "best_checkpoint")},
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
        lines.append(f"{j['job']:>4}  {j['job_id'] or '':<10} {j['status']:<10} {value:>10}  {' '.join(swept)}")
    best = summary["best"]
    lines.append(
        f"{summary['num_done']}/{summary['num_jobs']} jobs done"
        + ("" if best is None else f"; best: job {best['job']} ({best['monitor']['metric']}={best['value']:.4f})")
    )
    return "\n".join(lines)


def write_summary(sweep_dirs: Sequence[str | Path]) -> dict[str, Any]:
    """Write sweep_summary.json and sweep_summary.csv (atomically) into the first sweep folder."""
    summary = summarize(sweep_dirs)
    target = Path(sweep_dirs[0])
    atomic_write_json(target / SUMMARY_JSON, summary)
    atomic_write_text(target / SUMMARY_CSV, to_csv(summary))
    return summary


class NumberedJobsSweeper(Sweeper):
    """What the project's own sweepers share: jobs with fixed numbers, launched by whichever launcher
    the config names (local, joblib, SLURM), so a sweep started again with its ``run_id`` finds each
    job's folder and can skip the finished ones (:func:`job_completed`, :func:`launch_numbered`)."""

    hydra_context: HydraContext | None = None
    config: DictConfig | None = None
    launcher: Launcher | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        # The sweep folder may interpolate ${hydra:runtime.choices...}, which needs HydraConfig;
        # Hydra sets it per job only, so set it to the multirun config for the sweeper's own use.
        HydraConfig.instance().set_config(config)
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )


def job_completed(config: DictConfig, num: int) -> bool:
    """Whether job ``num`` of the multirun ``config`` finished in an earlier attempt of the same sweep
    (its ``metrics.json`` exists). Only a sweep whose job folders are numbered (``hydra.sweep.subdir``
    is ``${hydra.job.num}``) can tell, so any other answers False."""
    subdir = OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir")
    return subdir == "${hydra.job.num}" and (Path(str(config.hydra.sweep.dir)) / str(num) / METRICS).exists()


def launch_numbered(
    sweeper: Sweeper, launcher: Launcher, jobs: Sequence[Sequence[str]], numbers: Sequence[int], batch_size: int | None
) -> list[Sequence[JobReturn]]:
    """Launch ``jobs[i]`` for each ``i`` of ``numbers`` as job number ``i``: consecutive numbers go out
    together (at most ``batch_size`` at once), so every job keeps its number, and its folder, when
    earlier ones are skipped as completed. A failed job's exception is raised here."""
    returns: list[Sequence[JobReturn]] = []
    for _, group in itertools.groupby(enumerate(numbers), key=lambda t: t[1] - t[0]):
        run = [num for _, num in group]
        size = batch_size or len(run)
        for start in range(0, len(run), size):
            chunk = run[start : start + size]
            batch = [list(jobs[i]) for i in chunk]
            sweeper.validate_batch_is_legal(batch)
            results = launcher.launch(batch, initial_job_idx=chunk[0])
            for result in results:
                _ = result.return_value  # re-raises a failed job's exception
            returns.append(results)
    return returns


def sweep_folders(config: DictConfig) -> list[Path]:
    """The multirun's sweep folder, and the folders of the same sweep under other task/data names
    (a sweep over ``task=`` or ``data=`` puts its jobs under each ``<task>-<data>/multiruns/<run_id>``)."""
    primary = Path(str(config.hydra.sweep.dir))
    dirs = [primary]
    run_id = OmegaConf.select(config, "run_id", default=None)
    log_dir = OmegaConf.select(config, "paths.log_dir", default=None)
    if run_id and log_dir:
        dirs += sorted(p for p in Path(log_dir).glob(f"*/multiruns/{run_id}") if p.resolve() != primary.resolve())
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
    parser.add_argument("sweep_dirs", nargs="+", help="sweep folder(s); the summary goes into the first")
    args = parser.parse_args(argv)
    print(format_table(write_summary(args.sweep_dirs)))


if __name__ == "__main__":
    main()
