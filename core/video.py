"""Video I/O shared by the video systems: decord for reading, PyAV (libx264) for writing."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from core.io import atomic_path

# The one list of video-file suffixes (common containers decord opens): what a folder of videos holds.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


class VideoDecodeError(RuntimeError):
    """A video file cannot be opened or decoded; the message names the file."""


def open_video(path: str | Path, width: int = -1, height: int = -1):
    """Open ``path`` with decord; raise VideoDecodeError naming the file when it is unreadable."""
    import decord

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: video file does not exist")
    try:
        reader = decord.VideoReader(str(path), width=width, height=height, num_threads=1)
    except Exception as err:  # decord raises DECORDError, a RuntimeError subclass, or others
        raise VideoDecodeError(f"{path}: cannot open video ({err})") from err
    if len(reader) == 0:
        raise VideoDecodeError(f"{path}: video has no frames")
    return reader


def read_frames(reader, indices: Sequence[int], path: str | Path = "<video>") -> np.ndarray:
    """Decode frames ``indices`` as a uint8 array (T, H, W, 3); errors name the file."""
    try:
        return reader.get_batch(list(indices)).asnumpy()
    except Exception as err:
        raise VideoDecodeError(f"{path}: cannot decode frames {indices[:3]}... ({err})") from err


def write_video(
    path: str | Path, frames: Iterable[np.ndarray], fps: float, crf: int = 18, codec: str = "libx264"
) -> Path:
    """Encode RGB uint8 frames (H, W, 3) into an mp4 atomically. H and W must be even for yuv420p."""
    import av

    path = Path(path)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = None
            for frame in frames:
                frame = np.ascontiguousarray(frame, dtype=np.uint8)
                if stream is None:
                    height, width = frame.shape[:2]
                    stream = container.add_stream(codec, rate=round(fps))
                    stream.width, stream.height = width, height
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": str(crf)}
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            if stream is None:
                raise ValueError(f"{path}: no frames to write")
            for packet in stream.encode():
                container.mux(packet)
    return path
