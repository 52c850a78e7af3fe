"""The network's parallax inputs (Sec. 4.1 of Li et al., CVPR 2019): depth triangulated from optical
flow and the known relative camera pose, its confidence, and human regions masked out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.flow import dense_flow, forward_backward_error
from tasks.people_depth.geometry import epipolar_distance, parallax_angle, relative_pose, triangulate_depth


@dataclass
class ConfidenceParams:
    """Scales of the three confidence terms: forward-backward error (pixels), epipolar distance
    (pixels) and the parallax angle (degrees) below which depth is down-weighted."""

    delta_lr: float = 1.0
    delta_ep: float = 2.0
    delta_pa: float = 1.0


def parallax_confidence(
    fb_error: np.ndarray, epipolar: np.ndarray, angle: np.ndarray, params: ConfidenceParams = ConfidenceParams()
) -> np.ndarray:
    """C = C_lr * C_ep * C_pa in [0, 1]: consistent flow, end points on the epipolar line, and
    enough parallax angle each raise trust in the triangulated depth."""
    c_lr = np.maximum(0.0, 1.0 - (fb_error / params.delta_lr) ** 2)
    c_ep = np.exp(-epipolar / params.delta_ep)
    c_pa = 1.0 - ((np.minimum(angle, params.delta_pa) - params.delta_pa) / params.delta_pa) ** 2
    return (c_lr * c_ep * c_pa).astype(np.float32)


@dataclass
class ParallaxInputs:
    """Triangulated depth (0 where unknown or human), its confidence (0 where human) and the flow."""

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
    world-to-camera 3x4 poses). Human pixels (mask > 0) move on their own, so their depth and
    confidence are set to 0: the network has to fill them in."""
    flow_fw = dense_flow(frame, reference, method=flow_method)
    flow_bw = dense_flow(reference, frame, method=flow_method)
    rotation, translation = relative_pose(pose, pose_reference)
    depth = triangulate_depth(flow_fw, K, rotation, translation)
    confidence = parallax_confidence(
        forward_backward_error(flow_fw, flow_bw),
        epipolar_distance(flow_fw, K, rotation, translation),
        parallax_angle(np.where(depth > 0, depth, 1.0), K, rotation, translation),
        params,
    )
    confidence = np.where(depth > 0, confidence, 0.0).astype(np.float32)
    if human_mask is not None:
        human = human_mask > 0
        depth = np.where(human, 0.0, depth).astype(np.float32)
        confidence = np.where(human, 0.0, confidence).astype(np.float32)
    return ParallaxInputs(depth=depth, confidence=confidence, flow=flow_fw)
