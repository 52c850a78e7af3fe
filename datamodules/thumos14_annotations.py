"""THUMOS'14 annotation formats, readable without torch: the official per-class temporal
annotation files (``<Class>_<split>.txt``: lines ``video start end``) and the JSON database of the
pre-extracted form. The scoring command (``python -m tasks.talnet.evaluate``) reads them through
this module, so it never imports torch, Lightning or decord."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.data import DataFormatError, read_json, require_file

THUMOS14_CLASSES = (
    "BaseballPitch", "BasketballDunk", "Billiards", "CleanAndJerk", "CliffDiving",
    "CricketBowling", "CricketShot", "Diving", "FrisbeeCatch", "GolfSwing", "HammerThrow",
    "HighJump", "JavelinThrow", "LongJump", "PoleVault", "Shotput", "SoccerPenalty",
    "TennisSwing", "ThrowDiscus", "VolleyballSpiking",
)  # fmt: skip
AMBIGUOUS = "Ambiguous"


def read_annotation_database(path: str | Path, classes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Parse and validate the JSON database; returns video -> {subset, duration, fps, segments
    (m, 2) seconds, labels (m,) class indices, ambiguous (k, 2)}."""
    data = read_json(path, "the JSON annotation database")
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise DataFormatError(path, 'expected a top-level object with a "database" object')
    index = {name: i for i, name in enumerate(classes)}
    videos: dict[str, dict[str, Any]] = {}
    for video, entry in data["database"].items():
        where = f"database.{video}"
        for key in ("subset", "duration", "fps", "annotations"):
            if key not in entry:
                raise DataFormatError(path, f'{where} has no "{key}"')
        duration, fps = float(entry["duration"]), float(entry["fps"])
        if duration <= 0 or fps <= 0:
            raise DataFormatError(path, f"{where}: duration and fps must be positive")
        segments, labels, ambiguous = [], [], []
        for k, ann in enumerate(entry["annotations"]):
            try:
                label, (start, end) = ann["label"], (float(v) for v in ann["segment"])
            except (KeyError, TypeError, ValueError) as err:
                raise DataFormatError(path, f'{where}.annotations[{k}] needs "label" and a 2-number "segment"') from err
            if not 0 <= start <= end:
                raise DataFormatError(path, f"{where}.annotations[{k}]: segment [{start}, {end}] is not ordered")
            if label == AMBIGUOUS:
                ambiguous.append((start, end))
                continue
            if label not in index:
                raise DataFormatError(path, f"{where}.annotations[{k}]: unknown label {label!r}")
            segments.append((start, end))
            labels.append(index[label])
        videos[video] = {
            "subset": str(entry["subset"]),
            "duration": duration,
            "fps": fps,
            "segments": np.asarray(segments, dtype=np.float64).reshape(-1, 2),
            "labels": np.asarray(labels, dtype=np.int64),
            "ambiguous": np.asarray(ambiguous, dtype=np.float64).reshape(-1, 2),
        }
    return videos


def annotation_database(videos: dict[str, dict[str, Any]], classes: Sequence[str], version: str) -> dict:
    """The inverse of ``read_annotation_database``: a JSON-ready database."""
    database = {}
    for video, v in sorted(videos.items()):
        anns = [
            {"label": classes[int(c)], "segment": [float(s), float(e)], "label_id": int(c)}
            for (s, e), c in zip(v["segments"], v["labels"])
        ]
        anns += [{"label": AMBIGUOUS, "segment": [float(s), float(e)], "label_id": -1} for s, e in v["ambiguous"]]
        database[video] = {
            "subset": v["subset"],
            "duration": v["duration"],
            "fps": v["fps"],
            "annotations": anns,
        }
    return {"version": version, "database": database}


@dataclass(frozen=True)
class AnnotatedSegment:
    video: str
    start: float
    end: float
    label: str
    file: Path
    line: int


def parse_annotation_file(path: str | Path, label: str) -> list[AnnotatedSegment]:
    """Parse one ``<Class>_<split>.txt``: lines ``video start end``; blank lines are allowed."""
    path = require_file(path, f"the temporal annotation file of {label}")
    segments = []
    for number, text in enumerate(Path(path).read_text().splitlines(), start=1):
        fields = text.split()
        if not fields:
            continue
        if len(fields) != 3:
            raise DataFormatError(path, f"expected 'video start end', got {text.strip()!r}", number)
        try:
            start, end = float(fields[1]), float(fields[2])
        except ValueError:
            raise DataFormatError(path, f"start/end are not numbers: {text.strip()!r}", number) from None
        if not (np.isfinite(start) and np.isfinite(end)) or start < 0 or end < start:
            raise DataFormatError(path, f"segment [{start}, {end}] is not a valid interval", number)
        segments.append(AnnotatedSegment(fields[0], start, end, label, Path(path), number))
    return segments
