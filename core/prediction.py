"""What predict.py does: run a trained task on a user's own files and write its product.

The plug-in point is ``ProductWriter``, a Lightning prediction writer that each system subclasses in
``tasks/<system>/predict.py`` (see docs/ARCHITECTURE.md, "Prediction"). It says how one input file
becomes a sample (``prepare``, run in the DataLoader workers) and a batch (``collate``), what each
prediction leaves on disk (``write_item``, on the rank that made it), and what the whole set leaves
(``merge``, once, on rank 0, after every rank finished). The task's ``predict_step`` turns the batch
into one prediction per input.

Every finished input is recorded in ``<run dir>/predictions/journal_rank<r>.jsonl`` after its files
are written, so a run started again in the same folder skips what is done (resume), and under DDP
rank 0 merges the journals of all ranks into the products."""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
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
        for k, (path, name) in enumerate(zip(batch["inputs"], batch["names"])):
            record = self.write_item(Path(self.run_dir), name, prediction[k], batch, k)
            records.append({"input": path, "name": name, **record})
        for path, reason in batch["skipped"]:
            warnings.warn(f"skipping unreadable input: {reason}", stacklevel=1)
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
                f"none of the {len(listed)} input files could be read ({len(skipped)} skipped: {reasons})"
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
                    f"{len(skipped)} of {len(listed)} input files were unreadable and skipped: "
                    + ", ".join(sorted(skipped)),
                    stacklevel=1,
                )
            log.info(
                "Predicted %d of %d inputs (%d skipped) into %s", len(done), len(listed), len(skipped), self.run_dir
            )
        trainer.strategy.barrier("predict_products")


def append_journal(path: Path, records: Sequence[dict]) -> None:
    """Append records as JSON lines, flushed to disk, so a killed run keeps what it finished."""
    if not records:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
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

    from core.checkpoint import read_checkpoint

    path = Path(cfg.ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={path}: no such checkpoint file")
    checkpoint = read_checkpoint(path)
    target = cfg.task._target_
    check_checkpoint_task(path, checkpoint, cfg.task_name, target, config_dir)
    task = get_class(target).load_from_checkpoint(path, map_location="cpu")
    return task, checkpoint


# --- the entry point's body -------------------------------------------------------------------------------


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Load the task from its checkpoint, predict every input file (resuming a run folder that holds
    finished ones), write the products and predict_summary.json; return the summary."""
    from hydra.utils import instantiate

    from core.resolvers import PROJECT_ROOT
    from core.training import instantiate_group

    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    task, checkpoint = load_checked_task(cfg, PROJECT_ROOT / "conf")
    with open_dict(cfg):  # the config records what the checkpoint holds, not the training defaults
        cfg.task = OmegaConf.create({"_target_": cfg.task._target_, **dict(task.hparams)})

    writer: ProductWriter = instantiate(cfg.product.writer, _convert_="all")
    writer.run_dir = run_dir
    writer.bind(task, checkpoint)
    done, _ = read_journals(run_dir)
    datamodule = instantiate(cfg.product.inputs, prepare=writer.prepare, collate=writer.collate, exclude=set(done))
    expected = {"images": "ImageInputs", "videos": "VideoInputs"}[writer.input_kind]
    if type(datamodule).__name__ != expected:
        raise ValueError(
            f"product.inputs builds {type(datamodule).__name__}, but {type(writer).__name__} "
            f"reads {writer.input_kind} ({expected})"
        )
    writer.listed = [str(p) for p in datamodule.paths]
    writer.already_done = len(set(done) & set(writer.listed))
    if writer.already_done:
        log.info("Resuming: %d of %d inputs already predicted in %s", writer.already_done, len(writer.listed), run_dir)

    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=[writer, *instantiate_group(cfg.get("callbacks"))], logger=False
    )
    if trainer.is_global_zero:
        job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        atomic_write_text(
            run_dir / "config_resolved.yaml", OmegaConf.to_yaml(OmegaConf.to_container(job, resolve=True))
        )
    trainer.predict(task, datamodule=datamodule, return_predictions=False)
    writer.finish(trainer)
    summary_path = run_dir / SUMMARY_FILE
    return json.loads(summary_path.read_text()) if summary_path.exists() else {}
