"""predict.py on generated files for every system: products read back and checked against what
eval.py (or the data set's own loading path) predicts on the same inputs; unreadable files skipped
and counted; a checkpoint of another task refused; resume; DDP on 2 gloo processes."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.prediction import predict, read_journals
from core.training import evaluate, train
from core.video import open_video, write_video
from datamodules.predict_inputs import list_inputs, output_names
from tests.conftest import SMALL_DATA, compose_config
from tests.helpers import run_entry

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSIFICATION = [*SMALL_DATA["shapes"], "logger=csv"]
TALNET = ["task=talnet", *SMALL_DATA["thumos14"], "logger=csv"]
DEPTH = [
    "task=people_depth",
    "data=mannequin_challenge",
    "logger=csv",
    "data.root=${paths.data_dir}/mannequin_challenge_predict",
    "data.image_size=[48,64]",
    "data.batch_size=4",
    "data.generator.train_clips=2",
    "data.generator.validation_clips=1",
    "data.generator.test_clips=1",
    "data.generator.frames_per_clip=6",
    "data.generator.width=64",
    "data.generator.height=48",
    "task.network=unet",
    "task.unet_widths=[8,16,32]",
    "task.video_frames=4",
]


def trained(tmp_path_factory, data_dir: Path, overrides: list[str]) -> tuple[Path, Path, Path]:
    """(last checkpoint, run folder, data root) of a one-epoch run; test=true so eval's products exist too."""
    run = tmp_path_factory.mktemp("train") / "run"
    cfg = compose_config("train", [*overrides, "trainer.max_epochs=1"], run, data_dir)
    root = Path(cfg.data.root)
    train(cfg)
    return run / "checkpoints" / "last.ckpt", run, root


def predicted(out: Path, overrides: list[str], data_dir: Path) -> dict:
    return predict(compose_config("predict", overrides, out, data_dir))


def write_corrupt(path: Path) -> Path:
    path.write_bytes(b"\x00 this is not a media file \xff" * 8)
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


# --- classification -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classification(tmp_path_factory, data_dir):
    return trained(tmp_path_factory, data_dir, CLASSIFICATION)


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_classification_labels_equal_eval_predictions_and_corrupt_file_is_skipped(classification, data_dir, tmp_path):
    ckpt, _, root = classification
    evaluation = tmp_path / "eval"
    evaluate(compose_config("eval", [*CLASSIFICATION, f"ckpt_path={ckpt}"], evaluation, data_dir))
    expected = read_rows(evaluation / "predictions.csv")  # the test split, in the data set's order
    images = tmp_path / "photos"
    shutil.copytree(root / "test", images)  # <class>/<file>: sorted like the data set
    write_corrupt(images / "n10000000" / "broken.jpg")
    with pytest.warns(UserWarning, match="broken.jpg"):
        summary = predicted(
            tmp_path / "pred",
            [
                "task=classification",
                f"ckpt_path={ckpt}",
                f"input={images}",
                "product.inputs.num_workers=0",
                "product.inputs.batch_size=7",
            ],
            data_dir,
        )
    rows = [r for r in read_rows(tmp_path / "pred" / "predictions.csv")]
    assert len(rows) == len(expected) == 40
    assert [int(r["class_1"]) for r in rows] == [int(e["predicted"]) for e in expected]
    assert [r["label_1"] for r in rows] == [e["predicted_name"] for e in expected]
    np.testing.assert_allclose(
        [float(r["score_1"]) for r in rows], [float(e["confidence"]) for e in expected], atol=1e-5
    )
    assert all(float(r["score_1"]) >= float(r["score_2"]) >= float(r["score_5"]) for r in rows)
    assert summary["inputs"] == 41 and summary["predicted"] == 40 and summary["skipped"] == 1
    assert list(summary["skipped_files"]) == [str(images / "n10000000" / "broken.jpg")]
    assert "broken.jpg" not in (tmp_path / "pred" / "predictions.csv").read_text()
    grid = cv2.imread(str(tmp_path / "pred" / "predictions_grid.png"))
    assert grid.shape == (5 * (128 + 14), 8 * 128, 3)  # 40 captioned thumbnails, 8 per row
    config = (tmp_path / "pred" / "config_resolved.yaml").read_text()
    assert "backbone: tinynet_e" in config and f"input: {images}" in config


def test_resume_skips_inputs_already_predicted(classification, data_dir, tmp_path):
    ckpt, _, root = classification
    images = tmp_path / "photos"
    images.mkdir()
    files = sorted((root / "test").glob("*/*.JPEG"))
    for f in files[:5]:
        shutil.copy(f, images)
    args = ["task=classification", f"ckpt_path={ckpt}", f"input={images}", "product.inputs.num_workers=0"]
    first = predicted(tmp_path / "pred", args, data_dir)
    assert first["predicted"] == 5 and first["already_done_before_this_run"] == 0
    for f in files[5:8]:
        shutil.copy(f, images)
    second = predicted(tmp_path / "pred", args, data_dir)
    assert second["predicted"] == 8 and second["already_done_before_this_run"] == 5
    journal = (tmp_path / "pred" / "predictions" / "journal_rank0.jsonl").read_text().splitlines()
    assert len(journal) == 8  # the first five were not predicted again
    assert len(read_rows(tmp_path / "pred" / "predictions.csv")) == 8


def test_folder_with_nothing_readable_is_an_error(classification, data_dir, tmp_path):
    ckpt, _, root = classification
    folder = tmp_path / "bad"
    folder.mkdir()
    write_corrupt(folder / "a.jpg"), write_corrupt(folder / "b.png")
    args = ["task=classification", f"ckpt_path={ckpt}", "product.inputs.num_workers=0"]
    with pytest.warns(UserWarning), pytest.raises(FileNotFoundError, match="none of the 2 input files could be read"):
        predicted(tmp_path / "p1", [*args, f"input={folder}"], data_dir)
    (folder / "notes.txt").write_text("no images here")
    for f in ("a.jpg", "b.png"):
        (folder / f).unlink()
    with pytest.raises(FileNotFoundError, match=f"input={folder}: the folder holds no file"):
        predicted(tmp_path / "p2", [*args, f"input={folder}"], data_dir)


def test_inputs_from_file_glob_and_list(tmp_path):
    for name in ("a/x.jpg", "b/x.jpg", "b/y.PNG", "b/.hidden/z.jpg", "b/notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    exts = (".jpg", ".png")
    assert list_inputs(tmp_path, exts) == [tmp_path / "a/x.jpg", tmp_path / "b/x.jpg", tmp_path / "b/y.PNG"]
    assert list_inputs(str(tmp_path / "*/x.jpg"), exts) == [tmp_path / "a/x.jpg", tmp_path / "b/x.jpg"]
    assert list_inputs([tmp_path / "b/notes.txt", str(tmp_path / "a")], exts) == [
        tmp_path / "a/x.jpg",
        tmp_path / "b/notes.txt",
    ]
    assert output_names(list_inputs(tmp_path, exts)) == ["a__x", "b__x", "b__y"]
    with pytest.raises(FileNotFoundError, match="matches no file"):
        list_inputs(str(tmp_path / "*.mp4"), exts)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        list_inputs(tmp_path / "missing", exts)


@pytest.mark.slow
def test_ddp_predict_equals_single_process(classification, data_dir, tmp_path):
    """2 gloo processes each predict a shard; the merged CSV equals the single-process one."""
    ckpt, _, root = classification
    images = tmp_path / "photos"
    shutil.copytree(root / "test", images)
    write_corrupt(images / "broken.png")
    common = [
        "task=classification",
        f"ckpt_path={ckpt}",
        f"input={images}",
        "product.inputs.batch_size=4",
        "product.inputs.num_workers=0",
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]
    run_entry("predict.py", [*common, f"output_dir={tmp_path / 'single'}"])
    out = run_entry("predict.py", [*common, f"output_dir={tmp_path / 'double'}", "trainer=ddp_cpu"])
    assert "distributed_backend=gloo" in out.stdout + out.stderr
    assert sorted(p.name for p in (tmp_path / "double" / "predictions").iterdir()) == [
        "journal_rank0.jsonl",
        "journal_rank1.jsonl",
        "run.json",  # the checkpoint the journals belong to
    ]
    single, double = (read_rows(tmp_path / run / "predictions.csv") for run in ("single", "double"))
    assert len(double) == len(single) == 40
    for a, b in zip(single, double):  # same inputs in the same order, same top-5 labels
        assert [a["input"]] + [a[f"label_{k}"] for k in range(1, 6)] == [b["input"]] + [
            b[f"label_{k}"] for k in range(1, 6)
        ]
        # scores to float32 rounding: the shards batch the images differently
        assert [float(a[f"score_{k}"]) for k in range(1, 6)] == pytest.approx(
            [float(b[f"score_{k}"]) for k in range(1, 6)], abs=2e-6
        )
    summary = json.loads((tmp_path / "double" / "predict_summary.json").read_text())
    assert summary["predicted"] == 40 and summary["skipped"] == 1


# --- TALNet ---------------------------------------------------------------------------------------


def test_talnet_detections_equal_eval_on_the_same_videos(tmp_path_factory, data_dir, tmp_path):
    ckpt, run, root = trained(tmp_path_factory, data_dir, TALNET)
    expected = json.loads((run / "detections_activitynet.json").read_text())["results"]
    videos = tmp_path / "videos"
    shutil.copytree(root / "videos" / "test", videos)
    # Batched as the evaluation batched them (2 videos a batch, in name order; the broken file comes
    # last and drops out of the last batch), so every video is padded to the same length and the
    # detections are the same floats: with a one-epoch model the scores nearly tie, and float noise
    # alone would reorder the NMS.
    write_corrupt(videos / "zz_broken.mp4")
    with pytest.warns(UserWarning, match="zz_broken.mp4"):
        overrides = ["task=talnet", f"ckpt_path={ckpt}", f"input={videos}", "product.inputs.batch_size=2"]
        summary = predicted(tmp_path / "pred", overrides, data_dir)
    assert summary["predicted"] == 3 and summary["skipped"] == 1
    results = json.loads((tmp_path / "pred" / "detections_activitynet.json").read_text())
    assert set(results) == {"version", "results", "external_data"}
    assert set(results["results"]) == set(expected)

    # Detections whose scores tie exactly may come in either order: compare in one order.
    def in_one_order(detections):
        return sorted(detections, key=lambda d: (-d["score"], d["label"], d["segment"]))

    for video, dets in results["results"].items():
        got, want = in_one_order(dets), in_one_order(expected[video])
        assert len(got) == len(want) > 0
        assert [d["label"] for d in got] == [d["label"] for d in want]
        np.testing.assert_allclose([d["score"] for d in got], [d["score"] for d in want], atol=1e-6)
        np.testing.assert_allclose([d["segment"] for d in got], [d["segment"] for d in want], atol=1e-5)
        # the highlight is the top detection with half its length of context on each side, cut at 10 fps
        best = summary["highlights"][video]
        assert best["segment"] == pytest.approx(dets[0]["segment"])
        start, end = best["segment"]
        assert best["clip"][0] == pytest.approx(max(0.0, start - 0.5 * (end - start)))
        clip = open_video(tmp_path / "pred" / best["file"])
        assert len(clip) == pytest.approx((best["clip"][1] - best["clip"][0]) * 10, abs=1.5)
    assert (tmp_path / "pred" / "timeline.png").read_bytes()[:4] == b"\x89PNG"


def test_checkpoint_of_another_task_is_refused_with_both_names(classification, data_dir, tmp_path):
    ckpt, _, root = classification
    with pytest.raises(ValueError, match=r"checkpoint of task=classification .*not of task=people_depth"):
        predicted(tmp_path / "pred", ["task=people_depth", f"ckpt_path={ckpt}", f"input={tmp_path}"], data_dir)


# --- depth of moving people -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def depth_clip(tmp_path_factory, data_dir):
    """A trained checkpoint, and the generated test clip as a user has it: an MP4, masks named by
    frame index, the trajectory file; plus the same decoded frames in the data set's layout."""
    ckpt, _, root = trained(tmp_path_factory, data_dir, DEPTH)
    from datamodules.mannequin_challenge import read_trajectory

    split = root / "test"
    traj_file = sorted(split.glob("*.txt"))[0]
    clip, traj = split / traj_file.stem, read_trajectory(traj_file)
    user = tmp_path_factory.mktemp("user")
    (user / "masks").mkdir()
    frames = [cv2.cvtColor(cv2.imread(str(clip / "frames" / f"{ts}.png")), cv2.COLOR_BGR2RGB) for ts in traj.timestamps]
    write_video(user / "walk.mp4", frames, fps=30)  # the generator's clips are 29.97 fps
    for k, ts in enumerate(traj.timestamps):
        shutil.copy(clip / "masks" / f"{ts}.png", user / "masks" / f"{k:04d}.png")
    shutil.copy(traj_file, user / "walk.txt")
    layout = tmp_path_factory.mktemp("layout") / "test"
    shutil.copytree(clip, layout / "walk")
    shutil.copy(traj_file, layout / "walk.txt")
    decoded = open_video(user / "walk.mp4").get_batch(list(range(len(traj.timestamps)))).asnumpy()
    for ts, frame in zip(traj.timestamps, decoded):
        cv2.imwrite(str(layout / "walk" / "frames" / f"{ts}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return ckpt, user, layout


def test_depth_arrays_equal_the_data_set_path_and_videos_are_written(depth_clip, data_dir, tmp_path):
    import torch

    from datamodules.mannequin_challenge import MannequinChallengeClips
    from tasks.people_depth.module import PeopleDepthTask

    ckpt, user, layout = depth_clip
    write_corrupt(user / "broken.mp4")
    try:
        with pytest.warns(UserWarning, match="broken.mp4"):
            summary = predicted(
                tmp_path / "pred",
                [
                    "task=people_depth",
                    f"ckpt_path={ckpt}",
                    f"input={user}",
                    f"product.writer.masks={user / 'masks'}",
                    f"product.writer.poses={user / 'walk.txt'}",
                ],
                data_dir,
            )
    finally:
        (user / "broken.mp4").unlink()
    assert summary["predicted"] == 1 and summary["skipped"] == 1
    task = PeopleDepthTask.load_from_checkpoint(ckpt, map_location="cpu")
    dataset = MannequinChallengeClips(layout, image_size=task.hparams.image_size, reference_offset=2)
    assert len(dataset) == 6
    for i in range(len(dataset)):
        item = dataset[i]
        batch = {k: item[k][None] for k in ("image", "human_mask", "input_log_depth", "confidence")}
        want = task.predict_depth(batch)[0, 0].numpy()
        got = np.load(tmp_path / "pred" / "walk" / "depth" / f"{item['frame']:06d}.npy")
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert torch.count_nonzero(item["confidence"]) > 0  # the parallax inputs were really used
    for name in ("depth.mp4", "defocus.mp4"):
        reader = open_video(tmp_path / "pred" / "walk" / name)
        assert len(reader) == 6 and reader[0].shape == (48, 64, 3)


def test_depth_without_poses_is_the_single_frame_variant(depth_clip, data_dir, tmp_path):
    ckpt, user, _ = depth_clip
    args = ["task=people_depth", f"ckpt_path={ckpt}", f"input={user / 'walk.mp4'}"]
    with pytest.raises(ValueError, match="takes a human mask per frame"):
        predicted(tmp_path / "p0", args, data_dir)
    summary = predicted(
        tmp_path / "pred", [*args, f"product.writer.masks={user / 'masks'}", "product.writer.frame_stride=2"], data_dir
    )
    assert summary["videos"][str(user / "walk.mp4")]["frames"] == 3
    arrays = sorted((tmp_path / "pred" / "walk" / "depth").glob("*.npy"))
    assert [p.name for p in arrays] == ["000000.npy", "000002.npy", "000004.npy"]
    assert all(np.load(p).shape == (48, 64) and (np.load(p) > 0).all() for p in arrays)
    records, _ = read_journals(tmp_path / "pred")
    assert records[str(user / "walk.mp4")]["fps"] == pytest.approx(15.0)
