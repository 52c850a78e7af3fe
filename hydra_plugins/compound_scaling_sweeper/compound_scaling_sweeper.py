"""A Hydra sweeper that launches one job per (alpha, beta, gamma, phi) candidate of the compound
scaling grid search, crossed with any ordinary sweep overrides on the command line.

Jobs are independent (each is a plain ``train.py`` run whose overrides set ``scaling.*``) and keep
fixed job numbers, so any launcher (basic, joblib, submitit/SLURM) can run them, and re-running the
same sweep (same ``run_id``) skips jobs whose ``metrics.json`` exists and resumes the rest from
their ``checkpoints/last.ckpt``. When all jobs are back, the summary (table, plot, best triple) is
written into the sweep folder; ``python -m tasks.efficientnet.summary <sweep dir>`` does the same
by itself."""

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn
from omegaconf import DictConfig, OmegaConf

from core.sweeps import NumberedJobsSweeper, job_completed, launch_numbered

log = logging.getLogger(__name__)


@dataclass
class CompoundScalingSweeperConf:
    _target_: str = "hydra_plugins.compound_scaling_sweeper.compound_scaling_sweeper.CompoundScalingSweeper"
    # Grid of each coefficient: a list, or "start:stop:step" (stop included).
    alpha: Any = "1.0:1.4:0.05"
    beta: Any = "1.0:1.4:0.05"
    gamma: Any = "1.0:1.4:0.05"
    # Constraint alpha * beta^2 * gamma^2 ~= target, kept when within tolerance (paper: 2).
    target: float = 2.0
    tolerance: float = 0.1
    # Compound coefficients to run each candidate at (paper: phi = 1 for the search).
    phi: list[float] = field(default_factory=lambda: [1.0])
    # compound and/or the single-dimension baselines depth, width, resolution at the same FLOPs.
    dimensions: list[str] = field(default_factory=lambda: ["compound"])
    # Also run the unscaled baseline (phi = 0) once, as the reference point of the plot.
    include_baseline: bool = False
    # The config node the candidate's coefficients are written to (scaling.alpha, ...).
    scaling_key: str = "scaling"
    # Skip jobs whose <sweep dir>/<job num>/metrics.json exists (a resumed sweep).
    skip_completed: bool = True
    # Write summary.{json,csv,md} and accuracy_vs_flops.png into the sweep folder at the end.
    summarize: bool = True
    max_batch_size: int | None = None
    # Further ordinary sweep parameters, crossed with the candidates (as in the basic sweeper).
    params: dict[str, str] | None = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="compound_scaling", node=CompoundScalingSweeperConf, provider="visionlab"
)


# The ${compound_resolution:...} resolver the configs use is registered by core.resolvers (from the
# explicit list in core.registry), not by this plugin.


class CompoundScalingSweeper(NumberedJobsSweeper):
    def __init__(
        self,
        alpha: Any,
        beta: Any,
        gamma: Any,
        target: float,
        tolerance: float,
        phi: Sequence[float],
        dimensions: Sequence[str],
        include_baseline: bool,
        scaling_key: str,
        skip_completed: bool,
        summarize: bool,
        max_batch_size: int | None,
        params: dict[str, str] | None = None,
    ) -> None:
        from tasks.efficientnet.grid import sweep_candidates

        def plain(v: Any) -> Any:
            return OmegaConf.to_container(v) if OmegaConf.is_config(v) else v

        self.candidates = sweep_candidates(
            plain(alpha),
            plain(beta),
            plain(gamma),
            list(phi),
            list(dimensions),
            target,
            tolerance,
            include_baseline,
        )
        self.scaling_key = scaling_key
        self.skip_completed = skip_completed
        self.summarize = summarize
        self.max_batch_size = max_batch_size
        self.params = dict(params or {})

    def job_overrides(self, arguments: list[str]) -> list[list[str]]:
        """Every job's override list: the command line's (swept) overrides x the candidates."""
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        given = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        base_jobs = BasicSweeper.split_arguments(given, None)[0]
        return [
            list(base) + candidate.overrides(self.scaling_key)
            for base, candidate in itertools.product(base_jobs, self.candidates)
        ]

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        assert self.config is not None and self.launcher is not None
        jobs = self.job_overrides(arguments)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info(
            "Compound scaling sweep: %d candidates, %d jobs, into %s",
            len(self.candidates),
            len(jobs),
            sweep_dir,
        )
        for c in self.candidates:
            log.info(
                "  %-10s phi=%g alpha=%.3f beta=%.3f gamma=%.3f (alpha*beta^2*gamma^2 = %.3f)",
                c.dimension,
                c.phi,
                c.alpha,
                c.beta,
                c.gamma,
                c.flops_factor,
            )

        pending = [i for i in range(len(jobs)) if not (self.skip_completed and job_completed(self.config, i))]
        if len(pending) < len(jobs):
            log.info("Skipping %d completed jobs", len(jobs) - len(pending))
        returns = launch_numbered(self, self.launcher, jobs, pending, self.max_batch_size)

        if self.summarize:
            from tasks.efficientnet.summary import summarize_sweep

            summarize_sweep(sweep_dir, wandb=_wandb_on(self.config))
        return returns


def _wandb_on(config: DictConfig) -> bool:
    logger = config.get("logger")
    return bool(logger) and any(
        "WandbLogger" in str(OmegaConf.select(node, "_target_", default=""))
        for node in logger.values()
        if OmegaConf.is_dict(node)
    )
