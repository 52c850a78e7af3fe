"""Multi-view geometry and parallax inputs for the Mannequin Challenge DataModule (Li et al., CVPR
2019, Sec. 4.1): intrinsics, relative pose, depth triangulated from optical flow, and its confidence.

Conventions follow the Mannequin Challenge / RealEstate10K release: intrinsics are normalized
(image corners at (0, 0) and (1, 1)), a pose P = [R | t] maps world points into camera coordinates,
and depth is the camera-space z of a pixel's 3D point.

The confidence and the masking of the parallax depth follow the paper's public loader
(google/mannequinchallenge ``loaders/image_folder.py``, ``TUMImageFolder.load_tum_hdf5``), with
e_lr the left-right (forward-backward) flow error in pixels, gamma the distance of the flow's end
point from its epipolar line in pixels and alpha the parallax angle in degrees:

    C_lr = max(0, 1 - e_lr^2 / 1^2)
    C_ep = max(0, 1 - gamma^2 / 2^2)
    C_pa = 1 - (min(alpha, 1) - 1)^2 / 1^2
    valid = (e_lr < 1) and (C_pa > 0.25) and environment
    C = C_lr * C_ep * C_pa * valid,   parallax depth = triangulated depth * valid

The network sees log parallax depth minus a percentile of its valid values (the median at test
time as in the public loader; a random 40th-60th percentile in training), 0 where invalid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.flow import dense_flow, forward_backward_error


def intrinsics_matrix(normalized: np.ndarray, width: int, height: int) -> np.ndarray:
    """3x3 pixel-space K from normalized (fx, fy, cx, cy), as the release describes: x by width, y by height."""
    fx, fy, cx, cy = (float(v) for v in normalized[:4])
    return np.array([[width * fx, 0.0, width * cx], [0.0, height * fy, height * cy], [0.0, 0.0, 1.0]])


def relative_pose(pose_ref: np.ndarray, pose_src: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) taking camera-``ref`` coordinates to camera-``src`` coordinates, from world-to-camera poses."""
    r_ref, t_ref = pose_ref[:3, :3], pose_ref[:3, 3]
    r_src, t_src = pose_src[:3, :3], pose_src[:3, 3]
    rotation = r_src @ r_ref.T
    return rotation, t_src - rotation @ t_ref


def pixel_grid(height: int, width: int) -> np.ndarray:
    """Homogeneous pixel centres (3, H*W); pixel (i, j) has its centre at (j + 0.5, i + 0.5)."""
    ys, xs = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel(), np.ones(height * width)])


def project(depth: np.ndarray, K: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """Where each pixel of a view with z-depth ``depth`` lands in the other view: (H, W, 2) pixel coords."""
    h, w = depth.shape
    rays = np.linalg.inv(K) @ pixel_grid(h, w)
    points = rays * depth.reshape(1, -1)
    moved = K @ (rotation @ points + translation.reshape(3, 1))
    z = np.where(np.abs(moved[2]) < 1e-9, 1e-9, moved[2])
    return (moved[:2] / z).T.reshape(h, w, 2)


def triangulate_depth(
    flow: np.ndarray, K: np.ndarray, rotation: np.ndarray, translation: np.ndarray, min_depth: float = 1e-3
) -> np.ndarray:
    """Per-pixel z-depth from a flow field to a second view with known relative pose (R, t).

    A pixel x at depth d maps to x' ~ K (d R K^-1 x + t); with a = K R K^-1 x and b = K t each image
    coordinate gives a linear equation d (a_k - x'_k a_3) = x'_k b_3 - b_k, solved for d by least
    squares over the two. Non-positive or undefined solutions (no parallax) return 0."""
    h, w = flow.shape[:2]
    grid = pixel_grid(h, w)
    a = K @ rotation @ np.linalg.inv(K) @ grid
    b = K @ translation.reshape(3)
    u = grid[0] + flow[..., 0].ravel()
    v = grid[1] + flow[..., 1].ravel()
    cu, cv = a[0] - u * a[2], a[1] - v * a[2]
    eu, ev = u * b[2] - b[0], v * b[2] - b[1]
    denom = cu * cu + cv * cv
    depth = np.where(denom > 1e-12, (cu * eu + cv * ev) / np.maximum(denom, 1e-12), 0.0)
    depth = np.where(np.isfinite(depth) & (depth > min_depth), depth, 0.0)
    return depth.reshape(h, w).astype(np.float32)


def fundamental_matrix(K: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """F with x'^T F x = 0 for corresponding pixels: K^-T [t]_x R K^-1."""
    tx, ty, tz = translation.reshape(3)
    skew = np.array([[0.0, -tz, ty], [tz, 0.0, -tx], [-ty, tx, 0.0]])
    k_inv = np.linalg.inv(K)
    return k_inv.T @ skew @ rotation @ k_inv


def epipolar_distance(flow: np.ndarray, K: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """Pixel distance of each flow end point from its epipolar line in the second view (H, W)."""
    h, w = flow.shape[:2]
    grid = pixel_grid(h, w)
    lines = fundamental_matrix(K, rotation, translation) @ grid
    ends = np.stack([grid[0] + flow[..., 0].ravel(), grid[1] + flow[..., 1].ravel(), np.ones(h * w)])
    num = np.abs((lines * ends).sum(0))
    den = np.sqrt(lines[0] ** 2 + lines[1] ** 2)
    return (num / np.maximum(den, 1e-12)).reshape(h, w).astype(np.float32)


def parallax_angle(depth: np.ndarray, K: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """Angle (degrees) between the two viewing rays of each triangulated point: small angles mean
    depth is poorly constrained."""
    h, w = depth.shape
    rays = np.linalg.inv(K) @ pixel_grid(h, w)
    points = rays * depth.reshape(1, -1)
    centre_src = -rotation.T @ translation.reshape(3)  # second camera centre in reference coordinates
    to_ref = points
    to_src = points - centre_src.reshape(3, 1)
    cos = (to_ref * to_src).sum(0) / np.maximum(np.linalg.norm(to_ref, axis=0) * np.linalg.norm(to_src, axis=0), 1e-12)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).reshape(h, w).astype(np.float32)


@dataclass
class ConfidenceParams:
    """Thresholds of the public loader: left-right flow error ``lr`` (pixels), epipolar distance
    ``epipolar`` (pixels), parallax angle ``angle`` (degrees) and the minimum angle term
    ``min_angle_confidence`` below which the parallax depth is dropped."""

    lr: float = 1.0
    epipolar: float = 2.0
    angle: float = 1.0
    min_angle_confidence: float = 0.25


def parallax_confidence(
    lr_error: np.ndarray, epipolar: np.ndarray, angle: np.ndarray, params: ConfidenceParams = ConfidenceParams()
) -> tuple[np.ndarray, np.ndarray]:
    """(C_lr * C_ep * C_pa, valid) before the human mask: see the module docstring."""
    c_lr = np.maximum(0.0, 1.0 - lr_error**2 / params.lr**2)
    c_ep = np.maximum(0.0, 1.0 - epipolar**2 / params.epipolar**2)
    c_pa = 1.0 - (np.minimum(params.angle, angle) - params.angle) ** 2 / params.angle**2
    valid = (lr_error < params.lr) & (c_pa > params.min_angle_confidence)
    return (c_lr * c_ep * c_pa).astype(np.float32), valid


@dataclass
class ParallaxInputs:
    """Masked parallax depth (0 where invalid or human), its confidence (0 there too) and the flow."""

    depth: np.ndarray
    confidence: np.ndarray
    flow: np.ndarray


def parallax_inputs(
    frame: np.ndarray,
    reference: np.ndarray,
    K: np.ndarray,
    pose: np.ndarray,
    pose_reference: np.ndarray,
    human_mask: np.ndarray | None = None,
    flow_method: str = "dis",
    params: ConfidenceParams = ConfidenceParams(),
) -> ParallaxInputs:
    """Depth of ``frame`` from motion parallax against ``reference`` (RGB uint8, same size, pixel K,
    world-to-camera 3x4 poses), kept on the environment only (mask > 0 = human: people move on
    their own) where the flow is consistent and the parallax angle large enough."""
    flow_fw = dense_flow(frame, reference, method=flow_method)
    flow_bw = dense_flow(reference, frame, method=flow_method)
    rotation, translation = relative_pose(pose, pose_reference)
    depth = triangulate_depth(flow_fw, K, rotation, translation)
    confidence, valid = parallax_confidence(
        forward_backward_error(flow_fw, flow_bw),
        epipolar_distance(flow_fw, K, rotation, translation),
        parallax_angle(np.where(depth > 0, depth, 1.0), K, rotation, translation),
        params,
    )
    valid &= depth > 0
    if human_mask is not None:
        valid &= ~(human_mask > 0)
    return ParallaxInputs(
        depth=np.where(valid, depth, 0.0).astype(np.float32),
        confidence=np.where(valid, confidence, 0.0).astype(np.float32),
        flow=flow_fw,
    )


def centred_log_depth(depth: np.ndarray, percentile: float = 50.0) -> np.ndarray:
    """log depth minus the ``percentile`` of the log of the valid (> 1e-8) values, 0 elsewhere:
    SfM depth has an arbitrary scale per clip, so the network sees only relative depth. The public
    loader uses the median (50); training draws the percentile from [40, 60]."""
    valid = depth > 1e-8
    log_depth = np.log(np.where(valid, depth, 1.0))
    centre = np.percentile(log_depth[valid], percentile) if valid.any() else 0.0
    return ((log_depth - centre) * valid).astype(np.float32)
