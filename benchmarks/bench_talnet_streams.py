"""The TALNet demo on generated THUMOS'14-layout data, from raw videos through feature extraction,
under the clean protocol: every run selects its checkpoint on a held-out fifth of the validation
videos and is tested once. Trains RGB-only, flow-only, early-fusion and jointly trained late-fusion
runs; fuses the separate RGB and flow runs from their checkpoints (the paper's late fusion and the
proposal-union variant); scores a random-proposal baseline and random detections; and, for the
before/after comparison, repeats two runs the old way (checkpoint selected on the test split).

    OMP_NUM_THREADS=1 python benchmarks/bench_talnet_streams.py --out /tmp/talnet_demo [--epochs 30]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
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


def random_detections(annotation_file: Path, out: Path, per_video: int = 200, seed: int = 0) -> Path:
    """Chance floor: uniformly random segments, classes and scores, in the ActivityNet format."""
    from datamodules.thumos14_annotations import THUMOS14_CLASSES

    rng = np.random.default_rng(seed)
    database = json.loads(annotation_file.read_text())["database"]
    results = {}
    for video, entry in database.items():
        if entry["subset"] != "Test":
            continue  # detections elsewhere would be scored as false positives
        start = rng.uniform(0, entry["duration"], per_video)
        length = np.exp(rng.uniform(np.log(0.5), np.log(entry["duration"]), per_video))
        results[video] = [
            {
                "label": THUMOS14_CLASSES[int(c)],
                "score": float(s),
                "segment": [float(a), float(min(a + b, entry["duration"]))],
            }
            for a, b, c, s in zip(start, length, rng.integers(0, 6, per_video), rng.random(per_video))
        ]
    out.write_text(json.dumps({"version": "THUMOS14", "results": results, "external_data": {}}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/talnet_demo"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2, help="training runs at once")
    args = parser.parse_args()
    out = args.out.resolve()
    common = ["data=thumos14", f"paths.data_dir={out / 'data'}", f"paths.log_dir={out / 'logs'}"]
    train = [*common, f"trainer.max_epochs={args.epochs}", "callbacks.rich_progress_bar=null"]
    rows = {}
    runs = {  # name: (run folder, overrides)
        "rgb stream": ("rgb_stream", ["task.modalities=[rgb]"]),
        "flow stream": ("flow_stream", ["task.modalities=[flow]"]),
        "early fusion (one stream, joint)": (
            "early_fusion",
            ["task.modalities=[rgb,flow]", "task.fusion=early"],
        ),
        "late fusion, trained jointly": ("late_fusion", ["task.modalities=[rgb,flow]", "task.fusion=late"]),
        "BEFORE: rgb, selected on test": (
            "before_rgb",
            ["task.modalities=[rgb]", "data.val_subset=Test", "data.allow_test_selection=true"],
        ),
        "BEFORE: union joint, selected on test": (
            "before_union_joint",
            [
                "task.modalities=[rgb,flow]",
                "task.fusion=union",
                "data.val_subset=Test",
                "data.allow_test_selection=true",
            ],
        ),
    }
    print("training (the first run generates the videos and extracts features):")
    slug = {name: folder for name, (folder, _) in runs.items()}

    def trained(name: str) -> dict:
        """Train one run, or read the metrics of a finished one (the bench resumes)."""
        folder, extra = runs[name]
        done = out / "runs" / folder / "metrics.json"
        if done.exists():
            return json.loads(done.read_text())["metrics"]
        return run("train.py", ["task=talnet", *train, *extra], out / "runs" / folder)

    first = next(iter(runs))
    rows[first] = trained(first)  # generates the videos and extracts the features once
    with ThreadPoolExecutor(args.jobs) as pool:
        jobs = {name: pool.submit(trained, name) for name in runs if name != first}
        rows.update({name: job.result() for name, job in jobs.items()})
    rows = {name: rows[name] for name in runs}

    def best(name: str) -> Path:
        return Path(json.loads((out / "runs" / slug[name] / "metrics.json").read_text())["best_checkpoint"])

    fusion = [
        "task=talnet_fusion",
        *common,
        "ckpt_path=null",
        f"task.stream_checkpoints.rgb={best('rgb stream')}",
        f"task.stream_checkpoints.flow={best('flow stream')}",
    ]
    print("fusing the separate runs' selected checkpoints:")
    rows["late fusion of the two runs (paper)"] = run("eval.py", [*fusion, "task.fusion=late"], out / "eval" / "late")
    rows["union fusion of the two runs"] = run("eval.py", [*fusion, "task.fusion=union"], out / "eval" / "union")
    rows["random proposals + late-fused classifiers"] = run(
        "eval.py", [*fusion, "task.proposal_source=random"], out / "eval" / "random_proposals"
    )
    features = out / "data" / "thumos14" / "features" / "test_resnet_random"
    chance = random_detections(features / "thumos14.json", out / "random_detections.json")
    from tasks.talnet.evaluate import main as score

    metrics = score([str(chance), "--annotations", str(features / "thumos14.json")])
    rows["random detections (chance)"] = {f"test/mAP@{t}": metrics[f"mAP@{t}"] for t in THRESHOLDS} | {
        "test/mAP": metrics["mAP"]
    }
    print()
    header = f"{'':42s}" + "".join(f"{t:>7s}" for t in THRESHOLDS) + f"{'0.3:0.7':>9s}{'AR@100':>8s}"
    print(header)
    for name, m in rows.items():
        ar = m.get("test/AR@100")
        print(
            f"{name:42s}"
            + "".join(f"{100 * m[f'test/mAP@{t}']:7.1f}" for t in THRESHOLDS)
            + f"{100 * m['test/mAP']:9.1f}"
            + (f"{100 * ar:8.1f}" if ar is not None else f"{'-':>8s}")
        )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
