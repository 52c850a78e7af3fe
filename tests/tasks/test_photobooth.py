"""Photobooth: the shutter rule, the indicator ranges, the attention pooling, the blur score, the
quality filter, the captured-moments metric (hand-worked), fast_dev_run of the experiment configs,
and the run command against the module's own test shots."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.training import train
from datamodules.synthetic.photobooth import FaceControls, motion_blur, render_face_crop
from tasks.photobooth.metrics import CapturedMomentsPR, match_shots
from tasks.photobooth.model import FACE_OUTPUTS, FaceAttention
from tasks.photobooth.shutter import (
    Indicator,
    ScoringConfig,
    blur_score,
    indicator_state,
    indicator_target,
    relative_blur,
    score_frames,
    shutter_shots,
    smooth,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# --- shutter -----------------------------------------------------------------------------------------


def test_shutter_saves_the_peak_of_a_rise_only_with_the_buffer():
    rise = [0.0, 0.4, 0.5, 0.6, 0.7, 0.8, 0.2, 0.1, 0.0, 0.0]
    assert shutter_shots(rise, buffer=5, min_gap=4, threshold=0.3) == [5]
    # Without look-ahead the first frame over the threshold is taken, and the gap blocks the peak.
    assert shutter_shots(rise, buffer=0, min_gap=10, threshold=0.3) == [1]
    # A buffer of 2 sees only two frames ahead: frame 3 (0.6) is below frames 4 and 5, frame 5 wins.
    assert shutter_shots(rise, buffer=2, min_gap=10, threshold=0.3) == [5]


def test_shutter_min_gap_and_threshold():
    two_peaks = [0.1, 0.9, 0.2, 0.1, 0.8, 0.1, 0.1, 0.1]
    assert shutter_shots(two_peaks, buffer=2, min_gap=2, threshold=0.3) == [1, 4]
    assert shutter_shots(two_peaks, buffer=2, min_gap=4, threshold=0.3) == [1]
    assert shutter_shots(two_peaks, buffer=2, min_gap=2, threshold=0.85) == [1]


def test_shutter_needs_strictly_higher_and_flushes_the_end():
    # A tie with a later frame is not "higher than the frames after it": the later one is taken.
    assert shutter_shots([0.5, 0.5, 0.1, 0.1], buffer=3, min_gap=1, threshold=0.3) == [1]
    # The last frames are decided when the stream ends.
    assert shutter_shots([0.1, 0.2, 0.3, 0.9], buffer=5, min_gap=1, threshold=0.3) == [3]
    assert shutter_shots([], buffer=5, min_gap=1, threshold=0.3) == []


# --- indicator ---------------------------------------------------------------------------------------


def test_indicator_ranges():
    # (faces, attending share, frame score, capturable, shutter threshold 0.3)
    assert indicator_target(0, 0.0, 0.0, False) == 0.0
    assert indicator_target(2, 0.2, 0.9, False) == pytest.approx(0.25 + 0.2499 * 0.4)
    assert indicator_target(1, 0.9, 0.15, False) == pytest.approx(0.5 + 0.2499 * 0.5)
    assert indicator_target(1, 0.9, 0.72, True) == pytest.approx(0.75 + 0.25 * 0.6)
    # a kiss: profile faces do not attend, but the shutter may fire, and the bar says so
    assert indicator_state(indicator_target(2, 0.0, 0.9, True)) == "key_expression"
    cases = ((0, 1, 1, True), (3, 0.49, 1.0, False), (1, 0.5, 0.29, False), (1, 1.0, 0.3, True))
    assert [indicator_state(indicator_target(*a)) for a in cases] == [
        "no_faces",
        "not_attending",
        "attending",
        "key_expression",
    ]


def test_indicator_is_smoothed_inside_a_range_and_changes_range_at_once():
    bar = Indicator(alpha=0.5, max_step=0.1)
    values = [bar.update(t) for t in [0.75] * 5 + [1.0] * 30]
    steps = np.abs(np.diff(values[4:]))
    assert steps.max() == pytest.approx(0.1)  # inside the top range: 0.1 per frame at most
    assert values[-1] == pytest.approx(1.0, abs=1e-3)
    # from "may shoot" to "not attending" and back: the state follows the target on the same frame
    targets = [1.0, 0.3, 0.3, 0.9, 0.6, 0.0]
    states = [indicator_state(bar.update(t)) for t in targets]
    assert states == [indicator_state(t) for t in targets]


# --- attention ---------------------------------------------------------------------------------------


def _faces(b: int, f: int, dim: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, f, FACE_OUTPUTS, generator=g)
    features = torch.randn(b, f, dim, generator=g)
    xy = torch.rand(b, f, 2, generator=g) * 0.5
    wh = 0.05 + torch.rand(b, f, 2, generator=g) * 0.4
    return logits, features, torch.cat([xy, xy + wh], -1)


def test_attention_weights_sum_to_one_and_ignore_padding():
    torch.manual_seed(0)
    attention = FaceAttention(face_dim=8)
    logits, features, boxes = _faces(3, 4, 8)
    mask = torch.tensor([[True, True, True, False], [True, False, False, False], [False] * 4])
    score, weights = attention(logits, features, boxes, mask)
    assert torch.allclose(weights[:2].sum(-1), torch.ones(2))
    assert (weights[~mask] == 0).all() and (weights[2] == 0).all()
    assert score[2] == -10.0  # no faces: the global expression score is ~0
    # Whatever the padding holds, the real faces' result is the same.
    noisy = [t.clone() for t in (logits, features, boxes)]
    for t in noisy:
        t[~mask] = torch.randn_like(t[~mask]) * 100
    noisy[2][~mask] = noisy[2][~mask].abs()
    score2, weights2 = attention(*noisy, mask)
    assert torch.allclose(score, score2) and torch.allclose(weights, weights2)


def test_attention_prior_weights_larger_faces_more():
    """With the learned weight head at zero, weights are area ** size_prior / sum (the prior alone)."""
    attention = FaceAttention(face_dim=4, size_prior=1.0)
    torch.nn.init.zeros_(attention.weight[1].weight)
    torch.nn.init.zeros_(attention.weight[1].bias)
    boxes = torch.tensor([[[0.0, 0.0, 0.4, 0.4], [0.5, 0.5, 0.6, 0.6], [0.7, 0.0, 0.9, 0.2]]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    _, weights = attention(torch.zeros(1, 3, FACE_OUTPUTS), torch.zeros(1, 3, 4), boxes, mask)
    area = torch.tensor([0.16, 0.01, 0.04])
    assert torch.allclose(weights[0], area / area.sum(), atol=1e-5)


def test_attention_trains_end_to_end():
    """Every parameter of the whole model receives a gradient from the frame losses."""
    from tasks.photobooth.module import PhotoboothTask

    task = PhotoboothTask(face_backbone="mobilenetv3_small_050", kiss_backbone="mobilenetv3_small_050")
    b, f = 2, 3
    batch = {
        "frame": torch.randn(b, 3, 96, 160),
        "crops": torch.randn(b, f, 3, 48, 48),
        "boxes": torch.tensor([[0.1, 0.1, 0.4, 0.5]]).repeat(b, f, 1),
        "mask": torch.tensor([[True, True, False], [True, False, False]]),
        "face_labels": torch.tensor([[[1, 0, 0, 1], [0, 1, 1, 0], [-1] * 4], [[3, 0, 0, 1], [-1] * 4, [-1] * 4]]),
        "kiss": torch.tensor([0.0, 1.0]),
        "expression_target": torch.tensor([0.7, 1.0]),
    }
    task.training_step(batch, 0).backward()
    missing = [
        n for n, p in task.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert missing == []


# --- blur and quality --------------------------------------------------------------------------------


def test_blur_score_orders_sharp_above_blurred():
    rng = np.random.default_rng(0)
    face = render_face_crop(FaceControls(expression="smile"), 64, rng)
    scores = [blur_score(np.asarray(motion_blur(face, n))) for n in (1, 3, 5, 9)]
    assert scores == sorted(scores, reverse=True) and scores[-1] < 0.5 * scores[0]


def test_relative_blur_and_smoothing_by_hand():
    assert relative_blur(np.array([100.0, 100.0, 20.0]), window=3).tolist() == [1.0, 1.0, 0.2]
    assert smooth(np.array([0.0, 1.0, 1.0]), 0.5).tolist() == [0.0, 0.5, 0.75]


def test_quality_filter_rejects_closed_eyes_talking_blur_and_no_expression():
    n = 6
    expression = np.array([0.9, 0.9, 0.9, 0.9, 0.1, 0.9])
    quality = {
        "eyes_closed": np.array([0.0, 1.0, 0.0, 0.0, 0.0, 0.0]),
        "talking": np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0]),
        "attending": np.ones(n),
        "blur": np.array([100.0, 100.0, 100.0, 10.0, 100.0, 100.0]),
    }
    config = ScoringConfig(smoothing=1.0, expression_weight=0.6, kiss_weight=0.4)  # no smoothing: frame by frame
    out = score_frames(expression, np.zeros(n), quality, config)
    assert out["accepted"].tolist() == [True, False, False, False, False, True]
    assert out["score"].tolist() == pytest.approx([0.54, 0, 0, 0, 0, 0.54])
    # A kiss is accepted on the kiss score alone, whatever the (profile) faces' eyes say.
    kiss = score_frames(np.zeros(n), np.ones(n), {**quality, "eyes_closed": np.ones(n)}, config)
    assert kiss["accepted"][:3].tolist() == [True, True, True]


# --- metric ------------------------------------------------------------------------------------------


def test_captured_moments_by_hand():
    moments = [(2, 6, 4), (15, 18, 16)]
    assert match_shots([3, 4, 20], moments) == 1  # two shots in one moment capture it once
    metric = CapturedMomentsPR()
    metric.update([0, 1], [[3, 4, 20], []], [moments, [(0, 3, 1)]])
    out = metric.compute()
    # captured 1 of 3 moments with 3 shots
    assert out["precision"].item() == pytest.approx(1 / 3) and out["recall"].item() == pytest.approx(1 / 3)
    metric.update([0], [[16]], [[(15, 18, 16)]])  # clip 0 again (sampler padding): counted once
    assert metric.compute()["recall"].item() == pytest.approx(1 / 3)
    metric.update([2], [[16]], [[(15, 18, 16)]])
    out = metric.compute()
    assert out["precision"].item() == pytest.approx(2 / 4) and out["recall"].item() == pytest.approx(2 / 4)
    assert out["f1"].item() == pytest.approx(0.5)
    empty = CapturedMomentsPR()
    empty.update([0], [[1]], [[]])
    with pytest.raises(ValueError, match="no labelled moments"):
        empty.compute()


# --- configs and the run command -----------------------------------------------------------------------

TINY = {
    "photobooth_expression": [
        "experiment=photobooth_expression",
        "data.generator.train_per_class=4",
        "data.generator.val_per_class=2",
        "data.generator.test_per_class=2",
        "data.batch_size=8",
    ],
    "photobooth_clips": [
        "experiment=photobooth_clips",
        "data.generator.train_clips=2",
        "data.generator.val_clips=1",
        "data.generator.test_clips=2",
        "data.generator.frames_per_clip=24",
        "data.batch_size=8",
    ],
}
COMMON = ["logger=csv", "callbacks.rich_progress_bar=null", "callbacks.sample_images=null"]


@pytest.mark.parametrize("name", sorted(TINY))
def test_fast_dev_run_of_experiment(name, cfg_train, tmp_path):
    cfg = cfg_train([*TINY[name], *COMMON, "trainer.fast_dev_run=true"])
    train(cfg)
    monitor = cfg.monitor.metric.replace("val/", "test/")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    assert monitor in metrics


def test_run_command_matches_the_modules_test_shots(cfg_train, cfg_eval, tmp_path):
    """Train a tiny model one epoch; eval.py on its checkpoint gives the same test metrics; the run
    command on a test clip (its video and boxes) writes the products, and its shots are the ones the
    module's test loop took on that clip."""
    from core.training import evaluate
    from tasks.photobooth import run

    overrides = [
        *TINY["photobooth_clips"],
        *COMMON,
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "task.shutter.threshold=0.0",
        "task.scoring.expression_min=0.0",
    ]
    cfg = cfg_train(overrides)
    trained = train(cfg)
    run_dir = tmp_path / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert list(run_dir.rglob("media/val/shots/*.png")), "validation logs the first clip's shots as images"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    eval_overrides = [o for o in overrides if not o.startswith(("callbacks.", "trainer.", "task."))]
    evaluated = evaluate(cfg_eval([*eval_overrides, f"ckpt_path={ckpt}"], run_dir=tmp_path / "eval"))
    for key in ("test/f1", "test/recall_no_attention", "test/precision_no_buffer"):
        assert evaluated[key] == pytest.approx(metrics[key], abs=1e-6)
    del trained
    test_shots = json.loads((run_dir / "test_shots.json").read_text())
    root = __import__("pathlib").Path(cfg.data.root)
    clip = json.loads((root / "test.json").read_text())["clips"][0]
    out = tmp_path / "booth"
    summary = run.main(
        [
            str(root / clip["video"]),
            "--checkpoint",
            str(run_dir / "checkpoints" / "last.ckpt"),
            "--boxes",
            str(root / "test.json"),
            "--output",
            str(out),
        ]
    )
    expected = next(r for r in test_shots if r["clip"] == 0)["shots"]
    assert [s["frame"] for s in summary["shots"]] == expected and expected  # threshold 0: some shot
    assert sorted(p.name for p in (out / "shots").iterdir()) == sorted(
        s["file"].split("/")[1] for s in summary["shots"]
    )
    assert json.loads((out / "shots.json").read_text())["num_frames"] == len(clip["frames"])
    timeline = json.loads((out / "timeline.json").read_text())
    assert len(timeline["indicator"]) == len(clip["frames"]) and min(timeline["indicator"]) >= 0.0
    from PIL import Image

    assert Image.open(out / "contact_sheet.png").size[0] == 320 * min(4, len(expected))
    assert Image.open(out / "timeline.png").size == (1000, 650)
    # the timeline holds the values the decision used: the shots are frames the filter accepted
    # with a score at the threshold or above, and the indicator says "may shoot" on each of them
    for t in expected:
        assert timeline["accepted"][t] and timeline["score"][t] >= timeline["threshold"]
        assert indicator_state(timeline["indicator"][t]) == "key_expression"

    # The same frames as a folder of PNGs with boxes in the {"frames": [...]} form: the same shots.
    from core.video import open_video, read_frames

    folder = tmp_path / "frames"
    folder.mkdir()
    reader = open_video(root / clip["video"])
    for t, frame in enumerate(read_frames(reader, range(len(reader)))):
        Image.fromarray(frame).save(folder / f"{t:04d}.png")
    (tmp_path / "boxes.json").write_text(json.dumps({"frames": clip["frames"]}))
    from_folder = run.main(
        [str(folder), "--checkpoint", str(ckpt), "--boxes", str(tmp_path / "boxes.json"), "--fps", "10"]
    )
    assert [s["frame"] for s in from_folder["shots"]] == expected
    assert (tmp_path / "frames_photobooth" / "shots.json").exists()

    # predict.py on the same video writes the same shots and files under <video name>/.
    from core.prediction import predict
    from tests.conftest import compose_config

    video = root / clip["video"]
    args = ["task=photobooth", f"ckpt_path={ckpt}", f"input={video}", f"product.writer.boxes={root / 'test.json'}"]
    predict(compose_config("predict", args, tmp_path / "pred", tmp_path / "unused"))
    product = json.loads((tmp_path / "pred" / video.stem / "shots.json").read_text())
    assert [s["frame"] for s in product["shots"]] == expected
    assert (tmp_path / "pred" / video.stem / "contact_sheet.png").exists()


# --- the best frame of each moment wins (kiss moments included) --------------------------------------


def test_a_kiss_moment_is_shot_on_its_best_frame_by_hand():
    """Clip test/0001 of the issue: a kiss over frames 14-18 and 36-40, best 16 and 38. With the kiss's
    quality (rising and falling) the look-ahead shutter takes 16 and 38; a saturated presence score
    (1.0 on every kiss frame) cannot tell the frames apart: ties go to the later frame, 18 and 40."""
    n = 48
    quality = {"eyes_closed": np.ones(n), "talking": np.zeros(n), "attending": np.zeros(n), "blur": np.ones(n)}
    kiss = np.zeros(n)
    for start in (14, 36):
        kiss[start : start + 5] = [0.5, 0.75, 1.0, 0.75, 0.5]
    config = ScoringConfig()
    assert shutter_shots(score_frames(np.zeros(n), kiss, quality, config)["score"]) == [16, 38]
    presence = (kiss > 0).astype(float)
    assert shutter_shots(score_frames(np.zeros(n), presence, quality, config)["score"]) == [18, 40]


def _label_outputs(clip: dict, data) -> dict[str, np.ndarray]:
    """Model outputs as a perfect model would give them, from the clip's labels (the frame's expression
    quality, the kiss quality, the faces' importance as attention weights, certain attributes), with the
    blur scores measured on the decoded frames as in the pipeline."""
    from datamodules.photobooth import expression_target

    items = [data.item(t) for t in range(len(clip["boxes"]))]
    mask = np.stack([it["mask"].numpy() for it in items])
    labels = np.stack([it["face_labels"].numpy() for it in items])
    weights = np.zeros(mask.shape)
    for t, (boxes, quality) in enumerate(zip(clip["boxes"], clip["face_quality"])):
        order = np.argsort(-((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])), kind="stable")
        order = order[: mask.shape[1]]
        weights[t, : len(order)] = quality[order, 1] / max(quality[order, 1].sum(), 1e-12)
    return {
        "attributes": np.where(labels[..., 1:] == 1, 0.99, 0.01),
        "weights": weights,
        "mask": mask,
        "blur": np.stack([it["blur"].numpy() for it in items]),
        "expression": np.array(
            [expression_target(lab, q) for lab, q in zip(clip["face_labels"], clip["face_quality"])]
        ),
        "kiss": clip["kiss_quality"].astype(np.float64),
    }


@pytest.fixture(scope="module")
def quality_clips(tmp_path_factory):
    from datamodules.photobooth import read_clips
    from datamodules.synthetic.photobooth import write_photobooth_clips

    root = write_photobooth_clips(
        tmp_path_factory.mktemp("pb_quality"), train_clips=0, val_clips=0, test_clips=8, kiss_fraction=0.5, seed=3
    )
    return read_clips(root / "test.json", root)


def test_the_shot_lands_on_the_annotated_best_frame_of_each_generated_moment(quality_clips):
    """On generated clips, with the labels' own qualities as the model outputs, the filter and the
    shutter take exactly one shot per labelled moment, on its annotated best frame, kiss moments included;
    the indicator says "may shoot" on every shot."""
    from datamodules.photobooth import ClipData
    from tasks.photobooth.shutter import frame_quality

    config, kinds = ScoringConfig(), set()
    for clip in quality_clips:
        out = _label_outputs(clip, ClipData(clip, 48, (96, 160), 4))
        scored = score_frames(
            out["expression"],
            out["kiss"],
            frame_quality(out["attributes"], out["weights"], out["mask"], out["blur"]),
            config,
        )
        shots = shutter_shots(scored["score"], buffer=5, min_gap=10, threshold=0.3)
        assert shots == [best for _, _, best in clip["moments"]], clip["path"].name
        kinds.update("kiss" if clip["kiss"].any() else "expression" for _ in clip["moments"])
        bar = Indicator()
        capturable = scored["accepted"] & (scored["score"] >= 0.3)
        indicator = [
            bar.update(indicator_target(int(n), a, s, bool(c)))
            for n, a, s, c in zip(out["mask"].sum(-1), scored["smoothed"]["attending"], scored["raw_score"], capturable)
        ]
        assert all(indicator_state(indicator[t]) == "key_expression" for t in shots)
    assert kinds == {"kiss", "expression"}, "the generated clips hold both kinds of moment"


def test_the_attention_label_depends_on_position_gaze_and_expression():
    """Two faces of one size: centred, attending and smiling counts most; moved to the edge, looking away
    or neutral, less (area x centre weight x gaze x (1 + intensity), by hand for the centred face)."""
    from datamodules.synthetic.photobooth import face_importance

    box, edge = [60.0, 28.0, 100.0, 68.0], [0.0, 28.0, 40.0, 68.0]  # 40 x 40 in a 160 x 96 frame
    smiling = FaceControls(expression="smile", intensity=1.0)
    centred = face_importance(box, smiling, 160, 96)
    assert centred == pytest.approx(1600 * 1.0 * 1.0 * 2.0)
    assert face_importance(edge, smiling, 160, 96) == pytest.approx(1600 * 2.0 * np.exp(-(0.375**2) / (2 * 0.35**2)))
    assert face_importance(box, FaceControls(expression="smile", intensity=1.0, yaw=0.8), 160, 96) == pytest.approx(
        0.3 * centred
    )
    assert face_importance(box, FaceControls(), 160, 96) == pytest.approx(centred / 2)


def test_size_prior_score_by_hand():
    from tasks.photobooth.model import NUM_EXPRESSIONS, size_prior_expression_score

    logits = torch.full((1, 3, FACE_OUTPUTS), -20.0)
    logits[0, 0, 1] = 20.0  # face 0: smile, attending
    logits[0, 0, NUM_EXPRESSIONS + 2] = 20.0
    logits[0, 1, 0] = 20.0  # face 1: neutral, attending
    logits[0, 1, NUM_EXPRESSIONS + 2] = 20.0
    boxes = torch.tensor([[[0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.9, 0.9], [0.0, 0.0, 1.0, 1.0]]])  # areas .04, .16
    mask = torch.tensor([[True, True, False]])  # the third is padding
    assert size_prior_expression_score(logits, boxes, mask).item() == pytest.approx(0.04 / 0.20, abs=1e-6)


def test_best_frame_offsets_by_hand():
    from tasks.photobooth.metrics import best_frame_offsets

    # moment (2, 6) best 4: first capturing shot 3 -> 1 (shot 4 is its second shot); (15, 18) best 16: 16 -> 0
    assert best_frame_offsets([3, 4, 16, 20], [(2, 6, 4), (15, 18, 16)]) == [1, 0]
    assert best_frame_offsets([20], [(2, 6, 4)]) == []


def test_quality_labels_are_read_and_checked(tmp_path):
    """The optional quality labels: defaults from the presence labels, values read as written, and a value
    outside its range refused with the file and the line of the clip's video."""
    from core.data import DataFormatError
    from datamodules.photobooth import read_clips

    face = {"box": [0, 0, 10, 20], "expression": "smile", "attending": True}
    clip = {
        "video": "train/a.mp4",
        "frames": [{"faces": [face], "kiss": True}, {"faces": [dict(face, intensity=0.25)]}],
    }
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"clips": [clip]}, indent=1))
    read = read_clips(path, tmp_path)[0]
    # defaults: intensity 1 for a key expression, importance = box area 200, kiss_quality 1 on a kiss frame
    assert read["face_quality"][0].tolist() == [[1.0, 200.0]] and read["face_quality"][1].tolist() == [[0.25, 200.0]]
    assert read["kiss_quality"].tolist() == [1.0, 0.0]
    clip["frames"][1]["kiss_quality"] = 1.5
    path.write_text(json.dumps({"clips": [clip]}, indent=1))
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if '"video"' in text)
    with pytest.raises(DataFormatError, match=rf"train.json:{line}: 'kiss_quality' must be a number in \[0, 1\]"):
        read_clips(path, tmp_path)
    clip["frames"][1].pop("kiss_quality")
    clip["frames"][0]["faces"][0]["importance"] = 0
    path.write_text(json.dumps({"clips": [clip]}, indent=1))
    with pytest.raises(DataFormatError, match=r"'importance' must be a positive number, got 0"):
        read_clips(path, tmp_path)
