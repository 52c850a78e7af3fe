"""MediaPipe's published face detector and face mesh, imported into PyTorch: the TFLite reader, the
networks equal to the LiteRT interpreter (random tensors and real photographs), the import's checkpoint
through the pipeline (numbers of MediaPipe's own runtime), the canonical topology and the import's errors.

The wheel is the one `make mediapipe-models` fetched with pip (tests skip with that advice without it)."""

from __future__ import annotations

import json
import zipfile

import cv2
import matplotlib.cbook
import numpy as np
import pytest
import torch
from ai_edge_litert.interpreter import Interpreter
from PIL import Image
from skimage import data as skimage_data

from core.data import DataFormatError
from core.onnx_runtime import OnnxRuntimeModule
from core.tflite import read_tflite
from core.training import train
from core.video import open_video, write_video
from datamodules.face_alignment import alignment_params, crop_matrix, index_to_continuous, warp_crops
from datamodules.face_topology import MEDIAPIPE_CONTOURS, mediapipe_topology
from tasks.facemesh.detector import detect_faces, detector_input, to_batch
from tasks.facemesh.import_mediapipe import (
    MEDIAPIPE_TASK,
    PUBLISHED,
    import_mediapipe,
    imported_networks,
    main,
    read_published,
)
from tasks.facemesh.module import FaceMeshTask
from tasks.facemesh.pipeline import FaceMeshPipeline
from tasks.facemesh.run import run
from tasks.facemesh.runtime import default_runtime
from tasks.photobooth.predict import detector_boxes, read_input
from tests.helpers import mediapipe_wheel
from tests.tasks.test_facemesh import TINY

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def published():
    return read_published([mediapipe_wheel()])


@pytest.fixture(scope="module")
def networks(published):
    return imported_networks(published)


@pytest.fixture(scope="module")
def checkpoint(published, tmp_path_factory):
    return import_mediapipe([mediapipe_wheel()], tmp_path_factory.mktemp("mediapipe") / "facemesh.ckpt")


def photographs() -> dict[str, np.ndarray]:
    """Real photographs that installed packages ship: scikit-image's astronaut (Eileen Collins, NASA) and
    matplotlib's Grace Hopper."""
    hopper = np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB"))
    return {"astronaut": skimage_data.astronaut(), "grace_hopper": hopper}


def litert(model: bytes, x: np.ndarray) -> dict[str, np.ndarray]:
    """The published runtime's outputs (by tensor name) for one NHWC input."""
    interpreter = Interpreter(model_content=model)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x.astype(np.float32))
    interpreter.invoke()
    return {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(0, 3, 1, 2)


# To 1e-3 in pixels and logits; a logit far from 0 (background anchors on a letterbox's zero border reach
# -400) also carries float32's rounding of its size, 1e-5 of it.
TOLERANCE = {"atol": 1e-3, "rtol": 1e-5}


def assert_detector_equal(detector, model: bytes, x: np.ndarray) -> None:
    """x: the detector's NHWC input in [-1, 1]."""
    x = x.astype(np.float32)
    ref = litert(model, x)
    with torch.no_grad():
        boxes, scores = detector.raw(nchw(x))
    np.testing.assert_allclose(boxes.numpy(), ref["regressors"], **TOLERANCE)
    np.testing.assert_allclose(scores.numpy(), ref["classificators"], **TOLERANCE)


def assert_mesh_equal(mesh, model: bytes, x: np.ndarray) -> None:
    """x: the mesh's NHWC crop in [0, 1]."""
    x = x.astype(np.float32)
    ref = litert(model, x)
    with torch.no_grad():
        points, flag = mesh.raw(nchw(x))
    np.testing.assert_allclose(points.numpy(), ref["conv2d_21"].reshape(1, -1), **TOLERANCE)
    np.testing.assert_allclose(flag.numpy(), ref["conv2d_31"].reshape(1, -1), **TOLERANCE)


# --- the TFLite reader -------------------------------------------------------------------------


def test_tflite_reader_reads_the_published_detector(published):
    path, data = published["detector"]
    graph = read_tflite(path, data)
    # Op census of face_detection_short_range.tflite (0.10.14), as listed in the issue and our notes.
    assert graph.op_counts() == {
        "DEQUANTIZE": 74,
        "CONV_2D": 21,
        "RELU": 17,
        "DEPTHWISE_CONV_2D": 16,
        "ADD": 16,
        "PAD": 11,
        "MAX_POOL_2D": 3,
        "RESHAPE": 4,
        "CONCATENATION": 2,
    }
    assert [graph.tensors[i].shape for i in graph.inputs] == [(1, 128, 128, 3)]
    assert sorted(graph.tensors[i].name for i in graph.outputs) == ["classificators", "regressors"]
    stem = graph.ops_of_kind("CONV_2D")[0]
    assert stem.options["stride_h"] == 2 and stem.options["padding"] == "SAME"
    weight = graph.array(stem.inputs[1])  # behind a DEQUANTIZE: fp16 in the file, float32 here
    producer = graph.producer(stem.inputs[1])
    assert producer.kind == "DEQUANTIZE" and graph.tensors[producer.inputs[0]].dtype == np.float16
    assert weight.dtype == np.float32 and weight.shape == (24, 5, 5, 3)
    raw = np.frombuffer(graph.buffers[graph.tensors[producer.inputs[0]].buffer], np.float16)
    np.testing.assert_array_equal(weight.ravel(), raw.astype(np.float32))


def test_tflite_reader_names_the_file_of_a_bad_model(published, tmp_path):
    not_tflite = tmp_path / "notes.tflite"
    not_tflite.write_bytes(b"these are not flatbuffers at all")
    with pytest.raises(DataFormatError, match=r"notes\.tflite: not a TFLite model"):
        read_tflite(not_tflite)
    truncated = tmp_path / "face_landmark.tflite"
    truncated.write_bytes(published["mesh"][1][:50_000])
    with pytest.raises(DataFormatError, match=r"face_landmark\.tflite: truncated or corrupt TFLite model"):
        read_tflite(truncated)
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        read_tflite(tmp_path / "missing.tflite")


# --- the networks equal the published runtime ----------------------------------------------------


def test_networks_equal_litert_on_random_tensors(published, networks):
    detector, mesh = networks
    rng = np.random.default_rng(0)
    for _ in range(2):
        assert_detector_equal(detector, published["detector"][1], rng.uniform(-1, 1, (1, 128, 128, 3)))
        assert_mesh_equal(mesh, published["mesh"][1], rng.uniform(0, 1, (1, 192, 192, 3)))


def test_networks_equal_litert_on_photographs(published, networks):
    detector, mesh = networks
    for name, photo in photographs().items():
        batch = to_batch(photo)
        x, _, _ = detector_input(batch, detector)  # the letterboxed photo the pipeline feeds
        assert_detector_equal(detector, published["detector"][1], x.permute(0, 2, 3, 1).numpy() * 2 - 1)
        ((boxes, kps, scores),) = detect_faces(batch, detector)
        assert len(scores) == 1, name
        centre, side, angle = alignment_params(boxes, kps)
        matrix = index_to_continuous(crop_matrix(centre - 0.5, side, angle, 192))
        crop = warp_crops(batch, matrix, 192, "border")  # the face crop the pipeline feeds
        assert_mesh_equal(mesh, published["mesh"][1], crop.permute(0, 2, 3, 1).numpy())


# --- the whole pipeline gives MediaPipe's answer ------------------------------------------------

# MediaPipe 0.10.14's own runtime, run beside ours in its own environment (mp.solutions.face_mesh.FaceMesh,
# static_image_mode=True, refine_landmarks=False) on the same photographs: landmark (x * width, y * height,
# z * width). MediaPipe's pixel coordinates put a pixel's centre at integers, ours at + 0.5.
MEDIAPIPE_LANDMARKS = {
    "astronaut": {
        1: (224.10, 131.18, -23.31),
        10: (227.50, 72.43, -11.20),
        33: (194.65, 100.94, 3.93),
        152: (221.34, 175.49, 8.71),
        263: (256.71, 104.08, 4.48),
    },
    "grace_hopper": {
        1: (268.07, 245.63, -45.22),
        10: (261.98, 131.91, -11.68),
        33: (201.61, 194.23, 12.46),
        152: (271.62, 333.06, 8.23),
        263: (326.37, 187.28, 13.23),
    },
}


def test_imported_checkpoint_gives_mediapipes_landmarks(checkpoint):
    task = FaceMeshTask.load_from_checkpoint(checkpoint, map_location="cpu")
    assert task.topology.kind == "mediapipe" and task.topology.eye_corners == (33, 263)
    pipeline = FaceMeshPipeline.from_task(task)
    for name, photo in photographs().items():
        faces = pipeline.process_image(photo)
        assert len(faces) == 1, name
        expected = MEDIAPIPE_LANDMARKS[name]
        reference = np.array(list(expected.values()))
        reference[:, :2] += 0.5
        iod = np.linalg.norm(reference[2, :2] - reference[4, :2])
        ours = faces[0].points[list(expected)]
        # within 0.1 % of the inter-ocular distance (the figures are rounded to 0.01 px)
        assert np.abs(ours - reference).max() < 0.001 * iod + 0.01, name


def test_fine_tuning_starts_from_the_imported_weights(checkpoint, networks):
    task = FaceMeshTask(**MEDIAPIPE_TASK, pretrained_path=str(checkpoint))
    assert task.topology.kind == "mediapipe" and task.hparams.topology["kind"] == "mediapipe"
    detector, mesh = networks
    for ours, theirs in ((task.detector, detector), (task.mesh, mesh)):
        for (key, value), (key2, value2) in zip(ours.state_dict().items(), theirs.state_dict().items()):
            assert key == key2 and torch.equal(value, value2), key


# --- the canonical topology ---------------------------------------------------------------------


def test_mediapipe_topology_from_the_published_connections(published):
    path, data = published["connections"]
    topology = mediapipe_topology(data.decode(), path)
    assert topology.num_points == 468 and topology.triangles.shape == (852, 3)
    # The tessellation's first line: "(127, 34),  (34, 139),  (139, 127), (11, 0),    (0, 37),    (37, 11),"
    assert topology.triangles[:2].tolist() == [[127, 34, 139], [11, 0, 37]]
    # FACEMESH_LIPS begins "(61, 146), (146, 91), (91, 181)"; 33 / 263 are the outer eye corners
    assert topology.contours["lips"][:4] == [61, 146, 91, 181]
    assert 33 in topology.contours["right_eye"] and 263 in topology.contours["left_eye"]
    assert len(topology.contours["face_oval"]) == 36


def test_mediapipe_topology_rejects_other_python(tmp_path):
    with pytest.raises(
        DataFormatError, match=r"x\.py: not MediaPipe's face_mesh_connections.py: no FACEMESH_TESSELATION"
    ):
        mediapipe_topology("FACEMESH_LIPS = frozenset([(1, 2)])\n", tmp_path / "x.py")
    broken = "FACEMESH_TESSELATION = frozenset([(1, 2), (2, 3), (3, 4)])\n"
    with pytest.raises(DataFormatError, match="edges 0-2 do not close a triangle"):
        mediapipe_topology(
            broken + "".join(f"{v} = frozenset([(0, 1)])\n" for v in MEDIAPIPE_CONTOURS.values()), "x.py"
        )


# --- the import's errors ------------------------------------------------------------------------


def test_import_refuses_a_wheel_without_the_models(tmp_path, capsys):
    wheel = tmp_path / "mediapipe-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("mediapipe/__init__.py", "")
    assert main([str(wheel), "--out", str(tmp_path / "x.ckpt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {wheel}: expected the mediapipe 0.10.x wheel with {PUBLISHED['detector']}")
    assert "\n" not in err and not (tmp_path / "x.ckpt").exists()


def test_import_refuses_a_tflite_that_is_not_a_face_model(published, tmp_path):
    with zipfile.ZipFile(mediapipe_wheel()) as archive:
        segmenter = archive.read("mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite")
    other = tmp_path / "model.tflite"
    other.write_bytes(segmenter)
    with pytest.raises(DataFormatError, match=r"model\.tflite: not one of the face models: expected MediaPipe's"):
        read_published([other])
    truncated = tmp_path / "face_detection_short_range.tflite"
    truncated.write_bytes(published["detector"][1][:-1000])
    with pytest.raises(DataFormatError, match="face_detection_short_range.tflite: truncated or corrupt"):
        read_published([truncated])


def test_import_names_what_a_folder_lacks(published, tmp_path):
    (tmp_path / "face_landmark.tflite").write_bytes(published["mesh"][1])
    with pytest.raises(FileNotFoundError, match=r"expected MediaPipe's short-range face detector .*, not found"):
        read_published([tmp_path])


# --- the run command on a photograph with the imported checkpoint --------------------------------


def test_run_command_on_a_photograph_with_the_imported_checkpoint(checkpoint, tmp_path):
    photo = tmp_path / "astronaut.png"
    Image.fromarray(photographs()["astronaut"]).save(photo)
    summary = run(photo, checkpoint, tmp_path / "out")
    assert summary["faces"] == 1 and summary["obj_frame"] == 0
    landmarks = json.loads((tmp_path / "out" / "landmarks.json").read_text())
    assert landmarks["num_points"] == 468
    nose = landmarks["frames"][0]["faces"][0]["points"][1]
    assert nose[:2] == pytest.approx([224.1 + 0.5, 131.18 + 0.5], abs=0.05)  # MediaPipe's landmark 1 (above)
    obj = (tmp_path / "out" / "astronaut_mesh.obj").read_text().splitlines()
    assert sum(line.startswith("v ") for line in obj) == 468 and sum(line.startswith("f ") for line in obj) == 852
    assert "f 128 35 140" in obj  # the tessellation's first triangle (127, 34, 139), 1-based
    assert (tmp_path / "out" / "astronaut_mesh.png").exists()


def test_run_command_gives_predict_pys_errors(checkpoint, tmp_path):
    """A file that is no image (any suffix but a video's is read as an image, as predict.py reads a file it is
    given) and a missing file: the run command's error is predict.py's, word for word."""
    from core.prediction import predict
    from tests.conftest import compose_config

    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    with pytest.raises(DataFormatError) as err:
        run(notes, checkpoint)
    assert str(err.value) == f"{notes}: cannot decode image (cannot identify image file '{notes}')"
    args = ["task=facemesh", f"ckpt_path={checkpoint}", "product.inputs.num_workers=0"]
    with pytest.warns(UserWarning, match="skipping input"), pytest.raises(FileNotFoundError) as skipped:
        predict(compose_config("predict", [*args, f"input={notes}"], tmp_path / "pred", tmp_path / "data"))
    assert str(skipped.value).endswith(f"(1 skipped: {err.value})")  # predict.py's reason for skipping it
    missing = tmp_path / "missing.mp4"
    with pytest.raises(FileNotFoundError) as err:
        run(missing, checkpoint)
    with pytest.raises(FileNotFoundError) as predicted:
        predict(compose_config("predict", [*args, f"input={missing}"], tmp_path / "pred2", tmp_path / "data"))
    assert str(err.value) == str(predicted.value) == f"input={missing}: no such file or folder"


def test_run_command_tracks_the_face_through_a_real_video(checkpoint, tmp_path):
    """The camera move over the Grace Hopper photograph (an encoded MP4) through ``python -m tasks.facemesh.run
    --threads 1``: the face tracked in every frame, the mesh video, and the pipeline's CPU budget set."""
    from tasks.facemesh.run import main as run_main

    frames, matrices = moving_video(photographs()["grace_hopper"])  # 48 frames, the first 10 read
    video = write_video(tmp_path / "hopper.mp4", frames, fps=24)
    torch.set_num_threads(2)
    args = [str(video), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"), "--threads", "1"]
    assert run_main([*args, "--max-frames", "10"]) == 0
    assert torch.get_num_threads() == 1 and cv2.getNumThreads() == 1
    data = np.load(tmp_path / "out" / "landmarks.npz")
    assert data["points"].shape == (10, 1, 468, 3) and np.isfinite(data["points"]).all()
    assert float(data["fps"]) == pytest.approx(24)
    # the nose tip follows the camera move: where the affine of each frame carries the first frame's
    nose = data["points"][:, 0, 1, :2]
    m0 = np.vstack([matrices[0], [0, 0, 1]])
    on_photo = np.linalg.solve(m0, np.append(nose[0], 1.0))[:2]
    carried = np.stack([m[:, :2] @ on_photo + m[:, 2] for m in matrices[:10]])
    side = float(np.ptp(data["points"][0, 0, :, 0]))
    assert np.linalg.norm(nose - carried, axis=1).max() < 0.05 * side  # one-euro smoothed: a small lag
    assert len(open_video(tmp_path / "out" / "hopper_mesh.mp4")) == 10
    assert (tmp_path / "out" / "hopper_mesh.obj").exists()


def test_tools_run_onnx_runtime_by_default_and_give_the_pytorch_answer(checkpoint, tmp_path):
    """ONNX Runtime (the export, checked equal at export) is the tools' default and changes no output beyond
    1e-2 px: the run command's landmarks and OBJ, predict's pipeline and the detector other systems call."""
    assert default_runtime() == "onnxruntime"  # onnxruntime and onnx are dependencies of the project
    photo = tmp_path / "astronaut.png"
    Image.fromarray(photographs()["astronaut"]).save(photo)
    outputs = {}
    for runtime in ("torch", None):
        run(photo, checkpoint, tmp_path / str(runtime), runtime=runtime)
        data = np.load(tmp_path / str(runtime) / "landmarks.npz")
        outputs[runtime] = {k: data[k] for k in ("points", "boxes", "keypoints", "scores", "face_probs")}
    for key, value in outputs["torch"].items():
        np.testing.assert_allclose(outputs[None][key], value, atol=1e-2, err_msg=key)
    task = FaceMeshTask.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    assert isinstance(task.inference_networks()[0], OnnxRuntimeModule)
    frames = np.stack([photographs()["astronaut"]] * 3)
    for (b, k, s), (bt, kt, st) in zip(task.detect_faces(frames), task.detect_faces(frames, runtime="torch")):
        for got, want in ((b, bt), (k, kt), (s, st)):
            np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-2)
    with pytest.raises(ValueError, match="runtime 'tflite': expected one of onnxruntime, torch"):
        run(photo, checkpoint, tmp_path / "x", runtime="tflite")


def test_detection_leaves_a_training_network_in_training_and_an_evaluating_one_untouched(checkpoint):
    task = FaceMeshTask.load_from_checkpoint(checkpoint, map_location="cpu")
    calls = []
    task.detector.train = lambda mode=True, f=task.detector.train: calls.append(mode) or f(mode)
    task.detector.eval()
    calls.clear()
    detect_faces(photographs()["astronaut"], task.detector)
    assert calls == []  # no eval()/train() walk of every sub-layer per frame
    task.detector.train()
    calls.clear()
    detect_faces(photographs()["astronaut"], task.detector)
    assert calls == [False, True] and task.detector.training


# --- Photobooth finds the face in every frame of a real video with the imported detector -----------


def moving_video(photo: np.ndarray, frames: int = 48, size: tuple[int, int] = (640, 480)):
    """A camera move over a photograph: the photo shifts and zooms (0.55x to 0.95x) across a 640x480
    frame. Returns the frames and each frame's affine from photo to frame pixels."""
    w, h = size
    out, matrices = [], []
    for t in range(frames):
        phase = t / (frames - 1)
        scale = 0.55 + 0.4 * (0.5 - 0.5 * np.cos(2 * np.pi * phase))
        dx = 40 * np.sin(2 * np.pi * phase) + (w - scale * photo.shape[1]) / 2
        dy = 25 * np.sin(4 * np.pi * phase) + (h - scale * photo.shape[0]) / 2
        m = np.array([[scale, 0, dx], [0, scale, dy]], np.float32)
        out.append(cv2.warpAffine(photo, m, size, flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE))
        matrices.append(m)
    return out, matrices


def test_photobooth_finds_the_face_in_every_frame_with_the_imported_detector(checkpoint, tmp_path):
    photo = photographs()["grace_hopper"]
    frames, matrices = moving_video(photo)
    video = write_video(tmp_path / "hopper_moving.mp4", frames, fps=24)
    decoded, fps = read_input(video)  # decoded as Photobooth decodes a user's clip
    assert len(decoded) == 48 and fps == pytest.approx(24)
    boxes = detector_boxes(str(checkpoint))(decoded)
    # The face's box on the photograph itself, carried into each frame by the frame's affine.
    task = FaceMeshTask.load_from_checkpoint(checkpoint, map_location="cpu")
    ((still, _, _),) = task.detect_faces(photo)
    centre = still[0].reshape(2, 2).mean(0).numpy()
    for t, (found, m) in enumerate(zip(boxes, matrices)):
        assert len(found) == 1, f"frame {t}: {len(found)} faces"
        expected = m[:, :2] @ centre + m[:, 2]
        side = m[0, 0] * float(still[0, 2] - still[0, 0])
        assert np.linalg.norm(found[0].reshape(2, 2).mean(0) - expected) < 0.1 * side, f"frame {t}"
        assert (found[0, 2] - found[0, 0]) == pytest.approx(side, rel=0.15), f"frame {t}"


@pytest.mark.slow
def test_a_whole_photobooth_run_on_a_real_video_with_the_imported_detector_takes_its_shots(
    checkpoint, cfg_train, tmp_path
):
    """python -m tasks.photobooth.run on the camera move over the Grace Hopper photograph, faces from the
    imported detector (ONNX Runtime, the default): one face in every frame, and shots taken (a photobooth
    model trained one short epoch here, its shutter threshold at 0, so the run's shots come from the faces)."""
    from tasks.photobooth import run as photobooth
    from tests.tasks.test_photobooth import COMMON
    from tests.tasks.test_photobooth import TINY as PHOTOBOOTH_TINY

    overrides = [*PHOTOBOOTH_TINY["photobooth_clips"], *COMMON, "trainer.max_epochs=1", "trainer.limit_train_batches=2"]
    overrides += ["task.shutter.threshold=0.0", "task.scoring.expression_min=0.0"]
    train(cfg_train(overrides, run_dir=tmp_path / "booth"))
    frames, _ = moving_video(photographs()["grace_hopper"])
    video = write_video(tmp_path / "hopper_moving.mp4", frames, fps=24)
    out = tmp_path / "hopper_photobooth"
    booth = str(tmp_path / "booth" / "checkpoints" / "last.ckpt")
    summary = photobooth.main([str(video), "--checkpoint", booth, "--detector", str(checkpoint), "--output", str(out)])
    timeline = json.loads((out / "timeline.json").read_text())
    assert timeline["num_faces"] == [1] * 48  # the face found in every frame of the video
    assert summary["shots"] and all(shot["num_faces"] == 1 for shot in summary["shots"])
    assert sorted(p.name for p in (out / "shots").iterdir()) == sorted(
        s["file"].split("/")[1] for s in summary["shots"]
    )
    assert (out / "contact_sheet.png").exists()


def test_train_py_refuses_data_in_another_mesh_topology(checkpoint, cfg_train):
    """The imported checkpoint brings MediaPipe's canonical mesh with its weights; on data generated in the
    grid topology training stops with a one-line reason instead of teaching the network other indices."""
    overrides = ["task=facemesh", "data=facemesh", *TINY, "trainer=debug", "task.variant=mediapipe"]
    overrides += ["task.detector_variant=mediapipe", "data.crop_size=192", f"task.pretrained_path={checkpoint}"]
    overrides += ["data.generator.topology=null", "task.topology=null", "data.root=${paths.data_dir}/facemesh_grid"]
    with pytest.raises(ValueError, match="the data's face mesh is the grid topology but the task's is mediapipe"):
        train(cfg_train(overrides))


def test_experiment_fine_tunes_the_imported_models_on_faces_in_mediapipes_mesh(checkpoint, cfg_train, tmp_path):
    """experiment=facemesh_mediapipe: the generator draws faces whose labelled points are MediaPipe's 468
    vertices (their (u, v) from the import), and the imported networks fine-tune on them (fast_dev_run)."""
    topology_json = checkpoint.parent / "face_topology.json"
    import_mediapipe([mediapipe_wheel()], checkpoint.parent / "again.ckpt", topology_json)
    overrides = ["experiment=facemesh_mediapipe", *TINY, "trainer=debug", f"task.pretrained_path={checkpoint}"]
    overrides += [f"data.generator.topology={topology_json}", f"data.root={tmp_path}/facemesh_mp"]
    metrics = train(cfg_train(overrides))
    written = json.loads((tmp_path / "facemesh_mp" / "topology.json").read_text())
    assert written["kind"] == "mediapipe" and written["eye_corners"] == [33, 263] and len(written["uv"]) == 468
    # The imported mesh already finds the generated faces' points: far below a constant face (0.18)
    assert metrics["test/nme"] < 0.12
