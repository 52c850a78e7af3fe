"""Timeline plot of detections against ground truth, one panel per video."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.io import atomic_path


def plot_timeline(
    outputs: Sequence[dict[str, Any]], class_names: Sequence[str], path: str | Path, top_k: int = 8
) -> Path:
    """Each panel: ground-truth segments on the upper row, the ``top_k`` best detections below
    (opacity = score), both coloured by class. ``outputs`` items hold video, duration, segments,
    labels and detections (label, start, end, score)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab20")(np.linspace(0, 1, 20))
    n = max(1, len(outputs))
    fig, axes = plt.subplots(n, 1, figsize=(10, 1.6 * n), squeeze=False)
    for ax, out in zip(axes[:, 0], outputs):
        for (s, e), lab in zip(out["segments"], out["labels"]):
            ax.broken_barh([(s, e - s)], (1.1, 0.8), color=colours[int(lab) % 20])
            ax.text(s, 2.0, class_names[int(lab)], fontsize=6, va="bottom")
        dets = np.asarray(out["detections"]).reshape(-1, 4)[:top_k]
        for k, (lab, s, e, score) in enumerate(dets):
            y = 0.9 - (k % 4) * 0.22
            ax.broken_barh(
                [(s, e - s)],
                (y - 0.2, 0.18),
                color=colours[int(lab) % 20],
                alpha=float(np.clip(score, 0.15, 1)),
            )
            if k < 3:
                ax.text(e, y - 0.2, f" {class_names[int(lab)]} {score:.2f}", fontsize=5, va="bottom")
        ax.set_xlim(0, out["duration"])
        ax.set_ylim(0, 2.6)
        ax.set_yticks([0.5, 1.5], ["detections", "ground truth"], fontsize=7)
        ax.set_title(out["video"], fontsize=8, loc="left")
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path
