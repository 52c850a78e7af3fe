"""core.sweeps: the sweep-folder reader every summary uses, and the best job by monitor.mode."""

from __future__ import annotations

import pytest

from core.data import DataFormatError
from core.io import atomic_write_json
from core.sweeps import best_job, read_sweep


def _job(sweep, num, value, mode="min", metric="val/loss"):
    folder = sweep / str(num)
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(f"- seed={num}\n")
    if value is not None:
        atomic_write_json(
            folder / "metrics.json", {"monitor": {"metric": metric, "mode": mode}, "metrics": {metric: value}}
        )


def test_read_sweep_orders_jobs_and_marks_unfinished_ones(tmp_path):
    for num, value in ((10, 0.3), (2, 0.5), (0, None)):
        _job(tmp_path, num, value)
    (tmp_path / ".submitit").mkdir()  # not a job folder
    jobs = read_sweep(tmp_path)
    assert [j["job"] for j in jobs] == ["0", "2", "10"]
    assert [j["status"] for j in jobs] == ["unfinished", "done", "done"]
    assert jobs[1]["overrides"] == ["seed=2"] and jobs[2]["value"] == 0.3


def test_best_job_honours_monitor_mode(tmp_path):
    for num, value in ((0, 0.3), (1, 0.5), (2, float("nan"))):
        _job(tmp_path / "min", num, value, mode="min")
        _job(tmp_path / "max", num, value, mode="max", metric="val/acc")
    assert best_job(read_sweep(tmp_path / "min"))["job"] == "0"  # lower loss wins, NaN ignored
    assert best_job(read_sweep(tmp_path / "max"))["job"] == "1"
    assert best_job(read_sweep(tmp_path / "min"), mode="max")["job"] == "1"


def test_best_job_refuses_jobs_that_monitor_different_things(tmp_path):
    _job(tmp_path, 0, 0.3, mode="min")
    _job(tmp_path, 1, 0.9, mode="max", metric="val/acc")
    with pytest.raises(ValueError, match="monitor different metrics"):
        best_job(read_sweep(tmp_path))


def test_empty_sweep_and_broken_metrics_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no job folders"):
        read_sweep(tmp_path)
    _job(tmp_path, 0, None)
    (tmp_path / "0" / "metrics.json").write_text('{"monitor": {\n  "metric": }\n')
    with pytest.raises(DataFormatError, match=r"0/metrics.json:2: not valid JSON"):
        read_sweep(tmp_path)
