"""Collect one layer's activations over many images: one random spatial position per image, as in
the paper, streamed into memory-mapped ``.npy`` files so memory stays flat up to millions of
images, and resumable from an atomically written progress marker."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from core.io import atomic_write_json
from tasks.atlas.network import Classifier, LayerTap, spatial_view

log = logging.getLogger(__name__)

PROGRESS = "progress.json"
ARRAYS = ("activations", "labels", "indices", "positions", "attr_classes", "attr_values")


@dataclass
class ActivationStore:
    """The collected arrays of one atlas (memory-mapped, read-only) and what produced them.

    ``activations`` (N, C) float32; ``labels`` (N,); ``indices`` (N,) dataset index of each row;
    ``positions`` (N,) the flat spatial position taken; ``attr_classes`` / ``attr_values`` (N, K):
    the K classes with the highest logits and the activation x gradient attribution of the
    activation vector to each of those logits (one column of class -1 when attribution is off)."""

    root: Path
    activations: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    positions: np.ndarray
    attr_classes: np.ndarray
    attr_values: np.ndarray
    meta: dict

    @classmethod
    def open(cls, root: str | Path) -> ActivationStore:
        root = Path(root)
        marker = root / PROGRESS
        if not marker.exists():
            raise FileNotFoundError(f"{marker}: no activation collection here")
        meta = json.loads(marker.read_text())
        if not meta.get("complete"):
            raise ValueError(f"{marker}: collection is incomplete ({meta['done']}/{meta['num_samples']}); run it again to resume")
        arrays = {name: np.load(root / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
        return cls(root=root, meta=meta, **arrays)

    def class_attribution(self, class_index: int) -> np.ndarray:
        """Attribution of every row to ``class_index`` (0 where that class was not among the
        row's top-K logits, i.e. its logit was too low to matter)."""
        hit = self.attr_classes == class_index
        return np.where(hit, self.attr_values, 0.0).sum(1).astype(np.float32)


def _sample_plan(dataset_size: int, num_samples: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Which images, in which order, and a uniform number per image that fixes its position."""
    rng = np.random.default_rng(seed)
    n = dataset_size if num_samples is None else min(num_samples, dataset_size)
    indices = rng.permutation(dataset_size)[:n] if n < dataset_size else np.arange(dataset_size)
    return indices.astype(np.int64), rng.random(n)


def collect_activations(
    classifier: Classifier,
    layer: str,
    dataset: Dataset,
    out_dir: str | Path,
    num_samples: int | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    attribution_classes: int = 5,
    seed: int = 0,
    flush_every: int = 20,
) -> ActivationStore:
    """Run ``dataset`` (yielding ``(image, label)``) through the network and keep, for each image,
    the activation vector of ``layer`` at one random spatial position.

    With ``attribution_classes`` K > 0 the K highest logits are each differentiated with respect
    to that activation vector, and activation x gradient is stored (for class atlases). A second
    call with the same arguments resumes after the last flushed batch."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    indices, uniform = _sample_plan(len(dataset), num_samples, seed)
    n = len(indices)
    signature = {"layer": layer, "seed": seed, "num_samples": n, "dataset_size": len(dataset),
                 "attribution_classes": attribution_classes}
    marker = out_dir / PROGRESS
    done = 0
    arrays: dict[str, np.ndarray] = {}
    if marker.exists():
        meta = json.loads(marker.read_text())
        differs = {k: (meta.get(k), v) for k, v in signature.items() if meta.get(k) != v}
        if differs:
            raise ValueError(f"{marker}: an earlier collection with other settings {differs} is here; "
                             "choose another output folder or delete this one")
        if meta.get("complete"):
            return ActivationStore.open(out_dir)
        done = int(meta["done"])
        if done:
            arrays = {name: np.load(out_dir / f"{name}.npy", mmap_mode="r+") for name in ARRAYS}
            log.info("resuming activation collection at %d/%d", done, n)

    model = classifier.model.eval()
    k = min(attribution_classes, classifier.num_classes or attribution_classes)
    loader = DataLoader(Subset(dataset, indices[done:].tolist()), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers)
    tap = LayerTap(model, layer, grad_leaf=k > 0)
    try:
        for step, (images, labels) in enumerate(loader):
            rows = slice(done, done + len(labels))
            with torch.set_grad_enabled(k > 0):
                logits = model(images)
                acts = spatial_view(tap.leaf if k > 0 else tap.output)  # (B, C, P)
                pos = torch.from_numpy((uniform[rows] * acts.shape[2]).astype(np.int64))
                pos = pos.clamp_max(acts.shape[2] - 1)
                picked = acts[torch.arange(len(pos)), :, pos]  # (B, C)
                attr_classes = np.full((len(labels), max(k, 1)), -1, np.int64)
                attr_values = np.zeros((len(labels), max(k, 1)), np.float32)
                if k > 0:
                    top = logits.topk(k, dim=1).indices
                    for j in range(k):
                        grad, = torch.autograd.grad(logits.gather(1, top[:, j:j + 1]).sum(), tap.leaf,
                                                    retain_graph=j < k - 1)
                        g = spatial_view(grad)[torch.arange(len(pos)), :, pos]
                        attr_values[:, j] = (picked * g).sum(1).detach().numpy()
                    attr_classes[:] = top.numpy()
            if not arrays:
                arrays = _create_arrays(out_dir, n, picked.shape[1], k)
            arrays["activations"][rows] = picked.detach().float().numpy()
            arrays["labels"][rows] = np.asarray(labels)
            arrays["indices"][rows] = indices[rows]
            arrays["positions"][rows] = pos.numpy()
            arrays["attr_classes"][rows] = attr_classes
            arrays["attr_values"][rows] = attr_values
            done = rows.stop
            if (step + 1) % flush_every == 0 or done == n:
                _flush(arrays)
                atomic_write_json(marker, {**signature, "done": done, "channels": int(picked.shape[1]),
                                           "spatial_positions": int(acts.shape[2]), "complete": done == n})
    finally:
        tap.remove()
    if n == 0:
        raise ValueError("the data set is empty: no activations to collect")
    return ActivationStore.open(out_dir)


def _create_arrays(out_dir: Path, n: int, channels: int, k: int) -> dict[str, np.ndarray]:
    spec = {"activations": ((n, channels), np.float32), "labels": ((n,), np.int64),
            "indices": ((n,), np.int64), "positions": ((n,), np.int64),
            "attr_classes": ((n, max(k, 1)), np.int64), "attr_values": ((n, max(k, 1)), np.float32)}
    return {name: np.lib.format.open_memmap(out_dir / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
            for name, (shape, dtype) in spec.items()}


def _flush(arrays: dict[str, np.ndarray]) -> None:
    """Write dirty pages to disk before the progress marker says they are there."""
    for array in arrays.values():
        if isinstance(array, np.memmap):
            array.flush()
