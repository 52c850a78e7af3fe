"""Whole-command time of the THUMOS'14 scoring CLI (``python -m tasks.talnet.evaluate``) on a
generated case full of ties, optionally beside an evaluator given on the command line (e.g. the
official ActivityNet ``eval_detection.py`` run from a folder outside the tree), with their numbers.

    python benchmarks/bench_talnet_scorer.py --videos 2130 --detections 200 --out /tmp/tiecase \
        [--official "python /tmp/anet_official/run_official.py {gt} {results} Test"]

The case: per video 1-25 ground-truth segments of 20 classes, 5 % of them written twice (THUMOS'14
has duplicated annotation lines), detections jittered around the ground truth or random, with
scores rounded to 2 decimals (many ties), plus detections on 2 % extra videos outside the
evaluated set. The ground-truth JSON carries the fields both evaluators need."""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from datamodules.thumos14_annotations import THUMOS14_CLASSES as CLASSES


def write_case(out: Path, videos: int, detections: int, seed: int = 0) -> tuple[Path, Path]:
    """Write ``ground_truth.json`` (subset Test) and ``results.json`` into ``out``."""
    rng = np.random.default_rng(seed)
    database, results = {}, {}
    extra = max(1, videos // 50)
    for v in range(videos + extra):
        name = f"video_test_{v:07d}"
        duration = float(rng.uniform(30, 600))
        n = int(rng.integers(1, 26))
        labels = rng.integers(0, 20, n)
        starts = np.round(rng.uniform(0, duration - 12, n), 1)
        ends = np.round(starts + rng.uniform(1, 10, n), 1)
        anns = [{"label": CLASSES[c], "segment": [float(s), float(e)]} for c, s, e in zip(labels, starts, ends)]
        anns += [a for a in anns if rng.random() < 0.05]  # duplicated annotation lines
        if v < videos:
            database[name] = {
                "subset": "Test",
                "duration": duration,
                "fps": 30.0,
                "annotations": anns,
            }
        pick = rng.integers(0, n, detections)
        seg = np.sort(np.round(np.stack([starts, ends], 1)[pick] + rng.normal(0, 1.0, (detections, 2)), 1), 1)
        lab = np.where(rng.random(detections) < 0.6, labels[pick], rng.integers(0, 20, detections))
        score = np.round(rng.random(detections), 2)
        results[name] = [
            {"label": CLASSES[c], "score": float(p), "segment": [float(s), float(e)]}
            for c, (s, e), p in zip(lab, seg, score)
        ]
    for c in CLASSES:  # every class has ground truth (the official evaluator needs that)
        assert any(a["label"] == c for v in database.values() for a in v["annotations"])
    out.mkdir(parents=True, exist_ok=True)
    gt_path, res_path = out / "ground_truth.json", out / "results.json"
    gt_path.write_text(json.dumps({"version": "tie-case", "taxonomy": [], "database": database}))
    res_path.write_text(json.dumps({"version": "tie-case", "results": results, "external_data": {}}))
    return gt_path, res_path


def timed(command: list[str], cwd: str | None = None) -> tuple[float, str]:
    t = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, check=True)
    return time.perf_counter() - t, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=2130)
    parser.add_argument("--detections", type=int, default=200)
    parser.add_argument("--out", default="/tmp/talnet_tie_case")
    parser.add_argument("--official", default=None, help="command with {gt} and {results}")
    args = parser.parse_args()
    gt, res = write_case(Path(args.out), args.videos, args.detections)
    print(f"{args.videos} videos (+{max(1, args.videos // 50)} outside the set) x {args.detections} detections")
    ours = [sys.executable, "-m", "tasks.talnet.evaluate", str(res), "--annotations", str(gt)]
    seconds, stdout = timed(ours)
    print(f"ours: whole command {seconds:.2f} s")
    print(stdout)
    if args.official:
        command = shlex.split(args.official.format(gt=gt, results=res))
        seconds_official, stdout = timed(command)
        print(f"official: whole command {seconds_official:.2f} s ({seconds_official / seconds:.1f}x ours)")
        print(stdout)


if __name__ == "__main__":
    main()
