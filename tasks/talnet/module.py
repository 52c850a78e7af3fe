"""TALNetTask: trains TALNet on snippet features, detects actions, scores them the ActivityNet way,
and writes the ActivityNet results JSON, per-class AP and a timeline plot into the run directory."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from core.io import atomic_write_json
from datamodules.thumos14_features import THUMOS14_CLASSES
from tasks.talnet.losses import classifier_loss, classifier_targets, proposal_loss
from tasks.talnet.metrics import AverageRecallAtN, TemporalActionDetectionMAP
from tasks.talnet.model import TALNet, TALNetStream
from tasks.talnet.postprocess import anchor_segments, decode_segments, temporal_nms

log = logging.getLogger(__name__)

RESULTS_FILE = "detections_activitynet.json"
DETECTION_METRICS_FILE = "detection_metrics.json"
TIMELINE_FILE = "timeline.png"


class TALNetTask(pl.LightningModule):
    """TALNet with one stream per modality, trained jointly (``modalities=[rgb, flow]``) or one
    stream per run (``modalities=[rgb]``); ``stream_checkpoints`` fuses streams trained apart."""

    def __init__(
        self,
        num_classes: int,
        feature_dim: int,
        modalities: Sequence[str] = ("rgb", "flow"),
        hidden_dim: int = 64,
        anchor_scales: Sequence[float] = (4, 8, 16, 32, 64, 128),
        context_ratio: float = 0.5,
        soi_bins: int = 8,
        classifier_hidden: int = 256,
        dropout: float = 0.3,
        spn_positive_iou: float = 0.7,
        spn_negative_iou: float = 0.3,
        train_proposals: int = 64,
        pre_nms_proposals: int = 1000,
        proposal_nms_iou: float = 0.7,
        num_proposals: int = 100,
        detection_nms_iou: float = 0.4,
        max_detections: int = 200,
        proposal_source: str = "spn",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        stream_checkpoints: dict[str, str] | None = None,
        timeline_videos: int = 4,
    ):
        super().__init__()
        self.save_hyperparameters()
        if proposal_source not in ("spn", "random"):
            raise ValueError(f"proposal_source must be 'spn' or 'random', not {proposal_source!r}")
        unknown = set(stream_checkpoints or {}) - set(modalities)
        if unknown:
            raise ValueError(
                f"stream_checkpoints names {sorted(unknown)}, not among modalities {list(modalities)}"
            )
        self.num_classes = num_classes
        self.model = TALNet(
            {
                m: TALNetStream(
                    feature_dim,
                    num_classes,
                    hidden_dim,
                    anchor_scales,
                    context_ratio,
                    soi_bins,
                    classifier_hidden,
                    dropout,
                )
                for m in modalities
            }
        )
        for modality, path in (stream_checkpoints or {}).items():
            self.model.streams[modality] = load_stream(path, modality, num_classes)
        self.val_map = TemporalActionDetectionMAP(num_classes)
        self.test_map = TemporalActionDetectionMAP(num_classes)
        self.val_recall = AverageRecallAtN((10, 50, 100))
        self.test_recall = AverageRecallAtN((10, 50, 100))
        self._test_outputs: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ geometry
    @staticmethod
    def _to_snippets(segments: torch.Tensor, t0: float, dt: float) -> torch.Tensor:
        return (segments - (t0 - dt / 2)) / dt

    @staticmethod
    def _to_seconds(segments: torch.Tensor, t0: float, dt: float, duration: float) -> torch.Tensor:
        return (segments * dt + (t0 - dt / 2)).clamp(0, duration)

    def _propose(
        self,
        stream: TALNetStream,
        logits: torch.Tensor,
        deltas: torch.Tensor,
        mask: torch.Tensor,
        keep: int,
    ):
        """Per video: proposals (n, 2) in snippet units and objectness scores, after NMS."""
        anchors = anchor_segments(logits.shape[-1], stream.anchor_scales).to(logits)
        out = []
        for b in range(len(logits)):
            length = int(mask[b].sum())
            scores = logits[b, :, :length].sigmoid().reshape(-1)
            segs = decode_segments(
                deltas[b, :, :length].reshape(-1, 2), anchors[:, :length].reshape(-1, 2)
            )
            segs = segs.clamp(0, length)
            ok = (segs[:, 1] - segs[:, 0]) > 0.5
            segs, scores = segs[ok], scores[ok]
            top = torch.topk(scores, min(self.hparams.pre_nms_proposals, len(scores))).indices
            kept = top[temporal_nms(segs[top], scores[top], self.hparams.proposal_nms_iou, keep)]
            out.append((segs[kept], scores[kept]))
        return out

    def _random_proposals(
        self, length: int, n: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The random-proposal baseline: centres uniform over the video, lengths log-uniform over the anchor range."""
        scales = self.hparams.anchor_scales
        lo, hi = (
            torch.log(torch.tensor(float(min(scales)) / 2)),
            torch.log(torch.tensor(float(max(scales)))),
        )
        centre = torch.rand(n, generator=generator) * length
        size = torch.exp(lo + torch.rand(n, generator=generator) * (hi - lo))
        segs = torch.stack([centre - size / 2, centre + size / 2], 1).clamp(0, length)
        return segs, torch.rand(n, generator=generator)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        mask = batch["mask"]
        total = 0.0
        for modality, stream in self.model.streams.items():
            fmap = stream.temporal_features(batch["features"][modality], mask)
            logits, deltas = stream.spn(fmap, mask)
            with torch.no_grad():
                proposals = self._propose(
                    stream, logits.detach(), deltas.detach(), mask, self.hparams.train_proposals
                )
            anchors = anchor_segments(fmap.shape[-1], stream.anchor_scales).to(fmap)
            spn_losses, rois, labels, targets, index = [], [], [], [], []
            for b in range(len(mask)):
                gt = self._to_snippets(
                    batch["segments"][b].to(fmap), float(batch["t0"][b]), float(batch["dt"][b])
                )
                valid = mask[b][None].expand(len(stream.anchor_scales), -1)
                spn_losses.append(
                    proposal_loss(
                        logits[b],
                        deltas[b],
                        anchors,
                        valid,
                        gt,
                        self.hparams.spn_positive_iou,
                        self.hparams.spn_negative_iou,
                    )
                )
                candidates = torch.cat([proposals[b][0], gt])
                r, lab, tgt = classifier_targets(
                    candidates, gt, batch["labels"][b].to(self.device), self.num_classes
                )
                rois.append(r)
                labels.append(lab)
                targets.append(tgt)
                index.append(torch.full((len(r),), b, device=fmap.device))
            cls_logits, cls_deltas = stream.classifier(
                fmap, torch.cat(index), torch.cat(rois), mask.sum(1)
            )
            cls = classifier_loss(
                cls_logits,
                cls_deltas,
                torch.cat(labels).to(fmap.device),
                torch.cat(targets).to(fmap),
                self.num_classes,
            )
            spn_cls = torch.stack([s.classification for s in spn_losses]).mean()
            spn_reg = torch.stack([s.regression for s in spn_losses]).mean()
            loss = spn_cls + spn_reg + cls.total
            self.log_dict(
                {
                    f"train/{modality}/spn_cls": spn_cls,
                    f"train/{modality}/spn_reg": spn_reg,
                    f"train/{modality}/cls": cls.classification,
                    f"train/{modality}/reg": cls.regression,
                },
                batch_size=len(mask),
            )
            total = total + loss
        self.log("train/loss", total, prog_bar=True, batch_size=len(mask))
        return total

    def configure_optimizers(self):
        return torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def detect(self, batch: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
        """Per video: detections (n, 4: label, start, end, score) and proposals (n, 3: start, end,
        score), in seconds. Proposals of all streams are pooled and suppressed together; each
        stream's classifier scores every proposal and the class probabilities and boundary
        refinements are averaged over streams (late fusion)."""
        mask = batch["mask"]
        fmaps = {
            m: s.temporal_features(batch["features"][m], mask)
            for m, s in self.model.streams.items()
        }
        keep = self.hparams.num_proposals
        generator = torch.Generator().manual_seed(0)
        per_stream = (
            {
                m: self._propose(s, *s.spn(fmaps[m], mask), mask, keep)
                for m, s in self.model.streams.items()
            }
            if self.hparams.proposal_source == "spn"
            else {}
        )
        outputs = []
        for b in range(len(mask)):
            length = int(mask[b].sum())
            if per_stream:
                segs = torch.cat([per_stream[m][b][0] for m in per_stream])
                scores = torch.cat([per_stream[m][b][1] for m in per_stream])
                kept = temporal_nms(segs, scores, self.hparams.proposal_nms_iou, keep)
                segs, scores = segs[kept], scores[kept]
            else:
                segs, scores = self._random_proposals(length, keep, generator)
                segs, scores = segs.to(mask.device), scores.to(mask.device)
            index = torch.full((len(segs),), b, dtype=torch.long, device=mask.device)
            probs, deltas = 0.0, 0.0
            for m, stream in self.model.streams.items():
                logits, d = stream.classifier(fmaps[m], index, segs, mask.sum(1))
                probs, deltas = probs + logits.softmax(-1), deltas + d
            probs, deltas = probs / len(fmaps), deltas / len(fmaps)
            t0, dt, duration = (
                float(batch["t0"][b]),
                float(batch["dt"][b]),
                float(batch["duration"][b]),
            )
            outputs.append(
                {
                    "detections": self._class_detections(
                        segs, probs[:, : self.num_classes], deltas, t0, dt, duration
                    ),
                    "proposals": torch.cat(
                        [self._to_seconds(segs, t0, dt, duration), scores[:, None]], 1
                    ).cpu(),
                }
            )
        return outputs

    def _class_detections(self, rois, probs, deltas, t0, dt, duration) -> torch.Tensor:
        """Class-specific boxes for every (proposal, class) with a score, suppressed per class."""
        proposal, label = torch.nonzero(probs > 1e-3, as_tuple=True)
        if len(proposal) == 0:
            return torch.zeros(0, 4)
        segs = decode_segments(deltas[proposal, label], rois[proposal])
        segs = self._to_seconds(segs, t0, dt, duration)
        scores = probs[proposal, label]
        ok = segs[:, 1] > segs[:, 0]
        segs, scores, label = segs[ok], scores[ok], label[ok]
        # one NMS for all classes: shifting each class to its own stretch of time keeps them apart
        shifted = segs + (label.to(segs) * (duration + 1.0))[:, None]
        kept = temporal_nms(
            shifted, scores, self.hparams.detection_nms_iou, self.hparams.max_detections
        )
        det = torch.cat([label[kept, None].to(segs), segs[kept], scores[kept, None]], 1)
        return det.cpu()

    def _evaluate_batch(self, batch, map_metric, recall_metric) -> list[dict[str, Any]]:
        outputs = self.detect(batch)
        ids = batch["video_id"].tolist()
        gts = [
            torch.cat([lab[:, None].double(), seg.double()], 1)
            for lab, seg in zip(batch["labels"], batch["segments"])
        ]
        map_metric.update(ids, [o["detections"] for o in outputs], gts)
        recall_metric.update(
            ids, [o["proposals"] for o in outputs], [seg for seg in batch["segments"]]
        )
        return outputs

    def _log_metrics(self, stage: str, map_metric, recall_metric) -> None:
        values = {f"{stage}/{k}": v for k, v in map_metric.compute().items()}
        values.update({f"{stage}/{k}": v for k, v in recall_metric.compute().items()})
        self.log_dict(values, sync_dist=False)  # already global: torchmetrics gathered the states
        map_metric.reset(), recall_metric.reset()

    def validation_step(self, batch, batch_idx):
        self._evaluate_batch(batch, self.val_map, self.val_recall)

    def on_validation_epoch_end(self):
        self._log_metrics("val", self.val_map, self.val_recall)

    def test_step(self, batch, batch_idx):
        outputs = self._evaluate_batch(batch, self.test_map, self.test_recall)
        for b, out in enumerate(outputs):
            self._test_outputs.append(
                {
                    "video": batch["video"][b],
                    "detections": out["detections"].numpy(),
                    "segments": batch["segments"][b].numpy(),
                    "labels": batch["labels"][b].numpy(),
                    "duration": float(batch["duration"][b]),
                }
            )

    def on_test_epoch_start(self):
        self._test_outputs = []

    def on_test_epoch_end(self):
        result_map = self.test_map
        self._log_metrics("test", self.test_map, self.test_recall)
        outputs = _gather_objects(self._test_outputs)
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self._write_outputs(outputs, result_map.result)

    # ------------------------------------------------------------------ outputs
    def _class_names(self) -> list[str]:
        dm = getattr(self.trainer, "datamodule", None)
        names = list(getattr(dm, "classes", None) or THUMOS14_CLASSES)
        return (
            names
            if len(names) == self.num_classes
            else [f"class_{c}" for c in range(self.num_classes)]
        )

    def _write_outputs(self, outputs: list[dict[str, Any]], result) -> None:
        from tasks.talnet.visualize import plot_timeline

        run_dir = Path(self.trainer.default_root_dir)
        names = self._class_names()
        seen, unique = set(), []
        for out in outputs:
            if out["video"] not in seen:
                seen.add(out["video"]), unique.append(out)
        atomic_write_json(run_dir / RESULTS_FILE, activitynet_results(unique, names))
        if result is not None:
            per_class = {
                names[c]: {
                    # null: the class has no ground truth in this set (left out of the mean)
                    f"{t:g}": None if math.isnan(result.ap[i, c]) else float(result.ap[i, c])
                    for i, t in enumerate(result.tiou_thresholds)
                }
                for c in range(self.num_classes)
            }
            atomic_write_json(
                run_dir / DETECTION_METRICS_FILE, {**result.as_dict(), "per_class_ap": per_class}
            )
        path = plot_timeline(unique[: self.hparams.timeline_videos], names, run_dir / TIMELINE_FILE)
        for logger in self.loggers:
            if type(logger).__name__ == "WandbLogger":
                logger.log_image(key="test/timeline", images=[str(path)])


def activitynet_results(outputs: list[dict[str, Any]], class_names: Sequence[str]) -> dict:
    """Detections in the ActivityNet results format {"version", "results": {video: [{"label",
    "score", "segment"}]}, "external_data"}."""
    results = {
        out["video"]: [
            {"label": class_names[int(lab)], "score": float(score), "segment": [float(s), float(e)]}
            for lab, s, e, score in out["detections"]
        ]
        for out in outputs
    }
    return {
        "version": "THUMOS14",
        "results": results,
        "external_data": {"used": False, "details": ""},
    }


def load_stream(path: str, modality: str, num_classes: int) -> TALNetStream:
    """One modality's stream from a checkpoint of a TALNetTask run (late fusion of separate runs)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: stream checkpoint for {modality!r} does not exist")
    task = TALNetTask.load_from_checkpoint(path, map_location="cpu")
    if modality not in task.model.streams:
        raise ValueError(f"{path}: has streams {task.model.modalities}, not {modality!r}")
    if task.num_classes != num_classes:
        raise ValueError(
            f"{path}: trained for {task.num_classes} classes, fusion expects {num_classes}"
        )
    log.info("Fusion: %s stream from %s", modality, path)
    return task.model.streams[modality]


def _gather_objects(items: list) -> list:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, items)
        return [x for part in gathered for x in part]
    return items
