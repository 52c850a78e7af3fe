"""Depth of moving people on a user's videos (predict.py): per video a depth video, a synthetic
defocus video focused on the people and the per-frame depth arrays, under ``<video name>/``; with
``side_by_side`` also input | depth | defocus in one video (``python -m tasks.people_depth.render_video
--video``, a thin wrapper over this writer, writes that one to its ``--out``).

Inputs beside each video (``product.writer``):

- ``masks``: a folder of human masks, one PNG per frame named by the frame's index in the video
  (``0.png``, ``000017.png``: any zero padding), > 0 = person; for several videos, one sub-folder
  per video name. Needed by the IDCM model (its human-mask channel) and used by every model to
  focus the defocus effect. A user's masks always win.
- ``segmenter``: without ``masks``, the human masks come from MediaPipe's selfie segmenter
  (tasks/people_depth/segmenter.py, weights imported by ``import_segmenter`` to this path; default
  ``${paths.data_dir}/mediapipe/selfie_segmenter.pt``, where ``make mediapipe-models`` puts them):
  person probability > ``person_threshold``. The masks it made are written as
  ``<video name>/masks/<frame index>.png`` (255 = person, the video's size), ready to edit and give back as ``masks``.
- ``poses``: camera poses in the Mannequin Challenge release format (a ``.txt`` of URL line, then
  per frame ``timestamp fx fy cx cy k1 k2`` and the 3x4 world-to-camera matrix), or a folder of
  ``<video name>.txt``. Pose line k is the video frame at ``(timestamp_k - timestamp_0) * fps / 1e6``
  (the video starts at the trajectory's first frame); depth is predicted for those frames, with the
  parallax inputs computed as for the data set (reference frame ``reference_offset`` lines later,
  earlier at the end). Without poses every frame is predicted as the single-frame variant: the
  IDCM network gets no parallax (input depth and confidence 0), the I network needs none."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from core.data import DataFormatError
from core.io import atomic_path, atomic_write_bytes
from core.prediction import ProductWriter

log = logging.getLogger(__name__)

DEPTH_VIDEO = "depth.mp4"
DEFOCUS_VIDEO = "defocus.mp4"
DEPTH_DIR = "depth"
SIDE_BY_SIDE_VIDEO = "side_by_side.mp4"
MASK_DIR = "masks"
FRAME_KEYS = ("image", "human_mask", "input_log_depth", "confidence")


def _even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))


def mask_files(folder: Path) -> dict[int, Path]:
    """Frame index -> mask PNG in ``folder`` (file stems are integers, any zero padding)."""
    files = {}
    for path in folder.glob("*.png"):
        if path.stem.isdigit():
            files[int(path.stem)] = path
    return files


class PeopleDepthProduct(ProductWriter):
    """Depth video, defocus video and depth arrays per video (module docstring: masks and poses).

    ``frame_stride``/``max_frames`` thin out the frames when there are no poses; ``aperture``,
    ``max_radius`` and ``focus_depth`` shape the defocus (defaults: the task's video settings, focus
    on the people of the first frame); ``fps`` sets the written videos' rate (default: the input's, over
    ``frame_stride``); ``image_size`` (H, W) the size depth is predicted at (default: the training size).
    ``side_by_side`` adds input | depth | defocus as ``<video name>/side_by_side.mp4``, or as
    ``<side_by_side_dir>/<video name>.mp4`` when the run command sets ``side_by_side_dir``."""

    input_kind = "videos"
    side_by_side_dir: str | None = None  # None: inside each video's folder

    def __init__(
        self,
        masks: str | None = None,
        segmenter: str | None = None,
        person_threshold: float = 0.5,
        poses: str | None = None,
        reference_offset: int = 2,
        flow_method: str = "dis",
        frame_stride: int = 1,
        max_frames: int | None = None,
        aperture: float | None = None,
        max_radius: float = 8.0,
        focus_depth: float | None = None,
        fps: float | None = None,
        image_size: list[int] | None = None,
        side_by_side: bool = False,
    ) -> None:
        super().__init__()
        if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
            raise ValueError(f"product.writer.image_size={list(image_size)}: expected [height, width] in pixels")
        self.image_size = [int(v) for v in image_size] if image_size is not None else None
        self.fps, self.side_by_side = fps, side_by_side
        self.masks = Path(masks) if masks else None
        self.poses = Path(poses) if poses else None
        if self.masks is not None and not self.masks.is_dir():
            raise FileNotFoundError(f"product.writer.masks={self.masks}: no such folder of human masks")
        if self.poses is not None and not self.poses.exists():
            raise FileNotFoundError(f"product.writer.poses={self.poses}: no such trajectory file or folder")
        self.segmenter, self.person_threshold = Path(segmenter) if segmenter else None, person_threshold
        self.segmenter_model = None
        self.reference_offset, self.flow_method = reference_offset, flow_method
        self.frame_stride, self.max_frames = max(1, frame_stride), max_frames
        self.aperture, self.max_radius, self.focus_depth = aperture, max_radius, focus_depth
        self.inputs = "IDCM"
        self.height = self.width = 0

    def bind(self, task, checkpoint: dict[str, Any]) -> None:
        self.inputs = str(task.hparams.inputs)
        if self.inputs == "IDCMK":
            raise ValueError(
                "task.inputs=IDCMK also takes OpenPose keypoints per frame, which predict.py "
                "does not read; use an I or IDCM checkpoint"
            )
        if self.masks is None and self.segmenter is not None and self.segmenter.exists():
            from tasks.people_depth.segmenter import load_segmenter

            self.segmenter_model = load_segmenter(self.segmenter)
        if self.inputs != "I" and self.masks is None and self.segmenter_model is None:
            raise ValueError(
                f"this checkpoint (task.inputs={self.inputs}) takes a human mask per frame: give "
                "product.writer.masks=<folder of <frame index>.png masks>, or import the person segmenter "
                f"to product.writer.segmenter={self.segmenter} (`make mediapipe-models`, or `python -m "
                "tasks.people_depth.import_segmenter <mediapipe wheel> --out <file>`)"
            )
        if self.masks is None and self.segmenter_model is None:
            log.warning(
                "No human masks and no person segmenter (%s): the defocus focuses without people", self.segmenter
            )
        if self.inputs != "I" and self.poses is None:
            log.warning(
                "No camera poses (product.writer.poses): the %s network runs as the single-frame "
                "variant, without parallax depth",
                self.inputs,
            )
        self.height, self.width = (int(v) for v in self.image_size or task.hparams.image_size)
        if self.aperture is None:
            self.aperture = float(task.hparams.get("video_aperture", 6.0))

    # --- reading a video ---------------------------------------------------------------------------
    def _beside(self, root: Path | None, video: Path, suffix: str = "") -> Path | None:
        """``root/<video name><suffix>`` when it exists, else ``root`` itself."""
        if root is None:
            return None
        own = root / f"{video.stem}{suffix}"
        return own if own.exists() else root

    def _resize(self, image: np.ndarray, interpolation: int) -> np.ndarray:
        if image.shape[:2] == (self.height, self.width):
            return image
        return cv2.resize(image, (self.width, self.height), interpolation=interpolation)

    def prepare(self, path: Path) -> dict[str, Any]:
        from core.video import open_video, read_frames
        from datamodules.mannequin_challenge import read_mask, read_trajectory
        from datamodules.mannequin_geometry import centred_log_depth, intrinsics_matrix, parallax_inputs

        path = Path(path)
        reader = open_video(path)
        fps = float(reader.get_avg_fps())
        count = len(reader)
        trajectory = None
        poses_file = self._beside(self.poses, path, ".txt")
        if poses_file is not None:
            if poses_file.is_dir():
                raise DataFormatError(poses_file, f"no {path.stem}.txt trajectory for {path.name}")
            trajectory = read_trajectory(poses_file)
            ts = trajectory.timestamps
            indices = np.round((ts - ts[0]) * fps / 1e6).astype(int).tolist()
            if indices[-1] >= count:
                raise DataFormatError(
                    poses_file,
                    f"the trajectory lasts {(ts[-1] - ts[0]) / 1e6:.2f} s but "
                    f"{path.name} has {count} frames at {fps:g} fps",
                )
        else:
            indices = list(range(0, count, self.frame_stride))[: self.max_frames or None]
        frames = read_frames(reader, indices, path)
        images = [self._resize(f, cv2.INTER_AREA) for f in frames]
        masks = [np.zeros((self.height, self.width), np.uint8)] * len(images)
        segmented = None
        mask_dir = self._beside(self.masks, path)
        if mask_dir is not None:
            files = mask_files(mask_dir)
            missing = [i for i in indices if i not in files]
            if missing:
                raise DataFormatError(
                    mask_dir,
                    f"no human mask for frames {missing[:5]} of {path.name} "
                    f"({len(missing)} of {len(indices)} missing; expected <frame index>.png)",
                )
            masks = []
            for i, image in zip(indices, frames):
                mask = read_mask(files[i])
                if mask.shape != image.shape[:2]:
                    raise DataFormatError(files[i], f"mask {mask.shape} and frame {image.shape[:2]} differ in size")
                masks.append(self._resize(mask, cv2.INTER_NEAREST))
        elif self.segmenter_model is not None:
            from tasks.people_depth.segmenter import segment_people

            probabilities = segment_people(frames, self.segmenter_model)
            segmented = [(p > self.person_threshold).astype(np.uint8) * 255 for p in probabilities]
            masks = [self._resize(m, cv2.INTER_NEAREST) for m in segmented]
        parallax = np.zeros((len(images), self.height, self.width), np.float32)
        confidence = np.zeros_like(parallax)
        if trajectory is not None and self.inputs != "I":
            n = len(images)
            for k in range(n):
                ref = k + self.reference_offset if k + self.reference_offset < n else k - self.reference_offset
                if ref < 0:
                    continue  # a clip shorter than the offset: this frame has no parallax
                K = intrinsics_matrix(trajectory.intrinsics[k], self.width, self.height)
                p = parallax_inputs(
                    images[k],
                    images[ref],
                    K,
                    trajectory.poses[k],
                    trajectory.poses[ref],
                    human_mask=masks[k],
                    flow_method=self.flow_method,
                )
                parallax[k], confidence[k] = p.depth, p.confidence
        input_log_depth = np.stack([centred_log_depth(d, 50.0) for d in parallax])
        return {
            "image": torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0,
            "human_mask": torch.from_numpy((np.stack(masks) > 0).astype(np.float32))[:, None],
            "input_log_depth": torch.from_numpy(input_log_depth)[:, None],
            "confidence": torch.from_numpy(confidence)[:, None],
            "frames": indices,
            "fps": fps / (1 if trajectory is not None else self.frame_stride),
            "segmented": segmented,
        }

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Videos of a batch end to end along the frame axis; ``lengths`` splits them again."""
        batch = {k: torch.cat([s[k] for s in samples]) for k in FRAME_KEYS}
        batch["lengths"] = [len(s["frames"]) for s in samples]
        batch["frames"] = [s["frames"] for s in samples]
        batch["fps"] = [s["fps"] for s in samples]
        batch["segmented"] = [s["segmented"] for s in samples]
        return batch

    # --- writing ----------------------------------------------------------------------------------
    def write_item(self, run_dir: Path, name: str, prediction: torch.Tensor, batch: dict, index: int) -> dict:
        from core.video import write_video
        from tasks.people_depth.defocus import colorize_depth, defocus, focus_on_people

        start = sum(batch["lengths"][:index])
        stop = start + batch["lengths"][index]
        images = (batch["image"][start:stop].permute(0, 2, 3, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
        masks = batch["human_mask"][start:stop, 0].cpu().numpy()
        depths = torch.as_tensor(prediction).float().numpy()
        frames = batch["frames"][index]
        folder = Path(run_dir) / name
        for frame, depth in zip(frames, depths):
            with atomic_path(folder / DEPTH_DIR / f"{frame:06d}.npy") as tmp, open(tmp, "wb") as f:
                np.save(f, depth.astype(np.float32))
        segmented = batch["segmented"][index]
        for frame, mask in zip(frames, segmented or []):
            atomic_write_bytes(folder / MASK_DIR / f"{frame:06d}.png", cv2.imencode(".png", mask)[1].tobytes())
        has_people = masks.reshape(len(masks), -1).max(1) > 0
        focus = self.focus_depth or focus_on_people(depths[0], masks[0] if has_people[0] else None)
        fps = self.fps or batch["fps"][index]
        effects = [defocus(im, d, focus, self.aperture, self.max_radius) for im, d in zip(images, depths)]
        write_video(folder / DEPTH_VIDEO, (_even(colorize_depth(d)) for d in depths), fps=fps)
        write_video(folder / DEFOCUS_VIDEO, (_even(e) for e in effects), fps=fps)
        record = {}
        if self.side_by_side:
            from tasks.people_depth.defocus import side_by_side

            path = (
                Path(self.side_by_side_dir) / f"{name}.mp4"
                if self.side_by_side_dir
                else Path(name) / SIDE_BY_SIDE_VIDEO
            )
            write_video(Path(run_dir) / path, map(side_by_side, images, depths, effects), fps=fps)
            record["side_by_side"] = str(path)
        return {
            **record,
            "folder": name,
            "frames": len(frames),
            "fps": fps,
            "focus_depth": float(focus),
            "depth_range": [float(depths.min()), float(depths.max())],
            "masks": "segmenter" if segmented is not None else "user" if self.masks is not None else "none",
        }

    def merge(self, run_dir: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "videos": {
                r["input"]: {"folder": r["folder"], "frames": r["frames"], "masks": r.get("masks", "user")}
                for r in records
            },
            "files_per_video": [
                DEPTH_VIDEO,
                DEFOCUS_VIDEO,
                f"{DEPTH_DIR}/<frame index>.npy",
                f"{MASK_DIR}/<frame index>.png (when the segmenter made the masks)",
                *([SIDE_BY_SIDE_VIDEO] if self.side_by_side and not self.side_by_side_dir else []),
            ],
        }
