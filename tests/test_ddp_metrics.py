"""Every task's metrics on 2 gloo processes equal the single-process value on the same data.

The cases live beside each system's metric tests (``DDP_CASES`` in tests/tasks/test_<system>*_metrics.py,
the per-sample base's in tests/core/test_metrics.py); tests/ddp.py gathers them and is one rank. All
cases run once in one pair of real processes (``torch.distributed`` over gloo); each is then compared
with its single-process value computed here. A new ``torchmetrics.Metric`` in a task's metrics module
or ``core/metrics.py`` without a case fails ``test_every_task_metric_has_a_ddp_case``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.ddp import PROJECT_ROOT, WORLD_SIZE, collect_cases, covered_classes, run_case, shard, task_metric_classes

CASES = collect_cases()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> list[dict[str, Any]]:
    """Run all cases once on 2 real gloo processes; one result dict per rank."""
    tmp = tmp_path_factory.mktemp("ddp_metrics")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.ddp", "--rank", str(r), "--world-size", str(WORLD_SIZE)]
            + ["--init-file", str(tmp / "init"), "--out", str(tmp / f"rank{r}.json")],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(WORLD_SIZE)
    ]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for r, p in enumerate(procs):
        assert p.returncode == 0, f"rank {r} failed ({p.returncode}):\n{logs[r][-4000:]}"
    return [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(WORLD_SIZE)]


@pytest.mark.parametrize("name", list(CASES))
def test_metric_on_two_gloo_processes_equals_one_process(name, ddp_results):
    case = CASES[name]
    single = run_case(case)
    assert single, f"{name}: compute() returned nothing"
    for rank, results in enumerate(ddp_results):
        got = results[name]
        assert "error" not in got, f"{name} on rank {rank}: {got.get('error')}"
        assert got.keys() == single.keys()
        for key, value in single.items():
            assert got[key] == pytest.approx(value, rel=case.rel, abs=1e-9), f"{name} {key} on rank {rank}"


def test_uneven_shards_are_really_uneven():
    """The harness must exercise variable-length gathers: ranks get different amounts of data."""
    batches = CASES["talnet/detection_mAP"].batches()
    sizes = [
        sum(len(d) for _, dets, _ in shard(batches, r, WORLD_SIZE, False) for d in dets) for r in range(WORLD_SIZE)
    ]
    assert len(set(sizes)) == WORLD_SIZE, sizes
    padded = shard(batches, 1, WORLD_SIZE, True)
    assert len(padded) == len(shard(batches, 0, WORLD_SIZE, True)) and padded[-1] is batches[0]


def test_every_task_metric_has_a_ddp_case():
    missing = [m for m in task_metric_classes() if m not in covered_classes(CASES)]
    assert not missing, f"no DDP case for {missing}: add one to DDP_CASES in tests/tasks/test_<system>_metrics.py"
