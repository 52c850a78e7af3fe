"""The Google-Landmarks-v2 competitions' CSV files, read with the standard library only (the scoring
CLI imports no torch): solution files and submissions, with errors naming the file and line.

- Solution files ``id,landmarks,Usage`` (recognition; empty landmarks = a non-landmark query) and
  ``id,images,Usage`` (retrieval). Usage is ``Public``, ``Private`` or ``Ignored``; Ignored rows are
  dropped, the two others are scored separately.
- Submissions ``id,landmarks`` (``<landmark_id> <score>``) and ``id,images`` (space-separated index
  ids, best first). As the official reader (tensorflow/models research/delf ... dataset_file_io.py):
  empty rows are skipped, a repeated query id is an error, Ignored ids are skipped, an empty
  prediction means "no prediction", an id not in the solution is an error."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from core.data import DataFormatError, csv_header, csv_rows

RECOGNITION = "recognition"
RETRIEVAL = "retrieval"
TRACKS = (RECOGNITION, RETRIEVAL)
USAGES = ("Public", "Private")
SOLUTION_COLUMN = {RECOGNITION: "landmarks", RETRIEVAL: "images"}


def _check_track(track: str) -> None:
    if track not in TRACKS:
        raise ValueError(f"track {track!r}: expected one of {TRACKS}")


def read_solution(path: str | Path, track: str) -> tuple[dict[str, dict[str, list]], set[str]]:
    """``({"Public": {id: truth}, "Private": {id: truth}}, ignored ids)`` from a solution CSV.
    Recognition truth is a list of int landmark ids (empty: non-landmark); retrieval truth a list
    of index image ids."""
    _check_track(track)
    expected = ["id", SOLUTION_COLUMN[track], "Usage"]
    solution: dict[str, dict[str, list]] = {u: {} for u in USAGES}
    ignored: set[str] = set()
    seen: set[str] = set()
    rows = csv_rows(path)
    csv_header(path, rows, expected, exact=True, what=f"the {track} solution")
    for line, row in rows:
        if len(row) != 3:
            raise DataFormatError(path, f"{len(row)} columns; expected 3 ({','.join(expected)})", line)
        query, truth, usage = row
        if query in seen:
            raise DataFormatError(path, f"query {query!r} appears twice", line)
        seen.add(query)
        if usage == "Ignored":
            ignored.add(query)
            continue
        if usage not in USAGES:
            raise DataFormatError(path, f"Usage {usage!r}; expected Public, Private or Ignored", line)
        if track == RECOGNITION:
            try:
                ids: list = [int(t) for t in truth.split(" ")] if truth else []
            except ValueError:
                raise DataFormatError(path, f"landmarks {truth!r} are not space-separated integers", line) from None
        else:
            # As the official reader: the field split on single spaces (an empty field is one
            # relevant id "" that no prediction can match, so the query scores 0).
            ids = truth.split(" ")
        solution[usage][query] = ids
    return solution, ignored


def read_submission(path: str | Path, track: str, solution: Mapping[str, Mapping[str, list]], ignored: Iterable[str]):
    """``{"Public": {id: prediction}, "Private": {...}}`` from a submission CSV scored against
    ``solution`` (from :func:`read_solution`). A recognition prediction is ``(landmark_id, score)``,
    a retrieval one the list of index ids. The first row is the header (``id,landmarks`` or
    ``id,images``)."""
    _check_track(track)
    ignored = set(ignored)
    owner = {q: usage for usage, part in solution.items() for q in part}
    predictions: dict[str, dict] = {u: {} for u in USAGES}
    seen: set[str] = set()
    rows = csv_rows(path)
    expected = ["id", SOLUTION_COLUMN[track]]
    # exactly: the official reader looks the prediction up by column name (``id,landmark`` has none)
    csv_header(path, rows, expected, exact=True, what=f"the {track} submission")
    for line, row in rows:
        if len(row) < 2:
            raise DataFormatError(path, f"{len(row)} column; expected 2 ({','.join(expected)})", line)
        query, text = row[0], row[1]
        if query in seen:
            raise DataFormatError(path, f"query {query!r} appears twice", line)
        seen.add(query)
        if query in ignored or not text:
            continue
        tokens = text.split(" ")
        if not tokens[-1]:
            tokens = tokens[:-1]
        if track == RECOGNITION:
            if len(tokens) != 2:
                raise DataFormatError(
                    path, f"prediction {text!r} has {len(tokens)} fields; expected '<landmark_id> <score>'", line
                )
            try:
                entry: object = (int(tokens[0]), float(tokens[1]))
            except ValueError:
                raise DataFormatError(path, f"prediction {text!r} is not '<landmark_id> <score>'", line) from None
            if not math.isfinite(entry[1]):  # a NaN has no rank: all-NaN would give GAP 1.0
                raise DataFormatError(path, f"score {tokens[1]!r} is not a finite number", line)
        else:
            entry = tokens
        if query not in owner:
            raise DataFormatError(path, f"query {query!r} is not in the solution", line)
        predictions[owner[query]][query] = entry
    return predictions


def recognition_rows(predictions: Mapping[str, tuple[int, float] | None]) -> list[list[str]]:
    """Submission rows ``id,landmarks`` (``<landmark_id> <score>``; empty without prediction)."""
    rows = [["id", "landmarks"]]
    for query, pred in predictions.items():
        rows.append([query, "" if pred is None else f"{int(pred[0])} {float(pred[1]):.6f}"])
    return rows


def retrieval_rows(predictions: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Submission rows ``id,images`` (index ids best first, space-separated)."""
    return [["id", "images"], *([q, " ".join(images)] for q, images in predictions.items())]
