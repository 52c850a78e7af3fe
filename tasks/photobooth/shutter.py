"""What turns per-frame model outputs into shots: the blur score, temporal smoothing, the quality
filter, the frame score, the look-ahead shutter and the indicator bar."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from datamodules.photobooth import blur_score, face_blur_scores  # noqa: F401  (the quality filter's blur measure)

# --- blur and smoothing ------------------------------------------------------------------------------


def smooth(values: np.ndarray, alpha: float) -> np.ndarray:
    """Causal exponential smoothing along axis 0: s_t = alpha * x_t + (1 - alpha) * s_{t-1}."""
    values = np.asarray(values, np.float64)
    out = np.empty_like(values)
    state = values[0] if len(values) else None
    for t, v in enumerate(values):
        state = alpha * v + (1 - alpha) * state
        out[t] = state
    return out


# --- quality filter and frame score --------------------------------------------------------------------


@dataclass
class ScoringConfig:
    """Weights and thresholds of the frame score and the quality filter."""

    # The frame score is the better of its two reasons to be captured, each a quality that peaks on a
    # moment's best frame: max(expression_weight * expression, kiss_weight * kiss).
    expression_weight: float = 1.0
    kiss_weight: float = 1.0
    smoothing: float = 0.6  # alpha of the exponential smoothing of the filter's confidences
    # Score on the smoothed confidences too (true) or on the frame's own (false): decided on the
    # validation clips (docs/photobooth.md).
    smoothed_score: bool = False
    eyes_closed_max: float = 0.5
    talking_max: float = 0.5
    # Motion blur: the frame's (attention-weighted) face blur score below this share of its running
    # median over the last ``blur_window`` frames; relative, since the absolute variance of the
    # Laplacian depends on the faces' size and texture.
    blur_ratio_min: float = 0.5
    blur_window: int = 15
    expression_min: float = 0.5  # neither the expression nor the kiss score above: no expression


def frame_quality(
    face_probs: np.ndarray, weights: np.ndarray, mask: np.ndarray, blur: np.ndarray
) -> dict[str, np.ndarray]:
    """Per frame: attention-weighted eyes-closed and talking probabilities, the attending share, and
    the sharpest-weighted face blur score (weighted by attention); inputs (T, F, ...)."""
    w = np.where(mask, weights, 0.0)
    w = w / np.maximum(w.sum(-1, keepdims=True), 1e-9)
    return {
        "eyes_closed": (w * face_probs[..., 0]).sum(-1),
        "talking": (w * face_probs[..., 1]).sum(-1),
        "attending": np.where(mask.any(-1), (face_probs[..., 2] * mask).sum(-1) / np.maximum(mask.sum(-1), 1), 0.0),
        "blur": np.where(mask.any(-1), (w * blur).sum(-1), 0.0),
    }


def relative_blur(blur: np.ndarray, window: int) -> np.ndarray:
    """Each frame's blur score over the median of the last ``window`` frames' scores (itself included)."""
    blur = np.asarray(blur, np.float64)
    out = np.ones_like(blur)
    for t in range(len(blur)):
        median = float(np.median(blur[max(0, t - window + 1) : t + 1]))
        out[t] = blur[t] / median if median > 0 else 1.0
    return out


def score_frames(
    expression: np.ndarray, kiss: np.ndarray, quality: dict[str, np.ndarray], config: ScoringConfig
) -> dict[str, np.ndarray]:
    """The quality filter's verdict on smoothed confidences, and the frame score per frame:
    score = max(expression_weight * expression, kiss_weight * kiss), 0 where rejected. Returns the
    values the decision used under their names: ``expression`` and ``kiss`` (what the score was
    computed from: the frame's own, or smoothed with ``smoothed_score``), ``smoothed`` (the filter's
    inputs), ``rejected`` per rule, ``accepted``, ``raw_score`` (before the filter) and ``score``."""
    s = {k: smooth(v, config.smoothing) for k, v in {"expression": expression, "kiss": kiss, **quality}.items()}
    rejected = {
        "eyes_closed": s["eyes_closed"] > config.eyes_closed_max,
        "talking": s["talking"] > config.talking_max,
        # Blur is measured on this frame's pixels: a shaken frame is rejected on its own.
        "blur": relative_blur(quality["blur"], config.blur_window) < config.blur_ratio_min,
        "no_expression": (s["expression"] < config.expression_min) & (s["kiss"] < config.expression_min),
    }
    # A kiss is judged on the whole frame: faces in profile do not attend, talk or show their eyes.
    kissing = s["kiss"] >= config.expression_min
    ok = ~(rejected["no_expression"] | (~kissing & (rejected["eyes_closed"] | rejected["talking"] | rejected["blur"])))
    scored = {"expression": s["expression"], "kiss": s["kiss"]} if config.smoothed_score else {}
    scored = {"expression": np.asarray(expression, np.float64), "kiss": np.asarray(kiss, np.float64), **scored}
    raw = np.maximum(config.expression_weight * scored["expression"], config.kiss_weight * scored["kiss"])
    return {
        "score": np.where(ok, raw, 0.0),
        "raw_score": raw,
        "expression": scored["expression"],
        "kiss": scored["kiss"],
        "accepted": ok,
        "smoothed": s,
        "rejected": rejected,
    }


# --- shutter ------------------------------------------------------------------------------------------


@dataclass
class Shutter:
    """Look-ahead shutter: frames wait in a buffer of ``buffer`` frames; the oldest is saved when
    its score is above ``threshold``, higher than every later frame in the buffer, and at least
    ``min_gap`` frames after the previous shot. ``buffer=0`` saves on the threshold alone."""

    buffer: int = 5
    min_gap: int = 10
    threshold: float = 0.3
    _pending: deque = field(default_factory=deque)
    _last: int | None = None

    def _decide(self) -> int | None:
        index, score = self._pending.popleft()
        later = max((s for _, s in self._pending), default=-np.inf)
        if score >= self.threshold and score > later and (self._last is None or index - self._last >= self.min_gap):
            self._last = index
            return index
        return None

    def push(self, index: int, score: float) -> int | None:
        """Add frame ``index``; returns the index of a frame to save now, or None."""
        self._pending.append((index, float(score)))
        if len(self._pending) > self.buffer:
            return self._decide()
        return None

    def flush(self) -> list[int]:
        """At the end of the stream: decide the frames still waiting."""
        shots = []
        while self._pending:
            shot = self._decide()
            if shot is not None:
                shots.append(shot)
        return shots


def shutter_shots(scores, buffer: int = 5, min_gap: int = 10, threshold: float = 0.3) -> list[int]:
    """The frames a :class:`Shutter` saves from a whole score sequence."""
    shutter = Shutter(buffer=buffer, min_gap=min_gap, threshold=threshold)
    shots = [s for i, v in enumerate(scores) if (s := shutter.push(i, v)) is not None]
    return shots + shutter.flush()


# --- indicator -----------------------------------------------------------------------------------------

INDICATOR_STATES = ("no_faces", "not_attending", "attending", "key_expression")


def indicator_target(num_faces: int, attending: float, score: float, capturable: bool, threshold: float = 0.3) -> float:
    """Bar length in [0, 1] in four ranges of 0.25, from the values the shutter decides on: no faces
    [0, .25); a frame the shutter may take (``capturable``: accepted by the filter with a score at or
    above its ``threshold``, a kiss included) [.75, 1], further in as the score grows; otherwise faces
    not attending to the camera [.25, .5) (further in as more attend) or attending [.5, .75) (further in
    as the frame score nears the threshold)."""
    if num_faces == 0:
        return 0.0
    if capturable:
        return 0.75 + 0.25 * float(np.clip((score - threshold) / max(1 - threshold, 1e-9), 0.0, 1.0))
    if attending < 0.5:
        return 0.25 + 0.2499 * (attending / 0.5)
    return 0.5 + 0.2499 * float(np.clip(score / max(threshold, 1e-9), 0.0, 1.0))


def indicator_state(value: float) -> str:
    return INDICATOR_STATES[min(3, int(value / 0.25))]


@dataclass
class Indicator:
    """Smoothed bar: exponential smoothing toward the target, moving at most ``max_step`` per frame
    inside the target's range; it enters a new range at once, so its state is always the target's
    (the bar never says "not attending" while the shutter may fire)."""

    alpha: float = 0.5
    max_step: float = 0.1
    value: float = 0.0

    def update(self, target: float) -> float:
        step = self.alpha * (target - self.value)
        value = self.value + float(np.clip(step, -self.max_step, self.max_step))
        low = 0.25 * INDICATOR_STATES.index(indicator_state(target))
        self.value = float(np.clip(value, low, min(1.0, low + 0.2499) if low < 0.75 else 1.0))
        return self.value
