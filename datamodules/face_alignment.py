"""Keypoint-aligned face crops: the similarity transform from the detector's output (box + eye
keypoints) to an upright square crop, the warp, and point mapping in both directions.

As in MediaPipe's face-mesh graph, the crop is centred on the face box, rotated so that the line from
the right eye to the left eye is horizontal, and ``scale`` times the box's larger side. Coordinates
are continuous pixels (the centre of pixel (i, j) is (j + 0.5, i + 0.5)) in the image and the crop.

The face-mesh data and the face-mesh model share this geometry, so it lives beside the data (datamodules
import no task)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_CROP_SCALE = 1.5


def array_namespace(x):
    """``numpy`` for a NumPy array, else ``torch``: the geometry below is written once in the names both
    share (NumPy 2's array-API aliases ``atan2``, ``concat``), so training batches stay tensors while the
    per-frame inference path stays in NumPy, whose small-array calls cost a fraction of torch's."""
    return np if isinstance(x, np.ndarray) else torch


def alignment_params(boxes, keypoints, scale: float = DEFAULT_CROP_SCALE):
    """(centre (..., 2), side (...,), angle (...,) radians) of the crop for xyxy ``boxes`` (..., 4)
    and keypoints (..., K>=2, 2) whose first two are the right and left eye (tensors or NumPy arrays)."""
    xp = array_namespace(boxes)
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    size = boxes[..., 2:] - boxes[..., :2]
    side = xp.maximum(size[..., 0], size[..., 1]) * scale
    eyes = keypoints[..., 1, :] - keypoints[..., 0, :]
    angle = xp.atan2(eyes[..., 1], eyes[..., 0])
    return centre, side, angle


def crop_matrix(centre, side, angle, crop_size: int):
    """Affine (..., 2, 3) taking image pixels to crop pixels: rotate by -angle about ``centre``,
    scale by crop_size / side, move the centre to the crop's centre (tensors or NumPy arrays)."""
    xp = array_namespace(centre)
    k = crop_size / side
    c, s = xp.cos(angle) * k, xp.sin(angle) * k
    # [x'; y'] = k R(-angle) ([x; y] - centre) + crop_size / 2
    row0 = xp.stack([c, s, -(c * centre[..., 0] + s * centre[..., 1]) + crop_size / 2], -1)
    row1 = xp.stack([-s, c, -(-s * centre[..., 0] + c * centre[..., 1]) + crop_size / 2], -1)
    return xp.stack([row0, row1], -2)


def invert_affine(m: torch.Tensor) -> torch.Tensor:
    """Inverse of affine maps (..., 2, 3)."""
    a = m[..., :2]
    a_inv = torch.linalg.inv(a)
    return torch.cat([a_inv, -(a_inv @ m[..., 2:])], -1)


def affine_scale(m: torch.Tensor) -> torch.Tensor:
    """The isotropic scale of similarity transforms (..., 2, 3)."""
    return torch.sqrt(torch.det(m[..., :2]).abs())


def transform_points(points: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Apply affine ``m`` (..., 2, 3) to points (..., N, 2 or 3); a z column is scaled by the
    transform's scale (z is measured in the same units as x and y)."""
    m = m.to(points.dtype)
    xy = points[..., :2] @ m[..., :2].transpose(-1, -2) + m[..., None, :, 2]
    if points.shape[-1] == 2:
        return xy
    return torch.cat([xy, points[..., 2:] * affine_scale(m)[..., None, None]], -1)


def index_to_continuous(m):
    """An affine (..., 2, 3) between pixel-index coordinates (OpenCV's and MediaPipe's: a pixel's centre
    at integers) as the same map between continuous coordinates (centre at + 0.5)."""
    shift = 0.5 - 0.5 * m[..., :2].sum(-1)
    return array_namespace(m).concat([m[..., :2], (m[..., 2] + shift)[..., None]], -1)


def continuous_to_index(m):
    """The inverse of :func:`index_to_continuous`: a map between continuous coordinates as the same map
    between pixel-index coordinates (what OpenCV's warp takes)."""
    shift = 0.5 - 0.5 * m[..., :2].sum(-1)
    return array_namespace(m).concat([m[..., :2], (m[..., 2] - shift)[..., None]], -1)


def warp_crop_uint8(image: np.ndarray, index_matrix: np.ndarray, crop_size: int, padding_mode: str = "zeros"):
    """One crop (3, S, S) float32 in [0, 1] of an RGB uint8 image (H, W, 3) through an image-to-crop affine
    (2, 3) in pixel-index coordinates: OpenCV's bilinear warp of the 8-bit image, as MediaPipe's CPU
    ImageToTensorCalculator does (``padding_mode`` "zeros" or "border", like :func:`warp_crops`)."""
    border = cv2.BORDER_REPLICATE if padding_mode == "border" else cv2.BORDER_CONSTANT
    crop = cv2.warpAffine(image, index_matrix, (crop_size, crop_size), flags=cv2.INTER_LINEAR, borderMode=border)
    return unit_chw(crop)


def unit_chw(image: np.ndarray) -> np.ndarray:
    """An RGB uint8 image (H, W, 3) as a C-contiguous float32 (3, H, W) in [0, 1] (x / 255 in float32, as
    MediaPipe's tensor conversion): contiguous so that no runtime copies it again before the network."""
    x = image.transpose(2, 0, 1).astype(np.float32, order="C")
    x *= np.float32(1 / 255)
    return x


def warp_crops(
    images: torch.Tensor, matrices: torch.Tensor, crop_size: int, padding_mode: str = "zeros"
) -> torch.Tensor:
    """Crops (B, C, S, S) of images (B, C, H, W) through image-to-crop affines (B, 2, 3), bilinear;
    outside the image zeros, or the nearest edge pixel with ``padding_mode="border"``."""
    b, _, h, w = images.shape
    inv = invert_affine(matrices.to(images.dtype))  # crop px -> image px
    # normalized crop coords (align_corners=False): u = (2 x + 1) / S - 1  ->  x = ((u + 1) S - 1) / 2
    to_px = torch.tensor(
        [[crop_size / 2, 0, crop_size / 2 - 0.5], [0, crop_size / 2, crop_size / 2 - 0.5], [0, 0, 1]],
        dtype=images.dtype,
        device=images.device,
    )
    to_norm = torch.tensor([[2 / w, 0, 1 / w - 1], [0, 2 / h, 1 / h - 1]], dtype=images.dtype, device=images.device)
    inv3 = torch.cat([inv, torch.tensor([0, 0, 1], dtype=images.dtype, device=images.device).expand(b, 1, 3)], 1)
    # grid_sample samples at pixel centre (x_px + 0.5) in continuous coordinates
    shift = torch.tensor([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]], dtype=images.dtype, device=images.device)
    unshift = torch.tensor([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]], dtype=images.dtype, device=images.device)
    theta = to_norm @ unshift @ inv3 @ shift @ to_px
    grid = F.affine_grid(theta, (b, images.shape[1], crop_size, crop_size), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def jitter_params(centre, side, angle, generator: torch.Generator, shift: float, scale: float, rotation_deg: float):
    """Random perturbation of crop parameters for training (shift as a fraction of the side)."""
    n = tuple(centre.shape[:-1])
    d = (torch.rand(n + (2,), generator=generator) * 2 - 1) * shift * side[..., None]
    s = 1 + (torch.rand(n, generator=generator) * 2 - 1) * scale
    r = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(rotation_deg)
    return centre + d, side * s, angle + r


def letterbox(images: torch.Tensor, size: int) -> tuple[torch.Tensor, float]:
    """Resize (B, 3, H, W) so the longer side is ``size``, pad right/bottom; returns (batch, scale)."""
    h, w = images.shape[-2:]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) != (h, w):
        images = F.interpolate(images, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    return F.pad(images, (0, size - nw, 0, size - nh)), scale
