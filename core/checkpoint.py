"""Checkpoints written atomically beside their destination, and read through one safe reader.

Lightning's own ``TorchCheckpointIO`` saves through an fsspec transaction whose temporary file lives
in ``$TMPDIR``; when that is another file system (a node-local /tmp or /dev/shm under a shared run
folder) the final move is a copy, and a kill during it leaves ``last.ckpt`` truncated or 0 bytes
plus a checkpoint-sized file in ``$TMPDIR``. ``AtomicCheckpointIO`` writes through
``core.io.atomic_path`` instead: temporary beside the destination, fsync, rename.

Every checkpoint the project reads goes through ``read_checkpoint`` (a task: ``load_task``): a
checkpoint is a pickle, and an unrestricted unpickler runs whatever code the file names. The reader
passes ``weights_only=True`` explicitly, which ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (a setting
users keep for old checkpoints) cannot override, and refuses URLs, for which Lightning's own loader
falls back to ``weights_only=False``."""

from __future__ import annotations

import errno
import importlib
import inspect
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from core.io import atomic_path

# Written into every checkpoint by core.guards.StampTaskClass: which LightningModule saved it.
TASK_CLASS_KEY = "task_class"
# "http://", "s3://", ... and what pathlib leaves of them ("http:/host"); one-letter "C:/" is a drive.
URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = Path(path), problem

    def __reduce__(self):
        return (type(self), (self.path, self.problem))


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temporary beside the checkpoint, fsync, rename (local paths); remote
    URLs keep Lightning's fsspec path."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                # Through a Python file object, so a failed write surfaces as the OSError (ENOSPC,
                # EFBIG) instead of torch's "enforce fail ... unexpected pos".
                torch.save(checkpoint, f)
        except (OSError, RuntimeError) as err:
            code = failed_write_errno(err)
            if code is None and 0 <= free_bytes(Path(path).parent) < 1 << 20:
                code = errno.ENOSPC  # torch's own message only; a full disk is the usual cause
            if code is None and not isinstance(err, OSError):
                raise
            raise checkpoint_save_error(Path(path), code, err) from None

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        """What ``trainer.fit/test(ckpt_path=...)`` reads: through ``read_checkpoint`` (weights only)."""
        return read_checkpoint(path)


def failed_write_errno(err: BaseException) -> int | None:
    """The errno of the OSError behind a failed save: the error itself, or the one torch's zip
    writer was handling when it raised its own "enforce fail ... unexpected pos"."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno:
            return err.errno
        err = err.__cause__ or err.__context__
    return None


def free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return -1


def checkpoint_save_error(path: Path, code: int | None, err: BaseException) -> OSError:
    """One line naming the checkpoint and why its save failed (the previous file is kept)."""
    reason = os.strerror(code).lower() if code else str(err).strip().splitlines()[0]
    if code == errno.ENOSPC:
        reason += f" (the file system of {path.parent}; free space, or save elsewhere: paths.log_dir=...)"
    elif code == errno.EFBIG:
        reason += " (over the process's file-size limit, ulimit -f)"
    kept = f"the previous {path.name} is kept" if path.exists() else f"no {path.name} was written"
    error = OSError(f"{path}: cannot save the checkpoint: {reason}; {kept}")
    error.errno = code
    return error


def qualified_name(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def constructor_parameters(cls: type) -> tuple[set[str], set[str], bool]:
    """(all named parameters, required ones, whether ``**kwargs`` reaches an unknown base) of a class,
    following ``**kwargs`` up the MRO as far as the bases name their parameters."""
    names, required = set(), set()
    for klass in cls.__mro__:
        if klass is object or "__init__" not in vars(klass):
            continue
        try:
            params = inspect.signature(klass.__init__).parameters.values()
        except (TypeError, ValueError):
            return names, required, True
        var_kw = False
        for p in list(params)[1:]:
            if p.kind is p.VAR_KEYWORD:
                var_kw = True
            elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                if p.name not in names and p.default is p.empty:
                    required.add(p.name)
                names.add(p.name)
        if not var_kw:
            return names, required, False
        if klass.__module__.startswith(("pytorch_lightning", "lightning", "torch")):
            return names, required, False  # LightningModule's own **kwargs do not take hparams
    return names, required, True


def read_checkpoint(path: str | Path, task_class: type | None = None, rebuild: bool = False) -> dict[str, Any]:
    """Open a Lightning checkpoint (memory-mapped, tensors not copied) and check that it is whole
    and, when ``task_class`` is given, that it was saved by that task; with ``rebuild`` (the task
    will be built from the checkpoint's hyper-parameters) an unstamped checkpoint's hyper-parameters
    must fit the task's constructor. Raises CheckpointError with a one-line reason: empty,
    truncated, not a checkpoint, another task's, a URL. Always ``weights_only=True``: nothing in the
    file runs, whatever ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` says."""
    if URL_SCHEME.match(str(path)):
        raise CheckpointError(
            path,
            "checkpoint URLs are not read (a downloaded checkpoint is a pickle that can carry code); "
            "download it yourself from a source you trust and pass the local file",
        )
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(
            path,
            "checkpoint is empty (0 bytes): the save that wrote it was interrupted; "
            "resume from another checkpoint of the run (ckpt_path=<file>) or start a new run",
        )
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            path, f"checkpoint is truncated or not a PyTorch checkpoint ({size} bytes, no zip directory at its end)"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001  (any unpickling failure becomes one line)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(path, f"cannot be read as a checkpoint ({type(err).__name__}: {first})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        keys = list(checkpoint)[:6] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(
            path,
            f"not a Lightning checkpoint (no 'state_dict'; holds {keys}); plain weights go "
            "to the task's pretrained_path instead",
        )
    if task_class is not None:
        check_task_class(path, checkpoint, task_class, rebuild)
    return checkpoint


def check_task_class(path: Path, checkpoint: dict[str, Any], task_class: type, rebuild: bool = True) -> None:
    """Refuse a checkpoint saved by another task: by its stamp, or, for checkpoints without one
    that the task is to be rebuilt from, by hyper-parameters its constructor does not take."""
    expected = qualified_name(task_class)
    stamped = checkpoint.get(TASK_CLASS_KEY)
    if stamped and stamped != expected:
        raise CheckpointError(
            path,
            f"checkpoint of {stamped}, but the task is {expected}; choose the task it was "
            "trained with (task=<its config>)",
        )
    if stamped or not rebuild:
        return
    hparams = checkpoint.get("hyper_parameters") or {}
    names, required, open_ended = constructor_parameters(task_class)
    unknown = sorted(set(hparams) - names) if not open_ended else []
    missing = sorted(required - set(hparams))
    if unknown or (missing and hparams):
        detail = f"unknown {unknown[:5]}" if unknown else f"missing {missing[:5]}"
        raise CheckpointError(
            path,
            f"its hyper-parameters do not fit {expected} ({detail}): a checkpoint of another "
            "task? choose the task it was trained with (task=<its config>)",
        )


def load_task(path: str | Path, task_class: type, map_location: Any = "cpu"):
    """``task_class`` rebuilt from the checkpoint at ``path`` alone (hyper-parameters + weights), once
    ``read_checkpoint`` found it whole and saved by that task; Lightning's loader then runs with
    ``weights_only=True`` passed explicitly, so no environment setting turns unpickling loose. The
    weights are the checkpoint's: a task trained from timm's published ones (``pretrained``) is rebuilt
    without them, so evaluating needs no Hugging Face cache."""
    hparams = read_checkpoint(path, task_class, rebuild=True).get("hyper_parameters") or {}
    overrides = {"pretrained": False} if hparams.get("pretrained") else {}
    try:
        return task_class.load_from_checkpoint(Path(path), map_location=map_location, weights_only=True, **overrides)
    except (TypeError, KeyError) as err:
        raise CheckpointError(path, f"does not fit {qualified_name(task_class)} ({err})") from None


def load_stamped_task(path: str | Path, map_location: Any = "cpu"):
    """The task named by a checkpoint's ``task_class`` stamp, rebuilt from the checkpoint alone: how a system
    uses another system's trained model (Photobooth the face-mesh system's detector) as a checkpoint, by
    the name it carries as a config's ``_target_`` does, without importing that system's room."""
    stamped = read_checkpoint(path).get(TASK_CLASS_KEY)
    if not isinstance(stamped, str) or "." not in stamped:
        raise CheckpointError(path, "carries no task_class stamp, so which task saved it is unknown")
    module, _, name = stamped.rpartition(".")
    if not module.startswith("tasks."):  # the stamp is data: it may name a task of this project, nothing else
        raise CheckpointError(path, f"names {stamped!r} as its task, which is not a task of this project (tasks.*)")
    try:
        task_class = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise CheckpointError(path, f"saved by {stamped}, which this code base does not have") from None
    if not (isinstance(task_class, type) and issubclass(task_class, pl.LightningModule)):
        raise CheckpointError(path, f"names {stamped!r} as its task, which is not a LightningModule")
    return load_task(path, task_class, map_location)
