"""Photobooth LightningModules: the face-expression model on crops, and the whole frame model
(expression per face + attention + kiss) trained end to end on clips and validated by the shutter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics import MeanAbsoluteError
from torchmetrics.classification import BinaryAccuracy, MulticlassAccuracy

from core.io import atomic_write_json
from core.media import log_image
from core.metrics import gather_objects
from core.optim import check_scheduler, configure_optimizers
from datamodules.photobooth import MEAN, STD
from tasks.photobooth.metrics import CapturedMomentsPR
from tasks.photobooth.model import (
    NUM_EXPRESSIONS,
    FaceExpressionNet,
    PhotoboothNet,
    size_prior_expression_score,
    uniform_expression_score,
)
from tasks.photobooth.shutter import ScoringConfig, frame_quality, score_frames, shutter_shots


def check_num_expressions(num_classes: int) -> None:
    """The expression head is fixed to the 5 key expressions + neutral; a config must not say otherwise."""
    if num_classes != NUM_EXPRESSIONS:
        raise ValueError(f"num_classes must be {NUM_EXPRESSIONS} (5 key expressions + neutral), got {num_classes}")


def face_losses(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cross-entropy on the expression and binary cross-entropy on eyes_closed, talking, attending;
    a label of -1 (not labelled, or padding) is left out."""
    out = {}
    known = labels[:, 0] >= 0
    out["expression"] = (
        F.cross_entropy(logits[known, :NUM_EXPRESSIONS], labels[known, 0]) if known.any() else logits.sum() * 0
    )
    for i, name in enumerate(("eyes_closed", "talking", "attending"), start=1):
        known = labels[:, i] >= 0
        out[name] = (
            F.binary_cross_entropy_with_logits(logits[known, NUM_EXPRESSIONS + i - 1], labels[known, i].float())
            if known.any()
            else logits.sum() * 0
        )
    return out


class PhotoboothExpressionTask(pl.LightningModule):
    """Face crops -> 5 key expressions + neutral, eyes closed, talking, attending (FaceExpressionNet)."""

    def __init__(
        self,
        backbone: str = "mobilenetv3_small_050",
        num_classes: int = NUM_EXPRESSIONS,
        drop_rate: float = 0.0,
        attribute_weight: float = 0.5,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        pretrained: bool | str = False,
    ) -> None:
        super().__init__()
        check_scheduler(scheduler)
        check_num_expressions(num_classes)
        self.save_hyperparameters()
        self.model = FaceExpressionNet(backbone, drop_rate, pretrained)
        self.val_acc = MulticlassAccuracy(NUM_EXPRESSIONS, average="micro")
        self.test_acc = MulticlassAccuracy(NUM_EXPRESSIONS, average="micro")
        self.val_attr = torch.nn.ModuleList([BinaryAccuracy(ignore_index=-1) for _ in range(3)])
        self.test_attr = torch.nn.ModuleList([BinaryAccuracy(ignore_index=-1) for _ in range(3)])

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.model(crops)[0]

    def _loss(self, logits, labels) -> torch.Tensor:
        parts = face_losses(logits, labels)
        return parts["expression"] + self.hparams.attribute_weight * (
            parts["eyes_closed"] + parts["talking"] + parts["attending"]
        )

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        crops, labels = batch
        loss = self._loss(self(crops), labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(labels))
        return loss

    def _evaluate(self, batch, stage: str, acc, attrs) -> None:
        crops, labels = batch
        logits = self(crops)
        self.log(f"{stage}/loss", self._loss(logits, labels), sync_dist=True, batch_size=len(labels))
        acc.update(logits[:, :NUM_EXPRESSIONS], labels[:, 0])
        self.log(f"{stage}/expression_acc", acc, prog_bar=True)
        for i, (name, metric) in enumerate(zip(("eyes_closed", "talking", "attending"), attrs)):
            if (labels[:, i + 1] >= 0).any():
                metric.update(logits[:, NUM_EXPRESSIONS + i].sigmoid(), labels[:, i + 1])
                self.log(f"{stage}/{name}_acc", metric)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc, self.val_attr)

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc, self.test_attr)

    def configure_optimizers(self):
        return configure_optimizers(self, self.hparams.optimizer, self.hparams.scheduler)


class PhotoboothTask(pl.LightningModule):
    """The whole Photobooth model trained end to end on clip frames: face expression/quality heads,
    attention over the faces (global expression score) and the kiss model. Validation runs the
    shutter on whole clips and reports precision/recall of captured moments, with attention and
    the look-ahead buffer and, as ablations, without each (``_no_attention``: mean over faces,
    ``_no_buffer``) and with the size prior alone in place of attention (``_size_prior``), plus the
    mean absolute error of the global expression score against the frame's label for attention and
    for the size prior alone (``expression_mae``, ``expression_mae_size_prior``).
    ``crop_size``, ``frame_size`` and ``max_faces`` are the data's (kept so the run command needs only
    the checkpoint)."""

    def __init__(
        self,
        face_backbone: str = "mobilenetv3_small_050",
        kiss_backbone: str = "mobilenetv3_small_050",
        num_classes: int = NUM_EXPRESSIONS,
        crop_size: int = 48,
        frame_size: list[int] | tuple[int, int] = (96, 160),
        max_faces: int = 4,
        embed_dim: int = 32,
        size_prior: float = 1.0,
        expression_checkpoint: str | None = None,
        face_loss_weight: float = 1.0,
        kiss_loss_weight: float = 1.0,
        scoring: dict[str, float] | None = None,
        shutter: dict[str, float] | None = None,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        pretrained: bool | str = False,
    ) -> None:
        super().__init__()
        check_scheduler(scheduler)
        check_num_expressions(num_classes)
        self.save_hyperparameters()
        self.hparams.frame_size = [int(v) for v in frame_size]
        self.scoring = ScoringConfig(**(scoring or {}))
        self.shutter = {"buffer": 5, "min_gap": 10, "threshold": 0.3, **(shutter or {})}
        self.net = PhotoboothNet(face_backbone, kiss_backbone, embed_dim, size_prior, pretrained)
        if expression_checkpoint:
            self.load_expression_weights(expression_checkpoint)
        self.variants = ("", "_no_attention", "_no_buffer", "_size_prior")
        self.val_pr = torch.nn.ModuleDict({v or "full": CapturedMomentsPR() for v in self.variants})
        self.test_pr = torch.nn.ModuleDict({v or "full": CapturedMomentsPR() for v in self.variants})
        # How well the pooled score fits the frame's expression label: learned attention vs size prior.
        self.val_mae = torch.nn.ModuleDict({k: MeanAbsoluteError() for k in ("attention", "size_prior")})
        self.test_mae = torch.nn.ModuleDict({k: MeanAbsoluteError() for k in ("attention", "size_prior")})
        self._test_shots: list[dict] = []

    def load_expression_weights(self, path: str) -> None:
        """Start the face model from a PhotoboothExpressionTask checkpoint."""
        from core.checkpoint import read_checkpoint

        state = read_checkpoint(path)["state_dict"]
        face = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
        missing, unexpected = self.net.face.load_state_dict(face, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{path}: not a face-expression checkpoint (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        for key in ("crop_size", "max_faces"):
            found = getattr(datamodule, key, None)
            if found is not None and found != self.hparams[key]:
                raise ValueError(
                    f"task.{key}={self.hparams[key]} but the data has {found} (set task.{key}=${{data.{key}}})"
                )

    def forward(self, frames, crops, boxes, mask) -> dict[str, torch.Tensor]:
        return self.net(frames, crops, boxes, mask)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        out = self(batch["frame"], batch["crops"], batch["boxes"], batch["mask"])
        mask = batch["mask"]
        parts = face_losses(out["face_logits"][mask], batch["face_labels"][mask])
        face = sum(parts.values())
        expression = F.binary_cross_entropy_with_logits(out["expression_logit"], batch["expression_target"])
        kiss = F.binary_cross_entropy_with_logits(out["kiss_logit"], batch["kiss"])
        loss = expression + self.hparams.face_loss_weight * face + self.hparams.kiss_loss_weight * kiss
        n = len(mask)
        self.log_dict(
            {"train/loss": loss, "train/expression_loss": expression, "train/kiss_loss": kiss},
            batch_size=n,
            prog_bar=True,
        )
        return loss

    @torch.no_grad()
    def clip_outputs(self, clip: dict, chunk: int = 64) -> dict[str, np.ndarray]:
        """Model outputs per frame of a whole clip (numpy), plus each face's blur score."""
        outs = []
        for s in range(0, len(clip["mask"]), chunk):
            sl = slice(s, s + chunk)
            outs.append(self(clip["frame"][sl], clip["crops"][sl], clip["boxes"][sl], clip["mask"][sl]))
        out = {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
        mask = clip["mask"]
        return {
            "face_logits": out["face_logits"].float().cpu().numpy(),
            "weights": out["weights"].float().cpu().numpy(),
            "expression": out["expression_logit"].float().sigmoid().cpu().numpy(),
            "uniform_expression": uniform_expression_score(out["face_logits"], mask).float().cpu().numpy(),
            "size_expression": size_prior_expression_score(out["face_logits"], clip["boxes"], mask)
            .float()
            .cpu()
            .numpy(),
            "area": (clip["boxes"][..., 2:] - clip["boxes"][..., :2]).clamp_min(0).prod(-1).float().cpu().numpy(),
            "kiss": out["kiss_logit"].float().sigmoid().cpu().numpy(),
            "mask": mask.cpu().numpy(),
            "blur": clip["blur"].cpu().numpy(),
        }

    def shots(
        self, outputs: dict[str, np.ndarray], attention: bool | str = True, buffer: bool = True
    ) -> tuple[list[int], dict]:
        """The shutter's frames for one clip, and the scores it decided on. ``attention``: True (the
        attention model), False (mean over faces) or ``"size_prior"`` (faces weighted by area alone)."""
        face_probs = 1 / (1 + np.exp(-outputs["face_logits"][..., NUM_EXPRESSIONS:]))
        mask = outputs["mask"]
        if attention == "size_prior":
            area = outputs["area"] * mask
            weights, expression = area / np.maximum(area.sum(-1, keepdims=True), 1e-12), outputs["size_expression"]
        elif attention:
            weights, expression = outputs["weights"], outputs["expression"]
        else:
            weights = mask / np.maximum(mask.sum(-1, keepdims=True), 1)
            expression = outputs["uniform_expression"]
        quality = frame_quality(face_probs, weights, mask, outputs["blur"])
        scored = score_frames(expression, outputs["kiss"], quality, self.scoring)
        settings = dict(self.shutter)
        if not buffer:
            settings["buffer"] = 0
        return shutter_shots(scored["score"], **settings), scored

    def _evaluate(self, clip: dict, metrics, mae) -> dict[str, list[int]]:
        outputs = self.clip_outputs(clip)
        taken = {}
        modes = {"": True, "_no_attention": False, "_no_buffer": True, "_size_prior": "size_prior"}
        for v in self.variants:
            taken[v] = self.shots(outputs, attention=modes[v], buffer=v != "_no_buffer")[0]
            metrics[v or "full"].update([int(clip["clip_index"])], [taken[v]], [clip["moments"]])
        if "expression_target" in clip:  # labelled clips: how well each pooling fits the frame's label
            target = clip["expression_target"].float().cpu()
            mae["attention"].update(torch.from_numpy(outputs["expression"]), target)
            mae["size_prior"].update(torch.from_numpy(outputs["size_expression"]), target)
        return taken

    def _log_pr(self, stage: str, metrics, mae) -> None:
        for v in self.variants:
            values = metrics[v or "full"].compute()
            for k, value in values.items():
                self.log(
                    f"{stage}/{k}{v}", value, sync_dist=True, prog_bar=(k == "f1" and not v)
                )  # equal on every rank
            metrics[v or "full"].reset()
        for k, metric in mae.items():
            if metric.update_count:
                self.log(f"{stage}/expression_mae" + ("" if k == "attention" else f"_{k}"), metric.compute())
            metric.reset()

    def validation_step(self, clip: dict, batch_idx: int) -> None:
        taken = self._evaluate(clip, self.val_pr, self.val_mae)
        if batch_idx == 0 and not self.trainer.sanity_checking and taken[""]:
            # The first clip's shots, to W&B / TensorBoard / CSV media through core.media.
            frames = (clip["frame"][taken[""]].float() * STD + MEAN).clamp(0, 1)
            log_image(self, "val/shots", frames, captions=[f"frame {t}" for t in taken[""]])

    def on_validation_epoch_end(self) -> None:
        self._log_pr("val", self.val_pr, self.val_mae)

    def on_test_epoch_start(self) -> None:
        self._test_shots = []

    def test_step(self, clip: dict, batch_idx: int) -> None:
        taken = self._evaluate(clip, self.test_pr, self.test_mae)
        self._test_shots.append(
            {
                "clip": int(clip["clip_index"]),
                "moments": [list(m) for m in clip["moments"]],
                **{f"shots{v}": taken[v] for v in self.variants},
            }
        )

    def on_test_epoch_end(self) -> None:
        self._log_pr("test", self.test_pr, self.test_mae)
        rows = gather_objects(self._test_shots)
        if self.trainer.is_global_zero:
            rows = sorted({r["clip"]: r for r in rows}.values(), key=lambda r: r["clip"])
            atomic_write_json(Path(self.trainer.default_root_dir) / "test_shots.json", rows)

    def predict_step(self, batch: dict, batch_idx: int) -> list:
        """predict.py: per video of the batch (frames end to end, ``lengths``) the pipeline's result
        with attention and buffer unless the writer's ``pipeline`` options say otherwise (tasks/photobooth/predict.py
        writes its products)."""
        if not batch["inputs"]:  # every video of the batch was unreadable
            return []
        from tasks.photobooth.pipeline import Photobooth

        booth = Photobooth(self, **batch.get("pipeline", {}))
        results, start = [], 0
        for length in batch["lengths"]:
            clip = {k: batch[k][start : start + length] for k in ("frame", "crops", "boxes", "mask", "blur")}
            results.append(booth.finish(self.clip_outputs(clip)))
            start += length
        return results

    def configure_optimizers(self):
        return configure_optimizers(self, self.hparams.optimizer, self.hparams.scheduler)
