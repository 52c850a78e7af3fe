"""Landmark recognition and retrieval on Google-Landmarks-v2, with Detect-to-Retrieve.

Training: the global descriptor (model.GlobalDescriptor) with sub-center ArcFace on landmark ids
(pytorch-metric-learning's SubCenterArcFaceLoss; Deng et al., ECCV 2020); when ``attention`` is set,
DELF's attention head (model.AttentionHead) on the landmark classification loss; when ``detector``
is set, the landmark box detector (model.landmark_detector) on the images that have D2R boxes.
Validation: GAP of the ArcFace head's (landmark, cosine) on held-out training images.
Test: descriptors of the training images, index.csv and test.csv; retrieval = faiss search of the
index (optional alpha-QE), recognition = similarity-weighted vote of the ``knn`` nearest training
images. With ``d2r`` (local features: the attention's best cells, or every cell), the regional
descriptors (R-ASMK* / R-ASMK selective match kernel or R-VLAD, over the whole image and the
detected boxes) either search the whole index themselves (``retrieval: index``, the paper's way:
an inverted file for R-ASMK, a faiss index for R-VLAD) or re-score the global shortlist by global
similarity + ``fusion_weight`` x regional similarity (``retrieval: rerank``). GAP and mAP@100 are
logged for Public and Private (``test/<metric>_<variant>_<usage>``, variant ``global`` or ``d2r``),
and the same search on the validation split (held-out training images as queries, the other
training images as index and gallery) as ``val_split/<metric>_<variant>``, the figures a setting is
chosen by; submissions, a picture of queries with their top images and a results JSON go to the
run directory."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_metric_learning.losses import SubCenterArcFaceLoss
from torch import nn

from core.io import atomic_path, atomic_write_json, atomic_write_text
from core.media import log_image
from core.metrics import box_iou, current_rank, gather_objects
from core.optim import check_scheduler, configure_optimizers
from datamodules.gldv2 import TEST_SPLITS
from datamodules.gldv2_files import RECOGNITION, RETRIEVAL, USAGES, recognition_rows, retrieval_rows
from tasks.landmarks import d2r as d2r_lib
from tasks.landmarks import search as search_lib
from tasks.landmarks.metrics import GlobalAveragePrecision, MeanAveragePrecisionAtK
from tasks.landmarks.model import AttentionHead, GlobalDescriptor, landmark_detector
from tasks.landmarks.protocol import global_average_precision, mean_average_precision_at_k
from tasks.landmarks.visualize import NOT_RELEVANT, QUERY, RELEVANT, framed_thumbnail_rows

log = logging.getLogger(__name__)

VARIANTS = ("global", "d2r")
# D2R retrieval: the regional descriptors search the whole index, or re-rank the global shortlist.
D2R_RETRIEVAL = ("index", "rerank")
DEFAULT_ARCFACE = {"margin": 28.6, "scale": 30.0, "sub_centers": 3}
DEFAULT_SEARCH = {"index": "flat", "k": 100, "knn": 5, "query_expansion": False, "qe_top": 2, "qe_alpha": 3.0}
DEFAULT_DETECTOR = {"backbone": "test_resnet", "weight": 1.0, "score_threshold": 0.5, "max_regions": 3}
DEFAULT_ATTENTION = {"hidden": 512, "weight": 1.0, "max_features": 1000, "score_threshold": 0.0}
DEFAULT_D2R = {
    "aggregation": "rvlad",  # rvlad + rerank: chosen on the validation split (docs/landmarks.md)
    "binary": True,
    "retrieval": "rerank",
    "codebook_size": 64,
    "alpha": 3.0,
    "tau": 0.0,
    "fusion_weight": 1.0,
    "shortlist": 100,
    "codebook_images": 300,
}


def _csv_text(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def detector_recall(pairs: list[tuple[list, np.ndarray]], iou: float = 0.5) -> float:
    """Share of ground-truth boxes that a kept detection overlaps with IoU >= ``iou`` (relative
    x1 y1 x2 y2; the detections are those D2R aggregates: above the score threshold, at most
    ``max_regions``)."""
    found = total = 0
    for truth, detected in pairs:
        truth = np.asarray(truth, dtype=np.float64).reshape(-1, 4)
        total += len(truth)
        if len(detected):
            found += int((box_iou(truth, np.asarray(detected)).max(1) >= iou).sum())
    return found / total if total else float("nan")


class LandmarkRetrievalTask(pl.LightningModule):
    """Global descriptor + optional D2R detector for GLDv2 recognition and retrieval (see module doc).

    ``arcface``: {margin (degrees), scale, sub_centers}; ``detector``: null or {backbone, weight,
    score_threshold, max_regions}; ``attention``: null (every feature-map cell is a local feature)
    or {hidden, weight, max_features, score_threshold}; ``d2r``: null or {aggregation: rasmk|rvlad,
    binary (R-ASMK*), retrieval: index|rerank, codebook_size, alpha, tau, fusion_weight, shortlist,
    codebook_images}; ``search``: {index: flat|hnsw|ivf, k, knn, query_expansion, qe_top, qe_alpha}."""

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        image_size: int,
        embedding_dim: int = 128,
        gem_p: float = 3.0,
        pretrained: bool | str = False,
        arcface: dict[str, Any] | None = None,
        detector: dict[str, Any] | None = None,
        attention: dict[str, Any] | None = None,
        d2r: dict[str, Any] | None = None,
        search: dict[str, Any] | None = None,
        figure_queries: int = 4,
        figure_top: int = 5,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_scheduler(scheduler)
        self.save_hyperparameters()
        self.arc_cfg = {**DEFAULT_ARCFACE, **(arcface or {})}
        self.det_cfg = None if detector is None else {**DEFAULT_DETECTOR, **detector}
        self.att_cfg = None if attention is None else {**DEFAULT_ATTENTION, **attention}
        self.d2r_cfg = None if d2r is None else {**DEFAULT_D2R, **d2r}
        self.search_cfg = {**DEFAULT_SEARCH, **(search or {})}
        if self.search_cfg["index"] not in search_lib.INDEX_KINDS:
            raise ValueError(f"task.search.index={self.search_cfg['index']!r}: expected {search_lib.INDEX_KINDS}")
        if self.d2r_cfg is not None and self.d2r_cfg["aggregation"] not in d2r_lib.AGGREGATIONS:
            raise ValueError(f"task.d2r.aggregation={self.d2r_cfg['aggregation']!r}: expected rasmk or rvlad")
        if self.d2r_cfg is not None and self.d2r_cfg["retrieval"] not in D2R_RETRIEVAL:
            raise ValueError(f"task.d2r.retrieval={self.d2r_cfg['retrieval']!r}: expected one of {D2R_RETRIEVAL}")
        self.descriptor = GlobalDescriptor(backbone, embedding_dim, gem_p, pretrained)
        self.arcface = SubCenterArcFaceLoss(
            num_classes=num_classes,
            embedding_size=embedding_dim,
            margin=float(self.arc_cfg["margin"]),
            scale=float(self.arc_cfg["scale"]),
            sub_centers=int(self.arc_cfg["sub_centers"]),
        )
        self.detector = None
        if self.det_cfg is not None:
            self.detector = landmark_detector(self.det_cfg["backbone"], image_size)
        self.attention = None
        if self.att_cfg is not None:
            self.attention = AttentionHead(self.descriptor.local_dim, num_classes, int(self.att_cfg["hidden"]))
        self.val_gap = GlobalAveragePrecision()
        self.val_correct: list[float] = []
        self.test_metrics = nn.ModuleDict()
        for variant in VARIANTS:
            for usage in USAGES:
                self.test_metrics[f"gap_{variant}_{usage.lower()}"] = GlobalAveragePrecision()
                self.test_metrics[f"map100_{variant}_{usage.lower()}"] = MeanAveragePrecisionAtK(100)
        self._test_items: dict[int, list] = {}
        self.landmark_ids: list[int] = []

    # --- training -----------------------------------------------------------------------------
    def detector_loss(self, images: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor | None:
        """Faster R-CNN loss on the images of the batch that have boxes (None if none has)."""
        keep = [i for i, b in enumerate(boxes) if len(b)]
        if self.detector is None or not keep:
            return None
        h, w = images.shape[-2:]
        scale = torch.tensor([w, h, w, h], dtype=images.dtype, device=images.device)
        targets = [
            {
                "boxes": boxes[i].to(images) * scale,
                "labels": torch.ones(len(boxes[i]), dtype=torch.int64, device=images.device),
            }
            for i in keep
        ]
        self.detector.train()
        losses = self.detector([images[i] for i in keep], targets)
        return sum(losses.values())

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        descriptors, local = self.descriptor(batch["image"])
        loss = arc = self.arcface(descriptors, batch["label"])
        self.log("train/arcface", arc, prog_bar=True, batch_size=len(descriptors))
        if self.attention is not None:
            logits, _ = self.attention.logits(local)
            att = nn.functional.cross_entropy(logits, batch["label"])
            loss = loss + float(self.att_cfg["weight"]) * att
            self.log("train/attention", att, batch_size=len(descriptors))
        det = self.detector_loss(batch["image"], batch["boxes"])
        if det is not None:
            loss = loss + float(self.det_cfg["weight"]) * det
            self.log("train/detector", det, batch_size=len(descriptors))
        self.log("train/loss", loss, batch_size=len(descriptors))
        return loss

    def configure_optimizers(self):
        return configure_optimizers(self, self.hparams.optimizer, self.hparams.scheduler)

    # --- validation ---------------------------------------------------------------------------
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        descriptors, local = self.descriptor(batch["image"])
        cosine = self.arcface.get_cosine(descriptors)
        score, predicted = cosine.max(1)
        labels = batch["label"]
        if self.attention is not None:  # the attention's own classifier: is it learning landmarks?
            right = (self.attention.logits(local)[0].argmax(1) == labels).float().mean()
            self.log("val/attention_accuracy", right, sync_dist=True, batch_size=len(labels))
        self.val_gap.update(batch["index"], predicted, score, [[int(t)] for t in labels])
        self.val_correct.append(float((predicted == labels).float().mean()))

    def on_validation_epoch_end(self) -> None:
        self.log("val/gap", self.val_gap.compute().float(), prog_bar=True)
        self.val_gap.reset()

    # --- test ---------------------------------------------------------------------------------
    @torch.no_grad()
    def detect(self, images: torch.Tensor) -> list[np.ndarray]:
        """Relative landmark boxes (n, 4: x1 y1 x2 y2) per image, at most ``max_regions`` above
        ``score_threshold``; empty lists without a detector."""
        if self.detector is None:
            return [np.zeros((0, 4), np.float32) for _ in images]
        self.detector.eval()
        h, w = images.shape[-2:]
        out = []
        for det in self.detector(list(images)):
            keep = det["scores"] >= float(self.det_cfg["score_threshold"])
            boxes = det["boxes"][keep][: int(self.det_cfg["max_regions"])].float().cpu().numpy()
            out.append((boxes / np.array([w, h, w, h], dtype=np.float32)).clip(0, 1))
        return out

    def extract(self, images: torch.Tensor) -> list[dict[str, Any]]:
        """Descriptor, local features (float16, L2-normalised; the attention's best cells, or every
        cell without attention), their relative positions and the detected boxes of each image."""
        descriptors, local = self.descriptor(images)
        boxes = self.detect(images)
        scores = [None] * len(images)
        if self.attention is not None:
            scores = self.attention(local).float().cpu().numpy()
        att = self.att_cfg or {}
        out = []
        for d, loc, s, b in zip(descriptors, local.float().cpu().numpy(), scores, boxes):
            features, points = d2r_lib.select_local_features(
                loc, s, att.get("max_features"), float(att.get("score_threshold", 0.0))
            )
            local_half = features.astype(np.float16)
            out.append({"descriptor": d.float().cpu().numpy(), "local": local_half, "points": points, "boxes": b})
        return out

    def on_test_epoch_start(self) -> None:
        self._test_items = {k: [] for k in range(len(TEST_SPLITS))}

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        for index, item in zip(batch["index"].tolist(), self.extract(batch["image"])):
            self._test_items[dataloader_idx].append((index, item))

    def _gathered(self, split: int) -> tuple[list[int], list[dict[str, Any]]]:
        """(dataset positions, items) of a test split over all ranks, each position once."""
        items = dict(gather_objects(self._test_items.get(split, [])))
        keys = sorted(items)
        return keys, [items[i] for i in keys]

    def on_test_epoch_end(self) -> None:
        dm = self.trainer.datamodule
        (train_at, train), (index_at, index), (test_at, test) = (self._gathered(k) for k in range(len(TEST_SPLITS)))
        if len(test_at) < len(dm.ids["test"]) or len(index_at) < len(dm.ids["index"]):
            log.warning(
                "Only %d/%d test and %d/%d index images were extracted (limited test batches): the metrics "
                "cover those queries only and are not the official scores",
                len(test_at),
                len(dm.ids["test"]),
                len(index_at),
                len(dm.ids["index"]),
            )
        self.split_view = {
            "test_ids": [dm.ids["test"][i] for i in test_at],
            "index_ids": [dm.ids["index"][i] for i in index_at],
            "test_paths": [dm.datasets["test"].paths[i] for i in test_at],
            "index_paths": [dm.datasets["index"].paths[i] for i in index_at],
        }
        train_labels = np.asarray(dm.datasets["gallery_train"].labels)[train_at]
        landmark_ids = np.asarray(dm.landmark_ids)
        gallery_ids = [dm.ids["gallery_train"][n] for n in train_at]
        val_ids = set(dm.ids.get("val", []))
        is_val = np.array([i in val_ids for i in gallery_ids], dtype=bool)
        aggregator = self._aggregator([t for t, v in zip(train, is_val) if not v])
        train_side, index_side, test_side = (self._side(items, aggregator) for items in (train, index, test))
        outputs = self.search_all(test_side, index_side, train_side, train_labels)
        self._score(outputs, dm, landmark_ids)
        self._score_validation_split(train_side, train_labels, gallery_ids, is_val, landmark_ids)
        held_out = getattr(dm, "validation_boxes", {})
        if self.detector is not None and held_out:
            pairs = [(held_out[n], item["boxes"]) for n, item in zip(train_at, train) if n in held_out]
            recall = detector_recall(pairs)
            self.log("test/detector_recall50", recall, add_dataloader_idx=False)
            self.test_results["test/detector_recall50"] = recall
        if self.global_rank == 0:
            self._write_outputs(outputs, dm, landmark_ids)
        self._test_items = {}

    def _aggregator(self, codebook_items: list[dict[str, Any]]) -> d2r_lib.RegionalAggregator | None:
        """The regional aggregator with a k-means codebook on the local features of up to
        ``codebook_images`` training images (never a validation or test image); None without D2R."""
        cfg = self.d2r_cfg
        if cfg is None:
            return None
        rng = np.random.default_rng(0)
        chosen = rng.permutation(len(codebook_items))[: int(cfg["codebook_images"])]
        local = np.concatenate([codebook_items[i]["local"].astype(np.float32) for i in chosen])
        codebook = d2r_lib.fit_codebook(local, int(cfg["codebook_size"]))
        return d2r_lib.RegionalAggregator(codebook, float(cfg["alpha"]), float(cfg["tau"]), bool(cfg["binary"]))

    def _side(self, items: list[dict[str, Any]], aggregator) -> dict[str, Any]:
        """Global descriptors (n, d) and, with D2R, the regional representation of each image."""
        side = {"global": np.stack([t["descriptor"] for t in items]), "regional": None}
        if aggregator is not None:
            aggregation = self.d2r_cfg["aggregation"]
            side["regional"] = [
                aggregator.represent(aggregation, t["local"].astype(np.float32), t["points"], t["boxes"]) for t in items
            ]
        side["aggregator"] = aggregator
        return side

    @staticmethod
    def _subset(side: dict[str, Any], keep: np.ndarray) -> dict[str, Any]:
        regional = None if side["regional"] is None else [side["regional"][i] for i in np.flatnonzero(keep)]
        return {"global": side["global"][keep], "regional": regional, "aggregator": side["aggregator"]}

    def search_all(self, queries, database, gallery, gallery_labels) -> dict[str, dict[str, Any]]:
        """Rankings of ``database`` images and (landmark class, score) per query from a k-NN vote over
        ``gallery`` (labels ``gallery_labels``), per variant; each argument a ``_side``."""
        cfg = self.search_cfg
        g, x, q = gallery["global"], database["global"], queries["global"]
        index_db = search_lib.build_index(x, cfg["index"])
        gallery_db = search_lib.build_index(g, cfg["index"])
        shortlist = int((self.d2r_cfg or {}).get("shortlist", 0))
        k_ret, k_rec = max(int(cfg["k"]), shortlist), max(int(cfg["knn"]), shortlist)
        if cfg["query_expansion"]:
            ret_sims, ret_ids = search_lib.alpha_query_expansion(
                index_db, q, x, k_ret, int(cfg["qe_top"]), float(cfg["qe_alpha"])
            )
        else:
            ret_sims, ret_ids = search_lib.search(index_db, q, k_ret)
        rec_sims, rec_ids = search_lib.search(gallery_db, q, k_rec)
        out = {"global": self._rank(ret_sims, ret_ids, rec_sims, rec_ids, gallery_labels)}
        if self.d2r_cfg is not None:
            aggregator, aggregation = queries["aggregator"], self.d2r_cfg["aggregation"]
            regional_db = d2r_lib.RegionalIndex(aggregator, aggregation, database["regional"], cfg["index"])
            regional_gallery = d2r_lib.RegionalIndex(aggregator, aggregation, gallery["regional"], cfg["index"])
            qr = queries["regional"]
            if self.d2r_cfg["retrieval"] == "rerank":
                weight = float(self.d2r_cfg["fusion_weight"])
                ret_sims = ret_sims + weight * regional_db.similarity(qr, ret_ids)
                rec_sims = rec_sims + weight * regional_gallery.similarity(qr, rec_ids)
            else:
                ret_sims, ret_ids = regional_db.search(qr, int(cfg["k"]))
                rec_sims, rec_ids = regional_gallery.search(qr, int(cfg["knn"]))
            out["d2r"] = self._rank(ret_sims, ret_ids, rec_sims, rec_ids, gallery_labels)
        return out

    def _rank(self, ret_sims, ret_ids, rec_sims, rec_ids, train_labels) -> dict[str, Any]:
        k, knn = int(self.search_cfg["k"]), int(self.search_cfg["knn"])
        rankings, scores = [], []
        for sims, ids in zip(ret_sims, ret_ids):
            order = [o for o in np.argsort(-sims, kind="stable") if ids[o] >= 0][:k]
            rankings.append([int(i) for i in ids[order]])
            scores.append([float(v) for v in sims[order]])
        recognition = []
        for sims, ids in zip(rec_sims, rec_ids):
            order = np.argsort(-sims, kind="stable")[:knn]
            votes: dict[int, float] = {}
            for s, i in zip(sims[order], ids[order]):
                if i >= 0:
                    votes[int(train_labels[i])] = votes.get(int(train_labels[i]), 0.0) + float(s)
            if not votes:  # no gallery image matched (regional search): no prediction worth a score
                recognition.append((int(train_labels[0]), 0.0))
                continue
            best = max(votes, key=lambda c: (votes[c], -c))
            recognition.append((best, votes[best] / knn))
        return {"rankings": rankings, "scores": scores, "recognition": recognition}

    def _score_validation_split(self, gallery, labels, gallery_ids, is_val, landmark_ids: np.ndarray) -> None:
        """The test-time search with the validation split as queries (held-out training images) and
        the other training images as index and recognition gallery: mAP@100 (relevant = the images
        of the query's landmark) and GAP, logged as ``val_split/<metric>_<variant>``. Settings are
        chosen on these, never on the test figures."""
        if not is_val.any() or is_val.all():
            return
        queries, database = self._subset(gallery, is_val), self._subset(gallery, ~is_val)
        db_labels = labels[~is_val]
        db_ids = [i for i, v in zip(gallery_ids, is_val) if not v]
        val_ids = [i for i, v in zip(gallery_ids, is_val) if v]
        by_label: dict[int, list[str]] = {}
        for i, c in zip(db_ids, db_labels):
            by_label.setdefault(int(c), []).append(i)
        retrieval_truth = {q: by_label.get(int(c), []) for q, c in zip(val_ids, labels[is_val])}
        recognition_truth = {q: [int(landmark_ids[c])] for q, c in zip(val_ids, labels[is_val])}
        results = {}
        for variant, out in self.search_all(queries, database, database, db_labels).items():
            ranked = {q: [db_ids[i] for i in r] for q, r in zip(val_ids, out["rankings"])}
            predicted = {q: (int(landmark_ids[c]), s) for q, (c, s) in zip(val_ids, out["recognition"])}
            results[f"val_split/map100_{variant}"] = mean_average_precision_at_k(ranked, retrieval_truth)
            results[f"val_split/gap_{variant}"] = global_average_precision(predicted, recognition_truth)
        for key, value in results.items():  # the same on every rank: computed from gathered items
            self.log(key, value, sync_dist=False, add_dataloader_idx=False)
        self.test_results.update(results)

    def _score(self, outputs, dm, landmark_ids: np.ndarray) -> None:
        """Update and compute the test metrics (each rank its share of the queries; every rank
        computes); queries are numbered in sorted-id order, the official GAP tie-break."""
        test_ids, index_ids = self.split_view["test_ids"], self.split_view["index_ids"]
        order = {q: n for n, q in enumerate(sorted(dm.ids["test"]))}
        world, rank = self.trainer.world_size, current_rank()
        recognition, _ = dm.solutions.get(RECOGNITION, (None, None))
        retrieval, _ = dm.solutions.get(RETRIEVAL, (None, None))
        position = {q: n for n, q in enumerate(test_ids)}
        results = {}
        for variant, out in outputs.items():
            for usage in USAGES:
                name = usage.lower()
                if recognition and recognition[usage]:
                    metric = self.test_metrics[f"gap_{variant}_{name}"]
                    mine = [q for q in recognition[usage] if order[q] % world == rank and q in position]
                    preds = [out["recognition"][position[q]] for q in mine]
                    metric.update(
                        [order[q] for q in mine],
                        [int(landmark_ids[c]) for c, _ in preds],
                        [s for _, s in preds],
                        [recognition[usage][q] for q in mine],
                    )
                    self._compute_into(results, f"test/gap_{variant}_{name}", metric)
                if retrieval and retrieval[usage]:
                    metric = self.test_metrics[f"map100_{variant}_{name}"]
                    mine = [q for q in retrieval[usage] if order[q] % world == rank and q in position]
                    metric.update(
                        [order[q] for q in mine],
                        [[index_ids[i] for i in out["rankings"][position[q]]] for q in mine],
                        [retrieval[usage][q] for q in mine],
                    )
                    self._compute_into(results, f"test/map100_{variant}_{name}", metric)
        for key, value in results.items():
            self.log(key, value, sync_dist=False, add_dataloader_idx=False)
        self.test_results = results

    @staticmethod
    def _compute_into(results: dict[str, float], key: str, metric) -> None:
        """Compute on every rank; a subset with no scorable query (limited test batches) is left out."""
        try:
            results[key] = float(metric.compute())
        except ValueError as err:
            log.warning("%s not computed: %s", key, err)
        metric.reset()

    def _write_outputs(self, outputs, dm, landmark_ids: np.ndarray) -> None:
        run_dir = Path(self.trainer.default_root_dir)
        test_ids, index_ids = self.split_view["test_ids"], self.split_view["index_ids"]
        for variant, out in outputs.items():
            suffix = "" if variant == "global" else f"_{variant}"
            rec = {q: (int(landmark_ids[c]), s) for q, (c, s) in zip(test_ids, out["recognition"])}
            ret = {q: [index_ids[i] for i in ranking] for q, ranking in zip(test_ids, out["rankings"])}
            atomic_write_text(run_dir / f"submission_recognition{suffix}.csv", _csv_text(recognition_rows(rec)))
            atomic_write_text(run_dir / f"submission_retrieval{suffix}.csv", _csv_text(retrieval_rows(ret)))
        atomic_write_json(run_dir / "landmarks_results.json", getattr(self, "test_results", {}))
        best = "d2r" if "d2r" in outputs else "global"
        figure = self.retrieval_figure(dm, outputs[best])
        if figure is not None:
            with atomic_path(run_dir / "retrieval_examples.png") as tmp:
                figure.save(tmp, format="PNG")
            log_image(self, "test/retrieval_examples", [np.asarray(figure)])

    def retrieval_figure(self, dm, output: dict[str, Any], thumb: int = 96) -> Image.Image | None:
        """Rows of a landmark query (blue frame, its id) and its top retrieved index images, each
        captioned with its id, score and right / wrong (green / red frame) from the retrieval solution."""
        retrieval, _ = dm.solutions.get(RETRIEVAL, (None, None))
        if not retrieval:
            return None
        relevant = {q: set(v) for usage in USAGES for q, v in retrieval[usage].items()}
        test_ids, index_ids = self.split_view["test_ids"], self.split_view["index_ids"]
        rows = [n for n, q in enumerate(test_ids) if q in relevant][: int(self.hparams.figure_queries)]
        top = int(self.hparams.figure_top)
        if not rows:
            return None
        grid = []
        for n in rows:
            cells = [(self.split_view["test_paths"][n], QUERY, ["query", test_ids[n]])]
            for i, score in zip(output["rankings"][n][:top], output["scores"][n][:top]):
                good = index_ids[i] in relevant[test_ids[n]]
                caption = [f"{'right' if good else 'wrong'} {score:.3f}", index_ids[i]]
                cells.append((self.split_view["index_paths"][i], RELEVANT if good else NOT_RELEVANT, caption))
            grid.append(cells)
        return framed_thumbnail_rows(grid, thumb)

    @torch.no_grad()
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """predict.py: per image the descriptor and the ArcFace head's landmark class and cosine
        (tasks/landmarks/predict.py writes them)."""
        if not batch["inputs"]:
            return []
        descriptors, _ = self.descriptor(batch["image"])
        score, predicted = self.arcface.get_cosine(descriptors).max(1)
        return [
            {"descriptor": d.float().cpu().numpy(), "class": int(c), "score": float(s)}
            for d, c, s in zip(descriptors, predicted, score)
        ]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        ids = list(getattr(dm, "landmark_ids", []) or self.landmark_ids)
        checkpoint["landmark_ids"] = [int(i) for i in ids]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.landmark_ids = list(checkpoint.get("landmark_ids", []))
