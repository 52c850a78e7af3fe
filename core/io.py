"""Atomic file writes: a killed process leaves either the old file or the new one, never half.

The temporary file is created beside its destination (same folder, hence same file system, never
``$TMPDIR``), written, fsync'ed and renamed over the destination; a rename within one file system
is atomic, a move across file systems is a copy that a kill can leave truncated. Temporaries of a
killed writer keep a recognisable name (``.<name>.tmp-<host>-<pid>-<random><suffix>``) and
``remove_stale_temporaries`` deletes them when the next run starts. Files and folders get the
permissions the user's umask allows, like any file ``open()`` creates (not mkstemp's 0600)."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TMP_MARK = ".tmp-"
# A temporary of another machine (shared file system) counts as stale only after this long.
FOREIGN_STALE_SECONDS = 6 * 3600


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_dirs(path: str | os.PathLike) -> Path:
    """``mkdir -p`` that respects the umask (``Path.mkdir`` already does; this names the intent)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _host() -> str:
    return socket.gethostname().split(".")[0].replace("-", "_") or "host"


def temporary_name(path: Path) -> Path:
    """The name a temporary of ``path`` gets: hidden, beside it, marked with host and pid."""
    return path.parent / f".{path.name}{TMP_MARK}{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    Use it for writers that want a file name (``np.save``, ``torch.save``, video encoders). The
    writer's file is fsync'ed before the rename, so a crash never leaves a renamed empty file."""
    path = Path(path)
    make_dirs(path.parent)
    tmp_path = temporary_name(path)
    # Created the way open() creates files, so it gets 0666 & ~umask (mkstemp would give 0600).
    os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (fsync before the rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON; tensors and numpy scalars become plain numbers."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=_to_builtin) + "\n")


def _to_builtin(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Delete temporaries that ``atomic_path`` writers left when they were killed.

    A temporary is stale when its writer (host and pid in its name) no longer runs on this host,
    or, for another host, when it is older than ``FOREIGN_STALE_SECONDS``. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    host = _host()
    candidates = folder.rglob(f".*{TMP_MARK}*") if recursive else folder.glob(f".*{TMP_MARK}*")
    for tmp in candidates:
        if not tmp.is_file():
            continue
        owner = tmp.name.rsplit(TMP_MARK, 1)[1].split("-")
        if len(owner) < 3 or not owner[1].isdigit():
            continue
        writer_host, pid = owner[0], int(owner[1])
        try:
            age = time.time() - tmp.stat().st_mtime
        except FileNotFoundError:
            continue
        stale = (not _pid_alive(pid)) if writer_host == host else age > FOREIGN_STALE_SECONDS
        if stale:
            try:
                tmp.unlink()
            except FileNotFoundError:
                continue
            removed.append(tmp)
    if removed:
        log.warning("removed %d stale temporary files of killed writers in %s", len(removed), folder)
    return removed
