"""TALNet on a user's videos (predict.py): the detections of every video in the ActivityNet results
format (``detections_activitynet.json``), a timeline plot (``timeline.png``) and, per video, the
highlight clip of its top-scoring detection (``highlights/<video>.mp4``, with its context)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.io import atomic_path, atomic_write_json
from core.prediction import ProductWriter

log = logging.getLogger(__name__)

RESULTS_FILE = "detections_activitynet.json"
TIMELINE_FILE = "timeline.png"
HIGHLIGHT_DIR = "highlights"
GIF_MAX_FPS = 10.0
GIF_MAX_WIDTH = 320


def cut_clip(video_path: str | Path, start: float, end: float) -> tuple[np.ndarray, float]:
    """Frames (n, H, W, 3) of ``[start, end)`` seconds at the source frame rate, and that rate."""
    from core.video import open_video, read_frames

    reader = open_video(video_path)
    fps = float(reader.get_avg_fps())
    first = max(0, int(np.floor(start * fps)))
    last = min(len(reader), max(first + 1, int(np.ceil(end * fps))))
    return read_frames(reader, list(range(first, last)), video_path), fps


def write_gif(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """A looping GIF of ``frames``, at most ``GIF_MAX_FPS`` and ``GIF_MAX_WIDTH`` px wide."""
    from PIL import Image

    step = max(1, int(np.ceil(fps / GIF_MAX_FPS)))
    frames = frames[::step]
    height, width = frames.shape[1:3]
    scale = min(1.0, GIF_MAX_WIDTH / width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    images = [Image.fromarray(f).resize(size) if scale < 1 else Image.fromarray(f) for f in frames]
    path = Path(path)
    with atomic_path(path) as tmp:
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=round(1000 * step / fps),
            loop=0,  # loop forever
        )
    return path


class TALNetProduct(ProductWriter):
    """Snippet features of each video are extracted in the loader workers with the extractor the
    checkpoint was trained on (its recorded settings; ``extractor`` overrides them, as keyword
    arguments of ``SnippetFeatureExtractor``); the task's ``detect`` finds the actions.

    ``highlight`` writes each video's best detection, extended by the model's context ratio on each
    side, as an MP4 at the source frame rate (and a GIF with ``highlight_gif``)."""

    input_kind = "videos"
    highlight_dir = HIGHLIGHT_DIR  # below the run folder; tasks.talnet.highlight writes beside its --out

    def __init__(
        self,
        extractor: dict[str, Any] | None = None,
        class_names: list[str] | None = None,
        max_detections: int = 200,
        highlight: bool = True,
        highlight_gif: bool = False,
        timeline_videos: int = 8,
    ) -> None:
        super().__init__()
        self.extractor_overrides = dict(extractor or {})
        self.class_names_override = list(class_names) if class_names else None
        self.max_detections = max_detections
        self.highlight, self.highlight_gif = highlight, highlight_gif
        self.timeline_videos = timeline_videos
        self.extractor = None
        self.names: list[str] = []
        self.modalities: list[str] = []
        self.context_ratio = 0.5

    def bind(self, task, checkpoint: dict[str, Any]) -> None:
        from datamodules.thumos14_extract import SnippetFeatureExtractor

        settings = {**(getattr(task, "extractor_settings", None) or {}), **self.extractor_overrides}
        if not settings:
            raise ValueError(
                "the checkpoint records no feature-extractor settings (trained on pre-extracted "
                "features, or saved by an older version): give them as product.writer.extractor="
                "{fps: ..., feat_stride: ..., num_frames: ..., backbone: ..., rgb_weights: ..., ...}"
            )
        self.extractor = SnippetFeatureExtractor(**settings)
        if self.extractor.feature_dim != int(task.hparams.feature_dim):
            raise ValueError(
                f"the {self.extractor.backbone} extractor gives {self.extractor.feature_dim} features per "
                f"stream, the checkpoint expects {task.hparams.feature_dim}"
            )
        names = self.class_names_override or list(getattr(task, "class_names", None) or [])
        if len(names) != task.num_classes:
            if names:
                raise ValueError(f"{len(names)} class names for a {task.num_classes}-class checkpoint")
            log.warning("The checkpoint holds no class names; classes are called class_<index>")
            names = [f"class_{c}" for c in range(task.num_classes)]
        self.names = names
        self.modalities = list(task.hparams.modalities)
        self.context_ratio = float(task.hparams.context_ratio)

    def prepare(self, path: Path) -> dict[str, Any]:
        """The video's snippet features, laid out like a THUMOS'14 feature-set item (no ground truth)."""
        from core.video import VideoDecodeError, open_video
        from datamodules.thumos14_extract import resampled_frame_indices

        ex = self.extractor
        reader = open_video(path)  # FileNotFoundError / VideoDecodeError name the file
        source_fps = float(reader.get_avg_fps())
        if not source_fps > 0:
            raise VideoDecodeError(f"{path}: video reports no frame rate")
        duration = len(reader) / source_fps
        resampled = len(resampled_frame_indices(len(reader), source_fps, ex.fps))
        if resampled < ex.num_frames:
            raise ValueError(
                f"{path}: the video lasts {duration:.2f} s ({resampled} frames at {ex.fps:g} fps), shorter than "
                f"one snippet of {ex.num_frames} frames ({ex.num_frames / ex.fps:.2f} s): nothing to detect"
            )
        array = ex.extract_video(path)
        features = torch.from_numpy(np.ascontiguousarray(array.T, dtype=np.float32))
        d = ex.feature_dim
        halves = {"rgb": features[:d], "flow": features[d : 2 * d]}  # the extractor's (T, RGB | flow) layout
        return {
            "video": Path(path).stem,
            "video_id": 0,
            "features": {m: halves[m] for m in self.modalities},
            "segments": torch.zeros(0, 2),
            "labels": torch.zeros(0, dtype=torch.long),
            "duration": duration,
            # seconds of snippet 0's centre and between snippet centres (as the feature data sets)
            "t0": ex.num_frames / 2.0 / ex.fps,
            "dt": ex.feat_stride / ex.fps,
        }

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        from datamodules.thumos14_features import collate_videos

        return collate_videos(samples)

    def write_item(self, run_dir: Path, name: str, prediction: torch.Tensor, batch: dict, index: int) -> dict:
        detections = np.asarray(prediction, dtype=np.float64).reshape(-1, 4)
        detections = detections[np.argsort(-detections[:, 3], kind="stable")][: self.max_detections]
        duration = float(batch["duration"][index])
        record: dict[str, Any] = {"duration": duration, "detections": detections.tolist()}
        if self.highlight and len(detections):
            record["highlight"] = self.write_highlight(run_dir, name, batch["inputs"][index], detections[0], duration)
        return record

    def write_highlight(self, run_dir: Path, name: str, video: str, best: np.ndarray, duration: float) -> dict:
        """The top detection with ``context_ratio`` of its length on each side, cut from the video."""
        from core.video import write_video

        label, start, end, score = (float(x) for x in best)
        context = self.context_ratio * (end - start)
        clip = (max(0.0, start - context), min(duration, end + context))
        frames, fps = cut_clip(video, *clip)
        frames = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]  # even size for yuv420p
        path = Path(self.highlight_dir) / f"{name}.mp4"
        write_video(run_dir / path, frames, fps=fps)
        out = {
            "file": str(path),
            "label": self.names[int(label)],
            "score": score,
            "segment": [start, end],
            "clip": list(clip),
        }
        if self.highlight_gif:
            gif = path.with_suffix(".gif")
            write_gif(run_dir / gif, frames, fps)
            out["gif"] = str(gif)
        return out

    def merge(self, run_dir: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        from tasks.talnet.module import activitynet_results
        from tasks.talnet.visualize import plot_timeline

        outputs = [
            {
                "video": r["name"],
                "duration": r["duration"],
                "detections": np.asarray(r["detections"]).reshape(-1, 4),
                "segments": np.zeros((0, 2)),
                "labels": np.zeros(0, dtype=np.int64),
            }
            for r in records
        ]
        atomic_write_json(run_dir / RESULTS_FILE, activitynet_results(outputs, self.names))
        plot_timeline(outputs[: self.timeline_videos], self.names, run_dir / TIMELINE_FILE)
        return {
            "detections": RESULTS_FILE,
            "timeline": TIMELINE_FILE,
            "highlights": {r["name"]: r["highlight"] for r in records if "highlight" in r},
        }
