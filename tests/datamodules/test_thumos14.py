"""THUMOS'14 readers on the real file formats: annotation text files, the JSON database, feature
arrays, decord snippet sampling, extraction (resume, corrupt videos, local weights)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data import DataFormatError
from core.video import VideoDecodeError, open_video, write_video
from datamodules.synthetic.thumos14 import CLASS_LOOKS, write_corrupt_video, write_thumos14
from datamodules.thumos14 import (
    SPLITS,
    Thumos14DataModule,
    parse_annotation_file,
    prepare_features,
    read_split_annotations,
)
from datamodules.thumos14_annotations import (
    THUMOS14_CLASSES,
    annotation_database,
    read_annotation_database,
)
from datamodules.thumos14_extract import (
    SnippetFeatureExtractor,
    resampled_frame_indices,
    sample_snippets,
    snippet_starts,
)
from datamodules.thumos14_features import Thumos14FeaturesDataModule

# The overrides of a small generated copy of each data set, for every test that trains on it
# (tests/conftest.py gathers them into SMALL_DATA and the small_data fixture).
SMALL_DATA: dict[str, list[str]] = {
    "thumos14": [
        "data=thumos14",
        "data.generator.num_validation_videos=4",
        "data.generator.num_test_videos=3",
        "data.generator.min_duration=6",
        "data.generator.max_duration=9",
        "data.generator.size=32",
        "data.batch_size=2",
    ],
}


SMALL = {
    "num_validation_videos": 3,
    "num_test_videos": 2,
    "min_duration": 5.0,
    "max_duration": 7.0,
    "size": 32,
}


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory) -> Path:
    return write_thumos14(tmp_path_factory.mktemp("th14") / "thumos14", **SMALL)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_parse_annotation_file_real_format(tmp_path):
    f = tmp_path / "BaseballPitch_val.txt"
    f.write_text("video_validation_0000051  67.5 75.9\nvideo_validation_0000051  85.9 90.6\n\n")
    segs = parse_annotation_file(f, "BaseballPitch")
    assert [(s.video, s.start, s.end, s.line) for s in segs] == [
        ("video_validation_0000051", 67.5, 75.9, 1),
        ("video_validation_0000051", 85.9, 90.6, 2),
    ]


@pytest.mark.parametrize(
    "line,problem",
    [
        ("video_validation_0000051 67.5", "expected 'video start end'"),
        ("video_validation_0000051 6x.5 75.9", "not numbers"),
        ("video_validation_0000051 75.9 67.5", "not a valid interval"),
    ],
)
def test_parse_annotation_file_errors_name_file_and_line(tmp_path, line, problem):
    f = tmp_path / "Diving_test.txt"
    f.write_text(f"video_test_0000004  1.0 2.0\n{line}\n")
    with pytest.raises(DataFormatError, match=problem) as err:
        parse_annotation_file(f, "Diving")
    assert err.value.line == 2 and f"{f}:2" in str(err.value)


def test_generated_layout_has_every_class_file_and_decodable_videos(raw_root):
    for split, (videos, annotations, suffix, _) in SPLITS.items():
        names = {p.name for p in (raw_root / annotations).iterdir()}
        assert names == {f"{c}_{suffix}.txt" for c in [*THUMOS14_CLASSES, "Ambiguous"]}
        segs = read_split_annotations(raw_root, split, THUMOS14_CLASSES)
        assert segs and all((raw_root / videos / f"{s.video}.mp4").exists() for s in segs)
    # the annotated action is visible: a pixel of the class colour appears mid-action only
    seg = next(s for s in read_split_annotations(raw_root, "validation", THUMOS14_CLASSES) if s.label != "Ambiguous")
    reader = open_video(raw_root / "videos/validation" / f"{seg.video}.mp4")
    fps = reader.get_avg_fps()
    colour = np.array(CLASS_LOOKS[THUMOS14_CLASSES.index(seg.label)][0], float)
    mid = reader[int((seg.start + seg.end) / 2 * fps)].asnumpy().astype(float)
    assert np.abs(mid - colour).sum(-1).min() < 60


def test_resampling_and_snippet_starts_hand_worked():
    np.testing.assert_array_equal(resampled_frame_indices(10, 20.0, 10.0), [0, 2, 4, 6, 8])
    np.testing.assert_array_equal(resampled_frame_indices(4, 5.0, 10.0), [0, 0, 1, 2, 2, 2, 3, 3])
    np.testing.assert_array_equal(snippet_starts(10, 2, 5), [0, 2, 4])
    np.testing.assert_array_equal(snippet_starts(3, 2, 5), [0])  # shorter than a snippet


def test_decord_sampling_returns_the_right_frames(tmp_path):
    # frame k of a 20 fps video has brightness 8k: sampled at 10 fps we must see frames 0, 2, 4...
    frames = [np.full((32, 32, 3), 8 * k, np.uint8) for k in range(24)]
    path = write_video(tmp_path / "ramp.mp4", frames, fps=20)
    chunks = list(sample_snippets(path, fps=10, feat_stride=2, num_frames=3, chunk_snippets=2))
    starts = np.concatenate([s + 0 for s, _ in chunks])
    assert len(chunks) == 3 and len(starts) == 5
    first_starts, first_frames = chunks[0]
    np.testing.assert_array_equal(first_starts, [0, 2])
    brightness = first_frames.reshape(len(first_frames), -1).mean(1)
    np.testing.assert_allclose(brightness, 8 * np.array([0, 2, 4, 6, 8]), atol=3)


def test_corrupt_video_raises_naming_file_and_extraction_counts_it(tmp_path, raw_root):
    bad = write_corrupt_video(tmp_path / "video_test_0000099.mp4", next((raw_root / "videos/test").glob("*.mp4")))
    with pytest.raises(VideoDecodeError, match="video_test_0000099.mp4"):
        open_video(bad)
    good = next((raw_root / "videos/test").glob("*.mp4"))
    extractor = SnippetFeatureExtractor(backbone="test_resnet")
    with pytest.warns(UserWarning, match="unreadable"):
        report = extractor.extract_videos({"bad": bad, "good": good}, tmp_path / "features")
    assert report.extracted == ["good"] and list(report.unreadable) == ["bad"]
    assert "video_test_0000099.mp4" in report.unreadable["bad"]
    again = extractor.extract_videos({"good": good}, tmp_path / "features")
    assert again.skipped_existing == ["good"] and not again.extracted


def test_local_weights_replace_random_init(tmp_path, raw_root):
    video = next((raw_root / "videos/test").glob("*.mp4"))
    reference = SnippetFeatureExtractor(seed=0)
    torch.save(reference.nets["rgb"].state_dict(), tmp_path / "rgb.pth")
    other = SnippetFeatureExtractor(seed=1)
    loaded = SnippetFeatureExtractor(seed=1, rgb_weights=str(tmp_path / "rgb.pth"))
    a, b, c = (e.extract_video(video) for e in (reference, other, loaded))
    d = reference.feature_dim
    assert not np.allclose(a[:, :d], b[:, :d])
    np.testing.assert_allclose(a[:, :d], c[:, :d], rtol=1e-5, atol=1e-5)  # RGB from the file
    np.testing.assert_allclose(b[:, d:], c[:, d:])  # flow still seed 1


def test_prepare_features_writes_database_resumes_and_refuses_other_settings(tmp_path, raw_root):
    out = tmp_path / "features"
    extractor = SnippetFeatureExtractor()
    report = prepare_features(raw_root, out, extractor)
    assert len(report.extracted) == SMALL["num_validation_videos"] + SMALL["num_test_videos"]
    videos = read_annotation_database(out / "thumos14.json", THUMOS14_CLASSES)
    segs = [s for s in read_split_annotations(raw_root, "test", THUMOS14_CLASSES) if s.label != "Ambiguous"]
    first = videos[segs[0].video]
    assert first["subset"] == "Test" and first["fps"] == extractor.fps
    assert [segs[0].start, segs[0].end] in first["segments"].tolist()
    assert SMALL["min_duration"] - 0.2 <= first["duration"] <= SMALL["max_duration"] + 0.2
    array = np.load(out / f"{segs[0].video}.npy")
    assert array.shape[1] == 2 * extractor.feature_dim
    assert abs(len(array) * extractor.feat_stride / extractor.fps - first["duration"]) < 1.0
    assert prepare_features(raw_root, out, extractor).skipped_existing  # resumed: nothing redone
    with pytest.raises(ValueError, match="extracted with"):
        prepare_features(raw_root, out, SnippetFeatureExtractor(fps=5.0))


def test_segment_past_the_video_end_is_clipped_and_reported_strict_mode_refuses(tmp_path, raw_root):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(raw_root, root)
    ann = root / SPLITS["test"][1] / "Diving_test.txt"
    video = next((root / "videos/test").glob("*.mp4")).stem
    ann.write_text(f"{video}  1.0 2.0\n{video}  3.0 500.0\n{video}  499.0 500.0\n")
    with pytest.warns(UserWarning, match="2 annotated segments"):
        report = prepare_features(root, tmp_path / "features", SnippetFeatureExtractor())
    duration = read_annotation_database(tmp_path / "features/thumos14.json", THUMOS14_CLASSES)[video]["duration"]
    clipped, dropped = report.segment_fixes
    assert (clipped.file, clipped.line, clipped.dropped) == (ann, 2, False)
    assert clipped.overshoot == pytest.approx(500.0 - duration)
    assert (dropped.line, dropped.dropped) == (3, True)
    assert f"{ann}:2: {video} segment [3, 500] ends {500 - duration:.2f} s after" in clipped.describe()
    saved = json.loads((tmp_path / "features/extraction_report.json").read_text())
    assert (saved["segments_clipped"], saved["segments_dropped"]) == (1, 1)
    videos = read_annotation_database(tmp_path / "features/thumos14.json", THUMOS14_CLASSES)
    segments = videos[video]["segments"].tolist()
    assert [1.0, 2.0] in segments and [3.0, duration] in segments and max(e for _, e in segments) == duration
    with pytest.raises(DataFormatError, match="strict_annotations") as err:
        prepare_features(root, tmp_path / "strict", SnippetFeatureExtractor(), THUMOS14_CLASSES, 1.0)
    assert err.value.path == ann and err.value.line == 2


def test_missing_video_and_missing_feature_file_are_named(tmp_path, raw_root):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(raw_root, root)
    victim = next((root / "videos/validation").glob("*.mp4"))
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=victim.name):
        prepare_features(root, tmp_path / "f1", SnippetFeatureExtractor())
    prepare_features(raw_root, tmp_path / "f2", SnippetFeatureExtractor())
    missing = next((tmp_path / "f2").glob("video_test_*.npy"))
    missing.unlink()
    dm = Thumos14FeaturesDataModule(str(tmp_path / "f2"), str(tmp_path / "f2/thumos14.json"), feature_dim=96)
    with pytest.raises(FileNotFoundError, match=missing.name):
        dm.setup("fit")


def test_database_round_trip_and_errors(tmp_path):
    videos = {
        "video_test_0000004": {
            "subset": "Test",
            "duration": 30.0,
            "fps": 30.0,
            "segments": np.array([[1.0, 2.5]]),
            "labels": np.array([7]),
            "ambiguous": np.array([[0.2, 0.9]]),
        }
    }
    path = tmp_path / "db.json"
    path.write_text(json.dumps(annotation_database(videos, THUMOS14_CLASSES, "v")))
    back = read_annotation_database(path, THUMOS14_CLASSES)["video_test_0000004"]
    assert back["labels"].tolist() == [7] and back["segments"].tolist() == [[1.0, 2.5]]
    assert back["ambiguous"].tolist() == [[0.2, 0.9]]
    data = json.loads(path.read_text())
    data["database"]["video_test_0000004"]["annotations"][0]["label"] = "Juggling"
    path.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match="unknown label 'Juggling'"):
        read_annotation_database(path, THUMOS14_CLASSES)
    path.write_text("{not json")
    with pytest.raises(DataFormatError, match="not valid JSON"):
        read_annotation_database(path, THUMOS14_CLASSES)


def test_raw_datamodule_generates_extracts_and_serves_batches(tmp_path):
    from functools import partial

    dm = Thumos14DataModule(
        root=str(tmp_path / "thumos14"),
        extractor=SnippetFeatureExtractor(),
        feature_dim=96,
        batch_size=2,
        generator=partial(write_thumos14, **SMALL),
    )
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch["features"]) == {"rgb", "flow"} and batch["features"]["rgb"].shape[:2] == (
        2,
        96,
    )
    assert batch["mask"].shape == (2, batch["features"]["rgb"].shape[-1])
    assert batch["dt"][0].item() == pytest.approx(0.2) and batch["t0"][0].item() == pytest.approx(0.25)
    # model selection on a by-video hold-out of the validation videos; test only at the end
    fit, held, test = (dm.datasets[k].names for k in ("fit", "validate", "test"))
    assert len(held) == 1 and len(fit) + len(held) == SMALL["num_validation_videos"]
    assert not set(fit) & set(held)
    assert all(n.startswith("video_validation_") for n in fit + held)
    assert len(test) == SMALL["num_test_videos"] and all(n.startswith("video_test_") for n in test)
    with pytest.raises(ValueError, match="feature_dim=512"):
        Thumos14DataModule(
            root=str(tmp_path / "thumos14"), extractor=SnippetFeatureExtractor(), feature_dim=512
        ).prepare_data()


def _features_db(tmp_path, n_validation=10, n_test=3):
    videos = {}
    for split, subset, n in (("validation", "Validation", n_validation), ("test", "Test", n_test)):
        for i in range(n):
            name = f"video_{split}_{i:07d}"
            videos[name] = {
                "subset": subset,
                "duration": 10.0,
                "fps": 10.0,
                "segments": np.array([[1.0, 3.0]]),
                "labels": np.array([0]),
                "ambiguous": np.zeros((0, 2)),
            }
            np.save(tmp_path / f"{name}.npy", np.zeros((20, 8), np.float32))
    db = tmp_path / "db.json"
    db.write_text(json.dumps(annotation_database(videos, THUMOS14_CLASSES, "v")))
    return db


def test_selection_on_the_test_split_is_refused_unless_allowed(tmp_path, cfg_train):
    from datamodules.thumos14_features import TestSelectionError

    db = _features_db(tmp_path)
    kwargs = dict(features_dir=str(tmp_path), annotation_file=str(db), feature_dim=4)
    with pytest.raises(TestSelectionError, match="allow_test_selection=true"):
        Thumos14FeaturesDataModule(**kwargs, val_subset="Test")
    allowed = Thumos14FeaturesDataModule(**kwargs, val_subset="Test", allow_test_selection=True)
    allowed.setup("fit")
    assert allowed.datasets["validate"].names == allowed.datasets["test"].names
    # the shipped configs, raw-video and pre-extracted, refuse it at instantiation
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    for data in ("thumos14", "thumos14_features"):
        cfg = cfg_train(["task=talnet", f"data={data}", "data.val_subset=Test"])
        with pytest.raises(InstantiationException, match="selected on the test split"):
            instantiate(cfg.data)


def test_validation_hold_out_is_seeded_by_video_and_disjoint_from_training(tmp_path):
    db = _features_db(tmp_path)
    kwargs = dict(features_dir=str(tmp_path), annotation_file=str(db), feature_dim=4)

    def splits(seed):
        dm = Thumos14FeaturesDataModule(**kwargs, val_fraction=0.3, split_seed=seed)
        dm.setup("fit")
        return {k: dm.datasets[k].names for k in ("fit", "validate", "test")}

    a, b, c = splits(0), splits(0), splits(1)
    assert a == b and a["validate"] != c["validate"]
    assert len(a["validate"]) == 3 and len(a["fit"]) == 7 and not set(a["fit"]) & set(a["validate"])
    assert all(n.startswith("video_test_") for n in a["test"]) and len(a["test"]) == 3


# --- the real annotations of the five videos whose segments run past their end -----------------
# Rows quoted from the official THUMOS'14 temporal annotation files, as shipped in makecent/mmtad
# (commit 3057976547e1d9d664bf21c4230604b727722139) under my_data/thumos14/annotations/original/
# annotations_val/ and annotations_test/ (line numbers of the official files in the comments).
REAL_ROWS = {
    ("validation", "HighJump"): [  # HighJump_val.txt lines 186-193
        "video_validation_0000364  23.0 32.4",
        "video_validation_0000364  74.6 80.0",
        "video_validation_0000364  86.5 91.5",
        "video_validation_0000364  95.2 98.6",
        "video_validation_0000364  113.6 117.3",
        "video_validation_0000364  120.5 127.0",
        "video_validation_0000364  53.6 64.3",
        "video_validation_0000364  98.6 106.7",
    ],
    ("validation", "SoccerPenalty"): [  # SoccerPenalty_val.txt lines 44-52
        "video_validation_0000856  19.9 21.4",
        "video_validation_0000856  56.6 61.1",
        "video_validation_0000856  63.7 65.0",
        "video_validation_0000856  84.3 85.5",
        "video_validation_0000856  85.9 91.5",
        "video_validation_0000856  8.5 10.0",
        "video_validation_0000856  35.2 38.9",
        "video_validation_0000856  70.4 71.3",
        "video_validation_0000856  72.2 76.0",
    ],
    ("validation", "Ambiguous"): ["video_validation_0000856  13.7 17.2"],  # Ambiguous_val.txt line 80
    ("test", "ThrowDiscus"): [  # ThrowDiscus_test.txt lines 31-41
        "video_test_0000814  59.6 64.2",
        "video_test_0000814  116.9 120.2",
        "video_test_0000814  154.8 160.4",
        "video_test_0000814  233.6 240.1",
        "video_test_0000814  305.5 321.1",
        "video_test_0000814  331.7 337.1",
        "video_test_0000814  21.5 24.1",
        "video_test_0000814  24.8 29.8",
        "video_test_0000814  32.2 34.8",
        "video_test_0000814  78.7 85.6",
        "video_test_0000814  165.7 168.3",
    ],
    ("test", "Diving"): [  # Diving_test.txt lines 318-321
        "video_test_0001081  16.2 18.5",
        "video_test_0001081  52.9 55.8",
        "video_test_0001081  127.5 130.1",
        "video_test_0001081  105.9 108.6",
    ],
    ("test", "HammerThrow"): [  # HammerThrow_test.txt lines 1-29
        f"video_test_0000270  {start} {end}"
        for start, end in [
            ("0.4", "1.5"),
            ("14.6", "22.6"),
            ("60.1", "66.1"),
            ("78.7", "84.8"),
            ("98.7", "104.9"),
            ("119.7", "130.2"),
            ("144.8", "151.2"),
            ("187.3", "193.4"),
            ("206.5", "212.3"),
            ("216.1", "221.0"),
            ("253.4", "263.9"),
            ("277.7", "284.0"),
            ("322.7", "333.5"),
            ("348.8", "357.4"),
            ("360.0", "366.9"),
            ("372.6", "379.9"),
            ("394.3", "401.8"),
            ("403.1", "406.5"),
            ("439.3", "447.8"),
            ("465.4", "472.5"),
            ("476.3", "482.1"),
            ("537.4", "543.2"),
            ("555.3", "568.2"),
            ("591.8", "595.3"),
            ("612.0", "620.0"),
            ("631.7", "637.5"),
            ("665.4", "672.0"),
            ("689.1", "695.6"),
            ("706.3", "713.7"),
        ]
    ],  # fmt: skip
}
# Frames at 30 fps of each real video: makecent/mmtad my_data/thumos14/annotations/mmtad/
# TH14_video_info.json ("num_frame", "fps": 30.0), i.e. 112.53, 83.03, 181.13, 117.13, 176.13 s.
REAL_FRAMES = {
    "video_validation_0000364": 3376,
    "video_validation_0000856": 2491,
    "video_test_0000814": 5434,
    "video_test_0001081": 3514,
    "video_test_0000270": 5284,
}
# Worked by hand from the rows and durations above: every segment past the end also starts past it
# (so it is dropped, none is clipped): 364: 2 (113.6, 120.5 > 112.53), 856: 2 (84.3, 85.9 > 83.03),
# 814: 3 (233.6, 305.5, 331.7 > 181.13), 1081: 1 (127.5 > 117.13), 270: 22 (187.3 ... 706.3 > 176.13).
REAL_DROPPED = {
    "video_validation_0000364": 2,
    "video_validation_0000856": 2,
    "video_test_0000814": 3,
    "video_test_0001081": 1,
    "video_test_0000270": 22,
}


def write_real_layout(root: Path) -> Path:
    """The raw layout holding the five videos with their real annotations and real lengths
    (32 x 32 pixels, generated), every other class file empty as in a download lacking them."""
    for split, (videos, annotations, suffix, _) in SPLITS.items():
        (root / annotations).mkdir(parents=True)
        for label in [*THUMOS14_CLASSES, "Ambiguous"]:
            rows = REAL_ROWS.get((split, label), [])
            (root / annotations / f"{label}_{suffix}.txt").write_text("".join(r + "\n" for r in rows))
        for name, frames in REAL_FRAMES.items():
            if name.startswith(f"video_{split}_"):
                pictures = (np.full((32, 32, 3), k % 200, np.uint8) for k in range(frames))
                write_video(root / videos / f"{name}.mp4", pictures, fps=30)
    return root


@pytest.fixture(scope="module")
def real_layout(tmp_path_factory) -> Path:
    return write_real_layout(tmp_path_factory.mktemp("th14_real") / "thumos14")


@pytest.mark.slow  # ~20k frames of video decoded, over 30 s on a loaded machine; the check test decodes them fast
def test_real_annotations_of_the_five_videos_extract_with_their_segments_dropped(real_layout, tmp_path):
    """The design card's run on the real annotations goes through: nothing stops extraction."""
    out = tmp_path / "features"
    extractor = SnippetFeatureExtractor(fps=1.0, feat_stride=8, num_frames=2)
    with pytest.warns(UserWarning, match="30 annotated segments"):
        report = prepare_features(real_layout, out, extractor)
    assert sorted(report.extracted) == sorted(REAL_FRAMES)
    dropped: dict[str, int] = {}
    for fix in report.segment_fixes:
        assert fix.dropped and fix.start >= fix.duration
        dropped[fix.video] = dropped.get(fix.video, 0) + 1
    assert dropped == REAL_DROPPED
    high_jump = next(f for f in report.segment_fixes if f.video == "video_validation_0000364")
    assert high_jump.describe() == (
        f"{real_layout / SPLITS['validation'][1] / 'HighJump_val.txt'}:5: video_validation_0000364 segment "
        "[113.6, 117.3] lies at or after the video's end (112.53 s); dropped"
    )
    videos = read_annotation_database(out / "thumos14.json", THUMOS14_CLASSES)
    assert videos["video_validation_0000364"]["duration"] == pytest.approx(3376 / 30)
    assert len(videos["video_validation_0000364"]["segments"]) == 6
    assert len(videos["video_test_0000270"]["segments"]) == 7
    saved = json.loads((out / "extraction_report.json").read_text())
    assert (saved["segments_clipped"], saved["segments_dropped"]) == (0, 30)
    # the run's data report (metrics.json) carries the same counts
    dm = Thumos14FeaturesDataModule(str(out), str(out / "thumos14.json"), feature_dim=96, val_fraction=0.5)
    dm.setup("fit")
    assert (dm.data_report["segments_clipped"], dm.data_report["segments_dropped"]) == (0, 0)  # already fitted
    raw = Thumos14DataModule(str(real_layout), extractor, feature_dim=96, features_subdir="x", val_fraction=0.5)
    raw.features_dir = out
    raw.annotation_file = out / "thumos14.json"
    raw.setup("fit")
    assert (raw.data_report["segments_clipped"], raw.data_report["segments_dropped"]) == (0, 30)
    assert len(raw.data_report["segment_fixes"]) == 30


def _database(tmp_path, **entry) -> Path:
    """A one-video database; ``entry`` replaces keys of its entry (raw JSON text where a string)."""
    fields = {
        "subset": '"Validation"',
        "duration": "9.3",
        "fps": "30.0",
        "annotations": '[{"label": "Diving", "segment": [1.0, 2.0]}]',
        **entry,
    }
    body = ", ".join(f'"{k}": {v}' for k, v in fields.items())
    path = tmp_path / "thumos14.json"
    path.write_text('{"database": {\n"video_validation_0000051": {' + body + "}\n}}\n")
    return path


@pytest.mark.parametrize(
    "entry,message",
    [
        ({"duration": "NaN"}, "database.video_validation_0000051.duration is nan; expected a finite positive"),
        ({"fps": "Infinity"}, "database.video_validation_0000051.fps is inf; expected a finite positive"),
        ({"duration": '"long"'}, "database.video_validation_0000051.duration is 'long'; expected a finite positive"),
        ({"fps": "0"}, "database.video_validation_0000051.fps is 0; expected a finite positive"),
        (
            {"annotations": '[{"label": "Diving", "segment": [1.0, "2"]}]'},
            "annotations[0].segment is '2'; expected a finite number",
        ),
        (
            {"annotations": '[{"label": "Diving", "segment": [NaN, 2.0]}]'},
            "annotations[0].segment is nan; expected a finite number",
        ),
    ],
)
def test_database_numbers_that_are_not_numbers_are_errors_naming_file_line_and_key(tmp_path, entry, message):
    path = _database(tmp_path, **entry)
    with pytest.raises(DataFormatError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        read_annotation_database(path, THUMOS14_CLASSES)
    assert err.value.path == path and err.value.line == 2


def test_database_segment_past_the_end_is_clipped_for_training_and_kept_for_scoring(tmp_path):
    """The issue's case: a segment [1, 500] in a 9.3 s video trained silently before."""
    annotations = '[{"label": "Diving", "segment": [1.0, 500.0]}, {"label": "Diving", "segment": [9.3, 12.0]}]'
    path = _database(tmp_path, annotations=annotations)
    assert read_annotation_database(path, THUMOS14_CLASSES)["video_validation_0000051"]["segments"].tolist() == [
        [1.0, 500.0],
        [9.3, 12.0],
    ]  # the scoring command reads the ground truth as published
    np.save(tmp_path / "video_validation_0000051.npy", np.zeros((70, 8), np.float32))
    np.save(tmp_path / "video_validation_0000052.npy", np.zeros((70, 8), np.float32))
    data = json.loads(path.read_text())
    data["database"]["video_validation_0000052"] = dict(data["database"]["video_validation_0000051"], subset="Test")
    path.write_text(json.dumps(data, indent=1))
    kwargs = dict(features_dir=str(tmp_path), annotation_file=str(path), feature_dim=4, val_subset="Validation")
    dm = Thumos14FeaturesDataModule(**kwargs)
    dm.setup("fit")
    assert dm.videos["video_validation_0000051"]["segments"].tolist() == [[1.0, 9.3]]
    report = dm.data_report
    assert (report["segments_clipped"], report["segments_dropped"]) == (2, 2)  # both videos
    assert report["segment_fixes"][0].startswith(
        f"{path}:3: database.video_validation_0000051.annotations[0]: video_validation_0000051 segment [1, 500] "
        "ends 490.70 s after the video's end (9.30 s); clipped to [1, 9.30]"
    )
    with pytest.raises(DataFormatError, match=r"annotations\[0\]: .* \(data.strict_annotations=true refuses it\)"):
        Thumos14FeaturesDataModule(**kwargs, strict_annotations=True).setup("fit")


def test_data_report_reaches_metrics_json(tmp_path, cfg_train):
    from core.training import train
    from tests.helpers import read_metrics

    db = _features_db(tmp_path, n_validation=4, n_test=2)
    data = json.loads(db.read_text())
    data["database"]["video_test_0000000"]["annotations"].append({"label": "BaseballPitch", "segment": [8.0, 30.0]})
    db.write_text(json.dumps(data, indent=1))
    for name in data["database"]:
        np.save(tmp_path / f"{name}.npy", np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32))
    cfg = cfg_train(
        [
            "task=talnet",
            "data=thumos14_features",
            f"data.features_dir={tmp_path}",
            f"data.annotation_file={db}",
            "data.feature_dim=4",
            "data.feat_stride=2",
            "data.num_frames=4",
            "data.batch_size=4",
            "trainer=debug",
        ],
        run_dir=tmp_path / "run",
    )
    train(cfg)
    report = read_metrics(tmp_path / "run")["data_report"]
    assert (report["segments_clipped"], report["segments_dropped"]) == (1, 0)
    assert (
        "video_test_0000000 segment [8, 30] ends 20.00 s after the video's end (10.00 s)" in report["segment_fixes"][0]
    )
