"""The face-mesh system end to end through the real configs: fast_dev_run of the task and both
experiment configs, training with a bootstrapping round, checkpoint -> eval, and the run command. The
configs' default topology is MediaPipe's canonical mesh (`make mediapipe-models` writes it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from core.training import evaluate, train
from core.video import open_video
from datamodules.face_topology import face_topology
from tasks.facemesh.anchors import generate_anchors
from tasks.facemesh.losses import detector_loss, mesh_loss
from tasks.facemesh.model import count_parameters, facemesh
from tasks.facemesh.module import SAMPLES_FILE, TEMPORAL_FILE, FaceMeshTask
from tests.helpers import mediapipe_topology_file

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [
    "data.root=${paths.data_dir}/facemesh_tiny",
    "logger=csv",
    "data.batch_size=4",
    "data.generator.rendered=[6,3,3]",
    "data.generator.annotated=[4,3,3]",
    "data.generator.unlabeled=3",
    "data.generator.clip_frames=12",
    "data.generator.image_size=128",
    "data.generator.clip_size=128",
    "task.sample_images=2",
]


@pytest.fixture
def mediapipe_mesh(shared_data_dir):
    """The default topology where the configs look for it, ${paths.data_dir}/mediapipe/face_topology.json,
    in the test session's data folder (a copy of the one `make mediapipe-models` wrote)."""
    target = shared_data_dir / "mediapipe" / "face_topology.json"
    if not target.exists():
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(mediapipe_topology_file(), target)
    return target


@pytest.mark.parametrize(
    "config, crop, variant",
    [
        (["task=facemesh", "data=facemesh"], 128, "light"),
        (["experiment=facemesh_light"], 128, "light"),
        (["experiment=facemesh_full"], 192, "full"),
    ],
    ids=["task", "light", "full"],
)
def test_fast_dev_run_of_every_facemesh_config(config, crop, variant, cfg_train, tmp_path, mediapipe_mesh):
    cfg = cfg_train([*config, *TINY, "trainer=debug"])
    metrics = train(cfg)
    # MediaPipe's canonical mesh by default: the data's, the task's and the checkpoint's
    data_topology = json.loads((Path(cfg.data.root) / "topology.json").read_text())
    assert data_topology["kind"] == "mediapipe" and data_topology["eye_corners"] == [33, 263]
    assert cfg.task.topology == cfg.data.generator.topology == str(mediapipe_mesh)
    assert set(metrics) >= {"val/nme", "val/ap50", "test/nme", "test/ap50"}
    assert metrics["test/nme"] > 0.0
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["metrics"]["test/ap50"] == metrics["test/ap50"]
    assert record["monitor"] == {"metric": "val/nme", "mode": "min"}
    assert cfg.task.crop_size == crop and cfg.data.crop_size == crop and cfg.task.variant == variant
    temporal = json.loads((tmp_path / "run" / TEMPORAL_FILE).read_text())
    assert set(temporal) >= {"still", "moving", "metrics", "smoothing"}
    # every frame of both generated clips was tracked; what was measured was logged as written
    assert temporal["still"]["frames"] == temporal["moving"]["frames"] == 12
    assert all(metrics[f"test/{key}"] == pytest.approx(value) for key, value in temporal["metrics"].items())
    assert (tmp_path / "run" / SAMPLES_FILE).exists()


def test_train_bootstrap_checkpoint_eval_and_run_command(
    cfg_train, cfg_eval, tmp_path, shared_data_dir, mediapipe_mesh
):
    """Two epochs with a bootstrapping round after the first (thresholds 0, so the untrained model's
    detections are taken: this checks the mechanics, docs/facemesh.md the effect); the checkpoint
    loads alone, eval.py reproduces the test metric, and the run command writes every output."""
    run = tmp_path / "run"
    overrides = [
        "task=facemesh",
        "data=facemesh",
        *TINY,
        "task.bootstrap_rounds=1",
        "task.bootstrap_every_n_epochs=1",
        "task.bootstrap_score_threshold=0.0",
        "task.bootstrap_face_threshold=0.0",
        "task.score_threshold=0.0",
        "task.face_threshold=0.0",
    ]
    metrics = train(
        cfg_train(
            [*overrides, "trainer.max_epochs=2", "+trainer.limit_train_batches=2", "callbacks.rich_progress_bar=null"],
            run_dir=run,
        )
    )
    summary = json.loads((run / "pseudo_labels_round1.json").read_text())
    assert summary["round"] == 1 and summary["epoch"] == 0 and summary["images"] == 3
    assert summary["labelled"] == len(summary["files"]) == 3  # every image has a detection at threshold 0
    # pictures go to the loggers too (core.media; the CSV logger keeps them as files)
    assert list(run.rglob("media/test/mesh_samples/*.png")) and list(run.rglob("media/test/moving_clip_mesh/*.mp4"))
    last = run / "checkpoints" / "last.ckpt"
    task = FaceMeshTask.load_from_checkpoint(last, map_location="cpu")
    assert task.hparams.num_points == 468 and task.bootstrap_done == 1
    # the checkpoint carries the data's mesh itself (not the path to its file)
    assert task.topology.kind == "mediapipe" and task.hparams.topology["eye_corners"] == [33, 263]
    best = json.loads((run / "metrics.json").read_text())["best_checkpoint"]
    evaluated = evaluate(cfg_eval([*overrides, f"ckpt_path={best}"], run_dir=tmp_path / "eval"))
    assert evaluated["test/nme"] == pytest.approx(metrics["test/nme"], abs=1e-5)
    assert evaluated["test/ap50"] == pytest.approx(metrics["test/ap50"], abs=1e-5)

    from tasks.facemesh.run import main as run_main

    root = shared_data_dir / "facemesh_tiny"
    image = root / "rendered" / "test" / "images" / "000000.png"
    out = tmp_path / "image_out"
    assert run_main([str(image), "--checkpoint", str(last), "--out", str(out)]) == 0
    data = np.load(out / "landmarks.npz")
    labels = json.loads((out / "landmarks.json").read_text())
    faces = labels["frames"][0]["faces"]
    assert data["points"].shape == (1, len(faces), 468, 3) and len(faces) >= 1
    np.testing.assert_allclose(data["points"][0, 0], np.array(faces[0]["points"]), atol=0.006)
    assert data["triangles"].shape == (852, 3)  # MediaPipe's tessellation
    obj = (out / "000000_mesh.obj").read_text().splitlines()
    assert sum(line.startswith("v ") for line in obj) == 468 and sum(line.startswith("f ") for line in obj) == 852
    assert "f 128 35 140" in obj  # its first triangle (127, 34, 139), 1-based
    first_v = next(line for line in obj if line.startswith("v ")).split()[1:]
    p = data["points"][0, 0, 0]
    assert [float(x) for x in first_v] == pytest.approx([p[0], -p[1], -p[2]], abs=1e-3)
    assert (out / "000000_mesh.png").exists()

    clip = root / "clips" / "moving.mp4"
    out = tmp_path / "video_out"
    assert run_main([str(clip), "--checkpoint", str(last), "--out", str(out), "--obj-frame", "5"]) == 0
    data = np.load(out / "landmarks.npz")
    assert data["points"].shape == (12, 1, 468, 3) and float(data["fps"]) == pytest.approx(30.0)
    assert len(open_video(out / "moving_mesh.mp4")) == 12
    assert sum(line.startswith("v ") for line in (out / "moving_mesh.obj").read_text().splitlines()) == 468
    raw = tmp_path / "video_raw"
    run_main([str(clip), "--checkpoint", str(last), "--out", str(raw), "--no-smoothing"])
    smoothed_pts, raw_pts = data["points"], np.load(raw / "landmarks.npz")["points"]
    np.testing.assert_allclose(smoothed_pts[0], raw_pts[0], atol=1e-4)  # the filter starts at the first frame
    assert not np.allclose(smoothed_pts[1:], raw_pts[1:])

    # predict.py on a folder of the user's images: the same faces as the run command, per image files
    from core.prediction import predict
    from tests.conftest import compose_config

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("000000.png", "000001.png"):
        (photos / name).write_bytes((root / "rendered" / "test" / "images" / name).read_bytes())
    summary = predict(
        compose_config(
            "predict", ["task=facemesh", f"ckpt_path={last}", f"input={photos}"], tmp_path / "pred", shared_data_dir
        )
    )
    assert summary["predicted"] == 2 and summary["skipped"] == 0
    merged = json.loads((tmp_path / "pred" / "landmarks.json").read_text())
    first = next(i for i in merged["images"] if i["input"].endswith("000000.png"))
    assert first["faces"] == faces  # one decoder, one pipeline: the same numbers
    name = first["name"]
    assert json.loads((tmp_path / "pred" / name / "landmarks.json").read_text())["frames"] == labels["frames"]
    assert (tmp_path / "pred" / name / "mesh.png").exists() and (tmp_path / "pred" / name / "mesh.obj").exists()

    # predict.py on a folder of videos (product.kind=videos): per video the run command's products
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "moving.mp4").write_bytes(clip.read_bytes())
    args = ["task=facemesh", f"ckpt_path={last}", f"input={clips}", "product.kind=videos"]
    summary = predict(
        compose_config("predict", [*args, "product.writer.obj_frame=5"], tmp_path / "pred_videos", shared_data_dir)
    )
    assert summary["predicted"] == 1 and summary["faces"] == int(np.isfinite(data["points"][:, 0, 0, 0]).sum())
    video_dir = tmp_path / "pred_videos" / "moving"
    predicted = np.load(video_dir / "landmarks.npz")
    for key in ("points", "boxes", "keypoints", "scores", "face_probs", "fps", "triangles"):
        np.testing.assert_array_equal(predicted[key], data[key], err_msg=key)
    assert (video_dir / "mesh.obj").read_text() == (out / "moving_mesh.obj").read_text()
    assert len(open_video(video_dir / "mesh.mp4")) == 12
    merged = json.loads((tmp_path / "pred_videos" / "landmarks.json").read_text())
    assert [(v["name"], v["frames"]) for v in merged["videos"]] == [("moving", 12)]


def test_run_command_names_bad_inputs(tmp_path):
    from tasks.facemesh.run import run

    # predict.py's input finding: the same one-line error, before the checkpoint is read
    with pytest.raises(FileNotFoundError, match=rf"^input={tmp_path / 'missing.mp4'}: no such file or folder$"):
        run(tmp_path / "missing.mp4", tmp_path / "x.ckpt")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "x.ckpt").write_text("x")
    with pytest.raises(ValueError, match=r"x\.ckpt: checkpoint is truncated or not a PyTorch checkpoint"):
        run(tmp_path / "notes.txt", tmp_path / "x.ckpt")
    # an unknown input type with a good checkpoint, and predict.py's errors: tests/tasks/test_facemesh_mediapipe.py


def test_tiny_task_forward_backward_reaches_every_parameter():
    task = FaceMeshTask(num_points=120, crop_size=64)
    anchors = generate_anchors(128)
    batch = {
        "det_image": torch.rand(2, 3, 128, 128),
        "crop": torch.rand(2, 3, 64, 64),
        # one small face (16x16 map anchors) and one large (8x8 map anchors)
        "det_boxes": torch.tensor(
            [[[0.1, 0.1, 0.26, 0.26], [0.0, 0.0, 0.0, 0.0]], [[0.2, 0.2, 0.75, 0.75], [0.0, 0.0, 0.0, 0.0]]]
        ),
        "det_keypoints": torch.rand(2, 2, 6, 2),
        "det_valid": torch.tensor([[True, False], [True, False]]),
        "points": torch.rand(2, 120, 3),
        "point_mask": torch.ones(2, 120, dtype=torch.bool),
        "has_z": torch.tensor([1.0, 0.0]),
        "face": torch.tensor([1.0, 1.0]),
    }
    parts, _ = task.losses(batch)
    parts["total"].backward()
    missing = [n for n, p in task.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
    logits, reg = task.detector(batch["det_image"])
    assert set(detector_loss(logits, reg, anchors, batch["det_boxes"], batch["det_keypoints"], batch["det_valid"])) == {
        "det_cls",
        "det_reg",
    }
    pts, flag = task.mesh(batch["crop"])
    assert mesh_loss(pts, flag, batch)["points"] > 0


def test_light_and_full_variants_and_topology():
    light, full = facemesh("light"), facemesh("full")
    assert light.input_size == 128 and full.input_size == 192
    assert count_parameters(full) > 2 * count_parameters(light)
    assert facemesh("full", input_size=256).input_size == 256
    topo = face_topology(468)
    assert (topo.rows, topo.cols, len(topo.triangles)) == (18, 26, 850)
    assert topo.eye_corners[0] in topo.contours["right_eye"] and topo.eye_corners[1] in topo.contours["left_eye"]
    assert (face_topology(120).rows, face_topology(120).cols) == (10, 12)
    with pytest.raises(ValueError, match="num_points=13"):
        face_topology(13)
    with pytest.raises(ValueError, match="unknown face-mesh variant"):
        facemesh("huge")
