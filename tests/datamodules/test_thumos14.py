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


def test_video_shorter_than_annotation_names_annotation_file_and_line(tmp_path, raw_root):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(raw_root, root)
    ann = root / SPLITS["test"][1] / "Diving_test.txt"
    video = next((root / "videos/test").glob("*.mp4")).stem
    ann.write_text(f"{video}  1.0 2.0\n{video}  3.0 500.0\n")
    with pytest.raises(DataFormatError, match="lasts only") as err:
        prepare_features(root, tmp_path / "features", SnippetFeatureExtractor())
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
