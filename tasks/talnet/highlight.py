"""The highlight of a video: its top-scoring action, cut out with its context and ready to share.

    python -m tasks.talnet.highlight <video> --checkpoint <ckpt> [--out highlight.mp4]

Extracts the video's snippet features with the extractor settings recorded in the checkpoint (the
settings of the data it was trained on; decord decodes), detects actions, takes the best-scored
detection, extends it by the model's context ratio on each side (the context its classifier saw)
and writes, next to ``--out``: ``<name>.mp4`` (the clip at the source frame rate), ``<name>.gif``
(looping, at most 10 fps and 320 px wide), ``<name>_detections.json`` (every detection of the
video in the ActivityNet results format, plus the chosen highlight) and ``<name>_timeline.png``.
A video that cannot be read, or is shorter than one snippet, gets a clear error.

A thin wrapper over predict.py's product writer (tasks/talnet/predict.py, run by core.prediction.predict_files):
the same video reader, feature extraction, checkpoint checks and error messages, and the same highlight cut
(``python predict.py task=talnet`` writes it for many videos, with resume)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.io import atomic_write_json
from core.prediction import predict_files
from datamodules.predict_inputs import VideoInputs
from tasks.talnet.predict import TALNetProduct


def make_highlight(
    video_path: str | Path,
    task,
    out_dir: str | Path,
    name: str = "highlight",
    extractor_settings: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Detect actions in ``video_path`` with ``task`` (a TALNetTask) and write the highlight files
    into ``out_dir``; returns their paths under the keys ``mp4``, ``gif``, ``detections``
    (JSON) and ``timeline`` (PNG).

    ``extractor_settings`` (``SnippetFeatureExtractor.settings()``) default to the ones recorded
    in the task's checkpoint; a task trained on pre-extracted features has none and must be given
    them."""
    from tasks.talnet.module import activitynet_results
    from tasks.talnet.visualize import plot_timeline

    writer = TALNetProduct(extractor=extractor_settings, highlight=True, highlight_gif=True)
    writer.highlight_dir = "."  # <out_dir>/<name>.mp4 and .gif, not predict.py's highlights/ folder
    out_dir = Path(out_dir)
    inputs = VideoInputs(str(video_path))
    (record,) = predict_files(task, writer, [(inputs.paths[0], name)], inputs.read, out_dir)
    if "highlight" not in record:
        raise ValueError(f"{video_path}: no action detected, so no highlight")
    paths = {
        "mp4": out_dir / record["highlight"]["file"],
        "gif": out_dir / record["highlight"]["gif"],
        "detections": out_dir / f"{name}_detections.json",
        "timeline": out_dir / f"{name}_timeline.png",
    }
    output = {
        "video": Path(video_path).stem,
        "duration": record["duration"],
        "detections": np.asarray(record["detections"]).reshape(-1, 4),
        "segments": np.zeros((0, 2)),
        "labels": np.zeros(0, dtype=np.int64),
    }
    results = activitynet_results([output], writer.names)
    highlight = {k: v for k, v in record["highlight"].items() if k not in ("file", "gif")}
    results["highlight"] = {"video": str(video_path), **highlight, "context_ratio": writer.context_ratio}
    atomic_write_json(paths["detections"], results)
    plot_timeline([output], writer.names, paths["timeline"])
    return paths


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", help="any video decord can read")
    parser.add_argument("--checkpoint", required=True, help="a TALNetTask checkpoint (.ckpt)")
    parser.add_argument("--out", default="highlight.mp4", help="the MP4 to write; the rest beside it")
    args = parser.parse_args(argv)
    from core.checkpoint import load_task
    from tasks.talnet.module import TALNetTask

    task = load_task(args.checkpoint, TALNetTask)
    out = Path(args.out)
    paths = make_highlight(args.video, task, out.parent, out.stem)
    for key, path in paths.items():
        print(f"{key:>10s}  {path}")
    return paths


if __name__ == "__main__":
    main(sys.argv[1:])
