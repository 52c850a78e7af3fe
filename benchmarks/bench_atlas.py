"""Time and peak memory of each activation-atlas stage (collect, UMAP, grid, feature visualization).

    python benchmarks/bench_atlas.py                      # 10k and 100k activations
    python benchmarks/bench_atlas.py --sizes 10000 --collect-max 10000 --threads 1

Each stage runs in its own process, so its peak RSS (ru_maxrss) is its own; ``base`` is the RSS
of that process after imports, before the stage. Collection runs the real network (tinynet_e,
64 px, random weights: speed does not depend on them) over generated images up to --collect-max;
UMAP and the grid run on synthetic clustered activations of the collected width, so the 100k
figures need no 100k-image collection. Feature visualization time depends on the number of
cells and steps, not on N: it is measured for --icons icons x --steps steps and reported per
icon-step too.

    python benchmarks/bench_atlas.py --compare-presets <atlas run dir> --ckpt <checkpoint> --out icons.png

renders the first --icons cells of a finished atlas (its layout.npz: cell means and whitening
matrix) with the published preset (conf/atlas/default.yaml) and the CPU preset (atlas=cpu), prints
the seconds each took, and writes one PNG: the published icons in the top row, the CPU preset's
below, each at its own size."""

from __future__ import annotations

import argparse
import functools
import json
import operator
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_activations(n: int, channels: int, classes: int = 10, seed: int = 0):
    """Clustered non-negative vectors, like post-activation features of ``classes`` classes."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.gamma(1.0, 1.0, (classes, channels)).astype(np.float32)
    labels = rng.integers(0, classes, n)
    acts = np.empty((n, channels), np.float32)
    for start in range(0, n, 65536):
        stop = min(n, start + 65536)
        noise = rng.gamma(1.0, 0.7, (stop - start, channels)).astype(np.float32)
        acts[start:stop] = centres[labels[start:stop]] + noise
    return acts, labels


def stage(name: str, n: int, args) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    if name == "collect":
        from torch.utils.data import Dataset

        from tasks.atlas.collect import collect_activations
        from tasks.atlas.network import load_classifier

        class GeneratedImages(Dataset):
            def __len__(self):
                return n

            def __getitem__(self, i):
                g = torch.Generator().manual_seed(i)
                return torch.rand(3, 64, 64, generator=g), i % 10

        classifier = load_classifier(backbone="tinynet_e", num_classes=10)
        base = rss_mb()
        start = time.perf_counter()
        k = None if args.attribution_classes == "all" else int(args.attribution_classes)
        store = collect_activations(
            classifier, args.layer, GeneratedImages(), work / f"collect_{n}", batch_size=64, attribution_classes=k
        )
        extra = {"channels": int(store.activations.shape[1]), "attribution_classes": args.attribution_classes}
    elif name == "umap":
        from tasks.atlas.layout import umap_layout

        acts, labels = synthetic_activations(n, args.channels)
        base = rss_mb()
        start = time.perf_counter()
        coords = umap_layout(acts, n_neighbors=20, min_dist=0.01, fit_size=args.fit_size)
        np.save(work / f"coords_{n}.npy", coords)
        np.save(work / f"labels_{n}.npy", labels)
        extra = {"fit_size": args.fit_size}
    elif name == "grid":
        from tasks.atlas.grid import grid_cells

        acts, labels = synthetic_activations(n, args.channels)
        path = work / f"acts_{n}.npy"
        np.save(path, acts)
        del acts
        coords = np.random.default_rng(0).random((n, 2)).astype(np.float32)
        memmap = np.load(path, mmap_mode="r")
        base = rss_mb()
        start = time.perf_counter()
        grid = grid_cells(coords, memmap, 20, 3, labels, 10)
        extra = {"cells": len(grid.cells)}
    elif name == "featurevis":
        from tasks.atlas.featurevis import FeatureVisualizer
        from tasks.atlas.network import load_classifier

        classifier = load_classifier(backbone="tinynet_e", num_classes=10)
        directions = torch.rand(args.icons, args.channels)
        base = rss_mb()
        start = time.perf_counter()
        FeatureVisualizer(icon_size=64, steps=args.steps, batch_size=64, transforms="standard", cossim_pow=1).render(
            classifier, args.layer, directions
        )
        extra = {"icons": args.icons, "steps": args.steps}
    else:
        raise ValueError(name)
    seconds = time.perf_counter() - start
    return {
        "stage": name,
        "n": n,
        "seconds": round(seconds, 2),
        "base_rss_mb": round(base),
        "peak_rss_mb": round(rss_mb()),
        **extra,
    }


def compare_presets(atlas_dir: Path, args) -> None:
    """Icons of the published preset next to the CPU preset's, for the same cells."""
    import numpy as np
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from PIL import Image

    from core.resolvers import register_resolvers
    from tasks.atlas.network import load_classifier
    from tasks.atlas.render import save_png

    register_resolvers()
    torch.set_num_threads(args.threads)
    arrays = np.load(atlas_dir / "layout.npz")
    directions, whitening = arrays["means"][: args.icons], arrays["whitening"]
    classifier = load_classifier(ckpt_path=args.ckpt)
    rows = []
    print(f"{'preset':<10}{'icon px':>8}{'steps':>7}{'attempts':>9}{'transforms':>11}{'seconds':>9}{'s/icon':>8}")
    for preset in ("default", "cpu"):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("atlas", overrides=[f"atlas={preset}", "data.batch_size=64", "data.num_workers=0"])
        visualizer = instantiate(cfg.atlas.featurevis)
        start = time.perf_counter()
        icons = visualizer.render(classifier, cfg.atlas.layer, directions, whitening=whitening)
        seconds = time.perf_counter() - start
        print(
            f"{preset:<10}{visualizer.icon_size:>8}{visualizer.steps:>7}{visualizer.attempts:>9}"
            f"{visualizer.transforms:>11}{seconds:>9.1f}{seconds / len(directions):>8.2f}",
            flush=True,
        )
        rows.append(icons.images)
    size = max(r.shape[1] for r in rows)
    canvas = np.full((2 * size, len(directions) * size, 3), 255, np.uint8)
    for r, icons in enumerate(rows):
        for i, icon in enumerate(icons):
            canvas[r * size : r * size + icon.shape[0], i * size : i * size + icon.shape[1]] = icon
    save_png(Image.fromarray(canvas), args.out)
    print(f"wrote {args.out}: top row atlas=default (published), bottom row atlas=cpu; same {len(directions)} cells")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--stages", nargs="+", default=["collect", "umap", "grid", "featurevis"])
    parser.add_argument("--collect-max", type=int, default=10_000, help="largest N to collect for real")
    parser.add_argument("--layer", default="blocks.4")
    parser.add_argument(
        "--channels", type=int, default=56, help="width of synthetic activations (tinynet_e blocks.4: 56)"
    )
    parser.add_argument("--attribution-classes", default="all", help="'all' (every logit, as published) or k")
    parser.add_argument("--fit-size", type=int, default=None, help="UMAP fit subset (null: fit on all)")
    parser.add_argument("--icons", type=int, default=64)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    parser.add_argument("--compare-presets", metavar="ATLAS_DIR", default=None)
    parser.add_argument("--ckpt", default=None, help="classification checkpoint of that atlas (--compare-presets)")
    parser.add_argument("--out", default="atlas_presets.png", help="comparison PNG (--compare-presets)")
    parser.add_argument("--child", nargs=2, metavar=("STAGE", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(stage(args.child[0], int(args.child[1]), args)), flush=True)
        return
    if args.compare_presets:
        compare_presets(Path(args.compare_presets), args)
        return
    with tempfile.TemporaryDirectory(prefix="bench_atlas_") as work:
        print(f"{'stage':<11}{'N':>8}{'seconds':>10}{'base MB':>9}{'peak MB':>9}  notes")
        for name in args.stages:
            for n in args.sizes if name != "featurevis" else args.sizes[:1]:
                if name == "collect" and n > args.collect_max:
                    print(f"{name:<11}{n:>8}{'skipped':>10}  (> --collect-max; scale the 10k rate)")
                    continue
                cmd = [
                    sys.executable,
                    __file__,
                    "--child",
                    name,
                    str(n),
                    "--work",
                    work,
                    *functools.reduce(
                        operator.iadd,
                        [
                            [f"--{k.replace('_', '-')}", str(v)]
                            for k, v in vars(args).items()
                            if k in ("layer", "channels", "attribution_classes", "icons", "steps", "threads")
                        ],
                        [],
                    ),
                    *(["--fit-size", str(args.fit_size)] if args.fit_size else []),
                ]
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                if proc.returncode != 0 or not lines:
                    print(f"{name:<11}{n:>8}    failed: {proc.stderr[-800:]}")
                    continue
                r = json.loads(lines[-1][7:])
                notes = {k: v for k, v in r.items() if k not in ("stage", "n", "seconds", "base_rss_mb", "peak_rss_mb")}
                if name == "featurevis":
                    notes["ms_per_icon_step"] = round(1000 * r["seconds"] / (r["icons"] * r["steps"]), 1)
                if name == "collect":
                    notes["images_per_s"] = round(n / r["seconds"], 1)
                print(
                    f"{name:<11}{r['n']:>8}{r['seconds']:>10}{r['base_rss_mb']:>9}{r['peak_rss_mb']:>9}  {notes}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
