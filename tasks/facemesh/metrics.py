"""Face-mesh metrics.

- :class:`InterOcularNME`: mean point error normalized by the inter-ocular distance, the measure of
  Kartynnik et al. (2019, Sec. 4: "mean absolute distance ... normalized by interocular distance")
  in the 300-W convention: per face, the mean Euclidean 2D distance between predicted and true
  points divided by the distance between the true outer eye corners, then averaged over faces.
- :class:`DetectorAP50`: face-detector average precision at IoU 0.5 under the COCO protocol (greedy
  matching by descending score, 101-point interpolated precision, at most 100 detections per image),
  computed by the official COCO evaluator (pycocotools, through torchmetrics' ``MeanAveragePrecision``
  restricted to the 0.5 threshold) once, on every rank, over the detections of all ranks.
- Jitter and lag of landmark tracks: ``tasks.facemesh.smoothing.jitter`` / ``lag``."""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.detection import MeanAveragePrecision

from core.metrics import PerSampleMetric


def interocular_nme(
    pred: torch.Tensor, target: torch.Tensor, eye_corners: tuple[int, int], mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
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

    def update(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        nme, valid = interocular_nme(pred, target, self.eye_corners, mask)
        self.nme_sum += nme[valid].sum()
        self.faces += valid.sum()

    def compute(self) -> torch.Tensor:
        if self.faces == 0:
            raise ValueError("inter-ocular NME: no face with annotated points was given")
        return (self.nme_sum / self.faces).float()


def coco_ap50(sync_on_compute: bool = True) -> MeanAveragePrecision:
    """torchmetrics' COCO evaluator (pycocotools backend) at the single IoU threshold 0.5."""
    return MeanAveragePrecision(
        box_format="xyxy", iou_type="bbox", iou_thresholds=[0.5], backend="pycocotools", sync_on_compute=sync_on_compute
    )


class DetectorAP50(PerSampleMetric):
    """COCO AP at IoU 0.5 of a one-class (face) detector; see the module docstring.

    ``update(image_ids, preds, targets)`` with torchmetrics' detection format: per image a dict of
    ``boxes`` (K, 4) xyxy and ``scores`` (K,) / a dict of ``boxes`` (M, 4). Per-image rows are
    gathered over ranks (a sample padded in twice by a DistributedSampler counts once, the
    ``core.metrics.PerSampleMetric`` rule), then torchmetrics' ``MeanAveragePrecision`` runs locally
    on all of them. Raises when no image has a ground-truth face."""

    higher_is_better = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_table("detections", width=5)  # x0, y0, x1, y1, score
        self.add_table("truths", width=4)

    def update(self, image_ids, preds: list[dict], targets: list[dict]) -> None:
        tag = self.new_tag()
        for image_id, pred, target in zip(image_ids, preds, targets):
            dets = torch.cat([pred["boxes"].reshape(-1, 4).double(), pred["scores"].reshape(-1, 1).double()], 1)
            self.append_rows("detections", int(image_id), dets, tag)
            self.append_rows("truths", int(image_id), target["boxes"].reshape(-1, 4), tag)

    def compute(self) -> torch.Tensor:
        dets, truths = self.tables("detections", "truths")
        if len(truths) == 0:
            raise ValueError("detector AP: no image with a ground-truth face was given")
        ids = sorted(set(dets[:, 0].astype(int).tolist()) | set(truths[:, 0].astype(int).tolist()))
        preds, targets = [], []
        for i in ids:
            d, t = dets[dets[:, 0] == i], truths[truths[:, 0] == i]
            preds.append(
                {
                    "boxes": torch.from_numpy(d[:, 1:5]).float(),
                    "scores": torch.from_numpy(d[:, 5]).float(),
                    "labels": torch.zeros(len(d), dtype=torch.long),
                }
            )
            targets.append(
                {"boxes": torch.from_numpy(t[:, 1:5]).float(), "labels": torch.zeros(len(t), dtype=torch.long)}
            )
        coco = coco_ap50(sync_on_compute=False)
        coco.update(preds, targets)
        return coco.compute()["map"].float()
