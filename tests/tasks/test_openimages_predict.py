"""predict.py for the three Open Images tracks on generated images as a user has them: each track's
Kaggle submission equals the one its test run wrote for the same images and re-scores with the CLI
scorer to the logged test metric; the pictures are PNGs of the inputs' size with the predictions drawn
over the threshold only; an unreadable file is skipped and counted; 2 DDP processes equal one."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.prediction import predict
from core.resolvers import PROJECT_ROOT
from core.training import train
from tasks.openimages.predict import PALETTE, merge_copies
from tasks.openimages.submission import read_detection_submission, read_segmentation_submission
from tests.conftest import compose_config
from tests.helpers import run_entry

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [
    "experiment=openimages_detection",
    "data.generator.num_train=8",
    "data.generator.num_val=4",
    "data.generator.num_test=6",
    "data.batch_size=4",
    "trainer.max_epochs=1",
    "logger=csv",
    "callbacks.rich_progress_bar=null",
]
# The test split's files under the challenge's names, as the scoring CLI reads them.
CHALLENGE_NAMES = [
    ("test-annotations-bbox.csv", "challenge-2019-validation-detection-bbox.csv"),
    ("test-annotations-human-imagelabels-boxable.csv", "challenge-2019-validation-detection-human-imagelabels.csv"),
    ("bbox_labels_600_hierarchy.json", "challenge-2019-label500-hierarchy.json"),
    ("challenge-2019-classes-description-500.csv", "challenge-2019-classes-description-500.csv"),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(last checkpoint, run folder, data root, metrics) of a one-epoch run with its test."""
    base = tmp_path_factory.mktemp("oi_predict")
    cfg = compose_config("train", [*TINY, f"data.root={base / 'oi'}"], base / "run", base / "data")
    metrics = train(cfg)
    return base / "run" / "checkpoints" / "last.ckpt", base / "run", base / "oi", metrics


def run_predict(out: Path, ckpt: Path, images: Path, *extra: str) -> dict:
    overrides = ["task=openimages_detection", f"ckpt_path={ckpt}", f"input={images}", *extra]
    return predict(compose_config("predict", overrides, out, out.parent / "data"))


def test_submission_equals_the_test_run_and_rescores_to_test_map(trained, tmp_path):
    ckpt, run, root, metrics = trained
    images = tmp_path / "my photos" / "set1"
    shutil.copytree(root / "test", images)
    (images / "broken.jpg").write_bytes(b"\x00 not an image \xff" * 8)
    with pytest.warns(UserWarning, match="broken.jpg"):
        summary = run_predict(tmp_path / "pred", ckpt, images.parent)
    assert summary["inputs"] == 7 and summary["predicted"] == 6 and summary["skipped"] == 1
    ours = (tmp_path / "pred" / "submission.csv").read_text().splitlines()
    test_submission = next(run.rglob("test_submission.csv"))
    test_run = test_submission.read_text().splitlines()
    assert ours[0] == "ImageId,PredictionString" and [r.split(",")[0] for r in ours[1:]] == sorted(
        p.stem for p in (root / "test").glob("*.jpg")
    )
    # the same detections as the test run on the same images (the checkpoint of its only epoch)
    classes = {mid: i for i, mid in enumerate(_class_mids(root))}
    got = read_detection_submission(tmp_path / "pred" / "submission.csv", classes)
    want = read_detection_submission(test_submission, classes)
    assert len(ours) == len(test_run) and set(got) == set(want)
    assert sum(len(d.labels) for d in got.values()) > 0
    for image_id, detections in want.items():
        np.testing.assert_array_equal(got[image_id].labels, detections.labels)
        np.testing.assert_allclose(got[image_id].scores, detections.scores, atol=1e-5)
        np.testing.assert_allclose(got[image_id].boxes, detections.boxes, atol=2e-6)
    # the CLI scorer gives the mAP the test run logged
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    for src, dst in CHALLENGE_NAMES:
        shutil.copy(root / src, annotations / dst)
    proc = subprocess.run(
        [sys.executable, "-m", "tasks.openimages.evaluate", str(tmp_path / "pred" / "submission.csv"),
         "--annotations", str(annotations), "--track", "detection", "--out", str(tmp_path / "scored.json")],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "mAP" in proc.stdout
    scored = json.loads((tmp_path / "scored.json").read_text())
    assert scored["mAP"] == pytest.approx(float(metrics["test/map"]), abs=1e-5)
    # one picture per readable input, an RGB PNG of the input's size
    pictures = sorted((tmp_path / "pred" / "detections").glob("*.png"))
    assert [p.stem for p in pictures] == [r.split(",")[0] for r in ours[1:]]
    for picture in pictures:
        with Image.open(picture) as image:
            assert image.format == "PNG" and image.mode == "RGB" and image.size == (160, 120)


def _class_mids(root: Path) -> list[str]:
    from datamodules.openimages_files import read_class_descriptions

    return list(read_class_descriptions(root / "class-descriptions-boxable.csv"))


@pytest.mark.slow
def test_ddp_predict_equals_single_process(trained, tmp_path):
    """2 gloo processes each predict a shard and write their pictures; rank 0's submission holds every
    image once, equal to the single-process one."""
    ckpt, _, root, _ = trained
    common = [
        "task=openimages_detection",
        f"ckpt_path={ckpt}",
        f"input={root / 'test'}",
        "product.inputs.batch_size=2",
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]
    run_entry("predict.py", [*common, f"output_dir={tmp_path / 'single'}"])
    out = run_entry("predict.py", [*common, f"output_dir={tmp_path / 'double'}", "trainer=ddp_cpu"])
    assert "distributed_backend=gloo" in out.stdout + out.stderr
    journals = sorted(p.name for p in (tmp_path / "double" / "predictions").glob("journal_rank*.jsonl"))
    assert journals == ["journal_rank0.jsonl", "journal_rank1.jsonl"]
    classes = {mid: i for i, mid in enumerate(_class_mids(root))}
    single, double = (read_detection_submission(tmp_path / r / "submission.csv", classes) for r in ("single", "double"))
    assert list(double) == list(single) == sorted(p.stem for p in (root / "test").glob("*.jpg"))
    for image_id, detections in single.items():
        np.testing.assert_array_equal(double[image_id].labels, detections.labels)
        np.testing.assert_allclose(double[image_id].scores, detections.scores, atol=1e-5)
        np.testing.assert_allclose(double[image_id].boxes, detections.boxes, atol=2e-6)
    assert len(list((tmp_path / "double" / "detections").glob("*.png"))) == len(single)


def test_pictures_show_the_boxes_over_the_threshold_only(trained, tmp_path):
    ckpt, _, root, _ = trained
    image = sorted((root / "test").glob("*.jpg"))[0]
    with Image.open(image) as im:
        original = np.asarray(im.convert("RGB"))
    # threshold 1: nothing drawn, the picture is the decoded input
    run_predict(tmp_path / "none", ckpt, image, "product.writer.draw_threshold=1.0")
    picture = np.asarray(Image.open(tmp_path / "none" / "detections" / f"{image.stem}.png"))
    np.testing.assert_array_equal(picture, original)
    # threshold 0: every detection framed in its class's colour
    run_predict(tmp_path / "all", ckpt, image, "product.writer.draw_threshold=0.0")
    picture = np.asarray(Image.open(tmp_path / "all" / "detections" / f"{image.stem}.png"))
    changed = (picture != original).any(-1)
    assert changed.sum() > 100
    record = json.loads((tmp_path / "all" / "predictions" / "journal_rank0.jsonl").read_text().splitlines()[0])
    # the last box drawn (the last detection that is not a copy to an ancestor) lies on top: its
    # class's colour is in the picture
    mids = _class_mids(root)
    last = merge_copies(
        record["scores"], np.asarray(record["boxes"]).reshape(-1, 4), [mids.index(m) for m in record["labels"]]
    )[-1]
    colours = {tuple(c) for c in picture[changed].tolist()}
    assert PALETTE[last[0][0] % len(PALETTE)] in colours
    # ids are file names without suffix; boxes normalized
    summary = json.loads((tmp_path / "all" / "predict_summary.json").read_text())
    assert summary["predicted"] == 1 and summary["detections"] == len(record["labels"])
    boxes = np.asarray(record["boxes"])
    assert ((boxes >= 0) & (boxes <= 1)).all() and (boxes[:, 2] >= boxes[:, 0]).all()


def test_checkpoint_without_class_names_needs_a_class_file(trained, tmp_path):
    import torch

    ckpt, _, root, _ = trained
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    checkpoint["openimages"] = {"class_ancestors": checkpoint["openimages"]["class_ancestors"]}
    bare = tmp_path / "bare.ckpt"
    torch.save(checkpoint, bare)
    image = sorted((root / "test").glob("*.jpg"))[0]
    with pytest.raises(ValueError, match="product.writer.class_descriptions="):
        run_predict(tmp_path / "p1", bare, image)
    classes = root / "class-descriptions-boxable.csv"
    run_predict(tmp_path / "p2", bare, image, f"product.writer.class_descriptions={classes}")
    assert (tmp_path / "p2" / "submission.csv").read_text().splitlines()[1].split(",")[0] == image.stem


# --- instance segmentation ------------------------------------------------------------------------

SEGMENTATION = [
    "experiment=openimages_segmentation",
    "data.generator.num_train=8",
    "data.generator.num_val=4",
    "data.generator.num_test=6",
    "data.generator.image_size=[200,150]",  # JPEGs larger than the network's input (160 x 120)
    "data.batch_size=4",
    "trainer.max_epochs=1",
    "logger=csv",
    "callbacks.rich_progress_bar=null",
]
SEGMENTATION_NAMES = [
    ("test-annotations-bbox.csv", "challenge-2019-validation-segmentation-bbox.csv"),
    ("test-annotations-human-imagelabels-boxable.csv", "challenge-2019-validation-segmentation-labels.csv"),
    ("test-annotations-object-segmentation.csv", "challenge-2019-validation-segmentation-masks.csv"),
    ("bbox_labels_600_hierarchy.json", "challenge-2019-label300-segmentable-hierarchy.json"),
    ("challenge-2019-classes-description-segmentable.csv", "challenge-2019-classes-description-segmentable.csv"),
]


def test_segmentation_submission_equals_the_test_run_and_rescores_to_test_map(tmp_path):
    base = tmp_path / "train"
    cfg = compose_config("train", [*SEGMENTATION, f"data.root={base / 'oi'}"], base / "run", base / "data")
    metrics = train(cfg)
    ckpt, root = base / "run" / "checkpoints" / "last.ckpt", base / "oi"
    images = tmp_path / "photos"
    shutil.copytree(root / "test", images)
    overrides = ["task=openimages_segmentation", f"ckpt_path={ckpt}", f"input={images}"]
    summary = predict(compose_config("predict", overrides, tmp_path / "pred", tmp_path / "data"))
    assert summary["predicted"] == 6 and summary["pictures"] == "segmentations"
    classes = {mid: i for i, mid in enumerate(_class_mids(root))}
    got = read_segmentation_submission(tmp_path / "pred" / "submission.csv", classes)
    want = read_segmentation_submission(next((base / "run").rglob("test_submission.csv")), classes)
    assert list(got) == sorted(p.stem for p in images.glob("*.jpg")) and set(got) == set(want)
    masks = 0
    for image_id, row in want.items():
        assert (got[image_id].width, got[image_id].height) == (row.width, row.height) == (200, 150)
        np.testing.assert_array_equal(got[image_id].labels, row.labels)
        np.testing.assert_allclose(got[image_id].scores, row.scores, atol=1e-5)
        ours, theirs = got[image_id].decode(), row.decode()  # full-resolution masks
        assert (ours == theirs).mean() > 0.999
        masks += int(ours.any((1, 2)).sum())
    assert masks > 0
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    for src, dst in SEGMENTATION_NAMES:
        shutil.copy(root / src, annotations / dst)
    shutil.copytree(root / "test-masks", annotations / "challenge-2019-validation-masks")
    subprocess.run(
        [sys.executable, "-m", "tasks.openimages.evaluate", str(tmp_path / "pred" / "submission.csv"),
         "--annotations", str(annotations), "--track", "segmentation", "--out", str(tmp_path / "scored.json")],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    scored = json.loads((tmp_path / "scored.json").read_text())
    assert scored["mAP"] == pytest.approx(float(metrics["test/map"]), abs=1e-5)
    for image_id in got:  # the pictures: the JPEG's size, masks blended in
        with Image.open(tmp_path / "pred" / "segmentations" / f"{image_id}.png") as picture:
            assert picture.format == "PNG" and picture.size == (200, 150)


# --- visual relationships ---------------------------------------------------------------------------

RELATIONSHIP = [
    "experiment=openimages_relationship",
    "data.generator.num_train=24",
    "data.generator.num_val=8",
    "data.generator.num_test=12",
    "data.batch_size=8",
    "trainer.max_epochs=2",
    "trainer.num_sanity_val_steps=0",
    "task.optimizer.lr=0.004",
    "task.score_threshold=0.0",  # a barely trained detector's boxes score low: keep them, so triplets exist
    "logger=csv",
    "callbacks.rich_progress_bar=null",
]
RELATIONSHIP_NAMES = [
    ("test-annotations-vrd.csv", "challenge-2019-validation-vrd.csv"),
    ("test-annotations-human-imagelabels-boxable.csv", "challenge-2019-validation-vrd-labels.csv"),
    ("challenge-2019-classes-vrd.csv", "challenge-2019-classes-vrd.csv"),
    ("challenge-2019-attributes-description.csv", "challenge-2019-attributes-description.csv"),
    ("challenge-2019-relationships-description.csv", "challenge-2019-relationships-description.csv"),
]


@pytest.mark.slow  # two epochs of the relationship detector: about 40 s on 2 loaded cores
def test_relationship_submission_equals_the_test_run_and_rescores_to_test_score(tmp_path):
    from tasks.openimages.relationship.protocol import read_relationship_submission

    base = tmp_path / "train"
    cfg = compose_config("train", [*RELATIONSHIP, f"data.root={base / 'oi'}"], base / "run", base / "data")
    metrics = train(cfg)
    # the checkpoint the test ran (the best validation score's)
    ckpt = json.loads((base / "run" / "metrics.json").read_text())["best_checkpoint"]
    root = base / "oi"
    test_submission = next((base / "run").rglob("test_submission.csv"))
    want = read_relationship_submission(test_submission)
    images = tmp_path / "photos"  # the track's test images: those of the test relationship file
    images.mkdir()
    for image_id in want:
        shutil.copy(root / "test" / f"{image_id}.jpg", images)
    overrides = ["task=openimages_relationship", f"ckpt_path={ckpt}", f"input={images}"]
    summary = predict(compose_config("predict", overrides, tmp_path / "pred", tmp_path / "data"))
    assert summary["predicted"] == len(want) > 0 and summary["pictures"] == "relationships"
    got = read_relationship_submission(tmp_path / "pred" / "submission.csv")
    assert list(got) == sorted(want) and summary["triplets"] == sum(len(v) for v in want.values()) > 0
    for image_id, rows in want.items():
        assert [r for _, r in got[image_id]] == [r for _, r in rows]  # names and (rounded) boxes
        np.testing.assert_allclose([s for s, _ in got[image_id]], [s for s, _ in rows], rtol=1e-6)
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    for src, dst in RELATIONSHIP_NAMES:
        shutil.copy(root / src, annotations / dst)
    subprocess.run(
        [sys.executable, "-m", "tasks.openimages.evaluate", str(tmp_path / "pred" / "submission.csv"),
         "--annotations", str(annotations), "--track", "relationship", "--out", str(tmp_path / "scored.json")],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    scored = json.loads((tmp_path / "scored.json").read_text())
    # (a two-epoch model scores about 0 here; tests/tasks/test_openimages_relationship.py shows a
    # trained one's submission re-scoring to a non-zero logged score)
    for key in ("score", "map_relationship", "recall50_relationship", "map_phrase"):
        assert scored[key] == pytest.approx(float(metrics[f"test/{key}"]), abs=1e-6), key
    for image_id in got:
        with Image.open(tmp_path / "pred" / "relationships" / f"{image_id}.png") as picture:
            assert picture.format == "PNG" and picture.size == (160, 120)


def test_image_ids_are_file_stems_unless_two_files_share_one():
    from tasks.openimages.predict import image_ids

    assert image_ids([Path("a/x.jpg"), Path("a/y.png")], ["x", "y"]) == ["x", "y"]
    with pytest.warns(UserWarning, match="share a name"):
        assert image_ids([Path("a/x.jpg"), Path("b/x.jpg")], ["a__x", "b__x"]) == ["a__x", "b__x"]


def test_a_detection_and_its_ancestor_copies_are_drawn_as_one_box():
    boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.6, 0.6], [0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5]])
    # detections 0 (class 3) and 1 (class 4); 2 and 3 copy 0 to classes 7 and 8; same box, other score: apart
    merged = merge_copies([0.9, 0.8, 0.9, 0.9], boxes, [3, 4, 7, 8])
    assert merged == [([3, 7, 8], 0.9, 0), ([4], 0.8, 1)]
    assert merge_copies([0.9, 0.7], boxes[[0, 2]], [3, 3]) == [([3], 0.9, 0), ([3], 0.7, 1)]
