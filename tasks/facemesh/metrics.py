"""Face-mesh metrics.

- :class:`InterOcularNME`: mean point error normalized by the inter-ocular distance, the measure of
  Kartynnik et al. (2019, Sec. 4: "mean absolute distance ... normalized by interocular distance")
  in the 300-W convention: per face, the mean Euclidean 2D distance between predicted and true
  points divided by the distance between the true outer eye corners, then averaged over faces.
- Detector AP at IoU 0.5: ``detector_ap50()`` is torchmetrics' ``MeanAveragePrecision`` restricted to
  the 0.5 threshold, which runs the official COCO evaluator (pycocotools): greedy matching by score,
  101-point interpolated precision, up to 100 detections per image.
- Jitter and lag of landmark tracks: ``tasks.facemesh.smoothing.jitter`` / ``lag``."""

from __future__ import annotations

from typing import Optional

import torch
from torchmetrics import Metric
from torchmetrics.detection import MeanAveragePrecision


def interocular_nme(pred: torch.Tensor, target: torch.Tensor, eye_corners: tuple[int, int],
                    mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-face NME (B,) and which faces count (B,): faces with at least one masked-in point and a
    non-zero inter-ocular distance. ``pred``/``target`` (B, N, >=2): only x, y are used."""
    p, g = pred[..., :2].double(), target[..., :2].double()
    if mask is None:
        mask = torch.ones(p.shape[:2], dtype=torch.bool, device=p.device)
    mask = mask.bool()
    iod = torch.linalg.vector_norm(g[:, eye_corners[0]] - g[:, eye_corners[1]], dim=-1)
    dist = torch.linalg.vector_norm(p - g, dim=-1)
    count = mask.sum(1)
    valid = (count > 0) & (iod > 0)
    mean = (dist * mask).sum(1) / count.clamp_min(1)
    nme = torch.where(valid, mean / iod.clamp_min(1e-12), torch.zeros_like(mean))
    return nme, valid


class InterOcularNME(Metric):
    """Mean over faces of the inter-ocular-normalized mean point error (module docstring); ``mask``
    (B, N) selects the annotated points of each face (e.g. the 2D contours). Sum states, so the
    value under DDP equals one process."""

    full_state_update = False
    higher_is_better = False

    def __init__(self, eye_corners: tuple[int, int], **kwargs):
        super().__init__(**kwargs)
        self.eye_corners = (int(eye_corners[0]), int(eye_corners[1]))
        self.add_state("nme_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("faces", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> None:
        nme, valid = interocular_nme(pred, target, self.eye_corners, mask)
        self.nme_sum += nme[valid].sum()
        self.faces += valid.sum()

    def compute(self) -> torch.Tensor:
        if self.faces == 0:
            raise ValueError("inter-ocular NME: no face with annotated points was given")
        return (self.nme_sum / self.faces).float()


def detector_ap50() -> MeanAveragePrecision:
    """COCO-protocol average precision at IoU 0.5 (pycocotools backend); read ``compute()["map"]``."""
    return MeanAveragePrecision(box_format="xyxy", iou_type="bbox", iou_thresholds=[0.5], backend="pycocotools")
