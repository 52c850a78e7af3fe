"""Image data sets as LitData optimized shards: a few large files of encoded images instead of one file
per sample, for training sets too big to read as loose JPEGs from a shared file system.

A packed data set is a folder (local, NFS or ``s3://...``) holding ``meta.json`` (what the DataModule
needs without its annotation files: class names, each split's targets and ids) and one LitData
dataset per split (``<split>/index.json`` + ``chunk-*.bin``). Each sample is a dict: ``index`` (its
position in the DataModule's split), ``name`` (its source file as UTF-8 bytes, for messages), ``image`` (the encoded
bytes, as the file held them; arrays such as CIFAR's become PNG) and ``target`` (an int, or a float32
array for multi-label sets). Reading decodes the bytes with ``core.images.decode_image`` and applies
the DataModule's transform, so a shard sample is the same tensor as the folder sample.

Sharding over DDP ranks and loader workers, shuffling (the epoch's order from ``seed`` + epoch) and
the loader state for mid-epoch resume are LitData's (``StreamingDataset``, ``StreamingDataLoader``);
Lightning saves a stateful loader's ``state_dict`` into its checkpoints and restores it on resume."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from litdata import StreamingDataLoader, StreamingDataset

from core.data import DataFormatError
from core.images import decode_image

log = logging.getLogger(__name__)

META_FILE = "meta.json"
FORMAT = "visionlab-image-shards/1"
SPLITS = ("train", "val", "test")


def is_remote(location: str | os.PathLike) -> bool:
    return "://" in str(location)


def split_location(shards: str | os.PathLike, split: str) -> str:
    """Where ``split`` of a packed data set lives (a folder or a URL)."""
    return f"{str(shards).rstrip('/')}/{split}"


def read_meta(shards: str | os.PathLike) -> dict[str, Any]:
    """``meta.json`` of a packed data set, local or remote (read through LitData's filesystem layer)."""
    location = f"{str(shards).rstrip('/')}/{META_FILE}"
    try:
        if is_remote(shards):  # fetched with LitData's own downloader (s3://, gs://, ...)
            import tempfile

            from litdata.streaming.downloader import get_downloader

            with tempfile.TemporaryDirectory() as tmp:
                local = os.path.join(tmp, META_FILE)
                get_downloader(str(shards), tmp, []).download_file(location, local)
                with open(local) as f:
                    meta = json.load(f)
        else:
            with open(location) as f:
                meta = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{location}: no packed data set here (data.shards); write one with "
            "`python -m datamodules.pack data=<dataset> --out <dir>`"
        ) from None
    except json.JSONDecodeError as err:
        raise DataFormatError(location, f"not valid JSON ({err.msg}, column {err.colno})", err.lineno) from None
    if meta.get("format") != FORMAT:
        raise DataFormatError(location, f"format {meta.get('format')!r}, expected {FORMAT!r} (pack it again)")
    return meta


# --- writing ---------------------------------------------------------------------------------------


class EncodedSample:
    """LitData ``optimize`` function: the sample at an index of a split as stored in the shards.

    Files are stored as read (never re-encoded); each is decoded once here only to check it, so a
    training run from shards never meets an undecodable image. A missing or undecodable file is
    not written and its one-line error is appended to ``problems`` (one line per file, from any
    worker): :func:`pack_split` then stops with it, or with ``skip_corrupt`` leaves it out."""

    def __init__(self, images: Sequence[Any] | np.ndarray, targets: Sequence[Any], problems: str) -> None:
        self.images, self.targets, self.problems = images, targets, problems

    def __call__(self, index: int) -> dict[str, Any] | None:
        item = self.images[index]
        if isinstance(item, np.ndarray):  # an in-memory array (CIFAR): lossless PNG
            buffer = io.BytesIO()
            from PIL import Image

            Image.fromarray(item).save(buffer, format="PNG")
            data, name = buffer.getvalue(), f"array[{index}]"
        else:
            name = str(item)
            try:
                with open(item, "rb") as f:
                    data = f.read()
                decode_image(io.BytesIO(data), name=name)
            except FileNotFoundError:
                return self.problem(index, name, "image file listed in the data set does not exist")
            except DataFormatError as err:
                return self.problem(index, name, err.problem)
        # the name as bytes: LitData would store a str that is an existing image path as that image, decoded
        target = self.targets[index]  # a class index, or a multi-hot row stored as one float32 array
        target = target if isinstance(target, int) else np.asarray(target, dtype=np.float32)
        return {"index": int(index), "name": name.encode(), "image": data, "target": target}

    def problem(self, index: int, path: str, problem: str) -> None:
        with open(self.problems, "a") as f:  # one short O_APPEND write per line: workers do not interleave
            f.write(json.dumps({"index": index, "path": path, "problem": problem.splitlines()[0]}) + "\n")
        return None


def plain_targets(dataset: Any) -> list[Any]:
    """Every sample's target as a plain value (int, or a list of floats for a multi-hot row)."""
    targets = getattr(dataset, "targets", None)
    if isinstance(targets, torch.Tensor):
        return targets.tolist()
    return [int(v) for v in dataset.labels]


def pack_split(
    images: Sequence[Any] | np.ndarray,
    targets: Sequence[Any],
    out: str,
    workers: int,
    skip_corrupt: bool,
    chunk_bytes: str = "64MB",
) -> int:
    """Write one split as LitData shards in the folder ``out`` (parallel, resumable: an interrupted
    pack of the split continues from LitData's checkpoint). Files that are missing or do not decode
    stop it with a DataFormatError naming the first, or are left out with ``skip_corrupt`` (each
    named in a warning). Returns the number of samples written."""
    from litdata import optimize

    folder = Path(out)
    problems = folder.parent / f".{folder.name}.problems.jsonl"
    if (folder / "index.json").exists():
        log.info("%s: already packed", out)
        return len(StreamingDataset(out))
    try:
        optimize(
            fn=EncodedSample(images, targets, str(problems)),
            inputs=list(range(len(targets))),
            output_dir=out,
            num_workers=max(1, workers),
            chunk_bytes=chunk_bytes,
            use_checkpoint=True,
            reorder_files=False,  # samples stay in split order: stream position k is sample k
            keep_data_ordered=True,
            start_method="fork",  # as torch DataLoader workers: no re-import of torch per worker and split
        )
    except BaseException:
        log.error("packing %s stopped; run the command again to resume it", out)
        raise
    found = [json.loads(line) for line in problems.read_text().splitlines()] if problems.exists() else []
    if found and not skip_corrupt:
        shutil.rmtree(folder)  # a split without these samples is no pack of it: the next run starts it over
        problems.unlink()
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise DataFormatError(
            found[0]["path"],
            f"{found[0]['problem']}{more}; fix the files, or pass data.skip_corrupt=true to leave them out",
        )
    for problem in found:
        log.warning("left out of %s: %s: %s", out, problem["path"], problem["problem"])
    return len(StreamingDataset(out))


# --- reading ---------------------------------------------------------------------------------------


class ImageShards(StreamingDataset):
    """One split of a packed data set: (image, target) or, with ``with_index``, (image, target,
    index), the image decoded and transformed as the folder reader does it. ``labels`` holds every
    sample's target from ``meta.json`` in split order (class counts, priors), without reading shards."""

    def __init__(
        self,
        location: str,
        targets: Sequence[Any],
        transform: Callable | None,
        shuffle: bool,
        seed: int,
        with_index: bool = False,
        drop_last: bool | None = None,
    ) -> None:
        # batch_decode=0: deserialize only the sample asked for. LitData's default for small byte
        # samples deserializes aligned 256-sample windows; a worker whose share starts mid-chunk (its
        # balancing of workers and ranks) has shuffle blocks straddling two windows and re-read one
        # every few samples: ~40 % slower, and the epoch waits for it (docs/shards.md, "Measured").
        super().__init__(location, shuffle=shuffle, seed=seed, drop_last=drop_last, batch_decode=0)
        self.location = location
        self.image_transform = transform
        self.with_index = with_index
        multi_hot = bool(targets) and isinstance(targets[0], list)
        self.targets = torch.tensor(targets, dtype=torch.float32) if multi_hot else None
        self.labels = [] if multi_hot else [int(v) for v in targets]

    def decode(self, sample: dict[str, Any]):
        name = bytes(sample["name"]).decode(errors="replace")
        return decode_image(io.BytesIO(sample["image"]), name=f"{name} (packed in {self.location})")

    def load(self, index: int):
        """The untransformed image of the split's sample ``index`` (pictures of chosen samples)."""
        sample = super().__getitem__(index)
        if int(sample["index"]) != index:
            raise DataFormatError(
                self.location, f"sample {index} is not at its position (the pack left out corrupt images)"
            )
        return self.decode(sample)

    def __getitem__(self, index: Any) -> tuple:
        sample = super().__getitem__(index)
        image = self.decode(sample)
        if self.image_transform is not None:
            image = self.image_transform(image)
        target = sample["target"]
        target = torch.from_numpy(np.array(target, dtype=np.float32)) if isinstance(target, np.ndarray) else int(target)
        return (image, target, int(sample["index"])) if self.with_index else (image, target)


class ShardLoader(StreamingDataLoader):
    """LitData's loader: it splits the shards over DDP ranks and workers, sets the epoch on the data
    set at every pass (a new order per epoch) and has the ``state_dict`` for mid-epoch resume.

    After ``load_state_dict`` LitData replays the saved epoch's rest until a pass runs to its end;
    Lightning stops a resumed epoch at its batch count without that last ``next()``, which would make
    every later pass replay the (spent) saved epoch: empty epochs. A pass after the resumed one is a
    new epoch here."""

    _resumed_pass = False

    def __iter__(self) -> Any:
        if self.restore and self._resumed_pass:
            self.restore = False
        self._resumed_pass = self.restore
        yield from super().__iter__()

    def load_state_dict(self, obj: dict[str, Any]) -> None:
        super().load_state_dict(obj)
        self._resumed_pass = False


def shard_loader(dataset: ImageShards, batch_size: int, num_workers: int) -> ShardLoader:
    # no drop_last here: the loader's would override the data set's (LitData's DDP default for training)
    return ShardLoader(dataset, batch_size=batch_size, num_workers=num_workers)


def global_seed() -> int:
    """The run's seed as Lightning's ``seed_everything`` published it (what its DistributedSampler
    uses too), so the shuffled order follows ``seed=`` of the run."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))
