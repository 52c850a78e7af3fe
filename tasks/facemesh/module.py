"""LightningModule of the real-time face mesh (Kartynnik et al., "Real-time Facial Surface Geometry
from Monocular Video on Mobile GPUs", 2019) with its BlazeFace detector (Bazarevsky et al., 2019).

One task trains both networks on the same batches: the detector on the letterboxed full image, the
mesh model on the keypoint-aligned crop (3D points on rendered faces, 2D contour points on annotated
images, the face flag on face and face-free crops). With ``bootstrap_rounds`` > 0, every
``bootstrap_every_n_epochs`` epochs the current model labels the unlabeled images and its confident
predictions join the training set (the paper's iterative refinement of real-world labels). The test
epoch also runs the video pipeline on the data set's clips and reports jitter and lag with and
without one-euro smoothing; a sample grid and the moving clip with its mesh go to the run folder and
the loggers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytorch_lightning as pl
import torch

from core.checkpoint import read_checkpoint
from core.io import atomic_path, atomic_write_json
from core.media import log_image, log_video
from core.optim import configure_optimizers
from core.video import write_video
from core.weights import load_pretrained
from datamodules.face_alignment import DEFAULT_CROP_SCALE
from datamodules.face_topology import FaceTopology, face_topology, read_topology_file
from datamodules.facemesh import load_rgb
from tasks.facemesh.anchors import decode, generate_anchors
from tasks.facemesh.bootstrap import pseudo_label
from tasks.facemesh.detector import Detections, detect_faces
from tasks.facemesh.losses import detector_loss, mesh_loss
from tasks.facemesh.metrics import DetectorAP50, InterOcularNME
from tasks.facemesh.model import count_parameters, detector_network, mesh_network
from tasks.facemesh.pipeline import FaceMeshPipeline, draw_mesh, smooth_track
from tasks.facemesh.postprocess import MAX_DETECTIONS, candidates, weighted_nms
from tasks.facemesh.runtime import check_runtime, default_runtime, inference_network
from tasks.facemesh.temporal import evaluate_clips

log = logging.getLogger(__name__)

TEMPORAL_FILE = "temporal_metrics.json"
SAMPLES_FILE = "facemesh_samples.png"
VIDEO_FILE = "facemesh_moving.mp4"


def mesh_template(topology: FaceTopology) -> torch.Tensor:
    """A rough mean face in crop coordinates (x, y in [0, 1], z in crop widths) from the topology's
    (u, v): the mesh head's bias starts here, so early training refines a face, not a point."""
    uv = torch.from_numpy(np.asarray(topology.uv, dtype=np.float32))
    u, v = uv[:, 0], uv[:, 1]
    return torch.stack([0.5 + 0.3 * u, 0.47 - 0.38 * v, -0.15 + 0.12 * (u**2 + 0.5 * v**2)], 1)


class FaceMeshTask(pl.LightningModule):
    """BlazeFace detector + face-mesh regressor (``variant`` light or full, on ``crop_size`` crops).

    ``variant="mediapipe"`` / ``detector_variant="mediapipe"`` are MediaPipe's published networks (their
    weights come from ``python -m tasks.facemesh.import_mediapipe``); ``pretrained_path`` starts from such a
    checkpoint (fine-tuning). ``topology``: the mesh's vertex order, triangles and contours, as a topology
    JSON file (the default config: MediaPipe's canonical 468-vertex mesh, the data's; the checkpoint keeps
    its content), its dict, or None for the generator's grid (or the pretrained checkpoint's).

    Loss = detector_weight * (focal + box/keypoint smooth-L1) + points_weight * masked L1 of the
    points (contour points weighted by ``contour_weight``, z by ``z_weight``) + flag_weight * face
    flag BCE. Validation: ``val/nme`` (all points of rendered faces), ``val/nme_contour`` (annotated
    contour points), ``val/ap50`` (detector, COCO AP at IoU 0.5)."""

    def __init__(
        self,
        num_points: int = 468,
        variant: str = "light",
        crop_size: int = 128,
        detector_size: int = 128,
        crop_scale: float = DEFAULT_CROP_SCALE,
        detector_weight: float = 1.0,
        points_weight: float = 10.0,
        contour_weight: float = 1.0,
        z_weight: float = 0.5,
        flag_weight: float = 0.2,
        score_threshold: float = 0.5,
        nms_iou_threshold: float = 0.3,
        face_threshold: float = 0.5,
        bootstrap_rounds: int = 0,
        bootstrap_every_n_epochs: int = 2,
        bootstrap_score_threshold: float = 0.8,
        bootstrap_face_threshold: float = 0.9,
        smoothing: dict[str, float] | None = None,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        sample_images: int = 8,
        detector_variant: str = "blazeface",
        topology: dict[str, Any] | str | None = None,
        pretrained_path: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        if pretrained_path and topology is None:  # the mesh's vertex order comes with its weights
            topology = (read_checkpoint(pretrained_path).get("hyper_parameters") or {}).get("topology")
            self.hparams["topology"] = topology
        if isinstance(topology, str | Path):  # the data's topology file: the checkpoint keeps its content
            topology = read_topology_file(topology, num_points).as_json()
            self.hparams["topology"] = topology
        self.topology = FaceTopology.from_json(topology) if topology else face_topology(num_points)
        if self.topology.num_points != num_points:
            raise ValueError(f"topology has {self.topology.num_points} points but num_points={num_points}")
        self.detector = detector_network(detector_variant, detector_size)
        template = mesh_template(self.topology) if self.topology.uv is not None else None
        self.mesh = mesh_network(variant, num_points, crop_size, template=template)
        self.register_buffer("anchors", generate_anchors(detector_size), persistent=False)
        corners = self.topology.eye_corners
        for stage in ("val", "test"):
            setattr(self, f"{stage}_nme", InterOcularNME(corners))
            setattr(self, f"{stage}_nme_contour", InterOcularNME(corners))
            setattr(self, f"{stage}_ap", DetectorAP50())
        self.bootstrap_done = 0
        # Inference engine of the tools (tasks/facemesh/runtime.py; None: ONNX Runtime where installed) and
        # its exports, made on first use and dropped whenever the task trains again.
        self.inference_runtime: str | None = None
        self._exports: dict[str, tuple[torch.nn.Module, torch.nn.Module]] = {}
        if pretrained_path:  # e.g. the imported MediaPipe checkpoint, to fine-tune
            load_pretrained(self, pretrained_path, prefixes=())
        log.info(
            "face mesh: detector %d params, %s mesh %d params (%d px crops)",
            count_parameters(self.detector),
            variant,
            count_parameters(self.mesh),
            crop_size,
        )

    @property
    def smoothing(self) -> dict[str, float]:
        return {"min_cutoff": 1.0, "beta": 10.0, "d_cutoff": 1.0, **(self.hparams.smoothing or {})}

    # --- training ---------------------------------------------------------------------------------

    def losses(self, batch: dict) -> tuple[dict[str, torch.Tensor], tuple]:
        logits, reg = self.detector(batch["det_image"])
        points, face_logit = self.mesh(batch["crop"])
        parts = detector_loss(
            logits,
            reg,
            self.anchors,
            batch["det_boxes"],
            batch["det_keypoints"],
            batch["det_valid"],
            getattr(self.detector, "coding", "ssd"),
            self.hparams.detector_size,
        )
        parts.update(mesh_loss(points, face_logit, batch, self.hparams.z_weight, self.hparams.contour_weight))
        h = self.hparams
        parts["total"] = (
            h.detector_weight * (parts["det_cls"] + parts["det_reg"])
            + h.points_weight * parts["points"]
            + h.flag_weight * parts["face_flag"]
        )
        return parts, (logits, reg, points, face_logit)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        parts, _ = self.losses(batch)
        n = batch["crop"].shape[0]
        self.log_dict({f"train/loss_{k}": v for k, v in parts.items() if k != "total"}, batch_size=n)
        self.log("train/loss", parts["total"], prog_bar=True, batch_size=n)
        return parts["total"]

    def setup(self, stage: str) -> None:
        data = getattr(self.trainer.datamodule, "topology", None) if self._trainer is not None else None
        if data is not None and data.kind != self.topology.kind:
            raise ValueError(
                f"the data's face mesh is the {data.kind} topology but the task's is {self.topology.kind} "
                "(its checkpoint's): their point indices do not correspond, so its points cannot be trained "
                "or scored on this data"
            )

    def on_fit_start(self) -> None:
        if self.hparams.bootstrap_rounds > 0 and not self.trainer.reload_dataloaders_every_n_epochs:
            # Pseudo-labels change the training set: rebuild the loader (and its sampler) each epoch.
            self.trainer.reload_dataloaders_every_n_epochs = 1

    def on_train_epoch_end(self) -> None:
        h = self.hparams
        dm = getattr(self.trainer, "datamodule", None)
        if (
            self.bootstrap_done >= h.bootstrap_rounds
            or (self.current_epoch + 1) % h.bootstrap_every_n_epochs
            or dm is None
            or not hasattr(dm, "unlabeled_images")
        ):
            return
        records, summary = pseudo_label(
            self, dm.unlabeled_images(), h.bootstrap_score_threshold, h.bootstrap_face_threshold
        )
        dm.set_pseudo_labels(records)
        self.bootstrap_done += 1
        summary["round"] = self.bootstrap_done
        summary["epoch"] = self.current_epoch
        self.log("train/pseudo_labels", float(len(records)), rank_zero_only=True)
        log.info(
            "bootstrapping round %d: %d of %d unlabeled images labelled",
            self.bootstrap_done,
            len(records),
            summary["images"],
        )
        if self.trainer.is_global_zero:
            atomic_write_json(
                Path(self.trainer.default_root_dir) / f"pseudo_labels_round{self.bootstrap_done}.json", summary
            )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["facemesh_bootstrap_done"] = self.bootstrap_done

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.bootstrap_done = int(checkpoint.get("facemesh_bootstrap_done", 0))

    # --- evaluation -------------------------------------------------------------------------------

    def _evaluate(self, batch: dict, stage: str) -> None:
        parts, (logits, reg, points, _) = self.losses(batch)
        n = batch["crop"].shape[0]
        self.log(f"{stage}/loss", parts["total"], batch_size=n, sync_dist=True)
        face = batch["face"] > 0.5
        full = face & (batch["has_z"] > 0.5)
        contour = face & ~(batch["has_z"] > 0.5)
        if full.any():
            getattr(self, f"{stage}_nme").update(points[full], batch["points"][full])
        if contour.any():
            getattr(self, f"{stage}_nme_contour").update(
                points[contour], batch["points"][contour], batch["point_mask"][contour]
            )
        boxes, _ = decode(reg, self.anchors, getattr(self.detector, "coding", "ssd"), self.hparams.detector_size)
        scores = torch.sigmoid(logits)
        size = float(self.hparams.detector_size)
        preds, targets = [], []
        for b in range(n):
            # Low threshold (AP integrates over all operating points), at most the 100 best before
            # blending (COCO counts at most 100 detections per image).
            keep = candidates(scores[b], 0.05, MAX_DETECTIONS)
            bb, _, ss = weighted_nms(
                boxes[b][keep],
                torch.zeros(len(keep), 0, 2, device=boxes.device),
                scores[b][keep],
                self.hparams.nms_iou_threshold,
            )
            preds.append({"boxes": bb * size, "scores": ss})
            targets.append({"boxes": batch["det_boxes"][b][batch["det_valid"][b]] * size})
        getattr(self, f"{stage}_ap").update(batch["image_id"].tolist(), preds, targets)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _log_epoch_metrics(self, stage: str) -> None:
        # Every rank computes (DDP-safe); a metric that saw no face of its kind (e.g. one batch in a
        # fast_dev_run) is skipped rather than failing the run.
        for name in ("nme", "nme_contour"):
            metric = getattr(self, f"{stage}_{name}")
            if metric.update_called:
                self.log(f"{stage}/{name}", metric.compute(), prog_bar=name == "nme")
            metric.reset()
        ap = getattr(self, f"{stage}_ap")
        self.log(f"{stage}/ap50", ap.compute(), prog_bar=True)
        ap.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "clips"):
            return
        # Clips are short: every rank runs them (same weights, same numbers), rank 0 writes.
        results, video_frames = evaluate_clips(self, dm.clips(), self.smoothing)
        for key, value in results.get("metrics", {}).items():
            self.log(f"test/{key}", float(value))
        if self.trainer.is_global_zero:
            out = Path(self.trainer.default_root_dir)
            atomic_write_json(out / TEMPORAL_FILE, results)
            self._write_samples(dm, out)
            if video_frames is not None:
                write_video(out / VIDEO_FILE, video_frames, fps=results.get("fps", 30.0))
                log_video(self, "test/moving_clip_mesh", str(out / VIDEO_FILE), fps=results.get("fps", 30.0))

    def _write_samples(self, dm, out: Path) -> None:
        """Test images with the pipeline's meshes drawn: ``facemesh_samples.png`` and the loggers."""
        pipeline = FaceMeshPipeline.from_task(self)
        tiles = []
        for source in ("rendered", "annotated"):
            for rec in dm.records(source, "test")[: max(1, self.hparams.sample_images // 2)]:
                image = load_rgb(rec.path)
                for face in pipeline.process_image(image):
                    image = draw_mesh(image, face.points, self.topology, keypoints=face.keypoints, box=face.box)
                tiles.append(cv2.resize(image, (192, 192)))
        if tiles:
            grid = np.concatenate(tiles, 1)
            with atomic_path(out / SAMPLES_FILE) as tmp:
                cv2.imwrite(str(tmp), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
            log_image(self, "test/mesh_samples", tiles)

    def train(self, mode: bool = True) -> FaceMeshTask:
        if mode:
            self._exports = {}  # the weights may change: export again when inference next asks
        return super().train(mode)

    def inference_networks(self, runtime: str | None = None) -> tuple[torch.nn.Module, torch.nn.Module]:
        """(detector, mesh) run by ``runtime`` (default: ``inference_runtime``, else ONNX Runtime where it is
        installed): the PyTorch modules, or their ONNX Runtime exports (made once, checked equal to them)."""
        runtime = check_runtime(runtime or self.inference_runtime or default_runtime())
        if runtime == "torch":
            return self.detector, self.mesh
        if runtime not in self._exports:
            self._exports[runtime] = (
                inference_network(self.detector, runtime),
                inference_network(self.mesh, runtime),
            )
        return self._exports[runtime]

    def detect_faces(self, images, runtime: str | None = None) -> Detections:
        """Faces in RGB uint8 frames (B, H, W, 3) or a list of them: per frame (boxes (K, 4) xyxy px, the six
        keypoints (K, 6, 2) px, scores (K,)). The face detector other systems use through this task's
        checkpoint (core.checkpoint.load_stamped_task), e.g. Photobooth's ``--detector``; ``runtime`` as in
        :meth:`inference_networks`."""
        h = self.hparams
        detector, _ = self.inference_networks(runtime)
        return detect_faces(images, detector, h.score_threshold, h.nms_iou_threshold, self.anchors)

    @torch.no_grad()
    def predict_step(self, batch: dict, batch_idx: int) -> list[list]:
        """predict.py: every face of each image of ``batch["image"]`` (RGB uint8 arrays of any size), or per
        frame of each video of ``batch["video"]`` the one face tracked through it (one-euro smoothed unless
        ``batch["smoothing"]`` is false), in the task's inference runtime; tasks/facemesh/predict.py writes them."""
        pipeline = FaceMeshPipeline.from_task(self, runtime=self.inference_runtime or default_runtime())
        if "video" in batch:
            return [
                self.track_video(pipeline, v, fps, batch["smoothing"]) for v, fps in zip(batch["video"], batch["fps"])
            ]
        return [[face.as_json() for face in pipeline.process_image(image)] for image in batch.get("image", [])]

    def track_video(self, pipeline: FaceMeshPipeline, frames, fps: float, smoothing: bool) -> list[list[dict]]:
        """Per frame [] or [the tracked face], its points (N, 3) the filtered ones (unrounded)."""
        track = pipeline.track(frames)
        if smoothing:
            points = smooth_track(track, fps, self.topology, **self.smoothing)
        else:
            points = [face.points if face is not None else None for face in track]
        return [[] if face is None else [face.as_json() | {"points": p}] for face, p in zip(track, points)]

    def configure_optimizers(self):
        return configure_optimizers(self, self.hparams.optimizer, self.hparams.scheduler)
