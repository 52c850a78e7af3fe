"""Check a user's download before training on it::

    python -m datamodules.check data=<dataset> [data.root=<folder>] [key=value ...]
        [--workers N] [--report FILE] [--fresh]

The overrides are train.py's (the same conf/ is composed), so the checker reads exactly the files a
run would read, with the DataModule's own readers: any annotation error stops it with the file, line
and problem. Then every referenced file must exist and decode (in parallel, with a progress bar),
counts are compared with the published ones, and the known defects found are listed. It ends with
one verdict line (OK, INCOMPLETE: counts differ from the published ones, or FAILED: files missing,
undecodable or with a wrong checksum) and a JSON report written atomically (default
``<paths.log_dir>/data_check/<dataset>.json``). A journal beside the report records every file
checked, so an interrupted check of a large set resumes where it stopped (``--fresh`` starts over).
The exit status is 0 for OK only.

A DataModule may describe its download with a hook, ``download_inventory()`` (a method, or a
function of the DataModule in the module its config's ``_target_`` names) returning a
:class:`DownloadInventory`. Without one the checker sets the DataModule up and loads every sample
of every loader's data set, so every file its readers open is opened and decoded."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.data import DataFormatError, require_file
from core.images import IMAGE_SUFFIXES
from core.video import VIDEO_SUFFIXES

SHOWN_IN_VERDICT = 3


@dataclass(frozen=True)
class ReferencedFile:
    """A file the download must hold: where it is referenced (file:line or a folder), and its
    published md5 sum if one is known."""

    path: Path
    referenced_by: str
    md5: str | None = None


@dataclass
class DownloadInventory:
    """What a DataModule's ``download_inventory()`` hook tells the checker. ``files``: every file
    to find and decode (None: load every sample instead, the generic check). ``checksums``: files
    with a published md5 sum (e.g. the archives), checked in either case. ``counts``: name ->
    (found, published) for the numbers the data set's authors publish. ``review``: called with
    each decoded file's facts (a video's ``duration``, an array's ``shape``) and returns
    (problems, known defects found) that need them."""

    files: list[ReferencedFile] | None = None
    checksums: list[ReferencedFile] = field(default_factory=list)
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    defects: list[str] = field(default_factory=list)
    review: Callable[[dict[Path, dict[str, Any]]], tuple[list[str], list[str]]] | None = None


# --- decoding one file ---------------------------------------------------------------------------


def file_md5(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def decode_file(path: Path) -> dict[str, Any]:
    """Open and fully decode ``path`` by its kind; return what was learned (size, image size, a
    video's duration, an array's shape). Raises FileNotFoundError or DataFormatError naming it."""
    require_file(path, "a file referenced by the data set")
    suffix = path.suffix.lower()
    info: dict[str, Any] = {"bytes": path.stat().st_size}
    try:
        if suffix in IMAGE_SUFFIXES:
            from core.images import decode_image

            info["size"] = list(decode_image(path).size)  # decodes every pixel: a truncated file fails
        elif suffix in VIDEO_SUFFIXES:
            from core.video import open_video, read_frames

            reader = open_video(path)
            read_frames(reader, [0, len(reader) - 1], path)  # the last frame: a cut-off file fails
            info["frames"], info["fps"] = len(reader), float(reader.get_avg_fps())
            info["duration"] = info["frames"] / info["fps"]
        elif suffix == ".npy":
            import numpy as np

            array = np.load(path, mmap_mode="r")
            info["shape"] = list(array.shape)
            if array.size:
                float(array.reshape(-1)[-1])  # the last value is there
        elif suffix == ".json":
            from core.data import read_json

            read_json(path)
        else:
            with open(path, "rb") as f:
                f.read(1)
    except (FileNotFoundError, DataFormatError):
        raise
    except Exception as err:  # any decoder's own error (PIL, decord, numpy) becomes one line
        reason = (str(err).splitlines() or [type(err).__name__])[0].removeprefix(f"{path}: ")
        raise DataFormatError(path, f"cannot decode ({reason})") from None
    return info


# --- the journal of checked units ----------------------------------------------------------------


class Journal:
    """Units checked and found good, one JSON line each, with the ``stamp`` (size, mtime) a file had:
    a rerun skips them unless the file changed. Its first line is the fingerprint of what was checked
    (the data config); a journal of another check is ignored."""

    def __init__(self, path: Path, fingerprint: str, fresh: bool = False):
        self.path, self.fingerprint = path, fingerprint
        self.done: dict[str, tuple[Any, dict[str, Any]]] = {}
        if self.path.exists() and not fresh:
            lines = self.path.read_text().splitlines()
            if lines and lines[0] == fingerprint:
                for text in lines[1:]:
                    try:
                        entry = json.loads(text)
                        self.done[entry["key"]] = (entry["stamp"], entry["info"])
                    except (ValueError, KeyError, TypeError):
                        continue  # a line cut by a kill: that unit is checked again
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "w" if not self.done else "a")
        if not self.done:
            self._handle.write(fingerprint + "\n")

    def finished(self, key: str, stamp: Any) -> dict[str, Any] | None:
        entry = self.done.get(key)
        return entry[1] if entry is not None and entry[0] == stamp else None

    def record(self, key: str, stamp: Any, info: dict[str, Any]) -> None:
        self._handle.write(json.dumps({"key": key, "stamp": stamp, "info": info}) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def file_stamp(path: Path) -> list[int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


# --- running the checks --------------------------------------------------------------------------


@dataclass
class Outcome:
    """What the checks found: good units (key -> facts), and the failures by kind."""

    good: dict[str, dict[str, Any]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    undecodable: list[str] = field(default_factory=list)
    checksum: list[str] = field(default_factory=list)
    resumed: int = 0
    total: int = 0


def run_units(
    units: Sequence[tuple[str, Any, Callable[[], dict[str, Any]]]],
    journal: Journal,
    workers: int,
    description: str,
) -> Outcome:
    """Run each unit's check ``(key, stamp, check)`` in a thread pool with a progress bar; units the
    journal holds (same stamp) are not checked again."""
    from tqdm import tqdm

    outcome = Outcome(total=len(units))
    todo = []
    for key, stamp, check in units:
        info = journal.finished(key, stamp)
        if info is not None:
            outcome.good[key] = info
            outcome.resumed += 1
        else:
            todo.append((key, stamp, check))
    with (
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
        tqdm(total=len(units), initial=outcome.resumed, desc=description, unit="item", file=sys.stderr) as bar,
    ):
        window = max(1, workers) * 32  # a bounded number in flight: a million-file set stays small in memory
        for begin in range(0, len(todo), window):
            futures = {pool.submit(check): (key, stamp) for key, stamp, check in todo[begin : begin + window]}
            for future in as_completed(futures):
                key, stamp = futures[future]
                bar.update(1)
                try:
                    info = future.result()
                except FileNotFoundError as err:
                    outcome.missing.append(str(err))
                    continue
                except ChecksumError as err:
                    outcome.checksum.append(str(err))
                    continue
                except Exception as err:  # the readers' own errors name the file; others get the unit's key
                    text = (str(err).splitlines() or [type(err).__name__])[0]
                    outcome.undecodable.append(text if os.sep in text else f"{key}: {type(err).__name__}: {text}")
                    continue
                outcome.good[key] = info
                journal.record(key, stamp, info)
    # one line per problem: two samples (or splits) that read one bad file report it once
    outcome.missing, outcome.undecodable, outcome.checksum = (
        sorted(set(failures)) for failures in (outcome.missing, outcome.undecodable, outcome.checksum)
    )
    return outcome


class ChecksumError(DataFormatError):
    """A file's md5 sum is not the published one."""


def file_units(files: Sequence[ReferencedFile]) -> list[tuple[str, Any, Callable[[], dict[str, Any]]]]:
    def check(ref: ReferencedFile) -> dict[str, Any]:
        if not ref.path.exists():
            raise FileNotFoundError(f"{ref.path}: missing (referenced by {ref.referenced_by})")
        if ref.md5 is not None:
            found = file_md5(ref.path)
            if found != ref.md5:
                raise ChecksumError(ref.path, f"md5 {found}, published {ref.md5}")
            return {"bytes": ref.path.stat().st_size, "md5": found}
        return decode_file(ref.path)

    unique = {str(ref.path): ref for ref in files}
    return [(key, file_stamp(ref.path), (lambda ref=ref: check(ref))) for key, ref in sorted(unique.items())]


def loader_datasets(datamodule: Any) -> dict[str, Any]:
    """The data set behind each of the DataModule's train/val/test loaders (each object once)."""
    found: dict[str, Any] = {}
    for split in ("train", "val", "test"):
        method = getattr(datamodule, f"{split}_dataloader", None)
        try:
            loaders = method() if method is not None else None
        except (NotImplementedError, KeyError, AttributeError):
            continue  # a DataModule without that split
        if loaders is None:
            continue
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        for k, loader in enumerate(loaders):
            dataset = getattr(loader, "dataset", None)
            if dataset is not None and all(dataset is not seen for seen in found.values()):
                found[split if len(loaders) == 1 else f"{split}{k}"] = dataset
    return found


def sample_units(datamodule: Any) -> list[tuple[str, Any, Callable[[], dict[str, Any]]]]:
    """The generic check: every sample of every loader's data set, loaded by the DataModule's own
    dataset class (so each file is read and decoded exactly as training reads it)."""

    def load(dataset: Any, index: int, key: str) -> dict[str, Any]:
        if dataset[index] is None:
            raise DataFormatError(key, "the reader skipped this sample as unreadable (see its warning)")
        return {}

    units = []
    for split, dataset in loader_datasets(datamodule).items():
        keys = [f"{split}[{i}]" for i in range(len(dataset))]
        units += [(key, None, (lambda d=dataset, i=i, key=key: load(d, i, key))) for i, key in enumerate(keys)]
    return units


def find_hook(datamodule: Any, target: str | None) -> Callable[[], DownloadInventory] | None:
    """The DataModule's ``download_inventory`` method, or that function in its config's module."""
    method = getattr(datamodule, "download_inventory", None)
    if callable(method):
        return method
    if target:
        module = importlib.import_module(target.rsplit(".", 1)[0])
        function = getattr(module, "download_inventory", None)
        if callable(function):
            return lambda: function(datamodule)
    return None


def verdict_line(
    name: str, outcome: Outcome, counts: dict[str, tuple[int, int]], errors: list[str], kind: str = "files"
) -> str:
    """One line: OK, INCOMPLETE (only counts differ from the published ones) or FAILED, naming the
    first few files or problems. ``kind``: what was checked, "files" or "samples"."""
    checked = outcome.total
    failures = [
        (len(outcome.missing), "missing", outcome.missing),
        (len(outcome.undecodable), "undecodable", outcome.undecodable),
        (len(outcome.checksum), "with a wrong md5", outcome.checksum),
        (len(errors), "other problems", errors),
    ]
    named = [item for _, _, items in failures for item in items][:SHOWN_IN_VERDICT]
    if any(n for n, _, _ in failures):
        summary = ", ".join(f"{n} {what}" for n, what, _ in failures if n)
        more = sum(n for n, _, _ in failures) - len(named)
        tail = f"; and {more} more (see the report)" if more > 0 else ""
        return f"FAILED: {name}: {checked} checked, {summary}: " + "; ".join(named) + tail
    differing = {k: v for k, v in counts.items() if v[0] != v[1]}
    if differing:
        shown = ", ".join(f"{k} {found} (published {published})" for k, (found, published) in differing.items())
        return f"INCOMPLETE: {name}: {checked} {kind} whole, but counts differ from the published ones: {shown}"
    published = f", counts as published ({', '.join(f'{k} {v[0]}' for k, v in counts.items())})" if counts else ""
    return f"OK: {name}: {checked} {kind} whole{published}"


def check_download(
    datamodule: Any,
    name: str,
    report_path: Path,
    target: str | None = None,
    workers: int = 4,
    fresh: bool = False,
    fingerprint: str = "",
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Check the download a DataModule reads; write the JSON report and return it. Annotation
    errors (file, line, problem) propagate: nothing else can be checked before they are fixed."""
    hook = find_hook(datamodule, target)
    inventory = hook() if hook is not None else DownloadInventory()
    if inventory.files is None:
        datamodule.prepare_data()
        datamodule.setup("fit")
        datamodule.setup("test")
        units, kind = sample_units(datamodule), "samples"
    else:
        units, kind = file_units(inventory.files), "files"
    units += file_units(inventory.checksums)
    journal = Journal(Path(str(report_path) + ".journal"), f"{fingerprint} {kind}", fresh)
    try:
        outcome = run_units(units, journal, workers, f"checking {name}")
    finally:
        journal.close()
    problems, defects = [], list(inventory.defects)
    if inventory.review is not None:
        facts = {Path(key): info for key, info in outcome.good.items()}
        found_problems, found_defects = inventory.review(facts)
        problems += found_problems
        defects += found_defects
    verdict = verdict_line(name, outcome, inventory.counts, problems, kind)
    report = {
        "data": name,
        "verdict": verdict,
        "checked": kind,
        "total": len(units),
        "good": len(outcome.good),
        "resumed_from_journal": outcome.resumed,
        "missing": outcome.missing,
        "undecodable": outcome.undecodable,
        "wrong_md5": outcome.checksum,
        "problems": problems,
        "counts": {k: {"found": f, "published": p, "as_published": f == p} for k, (f, p) in inventory.counts.items()},
        "known_defects": defects,
        "config": config,
    }
    from core.io import atomic_write_json

    atomic_write_json(report_path, report)
    return report


# --- the command ---------------------------------------------------------------------------------


def compose_data(overrides: Sequence[str], for_check: bool = True) -> tuple[Any, str, Any]:
    """conf/train.yaml composed as train.py would with ``overrides``: (data config, its name, paths).
    ``for_check``: the generator is removed (the checker checks the user's files and never writes a
    data set) and skipping is off; datamodules.pack keeps both, as a run would."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf, open_dict

    from core.resolvers import PROJECT_ROOT, register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    name = cfg.hydra.runtime.choices.get("data") or "data"
    # resolved first: other keys may interpolate the generator's (num_classes: ${data.generator...})
    data = OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=True, throw_on_missing=True))
    if not for_check:
        return data, name, cfg.paths
    with open_dict(data):
        if "generator" in data:
            data.generator = None
        for key in ("skip_corrupt", "skip_missing"):  # a check reports bad files instead of skipping them
            if key in data:
                data[key] = False
    return data, name, cfg.paths


def command_line(argv: Sequence[str], prog: str, options: list[tuple[str, dict]]) -> tuple[Any, list[str]]:
    """The ``--options`` of a datamodules command (argparse) and the rest: Hydra overrides as train.py's.
    An unknown ``--option`` is an error rather than an override."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    for flag, kwargs in options:
        parser.add_argument(flag, **kwargs)
    parsed, overrides = parser.parse_known_args(list(argv))
    unknown = [arg for arg in overrides if arg.startswith("--")]
    if unknown:
        parser.error(f"unknown option {unknown[0]}")
    return parsed, overrides


def main(argv: Sequence[str]) -> int:
    """Parse ``--workers``, ``--report``, ``--fresh``; the rest are Hydra overrides."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    options, overrides = command_line(
        argv,
        "python -m datamodules.check",
        [
            ("--workers", {"type": int, "default": min(8, os.cpu_count() or 1), "help": "parallel checks"}),
            ("--report", {"type": Path, "default": None, "help": "the JSON report (default under paths.log_dir)"}),
            ("--fresh", {"action": "store_true", "help": "ignore the journal of an earlier check"}),
        ],
    )
    workers, report_path, fresh = options.workers, options.report, options.fresh
    try:
        data, name, paths = compose_data(overrides)
    except MissingMandatoryValue as err:  # e.g. fgvc_imagefolder's num_classes: ???
        key = getattr(err, "full_key", None) or "the missing key"
        print(f"FAILED: the data config has no value for {key}: pass {key}=<value>")
        return 1
    resolved = OmegaConf.to_container(data, resolve=True)
    fingerprint = hashlib.sha1(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:16]
    report_path = report_path or Path(paths.log_dir) / "data_check" / f"{name}.json"
    try:
        try:
            datamodule = instantiate(data)
        except InstantiationException as err:  # the constructor's own error, e.g. a missing root
            cause = err.__cause__
            raise (cause if isinstance(cause, (DataFormatError, FileNotFoundError, ValueError)) else err) from None
        report = check_download(
            datamodule, name, report_path, data.get("_target_"), workers, fresh, fingerprint, resolved
        )
    except (DataFormatError, FileNotFoundError, ValueError) as err:
        from core.io import atomic_write_json

        verdict = f"FAILED: {name}: {str(err).splitlines()[0]}"
        atomic_write_json(report_path, {"data": name, "verdict": verdict, "error": str(err)})
        print(f"report: {report_path}")
        print(verdict)
        return 1
    for defect in report["known_defects"]:
        print(f"known defect: {defect}")
    print(f"report: {report_path}")
    print(report["verdict"])
    return 0 if report["verdict"].startswith("OK") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
