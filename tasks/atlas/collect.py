"""Collect one layer's activations over many images: one random spatial position per image, drawn
as the collection notebook draws it, with its attribution to the logits, streamed into
memory-mapped ``.npy`` files so memory stays flat up to millions of images, and resumable from an
atomically written progress marker.

The published collection (lucid ``notebooks/activation-atlas/activation-atlas-collect.ipynb``)
takes, per image, ``n_x = randint(1, H)``, ``n_y = randint(1, W)`` ("one random position in the
image, minus the edges": row and column 0 are never drawn), keeps ``vec[0, n_x, n_y]``, and gets
its attribution to every logit (``softmax2_pre_activation``) as a forward-mode derivative: the
change of the logits when the layer moves by the activation at that one position,
``d_logit = J @ a_pos`` (the pushforward through ``tf.gradients`` twice, ``fwd_gradients``)."""

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
ARRAYS = ("activations", "labels", "indices", "positions", "attributions")


@dataclass
class ActivationStore:
    """The collected arrays of one atlas (memory-mapped, read-only) and what produced them.

    ``activations`` (N, C) float32; ``labels`` (N,); ``indices`` (N,) dataset index of each row;
    ``positions`` (N,) the flat spatial position taken (row * W + col); ``attributions`` (N, K):
    the attribution of the activation vector to each logit (K = the number of classes), i.e. the
    logits' directional derivative along the activation at that position (activation x gradient).
    With ``attribution_classes`` k > 0 only each row's k highest logits are attributed and the
    other columns are 0; with 0 there is one column of zeros."""

    root: Path
    activations: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    positions: np.ndarray
    attributions: np.ndarray
    meta: dict

    @classmethod
    def open(cls, root: str | Path) -> ActivationStore:
        root = Path(root)
        marker = root / PROGRESS
        if not marker.exists():
            raise FileNotFoundError(f"{marker}: no activation collection here")
        meta = json.loads(marker.read_text())
        if not meta.get("complete"):
            raise ValueError(
                f"{marker}: collection is incomplete ({meta['done']}/{meta['num_samples']}); run it again to resume"
            )
        arrays = {name: np.load(root / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
        return cls(root=root, meta=meta, **arrays)

    def class_attribution(self, class_index: int) -> np.ndarray:
        """Attribution of every row to ``class_index`` (0 where it was not attributed)."""
        if class_index >= self.attributions.shape[1]:
            return np.zeros(len(self.attributions), np.float32)
        return np.asarray(self.attributions[:, class_index], dtype=np.float32)


def _sample_plan(dataset_size: int, num_samples: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Which images, in which order, and two uniform numbers per image that fix its position."""
    rng = np.random.default_rng(seed)
    n = dataset_size if num_samples is None else min(num_samples, dataset_size)
    indices = rng.permutation(dataset_size)[:n] if n < dataset_size else np.arange(dataset_size)
    return indices.astype(np.int64), rng.random((n, 2))


def notebook_positions(uniform: np.ndarray, height: int, width: int) -> np.ndarray:
    """Flat positions ``row * width + col`` with row uniform in 1..height-1 and col in 1..width-1
    (the notebook's ``randint(1, H)``, ``randint(1, W)``); a side of length 1 gives 0."""

    def draw(u: np.ndarray, size: int) -> np.ndarray:
        if size <= 1:
            return np.zeros(len(u), np.int64)
        return 1 + np.minimum((u * (size - 1)).astype(np.int64), size - 2)

    return draw(uniform[:, 0], height) * width + draw(uniform[:, 1], width)


def _grid_shape(output: torch.Tensor) -> tuple[int, int]:
    """(H, W) of a layer output: a feature map's, a token sequence as one row, a vector as 1x1."""
    if output.dim() == 4:
        return int(output.shape[2]), int(output.shape[3])
    positions = spatial_view(output).shape[2]
    return 1, int(positions)


def collect_activations(
    classifier: Classifier,
    layer: str,
    dataset: Dataset,
    out_dir: str | Path,
    num_samples: int | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    attribution_classes: int | None = None,
    seed: int = 0,
    flush_every: int = 20,
) -> ActivationStore:
    """Run ``dataset`` (yielding ``(image, label)``) through the network and keep, for each image,
    the activation vector of ``layer`` at one random position (``notebook_positions``).

    ``attribution_classes``: ``None`` attributes every logit, as the notebook (one forward-mode
    derivative per batch, the double-backward form of ``fwd_gradients``); k > 0 only the k highest
    logits of each image (k backward passes; the other columns stay 0); 0 none. A second call
    with the same arguments resumes after the last flushed batch."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    indices, uniform = _sample_plan(len(dataset), num_samples, seed)
    n = len(indices)
    signature = {
        "layer": layer,
        "seed": seed,
        "num_samples": n,
        "dataset_size": len(dataset),
        "attribution_classes": attribution_classes,
        "positions": "notebook",
    }
    marker = out_dir / PROGRESS
    done = 0
    arrays: dict[str, np.ndarray] = {}
    if marker.exists():
        meta = json.loads(marker.read_text())
        differs = {k: (meta.get(k), v) for k, v in signature.items() if meta.get(k) != v}
        if differs:
            raise ValueError(
                f"{marker}: an earlier collection with other settings {differs} is here; "
                "choose another output folder or delete this one"
            )
        if meta.get("complete"):
            return ActivationStore.open(out_dir)
        done = int(meta["done"])
        if done:
            arrays = {name: np.load(out_dir / f"{name}.npy", mmap_mode="r+") for name in ARRAYS}
            log.info("resuming activation collection at %d/%d", done, n)

    model = classifier.model.eval()
    attribute = attribution_classes is None or attribution_classes > 0
    loader = DataLoader(
        Subset(dataset, indices[done:].tolist()), batch_size=batch_size, shuffle=False, num_workers=num_workers
    )
    tap = LayerTap(model, layer, grad_leaf=attribute)
    try:
        for step, (images, labels) in enumerate(loader):
            rows = slice(done, done + len(labels))
            with torch.set_grad_enabled(attribute):
                logits = model(images)
                output = tap.leaf if attribute else tap.output
                acts = spatial_view(output)  # (B, C, P)
                pos = torch.from_numpy(notebook_positions(uniform[rows], *_grid_shape(output)))
                batch = torch.arange(len(pos))
                picked = acts[batch, :, pos]  # (B, C)
                attributions = (
                    logit_attribution(logits, output, batch, pos, attribution_classes)
                    if attribute
                    else torch.zeros(len(pos), 1)
                )
            if not arrays:
                arrays = _create_arrays(out_dir, n, picked.shape[1], attributions.shape[1])
            arrays["activations"][rows] = picked.detach().float().numpy()
            arrays["labels"][rows] = np.asarray(labels)
            arrays["indices"][rows] = indices[rows]
            arrays["positions"][rows] = pos.numpy()
            arrays["attributions"][rows] = attributions.detach().float().numpy()
            done = rows.stop
            if (step + 1) % flush_every == 0 or done == n:
                _flush(arrays)
                atomic_write_json(
                    marker,
                    {
                        **signature,
                        "done": done,
                        "channels": int(picked.shape[1]),
                        "spatial_positions": int(acts.shape[2]),
                        "complete": done == n,
                    },
                )
    finally:
        tap.remove()
    if n == 0:
        raise ValueError("the data set is empty: no activations to collect")
    return ActivationStore.open(out_dir)


def logit_attribution(
    logits: torch.Tensor, leaf: torch.Tensor, batch: torch.Tensor, pos: torch.Tensor, top_k: int | None = None
) -> torch.Tensor:
    """(B, K) attribution of the activation at ``pos`` (one per image) to each logit: the
    directional derivative of the logits along that activation, ``J_c . a_pos`` = activation x
    gradient summed over channels. ``leaf`` is the layer output the logits were computed from
    (requires grad). ``top_k`` None: all logits at once, by the forward-mode trick of the notebook
    (``g = J^T v`` with a dummy ``v``, then the gradient of ``g . t`` with respect to ``v`` is
    ``J t``); k: the k highest logits of each image, by k backward passes, 0 elsewhere."""
    tangent = torch.zeros_like(leaf)
    flat = spatial_view(tangent)  # a view: writing it writes the tangent
    flat[batch, :, pos] = spatial_view(leaf)[batch, :, pos].detach()
    if top_k is None:
        dummy = torch.zeros_like(logits, requires_grad=True)
        (pulled,) = torch.autograd.grad(logits, leaf, grad_outputs=dummy, create_graph=True)
        (pushed,) = torch.autograd.grad(pulled, dummy, grad_outputs=tangent)
        return pushed
    k = min(top_k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    out = torch.zeros(logits.shape)
    for j in range(k):
        (grad,) = torch.autograd.grad(logits.gather(1, top[:, j : j + 1]).sum(), leaf, retain_graph=True)
        out[batch, top[:, j]] = (grad * tangent).flatten(1).sum(1).detach()
    return out


def _create_arrays(out_dir: Path, n: int, channels: int, num_logits: int) -> dict[str, np.ndarray]:
    spec = {
        "activations": ((n, channels), np.float32),
        "labels": ((n,), np.int64),
        "indices": ((n,), np.int64),
        "positions": ((n,), np.int64),
        "attributions": ((n, num_logits), np.float32),
    }
    return {
        name: np.lib.format.open_memmap(out_dir / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
        for name, (shape, dtype) in spec.items()
    }


def _flush(arrays: dict[str, np.ndarray]) -> None:
    """Write dirty pages to disk before the progress marker says they are there."""
    for array in arrays.values():
        if isinstance(array, np.memmap):
            array.flush()
