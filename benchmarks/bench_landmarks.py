"""Landmark system speed figures: global-descriptor extraction (images/s) and faiss index + search
time at 100k and 1M descriptors, flat (exact) vs approximate (IVF-Flat, HNSW), with the recall of
the approximate top-k against the flat top-k.

    python benchmarks/bench_landmarks.py [--backbones test_resnet resnet50] [--sizes 100000 1000000]
        [--dim 128] [--queries 1000] [--k 100] [--threads 1] [--hnsw-max 100000]

Descriptors are synthetic: unit vectors around random "landmark" centres (clustered like real
global descriptors), queries are noisy copies of database vectors.

    python benchmarks/bench_landmarks.py --d2r-run <run dir> [--settings "aggregation=rvlad retrieval=index" ...]

``--d2r-run``: the Detect-to-Retrieve settings compared on one trained run (its best checkpoint and
its own data config, from metrics.json and config_resolved.yaml): for each setting the test phase
is re-run and the validation-split figures (``val_split/*``: held-out training images as queries,
the rest as index, what a default is chosen by) are printed beside the test figures (the report)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def extraction_speed(backbone: str, image_size: int, batch: int, repeats: int) -> float:
    import torch

    from tasks.landmarks.model import GlobalDescriptor

    model = GlobalDescriptor(backbone, 128).eval()
    images = torch.rand(batch, 3, image_size, image_size)
    with torch.no_grad():
        model(images)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            model(images)
    return batch * repeats / (time.perf_counter() - start)


def clustered(n: int, dim: int, rng: np.random.Generator, centres: int = 10000) -> np.ndarray:
    c = rng.normal(size=(centres, dim)).astype(np.float32)
    x = c[rng.integers(0, centres, n)] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    """Share of the exact top-k ids that the approximate top-k also returns."""
    return float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx, exact)]))


# Settings compared by --d2r-run: d2r keys (aggregation, binary, retrieval, ...) or attention keys
# (max_features: 0 = every feature-map cell, no attention selection).
D2R_SETTINGS = [
    "aggregation=rasmk binary=true retrieval=index",
    "aggregation=rasmk binary=true retrieval=rerank",
    "aggregation=rvlad retrieval=index",
    "aggregation=rvlad retrieval=rerank",
    "aggregation=rasmk binary=false retrieval=index",
    "aggregation=rasmk binary=true retrieval=index max_features=0",
    "aggregation=rvlad retrieval=rerank max_features=0",
    "aggregation=rasmk binary=true retrieval=index codebook_size=512",
    "aggregation=rvlad retrieval=index codebook_size=512",
]
ATTENTION_KEYS = ("max_features", "score_threshold")


def _value(text: str):
    import yaml

    return yaml.safe_load(text)


def compare_d2r_settings(run_dir: Path, settings: list[str]) -> None:
    """Re-run the test phase of ``run_dir``'s best checkpoint under each D2R setting and print the
    validation-split and test figures."""
    import tempfile

    import pytorch_lightning as pl
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from core.checkpoint import load_task
    from core.resolvers import register_resolvers
    from tasks.landmarks.module import LandmarkRetrievalTask

    register_resolvers()
    warnings.filterwarnings("ignore")  # Lightning's hints would bury the table
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning_fabric").setLevel(logging.ERROR)
    cfg = OmegaConf.load(run_dir / "config_resolved.yaml")
    checkpoint = json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"]
    print(f"run {run_dir}\ncheckpoint {checkpoint}")
    datamodule = instantiate(cfg.data)
    header = ["val mAP@100", "val GAP", "test mAP Pub", "test mAP Priv", "test GAP Pub", "test GAP Priv"]
    print(f"{'setting':58s} | variant | " + " | ".join(header))
    for setting in settings:
        task = load_task(checkpoint, LandmarkRetrievalTask)
        for pair in setting.split():
            key, value = pair.split("=", 1)
            if key in ATTENTION_KEYS:
                task.att_cfg[key] = _value(value)
            else:
                task.d2r_cfg[key] = _value(value)
        with tempfile.TemporaryDirectory() as out:
            trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=out)
            start = time.perf_counter()
            trainer.test(task, datamodule=datamodule, verbose=False)
            took = time.perf_counter() - start
        r = task.test_results
        for variant in ("global", "d2r"):
            keys = [f"val_split/map100_{variant}", f"val_split/gap_{variant}"]
            keys += [f"test/map100_{variant}_public", f"test/map100_{variant}_private"]
            keys += [f"test/gap_{variant}_public", f"test/gap_{variant}_private"]
            row = " | ".join(f"{r.get(k, float('nan')):.4f}" for k in keys)
            print(f"{setting:58s} | {variant:7s} | {row}" + (f"   ({took:.0f} s)" if variant == "d2r" else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", default=["test_resnet", "resnet50"])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", type=int, default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--hnsw-max", type=int, default=100_000, help="skip HNSW above this size (build time)")
    parser.add_argument("--d2r-run", type=Path, default=None, help="compare D2R settings on this run instead")
    parser.add_argument("--settings", nargs="+", default=D2R_SETTINGS, help="with --d2r-run: 'key=value ...' each")
    args = parser.parse_args()

    import faiss
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    if args.d2r_run is not None:
        compare_d2r_settings(args.d2r_run, args.settings)
        return
    from tasks.landmarks.search import build_index, search

    print(f"threads={args.threads}")
    for backbone in args.backbones:
        speed = extraction_speed(backbone, args.image_size, args.batch, args.repeats)
        print(f"extraction {backbone:14s} {args.image_size}px batch {args.batch}: {speed:8.1f} img/s")

    rng = np.random.default_rng(0)
    for n in args.sizes:
        x = clustered(n, args.dim, rng)
        q = x[rng.integers(0, n, args.queries)] + 0.05 * rng.normal(size=(args.queries, args.dim)).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        exact = None
        kinds = [("flat", {}), ("ivf", {"nlist": int(4 * np.sqrt(n)), "nprobe": 16})]
        if n <= args.hnsw_max:
            kinds.append(("hnsw", {"hnsw_m": 32, "nprobe": 32}))
        for kind, kw in kinds:
            start = time.perf_counter()
            index = build_index(x, kind, **kw)
            built = time.perf_counter() - start
            start = time.perf_counter()
            _, ids = search(index, q, args.k)
            searched = time.perf_counter() - start
            if kind == "flat":
                exact = ids
            r = recall(ids, exact)
            print(
                f"n={n:>9,d} d={args.dim} {kind:4s} {kw}: build {built:7.2f} s, search {args.queries} queries "
                f"{searched:7.3f} s ({args.queries / searched:9.1f} q/s), recall@{args.k} vs flat {r:.4f}"
            )
        del x


if __name__ == "__main__":
    main()
