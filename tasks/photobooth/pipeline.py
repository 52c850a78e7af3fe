"""The Photobooth pipeline on a stream of frames: faces (boxes given, or a face detector) -> models
-> quality filter on smoothed confidences -> frame score -> look-ahead shutter, plus the indicator."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from datamodules.photobooth import frame_inputs
from tasks.photobooth.shutter import Indicator, indicator_target

BoxSource = Callable[[list[np.ndarray]], list[np.ndarray]]


@dataclass
class PhotoboothResult:
    """Per frame the values the shutter decided on, under their names: ``expression`` and ``kiss``
    (what the score was computed from), ``raw_score`` (before the filter), ``score`` (after it),
    ``accepted``, ``rejected`` per rule, the filter's smoothed inputs (``smoothed``), the shutter's
    ``threshold``, the indicator; and the shots (frame indices)."""

    shots: list[int]
    score: np.ndarray
    raw_score: np.ndarray
    expression: np.ndarray
    kiss: np.ndarray
    accepted: np.ndarray
    indicator: np.ndarray
    num_faces: np.ndarray
    rejected: dict[str, np.ndarray]
    smoothed: dict[str, np.ndarray]
    threshold: float
    smoothed_score: bool = False

    def shot_records(self) -> list[dict]:
        return [
            {
                "frame": int(t),
                "score": float(self.score[t]),
                "expression": float(self.expression[t]),
                "kiss": float(self.kiss[t]),
                "num_faces": int(self.num_faces[t]),
            }
            for t in self.shots
        ]


class Photobooth:
    """A trained ``PhotoboothTask`` run over frames. ``attention=False`` scores a frame by the mean
    over its faces instead of the attention model; ``buffer=False`` turns the look-ahead off."""

    def __init__(self, task, attention: bool = True, buffer: bool = True, chunk: int = 16) -> None:
        self.task = task.eval()
        self.attention, self.buffer, self.chunk = attention, buffer, chunk
        hp = task.hparams
        self.crop_size, self.frame_size, self.max_faces = hp.crop_size, tuple(hp.frame_size), hp.max_faces

    @torch.no_grad()
    def model_outputs(
        self, frames: Iterable[np.ndarray], boxes: BoxSource | Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Run the models over the frames, ``chunk`` at a time; boxes per frame, or a detector."""
        parts, chunk, index = [], [], 0

        def flush():
            nonlocal index
            if not chunk:
                return
            found = boxes(chunk) if callable(boxes) else [np.asarray(boxes[index + i]) for i in range(len(chunk))]
            items = [frame_inputs(f, b, self.crop_size, self.frame_size, self.max_faces) for f, b in zip(chunk, found)]
            batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
            parts.append(self.task.clip_outputs(batch, chunk=len(chunk)))
            index += len(chunk)
            chunk.clear()

        for frame in frames:
            chunk.append(frame)
            if len(chunk) == self.chunk:
                flush()
        flush()
        if not parts:
            raise ValueError("no frames to process")
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def run(self, frames: Iterable[np.ndarray], boxes: BoxSource | Sequence[np.ndarray]) -> PhotoboothResult:
        return self.finish(self.model_outputs(frames, boxes))

    def finish(self, outputs: dict[str, np.ndarray]) -> PhotoboothResult:
        """Quality filter, frame score, shutter and indicator over the model outputs of a clip."""
        shots, scored = self.task.shots(outputs, attention=self.attention, buffer=self.buffer)
        num_faces = outputs["mask"].sum(-1)
        threshold = float(self.task.shutter["threshold"])
        capturable = scored["accepted"] & (scored["score"] >= threshold)
        bar = Indicator()
        indicator = np.array(
            [
                bar.update(indicator_target(int(n), a, s, bool(c), threshold))
                for n, a, s, c in zip(num_faces, scored["smoothed"]["attending"], scored["raw_score"], capturable)
            ]
        )
        return PhotoboothResult(
            shots=shots,
            score=scored["score"],
            raw_score=scored["raw_score"],
            expression=scored["expression"],
            kiss=scored["kiss"],
            accepted=scored["accepted"],
            indicator=indicator,
            num_faces=num_faces,
            rejected=scored["rejected"],
            smoothed=scored["smoothed"],
            threshold=threshold,
            smoothed_score=bool(self.task.scoring.smoothed_score),
        )
