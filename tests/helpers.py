"""Run the real entry points (train.py, eval.py) as a user would, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from core.resolvers import PROJECT_ROOT


def run_entry(script: str, args: list[str], timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python <script> <args>`` from the project root; raises with the output on failure."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_SILENT": "true", **(env or {})}
    full_env.pop("VISIONLAB_RUN_ID", None)  # each run resolves its own id
    proc = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / script), *args], cwd=PROJECT_ROOT, env=full_env,
        capture_output=True, text=True, timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def read_metrics(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())
