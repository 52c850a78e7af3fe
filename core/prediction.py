"""What predict.py does: run a trained task on a user's own files and write its product.

The plug-in point is ``ProductWriter``, a Lightning prediction writer that each system subclasses in
``tasks/<system>/predict.py`` (see docs/ARCHITECTURE.md, "Prediction"). It says how one input file
becomes a sample (``prepare``, run in the DataLoader workers) and a batch (``collate``), what each
prediction leaves on disk (``write_item``, on the rank that made it), and what the whole set leaves
(``merge``, once, on rank 0, after every rank finished). The task's ``predict_step`` turns the batch
into one prediction per input.

Every finished input is recorded in ``<run dir>/predictions/journal_rank<r>.jsonl`` after its files
are written (with the input's size and modification time), so a run started again in the same
folder skips what is done (resume), and under DDP rank 0 merges the journals of all ranks into the
products. ``predictions/run.json`` records the checkpoint (path, size, SHA-256) the journals belong
to: a run with another checkpoint, or over inputs changed since, is refused unless ``fresh=true``
discards the earlier journals. A folder holding a training or evaluation run is refused outright."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import BasePredictionWriter

from core.io import atomic_write_json, atomic_write_text
from core.resolvers import register_resolvers

# A SLURM job (hydra-submitit-launcher) unpickles the entry point's main() by value, so the entry
# point's own register_resolvers() never runs there: importing this module while unpickling is
# what registers the resolvers before the job's config is resolved.
register_resolvers()

log = logging.getLogger(__name__)

JOURNAL_DIR = "predictions"
SUMMARY_FILE = "predict_summary.json"
RUN_RECORD = "run.json"  # in JOURNAL_DIR: the checkpoint the journals belong to


class ProductWriter(BasePredictionWriter):
    """Base of every system's product writer (the contract predict.py relies on).

    A subclass sets ``input_kind`` ("images" or "videos": which DataModule of
    datamodules/predict_inputs.py reads the files) and implements ``prepare``, ``write_item`` and
    ``merge``; ``bind`` and ``collate`` have defaults. Constructor arguments are the keys of
    ``conf/product/<task>.yaml``'s ``writer:`` node."""

    input_kind: str = "images"

    def __init__(self) -> None:
        super().__init__(write_interval="batch")
        self.run_dir: Path | None = None
        self.listed: list[str] = []
        self.already_done = 0
        self.checkpoint_record: dict[str, Any] = {}
        self.fresh = False

    # --- what a system provides -------------------------------------------------------------------
    def bind(self, task: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Read from the loaded task (and the raw checkpoint dict) what ``prepare`` needs."""

    def prepare(self, decoded: Any) -> dict[str, Any]:
        """One input (a PIL image, or a video's path) -> a sample dict; runs in loader workers.
        Raise DataFormatError / VideoDecodeError / OSError / ValueError for an unusable file."""
        raise NotImplementedError

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Samples -> the batch the task's ``predict_step`` takes (default: torch's collate)."""
        from torch.utils.data import default_collate

        return default_collate(samples)

    def write_item(self, run_dir: Path, name: str, prediction: Any, batch: dict, index: int) -> dict:
        """Write one input's own files; return its JSON-able record (kept in the journal)."""
        raise NotImplementedError

    def merge(self, run_dir: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Write the products of the whole set from the records of every rank (sorted by input);
        return what to add to predict_summary.json (e.g. the product files)."""
        raise NotImplementedError

    # --- the machinery ----------------------------------------------------------------------------
    def journal(self, rank: int) -> Path:
        return Path(self.run_dir) / JOURNAL_DIR / f"journal_rank{rank}.jsonl"

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Rank 0, before any rank journals (Lightning's post-setup barrier follows): with ``fresh``
        discard the earlier run's journals; record the checkpoint the journals belong to."""
        if trainer.is_global_zero:
            if self.fresh:
                discard_journals(Path(self.run_dir))
            atomic_write_json(Path(self.run_dir) / JOURNAL_DIR / RUN_RECORD, {"checkpoint": self.checkpoint_record})

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ) -> None:
        records = []
        prediction = prediction or []
        if len(prediction) != len(batch["inputs"]):
            raise RuntimeError(
                f"{type(pl_module).__name__}.predict_step returned {len(prediction)} "
                f"predictions for {len(batch['inputs'])} inputs"
            )
        stats = batch.get("input_stats") or [{}] * len(batch["inputs"])
        skipped = list(batch["skipped"])
        for k, (path, name) in enumerate(zip(batch["inputs"], batch["names"])):
            bad = non_finite(prediction[k])
            if bad:
                skipped.append((path, f"{path}: the model's output for it holds {bad} values; nothing written"))
                continue
            record = self.write_item(Path(self.run_dir), name, prediction[k], batch, k)
            records.append({"input": path, "name": name, **stats[k], **record})
        for path, reason in skipped:
            warnings.warn(f"skipping input: {reason}", stacklevel=1)
            records.append({"input": path, "skipped": reason})
        append_journal(self.journal(trainer.global_rank), records)

    def finish(self, trainer: pl.Trainer) -> None:
        """After ``trainer.predict`` (every rank, even one whose shard was empty and so never ran the
        predict hooks): read all journals; rank 0 writes the products and predict_summary.json.
        Every rank raises when none of the inputs could be read."""
        trainer.strategy.barrier("predict_journals")
        done, skipped = read_journals(Path(self.run_dir))
        listed = set(self.listed)
        done = {k: v for k, v in done.items() if k in listed}
        skipped = {k: v for k, v in skipped.items() if k in listed and k not in done}
        if not done:
            reasons = "; ".join(list(skipped.values())[:3])
            raise FileNotFoundError(
                f"none of the {len(listed)} input files could be read or predicted ({len(skipped)} skipped: {reasons})"
            )
        unrecorded = sorted(listed - set(done) - set(skipped))
        if unrecorded:
            raise RuntimeError(
                f"{len(unrecorded)} of {len(listed)} inputs have no record in the journals of {self.run_dir} "
                f"({', '.join(unrecorded[:3])}); run predict.py again with the same output_dir to predict them"
            )
        if trainer.is_global_zero:
            records = [done[k] for k in sorted(done)]
            products = self.merge(Path(self.run_dir), records) or {}
            summary = {
                "inputs": len(listed),
                "predicted": len(done),
                "already_done_before_this_run": self.already_done,
                "skipped": len(skipped),
                "skipped_files": skipped,
                **products,
            }
            atomic_write_json(Path(self.run_dir) / SUMMARY_FILE, summary)
            if skipped:
                warnings.warn(
                    f"{len(skipped)} of {len(listed)} input files were skipped (unreadable, or no finite prediction): "
                    + ", ".join(sorted(skipped)),
                    stacklevel=1,
                )
            log.info(
                "Predicted %d of %d inputs (%d skipped) into %s", len(done), len(listed), len(skipped), self.run_dir
            )
        trainer.strategy.barrier("predict_products")


def non_finite(value: Any) -> str | None:
    """ "nan", "inf" or "nan and inf" when a prediction (a tensor, an array, a number, or dicts, lists
    and tuples of them) holds such values; None when every value is finite."""
    import numpy as np
    import torch

    found = set()

    def visit(v: Any) -> None:
        if isinstance(v, torch.Tensor):
            if v.is_floating_point() or v.is_complex():
                found.update({"nan"} if bool(torch.isnan(v).any()) else set())
                found.update({"inf"} if bool(torch.isinf(v).any()) else set())
        elif isinstance(v, np.ndarray) and (
            np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.complexfloating)
        ):
            found.update({"nan"} if bool(np.isnan(v).any()) else set())
            found.update({"inf"} if bool(np.isinf(v).any()) else set())
        elif isinstance(v, (float, np.floating)) and not math.isfinite(v):
            found.add("nan" if math.isnan(v) else "inf")
        elif isinstance(v, dict):
            for item in v.values():
                visit(item)
        elif isinstance(v, (list, tuple)):
            for item in v:
                visit(item)

    visit(value)
    return " and ".join(sorted(found, reverse=True)) or None


def discard_torn_tail(path: Path) -> None:
    """Cut a journal back to its last whole line: a run killed while appending leaves a torn last
    line, and the next record appended to it would be lost with it. Its input is predicted again."""
    if not path.exists():
        return
    with open(path, "rb+") as f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return
        keep, pos = 0, end
        while pos > 0:
            step = min(1 << 16, pos)
            pos -= step
            f.seek(pos)
            newline = f.read(step).rfind(b"\n")
            if newline >= 0:
                keep = pos + newline + 1
                break
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    log.warning("%s: discarded a torn last line (%d bytes) left by a killed run", path, end - keep)


def append_journal(path: Path, records: Sequence[dict]) -> None:
    """Append records as JSON lines, flushed to disk, so a killed run keeps what it finished."""
    if not records:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    discard_torn_tail(path)
    with open(path, "a", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, default=_plain) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot journal {type(value).__name__}")


def read_journals(run_dir: Path) -> tuple[dict[str, dict], dict[str, str]]:
    """(input -> record of its prediction, input -> reason it was skipped) over every rank's journal.
    A torn last line (a killed run) is ignored; a later success replaces an earlier skip."""
    done: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    for path in sorted((Path(run_dir) / JOURNAL_DIR).glob("journal_rank*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "skipped" in record:
                skipped[record["input"]] = record["skipped"]
            else:
                done[record["input"]] = record
    return done, skipped


def discard_journals(run_dir: Path) -> None:
    """``fresh=true``: forget what an earlier run predicted here (its per-input files are overwritten
    as the inputs are predicted again)."""
    folder = Path(run_dir) / JOURNAL_DIR
    for path in [*folder.glob("journal_rank*.jsonl"), folder / RUN_RECORD, Path(run_dir) / SUMMARY_FILE]:
        path.unlink(missing_ok=True)


# --- whose predictions a folder holds ---------------------------------------------------------------------

FRESH_HINT = "pass fresh=true to discard them and predict every input again, or choose another output_dir"


def checkpoint_record(path: str | Path) -> dict[str, Any]:
    """Path, size and SHA-256 of a checkpoint: what says which model made a folder's predictions."""
    path = Path(path).resolve()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path), "size": path.stat().st_size, "sha256": digest.hexdigest()}


def training_run_marker(run_dir: Path) -> str | None:
    """What shows ``run_dir`` holds a training or evaluation run (train.py / eval.py / atlas.py), if
    anything: its checkpoints, its metrics.json, Hydra's record of a job other than predict, or a
    config_resolved.yaml without predict's ``product``."""
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    if (run_dir / "checkpoints").is_dir():
        return "checkpoints/"
    if (run_dir / "metrics.json").exists():
        return "metrics.json"
    try:
        hydra_file = run_dir / ".hydra" / "hydra.yaml"
        if (run_dir / ".hydra").is_dir():
            job = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.job.name") if hydra_file.exists() else None
            if job != "predict":
                return f".hydra/ of a {job or 'non-predict'} job"
        config = run_dir / "config_resolved.yaml"
        if config.exists() and "product" not in (OmegaConf.load(config) or {}):
            return "config_resolved.yaml of a run that is not predict.py's"
    except (OSError, YAMLError, OmegaConfBaseException):
        return None
    return None


def check_output_dir(run_dir: Path) -> None:
    """Refuse a training or evaluation run folder: predicting there would overwrite its
    predictions.csv and config_resolved.yaml, and the run could no longer resume."""
    marker = training_run_marker(run_dir)
    if marker:
        raise ValueError(
            f"output_dir={run_dir} holds a training or evaluation run ({marker}); predict.py would overwrite "
            "its config_resolved.yaml and products and break its resume: choose another output_dir"
        )


def check_same_checkpoint(run_dir: Path, record: dict[str, Any]) -> None:
    """Refuse to resume a folder whose journals were written with another checkpoint."""
    folder = Path(run_dir) / JOURNAL_DIR
    journals = [p for p in folder.glob("journal_rank*.jsonl") if p.stat().st_size > 0]
    if not journals:
        return
    run_file = folder / RUN_RECORD
    try:
        earlier = json.loads(run_file.read_text(encoding="utf-8"))["checkpoint"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(
            f"{run_dir} holds predictions ({journals[0].name}) without a readable record of their checkpoint "
            f"({run_file}); {FRESH_HINT}"
        ) from None
    if earlier.get("sha256") != record["sha256"]:
        raise ValueError(
            f"{run_dir} holds predictions of checkpoint {earlier.get('path')} ({earlier.get('size')} bytes, "
            f"sha256 {str(earlier.get('sha256'))[:12]}), not of ckpt_path={record['path']} ({record['size']} "
            f"bytes, sha256 {record['sha256'][:12]}); {FRESH_HINT}"
        )


def check_inputs_unchanged(run_dir: Path, done: dict[str, dict], listed: Sequence[str]) -> None:
    """Refuse to resume over inputs whose size or modification time changed since they were predicted."""
    from datetime import datetime, timezone

    def when(ns: int) -> str:
        return datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat(timespec="seconds")

    for path in listed:
        record = done.get(path)
        if record is None or "input_size" not in record:
            continue
        try:
            stat = os.stat(path)
        except OSError:
            continue
        if (stat.st_size, stat.st_mtime_ns) != (record["input_size"], record["input_mtime_ns"]):
            raise ValueError(
                f"{path}: changed since it was predicted into {run_dir} ({record['input_size']} bytes modified "
                f"{when(record['input_mtime_ns'])} then, {stat.st_size} bytes modified {when(stat.st_mtime_ns)} "
                f"now); {FRESH_HINT}"
            )


def escape_interpolations(value: Any) -> Any:
    """``${...}`` in strings written ``\\${...}``: values read from a checkpoint are data, and OmegaConf
    must not resolve them (``${oc.env:...}`` would copy the environment into config_resolved.yaml)."""
    if isinstance(value, str):
        return re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", value)
    if isinstance(value, dict):
        return {k: escape_interpolations(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [escape_interpolations(v) for v in value]
    return value


# --- which task a checkpoint belongs to ---------------------------------------------------------------


def task_targets(config_dir: Path) -> dict[str, str]:
    """Task config name -> the ``_target_`` class it builds, for every conf/task/*.yaml that names one."""
    targets = {}
    for path in sorted(Path(config_dir, "task").glob("*.yaml")):
        target = OmegaConf.select(OmegaConf.load(path), "task._target_", default=None)
        if target:
            targets[path.stem] = target
    return targets


def owner_of(checkpoint: dict[str, Any], config_dir: Path) -> tuple[str, str] | None:
    """(task config name, class) of the task that saved ``checkpoint``: its class stamp, else the
    task whose constructor takes exactly its hyper-parameters; None when nothing fits."""
    from hydra.utils import get_class

    from core.checkpoint import TASK_CLASS_KEY, constructor_parameters

    targets = task_targets(config_dir)
    stamped = checkpoint.get(TASK_CLASS_KEY)
    if stamped:
        names = [n for n, t in targets.items() if t == stamped]
        return (names[0] if names else "?", stamped)
    hparams = set(checkpoint.get("hyper_parameters") or {})
    for name, target in targets.items():
        try:
            params, required, open_ended = constructor_parameters(get_class(target))
        except Exception:  # noqa: BLE001  (a task that does not import cannot have saved it)
            continue
        if required <= hparams and (open_ended or hparams <= params):
            return name, target
    return None


def check_checkpoint_task(ckpt_path: Path, checkpoint: dict, task_name: str, target: str, config_dir: Path) -> None:
    """Refuse a checkpoint of another task, naming both tasks."""
    from hydra.utils import get_class

    from core.checkpoint import check_task_class

    owner = owner_of(checkpoint, config_dir)
    if owner is not None and owner[1] != target:
        raise ValueError(
            f"ckpt_path={ckpt_path} is a checkpoint of task={owner[0]} ({owner[1]}), not of "
            f"task={task_name} ({target}); run predict.py task={owner[0]} ckpt_path={ckpt_path} ..."
        )
    check_task_class(ckpt_path, checkpoint, get_class(target))


def load_checked_task(cfg: DictConfig, config_dir: Path) -> tuple[pl.LightningModule, dict[str, Any]]:
    """The task rebuilt from ``cfg.ckpt_path`` alone, after checking it is a checkpoint of
    ``cfg.task_name``; returns (task, the raw checkpoint dict, loaded with weights_only=True)."""
    from hydra.utils import get_class

    from core.checkpoint import URL_SCHEME, load_task, read_checkpoint

    if not URL_SCHEME.match(str(cfg.ckpt_path)) and not Path(cfg.ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file")
    checkpoint = read_checkpoint(cfg.ckpt_path)
    path = Path(cfg.ckpt_path)
    target = cfg.task._target_
    check_checkpoint_task(path, checkpoint, cfg.task_name, target, config_dir)
    return load_task(path, get_class(target)), checkpoint


# --- the entry point's body -------------------------------------------------------------------------------


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Load the task from its checkpoint, predict every input file (resuming a run folder that holds
    finished ones), write the products and predict_summary.json; return the summary."""
    from hydra.utils import instantiate

    from core.resolvers import PROJECT_ROOT
    from core.training import instantiate_group, seed_run

    seed_run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    check_output_dir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    task, checkpoint = load_checked_task(cfg, PROJECT_ROOT / "conf")
    fresh = bool(cfg.get("fresh", False))
    record = checkpoint_record(cfg.ckpt_path)
    if not fresh:
        check_same_checkpoint(run_dir, record)
    hparams = escape_interpolations(OmegaConf.to_container(OmegaConf.create(dict(task.hparams))))
    with open_dict(cfg):  # the config records what the checkpoint holds (as data), not the training defaults
        cfg.task = OmegaConf.create({"_target_": cfg.task._target_, **hparams})

    writer: ProductWriter = instantiate(cfg.product.writer, _convert_="all")
    writer.run_dir = run_dir
    writer.checkpoint_record, writer.fresh = record, fresh
    writer.bind(task, checkpoint)
    done = {} if fresh else read_journals(run_dir)[0]
    datamodule = instantiate(
        cfg.product.inputs,
        prepare=writer.prepare,
        collate=writer.collate,
        exclude=set(done),
        reserved_names={r["name"] for r in done.values() if "name" in r},
    )
    expected = {"images": "ImageInputs", "videos": "VideoInputs"}[writer.input_kind]
    if type(datamodule).__name__ != expected:
        raise ValueError(
            f"product.inputs builds {type(datamodule).__name__}, but {type(writer).__name__} "
            f"reads {writer.input_kind} ({expected})"
        )
    writer.listed = [str(p) for p in datamodule.paths]
    check_inputs_unchanged(run_dir, done, writer.listed)
    writer.already_done = len(set(done) & set(writer.listed))
    if writer.already_done:
        log.info("Resuming: %d of %d inputs already predicted in %s", writer.already_done, len(writer.listed), run_dir)

    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=[writer, *instantiate_group(cfg.get("callbacks"))], logger=False
    )
    if trainer.is_global_zero:
        job = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
        job["task"] = OmegaConf.to_container(cfg.task, resolve=False)  # escaped: the checkpoint's values verbatim
        atomic_write_text(run_dir / "config_resolved.yaml", OmegaConf.to_yaml(job))
    trainer.predict(task, datamodule=datamodule, return_predictions=False)
    writer.finish(trainer)
    summary_path = run_dir / SUMMARY_FILE
    return json.loads(summary_path.read_text()) if summary_path.exists() else {}


# --- a system's own command line ----------------------------------------------------------------------------


def predict_files(
    task: pl.LightningModule,
    writer: ProductWriter,
    files: Sequence[tuple[Path, str]],
    read: Callable[[Path], Any],
    run_dir: Path,
    checkpoint: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """predict.py's steps in this process, for a system's own command line: ``writer`` bound to ``task``,
    each (file, output name) decoded by ``read`` (the reader of datamodules/predict_inputs.py's DataModule for
    the writer's ``input_kind``) and prepared by the writer, its batch through the task's ``predict_step``,
    and ``write_item`` into ``run_dir``. An unreadable file raises its own error (a command line has nothing
    to skip to), and there is no journal (nothing to resume or merge). One record per file: ``input``,
    ``name`` and what ``write_item`` returned."""
    writer.bind(task, checkpoint or {})
    task.eval()
    records = []
    with torch.no_grad():
        for batch_idx, (path, name) in enumerate(files):
            batch = writer.collate([writer.prepare(read(Path(path)))])
            batch.update(inputs=[str(path)], names=[name], input_stats=[{}], skipped=[])  # as predict.py's loader
            (prediction,) = task.predict_step(batch, batch_idx)
            records.append(
                {"input": str(path), "name": name, **writer.write_item(Path(run_dir), name, prediction, batch, 0)}
            )
    return records
