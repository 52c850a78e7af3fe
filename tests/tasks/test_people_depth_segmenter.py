"""The person segmenter imported from MediaPipe's published selfie_segmentation.tflite: equal to the
LiteRT interpreter on the same tensors (random and real photographs), bad files refused naming the
file, and predict.py task=people_depth using it when a user gives only a video."""

from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from core.data import DataFormatError
from tasks.people_depth.import_segmenter import MEMBER, import_segmenter, main
from tasks.people_depth.segmenter import SelfieSegmenter, load_segmenter, segment_people
from tests.conftest import compose_config
from tests.helpers import mediapipe_wheel

pytestmark = pytest.mark.usefixtures("one_thread")
DETECTOR_MEMBER = "mediapipe/modules/face_detection/face_detection_short_range.tflite"


@pytest.fixture(scope="module")
def wheel() -> Path:
    return mediapipe_wheel()


@pytest.fixture(scope="module")
def segmenter_file(wheel, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("segmenter") / "selfie_segmenter.pt"
    main([str(wheel), "--out", str(out)])
    return out


@pytest.fixture(scope="module")
def tflite_file(wheel, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tflite") / "selfie_segmentation.tflite"
    with zipfile.ZipFile(wheel) as z:
        path.write_bytes(z.read(MEMBER))
    return path


def photographs() -> dict[str, np.ndarray]:
    """Real photographs that installed packages ship (scikit-image's astronaut, coffee and cat,
    matplotlib's Grace Hopper), stretched to 256x256 as MediaPipe's graph does."""
    import matplotlib.cbook
    from PIL import Image
    from skimage import data

    photos = {name: getattr(data, name)() for name in ("astronaut", "coffee", "chelsea")}
    photos["grace_hopper"] = np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB"))
    return {name: cv2.resize(p, (256, 256), interpolation=cv2.INTER_LINEAR) for name, p in photos.items()}


def litert(tflite_file: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probability, logit) maps of the LiteRT interpreter for NHWC input ``x``."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite_file), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    logit_index = next(d["index"] for d in interpreter.get_tensor_details() if d["name"] == "segment")
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    probability = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    return probability[..., 0], interpreter.get_tensor(logit_index)[..., 0]


def test_segmenter_equals_litert_on_random_tensors_and_photographs(segmenter_file, tflite_file):
    model = load_segmenter(segmenter_file)
    rng = np.random.default_rng(0)
    inputs = {
        "uniform": rng.random((1, 256, 256, 3), dtype=np.float32),
        "normal": rng.normal(0.5, 0.3, (1, 256, 256, 3)).astype(np.float32),
        **{name: (photo[None] / 255.0).astype(np.float32) for name, photo in photographs().items()},
    }
    for name, x in inputs.items():
        want_probability, want_logit = litert(tflite_file, x)
        with torch.no_grad():
            logit = model.logits(torch.from_numpy(x).permute(0, 3, 1, 2))[:, 0].numpy()
        np.testing.assert_allclose(torch.sigmoid(torch.from_numpy(logit)).numpy(), want_probability, atol=1e-4)
        # The logits reach +-1000 (the features before the last layer ~100): float32 sums taken in
        # another order differ by ~2e-6 of that range (1.6e-3 at most); 1e-3 of a logit of 100 is allowed.
        assert np.abs(logit - want_logit).max() <= 1e-5 * np.abs(want_logit).max(), name
    # What a user relies on: the astronaut (a person filling the lower middle) is found, the sky-blue
    # top-left corner behind her is not.
    probability = segment_people([photographs()["astronaut"]], model)[0]
    assert probability[160:256, 80:200].mean() > 0.95
    assert probability[:30, :30].max() < 0.05


def test_import_from_wheel_folder_and_file_gives_the_same_weights(wheel, tflite_file, segmenter_file, tmp_path):
    folder = tmp_path / "unpacked" / "mediapipe" / "modules" / "selfie_segmentation"
    folder.mkdir(parents=True)
    (folder / "selfie_segmentation.tflite").write_bytes(tflite_file.read_bytes())
    want = torch.load(segmenter_file, weights_only=True)
    for source in (tmp_path / "unpacked", tflite_file):
        got = torch.load(import_segmenter(source, tmp_path / "w.pt"), weights_only=True)
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert len(want) == len(SelfieSegmenter().state_dict())


def test_bad_files_fail_in_one_line_naming_the_file(wheel, tflite_file, tmp_path):
    detector = tmp_path / "face_detection_short_range.tflite"
    with zipfile.ZipFile(wheel) as z:
        detector.write_bytes(z.read(DETECTOR_MEMBER))
    with pytest.raises(DataFormatError, match=rf"{detector}: not MediaPipe's selfie segmenter: .*selfie_segmentation"):
        import_segmenter(detector, tmp_path / "w.pt")
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(tflite_file.read_bytes()[:100_000])
    with pytest.raises(DataFormatError, match=rf"{truncated}: truncated or corrupt TFLite model"):
        import_segmenter(truncated, tmp_path / "w.pt")
    other_wheel = tmp_path / "other-1.0-py3-none-any.whl"
    with zipfile.ZipFile(other_wheel, "w") as z:
        z.writestr("other/__init__.py", "")
    with pytest.raises(DataFormatError, match=rf"{other_wheel}: no {MEMBER} in this wheel"):
        import_segmenter(other_wheel, tmp_path / "w.pt")
    cut_wheel = tmp_path / "cut.whl"
    cut_wheel.write_bytes(wheel.read_bytes()[:1_000_000])
    with pytest.raises(SystemExit, match=rf"^error: {cut_wheel}: not a readable wheel"):
        main([str(cut_wheel), "--out", str(tmp_path / "w.pt")])
    with pytest.raises(SystemExit, match=rf"^error: {tmp_path / 'empty'}: no selfie_segmentation.tflite below"):
        (tmp_path / "empty").mkdir()
        main([str(tmp_path / "empty"), "--out", str(tmp_path / "w.pt")])
    assert not (tmp_path / "w.pt").exists()
    wrong_weights = tmp_path / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(3)}, wrong_weights)
    with pytest.raises(ValueError, match=rf"{wrong_weights}: not a selfie-segmenter weights file"):
        load_segmenter(wrong_weights)


# --- predict.py task=people_depth ------------------------------------------------------------------


@pytest.fixture(scope="module")
def idcm_ckpt(tmp_path_factory) -> Path:
    """An (untrained) IDCM checkpoint at 48x64: what the segmenter feeds does not depend on training."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from core.guards import StampTaskClass

    path = tmp_path_factory.mktemp("ckpt") / "idcm.ckpt"
    data_dir = path.parent / "data"
    overrides = ["task=people_depth", "data=mannequin_challenge", "data.image_size=[48,64]", "task.network=unet"]
    cfg = compose_config("train", [*overrides, "task.unet_widths=[8,16,32]"], path.parent / "run", data_dir)
    task = instantiate(cfg.task, _convert_="all")
    trainer = pl.Trainer(logger=False, callbacks=[StampTaskClass()], enable_progress_bar=False)
    trainer.strategy.connect(task)
    trainer.save_checkpoint(path)
    return path


def astronaut_video(path: Path, frames: int = 4) -> Path:
    """A real photograph of a person, moved and scaled frame by frame (160x120 video)."""
    from skimage import data

    from core.video import write_video

    photo = data.astronaut()
    out = []
    for k in range(frames):
        scale = 0.3 + 0.02 * k
        M = np.float32([[scale, 0, -20 + 6 * k], [0, scale, -10 + 3 * k]])
        out.append(cv2.warpAffine(photo, M, (160, 120), borderMode=cv2.BORDER_REFLECT))
    write_video(path, out, fps=10)
    return path


def test_predict_masks_people_with_the_segmenter_and_user_masks_win(idcm_ckpt, segmenter_file, tmp_path):
    from core.prediction import predict
    from core.video import open_video
    from tasks.people_depth.module import PeopleDepthTask

    data_dir, ckpt = tmp_path / "data", idcm_ckpt
    video = astronaut_video(tmp_path / "user" / "walk.mp4")
    args = ["task=people_depth", f"ckpt_path={ckpt}", f"input={video}", f"product.writer.segmenter={segmenter_file}"]
    summary = predict(compose_config("predict", args, tmp_path / "pred", data_dir))
    assert summary["videos"][str(video)] == {"folder": "walk", "frames": 4, "masks": "segmenter"}

    frames = list(open_video(video).get_batch(list(range(4))).asnumpy())
    want = segment_people(frames, load_segmenter(segmenter_file))
    task = PeopleDepthTask.load_from_checkpoint(ckpt, map_location="cpu")
    for k, (frame, probability) in enumerate(zip(frames, want)):
        mask = cv2.imread(str(tmp_path / "pred" / "walk" / "masks" / f"{k:06d}.png"), cv2.IMREAD_GRAYSCALE)
        np.testing.assert_array_equal(mask, (probability > 0.5) * 255)
        assert 0.2 < (mask > 0).mean() < 0.9  # the astronaut is found, not the whole frame
        # The network's human-mask channel is this mask (no poses: no parallax input).
        image = cv2.resize(frame, (64, 48), interpolation=cv2.INTER_AREA)
        human = cv2.resize(mask, (64, 48), interpolation=cv2.INTER_NEAREST) > 0
        batch = {
            "image": torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255,
            "human_mask": torch.from_numpy(human.astype(np.float32))[None, None],
            "input_log_depth": torch.zeros(1, 1, 48, 64),
            "confidence": torch.zeros(1, 1, 48, 64),
        }
        depth = np.load(tmp_path / "pred" / "walk" / "depth" / f"{k:06d}.npy")
        np.testing.assert_allclose(depth, task.predict_depth(batch)[0, 0].numpy(), rtol=1e-5, atol=1e-6)

    # A user's own masks win: all-background masks are used as given, and no masks are written.
    (tmp_path / "user" / "masks").mkdir()
    for k in range(4):
        cv2.imwrite(str(tmp_path / "user" / "masks" / f"{k}.png"), np.zeros((120, 160), np.uint8))
    args = [*args, f"product.writer.masks={tmp_path / 'user' / 'masks'}"]
    summary = predict(compose_config("predict", args, tmp_path / "pred_user", data_dir))
    assert summary["videos"][str(video)]["masks"] == "user"
    assert not (tmp_path / "pred_user" / "walk" / "masks").exists()


def test_predict_without_masks_or_segmenter_says_how_to_get_one(idcm_ckpt, tmp_path):
    from core.prediction import predict

    data_dir, ckpt = tmp_path / "data", idcm_ckpt
    video = astronaut_video(tmp_path / "walk.mp4", frames=2)
    args = ["task=people_depth", f"ckpt_path={ckpt}", f"input={video}"]
    missing = data_dir / "mediapipe" / "selfie_segmenter.pt"  # the default, not imported here
    with pytest.raises(ValueError, match=rf"takes a human mask per frame.*segmenter={missing}.*import_segmenter"):
        predict(compose_config("predict", args, tmp_path / "pred", data_dir))


def test_render_tool_on_a_user_video_uses_the_segmenter_masks(idcm_ckpt, segmenter_file, tmp_path):
    """render_video --video is predict.py's writer on one video: its side-by-side video at --out, and beside
    it the same masks and depth arrays as predict.py writes; a missing video is predict.py's error."""
    from core.prediction import predict
    from core.video import open_video
    from tasks.people_depth.render_video import main as render_main

    video = astronaut_video(tmp_path / "walk.mp4", frames=3)
    out = tmp_path / "bokeh.mp4"
    render_main(
        ["--checkpoint", str(idcm_ckpt), "--video", str(video), "--segmenter", str(segmenter_file)]
        + ["--out", str(out)]
    )
    reader = open_video(out)
    assert len(reader) == 3 and reader[0].shape[:2] == (48, 3 * 64)
    args = [
        "task=people_depth",
        f"ckpt_path={idcm_ckpt}",
        f"input={video}",
        f"product.writer.segmenter={segmenter_file}",
    ]
    predict(compose_config("predict", args, tmp_path / "pred", tmp_path / "data"))

    def files(folder: Path) -> list[Path]:
        return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())

    written = files(tmp_path / "bokeh")
    assert written == files(tmp_path / "pred" / "walk")
    assert len([p for p in written if p.parts[0] == "masks"]) == 3
    for name in written:
        if name.suffix in (".npy", ".png"):
            assert (tmp_path / "bokeh" / name).read_bytes() == (tmp_path / "pred" / "walk" / name).read_bytes(), name
    with pytest.raises(FileNotFoundError, match=rf"^input={tmp_path / 'gone.mp4'}: no such file or folder$"):
        render_main(["--checkpoint", str(idcm_ckpt), "--video", str(tmp_path / "gone.mp4"), "--out", str(out)])
    missing = tmp_path / "none.pt"
    with pytest.raises(ValueError, match=rf"takes a human mask per frame.*segmenter={missing}"):
        render_main(
            ["--checkpoint", str(idcm_ckpt), "--video", str(video), "--segmenter", str(missing), "--out", str(out)]
        )
