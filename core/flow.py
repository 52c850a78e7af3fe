"""Dense optical flow, shared by TALNet's flow stream and the moving-people depth system."""

from __future__ import annotations

import cv2
import numpy as np

_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def _gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image, dtype=np.uint8), cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(image, dtype=np.uint8)


def dense_flow(frame_a: np.ndarray, frame_b: np.ndarray, method: str = "dis", preset: str = "medium"):
    """Flow from ``frame_a`` to ``frame_b`` as float32 (H, W, 2) in pixels: a(x) ~ b(x + flow(x)).

    ``dis`` is DIS (Kroeger et al., ECCV 2016), fast enough for CPU pipelines; ``farneback`` is the
    classic polynomial-expansion method."""
    a, b = _gray(frame_a), _gray(frame_b)
    if method == "dis":
        if preset not in _PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; choose from {sorted(_PRESETS)}")
        return cv2.DISOpticalFlow_create(_PRESETS[preset]).calc(a, b, None)
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 4, 15, 3, 5, 1.2, 0)
    raise ValueError(f"unknown optical-flow method {method!r}; choose 'dis' or 'farneback'")


def forward_backward_error(flow_fw: np.ndarray, flow_bw: np.ndarray) -> np.ndarray:
    """Per-pixel |F_fw(x) + F_bw(x + F_fw(x))|: near zero where the flow is consistent."""
    h, w = flow_fw.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x = grid_x + flow_fw[..., 0]
    map_y = grid_y + flow_fw[..., 1]
    bw_at_target = cv2.remap(flow_bw, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.linalg.norm(flow_fw + bw_at_target, axis=-1)
