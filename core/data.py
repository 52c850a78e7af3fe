"""Helpers every DataModule and scoring command shares: format errors that name the file (and line),
the CSV reader, and on-demand generation. Standard library only at import (scoring CLIs use it)."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)


class DataFormatError(ValueError):
    """A data file does not follow its published format; the message names the file (and line)."""

    def __init__(self, path: str | Path, problem: str, line: int | None = None):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = Path(path)
        self.line = line
        self.problem = problem

    def __reduce__(self):
        # Picklable with its own arguments: a job's error travels back through submitit/multiprocessing.
        return (type(self), (self.path, self.problem, self.line))


@runtime_checkable
class CountsSkippedSamples(Protocol):
    """The contract of a DataModule that can skip bad samples instead of failing: it has
    ``skipped_samples``, the number skipped so far (all splits, all DataLoader workers of this
    process), which callbacks.skipped_samples.ReportSkippedSamples logs and warns about each epoch.
    A DataModule that never skips has no such attribute."""

    skipped_samples: int


def require_file(path: str | Path, what: str = "file") -> Path:
    """Return ``path`` if it exists, else raise a FileNotFoundError that says what was expected."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: expected {what}, but it does not exist")
    return path


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Parse a JSON data file. A missing file raises FileNotFoundError saying what was expected;
    unreadable bytes or invalid JSON raise DataFormatError with the file, line and column."""
    path = require_file(path, what)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataFormatError(path, f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise DataFormatError(path, f"cannot read {what} ({err.strerror or err})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataFormatError(path, f"not valid JSON: {err.msg} (column {err.colno})", err.lineno) from None
    except RecursionError:  # the decoder recurses per nesting level; no published file comes near
        raise DataFormatError(
            path, f"JSON nested too deeply for the reader (over about {sys.getrecursionlimit()} levels)"
        ) from None


def csv_rows(path: str | Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every non-empty row of a CSV file (UTF-8, ``csv`` module dialect);
    a missing file is a FileNotFoundError, unreadable bytes or quoting a DataFormatError naming the
    line. Take the header from the same iterator with :func:`csv_header`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: expected a CSV file, but it does not exist")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            for row in reader:
                if row:
                    yield reader.line_num, row
        except (csv.Error, UnicodeDecodeError) as err:
            raise DataFormatError(path, f"not a readable CSV ({err})", reader.line_num) from None


def csv_header(
    path: str | Path,
    rows: Iterator[tuple[int, list[str]]],
    columns: Sequence[str],
    *,
    exact: bool = False,
    what: str = "",
) -> dict[str, int]:
    """Read the header from ``rows`` (a :func:`csv_rows` iterator, which then yields the data rows)
    and return ``{column name: index}`` (names stripped of spaces).

    ``exact``: the header must be ``columns``, in order; otherwise it must contain each of them,
    anywhere, other columns allowed (layouts that differ between releases, found by name). A wrong
    header is a DataFormatError naming the file, its line and the expected columns (``what``, e.g.
    "the recognition solution", is added to the message); so is an empty file."""
    expected = list(columns)
    suffix = f" ({what})" if what else ""
    for line, row in rows:
        names = [name.strip() for name in row]
        if exact and names != expected:
            raise DataFormatError(path, f"header {row}; expected {expected}{suffix}", line)
        missing = [c for c in expected if c not in names]
        if missing:
            raise DataFormatError(path, f"header {row} lacks column(s) {missing}; expected {expected}{suffix}", line)
        return {name: i for i, name in enumerate(names)}
    raise DataFormatError(path, f"empty file; expected the header {expected}{suffix}")


def resolve_inside(root: str | Path, name: str, file: str | Path, line: int | None = None, suffix: str = "") -> Path:
    """``root / (name + suffix)`` for a ``name`` read from a data file, refusing any name that would
    leave ``root`` (``..``, an absolute path, a symlinked escape): a data file never acts outside
    its folder. The error names ``file`` and ``line``."""
    root = Path(root)
    text = str(name)
    if not text or "\x00" in text or os.path.isabs(text) or text.startswith("~"):
        raise DataFormatError(
            file, f"name {text!r} is empty or an absolute path, not a name inside {root}; refused", line
        )
    if ".." in text.split(os.sep):
        raise DataFormatError(file, f"name {text!r} steps out of {root} with '..'; refused", line)
    candidate = root / (text + suffix)
    # Only a symlink among the components the name adds can lead out (root itself may be a link to
    # another disk): one lstat per component (string paths: pathlib costs more than the syscall), the
    # full resolution only when one is a link. Resolving every name took minutes on an Open Images split.
    step = str(root)
    for part in (text + suffix).split(os.sep):
        step = os.path.join(step, part)
        if os.path.islink(step):
            try:
                candidate.resolve().relative_to(root.resolve())
            except ValueError:
                raise DataFormatError(file, f"name {text!r} resolves outside {root}; refused", line) from None
            break
    return candidate


def resolve_inside_json(root: str | Path, name: str, file: str | Path, suffix: str = "") -> Path:
    """:func:`resolve_inside` for a name read from a JSON file: the error names the line that holds
    the name, looked up only when the name is refused (a file of 10^5 names is not rescanned per name)."""
    try:
        return resolve_inside(root, name, file, None, suffix)
    except DataFormatError:
        return resolve_inside(root, name, file, line_of_key(file, name), suffix)


def line_of_key(path: str | Path, key: str) -> int | None:
    """The first line of a JSON file that holds ``"key"``, to name it in an error (None if absent)."""
    import json

    needle = json.dumps(key)
    try:
        for number, text in enumerate(Path(path).read_text().splitlines(), start=1):
            if needle in text:
                return number
    except (OSError, UnicodeDecodeError):
        return None
    return None


def ensure_generated(root: str | Path, generator: Callable[[Path], object] | None) -> Path:
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
    from filelock import FileLock  # here: the scoring CLIs that import this module never lock

    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):
        if root.exists():
            return root
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; a shared data folder must follow the umask
        try:
            log.info("Generating data set into %s", root)
            generator(tmp)
            tmp.rename(root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    return root


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
