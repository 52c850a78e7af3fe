"""Helpers every DataModule shares: format errors that name the file, and on-demand generation."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional

from filelock import FileLock

log = logging.getLogger(__name__)


class DataFormatError(ValueError):
    """A data file does not follow its published format; the message names the file (and line)."""

    def __init__(self, path: str | Path, problem: str, line: Optional[int] = None):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = Path(path)
        self.line = line
        self.problem = problem

    def __reduce__(self):
        # Picklable with its own arguments: a job's error travels back through submitit/multiprocessing.
        return (type(self), (self.path, self.problem, self.line))


def require_file(path: str | Path, what: str = "file") -> Path:
    """Return ``path`` if it exists, else raise a FileNotFoundError that says what was expected."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: expected {what}, but it does not exist")
    return path


def ensure_generated(root: str | Path, generator: Optional[Callable[[Path], object]]) -> Path:
    """Make sure ``root`` holds a data set; if it is missing and a generator is given, write one.

    The generator writes into a temporary sibling folder that is renamed into place when done, so
    an interrupted generation never leaves a half data set that later runs would trust. A file
    lock keeps concurrent jobs (a sweep, DDP ranks) from generating twice."""
    root = Path(root)
    if root.exists():
        return root
    if generator is None:
        raise FileNotFoundError(
            f"{root}: data set not found. Point the data config's root at the data set "
            "(see the README for the expected layout), or set a generator to write a small one."
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):
        if root.exists():
            return root
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
        try:
            log.info("Generating data set into %s", root)
            generator(tmp)
            tmp.rename(root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    return root
