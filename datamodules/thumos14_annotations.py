"""THUMOS'14 annotation formats, readable without torch: the official per-class temporal
annotation files (``<Class>_<split>.txt``: lines ``video start end``) and the JSON database of the
pre-extracted form. The scoring command (``python -m tasks.talnet.evaluate``) reads them through
this module, so it never imports torch, Lightning or decord."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.data import DataFormatError, line_of_key, read_json, require_file

THUMOS14_CLASSES = (
    "BaseballPitch", "BasketballDunk", "Billiards", "CleanAndJerk", "CliffDiving",
    "CricketBowling", "CricketShot", "Diving", "FrisbeeCatch", "GolfSwing", "HammerThrow",
    "HighJump", "JavelinThrow", "LongJump", "PoleVault", "Shotput", "SoccerPenalty",
    "TennisSwing", "ThrowDiscus", "VolleyballSpiking",
)  # fmt: skip
AMBIGUOUS = "Ambiguous"
# Distinct videos named in the official temporal annotation files (the 20 classes + Ambiguous):
# TH14_Temporal_annotations_validation/annotation/*_val.txt and the test set's *_test.txt.
PUBLISHED_VIDEOS = {"Validation": 200, "Test": 213}
# Videos whose official annotations run past the video's end, as every THUMOS'14 user meets them
# (listed in makecent/mmtad my_data/thumos14/annotations/louis/thumos14_readme.md, items 4 and 7).
KNOWN_PAST_THE_END = (
    "video_validation_0000364",
    "video_validation_0000856",
    "video_test_0000814",
    "video_test_0001081",
    "video_test_0000270",
)


def _number(path: Path, video: str, where: str, value: Any, positive: bool = False) -> float:
    """A JSON number that is finite (and > 0 where ``positive``); NaN, Infinity (Python's json
    accepts both), strings and booleans are refused naming the file, line and key."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (positive and value <= 0) or value < 0:
        need = "a finite positive number" if positive else "a finite number >= 0"
        raise DataFormatError(path, f"{where} is {value!r}; expected {need}", line_of_key(path, video))
    return float(value)


def read_annotation_database(
    path: str | Path, classes: Sequence[str], fixes: list[SegmentFix] | None = None
) -> dict[str, dict[str, Any]]:
    """Parse and validate the JSON database; returns video -> {subset, duration, fps, segments
    (m, 2) seconds, labels (m,) class indices, ambiguous (k, 2)}. Segments are kept as published,
    unless a ``fixes`` list is given: then each is fitted into its video's duration (clipped, or
    dropped when nothing is left) and every change is appended there."""
    path = Path(path)
    data = read_json(path, "the JSON annotation database")
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise DataFormatError(path, 'expected a top-level object with a "database" object')
    index = {name: i for i, name in enumerate(classes)}
    videos: dict[str, dict[str, Any]] = {}
    for video, entry in data["database"].items():
        where = f"database.{video}"
        if not isinstance(entry, dict):
            raise DataFormatError(path, f"{where} is not an object", line_of_key(path, video))
        for key in ("subset", "duration", "fps", "annotations"):
            if key not in entry:
                raise DataFormatError(path, f'{where} has no "{key}"', line_of_key(path, video))
        duration = _number(path, video, f"{where}.duration", entry["duration"], positive=True)
        fps = _number(path, video, f"{where}.fps", entry["fps"], positive=True)
        if not isinstance(entry["annotations"], list):
            raise DataFormatError(path, f"{where}.annotations is not a list", line_of_key(path, video))
        segments, labels, ambiguous = [], [], []
        for k, ann in enumerate(entry["annotations"]):
            key = f"{where}.annotations[{k}]"
            segment = ann.get("segment") if isinstance(ann, dict) else None
            if not isinstance(segment, list) or len(segment) != 2 or "label" not in ann:
                raise DataFormatError(path, f'{key} needs "label" and a 2-number "segment"', line_of_key(path, video))
            start, end = (_number(path, video, f"{key}.segment", v) for v in segment)
            label = ann["label"]
            if not start <= end:
                raise DataFormatError(path, f"{key}: segment [{start}, {end}] is not ordered", line_of_key(path, video))
            if fixes is not None:
                fitted = fit_segment(start, end, duration)
                if fitted is None or end > duration:
                    line = line_of_key(path, video)
                    fixes.append(SegmentFix(path, line, key, video, start, end, duration, fitted is None))
                if fitted is None:
                    continue
                start, end = fitted
            if label == AMBIGUOUS:
                ambiguous.append((start, end))
                continue
            if label not in index:
                raise DataFormatError(path, f"{key}: unknown label {label!r}", line_of_key(path, video))
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


@dataclass(frozen=True)
class SegmentFix:
    """An annotated segment that does not fit inside its video: clipped to the video's end, or
    dropped when it starts at or after the end (or is empty once clipped). ``file`` and ``line``
    name the annotation; ``key`` its entry in a JSON database."""

    file: Path
    line: int | None
    key: str | None
    video: str
    start: float
    end: float
    duration: float
    dropped: bool

    @property
    def where(self) -> str:
        place = f"{self.file}:{self.line}" if self.line is not None else str(self.file)
        return f"{place}: {self.key}" if self.key else place

    @property
    def overshoot(self) -> float:
        """Seconds the segment ends past the video's end."""
        return self.end - self.duration

    def describe(self) -> str:
        segment = f"{self.video} segment [{self.start:g}, {self.end:g}]"
        if self.dropped:
            return f"{self.where}: {segment} lies at or after the video's end ({self.duration:.2f} s); dropped"
        return (
            f"{self.where}: {segment} ends {self.overshoot:.2f} s after the video's end ({self.duration:.2f} s); "
            f"clipped to [{self.start:g}, {self.duration:.2f}]"
        )


def fit_segment(start: float, end: float, duration: float) -> tuple[float, float] | None:
    """``[start, min(end, duration)]``, or None (dropped) when nothing of it is left."""
    end = min(end, duration)
    return (start, end) if end > start else None


def find_segment_fix(seg: AnnotatedSegment, duration: float) -> SegmentFix | None:
    """What fitting an official annotation line into its video changes (None: it fits)."""
    fitted = fit_segment(seg.start, seg.end, duration)
    if fitted is not None and seg.end <= duration:
        return None
    return SegmentFix(seg.file, seg.line, None, seg.video, seg.start, seg.end, float(duration), fitted is None)


def refuse_segment_fixes(fixes: Sequence[SegmentFix], tolerance: float) -> None:
    """Strict mode: a segment dropped, or clipped by more than ``tolerance`` seconds, is an error."""
    for fix in fixes:
        if fix.dropped or fix.overshoot > tolerance:
            place = f"{fix.file}:{fix.line}: " if fix.line is not None else f"{fix.file}: "
            problem = fix.describe().removeprefix(place)
            raise DataFormatError(fix.file, f"{problem} (data.strict_annotations=true refuses it)", fix.line)


def describe_defect(fix: SegmentFix, source: str | Path) -> str:
    """A segment fix as the download checker lists it: a published defect of the official
    annotations, or a sign that the video (or its features) was cut short."""
    if fix.video in KNOWN_PAST_THE_END:
        return f"{fix.describe()} [a published defect of the official annotations]"
    return f"{fix.describe()} [not a published defect: is {source} cut short?]"


def segment_fix_report(fixes: Sequence[SegmentFix]) -> dict[str, Any]:
    """The counts a run reports (data report, metrics.json) and one line per fix."""
    return {
        "segments_clipped": sum(not f.dropped for f in fixes),
        "segments_dropped": sum(f.dropped for f in fixes),
        "segment_fixes": [f.describe() for f in fixes],
    }
