"""The Mannequin Challenge reader: the release's trajectory format, its errors, and the samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data import DataFormatError
from datamodules.mannequin_challenge import (
    MannequinChallengeClips,
    MannequinChallengeDataModule,
    flip_keypoint_labels,
    keypoint_image,
    read_keypoints,
    read_trajectory,
)
from datamodules.synthetic.mannequin_challenge import write_mannequin_challenge

# The overrides of a small generated copy of each data set, for every test that trains on it
# (tests/conftest.py gathers them into SMALL_DATA and the small_data fixture).
SMALL_DATA: dict[str, list[str]] = {
    "mannequin_challenge": [
        "data=mannequin_challenge",
        "data.image_size=[48,64]",
        "data.batch_size=4",
        "data.generator.train_clips=2",
        "data.generator.validation_clips=1",
        "data.generator.test_clips=1",
        "data.generator.frames_per_clip=4",
        "data.generator.width=64",
        "data.generator.height=48",
    ],
}


URL = "https://www.youtube.com/watch?v=UnjOiW0CZHA"
# Two frame lines as the release writes them: timestamp, fx fy cx cy, two zero distortion
# coefficients, then [R | t] row-major.
LINE_1 = (
    "33333 0.840311576 1.493887246 0.500000000 0.500000000 0.000000000 0.000000000 "
    "0.999994 -0.002312 0.002578 -0.001012 0.002301 0.999988 0.004225 0.000410 "
    "-0.002588 -0.004219 0.999988 -0.002911"
)
LINE_2 = "66667 0.840311576 1.493887246 0.500000000 0.500000000 0.000000000 0.000000000 1 0 0 0.1 0 1 0 0.2 0 0 1 0.3"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "0a1b2c3d4e5f6789.txt"
    path.write_text(text)
    return path


def test_reads_the_release_format(tmp_path):
    traj = read_trajectory(_write(tmp_path, f"{URL}\n{LINE_1}\n{LINE_2}\n"))
    assert traj.url == URL and traj.name == "0a1b2c3d4e5f6789"
    np.testing.assert_array_equal(traj.timestamps, [33333, 66667])
    np.testing.assert_allclose(traj.intrinsics[0], [0.840311576, 1.493887246, 0.5, 0.5])
    np.testing.assert_allclose(traj.poses[1], [[1, 0, 0, 0.1], [0, 1, 0, 0.2], [0, 0, 1, 0.3]])
    assert traj.poses[0][2, 3] == pytest.approx(-0.002911)


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("", 1, "empty file"),
        (f"{LINE_1}\n", 1, "source video URL"),
        (f"{URL}\n{LINE_1}\n{LINE_2.rsplit(' ', 1)[0]}\n", 3, "expected 19 columns"),
        (f"{URL}\n{LINE_1.replace('33333', '33.5', 1)}\n", 2, "timestamp must be an integer"),
        (f"{URL}\n{LINE_1}\n{LINE_2.replace('0.1', 'abc')}\n", 3, "non-numeric"),
        (f"{URL}\n{LINE_2}\n{LINE_1}\n", 3, "timestamps must increase"),
        (f"{URL}\n{LINE_2.replace(' 1 0 0 0.1', ' 2 0 0 0.1')}\n", 2, "rotation"),
        (f"{URL}\n{LINE_2.replace('0.840311576', '-0.84', 1)}\n", 2, "focal lengths"),
        (f"{URL}\n{LINE_2.replace('0.3', 'nan')}\n", 2, "finite"),
        (f"{URL}\n\n", None, "no frame lines"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, text, line, message):
    path = _write(tmp_path, text)
    with pytest.raises(DataFormatError, match=message) as err:
        read_trajectory(path)
    assert err.value.path == path and err.value.line == line
    assert str(path) in str(err.value)


def test_missing_trajectory_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.txt"):
        read_trajectory(tmp_path / "nothere.txt")


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mc") / "mannequin_challenge"
    return write_mannequin_challenge(
        root, train_clips=2, validation_clips=1, test_clips=1, frames_per_clip=4, width=64, height=48, seed=1
    )


def test_generated_layout_goes_through_the_reader(tiny_root):
    clips = sorted((tiny_root / "train").glob("*.txt"))
    assert len(clips) == 2
    traj = read_trajectory(clips[0])
    ts = traj.timestamps[0]
    folder = tiny_root / "train" / clips[0].stem
    assert (folder / "frames" / f"{ts}.png").exists()
    assert (folder / "depth" / f"{ts}.npy").exists() and (folder / "masks" / f"{ts}.png").exists()
    data = MannequinChallengeClips(tiny_root / "train", image_size=(48, 64), reference_offset=2)
    assert len(data) == 8 and data.skipped == 0
    assert [(s.frame, s.reference) for s in data.samples[:4]] == [(0, 2), (1, 3), (2, 0), (3, 1)]
    item = data[0]
    assert item["image"].shape == (3, 48, 64) and 0 <= item["image"].min() and item["image"].max() <= 1
    for key in ("human_mask", "parallax_depth", "confidence", "depth", "input_log_depth"):
        assert item[key].shape == (1, 48, 64), key
    assert "keypoints" not in item and item["index"] == 0
    human = item["human_mask"] > 0.5
    assert human.any() and (item["depth"] > 0).all()
    assert (item["parallax_depth"][human] == 0).all() and (item["confidence"][human] == 0).all()
    assert (item["parallax_depth"][~human] > 0).float().mean() > 0.8
    # Input log depth: log parallax depth minus the median of its valid values, 0 where invalid.
    valid = item["parallax_depth"] > 0
    log_depth = item["parallax_depth"][valid].double().log()
    expected = log_depth - float(np.median(log_depth.numpy()))
    torch.testing.assert_close(item["input_log_depth"][valid].double(), expected, atol=1e-5, rtol=0)
    assert (item["input_log_depth"][~valid] == 0).all()


def test_generated_keypoints_are_openpose_files_on_the_people(tiny_root):
    data = MannequinChallengeClips(tiny_root / "train", image_size=(48, 64), keypoints=True)
    traj = data.trajectories[0]
    people = read_keypoints(tiny_root / "train" / traj.name / "keypoints" / f"{traj.timestamps[0]}_keypoints.json")
    assert people.ndim == 3 and people.shape[1:] == (18, 3) and (people[..., 2] > 0).any()
    item = data[0]
    labels = (item["keypoints"][0] * 18).round().long()
    assert labels.max() <= 18 and (labels > 0).any()
    # Keypoints lie on the people: nearly all labelled pixels are human.
    assert (item["human_mask"][0][labels > 0] > 0.5).float().mean() > 0.7


def test_keypoint_rasterization_and_flip():
    # One person: nose (COCO 0) at (3, 2), right shoulder (2) at (10, 5), left hip (11) not detected.
    person = np.zeros((18, 3))
    person[0] = (3, 2, 0.8)
    person[2] = (10, 5, 0.6)
    person[11] = (7, 7, 0.0)
    image = keypoint_image(person[None], 12, 16, radius=1)
    assert image[2, 3] == 1 and image[5, 10] == 3 and image[7, 7] == 0
    assert set(np.unique(image)) == {0, 1, 3} and (image == 1).sum() == 5  # a radius-1 disc: 5 pixels
    half = keypoint_image(person[None], 6, 8, scale=(0.5, 0.5), radius=0)
    assert half[1, 1] == 1 and half[2, 5] == 3  # ((x + 0.5) * 0.5 - 0.5) rounded
    np.testing.assert_array_equal(
        flip_keypoint_labels(np.array([0, 1, 2, 3, 6, 9, 12, 15, 16, 18])), [0, 1, 2, 6, 3, 12, 9, 16, 15, 17]
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("{", "not valid JSON"),
        ('{"version": 1.3}', '"people" list'),
        ('{"people": [{"pose_keypoints_2d": [1, 2, 3]}]}', "54 \\(COCO-18\\) or 75"),
        ('{"people": [{"pose_keypoints_2d": ' + str(["a"] * 54).replace("'", '"') + "}]}", "non-numeric"),
    ],
)
def test_bad_keypoint_files_name_the_file(tmp_path, text, message):
    path = tmp_path / "123_keypoints.json"
    path.write_text(text)
    with pytest.raises(DataFormatError, match=message) as err:
        read_keypoints(path)
    assert err.value.path == path


def test_body25_keypoints_map_to_coco18(tmp_path):
    values = np.zeros((25, 3))
    values[:, 0] = np.arange(25)  # x = BODY_25 index
    values[:, 2] = 1.0
    path = tmp_path / "1_keypoints.json"
    path.write_text(json.dumps({"people": [{"pose_keypoints_2d": values.ravel().tolist()}]}))
    people = read_keypoints(path)
    # COCO 8 (right hip) is BODY_25 9: BODY_25 puts the mid-hip at 8.
    np.testing.assert_array_equal(people[0, :, 0], [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18])


def test_training_split_centres_on_a_random_percentile(tiny_root):
    train = MannequinChallengeClips(tiny_root / "train", image_size=(48, 64), random_percentile=True)
    torch.manual_seed(0)
    a, b = train[0]["input_log_depth"], train[0]["input_log_depth"]
    assert not torch.equal(a, b)
    valid = a != 0
    shift = (a - b)[valid]
    assert shift.std() < 1e-5  # the whole map moves by one constant
    log_depth = train[0]["parallax_depth"][train[0]["parallax_depth"] > 0].log().numpy()
    lo, hi = np.percentile(log_depth, 40), np.percentile(log_depth, 60)
    assert abs(shift.mean()) <= hi - lo + 1e-5


def test_resizes_to_the_configured_size(tiny_root):
    item = MannequinChallengeClips(tiny_root / "test", image_size=(24, 32))[0]
    assert item["image"].shape == (3, 24, 32) and item["depth"].shape == (1, 24, 32)


def test_frames_without_files_are_skipped_and_counted(tiny_root, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tiny_root / "validation", root / "validation")
    traj = read_trajectory(next((root / "validation").glob("*.txt")))
    (root / "validation" / traj.name / "depth" / f"{traj.timestamps[1]}.npy").unlink()
    with pytest.warns(UserWarning, match="skipped 2 frames"):
        data = MannequinChallengeClips(root / "validation", image_size=(48, 64))
    # frame 1 has no depth; frame 3 would need frame 1 as its reference.
    assert [(s.frame, s.reference) for s in data.samples] == [(0, 2), (2, 0)]
    # Keypoint files are needed only with keypoints=True.
    (root / "validation" / traj.name / "keypoints" / f"{traj.timestamps[2]}_keypoints.json").unlink()
    MannequinChallengeClips(root / "validation", image_size=(48, 64))
    with pytest.warns(UserWarning, match="skipped 4 frames lacking .*keypoint file"):
        with pytest.raises(FileNotFoundError, match="_keypoints.json"):
            MannequinChallengeClips(root / "validation", image_size=(48, 64), keypoints=True)


def test_a_bad_depth_file_names_the_file(tiny_root, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tiny_root / "test", root / "test")
    traj = read_trajectory(next((root / "test").glob("*.txt")))
    bad = root / "test" / traj.name / "depth" / f"{traj.timestamps[0]}.npy"
    np.save(bad, np.zeros((3,), np.int32))
    data = MannequinChallengeClips(root / "test", image_size=(48, 64))
    with pytest.raises(DataFormatError, match=str(bad)):
        data[0]


def test_datamodule_generates_when_missing_and_batches(tmp_path):
    from functools import partial

    generator = partial(
        write_mannequin_challenge,
        train_clips=1,
        validation_clips=1,
        test_clips=1,
        frames_per_clip=3,
        width=32,
        height=24,
    )
    dm = MannequinChallengeDataModule(
        str(tmp_path / "mc"), image_size=(24, 32), reference_offset=1, batch_size=2, generator=generator
    )
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 24, 32) and batch["depth"].dtype == torch.float32
    with pytest.raises(FileNotFoundError, match="split folder"):
        MannequinChallengeClips(tmp_path / "mc" / "nope")
