"""LightningModule for "Learning the Depths of Moving People by Watching Frozen People" (Li et al.,
CVPR 2019): trains the paper's hourglass on Mannequin Challenge frames with the public code's
objective, evaluates Table 2's errors (si-full, si-env, si-hum, si-intra, si-inter, RMSE, Rel) and
writes a defocus video of the first test clip into the run directory (tasks/people_depth/video.py)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from core.optim import check_scheduler, configure_optimizers
from core.weights import read_state_dict
from tasks.people_depth.losses import ground_truth_mask, joint_loss
from tasks.people_depth.metrics import REGIONS, ScaleAlignedRel, ScaleAlignedRMSE, ScaleInvariantRMSE
from tasks.people_depth.model import depth_network, is_public_state_dict, network_inputs, public_state_dict_to_ours
from tasks.people_depth.video import VIDEO_NAME, log_video, render_clip_video

log = logging.getLogger(__name__)

METRIC_NAMES = tuple(f"si_{r}" for r in REGIONS) + ("rmse", "rel")


class PeopleDepthTask(pl.LightningModule):
    """Depth of people and scene for Table 2's models: ``inputs`` I (RGB), IDCM (RGB, human mask,
    input log depth, confidence) or IDCMK (+ keypoints).

    Loss (``tasks/people_depth/losses.py``): 1.5 MSE_M on the ground-truth mask (or, with
    ``human_data_term``, MSE_M + 0.5 x the human pair term), 0.75 x the gradient term at 5 scales,
    and edge-aware smoothness 0.075 (first order) and 0.1 (Laplacian) halved per coarser scale.
    ``loss_weighting: confidence`` instead weights environment pixels by the input confidence (an
    option kept from earlier versions; the public code uses the ground-truth mask).
    ``optimizer`` / ``scheduler``: the shared contract (``core.optim``); the public recipe is Adam at
    lr 4e-4 halved every 8 epochs, ``scheduler: {name: step, step_epochs: 8, gamma: 0.5}``.
    ``pretrained_path``: a local weights file, the public checkpoints
    (``best_depth_Ours_Bilinear_inc_{3,6,7}_net_G.pth`` for I, IDCM, IDCMK) included."""

    def __init__(
        self,
        inputs: str = "IDCM",
        network: str = "hourglass",
        width: float = 1.0,
        unet_widths: Sequence[int] = (32, 64, 128, 256),
        human_data_term: bool = False,
        loss_weighting: str = "gt_mask",
        gradient_weight: float = 0.75,
        first_order_weight: float = 0.075,
        second_order_weight: float = 0.1,
        loss_scales: int = 5,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        pretrained_path: str | None = None,
        image_size: Sequence[int] = (96, 128),
        video_frames: int = 16,
        video_aperture: float = 6.0,
        video_fps: float = 10.0,
    ):
        super().__init__()
        if loss_weighting not in ("gt_mask", "confidence"):
            raise ValueError(f"loss_weighting must be 'gt_mask' or 'confidence', got {loss_weighting!r}")
        check_scheduler(scheduler)
        self.save_hyperparameters()
        self.model = depth_network(network, inputs, width, unet_widths)
        for stage in ("val", "test"):
            for region in REGIONS:
                setattr(self, f"{stage}_si_{region}", ScaleInvariantRMSE(region))
            setattr(self, f"{stage}_rmse", ScaleAlignedRMSE())
            setattr(self, f"{stage}_rel", ScaleAlignedRel())
        if pretrained_path:
            self.load_weights(pretrained_path)

    def load_weights(self, path: str | Path) -> dict[str, list[str]]:
        """Load a local weights file into the network: the public hourglass checkpoints (their key
        names mapped), a state dict of this network, or a checkpoint of this task. Logs and returns
        missing / unexpected keys; raises when no tensor matches or a shape differs."""
        state = read_state_dict(path)
        if is_public_state_dict(state):
            if self.hparams.network != "hourglass":
                raise ValueError(
                    f"{path}: the public checkpoint is an hourglass, but task.network={self.hparams.network}"
                )
            state = public_state_dict_to_ours(state)
        for prefix in ("model.", "module."):
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
        own = self.model.state_dict()
        mismatched = [
            f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}"
            for k, v in state.items()
            if k in own and own[k].shape != v.shape
        ]
        if mismatched:
            raise ValueError(
                f"{path}: shapes differ from task.inputs={self.hparams.inputs}, "
                f"task.width={self.hparams.width}: {mismatched[:3]}"
            )
        result = self.model.load_state_dict(state, strict=False)
        report = {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys)}
        if len(report["unexpected"]) == len(state):
            raise ValueError(f"{path}: no tensor matched the network; is it the right architecture?")
        log.info("Loaded %d tensors from %s", len(state) - len(report["unexpected"]), path)
        for kind, keys in report.items():
            if keys:
                log.warning("%s: %d %s keys, e.g. %s", path, len(keys), kind, keys[:5])
        return report

    def forward(self, batch: dict) -> torch.Tensor:
        """Predicted log depth (B, 1, H, W)."""
        return self.model(network_inputs(batch, self.hparams.inputs))

    def loss_mask(self, batch: dict) -> torch.Tensor:
        mask = ground_truth_mask(batch["depth"])
        if self.hparams.loss_weighting == "confidence":
            human = batch["human_mask"] > 0.5
            mask = mask * torch.where(human, torch.ones_like(batch["confidence"]), batch["confidence"])
        return mask

    def losses(self, pred_log: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        h = self.hparams
        return joint_loss(
            pred_log,
            batch["depth"],
            batch["image"],
            self.loss_mask(batch),
            batch["human_mask"],
            h.human_data_term,
            h.loss_scales,
            h.gradient_weight,
            h.first_order_weight,
            h.second_order_weight,
        )

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        parts = self.losses(self(batch), batch)
        n = batch["image"].shape[0]
        self.log_dict({f"train/loss_{k}": v for k, v in parts.items() if k != "total"}, batch_size=n)
        self.log("train/loss", parts["total"], prog_bar=True, batch_size=n)
        return parts["total"]

    def _evaluate(self, batch: dict, stage: str) -> None:
        pred_log = self(batch)
        n = batch["image"].shape[0]
        self.log(f"{stage}/loss", self.losses(pred_log, batch)["total"], batch_size=n, sync_dist=True)
        pred = torch.exp(pred_log)
        ids = batch.get("index")
        for name in METRIC_NAMES:
            metric = getattr(self, f"{stage}_{name}")
            metric.update(pred, batch["depth"], batch["human_mask"], ids)
            self.log(f"{stage}/{name}", metric, batch_size=n, prog_bar=name in ("si_full", "si_hum"))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    @torch.no_grad()
    def predict_depth(self, batch: dict) -> torch.Tensor:
        """Depth (B, 1, H, W) up to scale, in eval mode."""
        was_training = self.training
        self.eval()
        try:
            return torch.exp(self(batch))
        finally:
            self.train(was_training)

    def predict_step(self, batch: dict, batch_idx: int, chunk: int = 16) -> list[torch.Tensor]:
        """predict.py: depth (T, H, W) up to scale per video of the batch, whose frames lie end to end
        (``lengths``); tasks/people_depth/predict.py writes the videos and arrays."""
        if not batch["inputs"]:  # every video of the batch was unreadable
            return []
        keys = [k for k in ("image", "human_mask", "input_log_depth", "confidence") if k in batch]
        depth = torch.cat(
            [
                self.predict_depth({k: batch[k][i : i + chunk] for k in keys})[:, 0].cpu()
                for i in range(0, len(batch["image"]), chunk)
            ]
        )
        return list(depth.split(batch["lengths"]))

    def on_test_epoch_end(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if not self.trainer.is_global_zero or datamodule is None or not hasattr(datamodule, "split"):
            return
        path = Path(self.trainer.default_root_dir) / VIDEO_NAME
        render_clip_video(self, datamodule.split("test"), 0, path, max_frames=self.hparams.video_frames)
        log.info("Wrote defocus video %s", path)
        log_video(self.loggers, "test/side_by_side", path)

    def configure_optimizers(self):
        # The public code's lr_policy=step is scheduler={name: step, step_epochs: 8, gamma: 0.5}.
        return configure_optimizers(self, self.hparams.optimizer, self.hparams.scheduler)
