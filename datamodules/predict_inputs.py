"""A user's own files as prediction inputs: one DataModule per input kind (images, videos).

``input`` is a file, a folder (searched recursively for the kind's extensions), a glob pattern or a
list of any of these. Each file is decoded and prepared for the task by the task's product writer
(``prepare``) inside the DataLoader workers; a file that cannot be read becomes a "skipped" entry of
its batch instead of stopping the run, so the product writer can count and name it. Files already
predicted by an earlier run into the same folder (``exclude``) are left out, and the names their
products have (``reserved_names``) are not given to another file: predict.py resumes."""

from __future__ import annotations

import glob
import hashlib
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset

from core.data import DataFormatError
from core.images import IMAGE_SUFFIXES, decode_image
from core.video import VIDEO_SUFFIXES, VideoDecodeError

log = logging.getLogger(__name__)

# What "this file cannot be read" looks like, from PIL, decord (through core.video), numpy and cv2.
READ_ERRORS = (DataFormatError, VideoDecodeError, OSError, ValueError, SyntaxError, EOFError)


def _is_pattern(text: str) -> bool:
    return any(c in text for c in "*?[")


def list_inputs(spec: str | Path | Sequence[str | Path], extensions: Sequence[str]) -> list[Path]:
    """The files named by ``spec``: a file (taken whatever its extension), a folder (every file with
    one of ``extensions`` below it), a glob pattern (every file it matches) or a list of these.
    Sorted, absolute, without repeats. Raises FileNotFoundError naming what held nothing."""
    specs = [spec] if isinstance(spec, (str, Path)) else list(spec)
    if not specs:
        raise FileNotFoundError("input=[]: no input files given")
    found: list[Path] = []
    for item in specs:
        text = os.path.expanduser(str(item))
        path = Path(text)
        if _is_pattern(text):
            matches = [Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file()]
            if not matches:
                raise FileNotFoundError(f"input={text}: the pattern matches no file")
        elif path.is_dir():
            wanted = {e.lower() for e in extensions}
            matches = [
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in wanted
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            ]
            if not matches:
                raise FileNotFoundError(f"input={path}: the folder holds no file with an extension of {sorted(wanted)}")
        elif path.is_file():
            matches = [path]
        else:
            raise FileNotFoundError(f"input={text}: no such file or folder")
        found += [p.resolve() for p in matches]
    return sorted(set(found))


def output_names(paths: Sequence[Path], reserved: Iterable[str] = ()) -> list[str]:
    """A file-system-safe name per input for its products, unique among the inputs and ``reserved``
    (names an earlier run into the same folder already gave other files): the path below the inputs'
    common folder without the extension, ``/`` written as ``__`` (``a/x.mp4`` -> ``a__x``). Where two
    inputs would share a name the extension stays (``x.jpg``, ``x.png``); where that still collides
    (``a/x.jpg`` and ``a__x.jpg``) each gets 8 hex digits of its relative path's SHA-1."""
    if not paths:
        return []
    root = Path(os.path.commonpath([str(p.parent) for p in paths]))
    relative = [p.relative_to(root) for p in paths]
    plain = [str(r.with_suffix("")).replace(os.sep, "__") for r in relative]
    with_suffix = [str(r).replace(os.sep, "__") for r in relative]
    taken = set(reserved)
    counts = Counter(plain)
    names = [w if counts[n] > 1 or n in taken else n for n, w in zip(plain, with_suffix)]
    counts = Counter(names)
    return [
        f"{n}-{hashlib.sha1(r.as_posix().encode()).hexdigest()[:8]}" if counts[n] > 1 or n in taken else n
        for n, r in zip(names, relative)
    ]


def read_image(path: Path):
    """The image as an RGB PIL image; an image that does not decode, or is over PIL's
    decompression-bomb limit, raises DataFormatError naming the file (skipped and counted)."""
    return decode_image(path, "RGB", what="input image")


def read_video(path: Path) -> Path:
    """The video's path, once decord has opened it (VideoDecodeError naming the file if not)."""
    from core.video import open_video

    open_video(path)
    return path


class InputFiles(Dataset):
    """The input files; item = ``prepare(read(path))`` plus ``input``/``name``, or a skipped entry."""

    def __init__(
        self, paths: Sequence[Path], names: Sequence[str], read: Callable[[Path], Any], prepare: Callable[[Any], dict]
    ):
        self.paths, self.names, self.read, self.prepare = list(paths), list(names), read, prepare

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        try:
            stat = path.stat()  # before reading: the journal records the file as it was predicted
            sample = self.prepare(self.read(path))
        except READ_ERRORS as err:
            reason = str(err) if str(path) in str(err) else f"{path}: {err}"
            return {"input": str(path), "name": self.names[index], "skipped": reason}
        return {**sample, "input": str(path), "name": self.names[index], "input_stat": file_stat(stat)}


def file_stat(stat: os.stat_result) -> dict[str, int]:
    """What says a file is the one an earlier run predicted: its size and modification time."""
    return {"input_size": stat.st_size, "input_mtime_ns": stat.st_mtime_ns}


class PredictCollate:
    """Separates the skipped entries of a batch from the readable ones, which the task's own
    ``collate`` turns into the batch its ``predict_step`` takes. The batch always carries
    ``inputs`` and ``names`` (of the readable files, in order), ``input_stats`` (their size and
    modification time) and ``skipped`` ([(file, reason)])."""

    def __init__(self, collate: Callable[[list[dict]], dict]):
        self.collate = collate

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        good = [it for it in items if "skipped" not in it]
        stats = [it.pop("input_stat", {}) for it in good]
        batch = self.collate(good) if good else {}
        batch["input_stats"] = stats
        batch["inputs"] = [it["input"] for it in good]
        batch["names"] = [it["name"] for it in good]
        batch["skipped"] = [(it["input"], it["skipped"]) for it in items if "skipped" in it]
        return batch


class PredictInputs(pl.LightningDataModule):
    """The predict loader over a user's files of one kind (subclasses name the extensions).

    ``read`` decodes a file of the kind (a PIL image; a video's path once it opens);
    ``prepare`` (decoded file -> sample dict) and ``collate`` (samples -> batch) come from the task's product
    writer (``core.prediction.ProductWriter``); under DDP Lightning gives each rank its own shard."""

    extensions: tuple[str, ...] = ()
    read: Callable[[Path], Any]

    def __init__(
        self,
        input: Any,
        batch_size: int = 1,
        num_workers: int = 0,
        prepare: Callable[[Path], dict] | None = None,
        collate: Callable[[list[dict]], dict] | None = None,
        exclude: Iterable[str] = (),
        reserved_names: Iterable[str] = (),
    ):
        super().__init__()
        self.input = input
        self.batch_size, self.num_workers = batch_size, num_workers
        self.prepare, self.collate = prepare, collate
        self.exclude = set(exclude)
        self.reserved_names = set(reserved_names)
        self._paths: list[Path] | None = None
        self.dataset: InputFiles | None = None

    @property
    def paths(self) -> list[Path]:
        """The input files (listed on first use, so a bad ``input`` fails with its own error)."""
        if self._paths is None:
            self._paths = list_inputs(self.input, self.extensions)
        return self._paths

    @property
    def names(self) -> list[str]:
        return output_names(self.paths, self.reserved_names)

    @property
    def pending(self) -> list[tuple[Path, str]]:
        """(path, name) of the inputs not yet predicted."""
        return [(p, n) for p, n in zip(self.paths, self.names) if str(p) not in self.exclude]

    def setup(self, stage: str | None = None) -> None:
        if self.prepare is None or self.collate is None:
            raise ValueError("PredictInputs needs the product writer's prepare and collate")
        pending = self.pending
        self.dataset = InputFiles([p for p, _ in pending], [n for _, n in pending], self.read, self.prepare)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=PredictCollate(self.collate),
        )


class ImageInputs(PredictInputs):
    """Image files (any PIL-readable format with an image extension in folders)."""

    extensions = IMAGE_SUFFIXES
    read = staticmethod(read_image)


class VideoInputs(PredictInputs):
    """Video files (anything decord opens; common container extensions in folders)."""

    extensions = VIDEO_SUFFIXES
    read = staticmethod(read_video)
