"""Snippet sampling with decord, optical flow per snippet, and a two-stream backbone that turns a
raw THUMOS'14 video into the (T, 2D) feature array of the pre-extracted form.

A snippet is ``num_frames`` consecutive frames of the video resampled to ``fps``; snippet ``i``
starts at resampled frame ``i * feat_stride``. The RGB stream sees the snippet's centre frame, the
flow stream the stack of the ``num_frames - 1`` dense flows between its consecutive frames (the
TSN-style flow stack, x and y channels interleaved)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.flow import dense_flow
from core.io import atomic_path
from core.video import VideoDecodeError, open_video, read_frames

log = logging.getLogger(__name__)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def resampled_frame_indices(num_source_frames: int, source_fps: float, fps: float) -> np.ndarray:
    """Source frame index shown at each tick ``k / fps`` of the resampled video."""
    duration = num_source_frames / source_fps
    count = max(1, int(np.floor(duration * fps + 1e-6)))
    return np.minimum(np.round(np.arange(count) * source_fps / fps).astype(np.int64), num_source_frames - 1)


def snippet_starts(num_frames_resampled: int, feat_stride: int, num_frames: int) -> np.ndarray:
    """First resampled frame of every snippet; a video shorter than one snippet still gets one."""
    last = max(0, num_frames_resampled - num_frames)
    return np.arange(0, last + 1, feat_stride, dtype=np.int64)


def sample_snippets(
    path: str | Path,
    fps: float,
    feat_stride: int,
    num_frames: int,
    frame_size: Sequence[int] | None = None,
    chunk_snippets: int = 128,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Decode a video with decord in chunks; yield (snippet starts, frames (n, H, W, 3)) where the
    frames cover those snippets (frames[0] is resampled frame starts[0]). Shorter-than-a-snippet
    videos are padded by repeating their last frame."""
    height, width = (int(frame_size[0]), int(frame_size[1])) if frame_size else (-1, -1)
    reader = open_video(path, width=width, height=height)
    source_fps = float(reader.get_avg_fps())
    if not source_fps > 0:
        raise VideoDecodeError(f"{path}: video reports no frame rate")
    ticks = resampled_frame_indices(len(reader), source_fps, fps)
    starts = snippet_starts(len(ticks), feat_stride, num_frames)
    for c in range(0, len(starts), chunk_snippets):
        chunk = starts[c : c + chunk_snippets]
        lo, hi = int(chunk[0]), int(chunk[-1]) + num_frames
        wanted = ticks[np.minimum(np.arange(lo, hi), len(ticks) - 1)]
        unique, inverse = np.unique(wanted, return_inverse=True)
        frames = read_frames(reader, unique.tolist(), path)[inverse]
        yield chunk - lo, frames


def video_duration(path: str | Path) -> float:
    """Seconds of video as decord counts them (frames / average fps)."""
    reader = open_video(path)
    return len(reader) / float(reader.get_avg_fps())


@dataclass
class ExtractionReport:
    """What one extraction pass did; ``unreadable`` videos were skipped and counted."""

    extracted: list[str] = field(default_factory=list)
    skipped_existing: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    segment_fixes: list = field(default_factory=list)  # thumos14_annotations.SegmentFix, set by prepare_features

    def summary(self) -> str:
        fixed = f", {len(self.segment_fixes)} annotated segments fitted into their video" if self.segment_fixes else ""
        return (
            f"{len(self.extracted)} extracted, {len(self.skipped_existing)} already done, "
            f"{len(self.unreadable)} unreadable{fixed}"
        )


class SnippetFeatureExtractor:
    """Two-stream snippet features: a timm 2D backbone (random init with a fixed seed, or a user's
    local weights file per stream) over the RGB centre frame and over the flow stack."""

    def __init__(
        self,
        fps: float = 10.0,
        feat_stride: int = 2,
        num_frames: int = 5,
        frame_size: list[int] | None = None,
        flow_method: str = "dis",
        flow_bound: float = 20.0,
        backbone: str = "test_resnet",
        rgb_weights: str | None = None,
        flow_weights: str | None = None,
        seed: int = 0,
        batch_size: int = 64,
        num_threads: int | None = 1,
    ):
        if num_frames < 2:
            raise ValueError("num_frames must be >= 2: the flow stream needs a frame pair")
        self.fps, self.feat_stride, self.num_frames = float(fps), int(feat_stride), int(num_frames)
        self.frame_size = list(frame_size) if frame_size else None
        self.flow_method, self.flow_bound = flow_method, float(flow_bound)
        self.backbone, self.seed, self.batch_size = backbone, int(seed), int(batch_size)
        self.weights = {"rgb": rgb_weights, "flow": flow_weights}
        self.num_threads = num_threads  # small CPU batches run fastest single-threaded
        self._nets: dict[str, nn.Module] | None = None

    def settings(self) -> dict:
        """Everything that changes the features; a resumed extraction must match it."""
        return {
            "fps": self.fps,
            "feat_stride": self.feat_stride,
            "num_frames": self.num_frames,
            "frame_size": self.frame_size,
            "flow_method": self.flow_method,
            "flow_bound": self.flow_bound,
            "backbone": self.backbone,
            "seed": self.seed,
            "rgb_weights": self.weights["rgb"],
            "flow_weights": self.weights["flow"],
        }

    @property
    def nets(self) -> dict[str, nn.Module]:
        if self._nets is None:
            import timm

            from core.weights import load_pretrained

            nets = {}
            with torch.random.fork_rng():
                torch.manual_seed(self.seed)  # random-init features must be the same on resume
                for stream, in_chans in (("rgb", 3), ("flow", 2 * (self.num_frames - 1))):
                    net = timm.create_model(self.backbone, pretrained=False, num_classes=0, in_chans=in_chans)
                    if self.weights[stream]:
                        load_pretrained(net, self.weights[stream])
                    nets[stream] = net.eval()
            self._nets = nets
        return self._nets

    @property
    def feature_dim(self) -> int:
        """Features per stream (the array holds 2x this)."""
        return int(self.nets["rgb"].num_features)

    def snippet_inputs(self, starts: np.ndarray, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Network inputs for snippets starting at ``starts`` within ``frames``."""
        flows = np.stack(
            [dense_flow(frames[j], frames[j + 1], method=self.flow_method) for j in range(len(frames) - 1)]
        )  # (n-1, H, W, 2)
        flows = np.clip(flows, -self.flow_bound, self.flow_bound) / self.flow_bound
        centre = starts + self.num_frames // 2
        rgb = (frames[centre].astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        rgb = torch.from_numpy(rgb).permute(0, 3, 1, 2).contiguous()
        stack = np.stack([flows[s : s + self.num_frames - 1] for s in starts])  # (n, L, H, W, 2)
        n, length, h, w, _ = stack.shape
        flow = torch.from_numpy(stack.transpose(0, 1, 4, 2, 3).reshape(n, 2 * length, h, w).astype(np.float32))
        return rgb, flow

    @torch.no_grad()
    def extract_video(self, path: str | Path) -> np.ndarray:
        """Feature array (T, 2 * feature_dim) of one video: RGB half, then flow half."""
        threads = torch.get_num_threads()
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        try:
            return self._extract_video(path)
        finally:
            torch.set_num_threads(threads)

    def _extract_video(self, path: str | Path) -> np.ndarray:
        rows = []
        for starts, frames in sample_snippets(path, self.fps, self.feat_stride, self.num_frames, self.frame_size):
            rgb, flow = self.snippet_inputs(starts, frames)
            parts = []
            for stream, x in (("rgb", rgb), ("flow", flow)):
                net = self.nets[stream]
                parts.append(torch.cat([net(x[b : b + self.batch_size]) for b in range(0, len(x), self.batch_size)]))
            rows.append(torch.cat(parts, dim=1))
        return torch.cat(rows).numpy().astype(np.float32)

    def extract_videos(self, videos: dict[str, Path], out_dir: str | Path) -> ExtractionReport:
        """Write ``<out_dir>/<video>.npy`` for every video; resumable: finished arrays are skipped,
        and an unreadable video is counted and skipped so a long extraction goes on."""
        out_dir = Path(out_dir)
        report = ExtractionReport()
        for i, (name, path) in enumerate(sorted(videos.items())):
            target = out_dir / f"{name}.npy"
            if target.exists():
                report.skipped_existing.append(name)
                continue
            try:
                array = self.extract_video(path)
            except (VideoDecodeError, FileNotFoundError) as err:
                report.unreadable[name] = str(err)
                warnings.warn(f"skipping unreadable video: {err}", stacklevel=2)
                continue
            with atomic_path(target) as tmp, open(tmp, "wb") as f:
                np.save(f, array)
            report.extracted.append(name)
            log.info("[%d/%d] %s: %d snippets", i + 1, len(videos), name, len(array))
        return report
