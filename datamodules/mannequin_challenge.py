"""The Mannequin Challenge data set (Li et al., CVPR 2019) as released, plus the user's frames.

The release (MannequinChallenge.tar) holds ``train/``, ``validation/`` and ``test/`` folders with one
``<clip>.txt`` per clip: the source video URL on the first line, then one line per frame with 19
space-separated columns: timestamp (int, microseconds since the start of the video); normalized
intrinsics fx, fy, cx, cy (image corners at (0, 0) and (1, 1)) and two radial distortion
coefficients (always 0.0); and a 3x4 world-to-camera pose [R | t] in row-major order.

Frames, MVS depth and human masks are not in the release: the user extracts and computes them,
and this reader expects them beside the trajectory file, named by timestamp::

    <root>/<split>/<clip>.txt
    <root>/<split>/<clip>/frames/<timestamp>.png|.jpg   RGB frame
    <root>/<split>/<clip>/depth/<timestamp>.npy         float32 z-depth (MVS), 0 = unknown
    <root>/<split>/<clip>/masks/<timestamp>.png         uint8 human mask, > 0 = human

A sample is a frame and its reference frame ``reference_offset`` frames later (earlier at the
clip's end); the dataset computes the parallax inputs (flow, triangulated depth, confidence)."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from core.data import DataFormatError, ensure_generated
from tasks.people_depth.geometry import intrinsics_matrix
from tasks.people_depth.parallax import parallax_inputs

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
FRAME_COLUMNS = 19
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg")


@dataclass
class Trajectory:
    """One clip's camera trajectory file: URL, per-frame timestamps, intrinsics and poses."""

    path: Path
    url: str
    timestamps: np.ndarray  # (N,) int64 microseconds
    intrinsics: np.ndarray  # (N, 4) normalized fx, fy, cx, cy
    poses: np.ndarray  # (N, 3, 4) world-to-camera

    @property
    def name(self) -> str:
        return self.path.stem


def read_trajectory(path: str | Path, rotation_tolerance: float = 1e-2) -> Trajectory:
    """Parse and validate one release ``.txt``; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: camera trajectory file does not exist")
    lines = path.read_text().splitlines()
    if not lines or not lines[0].strip():
        raise DataFormatError(path, "empty file; expected the source video URL on the first line", 1)
    url = lines[0].strip()
    if not url.startswith(("http://", "https://")) or len(url.split()) != 1:
        raise DataFormatError(path, f"first line must be the source video URL, got {url[:60]!r}", 1)
    timestamps, intrinsics, poses = [], [], []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != FRAME_COLUMNS:
            raise DataFormatError(
                path, f"expected {FRAME_COLUMNS} columns (timestamp, 6 intrinsics, 12 pose values), "
                f"found {len(fields)}", number)
        try:
            timestamp = int(fields[0])
        except ValueError:
            raise DataFormatError(path, f"timestamp must be an integer (microseconds), got {fields[0]!r}", number)
        try:
            values = np.array([float(v) for v in fields[1:]])
        except ValueError as err:
            raise DataFormatError(path, f"non-numeric camera value ({err})", number)
        if not np.isfinite(values).all():
            raise DataFormatError(path, "camera values must be finite", number)
        if timestamp < 0 or (timestamps and timestamp <= timestamps[-1]):
            raise DataFormatError(path, f"timestamps must increase; {timestamp} follows "
                                  f"{timestamps[-1] if timestamps else 'nothing'}", number)
        if values[0] <= 0 or values[1] <= 0:
            raise DataFormatError(path, f"focal lengths must be positive, got {values[0]}, {values[1]}", number)
        pose = values[6:].reshape(3, 4)
        rotation = pose[:, :3]
        if (np.abs(rotation @ rotation.T - np.eye(3)).max() > rotation_tolerance
                or np.linalg.det(rotation) <= 0):
            raise DataFormatError(path, "pose columns 8-19 do not hold a rotation [R | t] (R R^T != I)", number)
        timestamps.append(timestamp)
        intrinsics.append(values[:4])
        poses.append(pose)
    if not timestamps:
        raise DataFormatError(path, "no frame lines after the URL line")
    return Trajectory(path, url, np.array(timestamps, dtype=np.int64), np.array(intrinsics), np.array(poses))


def _frame_path(folder: Path, timestamp: int) -> Optional[Path]:
    for ext in FRAME_EXTENSIONS:
        candidate = folder / f"{timestamp}{ext}"
        if candidate.exists():
            return candidate
    return None


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataFormatError(path, "cannot decode image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_depth(path: Path) -> np.ndarray:
    """An MVS depth map: float32 (H, W) metres, 0 where unknown."""
    try:
        depth = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DataFormatError(path, f"cannot read depth array ({err})")
    if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
        raise DataFormatError(path, f"depth must be a 2-D float array, got {depth.dtype} {depth.shape}")
    return np.nan_to_num(depth.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def read_mask(path: Path) -> np.ndarray:
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise DataFormatError(path, "cannot decode human mask")
    return mask


@dataclass
class FramePair:
    clip: int
    frame: int
    reference: int


class MannequinChallengeClips(Dataset):
    """Frame + reference-frame samples of one split, with parallax inputs and supervision.

    Each item is a dict of float tensors: ``image`` (3, H, W) in [0, 1], ``human_mask``,
    ``parallax_depth`` (0 where unknown or human), ``confidence``, ``depth`` (supervision, 0 where
    unknown), each (1, H, W), and the integer ``clip`` and ``frame`` indices. Frames lacking an
    image, depth or mask are skipped and counted in ``skipped`` (warned once). With ``cache`` the
    parallax inputs (two optical flows per sample) are computed once per process and kept."""

    def __init__(self, split_dir: str | Path, image_size: Sequence[int] = (96, 128), reference_offset: int = 2,
                 frame_stride: int = 1, flow_method: str = "dis", hflip: bool = False, cache: bool = True):
        self.split_dir = Path(split_dir)
        self.cache = {} if cache else None
        if not self.split_dir.is_dir():
            raise FileNotFoundError(f"{self.split_dir}: split folder of <clip>.txt trajectory files not found")
        self.height, self.width = int(image_size[0]), int(image_size[1])
        self.flow_method = flow_method
        self.hflip = hflip
        self.trajectories = [read_trajectory(p) for p in sorted(self.split_dir.glob("*.txt"))]
        if not self.trajectories:
            raise FileNotFoundError(f"{self.split_dir}: no <clip>.txt trajectory files")
        self.samples: list[FramePair] = []
        self.skipped = 0
        for c, traj in enumerate(self.trajectories):
            available = [i for i, ts in enumerate(traj.timestamps) if self._complete(traj, int(ts))]
            self.skipped += len(traj.timestamps) - len(available)
            have = set(available)
            for i in available[::frame_stride]:
                ref = i + reference_offset if i + reference_offset < len(traj.timestamps) else i - reference_offset
                if ref in have and ref >= 0:
                    self.samples.append(FramePair(c, i, ref))
                else:
                    self.skipped += 1
        if self.skipped:
            warnings.warn(f"{self.split_dir}: skipped {self.skipped} frames lacking a frame image, depth, "
                          "mask or reference frame")
        if not self.samples:
            raise FileNotFoundError(
                f"{self.split_dir}: no usable frames; expected <clip>/frames/<timestamp>.png|.jpg, "
                "<clip>/depth/<timestamp>.npy and <clip>/masks/<timestamp>.png beside each <clip>.txt")

    def clip_dir(self, traj: Trajectory) -> Path:
        return self.split_dir / traj.name

    def _complete(self, traj: Trajectory, timestamp: int) -> bool:
        folder = self.clip_dir(traj)
        return (_frame_path(folder / "frames", timestamp) is not None
                and (folder / "depth" / f"{timestamp}.npy").exists()
                and (folder / "masks" / f"{timestamp}.png").exists())

    def __len__(self) -> int:
        return len(self.samples)

    def load_frame(self, clip: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """RGB, depth and mask of one frame, resized to the data set's image size."""
        traj = self.trajectories[clip]
        folder, ts = self.clip_dir(traj), int(traj.timestamps[index])
        image = _read_rgb(_frame_path(folder / "frames", ts))
        depth = read_depth(folder / "depth" / f"{ts}.npy")
        mask = read_mask(folder / "masks" / f"{ts}.png")
        if depth.shape != image.shape[:2] or mask.shape != image.shape[:2]:
            raise DataFormatError(folder, f"frame {ts}: image {image.shape[:2]}, depth {depth.shape} and "
                                  f"mask {mask.shape} differ in size")
        size = (self.width, self.height)
        if image.shape[:2] != (self.height, self.width):
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            depth = cv2.resize(depth, size, interpolation=cv2.INTER_NEAREST)
            mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        return image, depth, mask

    def sample_arrays(self, index: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """RGB and [parallax depth, confidence, depth, human mask] of one sample, unflipped."""
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        pair = self.samples[index]
        traj = self.trajectories[pair.clip]
        image, depth, mask = self.load_frame(pair.clip, pair.frame)
        reference, _, _ = self.load_frame(pair.clip, pair.reference)
        K = intrinsics_matrix(traj.intrinsics[pair.frame], self.width, self.height)
        parallax = parallax_inputs(image, reference, K, traj.poses[pair.frame], traj.poses[pair.reference],
                                   human_mask=mask, flow_method=self.flow_method)
        arrays = image, [parallax.depth, parallax.confidence, depth, (mask > 0).astype(np.float32)]
        if self.cache is not None:
            self.cache[index] = arrays
        return arrays

    def __getitem__(self, index: int) -> dict:
        pair = self.samples[index]
        image, maps = self.sample_arrays(index)
        if self.hflip and torch.rand(()) < 0.5:
            image = image[:, ::-1]
            maps = [m[:, ::-1] for m in maps]
        p_depth, confidence, depth, human = (torch.from_numpy(np.ascontiguousarray(m))[None] for m in maps)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0,
            "human_mask": human, "parallax_depth": p_depth, "confidence": confidence, "depth": depth,
            "clip": pair.clip, "frame": pair.frame,
        }


class MannequinChallengeDataModule(pl.LightningDataModule):
    """Train on ``train/`` (frozen people), validate on ``validation/``, test on ``test/``."""

    def __init__(self, root: str, image_size: Sequence[int] = (96, 128), reference_offset: int = 2,
                 frame_stride: int = 1, flow_method: str = "dis", hflip: bool = True, batch_size: int = 8,
                 num_workers: int = 0, generator: Optional[Callable[[Path], object]] = None):
        super().__init__()
        self.root = Path(root)
        self.image_size = [int(s) for s in image_size]
        self.reference_offset = reference_offset
        self.frame_stride = frame_stride
        self.flow_method = flow_method
        self.hflip = hflip
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.generator = generator  # a callable: never saved as a hyper-parameter
        self.datasets: dict[str, MannequinChallengeClips] = {}

    def prepare_data(self) -> None:
        ensure_generated(self.root, self.generator)

    def split(self, name: str) -> MannequinChallengeClips:
        if name not in self.datasets:
            self.datasets[name] = MannequinChallengeClips(
                self.root / name, self.image_size, self.reference_offset,
                self.frame_stride if name == "train" else 1, self.flow_method, hflip=self.hflip and name == "train")
        return self.datasets[name]

    def setup(self, stage: Optional[str] = None) -> None:
        if stage in (None, "fit"):
            self.split("train"), self.split("validation")
        if stage in (None, "validate"):
            self.split("validation")
        if stage in (None, "test", "predict"):
            self.split("test")

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.split(name), batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          drop_last=shuffle and len(self.split(name)) > self.batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)
