"""Fine-grained categorization tasks for the FGVC6 competitions: single-label (with optional
taxonomy heads, test-time prior re-estimation and camera-trap sequence averaging) and multi-label
(iMet). Both extend the image-classification task: same backbone, optimizer and schedule contract."""

from __future__ import annotations

import csv
import io
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassConfusionMatrix

from core.io import atomic_write_json, atomic_write_text
from core.media import log_image, log_table
from core.metrics import gather_rows
from core.weights import load_pretrained, read_state_dict
from tasks.classification.module import ImageClassificationTask
from tasks.fgvc import protocol
from tasks.fgvc.metrics import CategorizationAccuracy, MacroF1, SampleF2, TopKError
from tasks.fgvc.prior import PriorCalibration, em_prior, fit_prior_calibration
from tasks.fgvc.visualize import confused_pairs, render_confused_pairs

log = logging.getLogger(__name__)


def competition_metric(comp: protocol.Competition, num_classes: int):
    """The torchmetrics Metric of a competition's grader."""
    if comp.kind == "topk":
        return TopKError(min(comp.k, num_classes))
    if comp.kind == "macro_f1":
        return MacroF1(num_classes)
    if comp.kind == "accuracy":
        return CategorizationAccuracy()
    return SampleF2()


def grade(comp: protocol.Competition, scores: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> float:
    """The competition's score of (N, C) scores against targets, with the numpy grader."""
    if comp.kind == "topk":
        ranked = np.argsort(-scores, axis=1, kind="stable")[:, : comp.k]
        return protocol.top_k_error(ranked, targets, comp.k)
    if comp.kind == "multilabel":
        return protocol.sample_f2(protocol.threshold_predictions(scores, threshold), targets > 0.5)
    predicted = scores.argmax(1)
    if comp.kind == "macro_f1":
        return protocol.macro_f1(predicted, targets)
    return protocol.accuracy(predicted, targets)


def first_of_each_index(rows: torch.Tensor) -> np.ndarray:
    """Gathered rows (index, ...) as float64, one per index (its first copy), in index order."""
    rows = rows.double().cpu().numpy()
    _, first = np.unique(rows[:, 0], return_index=True)
    return rows[first]


def load_network_weights(model: nn.Module, path: str) -> None:
    """``core.weights.load_pretrained`` for the network, also from a checkpoint of a task whose
    state holds more than ``model.*`` (this task's taxonomy heads and prior buffers): only the
    ``model.`` tensors are offered to the network, so checkpoints of this project pre-train it."""
    state = read_state_dict(path)
    inner = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    if not inner or len(inner) == len(state):
        load_pretrained(model, path)
        return
    with tempfile.TemporaryDirectory() as folder:
        network_only = Path(folder) / f"{Path(path).stem}_network.pt"
        torch.save(inner, network_only)
        load_pretrained(model, network_only)


class FineGrainedTask(ImageClassificationTask):
    """Single-label fine-grained classification graded as ``competition`` (a key of
    :data:`tasks.fgvc.protocol.COMPETITIONS`).

    - ``taxonomy``: {level: number of groups} adds a linear head per taxonomy level on the pooled
      features, trained with cross-entropy on each class's group (weight ``taxonomy_weight``); the
      class-to-group table comes from the DataModule's ``taxonomy`` and is saved in the checkpoint.
    - ``prior_adjustment``: ``em`` re-estimates the test split's class priors with EM (Saerens et al.
      2002) from the unlabeled test posteriors, starting from the prior those posteriors carry (the
      validation split's after ``calibration``, else the sampler's training prior), as a MAP estimate
      with ``em_prior_strength`` pseudo-samples of that prior (0: the paper's maximum likelihood); the
      test metric is logged with and without it, and the priors go to ``priors.json``.
    - ``sequence_average``: average the test posteriors of the frames of one sequence (iWildCam's
      ``seq_id``, from the DataModule's ``test_groups``) before grading.

    Test outputs in the run directory: ``predictions.csv``, ``submission.csv`` (the competition's
    header), ``priors.json`` (with EM) and ``confused_pairs.png`` (from the last validation epoch)."""

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        image_size: int,
        competition: str = "inaturalist2019",
        taxonomy: dict[str, int] | None = None,
        taxonomy_weight: float = 0.5,
        prior_adjustment: str = "none",
        calibration: str = "bcts",
        em_prior_strength: float = 500.0,
        sequence_average: bool = False,
        confused_pairs: int = 6,
        **kwargs: Any,
    ) -> None:
        pretrained_path = kwargs.pop("pretrained_path", None)
        if pretrained_path:  # a user's local file wins over timm's published weights (task.pretrained)
            kwargs["pretrained"] = False
        super().__init__(backbone, num_classes, image_size, **kwargs)
        self.hparams["pretrained_path"] = pretrained_path
        if pretrained_path:
            load_network_weights(self.model, pretrained_path)
        self.competition = protocol.competition(competition)
        if prior_adjustment not in ("none", "em"):
            raise ValueError(f"task.prior_adjustment={prior_adjustment!r}: choose 'none' or 'em'")
        if calibration not in ("none", "ts", "bcts"):
            raise ValueError(f"task.calibration={calibration!r}: choose 'none', 'ts' or 'bcts'")
        if em_prior_strength < 0:
            raise ValueError(f"task.em_prior_strength={em_prior_strength}: must be >= 0 (pseudo-samples)")
        self.taxonomy_heads = nn.ModuleDict(
            {level: nn.Linear(self.model.num_features, size) for level, size in (taxonomy or {}).items()}
        )
        self.register_buffer(
            "taxonomy_table", torch.full((num_classes, len(self.taxonomy_heads)), -1, dtype=torch.long)
        )
        self.register_buffer("train_prior", torch.zeros(num_classes, dtype=torch.float64))
        self._build_metrics()
        self._test_outputs: list[torch.Tensor] = []
        self._val_confusion: np.ndarray | None = None

    def _build_metrics(self) -> None:
        name = self.competition.metric_name
        num_classes = self.hparams.num_classes
        self.val_metrics = MetricCollection(
            {name: competition_metric(self.competition, num_classes), "acc_top1": CategorizationAccuracy()},
            prefix="val/",
        )
        self.test_metrics = MetricCollection({name: competition_metric(self.competition, num_classes)}, prefix="test/")
        self.val_confusion = MulticlassConfusionMatrix(num_classes)

    # --- setup: facts from the DataModule ---------------------------------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            return
        if stage == "fit" and getattr(datamodule, "datasets", None) and hasattr(datamodule, "train_prior"):
            self.train_prior.copy_(torch.tensor(datamodule.train_prior, dtype=torch.float64))
        if len(self.taxonomy_heads) and stage == "fit":
            table = getattr(datamodule, "taxonomy", {})
            missing = [lvl for lvl in self.taxonomy_heads if lvl not in table]
            if missing:
                raise ValueError(
                    f"task.taxonomy names levels {missing} that the data set does not provide ({sorted(table)})"
                )
            for j, (level, head) in enumerate(self.taxonomy_heads.items()):
                groups = torch.tensor(table[level], dtype=torch.long)
                if int(groups.max()) + 1 != head.out_features:
                    raise ValueError(
                        f"task.taxonomy.{level}={head.out_features} but the data set has {int(groups.max()) + 1} "
                        f"{level} groups (set it from ${{data.taxonomy_sizes}})"
                    )
                self.taxonomy_table[:, j] = groups

    # --- training ------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch[0], batch[1]
        if not len(self.taxonomy_heads):
            loss = self.criterion(self(images), targets)
        else:
            if self.hparams.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            pooled = self.model.forward_head(self.model.forward_features(images), pre_logits=True)
            loss = self.criterion(self.model.get_classifier()(pooled), targets)
            for j, head in enumerate(self.taxonomy_heads.values()):
                aux = nn.functional.cross_entropy(head(pooled), self.taxonomy_table[targets, j])
                self.log(f"train/loss_{list(self.taxonomy_heads)[j]}", aux, batch_size=len(targets))
                loss = loss + self.hparams.taxonomy_weight * aux
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(targets))
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, targets = batch[0], batch[1]
        logits = self(images)
        self.log("val/loss", self.criterion(logits, targets), sync_dist=True, batch_size=len(targets))
        self.val_metrics.update(logits, targets)
        self.log_dict(self.val_metrics, prog_bar=True)
        self.val_confusion.update(logits.argmax(-1), targets)

    def on_validation_epoch_end(self) -> None:
        self._val_confusion = self.val_confusion.compute().cpu().numpy()  # every rank computes
        self.val_confusion.reset()

    def sample_images(self, batch):
        return super().sample_images((batch[0], batch[1]))

    # --- test: gather, adjust, grade, write ----------------------------------------------------------
    def on_test_epoch_start(self) -> None:
        self._test_outputs = []

    def test_step(self, batch, batch_idx: int) -> None:
        images, targets, index = batch
        probs = self(images).float().log_softmax(-1)  # log-posteriors: softmax later, or calibrate first
        self._test_outputs.append(
            torch.cat([index.reshape(-1, 1).float(), targets.reshape(len(index), -1).float(), probs], 1).cpu()
        )

    def gathered_test_outputs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(index, targets, scores) of every test item once, in file order, on every rank."""
        width = 1 + self._target_width() + self.hparams.num_classes
        rows = torch.cat(self._test_outputs) if self._test_outputs else torch.zeros(0, width)
        rows = first_of_each_index(gather_rows(rows.to(self.device)))  # a DistributedSampler's padding repeats items
        t = self._target_width()
        targets = rows[:, 1 : 1 + t]
        return rows[:, 0].astype(np.int64), (targets[:, 0].astype(np.int64) if t == 1 else targets), rows[:, 1 + t :]

    def _target_width(self) -> int:
        return 1

    def on_test_epoch_end(self) -> None:
        index, targets, log_posteriors = self.gathered_test_outputs()
        scores = np.exp(log_posteriors)
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.hparams.sequence_average:
            scores = self._sequence_average(scores, index, datamodule)
        results: dict[str, Any] = {}
        labeled = len(targets) > 0 and bool((np.asarray(targets) >= 0).all())
        name = self.competition.metric_name
        if labeled:
            results[f"test/{name}"] = grade(self.competition, scores, targets)
        if self.hparams.prior_adjustment == "em":
            train_prior = np.asarray(
                getattr(datamodule, "train_prior", None) or self.train_prior.cpu().numpy(), np.float64
            )
            if train_prior.sum() <= 0:
                raise ValueError("prior_adjustment=em needs the training prior (train first, or give the DataModule)")
            calibration = self._calibration(datamodule, train_prior)
            em_input = scores
            if calibration.mode != "none":
                em_input = calibration.posteriors(log_posteriors)
                if self.hparams.sequence_average:
                    em_input = self._sequence_average(em_input, index, datamodule)
                if labeled:  # calibration alone moves the decision too (the split's prior, class biases)
                    results[f"test/{name}_calibrated"] = grade(self.competition, em_input, targets)
            estimate = em_prior(
                em_input, calibration.reference_prior, prior_strength=float(self.hparams.em_prior_strength)
            )
            adjusted = estimate.posteriors
            if labeled:
                results[f"test/{name}_em"] = grade(self.competition, adjusted, targets)
            priors = {
                "method": "EM (Saerens et al. 2002)",
                "iterations": estimate.iterations,
                "converged": estimate.converged,
                "class_names": list(getattr(datamodule, "class_names", []) or []),
                "train_prior": train_prior.tolist(),
                "reference_prior": calibration.reference_prior.tolist(),
                "test_prior": estimate.prior.tolist(),
                "calibration": calibration.mode,
                "prior_strength": float(self.hparams.em_prior_strength),
            }
            if calibration.mode != "none":
                priors.update(
                    temperature=calibration.temperature,
                    biases=calibration.biases.tolist(),
                    calibration_split_prior=calibration.split_prior.tolist(),
                )
            if labeled:
                priors["true_test_prior"] = (np.bincount(targets, minlength=len(train_prior)) / len(targets)).tolist()
            if self.trainer.is_global_zero:
                atomic_write_json(Path(self.trainer.default_root_dir) / "priors.json", priors)
                names = priors["class_names"] or [str(c) for c in range(len(train_prior))]
                log_table(
                    self.trainer,
                    "test/priors",
                    ["class", "train_prior", "reference_prior", "em_test_prior"],
                    [
                        [n, float(a), float(r), float(b)]
                        for n, a, r, b in zip(names, train_prior, calibration.reference_prior, estimate.prior)
                    ],
                )
            scores_for_submission = adjusted
        else:
            scores_for_submission = scores
        for key, value in results.items():
            self.log(key, value, sync_dist=False)
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self._write_outputs(index, targets, scores_for_submission, datamodule)

    def _calibration(self, datamodule, train_prior: np.ndarray) -> PriorCalibration:
        """The posteriors EM works on and the prior they carry (tasks.fgvc.prior): ``ts`` / ``bcts`` fit
        on the validation split (its class frequencies become the prior); ``none``, or no labeled
        validation split, leaves the raw posteriors and the sampler's training prior."""
        mode = self.hparams.calibration
        datasets = getattr(datamodule, "datasets", {}) or {}
        if mode != "none" and ("val" not in datasets or len(datasets["val"]) == 0):
            log.warning("task.calibration=%s: no validation split to fit it on; EM uses raw posteriors", mode)
            mode = "none"
        if mode == "none":
            return fit_prior_calibration(np.zeros((0, len(train_prior))), np.zeros(0, np.int64), train_prior, "none")
        rows = [torch.zeros(0, 2 + len(train_prior), device=self.device)]
        with torch.inference_mode():
            # From folders every rank reads the whole split; from shards (a streaming loader) each rank reads
            # its own chunks: gathered and counted once by index, both give every rank the whole split.
            for images, targets, index in datamodule.val_dataloader():
                log_posteriors = self(images.to(self.device)).float().log_softmax(-1)
                rows.append(torch.cat([index.reshape(-1, 1), targets.reshape(-1, 1), log_posteriors.cpu()], 1))
        rows = first_of_each_index(gather_rows(torch.cat([r.cpu().float() for r in rows]).to(self.device)))
        return fit_prior_calibration(rows[:, 2:], rows[:, 1].astype(np.int64), train_prior, mode)

    def _sequence_average(self, scores: np.ndarray, index: np.ndarray, datamodule) -> np.ndarray:
        groups = getattr(datamodule, "test_groups", None)
        if not groups:
            raise ValueError("task.sequence_average=true but the data set gives no test sequences (test_groups)")
        keys = np.array([groups[i] for i in index])
        _, inverse = np.unique(keys, return_inverse=True)
        sums = np.zeros((inverse.max() + 1, scores.shape[1]))
        np.add.at(sums, inverse, scores)
        counts = np.bincount(inverse)[:, None]
        return (sums / counts)[inverse]

    def submission_labels(self, scores: np.ndarray) -> list[list[int]]:
        k = max(1, self.competition.k)
        return np.argsort(-scores, axis=1, kind="stable")[:, :k].tolist()

    def _write_outputs(self, index, targets, scores, datamodule) -> None:
        run_dir = Path(self.trainer.default_root_dir)
        ids = (getattr(datamodule, "ids", {}) or {}).get("test") or [
            str(i) for i in range(int(index.max(initial=-1)) + 1)
        ]
        label_ids = getattr(datamodule, "label_ids", None) or [str(c) for c in range(self.hparams.num_classes)]
        names = getattr(datamodule, "class_names", None) or label_ids
        chosen = self.submission_labels(scores)
        text = protocol.submission_text(
            self.competition, [ids[i] for i in index], [[label_ids[c] for c in row] for row in chosen]
        )
        atomic_write_text(run_dir / "submission.csv", text)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["index", "id", "target", "predicted", "predicted_name", "confidence"])
        for row, i in enumerate(index):
            top = int(np.argmax(scores[row]))
            target = (
                targets[row] if np.ndim(targets) == 1 else " ".join(str(c) for c in np.flatnonzero(targets[row] > 0.5))
            )
            writer.writerow([int(i), ids[i], target, top, names[top], f"{scores[row, top]:.6f}"])
        atomic_write_text(run_dir / "predictions.csv", buffer.getvalue())

    def on_fit_end(self) -> None:
        """Picture of the most confused class pairs of the last validation epoch (rank 0)."""
        if not self.trainer.is_global_zero or self._val_confusion is None or not self.hparams.confused_pairs:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or "val" not in getattr(datamodule, "datasets", {}):
            return
        pairs = confused_pairs(self._val_confusion, self.hparams.confused_pairs)
        if not pairs:
            return
        path = Path(self.trainer.default_root_dir) / "confused_pairs.png"
        image = render_confused_pairs(pairs, datamodule.datasets["val"], datamodule.class_names, path)
        log_image(self.trainer, "val/confused_pairs", image, ["most confused class pairs (validation)"])


class MultiLabelFineGrainedTask(FineGrainedTask):
    """Multi-label attributes (iMet 2019): binary cross-entropy per attribute; the F2 threshold is
    tuned on validation (best over a grid, :class:`tasks.fgvc.metrics.SampleF2`), kept in the
    checkpoint, and applied unchanged to the test split and the submission."""

    def __init__(
        self, backbone: str, num_classes: int, image_size: int, competition: str = "imet2019", **kwargs: Any
    ) -> None:
        if kwargs.get("prior_adjustment", "none") != "none" or kwargs.get("taxonomy"):
            raise ValueError("the multi-label task supports neither prior_adjustment nor taxonomy heads")
        super().__init__(backbone, num_classes, image_size, competition=competition, **kwargs)
        if self.competition.kind != "multilabel":
            raise ValueError(f"task.competition={competition!r} is not a multi-label competition")
        self.criterion = nn.BCEWithLogitsLoss()
        # A plain attribute saved in the checkpoint by the hooks below, not a buffer: an EMA copy of
        # the weights would keep a stale buffer.
        self.threshold = 0.5

    def _build_metrics(self) -> None:
        self.val_metrics = MetricCollection({"f2": SampleF2()}, prefix="val/")
        self.test_metrics = MetricCollection({"f2": SampleF2()}, prefix="test/")
        self.val_confusion = None

    def validation_step(self, batch, batch_idx: int) -> None:
        images, targets = batch[0], batch[1]
        logits = self(images)
        self.log("val/loss", self.criterion(logits, targets), sync_dist=True, batch_size=len(targets))
        self.val_metrics.update(logits.sigmoid(), targets)
        self.log_dict(self.val_metrics, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        selected = self.val_metrics["f2"].selected_threshold
        if selected is not None and not self.trainer.sanity_checking:
            self.threshold = float(selected)
            self.log("val/f2_threshold", float(selected))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["f2_threshold"] = float(self.threshold)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.threshold = float(checkpoint.get("f2_threshold", self.threshold))

    def predict_step(self, batch: dict, batch_idx: int) -> list[torch.Tensor]:
        """predict.py: per-attribute probabilities (sigmoid) of each image."""
        if not batch["inputs"]:
            return []
        return list(self(batch["image"]).float().sigmoid().cpu())

    def test_step(self, batch, batch_idx: int) -> None:
        images, targets, index = batch
        probs = self(images).float().sigmoid()
        self._test_outputs.append(torch.cat([index.reshape(-1, 1).float(), targets.float(), probs], 1).cpu())

    def _target_width(self) -> int:
        return self.hparams.num_classes

    def on_test_epoch_end(self) -> None:
        index, targets, scores = self.gathered_test_outputs()
        threshold = float(self.threshold)
        if len(targets) and bool((targets >= 0).all()):
            self.log("test/f2", grade(self.competition, scores, targets, threshold), sync_dist=False)
        self.log("test/f2_threshold", threshold, sync_dist=False)
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self._write_outputs(index, targets, scores, getattr(self.trainer, "datamodule", None))

    def submission_labels(self, scores: np.ndarray) -> list[list[int]]:
        predicted = protocol.threshold_predictions(scores, float(self.threshold))
        return [np.flatnonzero(row).tolist() for row in predicted]

    def on_fit_end(self) -> None:
        return None

    def sample_images(self, batch):
        images, targets = batch[0], batch[1]
        with torch.no_grad():
            predicted = self(images).sigmoid() > float(self.threshold)
        captions = [
            f"target {np.flatnonzero(t.cpu().numpy()).tolist()} / predicted {np.flatnonzero(p.cpu().numpy()).tolist()}"
            for t, p in zip(targets, predicted)
        ]
        return images, captions
