"""The TALNet demo on generated THUMOS'14-layout data, from raw videos through feature extraction:
train RGB-only, flow-only and joint runs, fuse the separate streams from their checkpoints, score a
random-proposal baseline, and print mAP per tIoU for each.

    OMP_NUM_THREADS=1 python benchmarks/bench_talnet_streams.py --out /tmp/talnet_demo [--epochs 30]

Every number comes from `python eval.py` on the runs' last checkpoints (no test-set selection)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
THRESHOLDS = ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"]


def run(script: str, args: list[str], run_dir: Path) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("VISIONLAB_RUN_ID", None)
    t = time.perf_counter()
    cmd = [sys.executable, str(ROOT / script), *args, f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    print(f"  {script} {' '.join(args[:4])} ... ({time.perf_counter() - t:.0f} s)", flush=True)
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


def random_detections(
    annotation_file: Path, out: Path, per_video: int = 200, seed: int = 0
) -> Path:
    """Chance floor: uniformly random segments, classes and scores, in the ActivityNet format."""
    from datamodules.thumos14_annotations import THUMOS14_CLASSES

    rng = np.random.default_rng(seed)
    database = json.loads(annotation_file.read_text())["database"]
    results = {}
    for video, entry in database.items():
        start = rng.uniform(0, entry["duration"], per_video)
        length = np.exp(rng.uniform(np.log(0.5), np.log(entry["duration"]), per_video))
        results[video] = [
            {
                "label": THUMOS14_CLASSES[int(c)],
                "score": float(s),
                "segment": [float(a), float(min(a + b, entry["duration"]))],
            }
            for a, b, c, s in zip(
                start, length, rng.integers(0, 6, per_video), rng.random(per_video)
            )
        ]
    out.write_text(json.dumps({"version": "THUMOS14", "results": results, "external_data": {}}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/talnet_demo"))
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    out = args.out.resolve()
    common = ["data=thumos14", f"paths.data_dir={out / 'data'}", f"paths.log_dir={out / 'logs'}"]
    train = [*common, f"trainer.max_epochs={args.epochs}", "callbacks.rich_progress_bar=null"]
    rows = {}
    ckpt = {}
    print("training (the first run generates the videos and extracts features):")
    for name, modalities in (("rgb", "[rgb]"), ("flow", "[flow]"), ("joint", "[rgb,flow]")):
        run(
            "train.py",
            ["task=talnet", *train, f"task.modalities={modalities}"],
            out / "runs" / name,
        )
        ckpt[name] = out / "runs" / name / "checkpoints" / "last.ckpt"
    print("evaluating last checkpoints:")
    for name in ("rgb", "flow", "joint"):
        rows[f"{name} stream" if name != "joint" else "joint training"] = run(
            "eval.py", ["task=talnet", *common, f"ckpt_path={ckpt[name]}"], out / "eval" / name
        )
    fusion = [
        "task=talnet_fusion",
        *common,
        "ckpt_path=null",
        f"task.stream_checkpoints.rgb={ckpt['rgb']}",
        f"task.stream_checkpoints.flow={ckpt['flow']}",
    ]
    rows["late fusion (rgb+flow runs)"] = run("eval.py", fusion, out / "eval" / "fusion")
    rows["random proposals + fused classifiers"] = run(
        "eval.py", [*fusion, "task.proposal_source=random"], out / "eval" / "random_proposals"
    )
    features = out / "data" / "thumos14" / "features" / "test_resnet_random"
    chance = random_detections(features / "thumos14.json", out / "random_detections.json")
    from tasks.talnet.evaluate import main as score

    metrics = score([str(chance), "--annotations", str(features / "thumos14.json")])
    rows["random detections (chance)"] = {
        f"test/mAP@{t}": metrics[f"mAP@{t}"] for t in THRESHOLDS
    } | {"test/mAP": metrics["mAP"]}
    print()
    header = (
        f"{'':38s}" + "".join(f"{t:>7s}" for t in THRESHOLDS) + f"{'0.3:0.7':>9s}{'AR@100':>8s}"
    )
    print(header)
    for name, m in rows.items():
        ar = m.get("test/AR@100")
        print(
            f"{name:38s}"
            + "".join(f"{100 * m[f'test/mAP@{t}']:7.1f}" for t in THRESHOLDS)
            + f"{100 * m['test/mAP']:9.1f}"
            + (f"{100 * ar:8.1f}" if ar is not None else f"{'-':>8s}")
        )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
