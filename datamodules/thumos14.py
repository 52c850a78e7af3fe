"""THUMOS'14 as published: raw videos plus one temporal-annotation text file per class and split.

Layout under ``root`` (the folders of the official zips)::

    videos/validation/video_validation_0000051.mp4 ...
    videos/test/video_test_0000004.mp4 ...
    TH14_Temporal_annotations_validation/annotation/<Class>_val.txt   (20 classes + Ambiguous_val.txt)
    TH14_Temporal_Annotations_Test/annotations/annotation/<Class>_test.txt

Each annotation line is ``<video name> <start seconds> <end seconds>``. Only the videos named in the
annotation files take part (200 validation, 213 test videos in the real set). ``prepare_data``
extracts two-stream snippet features into ``<root>/<features_subdir>/`` (resumable) together with
the JSON database of the pre-extracted form, which the features DataModule then reads.

The official annotations hold segments past the end of their video (e.g. HighJump_val.txt:
video_validation_0000364 113.6 117.3 in a 112.53 s video): such a segment is clipped to the
video's end, one lying wholly past it dropped, each reported once (file, line, video, by how much)
and counted in ``extraction_report.json`` and the run's ``data_report``."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from core.data import ensure_generated, require_file, resolve_inside
from core.io import atomic_write_json, remove_stale_temporaries
from core.video import VideoDecodeError
from datamodules.thumos14_annotations import (  # re-exported: the published formats
    AMBIGUOUS,
    PUBLISHED_VIDEOS,
    THUMOS14_CLASSES,
    AnnotatedSegment,
    SegmentFix,
    annotation_database,
    describe_defect,
    find_segment_fix,
    fit_segment,
    parse_annotation_file,
    refuse_segment_fixes,
    segment_fix_report,
)
from datamodules.thumos14_extract import SnippetFeatureExtractor, video_duration
from datamodules.thumos14_features import Thumos14FeaturesDataModule

log = logging.getLogger(__name__)

SPLITS = {
    # split: (video folder, annotation folder, file suffix, database subset)
    "validation": (
        "videos/validation",
        "TH14_Temporal_annotations_validation/annotation",
        "val",
        "Validation",
    ),
    "test": (
        "videos/test",
        "TH14_Temporal_Annotations_Test/annotations/annotation",
        "test",
        "Test",
    ),
}
DATABASE_NAME = "thumos14.json"


def read_split_annotations(root: str | Path, split: str, classes: Sequence[str]) -> list[AnnotatedSegment]:
    """All segments of a split: the class files and ``Ambiguous_<suffix>.txt``."""
    _, folder, suffix, _ = SPLITS[split]
    directory = Path(root) / folder
    segments = []
    for label in [*classes, AMBIGUOUS]:
        segments += parse_annotation_file(directory / f"{label}_{suffix}.txt", label)
    return segments


def fit_video_segments(
    segments: Sequence[AnnotatedSegment], duration: float
) -> tuple[list[AnnotatedSegment], list[SegmentFix]]:
    """The segments of one video fitted into its ``duration`` (clipped, or dropped when nothing
    is left) and what changed."""
    kept, fixes = [], []
    for seg in segments:
        fix = find_segment_fix(seg, duration)
        if fix is not None:
            fixes.append(fix)
        fitted = fit_segment(seg.start, seg.end, duration)
        if fitted is not None:
            kept.append(AnnotatedSegment(seg.video, *fitted, seg.label, seg.file, seg.line))
    return kept, fixes


class Thumos14DataModule(Thumos14FeaturesDataModule):
    """THUMOS'14 from raw videos: validates the published layout, extracts snippet features once
    (resumably), then serves them like the pre-extracted form."""

    def __init__(
        self,
        root: str,
        extractor: SnippetFeatureExtractor,
        feature_dim: int,
        num_classes: int = 20,
        class_names: list[str] | None = None,
        modalities: Sequence[str] = ("rgb", "flow"),
        features_subdir: str = "features/test_resnet_random",
        annotation_tolerance: float = 1.0,
        strict_annotations: bool = False,
        val_subset: str | None = None,
        batch_size: int = 4,
        num_workers: int = 0,
        generator: Callable[[Path], object] | None = None,
        val_fraction: float = 0.2,
        split_seed: int = 0,
        allow_test_selection: bool = False,
    ):
        features_dir = Path(root) / features_subdir
        super().__init__(
            features_dir=str(features_dir),
            annotation_file=str(features_dir / DATABASE_NAME),
            feature_dim=feature_dim,
            num_classes=num_classes,
            class_names=class_names,
            modalities=modalities,
            feat_stride=extractor.feat_stride,
            num_frames=extractor.num_frames,
            val_subset=val_subset,
            batch_size=batch_size,
            num_workers=num_workers,
            val_fraction=val_fraction,
            split_seed=split_seed,
            allow_test_selection=allow_test_selection,
            strict_annotations=strict_annotations,
            annotation_tolerance=annotation_tolerance,
        )
        self.root, self.extractor, self.generator = Path(root), extractor, generator
        self.report = None
        self.skipped_samples = 0

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        report = self.features_dir / "extraction_report.json"
        rank = getattr(self.trainer, "global_rank", 0) if self.trainer is not None else 0
        if report.exists():
            import json

            saved = json.loads(report.read_text())
            self.earlier_report = {key: saved.get(key, value) for key, value in self.earlier_report.items()}
            if rank == 0:  # counted once, whatever the number of ranks
                self.skipped_samples = len(saved["unreadable"])

    def download_inventory(self):
        """For ``python -m datamodules.check``: every video the official annotation files name
        (decoded to its last frame), the videos per split against the official counts, and, from
        each video's decoded duration, the segments past its end. Extracts nothing."""
        from datamodules.check import DownloadInventory, ReferencedFile

        files, segments, counts = [], {}, {}
        for split, (video_folder, _, _, subset) in SPLITS.items():
            by_video: dict[str, list[AnnotatedSegment]] = {}
            for seg in read_split_annotations(self.root, split, self.class_names):
                by_video.setdefault(seg.video, []).append(seg)
            counts[f"{subset} videos"] = (len(by_video), PUBLISHED_VIDEOS[subset])
            for name, segs in by_video.items():
                path = resolve_inside(self.root / video_folder, name, segs[0].file, segs[0].line, ".mp4")
                files.append(ReferencedFile(path, f"{segs[0].file}:{segs[0].line}"))
                segments[path] = segs

        def review(facts: dict[Path, dict]) -> tuple[list[str], list[str]]:
            defects = []
            for path, segs in segments.items():
                if path in facts:
                    _, fixes = fit_video_segments(segs, facts[path]["duration"])
                    defects += [describe_defect(fix, path) for fix in fixes]
            return [], defects

        return DownloadInventory(files=files, counts=counts, review=review)

    def prepare_data(self) -> None:
        ensure_generated(self.root, self.generator)
        if self.extractor.feature_dim != self.feature_dim:
            raise ValueError(
                f"data.feature_dim={self.feature_dim} but the {self.extractor.backbone} extractor "
                f"gives {self.extractor.feature_dim} features per stream"
            )
        self.report = prepare_features(
            self.root,
            self.features_dir,
            self.extractor,
            self.class_names,
            self.annotation_tolerance if self.strict_annotations else None,
        )


def prepare_features(
    root: Path,
    features_dir: Path,
    extractor: SnippetFeatureExtractor,
    classes: Sequence[str] = THUMOS14_CLASSES,
    strict_tolerance: float | None = None,
):
    """Validate the raw layout, extract features of every annotated video that lacks them, and
    write the JSON database and an extraction report into ``features_dir``. Segments are fitted
    into their video (clipped or dropped, each logged and listed in the report); with
    ``strict_tolerance`` (seconds) a segment dropped or clipped by more than that is an error."""
    features_dir = Path(features_dir)
    remove_stale_temporaries(features_dir)  # .npy temporaries of a killed extraction
    settings_file = features_dir / "extractor.json"
    settings = extractor.settings()
    if settings_file.exists():
        import json

        previous = json.loads(settings_file.read_text())
        if previous != json.loads(json.dumps(settings)):
            raise ValueError(
                f"{settings_file}: features there were extracted with {previous}, not {settings}; "
                "choose another data.features_subdir or delete that folder"
            )
    else:
        atomic_write_json(settings_file, settings)
    videos, paths = {}, {}
    for split, (video_folder, _, _, subset) in SPLITS.items():
        by_video: dict[str, list[AnnotatedSegment]] = {}
        for seg in read_split_annotations(root, split, classes):
            by_video.setdefault(seg.video, []).append(seg)
        for name, segs in by_video.items():
            path = require_file(
                resolve_inside(root / video_folder, name, segs[0].file, segs[0].line, ".mp4"),
                f"the video named in {segs[0].file}",
            )
            paths[name] = path
            videos[name] = (subset, segs)
    # durations first: annotations are fitted (or, strictly, refused) before hours of extraction
    durations, unreadable, fitted, fixes = {}, {}, {}, []
    for name, (_, segs) in videos.items():
        try:
            durations[name] = video_duration(paths[name])
        except VideoDecodeError as err:
            unreadable[name] = str(err)
            continue
        fitted[name], found = fit_video_segments(segs, durations[name])
        if strict_tolerance is not None:
            refuse_segment_fixes(found, strict_tolerance)
        fixes += found
    report = extractor.extract_videos({n: p for n, p in paths.items() if n not in unreadable}, features_dir)
    report.unreadable.update(unreadable)
    index = {c: i for i, c in enumerate(classes)}
    database = {}
    for name, (subset, _) in videos.items():
        if name in report.unreadable:
            continue
        actions = [s for s in fitted[name] if s.label != AMBIGUOUS]
        ambiguous = [s for s in fitted[name] if s.label == AMBIGUOUS]
        database[name] = {
            "subset": subset,
            "duration": durations[name],
            "fps": extractor.fps,
            "segments": np.array([[s.start, s.end] for s in actions]).reshape(-1, 2),
            "labels": np.array([index[s.label] for s in actions], dtype=np.int64),
            "ambiguous": np.array([[s.start, s.end] for s in ambiguous]).reshape(-1, 2),
        }
    fixes.sort(key=lambda f: (str(f.file), f.line or 0))
    for fix in fixes:
        log.warning("%s", fix.describe())
    atomic_write_json(features_dir / DATABASE_NAME, annotation_database(database, classes, "thumos14-extracted"))
    atomic_write_json(
        features_dir / "extraction_report.json",
        {
            "extracted": len(report.extracted),
            "already_done": len(report.skipped_existing),
            "unreadable": report.unreadable,
            **segment_fix_report(fixes),
        },
    )
    report.segment_fixes = fixes
    log.info("Feature extraction into %s: %s", features_dir, report.summary())
    if fixes:
        warnings.warn(
            f"{len(fixes)} annotated segments lie (partly) past the end of their video: clipped or dropped "
            f"(listed in {features_dir / 'extraction_report.json'})",
            stacklevel=2,
        )
    if report.unreadable:
        warnings.warn(
            f"{len(report.unreadable)} unreadable videos skipped (listed in {features_dir / 'extraction_report.json'})",
            stacklevel=2,
        )
    return report


def main(argv: Sequence[str]) -> None:
    """``python -m datamodules.thumos14 [data=thumos14] [data.root=...] ...``: run the (resumable)
    extraction of a data config, the same one training would run first, and print its report."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from core.resolvers import PROJECT_ROOT, register_resolvers

    register_resolvers()
    overrides = list(argv)
    if not any(o.startswith("data=") for o in overrides):
        overrides.insert(0, "data=thumos14")
    with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    logging.basicConfig(level=logging.INFO)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    print(f"{datamodule.features_dir}: {datamodule.report.summary()}")


if __name__ == "__main__":
    main(sys.argv[1:])
