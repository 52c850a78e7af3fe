"""Domain-specific transfer learning: Cui, Song, Sun, Howard & Belongie, "Large Scale Fine-Grained
Categorization and Domain-Specific Transfer Learning" (CVPR 2018), Sec. 4.

A domain is a set of classes, each represented by the mean feature g(c) of its images under a
trained network and weighted by its share of the domain's images. The distance of a source domain S
to a target domain T is the Earth Mover's Distance with ground distance d_ij = ||g(s_i) - g(t_j)||:

    d(S, T) = EMD(S, T) = sum_ij f_ij d_ij / sum_ij f_ij,  f the optimal flow between the weights,

and the domain similarity is sim(S, T) = exp(-gamma d(S, T)) with gamma = 0.01 (their Eq. 2).
The pre-training subset is chosen by it: every source class is ranked by its similarity to the
target (a one-class domain), and the top classes (or the best source data set) are kept.

Command (features from a checkpoint of this project; data sets named by their data configs):

    python -m tasks.fgvc.transfer --ckpt run/checkpoints/last.ckpt \
        --source data=inaturalist2019 --target data=icassava2019 --top-k 20 --out subset.json
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import linprog

log = logging.getLogger(__name__)

GAMMA = 0.01  # Cui et al. 2018, Sec. 4.1


@dataclass
class Domain:
    """Per-class mean features (K, D) and image counts (K,) of one data set."""

    features: np.ndarray
    counts: np.ndarray
    names: list[str]

    @property
    def weights(self) -> np.ndarray:
        counts = np.asarray(self.counts, np.float64)
        return counts / counts.sum()


def emd(weights_a: np.ndarray, weights_b: np.ndarray, cost: np.ndarray) -> float:
    """Earth Mover's Distance between two weight vectors under a ground-cost matrix, as a
    transportation linear program (scipy's HiGHS): min sum f_ij c_ij subject to row sums = a, column
    sums = b, f >= 0, normalized by the total flow. Weights are normalized to sum to 1 first."""
    a = np.asarray(weights_a, np.float64)
    b = np.asarray(weights_b, np.float64)
    cost = np.asarray(cost, np.float64)
    if a.sum() <= 0 or b.sum() <= 0 or (a < 0).any() or (b < 0).any():
        raise ValueError("EMD weights must be non-negative with a positive sum")
    if cost.shape != (len(a), len(b)):
        raise ValueError(f"cost matrix {cost.shape} does not match weights {len(a)} x {len(b)}")
    a, b = a / a.sum(), b / b.sum()
    n, m = len(a), len(b)
    rows = np.zeros((n, n * m))
    for i in range(n):
        rows[i, i * m : (i + 1) * m] = 1.0
    cols = np.zeros((m, n * m))
    for j in range(m):
        cols[j, j::m] = 1.0
    # One equality is redundant (both sides sum to 1); HiGHS copes with it.
    result = linprog(
        cost.reshape(-1),
        A_eq=np.vstack([rows, cols]),
        b_eq=np.concatenate([a, b]),
        bounds=(0, None),
        method="highs",
    )
    if not result.success:
        raise RuntimeError(f"EMD linear program failed: {result.message}")
    flow = result.x
    return float(flow @ cost.reshape(-1) / flow.sum())


def ground_distance(features_a: np.ndarray, features_b: np.ndarray) -> np.ndarray:
    """Euclidean distances between every row of ``features_a`` and every row of ``features_b``."""
    a = np.asarray(features_a, np.float64)
    b = np.asarray(features_b, np.float64)
    return np.sqrt(np.clip((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0, None))


def domain_distance(source: Domain, target: Domain) -> float:
    return emd(source.weights, target.weights, ground_distance(source.features, target.features))


def domain_similarity(source: Domain, target: Domain, gamma: float = GAMMA) -> float:
    """sim(S, T) = exp(-gamma EMD(S, T))."""
    return float(np.exp(-gamma * domain_distance(source, target)))


def rank_source_classes(source: Domain, target: Domain, gamma: float = GAMMA) -> list[dict]:
    """Every source class as a one-class domain, ranked by similarity to the target (best first)."""
    cost = ground_distance(source.features, target.features)
    rows = []
    for k, name in enumerate(source.names):
        distance = emd(np.ones(1), target.weights, cost[k : k + 1])
        rows.append(
            {
                "class_index": k,
                "class_name": name,
                "images": int(source.counts[k]),
                "emd": distance,
                "similarity": float(np.exp(-gamma * distance)),
            }
        )
    return sorted(rows, key=lambda r: (-r["similarity"], r["class_index"]))


def rank_source_datasets(sources: dict[str, Domain], target: Domain, gamma: float = GAMMA) -> list[dict]:
    rows = [
        {"source": name, "emd": domain_distance(d, target), "classes": len(d.names), "images": int(d.counts.sum())}
        for name, d in sources.items()
    ]
    for row in rows:
        row["similarity"] = float(np.exp(-gamma * row["emd"]))
    return sorted(rows, key=lambda r: -r["similarity"])


def choose_subset(ranking: Sequence[dict], top_k: int | None = None, max_images: int | None = None) -> list[dict]:
    """The best-ranked classes: the first ``top_k``, or as many as fit within ``max_images``."""
    if top_k is None and max_images is None:
        raise ValueError("give top_k or max_images")
    chosen, images = [], 0
    for row in ranking:
        if top_k is not None and len(chosen) >= top_k:
            break
        if max_images is not None and images + row["images"] > max_images and chosen:
            break
        chosen.append(row)
        images += row["images"]
    return chosen


# --- features from a trained network ---------------------------------------------------------------


def class_features(model, loader, num_classes: int, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Mean pre-logit feature per class and image counts per class over ``loader``'s (image, label)
    batches. Classes without images get a zero feature and count 0."""
    import torch

    sums, counts = None, np.zeros(num_classes, np.int64)
    model.eval().to(device)
    with torch.no_grad():
        for batch in loader:
            images, labels = batch[0].to(device), batch[1]
            feats = model.forward_head(model.forward_features(images), pre_logits=True).double().cpu()
            if sums is None:
                sums = torch.zeros(num_classes, feats.shape[1], dtype=torch.float64)
            sums.index_add_(0, labels.long(), feats)
            counts += np.bincount(labels.numpy(), minlength=num_classes)
    means = sums.numpy() / np.clip(counts, 1, None)[:, None]
    return means, counts


def load_network(ckpt: str | Path):
    """The timm network of a checkpoint of this project (classification or FGVC task)."""
    from core.checkpoint import load_task, read_checkpoint
    from tasks.classification.module import ImageClassificationTask
    from tasks.fgvc.module import FineGrainedTask

    hparams = read_checkpoint(ckpt).get("hyper_parameters") or {}
    cls = FineGrainedTask if "competition" in hparams else ImageClassificationTask
    return load_task(ckpt, cls).model


def datamodule_from_overrides(overrides: list[str]):
    """A DataModule built from conf/train.yaml with ``overrides`` (e.g. ``data=icassava2019``)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    from core.resolvers import PROJECT_ROOT, register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def domain_of(
    model, datamodule, split: str = "train", device: str = "cpu", batch_size: int = 64
) -> tuple[Domain, np.ndarray]:
    """The domain of a DataModule's split (classes with images only) and those classes' indices."""
    from torch.utils.data import DataLoader

    dataset = datamodule.datasets[split]
    dataset.transform = datamodule.transform(False)  # features of the images, not of augmentations
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    means, counts = class_features(model, loader, datamodule.num_classes, device)
    keep = counts > 0
    names = [n for n, k in zip(datamodule.class_names, keep) if k]
    return Domain(means[keep], counts[keep], names), np.flatnonzero(keep)


def main(argv: list[str] | None = None) -> int:
    from core.io import atomic_write_json

    parser = argparse.ArgumentParser(
        description="Rank source classes / data sets for a target by EMD domain similarity."
    )
    parser.add_argument("--ckpt", required=True, help="checkpoint whose network gives the features")
    parser.add_argument(
        "--source",
        action="append",
        required=True,
        help="overrides of one source data set, e.g. 'data=inaturalist2019 data.root=...'; repeat to rank data sets",
    )
    parser.add_argument("--target", required=True, help="overrides of the target data set")
    parser.add_argument("--top-k", type=int, default=None, help="keep this many source classes")
    parser.add_argument("--max-images", type=int, default=None, help="or as many classes as fit in this many images")
    parser.add_argument("--gamma", type=float, default=GAMMA)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True, help="JSON file for the ranking and the chosen subset")
    args = parser.parse_args(argv)

    model = load_network(args.ckpt)
    target_dm = datamodule_from_overrides(shlex.split(args.target))
    target, _ = domain_of(model, target_dm, device=args.device)
    sources, source_rankings = {}, {}
    for spec in args.source:
        dm = datamodule_from_overrides(shlex.split(spec))
        domain, indices = domain_of(model, dm, device=args.device)
        sources[spec] = domain
        ranking = rank_source_classes(domain, target, args.gamma)
        for row in ranking:  # back to the data set's own class index
            row["class_index"] = int(indices[row["class_index"]])
        source_rankings[spec] = ranking
    datasets = rank_source_datasets(sources, target, args.gamma)
    best = datasets[0]["source"]
    chosen = (
        choose_subset(source_rankings[best], args.top_k, args.max_images)
        if (args.top_k or args.max_images)
        else source_rankings[best]
    )
    record = {
        "target": args.target,
        "gamma": args.gamma,
        "checkpoint": str(args.ckpt),
        "datasets": datasets,
        "source": best,
        "chosen_classes": [r["class_index"] for r in chosen],
        "chosen_images": int(sum(r["images"] for r in chosen)),
        "ranking": source_rankings[best],
    }
    atomic_write_json(args.out, record)
    for row in datasets:
        print(f"{row['similarity']:.4f}  EMD {row['emd']:.3f}  {row['source']}")
    print(f"chose {len(chosen)} classes ({record['chosen_images']} images) of {best} -> {args.out}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
