"""LightningModule for "Learning the Depths of Moving People by Watching Frozen People" (Li et al.,
CVPR 2019): trains the hourglass on Mannequin Challenge frames, evaluates si-RMSE by region, and
writes a defocus video of the first test clip into the run directory (and to W&B when logging there)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from timm.optim import create_optimizer_v2

from tasks.people_depth.defocus import write_effect_video
from tasks.people_depth.losses import edge_aware_smoothness, gradient_loss, scale_invariant_loss
from tasks.people_depth.metrics import REGIONS, ScaleInvariantRMSE
from tasks.people_depth.model import hourglass, network_inputs

log = logging.getLogger(__name__)

VIDEO_NAME = "people_depth_side_by_side.mp4"


class PeopleDepthTask(pl.LightningModule):
    """Depth of people and scene from RGB + masked parallax depth (``inputs: full``) or from RGB
    alone (``inputs: rgb``, the single-frame baseline).

    Loss = scale-invariant MSE + ``gradient_weight`` * multi-scale gradient loss +
    ``smoothness_weight`` * edge-aware smoothness. With ``loss_weighting: confidence`` the
    supervision of environment pixels is weighted by the parallax confidence (human pixels by 1),
    as the paper weights by its confidence map; ``valid`` weights every pixel with depth by 1."""

    def __init__(
        self,
        inputs: str = "full",
        widths: Sequence[int] = (32, 64, 128, 256),
        gradient_weight: float = 0.5,
        smoothness_weight: float = 0.05,
        gradient_scales: int = 4,
        loss_weighting: str = "confidence",
        optimizer: Optional[dict[str, Any]] = None,
        image_size: Sequence[int] = (96, 128),
        video_frames: int = 16,
        video_aperture: float = 6.0,
        video_fps: float = 10.0,
    ):
        super().__init__()
        if loss_weighting not in ("confidence", "valid"):
            raise ValueError(f"loss_weighting must be 'confidence' or 'valid', got {loss_weighting!r}")
        self.save_hyperparameters()
        self.model = hourglass(inputs, widths)
        self.optimizer_kwargs = dict(optimizer or {"opt": "adamw", "lr": 1e-3, "weight_decay": 1e-4})
        for stage in ("val", "test"):
            for region in REGIONS:
                setattr(self, f"{stage}_si_{region}", ScaleInvariantRMSE(region))

    def forward(self, batch: dict) -> torch.Tensor:
        """Predicted log depth (B, 1, H, W)."""
        return self.model(network_inputs(batch, self.hparams.inputs))

    def loss_weight(self, batch: dict) -> torch.Tensor:
        if self.hparams.loss_weighting == "valid":
            return torch.ones_like(batch["depth"])
        return torch.where(batch["human_mask"] > 0.5, torch.ones_like(batch["confidence"]), batch["confidence"])

    def losses(self, pred_log: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        weight = self.loss_weight(batch)
        parts = {
            "si": scale_invariant_loss(pred_log, batch["depth"], weight),
            "gradient": gradient_loss(pred_log, batch["depth"], weight, self.hparams.gradient_scales),
            "smoothness": edge_aware_smoothness(pred_log, batch["image"], self.hparams.gradient_scales),
        }
        parts["total"] = (parts["si"] + self.hparams.gradient_weight * parts["gradient"]
                          + self.hparams.smoothness_weight * parts["smoothness"])
        return parts

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        parts = self.losses(self(batch), batch)
        self.log_dict({f"train/loss_{k}": v for k, v in parts.items()}, prog_bar=False,
                      batch_size=batch["image"].shape[0])
        self.log("train/loss", parts["total"], prog_bar=True, batch_size=batch["image"].shape[0])
        return parts["total"]

    def _evaluate(self, batch: dict, stage: str) -> None:
        pred_log = self(batch)
        n = batch["image"].shape[0]
        self.log(f"{stage}/loss", self.losses(pred_log, batch)["total"], batch_size=n, sync_dist=True)
        pred = torch.exp(pred_log)
        for region in REGIONS:
            metric = getattr(self, f"{stage}_si_{region}")
            metric.update(pred, batch["depth"], batch["human_mask"])
            self.log(f"{stage}/si_{region}", metric, batch_size=n, prog_bar=region in ("full", "hum"))

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

    def render_clip_video(self, dataset, clip: int, path: str | Path, focus_depth: Optional[float] = None,
                          aperture: Optional[float] = None, max_radius: float = 8.0,
                          fps: Optional[float] = None, max_frames: Optional[int] = None) -> Path:
        """Predict depth for the frames of ``clip`` in ``dataset`` and write input | depth | defocus."""
        indices = [i for i, s in enumerate(dataset.samples) if s.clip == clip][: max_frames or None]
        if not indices:
            raise ValueError(f"clip {clip} has no samples")
        images, depths, masks = [], [], []
        for start in range(0, len(indices), 8):
            items = [dataset[i] for i in indices[start:start + 8]]
            batch = {k: torch.stack([it[k] for it in items]).to(self.device)
                     for k in ("image", "human_mask", "parallax_depth", "confidence")}
            depth = self.predict_depth(batch).cpu().numpy()[:, 0]
            for it, d in zip(items, depth):
                images.append((it["image"].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))
                depths.append(d)
                masks.append(it["human_mask"][0].numpy())
        return write_effect_video(path, images, depths, masks, focus_depth=focus_depth,
                                  aperture=aperture if aperture is not None else self.hparams.video_aperture,
                                  max_radius=max_radius, fps=fps or self.hparams.video_fps)

    def on_test_epoch_end(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if not self.trainer.is_global_zero or datamodule is None or not hasattr(datamodule, "split"):
            return
        path = Path(self.trainer.default_root_dir) / VIDEO_NAME
        self.render_clip_video(datamodule.split("test"), 0, path, max_frames=self.hparams.video_frames)
        log.info("Wrote defocus video %s", path)
        for logger in self.loggers:
            if isinstance(logger, pl.loggers.WandbLogger):
                import wandb

                logger.experiment.log({"test/side_by_side": wandb.Video(str(path), format="mp4")})

    def configure_optimizers(self):
        return create_optimizer_v2(self.model, **self.optimizer_kwargs)
