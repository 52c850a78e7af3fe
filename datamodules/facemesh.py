"""Face-mesh data: full images with face boxes + 6 keypoints for the detector, and keypoint-aligned
face crops with 3D points (rendered faces) or 2D contour points (annotated images) for the mesh.

Layout (written by ``datamodules/synthetic/facemesh.py``; no public data set has this mix, so the
layout is this project's, documented in docs/facemesh.md)::

    <root>/topology.json                          kind (grid | mediapipe), num_points, rows, cols (grid),
                                                  uv, triangles, contours, eye_corners, keypoint_names
    <root>/rendered/{train,val,test}/images/*.png
    <root>/rendered/{split}/annotations.json      {"style": "rendered", "images": [{"file", "width",
                                                   "height", "faces": [{"box": [x0, y0, x1, y1],
                                                   "keypoints": [[x, y] x 6], "points3d": row}]}]}
    <root>/rendered/{split}/points3d.npy          float32 (faces, num_points, 3): x, y, z in pixels
    <root>/annotated/{split}/images/*.png
    <root>/annotated/{split}/annotations.json     faces carry "contours": {name: [[x, y], ...]} in
                                                  the order of topology.json's contours[name]
    <root>/unlabeled/images/*.png                 images without labels (bootstrapping rounds)
    <root>/clips/<name>.mp4 + <name>.npz          points3d (T, N, 3), boxes (T, 4), keypoints (T, 6, 2), fps

A training sample is one image: its letterboxed detector input with all faces, and one aligned crop
(a random face, jittered; or, with ``negative_fraction``, a face-free crop whose face flag is 0)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from core.data import DataFormatError, ensure_generated, read_json, require_file, resolve_inside_json
from core.images import IMAGE_SUFFIXES, decode_image
from datamodules.face_alignment import (
    DEFAULT_CROP_SCALE,
    alignment_params,
    crop_matrix,
    jitter_params,
    letterbox,
    transform_points,
    warp_crops,
)
from datamodules.face_topology import FaceTopology, face_topology

log = logging.getLogger(__name__)

SOURCES = ("rendered", "annotated")
NUM_KEYPOINTS = 6


@dataclass
class FaceLabel:
    box: np.ndarray  # (4,) xyxy px
    keypoints: np.ndarray  # (6, 2) px
    points: np.ndarray | None = None  # (N, 3) px; z known
    contour: np.ndarray | None = None  # (N, 2) px with ``contour_mask``; 2D only


@dataclass
class ImageRecord:
    path: Path
    faces: list[FaceLabel] = field(default_factory=list)


def read_topology(root: Path, num_points: int) -> dict:
    path = root / "topology.json"
    topo = read_json(path, "the mesh topology (topology.json)")
    for key in ("num_points", "contours", "eye_corners", "triangles"):
        if key not in topo:
            raise DataFormatError(path, f"missing key {key!r}")
    if topo["num_points"] != num_points:
        raise DataFormatError(
            path,
            f"the data set has {topo['num_points']} mesh points but num_points={num_points} "
            "was configured (data.num_points)",
        )
    return topo


def _array(value: Any, shape: tuple, path: Path, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise DataFormatError(path, f"{where}: not numbers") from None
    if arr.shape != shape:
        raise DataFormatError(path, f"{where}: expected shape {shape}, got {arr.shape}")
    return arr


def read_split(root: Path, source: str, split: str, num_points: int, contours: dict) -> list[ImageRecord]:
    """The records of ``<root>/<source>/<split>``, validated; errors name the file and entry."""
    folder = root / source / split
    path = folder / "annotations.json"
    data = read_json(path, f"{source} {split} annotations")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataFormatError(path, "expected an object with an 'images' list")
    points3d = None
    if source == "rendered":
        npy = require_file(folder / "points3d.npy", "the rendered faces' 3D points")
        points3d = np.load(npy, mmap_mode="r")
        if points3d.ndim != 3 or points3d.shape[1:] != (num_points, 3):
            raise DataFormatError(npy, f"expected (faces, {num_points}, 3), got {points3d.shape}")
    records = []
    for i, entry in enumerate(data["images"]):
        where = f"images[{i}]"
        try:
            file, faces = entry["file"], entry["faces"]
        except (KeyError, TypeError):
            raise DataFormatError(path, f"{where}: needs 'file' and 'faces'") from None
        if not isinstance(file, str):
            raise DataFormatError(path, f"{where}.file: expected a file name, got {file!r:.40}")
        rec = ImageRecord(resolve_inside_json(folder, file, path))  # a name never leaves its split folder
        for j, face in enumerate(faces):
            fw = f"{where}.faces[{j}]"
            if "box" not in face or "keypoints" not in face:
                raise DataFormatError(path, f"{fw}: needs 'box' and 'keypoints'")
            label = FaceLabel(
                _array(face["box"], (4,), path, f"{fw}.box"),
                _array(face["keypoints"], (NUM_KEYPOINTS, 2), path, f"{fw}.keypoints"),
            )
            if source == "rendered":
                row = face.get("points3d")
                if not isinstance(row, int) or not 0 <= row < len(points3d):
                    raise DataFormatError(
                        path, f"{fw}.points3d: {row!r} is not a row of points3d.npy ({len(points3d)} rows)"
                    )
                label.points = np.array(points3d[row], dtype=np.float32)
            else:
                given = face.get("contours")
                if not isinstance(given, dict):
                    raise DataFormatError(path, f"{fw}: an annotated face needs 'contours'")
                contour = np.full((num_points, 2), np.nan, dtype=np.float32)
                for name, idx in contours.items():
                    if name in given:
                        contour[idx] = _array(given[name], (len(idx), 2), path, f"{fw}.contours.{name}")
                label.contour = contour
            rec.faces.append(label)
        records.append(rec)
    return records


def load_rgb(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3); a missing or undecodable file raises an error naming it (core.images)."""
    return np.asarray(decode_image(path, "RGB", what="image listed in the annotations"))


class FaceMeshDataset(Dataset):
    """Detector input + targets and one aligned mesh crop per image (see the module docstring)."""

    def __init__(
        self,
        records: Sequence[ImageRecord],
        num_points: int,
        eye_corners: Sequence[int],
        detector_size: int,
        crop_size: int,
        crop_scale: float,
        max_faces: int,
        train: bool,
        jitter: dict | None = None,
        negative_fraction: float = 0.0,
        seed: int = 0,
        first_id: int = 0,
    ):
        self.records = list(records)
        self.first_id = first_id  # image_id = first_id + index: unique over the sets a loader joins
        self.num_points, self.eye_corners = num_points, tuple(eye_corners)
        self.detector_size, self.crop_size, self.crop_scale = detector_size, crop_size, crop_scale
        self.max_faces, self.train = max_faces, train
        self.jitter = dict(jitter or {"shift": 0.08, "scale": 0.12, "rotation": 15.0})
        self.negative_fraction, self.seed = negative_fraction, seed

    def __len__(self) -> int:
        return len(self.records)

    def _generator(self, index: int) -> torch.Generator:
        """Training draws come from the (seeded, per-worker) global RNG; evaluation is fixed per image."""
        g = torch.Generator()
        g.manual_seed(int(torch.randint(0, 2**62, (1,))) if self.train else self.seed * 1_000_003 + index)
        return g

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rec = self.records[index]
        image = torch.from_numpy(load_rgb(rec.path)).permute(2, 0, 1).float() / 255.0
        g = self._generator(index)
        det, scale = letterbox(image[None], self.detector_size)
        size = float(self.detector_size)
        boxes = torch.zeros(self.max_faces, 4)
        kps = torch.zeros(self.max_faces, NUM_KEYPOINTS, 2)
        valid = torch.zeros(self.max_faces, dtype=torch.bool)
        for j, face in enumerate(rec.faces[: self.max_faces]):
            boxes[j] = torch.from_numpy(face.box) * scale / size
            kps[j] = torch.from_numpy(face.keypoints) * scale / size
            valid[j] = True
        sample = {
            "det_image": det[0],
            "det_boxes": boxes,
            "det_keypoints": kps,
            "det_valid": valid,
            "image_id": torch.tensor(self.first_id + index),
        }
        sample.update(self._crop(image, rec, g))
        return sample

    def _crop(self, image: torch.Tensor, rec: ImageRecord, g: torch.Generator) -> dict[str, torch.Tensor]:
        n = self.num_points
        points = torch.zeros(n, 3)
        mask = torch.zeros(n, dtype=torch.bool)
        has_z = torch.tensor(0.0)
        face_flag = torch.tensor(0.0)
        negative = not rec.faces or (self.train and torch.rand(1, generator=g).item() < self.negative_fraction)
        if negative:
            matrix = self._negative_matrix(image, rec, g)
        else:
            k = int(torch.randint(0, len(rec.faces), (1,), generator=g)) if self.train else 0
            face = rec.faces[k]
            centre, side, angle = alignment_params(
                torch.from_numpy(face.box), torch.from_numpy(face.keypoints), self.crop_scale
            )
            if self.train:
                j = self.jitter
                centre, side, angle = jitter_params(centre, side, angle, g, j["shift"], j["scale"], j["rotation"])
            matrix = crop_matrix(centre, side, angle, self.crop_size)
            face_flag = torch.tensor(1.0)
            if face.points is not None:
                points = transform_points(torch.from_numpy(face.points), matrix) / self.crop_size
                mask[:] = True
                has_z = torch.tensor(1.0)
            else:
                known = torch.from_numpy(~np.isnan(face.contour[:, 0]))
                xy = transform_points(torch.from_numpy(np.nan_to_num(face.contour)), matrix) / self.crop_size
                points[:, :2] = torch.where(known[:, None], xy, torch.zeros_like(xy))
                mask = known
        crop = warp_crops(image[None], matrix[None], self.crop_size)[0]
        return {
            "crop": crop,
            "points": points,
            "point_mask": mask,
            "has_z": has_z,
            "face": face_flag,
            "crop_matrix": matrix,
        }

    def _negative_matrix(self, image: torch.Tensor, rec: ImageRecord, g: torch.Generator) -> torch.Tensor:
        """A crop that overlaps no face box by more than 10 % of its area (else the best try)."""
        h, w = image.shape[-2:]
        best, best_overlap = None, np.inf
        for _ in range(10):
            side = float(min(h, w)) * (0.25 + 0.35 * torch.rand(1, generator=g).item())
            cx = side / 2 + torch.rand(1, generator=g).item() * max(w - side, 1)
            cy = side / 2 + torch.rand(1, generator=g).item() * max(h - side, 1)
            box = np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])
            overlap = 0.0
            for f in rec.faces:
                iw = max(0.0, min(box[2], f.box[2]) - max(box[0], f.box[0]))
                ih = max(0.0, min(box[3], f.box[3]) - max(box[1], f.box[1]))
                overlap = max(overlap, iw * ih / (side * side))
            if overlap < best_overlap:
                best, best_overlap = (cx, cy, side), overlap
            if overlap < 0.1:
                break
        cx, cy, side = best
        angle = (torch.rand(1, generator=g).item() * 2 - 1) * 0.5
        return crop_matrix(torch.tensor([cx, cy]), torch.tensor(side), torch.tensor(angle), self.crop_size).float()


class FaceMeshDataModule(pl.LightningDataModule):
    """Face detection + face mesh on the layout in the module docstring; ``sources`` picks the
    training sources (``rendered``: 3D points, ``annotated``: 2D contours; both: joint training).
    Pseudo-labels from bootstrapping rounds join the training set through :meth:`set_pseudo_labels`."""

    def __init__(
        self,
        root: str,
        num_points: int = 468,
        detector_size: int = 128,
        crop_size: int = 128,
        crop_scale: float = DEFAULT_CROP_SCALE,
        max_faces: int = 4,
        sources: Sequence[str] = SOURCES,
        jitter: dict | None = None,
        negative_fraction: float = 0.1,
        batch_size: int = 16,
        num_workers: int = 0,
        generator: Callable[[Path], object] | None = None,
    ):
        super().__init__()
        unknown = [s for s in sources if s not in SOURCES]
        if unknown or not sources:
            raise ValueError(f"data.sources: unknown {unknown}; choose from {SOURCES}")
        self.root = Path(root)
        self.num_points, self.detector_size, self.crop_size = num_points, detector_size, crop_size
        self.crop_scale, self.max_faces, self.sources = crop_scale, max_faces, tuple(sources)
        self.jitter, self.negative_fraction = jitter, negative_fraction
        self.batch_size, self.num_workers = batch_size, num_workers
        self.generator = generator
        self.topology = face_topology(num_points)
        self.pseudo_records: list[ImageRecord] = []
        self._splits: dict[tuple[str, str], list[ImageRecord]] = {}

    def prepare_data(self) -> None:
        ensure_generated(self.root, self.generator)

    def setup(self, stage: str | None = None) -> None:
        ensure_generated(self.root, self.generator)  # also on ranks that skipped prepare_data
        topo = read_topology(self.root, self.num_points)
        self.topology = FaceTopology.from_json(topo)  # the data's own: the grid or MediaPipe's mesh
        self.eye_corners = tuple(topo["eye_corners"])
        self.contours = {k: list(v) for k, v in topo["contours"].items()}
        for source in SOURCES:
            for split in ("train", "val", "test"):
                if (source, split) not in self._splits:
                    self._splits[(source, split)] = read_split(self.root, source, split, self.num_points, self.contours)

    def records(self, source: str, split: str) -> list[ImageRecord]:
        return self._splits[(source, split)]

    def dataset(self, records: Sequence[ImageRecord], train: bool, first_id: int = 0) -> FaceMeshDataset:
        return FaceMeshDataset(
            records,
            self.num_points,
            self.eye_corners,
            self.detector_size,
            self.crop_size,
            self.crop_scale,
            self.max_faces,
            train,
            self.jitter,
            self.negative_fraction if train else 0.0,
            first_id=first_id,
        )

    def train_dataset(self) -> Dataset:
        parts = [self.dataset(self.records(s, "train"), True) for s in self.sources]
        if self.pseudo_records:
            parts.append(self.dataset(self.pseudo_records, True))
        return ConcatDataset(parts)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=False,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset(), True)

    def _eval(self, split: str) -> DataLoader:
        # Both sources are always evaluated (3D NME on rendered faces, contour NME on annotated ones).
        parts, first = [], 0
        for source in SOURCES:
            parts.append(self.dataset(self.records(source, split), False, first))
            first += len(parts[-1])
        return self._loader(ConcatDataset(parts), False)

    def val_dataloader(self) -> DataLoader:
        return self._eval("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval("test")

    # --- bootstrapping and videos --------------------------------------------------------------------

    def unlabeled_images(self) -> list[Path]:
        folder = self.root / "unlabeled" / "images"
        return sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.exists() else []

    def set_pseudo_labels(self, records: Sequence[ImageRecord]) -> None:
        """Training images labelled by the model itself (bootstrapping); replaces earlier rounds'."""
        self.pseudo_records = list(records)

    def clips(self, names: Sequence[str] = ("still", "moving")) -> dict[str, tuple[Path, dict]]:
        """{name: (video path, labels)} of the clips that exist."""
        out = {}
        for name in names:
            video, labels = self.root / "clips" / f"{name}.mp4", self.root / "clips" / f"{name}.npz"
            if video.exists() and labels.exists():
                with np.load(labels) as z:
                    out[name] = (video, {k: z[k] for k in z.files})
        return out
