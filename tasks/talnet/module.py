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
from core.media import log_image
from core.metrics import gather_objects
from core.optim import configure_optimizers
from datamodules.thumos14_annotations import THUMOS14_CLASSES
from tasks.talnet.anchors import anchor_segments, decode_segments
from tasks.talnet.losses import classifier_loss, classifier_targets, proposal_loss
from tasks.talnet.metrics import AverageRecallAtN, TemporalActionDetectionMAP
from tasks.talnet.model import TALNet, TALNetStream
from tasks.talnet.nms import temporal_nms

log = logging.getLogger(__name__)

RESULTS_FILE = "detections_activitynet.json"
DETECTION_METRICS_FILE = "detection_metrics.json"
TIMELINE_FILE = "timeline.png"


FUSIONS = ("late", "union", "early")


def mean_of(tensors) -> torch.Tensor:
    """Element-wise mean of equally shaped tensors (one per stream)."""
    tensors = list(tensors)
    return torch.stack(tensors).mean(0) if len(tensors) > 1 else tensors[0]


class TALNetTask(pl.LightningModule):
    """TALNet over one or more modalities, trained jointly (``modalities=[rgb, flow]``) or one
    stream per run (``modalities=[rgb]``); ``stream_checkpoints`` fuses streams trained apart.

    ``fusion`` says how modalities meet:

    - ``late`` (the paper's late fusion, TALNet Sec. 3.4): one network per modality on the same
      anchors; the per-anchor proposal logits and boundary regressions of the networks are averaged
      element-wise before proposals are selected, and for every proposal the classification
      logits (and class-specific boundary regressions) of the networks are averaged before the
      softmax. Trained jointly, the losses are taken on the averaged outputs.
    - ``union``: each stream proposes on its own; the proposals of all streams are pooled and
      suppressed together, and the class probabilities (after each stream's softmax) and
      boundary refinements are averaged. Trained jointly, each stream has its own losses.
    - ``early``: one network over the concatenated features of all modalities.

    The abstract states the finding the late scheme rests on: "we explicitly consider multi-stream
    feature fusion and demonstrate that fusing motion late is important" (Chao et al., 2018)."""

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
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        stream_checkpoints: dict[str, str] | None = None,
        timeline_videos: int = 4,
        fusion: str = "late",
        dilation_rule: str = "exact",
    ):
        super().__init__()
        self.save_hyperparameters()
        if proposal_source not in ("spn", "random"):
            raise ValueError(f"proposal_source must be 'spn' or 'random', not {proposal_source!r}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, not {fusion!r}")
        unknown = set(stream_checkpoints or {}) - set(modalities)
        if unknown:
            raise ValueError(f"stream_checkpoints names {sorted(unknown)}, not among modalities {list(modalities)}")
        if fusion == "early" and stream_checkpoints:
            raise ValueError(
                "stream_checkpoints fuse per-modality streams late; fusion=early has one stream "
                "over all modalities (train it, or use fusion=late / union)"
            )
        self.num_classes, self.fusion = num_classes, fusion
        self.modalities = list(modalities)
        self.anchor_scales = [float(a) for a in anchor_scales]

        def stream(in_dim: int) -> TALNetStream:
            return TALNetStream(
                in_dim,
                num_classes,
                hidden_dim,
                anchor_scales,
                context_ratio,
                soi_bins,
                classifier_hidden,
                dropout,
                dilation_rule,
            )

        if fusion == "early":
            streams = {"+".join(self.modalities): stream(feature_dim * len(self.modalities))}
        else:
            streams = {m: stream(feature_dim) for m in self.modalities}
        self.model = TALNet(streams)
        for modality, path in (stream_checkpoints or {}).items():
            loaded = load_stream(path, modality, num_classes)
            if fusion == "late" and loaded.anchor_scales != self.anchor_scales:
                raise ValueError(
                    f"{path}: its {modality} stream has anchors {loaded.anchor_scales}, this task "
                    f"{self.anchor_scales}; late fusion averages per-anchor outputs, so both streams "
                    "need the same anchors (set task.anchor_scales, or use fusion=union)"
                )
            self.model.streams[modality] = loaded
        self.val_map = TemporalActionDetectionMAP(num_classes)
        self.test_map = TemporalActionDetectionMAP(num_classes)
        self.val_recall = AverageRecallAtN((10, 50, 100))
        self.test_recall = AverageRecallAtN((10, 50, 100))
        self._test_outputs: list[dict[str, Any]] = []
        # filled from a checkpoint: what the highlight command needs to run on any video
        self.extractor_settings: dict[str, Any] | None = None
        self.class_names: list[str] | None = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the feature extractor's settings (raw-video data) and the class names, so a
        checkpoint alone can detect actions in a new video (``tasks.talnet.highlight``)."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        extractor = getattr(dm, "extractor", None)
        settings = extractor.settings() if extractor is not None else self.extractor_settings
        if settings is not None:
            checkpoint["talnet_extractor"] = dict(settings)
        names = self._class_names() if self._trainer is not None else self.class_names
        if names:
            checkpoint["talnet_classes"] = list(names)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.extractor_settings = checkpoint.get("talnet_extractor")
        self.class_names = checkpoint.get("talnet_classes")

    # ------------------------------------------------------------------ geometry
    @staticmethod
    def _to_snippets(segments: torch.Tensor, t0: float, dt: float) -> torch.Tensor:
        return (segments - (t0 - dt / 2)) / dt

    @staticmethod
    def _to_seconds(segments: torch.Tensor, t0: float, dt: float, duration: float) -> torch.Tensor:
        return (segments * dt + (t0 - dt / 2)).clamp(0, duration)

    def _propose(
        self,
        scales: Sequence[float],
        logits: torch.Tensor,
        deltas: torch.Tensor,
        mask: torch.Tensor,
        keep: int,
    ):
        """Per video: proposals (n, 2) in snippet units and objectness scores, after NMS."""
        anchors = anchor_segments(logits.shape[-1], scales).to(logits)
        out = []
        for b in range(len(logits)):
            length = int(mask[b].sum())
            scores = logits[b, :, :length].sigmoid().reshape(-1)
            segs = decode_segments(deltas[b, :, :length].reshape(-1, 2), anchors[:, :length].reshape(-1, 2))
            segs = segs.clamp(0, length)
            ok = (segs[:, 1] - segs[:, 0]) > 0.5
            segs, scores = segs[ok], scores[ok]
            top = torch.topk(scores, min(self.hparams.pre_nms_proposals, len(scores))).indices
            kept = top[temporal_nms(segs[top], scores[top], self.hparams.proposal_nms_iou, keep)]
            out.append((segs[kept], scores[kept]))
        return out

    def _random_proposals(self, length: int, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
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

    # ------------------------------------------------------------------ the fused network
    def stream_inputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Each stream's input features (B, D, T): a modality's, or all concatenated (early)."""
        features = batch["features"]
        if self.fusion == "early":
            name = next(iter(self.model.streams))
            return {name: torch.cat([features[m] for m in self.modalities], dim=1)}
        return {name: features[name] for name in self.model.streams}

    def feature_maps(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        mask = batch["mask"]
        return {
            name: self.model.streams[name].temporal_features(x, mask) for name, x in self.stream_inputs(batch).items()
        }

    def _classify(self, fmaps, index, rois, lengths, probabilities: bool):
        """Classification of ``rois`` by the streams in ``fmaps``: (scores, deltas). Late and
        early fusion average logits (then softmax when ``probabilities``); union averages the
        streams' probabilities. Class-specific boundary regressions are averaged in every mode."""
        outs = [self.model.streams[name].classifier(fmap, index, rois, lengths) for name, fmap in fmaps.items()]
        deltas = mean_of(d for _, d in outs)
        if self.fusion == "union" and probabilities:
            return mean_of(logits.softmax(-1) for logits, _ in outs), deltas
        logits = mean_of(logits for logits, _ in outs)
        return (logits.softmax(-1) if probabilities else logits), deltas

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        mask = batch["mask"]
        fmaps = self.feature_maps(batch)
        spn = {name: self.model.streams[name].spn(fmap, mask) for name, fmap in fmaps.items()}
        if self.fusion == "union" or len(fmaps) == 1:
            groups = [(name, {name: fmaps[name]}, spn[name]) for name in fmaps]
        else:  # the paper's late fusion, trained on the averaged outputs
            fused = (mean_of(o[0] for o in spn.values()), mean_of(o[1] for o in spn.values()))
            groups = [("fused", fmaps, fused)]
        total = 0.0
        for name, group, (logits, deltas) in groups:
            loss, parts = self._group_loss(batch, group, logits, deltas)
            self.log_dict({f"train/{name}/{k}": v for k, v in parts.items()}, batch_size=len(mask))
            total = total + loss
        self.log("train/loss", total, prog_bar=True, batch_size=len(mask))
        return total

    def _group_loss(self, batch, fmaps, logits, deltas):
        """SPN and classifier losses of one (possibly fused) network on a batch."""
        mask = batch["mask"]
        any_fmap = next(iter(fmaps.values()))
        with torch.no_grad():
            proposals = self._propose(
                self.anchor_scales,
                logits.detach(),
                deltas.detach(),
                mask,
                self.hparams.train_proposals,
            )
        anchors = anchor_segments(any_fmap.shape[-1], self.anchor_scales).to(any_fmap)
        spn_losses, rois, labels, targets, index = [], [], [], [], []
        for b in range(len(mask)):
            gt = self._to_snippets(batch["segments"][b].to(any_fmap), float(batch["t0"][b]), float(batch["dt"][b]))
            valid = mask[b][None].expand(len(self.anchor_scales), -1)
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
            r, lab, tgt = classifier_targets(candidates, gt, batch["labels"][b].to(self.device), self.num_classes)
            rois.append(r)
            labels.append(lab)
            targets.append(tgt)
            index.append(torch.full((len(r),), b, device=any_fmap.device))
        cls_logits, cls_deltas = self._classify(
            fmaps, torch.cat(index), torch.cat(rois), mask.sum(1), probabilities=False
        )
        cls = classifier_loss(
            cls_logits,
            cls_deltas,
            torch.cat(labels).to(any_fmap.device),
            torch.cat(targets).to(any_fmap),
            self.num_classes,
        )
        spn_cls = torch.stack([s.classification for s in spn_losses]).mean()
        spn_reg = torch.stack([s.regression for s in spn_losses]).mean()
        parts = {
            "spn_cls": spn_cls,
            "spn_reg": spn_reg,
            "cls": cls.classification,
            "reg": cls.regression,
        }
        return spn_cls + spn_reg + cls.total, parts

    def configure_optimizers(self):
        # the shared contract (core.optim); the default is conf/task/talnet.yaml's
        return configure_optimizers(self, self.hparams.optimizer, self.hparams.scheduler)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def detect(self, batch: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
        """Per video: detections (n, 4: label, start, end, score) and proposals (n, 3: start, end,
        score), in seconds, with the streams fused as ``fusion`` says (class docstring)."""
        mask = batch["mask"]
        fmaps = self.feature_maps(batch)
        keep = self.hparams.num_proposals
        generator = torch.Generator().manual_seed(0)
        proposals = None
        if self.hparams.proposal_source == "spn":
            spn = {name: self.model.streams[name].spn(fmap, mask) for name, fmap in fmaps.items()}
            if self.fusion == "union":
                per_stream = [self._propose(self.model.streams[n].anchor_scales, *spn[n], mask, keep) for n in spn]
                proposals = []
                for b in range(len(mask)):
                    segs = torch.cat([p[b][0] for p in per_stream])
                    scores = torch.cat([p[b][1] for p in per_stream])
                    kept = temporal_nms(segs, scores, self.hparams.proposal_nms_iou, keep)
                    proposals.append((segs[kept], scores[kept]))
            else:
                logits = mean_of(o[0] for o in spn.values())
                deltas = mean_of(o[1] for o in spn.values())
                proposals = self._propose(self.anchor_scales, logits, deltas, mask, keep)
        outputs = []
        for b in range(len(mask)):
            length = int(mask[b].sum())
            if proposals is not None:
                segs, scores = proposals[b]
            else:
                segs, scores = self._random_proposals(length, keep, generator)
                segs, scores = segs.to(mask.device), scores.to(mask.device)
            index = torch.full((len(segs),), b, dtype=torch.long, device=mask.device)
            probs, deltas = self._classify(fmaps, index, segs, mask.sum(1), probabilities=True)
            t0, dt, duration = (
                float(batch["t0"][b]),
                float(batch["dt"][b]),
                float(batch["duration"][b]),
            )
            outputs.append(
                {
                    "detections": self._class_detections(segs, probs[:, : self.num_classes], deltas, t0, dt, duration),
                    "proposals": torch.cat([self._to_seconds(segs, t0, dt, duration), scores[:, None]], 1).cpu(),
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
        kept = temporal_nms(shifted, scores, self.hparams.detection_nms_iou, self.hparams.max_detections)
        det = torch.cat([label[kept, None].to(segs), segs[kept], scores[kept, None]], 1)
        return det.cpu()

    def _evaluate_batch(self, batch, map_metric, recall_metric) -> list[dict[str, Any]]:
        outputs = self.detect(batch)
        ids = batch["video_id"].tolist()
        gts = [
            torch.cat([lab[:, None].double(), seg.double()], 1) for lab, seg in zip(batch["labels"], batch["segments"])
        ]
        map_metric.update(ids, [o["detections"] for o in outputs], gts)
        recall_metric.update(ids, [o["proposals"] for o in outputs], [seg for seg in batch["segments"]])
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

    def predict_step(self, batch, batch_idx):
        """predict.py: detections (n, 4: label, start, end, score; seconds) per video of the batch
        (tasks/talnet/predict.py writes them)."""
        if not batch["inputs"]:  # every video of the batch was unreadable
            return []
        return [out["detections"] for out in self.detect(batch)]

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
        outputs = gather_objects(self._test_outputs)
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self._write_outputs(outputs, result_map.result)

    # ------------------------------------------------------------------ outputs
    def _class_names(self) -> list[str]:
        dm = getattr(self.trainer, "datamodule", None)
        names = list(getattr(dm, "class_names", None) or THUMOS14_CLASSES)
        return names if len(names) == self.num_classes else [f"class_{c}" for c in range(self.num_classes)]

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
            atomic_write_json(run_dir / DETECTION_METRICS_FILE, {**result.as_dict(), "per_class_ap": per_class})
        path = plot_timeline(unique[: self.hparams.timeline_videos], names, run_dir / TIMELINE_FILE)
        log_image(self, "test/timeline", path)


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
    from core.checkpoint import URL_SCHEME, load_task

    if not URL_SCHEME.match(str(path)) and not Path(path).exists():
        raise FileNotFoundError(f"{path}: stream checkpoint for {modality!r} does not exist")
    task = load_task(path, TALNetTask)
    if modality not in task.model.streams:
        raise ValueError(f"{path}: has streams {task.model.modalities}, not {modality!r}")
    if task.num_classes != num_classes:
        raise ValueError(f"{path}: trained for {task.num_classes} classes, fusion expects {num_classes}")
    log.info("Fusion: %s stream from %s", modality, path)
    return task.model.streams[modality]
