"""Scoring speed of the Open Images Challenge visual-relationship CLI: N images with D detections each
(time and peak memory), and, when the official evaluator is installed beside the project, its time and
score on the same files (the ratio). Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_openimages_relationship_metric.py --images 10000 --detections 60
    .venv/bin/python benchmarks/bench_openimages_relationship_metric.py --images 2000 \\
        --official-python /tmp/oid_venv/bin/python --official-script /tmp/oid_vrd/official_vrd_score.py

The official run is a separate interpreter (tensorflow/models object_detection with TensorFlow, in a
virtual environment outside the project) given ``<annotations dir> <submission.csv> <out.json>``; it
prints JSON with ``score``, its three parts and ``seconds``."""

from __future__ import annotations

import argparse
import csv
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

from datamodules.openimages_files import RELATIONSHIP_COLUMNS  # noqa: E402
from datamodules.openimages_relationships import CHALLENGE_VRD_FILES, Relationship  # noqa: E402
from tasks.openimages.relationship.protocol import score_relationship, write_relationship_submission  # noqa: E402

RELATIONSHIPS = ("at", "on", "holds", "plays", "interacts_with", "wears", "is", "inside_of", "under", "hits")
PARTS = ("score", "map_relationship", "recall50_relationship", "map_phrase")


def _write(path: Path, header, rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        if header:
            writer.writerow(header)
        writer.writerows(rows)


def write_files(root: Path, images: int, detections: int, seed: int) -> Path:
    """Challenge VRD files (57 classes, 5 attributes, the 10 challenge relationships with "is" on identical
    boxes, 0-5 relationships and 2 verified labels per image) + a Kaggle submission: jittered copies of the
    ground truth (30 % with a random relationship), then random tuples up to D per image."""
    rng = np.random.default_rng(seed)
    classes = [f"/m/0b{i:04d}" for i in range(57)]
    attributes = [f"/m/0a{i:04d}" for i in range(5)]

    def box() -> tuple[float, ...]:
        w, h = rng.uniform(0.05, 0.6, 2)
        x, y = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
        return tuple(round(v, 6) for v in (x, y, x + w, y + h))

    def jitter(b) -> tuple[float, ...]:
        x1, y1, x2, y2 = np.clip(np.asarray(b) + rng.normal(0, 0.04, 4), 0, 1)
        return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))

    vrd_rows, label_rows, predictions = [], [], {}
    for index in range(images):
        image_id = f"{index:016x}"
        objects = [(classes[int(rng.integers(0, 12))], box()) for _ in range(int(rng.integers(0, 6)))]
        truth = []
        for _ in range(int(rng.integers(0, 6)) if len(objects) >= 2 else 0):
            i, j = rng.choice(len(objects), 2, replace=False)
            name = RELATIONSHIPS[int(rng.integers(0, len(RELATIONSHIPS)))]
            if name == "is":
                truth.append(
                    Relationship(objects[i][0], attributes[int(rng.integers(0, 5))], objects[i][1], objects[i][1], name)
                )
            else:
                truth.append(Relationship(objects[i][0], objects[j][0], objects[i][1], objects[j][1], name))
        for r in truth:
            (a1, b1, a2, b2), (c1, d1, c2, d2) = r.box1, r.box2
            vrd_rows.append([image_id, r.label1, r.label2, a1, a2, b1, b2, c1, c2, d1, d2, r.relationship])
        present = sorted({c for c, _ in objects})
        label_rows += [[image_id, "verification", c, 1] for c in present]
        label_rows += [
            [image_id, "verification", c, 0] for c in rng.choice(classes[:12], 2, replace=False) if c not in present
        ]
        rows = []
        for r in truth:
            for _ in range(int(rng.integers(0, 3))):
                name = r.relationship if rng.random() < 0.7 else RELATIONSHIPS[int(rng.integers(0, len(RELATIONSHIPS)))]
                b1 = jitter(r.box1)
                rows.append(
                    (
                        float(rng.random()),
                        Relationship(r.label1, r.label2, b1, b1 if r.relationship == "is" else jitter(r.box2), name),
                    )
                )
        while len(rows) < detections:
            a, b = (classes[int(rng.integers(0, 14))] for _ in range(2))
            name = RELATIONSHIPS[int(rng.integers(0, len(RELATIONSHIPS)))]
            rows.append((float(rng.random()), Relationship(a, b, box(), box(), name)))
        predictions[image_id] = rows[: max(detections, 1)]
    root.mkdir(parents=True, exist_ok=True)
    _write(root / CHALLENGE_VRD_FILES["relationships"], RELATIONSHIP_COLUMNS, vrd_rows)
    _write(root / CHALLENGE_VRD_FILES["image_labels"], ["ImageID", "Source", "LabelName", "Confidence"], label_rows)
    _write(root / CHALLENGE_VRD_FILES["classes"], None, [[c, c] for c in classes])
    _write(root / CHALLENGE_VRD_FILES["attributes"], None, [[a, a] for a in attributes])
    _write(root / CHALLENGE_VRD_FILES["relationship_names"], None, [[r, r] for r in RELATIONSHIPS])
    return write_relationship_submission(root / "submission.csv", predictions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--detections", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the files here (default: a temp dir)")
    parser.add_argument("--official-python", default=None)
    parser.add_argument("--official-script", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        start = time.perf_counter()
        submission = write_files(root, args.images, args.detections, args.seed)
        print(f"wrote {args.images} images x {args.detections} detections in {time.perf_counter() - start:.1f} s")
        ours = score_relationship(submission, root)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"ours: {json.dumps({k: round(ours[k], 10) for k in PARTS})}  {ours['seconds']:.1f} s, "
            f"peak RSS {peak:.0f} MiB"
        )
        if args.official_python and args.official_script:
            env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
            out = root / "official.json"
            subprocess.run(
                [args.official_python, args.official_script, str(root), str(submission), str(out)],
                check=True, env=env, capture_output=True,
            )  # fmt: skip
            official = json.loads(out.read_text())
            diff = max(abs(official[k] - ours[k]) for k in PARTS)
            print(
                f"official: {json.dumps({k: round(official[k], 10) for k in PARTS})}  {official['seconds']:.1f} s "
                f"(+{official['import_seconds']:.1f} s import); max |difference| {diff:.1e}; "
                f"official/ours {official['seconds'] / ours['seconds']:.1f}x"
            )


if __name__ == "__main__":
    main()
