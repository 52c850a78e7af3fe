"""Temporal smoothing of landmark streams (the one-euro filter) and the two numbers that judge it:
jitter on a still face and lag under motion.

One-euro filter (Casiez, Roussel and Vogel, CHI 2012): an exponential low-pass whose cutoff rises
with speed, so a still signal is smoothed hard (little jitter) and a fast one barely (little lag):

    alpha(fc) = 1 / (1 + tau / Te),  tau = 1 / (2 pi fc),  Te = time since the last sample
    dx_hat_t  = lowpass(dx_t, alpha(d_cutoff)),  dx_t = (x_t - x_hat_{t-1}) / Te
    fc_t      = min_cutoff + beta * |dx_hat_t| * velocity_scale
    x_hat_t   = lowpass(x_t, alpha(fc_t))

``velocity_scale`` makes beta independent of the face's size in pixels (MediaPipe's landmark
smoothing divides the speed by the face size the same way)."""

from __future__ import annotations

import math

import numpy as np


def smoothing_factor(cutoff, te: float):
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, dtype=np.float64))
    return 1.0 / (1.0 + tau / te)


class OneEuroFilter:
    """One-euro filter over arrays of any shape (each element filtered independently)."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError("one-euro filter needs min_cutoff > 0, d_cutoff > 0, beta >= 0")
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.reset()

    def reset(self) -> None:
        self.x_prev: np.ndarray | None = None
        self.dx_prev: np.ndarray | None = None
        self.t_prev: float | None = None

    def __call__(self, x, t: float, velocity_scale: float = 1.0) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.x_prev is None or self.t_prev is None or t <= self.t_prev:
            self.x_prev, self.dx_prev, self.t_prev = x.copy(), np.zeros_like(x), t
            return x.copy()
        te = t - self.t_prev
        dx = (x - self.x_prev) / te
        a_d = smoothing_factor(self.d_cutoff, te)
        dx_hat = a_d * dx + (1 - a_d) * self.dx_prev
        cutoff = self.min_cutoff + self.beta * np.abs(dx_hat) * velocity_scale
        a = smoothing_factor(cutoff, te)
        x_hat = a * x + (1 - a) * self.x_prev
        self.x_prev, self.dx_prev, self.t_prev = x_hat, dx_hat, t
        return x_hat


def smooth_sequence(
    values: np.ndarray,
    fps: float,
    min_cutoff: float,
    beta: float,
    d_cutoff: float = 1.0,
    velocity_scale: float | np.ndarray = 1.0,
) -> np.ndarray:
    """Filter a (T, ...) sequence sampled at ``fps``; ``velocity_scale`` may vary per frame (T,)."""
    f = OneEuroFilter(min_cutoff, beta, d_cutoff)
    scales = np.broadcast_to(np.asarray(velocity_scale, dtype=np.float64), (len(values),))
    return np.stack([f(v, i / fps, float(s)) for i, (v, s) in enumerate(zip(values, scales))])


def jitter(points: np.ndarray, scale: np.ndarray | float) -> float:
    """Mean frame-to-frame displacement of each point, over a still face's (T, N, >=2) track,
    divided by ``scale`` (the inter-ocular distance, per frame (T,) or one number). Frames without a
    face are NaN; only steps between two consecutive frames with a face count."""
    pts = np.asarray(points, dtype=np.float64)[..., :2]
    step = np.linalg.norm(np.diff(pts, axis=0), axis=-1).mean(-1)  # (T-1,)
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), (len(pts),))[1:]
    valid = np.isfinite(step)
    if not valid.any():
        raise ValueError("jitter needs two consecutive frames with a face")
    return float(np.mean(step[valid] / scale[valid]))


def lag(points: np.ndarray, reference: np.ndarray, max_frames: float = 10.0, step: float = 0.05) -> float:
    """Delay, in frames, of a (T, N, >=2) track behind the true ``reference`` track: the shift d in
    [0, max_frames] minimizing the mean distance between points(t) and reference(t - d), with the
    reference linearly interpolated between frames (frames t >= max_frames with a face, i.e. not
    NaN in ``points``, are compared)."""
    pts = np.asarray(points, dtype=np.float64)[..., :2]
    ref = np.asarray(reference, dtype=np.float64)[..., :2]
    t = np.arange(int(math.ceil(max_frames)), len(pts))
    t = t[np.isfinite(pts[t]).all(axis=(1, 2))]
    if len(t) == 0:
        raise ValueError(f"lag needs a face in frames after the first {max_frames}, got {len(pts)} frames")
    best, best_err = 0.0, np.inf
    for d in np.arange(0.0, max_frames + 1e-9, step):
        s = t - d
        lo = np.floor(s).astype(int)
        w = (s - lo)[:, None, None]
        shifted = ref[lo] * (1 - w) + ref[np.minimum(lo + 1, len(ref) - 1)] * w
        err = np.linalg.norm(pts[t] - shifted, axis=-1).mean()
        if err < best_err - 1e-12:
            best, best_err = float(d), err
    return best
