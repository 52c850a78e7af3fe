"""Run the real entry points (train.py, eval.py) as a user would, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.resolvers import PROJECT_ROOT


def run_entry(
    script: str, args: list[str], timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``python <script> <args>`` from the project root; raises with the output on failure."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_SILENT": "true", **(env or {})}
    full_env.pop("VISIONLAB_RUN_ID", None)  # each run resolves its own id
    proc = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / script), *args],
        cwd=PROJECT_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{script} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def read_metrics(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def read_wandb_records(path: Path) -> list:
    """The protobuf Records of an offline W&B run file (``run-<id>.wandb``).

    The file is a W&B header (':W&B', magic, version: 7 bytes) then LevelDB-log style chunks in
    32 KiB blocks (crc32, little-endian length, type FULL/FIRST/MIDDLE/LAST) holding protobuf
    Records; offline runs keep their metrics only there until ``wandb sync``."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B run file"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room left for a chunk header: next block
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def read_wandb_run(path: Path) -> tuple[dict[str, list], dict]:
    """The metric history and config of an offline W&B run file (``run-<id>.wandb``)."""
    history: dict[str, list] = {}
    config: dict = {}
    for record in read_wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            for item in record.history.item:
                history.setdefault(item.key or "/".join(item.nested_key), []).append(json.loads(item.value_json))
        elif kind == "config":
            for item in record.config.update:
                config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return history, config


def read_wandb_run_info(path: Path) -> dict:
    """The run's identity and end from an offline W&B run file: ``id``, ``group``, ``name`` (from
    its run record) and ``exit_code`` (None when the run was never finished)."""
    info: dict = {"id": None, "group": None, "name": None, "exit_code": None}
    for record in read_wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            info.update(id=record.run.run_id, group=record.run.run_group, name=record.run.display_name)
        elif kind == "exit":
            info["exit_code"] = record.exit.exit_code
    return info


MEDIAPIPE_VERSION = "0.10.14"


def mediapipe_wheel() -> Path:
    """The mediapipe wheel `make mediapipe-models` fetched with pip into <data dir>/mediapipe/ (tests and CI
    share it; nothing downloads during a test); skips the calling test when it is not there."""
    folder = Path(os.environ.get("VISIONLAB_DATA", PROJECT_ROOT / "data")) / "mediapipe"
    wheels = sorted(folder.glob(f"mediapipe-{MEDIAPIPE_VERSION}-*.whl"))
    if not wheels:
        pytest.skip(f"no mediapipe-{MEDIAPIPE_VERSION} wheel in {folder}: run `make mediapipe-models` (pip download)")
    return wheels[0]


def mediapipe_topology_file() -> Path:
    """MediaPipe's canonical mesh with the generator's (u, v), which `make mediapipe-models` writes to
    <data dir>/mediapipe/face_topology.json: the default topology of data=facemesh and task=facemesh (it
    comes from running the imported networks, so it needs the wheel); skips the calling test without it."""
    path = Path(os.environ.get("VISIONLAB_DATA", PROJECT_ROOT / "data")) / "mediapipe" / "face_topology.json"
    if not path.is_file():
        pytest.skip(f"no {path}: run `make mediapipe-models` (MediaPipe's mesh, the face mesh's default topology)")
    return path
