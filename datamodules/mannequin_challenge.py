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
    <root>/<split>/<clip>/keypoints/<timestamp>_keypoints.json   OpenPose output (IDCMK only)

The keypoint file is what OpenPose writes per image (``--write_json``): ``{"people": [{"pose_keypoints_2d":
[x0, y0, c0, x1, y1, c1, ...]}, ...]}`` in the frame's pixel coordinates, 18 COCO keypoints (54 values)
or BODY_25 (75 values, mapped to the COCO 18); a keypoint with c <= 0 was not detected. The
reader rasterizes them as the network's K channel: a disc of ``keypoint_radius`` pixels per
keypoint holding its COCO index + 1 (0 = none), divided by 18 (the public loader's
``keypoints_factor``). The public code's own rasterization is not released, so an IDCMK checkpoint
of the paper's expects its images, not necessarily these.

A sample is a frame and its reference frame ``reference_offset`` frames later (earlier at the
clip's end); the dataset computes the parallax inputs (flow, masked triangulated depth, confidence)
and the centred input log depth (datamodules/mannequin_geometry.py)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from core.data import DataFormatError, ensure_generated, read_json
from core.images import decode_image
from datamodules.mannequin_geometry import centred_log_depth, intrinsics_matrix, parallax_inputs

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
FRAME_COLUMNS = 19
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg")
COCO_KEYPOINTS = 18
KEYPOINTS_FACTOR = 18.0  # the public loader divides the keypoint image by 18
# COCO-18 index -> BODY_25 index (BODY_25 adds MidHip at 8 and six foot points at 19-24).
BODY25_TO_COCO = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
# Left/right COCO-18 pairs, swapped when a frame is mirrored.
COCO_FLIP_PAIRS = ((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13), (14, 15), (16, 17))


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
                path,
                f"expected {FRAME_COLUMNS} columns (timestamp, 6 intrinsics, 12 pose values), found {len(fields)}",
                number,
            )
        try:
            timestamp = int(fields[0])
        except ValueError:
            raise DataFormatError(
                path, f"timestamp must be an integer (microseconds), got {fields[0]!r}", number
            ) from None
        try:
            values = np.array([float(v) for v in fields[1:]])
        except ValueError as err:
            raise DataFormatError(path, f"non-numeric camera value ({err})", number) from err
        if not np.isfinite(values).all():
            raise DataFormatError(path, "camera values must be finite", number)
        if timestamp < 0 or (timestamps and timestamp <= timestamps[-1]):
            raise DataFormatError(
                path,
                f"timestamps must increase; {timestamp} follows {timestamps[-1] if timestamps else 'nothing'}",
                number,
            )
        if values[0] <= 0 or values[1] <= 0:
            raise DataFormatError(path, f"focal lengths must be positive, got {values[0]}, {values[1]}", number)
        pose = values[6:].reshape(3, 4)
        rotation = pose[:, :3]
        if np.abs(rotation @ rotation.T - np.eye(3)).max() > rotation_tolerance or np.linalg.det(rotation) <= 0:
            raise DataFormatError(path, "pose columns 8-19 do not hold a rotation [R | t] (R R^T != I)", number)
        timestamps.append(timestamp)
        intrinsics.append(values[:4])
        poses.append(pose)
    if not timestamps:
        raise DataFormatError(path, "no frame lines after the URL line")
    return Trajectory(path, url, np.array(timestamps, dtype=np.int64), np.array(intrinsics), np.array(poses))


def _frame_path(folder: Path, timestamp: int) -> Path | None:
    for ext in FRAME_EXTENSIONS:
        candidate = folder / f"{timestamp}{ext}"
        if candidate.exists():
            return candidate
    return None


def _read_rgb(path: Path) -> np.ndarray:
    return np.asarray(decode_image(path, "RGB", what="frame"))


def read_depth(path: Path) -> np.ndarray:
    """An MVS depth map: float32 (H, W) metres, 0 where unknown."""
    try:
        depth = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DataFormatError(path, f"cannot read depth array ({err})") from err
    if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
        raise DataFormatError(path, f"depth must be a 2-D float array, got {depth.dtype} {depth.shape}")
    return np.nan_to_num(depth.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def read_mask(path: Path) -> np.ndarray:
    """A human mask as uint8 (H, W) grey levels; errors name the file (core.images)."""
    return np.asarray(decode_image(path, "L", what="human mask"))


def read_keypoints(path: Path) -> np.ndarray:
    """The people of one OpenPose ``_keypoints.json`` as a (P, 18, 3) float array (x, y, c) in COCO
    order; errors name the file and the problem."""
    record = read_json(path, "an OpenPose keypoint file")
    if not isinstance(record, dict) or not isinstance(record.get("people"), list):
        raise DataFormatError(path, 'expected an OpenPose object with a "people" list')
    people = []
    for number, person in enumerate(record["people"]):
        values = person.get("pose_keypoints_2d") if isinstance(person, dict) else None
        if not isinstance(values, list) or len(values) not in (3 * COCO_KEYPOINTS, 75):
            raise DataFormatError(
                path,
                f'person {number}: "pose_keypoints_2d" must hold 54 (COCO-18) or 75 '
                f"(BODY_25) numbers, got {len(values) if isinstance(values, list) else values!r}",
            )
        try:
            points = np.asarray(values, dtype=np.float64).reshape(-1, 3)
        except (TypeError, ValueError):
            raise DataFormatError(path, f'person {number}: non-numeric "pose_keypoints_2d" value') from None
        if not np.isfinite(points).all():
            raise DataFormatError(path, f"person {number}: keypoint values must be finite")
        people.append(points[list(BODY25_TO_COCO)] if len(points) == 25 else points)
    return np.array(people, dtype=np.float64).reshape(-1, COCO_KEYPOINTS, 3)


def keypoint_image(
    people: np.ndarray, height: int, width: int, scale: tuple[float, float] = (1.0, 1.0), radius: int = 2
) -> np.ndarray:
    """uint8 (H, W) map: a disc of ``radius`` px at each detected keypoint (c > 0) holding its COCO
    index + 1, 0 elsewhere. ``scale`` = (sx, sy) maps the file's pixel coordinates to this size."""
    image = np.zeros((height, width), dtype=np.uint8)
    for person in people:
        for k, (x, y, c) in enumerate(person):
            if c <= 0:
                continue
            centre = (int(round((x + 0.5) * scale[0] - 0.5)), int(round((y + 0.5) * scale[1] - 0.5)))
            cv2.circle(image, centre, int(radius), int(k + 1), thickness=-1)
    return image


def flip_keypoint_labels(labels: np.ndarray) -> np.ndarray:
    """Swap left and right COCO labels (for a mirrored frame)."""
    table = np.arange(COCO_KEYPOINTS + 1, dtype=labels.dtype)
    for a, b in COCO_FLIP_PAIRS:
        table[a + 1], table[b + 1] = b + 1, a + 1
    return table[labels]


@dataclass
class FramePair:
    clip: int
    frame: int
    reference: int


class MannequinChallengeClips(Dataset):
    """Frame + reference-frame samples of one split, with parallax inputs and supervision.

    Each item is a dict of float tensors: ``image`` (3, H, W) in [0, 1], ``human_mask``,
    ``parallax_depth`` (0 where invalid or human), ``confidence``, ``input_log_depth`` (log parallax
    depth centred on the median of its valid values, or on a random 40-60th percentile with
    ``random_percentile``), ``depth`` (supervision, 0 where unknown), with ``keypoints`` also
    ``keypoints`` (the K channel), each (1, H, W); and the integer ``clip``, ``frame`` and
    ``index`` (position in this data set). Frames lacking a file are skipped and counted in
    ``skipped`` (warned once). With ``cache`` the parallax inputs (two optical flows per sample) are
    computed once per process and kept."""

    def __init__(
        self,
        split_dir: str | Path,
        image_size: Sequence[int] = (96, 128),
        reference_offset: int = 2,
        frame_stride: int = 1,
        flow_method: str = "dis",
        hflip: bool = False,
        cache: bool = True,
        keypoints: bool = False,
        keypoint_radius: int = 2,
        random_percentile: bool = False,
    ):
        self.split_dir = Path(split_dir)
        self.cache = {} if cache else None
        if not self.split_dir.is_dir():
            raise FileNotFoundError(f"{self.split_dir}: split folder of <clip>.txt trajectory files not found")
        self.height, self.width = int(image_size[0]), int(image_size[1])
        self.flow_method = flow_method
        self.hflip = hflip
        self.keypoints = keypoints
        self.keypoint_radius = keypoint_radius
        self.random_percentile = random_percentile
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
        needed = "a frame image, depth, mask" + (", keypoint file" if keypoints else "")
        if self.skipped:
            warnings.warn(
                f"{self.split_dir}: skipped {self.skipped} frames lacking {needed} or reference frame", stacklevel=2
            )
        if not self.samples:
            raise FileNotFoundError(
                f"{self.split_dir}: no usable frames; expected <clip>/frames/<timestamp>.png|.jpg, "
                "<clip>/depth/<timestamp>.npy and <clip>/masks/<timestamp>.png"
                + (" and <clip>/keypoints/<timestamp>_keypoints.json" if keypoints else "")
                + " beside each <clip>.txt"
            )

    def clip_dir(self, traj: Trajectory) -> Path:
        return self.split_dir / traj.name

    def _complete(self, traj: Trajectory, timestamp: int) -> bool:
        folder = self.clip_dir(traj)
        return (
            _frame_path(folder / "frames", timestamp) is not None
            and (folder / "depth" / f"{timestamp}.npy").exists()
            and (folder / "masks" / f"{timestamp}.png").exists()
            and (not self.keypoints or (folder / "keypoints" / f"{timestamp}_keypoints.json").exists())
        )

    def __len__(self) -> int:
        return len(self.samples)

    def load_frame(self, clip: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """RGB, depth and mask of one frame, resized to the data set's image size."""
        image, depth, mask, _ = self._load(clip, index, keypoints=False)
        return image, depth, mask

    def _load(self, clip: int, index: int, keypoints: bool):
        traj = self.trajectories[clip]
        folder, ts = self.clip_dir(traj), int(traj.timestamps[index])
        image = _read_rgb(_frame_path(folder / "frames", ts))
        depth = read_depth(folder / "depth" / f"{ts}.npy")
        mask = read_mask(folder / "masks" / f"{ts}.png")
        if depth.shape != image.shape[:2] or mask.shape != image.shape[:2]:
            raise DataFormatError(
                folder, f"frame {ts}: image {image.shape[:2]}, depth {depth.shape} and mask {mask.shape} differ in size"
            )
        labels = None
        if keypoints:
            scale = (self.width / image.shape[1], self.height / image.shape[0])
            labels = keypoint_image(
                read_keypoints(folder / "keypoints" / f"{ts}_keypoints.json"),
                self.height,
                self.width,
                scale,
                self.keypoint_radius,
            )
        size = (self.width, self.height)
        if image.shape[:2] != (self.height, self.width):
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            depth = cv2.resize(depth, size, interpolation=cv2.INTER_NEAREST)
            mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        return image, depth, mask, labels

    def sample_arrays(self, index: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """RGB and the per-pixel maps of one sample, unflipped: ``parallax_depth``, ``confidence``,
        ``depth``, ``human_mask`` and, with keypoints, ``keypoint_labels`` (uint8)."""
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        pair = self.samples[index]
        traj = self.trajectories[pair.clip]
        image, depth, mask, labels = self._load(pair.clip, pair.frame, self.keypoints)
        reference, _, _ = self.load_frame(pair.clip, pair.reference)
        K = intrinsics_matrix(traj.intrinsics[pair.frame], self.width, self.height)
        parallax = parallax_inputs(
            image,
            reference,
            K,
            traj.poses[pair.frame],
            traj.poses[pair.reference],
            human_mask=mask,
            flow_method=self.flow_method,
        )
        maps = {
            "parallax_depth": parallax.depth,
            "confidence": parallax.confidence,
            "depth": depth,
            "human_mask": (mask > 0).astype(np.float32),
        }
        if labels is not None:
            maps["keypoint_labels"] = labels
        arrays = image, maps
        if self.cache is not None:
            self.cache[index] = arrays
        return arrays

    def __getitem__(self, index: int) -> dict:
        pair = self.samples[index]
        image, maps = self.sample_arrays(index)
        if self.hflip and torch.rand(()) < 0.5:
            image = image[:, ::-1]
            maps = {k: m[:, ::-1] for k, m in maps.items()}
            if "keypoint_labels" in maps:
                maps["keypoint_labels"] = flip_keypoint_labels(maps["keypoint_labels"])
        percentile = float(40.0 + 20.0 * torch.rand(())) if self.random_percentile else 50.0
        maps = dict(maps, input_log_depth=centred_log_depth(maps["parallax_depth"], percentile))
        labels = maps.pop("keypoint_labels", None)
        if labels is not None:
            maps["keypoints"] = labels.astype(np.float32) / KEYPOINTS_FACTOR
        item = {k: torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))[None] for k, m in maps.items()}
        item["image"] = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
        item.update(clip=pair.clip, frame=pair.frame, index=index)
        return item


class MannequinChallengeDataModule(pl.LightningDataModule):
    """Train on ``train/`` (frozen people), validate on ``validation/``, test on ``test/``. With
    ``keypoints`` every frame needs its OpenPose keypoint file (the IDCMK model's K channel)."""

    def __init__(
        self,
        root: str,
        image_size: Sequence[int] = (96, 128),
        reference_offset: int = 2,
        frame_stride: int = 1,
        flow_method: str = "dis",
        hflip: bool = True,
        batch_size: int = 8,
        num_workers: int = 0,
        keypoints: bool = False,
        keypoint_radius: int = 2,
        generator: Callable[[Path], object] | None = None,
    ):
        super().__init__()
        self.root = Path(root)
        self.image_size = [int(s) for s in image_size]
        self.reference_offset = reference_offset
        self.frame_stride = frame_stride
        self.flow_method = flow_method
        self.hflip = hflip
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.keypoints = keypoints
        self.keypoint_radius = keypoint_radius
        self.generator = generator  # a callable: never saved as a hyper-parameter
        self.datasets: dict[str, MannequinChallengeClips] = {}

    def prepare_data(self) -> None:
        ensure_generated(self.root, self.generator)

    @property
    def skipped_samples(self) -> int:
        """Frames skipped for lacking a file, over the splits read so far (core.data.CountsSkippedSamples)."""
        return sum(d.skipped for d in self.datasets.values())

    def split(self, name: str) -> MannequinChallengeClips:
        if name not in self.datasets:
            train = name == "train"
            self.datasets[name] = MannequinChallengeClips(
                self.root / name,
                self.image_size,
                self.reference_offset,
                self.frame_stride if train else 1,
                self.flow_method,
                hflip=self.hflip and train,
                keypoints=self.keypoints,
                keypoint_radius=self.keypoint_radius,
                random_percentile=train,
            )
        return self.datasets[name]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.split("train"), self.split("validation")
        if stage in (None, "validate"):
            self.split("validation")
        if stage in (None, "test", "predict"):
            self.split("test")

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.split(name),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle and len(self.split(name)) > self.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)
