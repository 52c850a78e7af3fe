"""Images, videos and tables to whichever experiment loggers a run has: W&B, TensorBoard, CSV, none.

Every task and callback logs media through these three functions instead of testing logger types
itself. What each logger gets:

=============  ===========================  =====================================  ==================
               W&B                          TensorBoard                            CSV (and others
                                                                                   with a log_dir)
=============  ===========================  =====================================  ==================
log_image      ``wandb.Image`` per image    one grid per call (``add_image``)      PNG files
log_video      ``wandb.Video`` (mp4)        up to 8 frames as a grid (TensorBoard  the mp4 file
                                            needs moviepy for video; not a dep)
log_table      ``wandb.Table``              a Markdown table (``add_text``)        a CSV file
=============  ===========================  =====================================  ==================

Files go to ``<logger.log_dir>/media/<key>/<step>_<i>.<ext>`` (key slashes become folders), written
atomically. With no logger nothing is logged (the task still writes its own output files). Only
global rank 0 logs. ``target`` is a Trainer or LightningModule (its loggers and global step), a
logger, or a list of loggers."""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from core.io import atomic_path, atomic_write_text

ImageLike = str | Path | np.ndarray | torch.Tensor

TENSORBOARD_VIDEO_FRAMES = 8


def to_displayable(images: torch.Tensor) -> torch.Tensor:
    """Min-max scale each (normalized) image of a batch (N, C, H, W) to [0, 1] for display."""
    flat = images.detach().float().flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    scale = (high - low).clamp_min(1e-6)
    return ((images.detach().float() - low[:, None, None, None]) / scale[:, None, None, None]).clamp(0, 1)


def loggers_of(target: Any) -> list[Logger]:
    """The loggers of a Trainer / LightningModule, a single logger, or a list of them."""
    if target is None:
        return []
    if isinstance(target, Logger):
        return [target]
    if isinstance(target, (list, tuple)):
        return [lg for lg in target if lg is not None]
    try:
        return list(getattr(target, "loggers", []) or [])
    except RuntimeError:  # a LightningModule that is not attached to a trainer
        return []


def _step(target: Any, step: int | None) -> int | None:
    if step is not None:
        return int(step)
    try:
        return int(target.global_step) if hasattr(target, "global_step") else None
    except RuntimeError:
        return None


def _as_uint8_hwc(image: ImageLike) -> np.ndarray:
    """An image file, a (C, H, W) / (H, W) tensor in [0, 1] or uint8, or an (H, W[, C]) array as
    uint8 (H, W, 3 or 4)."""
    if isinstance(image, (str, Path)):
        from PIL import Image

        with Image.open(image) as im:
            return np.asarray(im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB"))
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dim() == 3 and t.shape[0] in (1, 3, 4):
            t = t.permute(1, 2, 0)
        array = t.numpy()
    else:
        array = np.asarray(image)
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return array


def _image_list(images: Any) -> list[ImageLike]:
    if isinstance(images, (str, Path)):
        return [images]
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return list(images)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    if isinstance(images, (torch.Tensor, np.ndarray)):
        return [images]
    return list(images)


def media_dir(logger: Logger, key: str) -> Path | None:
    """Where a file-based logger keeps media of ``key``: ``<log_dir>/media/<key>``; None if it has
    no folder of its own."""
    root = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)
    if not root:
        return None
    parts = [p for p in str(key).replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return Path(root).joinpath("media", *parts)


def _file_name(step: int | None, index: int, suffix: str) -> str:
    return f"{'' if step is None else f'step{step:07d}_'}{index}{suffix}"


def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def _grid(arrays: Sequence[np.ndarray], columns: int = 8) -> np.ndarray:
    """Tile uint8 images (padded to the largest size) into one (H, W, C) image."""
    channels = max(a.shape[2] for a in arrays)
    arrays = [
        a if a.shape[2] == channels else np.concatenate([a, np.full(a.shape[:2] + (1,), 255, np.uint8)], 2)
        for a in arrays
    ]
    h, w = max(a.shape[0] for a in arrays), max(a.shape[1] for a in arrays)
    cols = min(columns, len(arrays))
    rows = -(-len(arrays) // cols)
    out = np.zeros((rows * h, cols * w, channels), dtype=np.uint8)
    for i, a in enumerate(arrays):
        r, c = divmod(i, cols)
        out[r * h : r * h + a.shape[0], c * w : c * w + a.shape[1]] = a
    return out


@rank_zero_only
def log_image(
    target: Any,
    key: str,
    images: Any,
    captions: Sequence[str] | None = None,
    step: int | None = None,
) -> None:
    """Log one image or a batch: file paths, (N, C, H, W) / (C, H, W) tensors in [0, 1] (see
    :func:`to_displayable` for normalized inputs) or uint8, or (H, W, C) arrays."""
    loggers = loggers_of(target)
    if not loggers:
        return
    step = _step(target, step)
    items = _image_list(images)
    if captions is not None and len(captions) != len(items):
        raise ValueError(f"log_image({key!r}): {len(items)} images but {len(captions)} captions")
    arrays = [_as_uint8_hwc(im) for im in items]
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            kwargs = {"caption": list(captions)} if captions is not None else {}
            logger.log_image(key=key, images=arrays, step=step, **kwargs)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, _grid(arrays), global_step=step, dataformats="HWC")
        elif (folder := media_dir(logger, key)) is not None:
            for i, array in enumerate(arrays):
                _save_png(array, folder / _file_name(step, i, ".png"))
            if captions is not None:
                name = f"{'' if step is None else f'step{step:07d}_'}captions.txt"
                atomic_write_text(folder / name, "\n".join(captions) + "\n")


def _video_frames(video: Any) -> np.ndarray:
    """A (T, C, H, W) tensor in [0, 1] / uint8 or a (T, H, W, C) array as uint8 (T, H, W, 3)."""
    if isinstance(video, torch.Tensor):
        t = video.detach().cpu()
        if t.dim() == 4 and t.shape[1] in (1, 3):
            t = t.permute(0, 2, 3, 1)
        array = t.numpy()
    else:
        array = np.asarray(video)
    return np.stack([_as_uint8_hwc(frame)[..., :3] for frame in array])


@rank_zero_only
def log_video(
    target: Any,
    key: str,
    video: Any,
    fps: float = 10.0,
    caption: str | None = None,
    step: int | None = None,
) -> None:
    """Log one video: an mp4 file, or frames ((T, C, H, W) tensor / (T, H, W, C) array) that are
    encoded to mp4 (H and W even) once for all loggers."""
    loggers = loggers_of(target)
    if not loggers:
        return
    step = _step(target, step)
    tmp_dir = None
    if isinstance(video, (str, Path)):
        path = Path(video)
        if not path.exists():
            raise FileNotFoundError(f"log_video({key!r}): {path} does not exist")
        frames = None
    else:
        import tempfile

        from core.video import write_video

        frames = _video_frames(video)
        tmp_dir = Path(tempfile.mkdtemp(prefix="media_"))
        path = write_video(tmp_dir / "video.mp4", frames, fps)
    try:
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                kwargs: dict[str, list] = {"format": ["mp4"]}
                if caption is not None:
                    kwargs["caption"] = [caption]
                logger.log_video(key=key, videos=[str(path)], step=step, **kwargs)
            elif isinstance(logger, TensorBoardLogger):
                if frames is None:
                    from core.video import open_video, read_frames

                    reader = open_video(path)
                    picks = np.linspace(0, len(reader) - 1, min(TENSORBOARD_VIDEO_FRAMES, len(reader)))
                    shown = read_frames(reader, sorted({int(round(i)) for i in picks}), path)
                else:
                    picks = np.linspace(0, len(frames) - 1, min(TENSORBOARD_VIDEO_FRAMES, len(frames)))
                    shown = frames[sorted({int(round(i)) for i in picks})]
                logger.experiment.add_image(key, _grid(list(shown)), global_step=step, dataformats="HWC")
            elif (folder := media_dir(logger, key)) is not None:
                with atomic_path(folder / _file_name(step, 0, ".mp4")) as tmp:
                    shutil.copyfile(path, tmp)
    finally:
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)


@rank_zero_only
def log_table(
    target: Any,
    key: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    step: int | None = None,
) -> None:
    """Log a table of plain values (str, numbers, None), one list per row."""
    loggers = loggers_of(target)
    if not loggers:
        return
    step = _step(target, step)
    columns = [str(c) for c in columns]
    rows = [list(r) for r in rows]
    for i, row in enumerate(rows):
        if len(row) != len(columns):
            raise ValueError(f"log_table({key!r}): row {i} has {len(row)} values for {len(columns)} columns")
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(key=key, columns=columns, data=rows, step=step)
        elif isinstance(logger, TensorBoardLogger):
            cell = lambda v: "" if v is None else str(v).replace("|", "\\|")  # noqa: E731
            lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
            logger.experiment.add_text(key, "\n".join(lines), global_step=step)
        elif (folder := media_dir(logger, key)) is not None:
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(columns)
            writer.writerows(["" if v is None else v for v in row] for row in rows)
            atomic_write_text(folder / _file_name(step, 0, ".csv"), buffer.getvalue())
