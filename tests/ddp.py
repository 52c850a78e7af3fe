"""The DDP metric harness: every metric's cases, run on 2 gloo processes, against one process.

A system declares its cases beside its metric tests: ``DDP_CASES``, a dict ``{"<system>/<case>": DDPCase}``
in ``tests/tasks/test_<system>*_metrics.py`` (the base class's in ``tests/core/test_metrics.py``).
:func:`collect_cases` gathers them; tests/test_ddp_metrics.py runs them all in one pair of real
processes (``python -m tests.ddp`` is one rank) and checks that every ``torchmetrics.Metric`` of
a task's ``metrics.py`` / ``*_metrics.py`` and of ``core/metrics.py`` is covered by a case.

The ranks share the batches as a DistributedSampler would (batch i on rank i % 2, so the shards are
uneven) and every rank calls ``compute()``. Cases marked ``padded`` also give the short rank a repeated
batch, as DistributedSampler's padding does: metrics that claim to count repeated samples once must
still agree."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torchmetrics

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORLD_SIZE = 2
CASE_MODULES = ("tests/core/test_metrics.py", "tests/tasks/test_*_metrics.py")


@dataclass
class DDPCase:
    """``make()`` builds the metric (or MetricCollection); ``batches()`` gives its update arguments;
    ``covers`` names the task metric classes the case exercises."""

    make: Callable[[], torchmetrics.Metric | torchmetrics.MetricCollection]
    batches: Callable[[], list[tuple]]
    covers: tuple[type, ...] = ()
    padded: bool = False
    rel: float = 1e-6


def case_modules() -> list[str]:
    """The dotted names of the test modules that may declare ``DDP_CASES``, in a fixed order."""
    paths = sorted({path for pattern in CASE_MODULES for path in PROJECT_ROOT.glob(pattern)})
    return [".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts) for path in paths]


def collect_cases() -> dict[str, DDPCase]:
    """Every module's ``DDP_CASES``, merged; two cases of the same name are a mistake, not an override."""
    cases: dict[str, DDPCase] = {}
    for name in case_modules():
        try:
            module = importlib.import_module(name)
        except Exception as err:  # noqa: BLE001  (one system's broken module fails its own case, not the harness)
            cases[f"{name} (import)"] = DDPCase(_raises(f"{name} does not import: {type(err).__name__}: {err}"), list)
            continue
        for case_name, case in getattr(module, "DDP_CASES", {}).items():
            if case_name in cases:
                raise ValueError(f"{name}: DDP case {case_name!r} is declared twice")
            cases[case_name] = case
    return cases


def _raises(message: str) -> Callable[[], Any]:
    def make() -> Any:
        raise RuntimeError(message)

    return make


def task_metric_classes() -> list[str]:
    """ "module:Class" of every public torchmetrics.Metric defined in core/metrics.py and in a
    ``metrics.py`` or ``*_metrics.py`` anywhere under tasks/ (abstract bases excluded)."""
    found = []
    paths = sorted(
        {path for pattern in ("metrics.py", "*_metrics.py") for path in (PROJECT_ROOT / "tasks").rglob(pattern)}
    )
    modules = ["core.metrics"] + [".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts) for path in paths]
    for module_name in modules:
        module = importlib.import_module(module_name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, torchmetrics.Metric)
                and obj.__module__ == module.__name__
                and not name.startswith("_")
                and not inspect.isabstract(obj)
            ):
                found.append(f"{module.__name__}:{name}")
    return found


def covered_classes(cases: dict[str, DDPCase]) -> set[str]:
    """ "module:Class" of every class some case covers."""
    return {f"{cls.__module__}:{cls.__qualname__}" for case in cases.values() for cls in case.covers}


def shard(batches: Sequence[tuple], rank: int, world_size: int, padded: bool) -> list[tuple]:
    """Batch i on rank i % world_size; with ``padded``, short ranks repeat batches from the start."""
    mine = list(batches[rank::world_size])
    if padded:
        longest = math.ceil(len(batches) / world_size)
        mine += list(batches[: longest - len(mine)])
    return mine


def as_numbers(value: Any, prefix: str = "") -> dict[str, float]:
    """A compute() result (tensor, or nested dict of tensors) as flat {name: float}."""
    if isinstance(value, dict):
        out: dict[str, float] = {}
        for key, item in value.items():
            out.update(as_numbers(item, f"{prefix}{key}/" if isinstance(item, dict) else f"{prefix}{key}"))
        return out
    tensor = torch.as_tensor(value).detach().double().reshape(-1)
    if tensor.numel() == 1:
        return {prefix or "value": float(tensor)}
    return {f"{prefix or 'value'}[{i}]": float(v) for i, v in enumerate(tensor)}


def run_case(case: DDPCase, rank: int = 0, world_size: int = 1) -> dict[str, float]:
    metric = case.make()
    for batch in shard(case.batches(), rank, world_size, case.padded and world_size > 1):
        metric.update(*batch)
    return as_numbers(metric.compute())


def worker(rank: int, world_size: int, init_file: str, out: str) -> None:
    """One DDP rank: every case, every rank computes; results (or the error) to ``out``."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=120),
    )
    results: dict[str, Any] = {}
    for name, case in collect_cases().items():
        try:
            results[name] = run_case(case, rank, world_size)
        except Exception as err:  # noqa: BLE001  (reported by the test of this case, not here)
            results[name] = {"error": f"{type(err).__name__}: {err}"}
        dist.barrier()
    Path(out).write_text(json.dumps(results))
    dist.destroy_process_group()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="one rank of the DDP metric harness")
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world-size", type=int, required=True)
    parser.add_argument("--init-file", required=True)
    parser.add_argument("--out", required=True)
    a = parser.parse_args()
    worker(a.rank, a.world_size, a.init_file, a.out)
