"""Loose JPEG files against LitData shards: images per second into the model, with a cold and a warm
page cache, the time to pack, and the files opened per image.

    python benchmarks/bench_shards.py [--root /tmp/bench_shards] [--per-class 5000] [--workers 2]

Generates (once) an ImageNet-layout folder of 10 x ``--per-class`` small JPEGs (64 px, the shapes
generator), packs it with ``datamodules.pack``, then runs one training epoch of the DataModule's train
loader (its timm train transforms, ``--workers`` loader processes, one torch thread) from the folder
and from the shards. Cold: the page cache of every file read is dropped first (``echo 3 >
/proc/sys/vm/drop_caches`` when permitted, else ``posix_fadvise(DONTNEED)`` on each file, which drops
their clean pages without privileges). Opens: ``open`` audit events per image in one process. Prints
the load average beside the figures: the machine is shared."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from datamodules.image_folder import ImageFolderDataModule
from datamodules.pack import pack
from datamodules.synthetic.image_folder import write_image_folder


def drop_page_cache(folders: list[Path]) -> str:
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return "drop_caches"
    except OSError:
        for folder in folders:
            for path in folder.rglob("*"):
                if path.is_file():
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    finally:
                        os.close(fd)
        return "posix_fadvise(DONTNEED) per file (drop_caches not permitted)"


def epoch_rate(dm: ImageFolderDataModule) -> tuple[float, int]:
    """Images per second of one pass over the train loader (every batch reaches the caller)."""
    started, seen = time.perf_counter(), 0
    for images, _ in dm.train_dataloader():
        seen += len(images)
    return seen / (time.perf_counter() - started), seen


def opens_per_image(dm: ImageFolderDataModule, images: int) -> float:
    """``open`` audit events (builtins.open, io.open, os.open) per image loaded, in this process."""
    count = [0]
    counting = [False]

    def hook(event: str, args: tuple) -> None:
        if counting[0] and event == "open":
            count[0] += 1

    sys.addaudithook(hook)
    dm.num_workers = 0
    loader = dm.train_dataloader()
    counting[0], seen = True, 0
    for batch, _ in loader:
        seen += len(batch)
        if seen >= images:
            break
    counting[0] = False
    return count[0] / seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/tmp/bench_shards")
    parser.add_argument("--per-class", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(args.root)
    folder, shards = root / "images", root / "shards"
    if not (folder / "test").exists():
        started = time.perf_counter()
        write_image_folder(folder, 10, args.per_class, 10, 10, image_size=64)
        print(f"generated {10 * args.per_class} train JPEGs in {time.perf_counter() - started:.0f} s")
    common = dict(root=str(folder), num_classes=10, image_size=64, batch_size=args.batch_size,
                  num_workers=args.workers, augment={"hflip": 0.5, "scale": [0.85, 1.0]}, crop_pct=1.0)  # fmt: skip
    if not (shards / "meta.json").exists():
        dm = ImageFolderDataModule(**common)
        started = time.perf_counter()
        pack(dm, "bench", "datamodules.image_folder.ImageFolderDataModule", shards, args.workers)
        print(f"pack: {time.perf_counter() - started:.1f} s with {args.workers} workers")
    files = sum(1 for _ in (folder / "train").rglob("*.JPEG"))
    size = sum(p.stat().st_size for p in (folder / "train").rglob("*.JPEG")) / 2**20
    chunks = sorted((shards / "train").glob("chunk-*.bin"))
    print(f"train split: {files} files, {size:.0f} MiB; shards: {len(chunks)} chunk files")
    print(f"load average before: {os.getloadavg()}")
    for kind in ("folder", "shards"):
        dm = ImageFolderDataModule(
            **common, **({"format": "shards", "shards": str(shards)} if kind == "shards" else {})
        )
        dm.setup("fit")
        how = drop_page_cache([folder / "train"] if kind == "folder" else [shards / "train"])
        cold, seen = epoch_rate(dm)
        warm, _ = epoch_rate(dm)
        print(f"{kind}: cold {cold:.0f} img/s ({how}), warm {warm:.0f} img/s over {seen} images; "
              f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    for kind in ("folder", "shards"):
        dm = ImageFolderDataModule(
            **common, **({"format": "shards", "shards": str(shards)} if kind == "shards" else {})
        )
        dm.setup("fit")
        print(f"{kind}: {opens_per_image(dm, 2000):.3f} file opens per image")


if __name__ == "__main__":
    main()
