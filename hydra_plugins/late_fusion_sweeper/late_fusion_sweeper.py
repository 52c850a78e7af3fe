"""A Hydra sweeper that runs a late-fusion workflow as one multirun: one training job per stream (in
parallel, on whatever launcher the sweep uses: local, joblib or SLURM), then, when all are back, one
job that fuses the streams' checkpoints and scores the test split once.

Each stream's checkpoint is its best by the stream's own validation metric (``monitor.metric``, what
``ModelCheckpoint`` keeps as ``best_checkpoint``), never a test figure. Job numbers are fixed (streams
0..n-1 in the order of ``streams``, fusion n), so the same sweep started again (same ``run_id``)
reuses every finished stream and runs only what is missing. ``late_fusion.json`` in the sweep folder
names the stream runs and checkpoints the fused result came from."""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn
from omegaconf import OmegaConf

from core.io import atomic_write_json
from core.sweeps import NumberedJobsSweeper, job_completed, launch_numbered, read_job

log = logging.getLogger(__name__)

RECORD = "late_fusion.json"
CHECKPOINTS = ("best", "last")


@dataclass
class LateFusionSweeperConf:
    _target_: str = "hydra_plugins.late_fusion_sweeper.late_fusion_sweeper.LateFusionSweeper"
    # Stream name -> the overrides that make a job train that stream alone, e.g. {rgb: [task.modalities=[rgb]]}.
    streams: dict[str, list[str]] = field(default_factory=dict)
    # Overrides of the fusion job; the streams' checkpoints are added as `<checkpoint_key>.<name>=<file>`.
    fusion: list[str] = field(default_factory=list)
    checkpoint_key: str = "task.stream_checkpoints"
    # best: the stream's best checkpoint by its validation metric; last: its last one.
    checkpoint: str = "best"
    # Skip jobs whose <sweep dir>/<job num>/metrics.json exists (a workflow started again).
    skip_completed: bool = True


ConfigStore.instance().store(
    group="hydra/sweeper", name="late_fusion", node=LateFusionSweeperConf, provider="visionlab"
)


class LateFusionSweeper(NumberedJobsSweeper):
    def __init__(
        self,
        streams: dict[str, list[str]],
        fusion: list[str],
        checkpoint_key: str,
        checkpoint: str,
        skip_completed: bool,
    ) -> None:
        if len(streams) < 2:
            raise ValueError(f"hydra.sweeper.streams: late fusion needs at least two streams, got {list(streams)}")
        if checkpoint not in CHECKPOINTS:
            raise ValueError(f"hydra.sweeper.checkpoint={checkpoint!r}: choose one of {CHECKPOINTS}")
        self.streams = {str(name): [str(o) for o in overrides] for name, overrides in streams.items()}
        self.fusion = [str(o) for o in fusion]
        self.checkpoint_key = checkpoint_key
        self.checkpoint = checkpoint
        self.skip_completed = skip_completed

    def common_overrides(self, arguments: list[str]) -> list[str]:
        """The command line's overrides, which every job of the workflow shares (no swept values)."""
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        jobs = BasicSweeper.split_arguments(parser.parse_overrides(list(arguments)), None)[0]
        if len(jobs) != 1:
            raise ValueError(
                f"a late-fusion workflow sweeps its streams only; the command line gives {len(jobs)} "
                f"combinations ({arguments}): run one workflow per setting"
            )
        return list(jobs[0])

    def stream_checkpoint(self, name: str, num: int) -> tuple[dict[str, Any], str]:
        """The finished stream job's record and the checkpoint the fusion takes from it."""
        assert self.config is not None
        job = read_job(Path(str(self.config.hydra.sweep.dir)) / str(num))
        checkpoint = job[f"{self.checkpoint}_checkpoint"]
        if job["status"] != "done" or not checkpoint or not Path(checkpoint).is_file():
            raise RuntimeError(
                f"stream {name!r} (job {num}, {job['dir']}) left no {self.checkpoint} checkpoint "
                f"({job['status']}, {checkpoint}): nothing to fuse"
            )
        return job, checkpoint

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        assert self.config is not None and self.launcher is not None
        common = self.common_overrides(arguments)
        names = list(self.streams)
        jobs = [common + self.streams[name] for name in names]
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        pending = [i for i in range(len(jobs)) if not (self.skip_completed and job_completed(self.config, i))]
        for i in sorted(set(range(len(jobs))) - set(pending)):
            log.info("Late fusion: stream %r (job %d) finished earlier; reusing it", names[i], i)
        returns = launch_numbered(self, self.launcher, jobs, pending, None)

        streams = {name: self.stream_checkpoint(name, i) for i, name in enumerate(names)}
        fusion_num = len(names)
        fusion_job = common + self.fusion + [f"{self.checkpoint_key}.{n}={ckpt}" for n, (_, ckpt) in streams.items()]
        fusion_record = read_job(sweep_dir / str(fusion_num)) if (sweep_dir / str(fusion_num)).is_dir() else None
        stale = fusion_record is not None and sorted(fusion_record["overrides"]) != sorted(fusion_job)
        if self.skip_completed and job_completed(self.config, fusion_num) and not stale:
            log.info("Late fusion: the fusion job (%d) finished earlier on these checkpoints; reusing it", fusion_num)
        else:
            if stale:
                raise RuntimeError(
                    f"{sweep_dir / str(fusion_num)} fused other checkpoints ({fusion_record['overrides']}); "
                    "start the workflow under a new run_id"
                )
            returns += launch_numbered(self, self.launcher, [*jobs, fusion_job], [fusion_num], None)

        fused = read_job(sweep_dir / str(fusion_num))
        record = {
            "streams": {
                name: {
                    "job": job["job"],
                    "job_id": job["job_id"],
                    "dir": job["dir"],
                    "checkpoint": checkpoint,
                    "selected_by": job["monitor"],
                    "value": job["value"],
                }
                for name, (job, checkpoint) in streams.items()
            },
            "fusion": {key: fused[key] for key in ("job", "job_id", "dir", "metrics")},
        }
        atomic_write_json(sweep_dir / RECORD, record)
        log.info("Late fusion of %s: %s", names, fused["metrics"])
        return returns
