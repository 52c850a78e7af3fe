"""The face-mesh pipeline of Kartynnik et al. (2019, Sec. 2): the detector finds faces on the full
image, the mesh model regresses points on each keypoint-aligned crop; on video the next frame's crop
comes from the current mesh and the detector runs again only when the face flag says the face was
lost. Smoothing (one-euro) applies to the output stream only, never to the crops. Also: drawing a
mesh and writing it as OBJ."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from core.io import atomic_write_text
from datamodules.face_alignment import (
    alignment_params,
    continuous_to_index,
    crop_matrix,
    index_to_continuous,
    warp_crop_uint8,
    warp_crops,
)
from datamodules.face_topology import FaceTopology, face_topology
from tasks.facemesh.detector import cached_anchors, detect_faces, to_batch
from tasks.facemesh.smoothing import OneEuroFilter


@dataclass
class FaceResult:
    """One face: points (N, 3) image px (z px, smaller = nearer), box (4,), keypoints (6, 2),
    detection score and face-flag probability."""

    points: np.ndarray
    box: np.ndarray
    keypoints: np.ndarray
    score: float
    face_prob: float
    detected: bool = True  # False when the crop came from the previous frame's mesh

    def as_json(self) -> dict:
        return {
            "box": self.box.round(2).tolist(),
            "keypoints": self.keypoints.round(2).tolist(),
            "score": round(float(self.score), 4),
            "face_prob": round(float(self.face_prob), 4),
            "detected": self.detected,
            "points": self.points.round(2).tolist(),
        }


@dataclass
class FaceMeshPipeline:
    detector: torch.nn.Module
    mesh: torch.nn.Module
    crop_size: int
    crop_scale: float = 1.5
    score_threshold: float = 0.5
    iou_threshold: float = 0.3
    face_threshold: float = 0.5
    topology: FaceTopology = field(default=None)  # type: ignore[assignment]

    def __post_init__(self):
        self.detector.eval()
        self.mesh.eval()
        self.anchors = cached_anchors(self.detector.input_size)
        if self.topology is None:
            self.topology = face_topology(self.mesh.num_points)
        uv = self.topology.uv
        if uv is None:
            # MediaPipe's face_landmark_landmarks_to_roi: the box of all points, rotation from the outer
            # eye corners (33 -> 263).
            self.box_region = np.arange(self.topology.num_points)
            self.eye_sets = tuple(np.array([i]) for i in self.topology.eye_corners)
        else:
            self.box_region = np.flatnonzero((np.abs(uv[:, 0]) <= 0.6) & (uv[:, 1] <= 0.6))
            self.eye_sets = tuple(np.array(self.topology.contours[k]) for k in ("right_eye", "left_eye"))

    @property
    def mesh_param(self) -> torch.nn.Parameter:
        """A parameter of ``mesh`` (its device and dtype), looked up once per network, not per crop: walking
        the modules cost more than the arithmetic around the network. Follows a reassigned ``mesh``; the
        same object after ``.to()``, which moves parameters in place."""
        if getattr(self, "_param_of", None) is not self.mesh:
            self._param_of, self._mesh_param = self.mesh, next(self.mesh.parameters())
        return self._mesh_param

    @classmethod
    def from_task(cls, task, runtime: str = "torch", **kwargs) -> FaceMeshPipeline:
        """The pipeline of a ``FaceMeshTask`` with its settings; ``runtime`` ``torch`` (the reference, what
        training uses) or ``onnxruntime`` (the tools' default; tasks/facemesh/runtime.py)."""
        h = task.hparams
        detector, mesh = task.inference_networks(runtime)
        return cls(
            detector,
            mesh,
            h.crop_size,
            h.crop_scale,
            h.score_threshold,
            h.nms_iou_threshold,
            h.face_threshold,
            **{"topology": task.topology, **kwargs},
        )

    @torch.no_grad()
    def mesh_on_crops(self, image: np.ndarray | torch.Tensor, boxes, keypoints):
        """Points (K, N, 3) in image px and face probabilities (K,) for crops aligned by ``boxes`` and
        ``keypoints`` on one image: RGB uint8 (H, W, 3), each crop one OpenCV warp of the 8-bit frame (as
        MediaPipe's CPU graph; the geometry in NumPy, whose small-array calls cost a fraction of torch's),
        or float (3, H, W) in [0, 1] (``warp_crops``, as in training)."""
        frame = isinstance(image, np.ndarray)
        if frame:
            boxes, keypoints = np.asarray(boxes, np.float32), np.asarray(keypoints, np.float32)
        else:
            boxes, keypoints = torch.as_tensor(boxes).float(), torch.as_tensor(keypoints).float()
        centre, side, angle = (float64(a) for a in alignment_params(boxes, keypoints, self.crop_scale))
        index_coordinates = getattr(self.mesh, "index_coordinates", False)
        if index_coordinates:
            # MediaPipe (face_landmark_cpu.pbtxt): the rectangle in pixel-index coordinates, OpenCV's warp
            # with BORDER_REPLICATE, the network's points as index coordinates of the crop.
            index = crop_matrix(centre - 0.5, side, angle, self.crop_size)
            to_crop, offset, padding = index, 0.5, "border"
        else:
            to_crop = crop_matrix(centre, side, angle, self.crop_size)
            index, offset, padding = continuous_to_index(to_crop), 0.0, "zeros"
        if frame:
            crops = torch.from_numpy(np.stack([warp_crop_uint8(image, m, self.crop_size, padding) for m in index]))
        else:
            matrix = index_to_continuous(index) if index_coordinates else to_crop
            crops = warp_crops(expand(image, len(boxes)), matrix.float(), self.crop_size, padding)
        points, logit = self.mesh(crops.to(self.mesh_param.device, self.mesh_param.dtype))
        # crop px -> image px in NumPy (a few small products; torch's per-call overhead cost more)
        points = points.detach().cpu().double().numpy() * self.crop_size
        back = np.stack([cv2.invertAffineTransform(m) for m in np.asarray(to_crop)])
        xy = np.einsum("kij,knj->kni", back[..., :2], points[..., :2]) + back[:, None, :, 2] + offset
        z = points[..., 2:] * np.sqrt(np.abs(np.linalg.det(back[..., :2])))[:, None, None]
        points = torch.from_numpy(np.concatenate([xy, z], -1).astype(np.float32))
        return points, torch.sigmoid(logit.detach().cpu().float())

    def crop_from_points(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(box, keypoints with the two eyes) of a face mesh, to align the next frame's crop."""
        region = points[self.box_region, :2]
        box = np.array([*region.min(0), *region.max(0)])
        kp = np.zeros((6, 2))
        kp[0], kp[1] = points[self.eye_sets[0], :2].mean(0), points[self.eye_sets[1], :2].mean(0)
        return box, kp

    def process_image(self, image) -> list[FaceResult]:
        """Every face in one RGB image (H, W, 3 uint8, or float (3, H, W))."""
        frame = as_frame(image)
        ((boxes, kps, scores),) = detect_faces(
            frame, self.detector, self.score_threshold, self.iou_threshold, self.anchors
        )
        if len(boxes) == 0:
            return []
        points, probs = self.mesh_on_crops(frame, boxes, kps)
        arrays = (t.numpy() for t in (points, boxes, kps, scores, probs))  # rows of arrays: cheaper than tensors
        return [FaceResult(p, b, k, float(s), float(f)) for p, b, k, s, f in zip(*arrays) if f >= self.face_threshold]

    def track(self, frames: Iterable[np.ndarray]) -> list[FaceResult | None]:
        """One face through a video: detect, then follow the mesh; re-detect when the flag drops."""
        out: list[FaceResult | None] = []
        previous: FaceResult | None = None
        for frame in frames:
            frame = as_frame(frame)
            result = None
            if previous is not None:
                box, kp = self.crop_from_points(previous.points)
                points, probs = self.mesh_on_crops(frame, box[None], kp[None])
                if probs[0] >= self.face_threshold:
                    result = FaceResult(points[0].numpy(), box, kp, previous.score, float(probs[0]), detected=False)
            if result is None:
                faces = self.process_image(frame)
                result = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])) if faces else None
            out.append(result)
            previous = result
        return out


def as_frame(image) -> np.ndarray | torch.Tensor:
    """One image as the pipeline takes it: an RGB uint8 array (H, W, 3) stays as it is (OpenCV warps it),
    anything else becomes a float (3, H, W) tensor in [0, 1]."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3:
        return image
    return to_batch(image)[0]


def float64(a: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    return a.astype(np.float64) if isinstance(a, np.ndarray) else a.double()


def expand(image: torch.Tensor, n: int) -> torch.Tensor:
    """One image (3, H, W) as a batch of ``n`` views."""
    return image[None].expand(n, -1, -1, -1)


def interocular(points: np.ndarray, topology: FaceTopology) -> float:
    a, b = topology.eye_corners
    return float(np.linalg.norm(points[a, :2] - points[b, :2]))


def smooth_track(
    track: list[FaceResult | None],
    fps: float,
    topology: FaceTopology,
    min_cutoff: float,
    beta: float,
    d_cutoff: float = 1.0,
) -> list[np.ndarray | None]:
    """One-euro-filtered points of a track (speed measured in inter-ocular distances per second);
    the filter restarts after a frame without a face."""
    f = OneEuroFilter(min_cutoff, beta, d_cutoff)
    out: list[np.ndarray | None] = []
    for t, face in enumerate(track):
        if face is None:
            f.reset()
            out.append(None)
            continue
        out.append(f(face.points, t / fps, velocity_scale=1.0 / max(interocular(face.points, topology), 1e-6)))
    return out


def draw_mesh(
    image: np.ndarray,
    points: np.ndarray,
    topology: FaceTopology,
    color: tuple[int, int, int] = (40, 255, 80),
    *,
    keypoints: np.ndarray | None = None,
    box: np.ndarray | None = None,
) -> np.ndarray:
    """The mesh's triangle edges (and keypoints, box) drawn on a copy of an RGB uint8 image."""
    out = np.ascontiguousarray(image.copy())
    shift = 4  # sub-pixel drawing: coordinates in 1/16 px
    xy = np.round(points[:, :2] * (1 << shift)).astype(np.int32)
    polys = [xy[t] for t in topology.triangles]
    cv2.polylines(out, polys, True, color, 1, cv2.LINE_AA, shift)
    if keypoints is not None:
        for x, y in keypoints:
            cv2.circle(out, (int(round(x)), int(round(y))), 2, (255, 60, 60), -1, cv2.LINE_AA)
    if box is not None:
        x0, y0, x1, y1 = [int(round(v)) for v in box]
        cv2.rectangle(out, (x0, y0), (x1, y1), (60, 120, 255), 1)
    return out


def write_obj(path: str | Path, points: np.ndarray, topology: FaceTopology) -> Path:
    """Wavefront OBJ of a mesh in image pixels, turned into a right-handed frame (x right, y up,
    z towards the viewer), with 1-based triangle indices facing the viewer."""
    lines = [f"# face mesh: {len(points)} vertices, {len(topology.triangles)} triangles (image px)"]
    lines += [f"v {x:.3f} {-y:.3f} {-z:.3f}" for x, y, z in points]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in topology.triangles]
    return atomic_write_text(path, "\n".join(lines) + "\n")
