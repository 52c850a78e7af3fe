"""The whole atlas, stage by stage: collect -> UMAP layout -> grid -> feature visualization ->
class atlases -> files (PNG, npz, JSON) and W&B images. Used by atlas.py and the callback."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import Dataset

from core.io import atomic_path, atomic_write_json
from core.media import log_image
from tasks.atlas.class_atlas import attribution_agreement, class_atlas
from tasks.atlas.collect import collect_activations
from tasks.atlas.featurevis import FeatureVisualizer
from tasks.atlas.grid import grid_cells
from tasks.atlas.layout import knn_accuracy, umap_layout, whitening_matrix
from tasks.atlas.network import Classifier
from tasks.atlas.render import compose_atlas, layout_scatter, save_png

log = logging.getLogger(__name__)


def atlas_dataset(datamodule: pl.LightningDataModule, split: str) -> Dataset:
    """The images of ``split`` with the DataModule's evaluation transform (no augmentation), so
    the atlas sees what the classifier sees at test time."""
    datamodule.prepare_data()
    datamodule.setup("fit")
    if hasattr(datamodule, "evaluation_dataset"):  # image DataModules, from folders or shards
        return datamodule.evaluation_dataset(split)
    datasets = getattr(datamodule, "datasets", None)
    if isinstance(datasets, dict):
        if split not in datasets:
            raise KeyError(f"split {split!r} not in the data set; it has {sorted(datasets)}")
        dataset = copy.copy(datasets[split])
        if hasattr(datamodule, "transform") and hasattr(dataset, "transform"):
            dataset.transform = datamodule.transform(False)
        return dataset
    return getattr(datamodule, f"{split}_dataloader")().dataset


class ActivationAtlas:
    """An activation atlas of ``layer`` (defaults: the published recipe, conf/atlas/default.yaml).

    ``num_samples`` images of the data set (all when null), one random position each; UMAP
    (``umap``: keyword arguments of ``umap_layout``) normalized to the unit square; a ``grid_size``
    grid keeping cells with at least ``min_count`` activations; icons by ``featurevis`` for the
    cells' mean activations, whitened by S = inv(A^T A / N) when ``whiten``. Class atlases for
    ``class_atlases`` (indices or names): the class's top ``class_top_n`` positive attributions and
    its winners, a fresh UMAP (``class_umap``, default ``umap``), a ``class_grid_size`` grid with
    ``class_min_count``, icons with ``class_cossim_pow`` and ``class_attempts``. Attribution goes to
    every logit (``attribution_classes: null``, as published) or to each image's top k."""

    def __init__(
        self,
        layer: str,
        featurevis: FeatureVisualizer,
        split: str = "train",
        num_samples: int | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        attribution_classes: int | None = None,
        umap: dict[str, Any] | None = None,
        grid_size: int = 20,
        min_count: int = 11,
        whiten: bool = True,
        top_classes: int = 3,
        class_atlases: Sequence[int | str] = (),
        class_top_n: int = 3000,
        class_grid_size: int = 8,
        class_min_count: int = 5,
        class_umap: dict[str, Any] | None = None,
        class_cossim_pow: float = 4.0,
        class_attempts: int = 2,
        agreement_cells: int = 5,
        knn_k: int = 5,
        seed: int = 0,
    ) -> None:
        if class_atlases and attribution_classes == 0:
            raise ValueError("class_atlases need attribution: set attribution_classes to null (every logit) or k > 0")
        self.layer = layer
        self.featurevis = featurevis
        self.split = split
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.attribution_classes = attribution_classes
        self.umap = dict(umap or {})
        self.grid_size = grid_size
        self.min_count = min_count
        self.whiten = whiten
        self.top_classes = top_classes
        self.class_atlases = list(class_atlases)
        self.class_top_n = class_top_n
        self.class_grid_size = class_grid_size
        self.class_min_count = class_min_count
        self.class_umap = dict(class_umap) if class_umap is not None else dict(self.umap)
        self.class_cossim_pow = class_cossim_pow
        self.class_attempts = class_attempts
        self.agreement_cells = agreement_cells
        self.knn_k = knn_k
        self.seed = seed

    def class_index(self, name: int | str, class_names: Sequence[str]) -> int:
        if isinstance(name, int) or str(name).isdigit():
            return int(name)
        if name not in class_names:
            raise KeyError(f"class_atlases: {name!r} is not a class of the data set; classes: {list(class_names)[:20]}")
        return list(class_names).index(name)

    def build(
        self,
        classifier: Classifier,
        dataset: Dataset,
        out_dir: str | Path,
        class_names: Sequence[str] = (),
        loggers: Sequence[Any] = (),
    ) -> dict[str, Any]:
        """Build the atlas into ``out_dir``; returns the summary also written to layout.json."""
        out_dir = Path(out_dir)
        timings: dict[str, float] = {}
        clock = time.perf_counter()
        store = collect_activations(
            classifier,
            self.layer,
            dataset,
            out_dir / "activations",
            self.num_samples,
            self.batch_size,
            self.num_workers,
            self.attribution_classes,
            self.seed,
        )
        timings["collect_s"], clock = time.perf_counter() - clock, time.perf_counter()
        labels = np.asarray(store.labels)
        num_classes = max(classifier.num_classes, int(labels.max()) + 1)
        names = list(class_names) or [str(c) for c in range(num_classes)]

        coords = umap_layout(store.activations, seed=self.seed, **self.umap)
        timings["umap_s"], clock = time.perf_counter() - clock, time.perf_counter()
        grid = grid_cells(coords, store.activations, self.grid_size, self.min_count, labels, num_classes)
        whitening = whitening_matrix(store.activations) if self.whiten else None
        timings["grid_s"], clock = time.perf_counter() - clock, time.perf_counter()
        icons = self.featurevis.render(classifier, self.layer, grid.means, whitening=whitening)
        timings["featurevis_s"], clock = time.perf_counter() - clock, time.perf_counter()

        save_png(compose_atlas(self.grid_size, grid.cells, icons.images), out_dir / "atlas.png")
        save_png(layout_scatter(coords, labels, names, self.grid_size, seed=self.seed), out_dir / "layout_scatter.png")
        knn = knn_accuracy(coords, labels, k=self.knn_k, seed=self.seed)
        chance = float(np.bincount(labels).max() / len(labels))
        summary: dict[str, Any] = {
            "layer": self.layer,
            "num_activations": len(labels),
            "channels": int(store.activations.shape[1]),
            "grid_size": self.grid_size,
            "min_count": self.min_count,
            "num_cells": len(grid.cells),
            "whitened": whitening is not None,
            "attribution_classes": self.attribution_classes,
            "knn_accuracy": knn,
            "knn_k": self.knn_k,
            "knn_chance": chance,
            "featurevis_objective": {
                "start_mean": float(icons.objective_start.mean()) if len(icons.objective_start) else None,
                "end_mean": float(icons.objective_end.mean()) if len(icons.objective_end) else None,
            },
            "cells": [
                {
                    "row": int(r),
                    "col": int(c),
                    "count": int(n),
                    "icon": i,
                    "top_classes": [{"class": k, "name": names[k], "count": m} for k, m in top],
                }
                for i, ((r, c), n, top) in enumerate(zip(grid.cells, grid.counts, grid.top_classes(self.top_classes)))
            ],
            "class_atlases": {},
        }
        arrays = {
            "coords": coords,
            "labels": labels,
            "indices": np.asarray(store.indices),
            "cells": grid.cells,
            "counts": grid.counts,
            "means": grid.means,
            "class_counts": grid.class_counts,
            "cell_of_sample": grid.cell_of_sample,
            "icons": icons.images,
        }
        if whitening is not None:
            arrays["whitening"] = whitening
        images = {"atlas": out_dir / "atlas.png", "layout": out_dir / "layout_scatter.png"}

        for name in self.class_atlases:
            c = self.class_index(name, names)
            try:
                atlas = class_atlas(
                    store.activations,
                    store.attributions,
                    labels,
                    c,
                    self.class_top_n,
                    self.class_grid_size,
                    self.class_min_count,
                    self.class_umap,
                    num_classes,
                    self.seed,
                )
            except ValueError as err:  # too few samples attribute to the class: say so, keep the rest
                log.warning("class atlas of %s skipped: %s", names[c], err)
                summary["class_atlases"][names[c]] = {"class": c, "skipped": str(err)}
                continue
            class_icons = self.featurevis.render(
                classifier,
                self.layer,
                atlas.grid.means,
                whitening=whitening,
                cossim_pow=self.class_cossim_pow,
                attempts=self.class_attempts,
            )
            path = out_dir / f"class_atlas_{c}_{_slug(names[c])}.png"
            save_png(compose_atlas(self.class_grid_size, atlas.grid.cells, class_icons.images), path)
            images[f"class_atlas/{names[c]}"] = path
            agreement = attribution_agreement(grid, labels, store.class_attribution(c), c, self.agreement_cells)
            summary["class_atlases"][names[c]] = {
                "class": c,
                "png": path.name,
                "grid_size": self.class_grid_size,
                **atlas.enrichment(labels),
                "cells": [
                    {"row": int(r), "col": int(col), "count": int(n), "attribution": float(a)}
                    for (r, col), n, a in zip(atlas.grid.cells, atlas.grid.counts, atlas.attribution)
                ],
                "top_attribution_cells_of_full_atlas": agreement,
            }
            arrays[f"class_{c}_indices"] = atlas.indices
            arrays[f"class_{c}_coords"] = atlas.coords
            arrays[f"class_{c}_cells"] = atlas.grid.cells
            arrays[f"class_{c}_attribution"] = atlas.attribution
            arrays[f"class_{c}_icons"] = class_icons.images
        timings["class_atlases_s"] = time.perf_counter() - clock
        summary["timings"] = timings

        with atomic_path(out_dir / "layout.npz") as tmp:
            np.savez_compressed(tmp, **arrays)
        atomic_write_json(out_dir / "layout.json", summary)
        log_atlas_images(loggers, images)
        log.info(
            "atlas of %s: %d cells, kNN accuracy of the layout %.3f (chance %.3f) -> %s",
            self.layer,
            len(grid.cells),
            knn,
            chance,
            out_dir,
        )
        return summary


def log_atlas_images(loggers: Sequence[Any], images: dict[str, Path]) -> None:
    """Send the atlas PNGs to every logger among ``loggers`` that takes images (core.media)."""
    for key, path in images.items():
        log_image(list(loggers), f"atlas/{key}", path)


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")[:40] or "class"
