"""Scoring speed of the Open Images Challenge detection CLI: N images with D detections each (time and
peak memory), and, when the official evaluator is installed beside the project, its time and mAP on the
same files (the ratio). Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_openimages_metric.py --images 100000 --detections 100
    .venv/bin/python benchmarks/bench_openimages_metric.py --images 10000 \\
        --official-python /tmp/oid_venv/bin/python --official-script /tmp/oid_compare/official_score.py

The official run is a separate interpreter (tensorflow/models object_detection with TensorFlow, in a
virtual environment outside the project) given ``<annotations dir> <submission.csv> <out.json>``; it
prints JSON with ``mAP`` and ``seconds``."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datamodules.openimages_files import CHALLENGE_FILES  # noqa: E402
from tasks.openimages.evaluate import score_detection  # noqa: E402

BOX_HEADER = (
    "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside"
)


def write_files(root: Path, images: int, detections: int, leaves: int, parents: int, seed: int) -> Path:
    """Challenge files + a Kaggle submission: ~3 boxes and ~3 verified labels per image, half of the
    detections jittered copies of ground truth (leaf and parent labels), the rest random."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    leaf = [f"/m/0l{i:04d}" for i in range(leaves)]
    parent = [f"/m/0p{i:04d}" for i in range(parents)]
    tree = {
        "LabelName": "/m/0bl9f",
        "Subcategory": [
            {
                "LabelName": p,
                "Subcategory": [
                    {"LabelName": leaf[j]} for j in range(leaves) if j % parents == k or j % (parents + 1) == k
                ],
            }
            for k, p in enumerate(parent)
        ],
    }
    (root / CHALLENGE_FILES["hierarchy"]).write_text(json.dumps(tree))
    (root / CHALLENGE_FILES["classes"]).write_text(
        "MID,DisplayName\n" + "".join(f"{m},class {m}\n" for m in leaf + parent)
    )
    ids = [f"{i:016x}" for i in range(images)]
    n_box = rng.integers(1, 6, images)
    img_of_box = np.repeat(np.arange(images), n_box)
    nb = len(img_of_box)
    xy = rng.uniform(0, 0.7, (nb, 2))
    wh = rng.uniform(0.05, 0.3, (nb, 2))
    box_label = rng.integers(0, leaves, nb)
    group = rng.random(nb) < 0.1
    with open(root / CHALLENGE_FILES["boxes"], "w") as f:
        f.write(BOX_HEADER + "\n")
        for i in range(nb):
            f.write(
                f"{ids[img_of_box[i]]},xclick,{leaf[box_label[i]]},1,{xy[i, 0]:.6f},{xy[i, 0] + wh[i, 0]:.6f},"
                f"{xy[i, 1]:.6f},{xy[i, 1] + wh[i, 1]:.6f},0,0,{int(group[i])},0,0\n"
            )
    with open(root / CHALLENGE_FILES["image_labels"], "w") as f:
        f.write("ImageID,Source,LabelName,Confidence\n")
        for i in range(images):
            for c in rng.choice(leaves + parents, 3, replace=False):
                f.write(f"{ids[i]},verification,{(leaf + parent)[c]},{int(rng.random() < 0.6)}\n")
    first = np.concatenate([[0], np.cumsum(n_box)[:-1]])
    names = np.array(leaf + parent)
    with open(root / "submission.csv", "w") as f:
        f.write("ImageId,PredictionString\n")
        for i in range(images):
            k = rng.integers(first[i], first[i] + n_box[i], detections)
            copy = rng.random(detections) < 0.5
            b = np.where(copy[:, None], np.concatenate([xy[k], xy[k] + wh[k]], 1), rng.uniform(0, 0.5, (detections, 4)))
            b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 0.02)
            b = np.clip(b + rng.normal(0, 0.02, b.shape), 0, 1)
            lab = np.where(copy, box_label[k], rng.integers(0, leaves + parents, detections))
            lab = np.where(copy & (rng.random(detections) < 0.2), leaves + box_label[k] % parents, lab)
            s = np.round(rng.random(detections), 4)
            groups = (
                f"{names[lab[j]]} {s[j]} {b[j, 0]:.4f} {b[j, 1]:.4f} {b[j, 2]:.4f} {b[j, 3]:.4f}"
                for j in range(detections)
            )
            f.write(ids[i] + "," + " ".join(groups) + "\n")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--detections", type=int, default=100)
    parser.add_argument("--leaves", type=int, default=450)
    parser.add_argument("--parents", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the files (default: a temp dir)")
    parser.add_argument("--official-python", default=None)
    parser.add_argument("--official-script", default=None)
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="bench_openimages_"))
    t0 = time.perf_counter()
    write_files(root, args.images, args.detections, args.leaves, args.parents, args.seed)
    print(f"files: {args.images} images x {args.detections} detections in {root} ({time.perf_counter() - t0:.1f} s)")
    result = score_detection(root / "submission.csv", root)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"ours: mAP {result['mAP']:.10f} over {len(result['per_class_AP'])} classes; "
          f"{result['seconds']:.1f} s; peak RSS {peak_mib:.0f} MiB")  # fmt: skip
    if args.official_python and args.official_script:
        env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python", "TF_CPP_MIN_LOG_LEVEL": "3"}
        out = root / "official.json"
        subprocess.run(
            [args.official_python, args.official_script, str(root), str(root / "submission.csv"), str(out)],
            check=True, env=env, capture_output=True,
        )  # fmt: skip
        official = json.loads(out.read_text())
        diffs = [
            abs(official["per_class_AP"][k] - result["per_class_AP"].get(k, np.nan)) for k in official["per_class_AP"]
        ]
        print(
            f"official: mAP {official['mAP']:.10f}; {official['seconds']:.1f} s "
            f"(+{official['import_seconds']:.1f} s import)"
        )
        print(f"|mAP difference| {abs(official['mAP'] - result['mAP']):.2e}; max |per-class AP difference| "
              f"{np.nanmax(diffs):.2e} over {len(diffs)} classes (same class set: "
              f"{set(official['per_class_AP']) == set(result['per_class_AP'])}); "
              f"time ratio official/ours {official['seconds'] / result['seconds']:.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
