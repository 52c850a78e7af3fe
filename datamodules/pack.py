"""Pack an image data set into LitData optimized shards::

    python -m datamodules.pack data=<dataset> [data.root=<folder>] [key=value ...] --out <dir> [--workers N]

The overrides are train.py's (the same conf/ is composed), so the packer reads exactly the samples a
run would read, with the DataModule's own readers. Each split (train, val, test) becomes
``<dir>/<split>/`` (LitData's ``index.json`` + ``chunk-*.bin``: each sample's encoded image bytes as
the file held them, its target, its index in the split and its file name) and ``<dir>/meta.json``
holds the class names and each split's targets and ids. Packing runs in ``--workers`` processes with
LitData's progress bar; an interrupted pack resumes (a finished split is kept, a split in progress
continues from LitData's checkpoint). Train from the shards with ``data.format=shards data.shards=<dir>``
(or the folder copied to ``s3://...``).

Covered: every DataModule built on ``ImageClassificationDataModule`` (imagefolder, shapes, cifar100,
flowers102, the FGVC6 sets). Google-Landmarks v2 and Open Images are refused: their samples are not
one image with a class target (retrieval index/query sets, boxes, masks, relationships)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

NOT_COVERED = (
    "datamodules.pack packs the image-classification DataModules (imagefolder, shapes, cifar100, flowers102, "
    "the FGVC6 sets); {name} ({target}) is not one of them: its samples are not one image with a class target"
)


def pack(datamodule, name: str, target: str, out: Path, workers: int) -> dict:
    """Write every split of ``datamodule`` (set up from its files) under ``out``; return the meta."""
    from core.io import atomic_write_json
    from core.shards import FORMAT, META_FILE, SPLITS, pack_split, plain_targets, split_location

    datamodule.prepare_data()
    datamodule.setup("fit")
    splits = {}
    for split in SPLITS:
        dataset = datamodule.datasets[split]
        targets = plain_targets(dataset)
        started = time.perf_counter()
        written = pack_split(dataset.images, targets, split_location(out, split), workers, datamodule.skip_corrupt)
        seconds = time.perf_counter() - started
        left_out = len(targets) - written
        print(
            f"{split}: {written} samples packed in {seconds:.1f} s"
            + (f", {left_out} corrupt left out" if left_out else "")
        )
        ids = getattr(datamodule, "ids", {}).get(split)
        splits[split] = {
            "samples": len(targets),
            "packed": written,
            "left_out": left_out,
            "targets": targets,
            "ids": ids,
        }
    meta = {
        "format": FORMAT,
        "data": name,
        "datamodule": target,
        "source": str(datamodule.root),
        "num_classes": datamodule.num_classes,
        "class_names": list(datamodule.class_names),
        "splits": splits,
        "attributes": {
            name: getattr(datamodule, name)
            for name in datamodule.packed_attributes
            if getattr(datamodule, name, None) is not None
        },
    }
    atomic_write_json(out / META_FILE, meta)
    return meta


def main(argv: Sequence[str]) -> int:
    """Parse ``--out`` and ``--workers``; the rest are Hydra overrides."""
    from hydra.utils import instantiate

    from core.data import DataFormatError
    from datamodules.check import command_line, compose_data
    from datamodules.image_classification import ImageClassificationDataModule

    options, overrides = command_line(
        argv,
        "python -m datamodules.pack",
        [
            ("--out", {"required": True, "help": "where the shards are written (a local or NFS folder)"}),
            ("--workers", {"type": int, "default": os.cpu_count() or 1, "help": "parallel packing workers"}),
        ],
    )
    out, workers = options.out, options.workers
    if "://" in out:
        raise SystemExit(
            f"--out {out}: pack into a local or NFS folder, then copy it (e.g. `aws s3 sync <dir> {out}`); "
            "training reads data.shards=s3://... directly"
        )
    data, name, _ = compose_data(overrides, for_check=False)
    target = str(data.get("_target_"))
    if data.get("format", "folder") != "folder":
        raise SystemExit(f"data.format={data.get('format')}: pack reads the published files (data.format=folder)")
    datamodule = instantiate(data)
    if not isinstance(datamodule, ImageClassificationDataModule):
        print(NOT_COVERED.format(name=name, target=target), file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        meta = pack(datamodule, name, target, Path(out).resolve(), workers)
    except (DataFormatError, FileNotFoundError) as err:  # the readers' and the packer's one-line errors
        print(f"FAILED: {name}: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    total = sum(s["packed"] for s in meta["splits"].values())
    print(f"packed {name}: {total} samples in {time.perf_counter() - started:.1f} s into {Path(out).resolve()}")
    print(f"train from them with: data={name} data.format=shards data.shards={Path(out).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
