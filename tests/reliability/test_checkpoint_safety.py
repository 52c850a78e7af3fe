"""Nothing a checkpoint file or URL supplies may run code, and a checkpoint save that fails says why
(issue 28). Every entry point that reads a checkpoint goes through core.checkpoint's one reader:
a crafted pickle (it writes a marker file when unpickled) is refused with
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 set, a URL is refused, a checkpoint of another task is refused
by its class stamp; a full disk during a save names the file instead of torch's "enforce fail"."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.checkpoint import AtomicCheckpointIO, CheckpointError
from core.io import TMP_MARK
from core.resolvers import PROJECT_ROOT
from core.training import train
from tests.conftest import compose_config
from tests.reliability.test_runs_and_checkpoints import SMALL as RUN_OVERRIDES

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = [*RUN_OVERRIDES, "trainer.max_epochs=1", "logger=csv"]  # a two-batch shapes run
URL = "http://127.0.0.1:9/model.ckpt"
CLASSIFIER = "tasks.classification.module.ImageClassificationTask"


class Payload:
    """Unpickled, it runs ``exec``: the marker file appears only if the reader let it run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    """A zip-format checkpoint (as torch.save writes) with a code-running object in it."""
    torch.save({"state_dict": {}, "hyper_parameters": {}, "epoch": Payload(marker)}, path)
    return path


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    """A real classification checkpoint (stamped with its task class by core.guards)."""
    run = tmp_path_factory.mktemp("train") / "run"
    train(compose_config("train", SMALL, run, tmp_path_factory.mktemp("data")))
    return run / "checkpoints" / "last.ckpt"


# --- every entry point family, called as its user calls it ------------------------------------------


def frames_folder(tmp: Path) -> Path:
    folder = tmp / "frames"
    folder.mkdir(exist_ok=True)
    for k in range(2):
        Image.fromarray(np.full((64, 96, 3), 40 * k, np.uint8)).save(folder / f"{k:03d}.png")
    return folder


def image_file(tmp: Path) -> Path:
    path = tmp / "face.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(path)
    return path


def eval_py(ckpt: str, tmp: Path) -> None:
    from core.training import load_task

    load_task(compose_config("eval", [f"ckpt_path='{ckpt}'"], tmp / "eval"))


def eval_py_talnet(ckpt: str, tmp: Path) -> None:
    from core.training import load_task

    load_task(compose_config("eval", ["task=talnet", "data=thumos14", f"ckpt_path='{ckpt}'"], tmp / "eval"))


def predict_py(ckpt: str, tmp: Path) -> None:
    from core.prediction import predict

    predict(compose_config("predict", ["task=classification", f"ckpt_path='{ckpt}'", f"input={tmp}"], tmp / "pred"))


def trainer_resume(ckpt: str, tmp: Path) -> None:
    AtomicCheckpointIO().load_checkpoint(ckpt)  # what trainer.fit/test(ckpt_path=...) calls


def facemesh_run(ckpt: str, tmp: Path) -> None:
    from tasks.facemesh.run import main

    main([str(image_file(tmp)), "--checkpoint", ckpt, "--out", str(tmp / "mesh")])


def photobooth_detector(ckpt: str, tmp: Path) -> None:
    from tasks.photobooth.run import main

    main([str(frames_folder(tmp)), "--checkpoint", str(tmp / "unused.ckpt"), "--detector", ckpt])


def photobooth_checkpoint(ckpt: str, tmp: Path) -> None:
    from tasks.photobooth.run import main

    boxes = tmp / "boxes.json"
    boxes.write_text(json.dumps({"frames": [{"faces": []}, {"faces": []}]}))
    main([str(frames_folder(tmp)), "--checkpoint", ckpt, "--boxes", str(boxes)])


def talnet_highlight(ckpt: str, tmp: Path) -> None:
    from tasks.talnet.highlight import main

    main([str(tmp / "clip.mp4"), "--checkpoint", ckpt, "--out", str(tmp / "highlight.mp4")])


def talnet_fusion_stream(ckpt: str, tmp: Path) -> None:
    from tasks.talnet.module import load_stream

    load_stream(ckpt, "rgb", 20)


def fgvc_transfer(ckpt: str, tmp: Path) -> None:
    from tasks.fgvc.transfer import load_network

    load_network(ckpt)


def depth_render_video(ckpt: str, tmp: Path) -> None:
    from tasks.people_depth.render_video import main

    main(["--checkpoint", ckpt, "--video", str(tmp / "walk.mp4"), "--out", str(tmp / "out.mp4")])


def atlas_py(ckpt: str, tmp: Path) -> None:
    from tasks.atlas.network import load_classifier

    load_classifier(ckpt_path=ckpt)


ENTRY_POINTS: dict[str, Callable[[str, Path], None]] = {
    "eval.py": eval_py,
    "predict.py": predict_py,
    "trainer resume": trainer_resume,
    "tasks.facemesh.run": facemesh_run,
    "tasks.photobooth.run --detector": photobooth_detector,
    "tasks.photobooth.run --checkpoint": photobooth_checkpoint,
    "tasks.talnet.highlight": talnet_highlight,
    "TALNet fusion stream": talnet_fusion_stream,
    "tasks.fgvc.transfer": fgvc_transfer,
    "tasks.people_depth.render_video": depth_render_video,
    "atlas.py": atlas_py,
}


def test_the_crafted_payload_runs_code_when_unpickled_freely(tmp_path, monkeypatch):
    """The control: the same file does run its code through an unrestricted load."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "marker"
    with pytest.warns(UserWarning, match="TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"):
        torch.load(crafted_checkpoint(tmp_path / "evil.ckpt", marker))
    assert marker.read_text() == "ran"


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_a_crafted_checkpoint_runs_nothing_even_when_torch_is_told_to_unpickle_freely(entry, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "marker"
    evil = crafted_checkpoint(tmp_path / "evil.ckpt", marker)
    with pytest.raises(CheckpointError) as err:
        ENTRY_POINTS[entry](str(evil), tmp_path)
    assert not marker.exists()
    message = str(err.value)
    assert message.startswith(f"{evil}: cannot be read as a checkpoint (UnpicklingError: Weights only load failed")
    assert "\n" not in message


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_a_checkpoint_url_is_refused_in_one_line(entry, tmp_path):
    with pytest.raises(CheckpointError, match=r"^http:/+127.0.0.1:9/model.ckpt: checkpoint URLs are not read") as err:
        ENTRY_POINTS[entry](URL, tmp_path)
    assert "\n" not in str(err.value)


def stamp_refused(expected: str) -> str:
    return f"checkpoint of {CLASSIFIER}, but the task is {expected}; choose the task it was trained with"


FIXED_TASK = {
    "eval.py task=talnet": (eval_py_talnet, stamp_refused("tasks.talnet.module.TALNetTask")),
    "tasks.facemesh.run": (facemesh_run, stamp_refused("tasks.facemesh.module.FaceMeshTask")),
    # --detector takes any stamped task that detects faces (trained or MediaPipe's imported one)
    "tasks.photobooth.run --detector": (photobooth_detector, "ImageClassificationTask has no face detector"),
    "tasks.photobooth.run --checkpoint": (
        photobooth_checkpoint,
        stamp_refused("tasks.photobooth.module.PhotoboothTask"),
    ),
    "tasks.talnet.highlight": (talnet_highlight, stamp_refused("tasks.talnet.module.TALNetTask")),
    "TALNet fusion stream": (talnet_fusion_stream, stamp_refused("tasks.talnet.module.TALNetTask")),
    "tasks.people_depth.render_video": (depth_render_video, stamp_refused("tasks.people_depth.module.PeopleDepthTask")),
}


@pytest.mark.parametrize("entry", list(FIXED_TASK))
def test_a_checkpoint_of_another_task_is_refused(entry, classifier, tmp_path):
    run_entry, expected = FIXED_TASK[entry]
    with pytest.raises(CheckpointError) as err:
        run_entry(str(classifier), tmp_path)
    assert str(err.value).startswith(f"{classifier}: {expected}")
    assert not (tmp_path / "mesh").exists()  # facemesh.run stops before making its output folder


# --- a checkpoint save that fails -------------------------------------------------------------------


def can_mount_tmpfs(folder: Path) -> bool:
    if os.geteuid() != 0:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True)
    return done.returncode == 0


def test_a_full_disk_during_training_names_the_checkpoint(tmp_path):
    """A real full file system (a 256 KiB tmpfs holding the run folder): the run stops with
    'no space left on device' naming the checkpoint, and leaves no temporary behind."""
    run = tmp_path / "disk"
    if not can_mount_tmpfs(run):
        pytest.skip("needs root to mount a small tmpfs (the RLIMIT_FSIZE test covers the same path)")
    try:
        cfg = compose_config("train", SMALL, run / "run", tmp_path / "data")
        with pytest.raises(OSError) as err:
            train(cfg)
        message = str(err.value)
        assert f"{run / 'run' / 'checkpoints'}/" in message
        assert ".ckpt: cannot save the checkpoint: no space left on device (" in message
        assert "enforce fail" not in message and "\n" not in message
        assert not [p for p in (run / "run" / "checkpoints").iterdir() if TMP_MARK in p.name]
    finally:
        subprocess.run(["umount", str(run)], check=True)


SAVE_UNDER_A_FILE_SIZE_LIMIT = """
import resource, signal, sys, torch
from core.checkpoint import AtomicCheckpointIO
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
io, path = AtomicCheckpointIO(), sys.argv[1]
io.save_checkpoint({"state_dict": {"w": torch.zeros(16)}}, path)
try:
    io.save_checkpoint({"state_dict": {"w": torch.zeros(1 << 20)}}, path)
except OSError as err:
    print(err)
"""


def test_a_save_over_the_file_size_limit_names_the_checkpoint_and_keeps_the_previous(tmp_path):
    """A real failing write (RLIMIT_FSIZE in a subprocess): one line naming the file, the previous
    checkpoint intact, no temporary left."""
    path = tmp_path / "checkpoints" / "last.ckpt"
    done = subprocess.run(
        [sys.executable, "-c", SAVE_UNDER_A_FILE_SIZE_LIMIT, str(path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"{path}: cannot save the checkpoint: file too large (over the process's file-size limit, "
        "ulimit -f); the previous last.ckpt is kept"
    )
    assert torch.load(path, weights_only=True)["state_dict"]["w"].shape == (16,)
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


@pytest.mark.parametrize(
    "stamp, problem",
    [
        ("antigravity.Browser", "names 'antigravity.Browser' as its task, which is not a task of this project"),
        ("tasks.photobooth.shutter.ScoringConfig", "which is not a LightningModule"),
    ],
)
def test_a_stamp_naming_something_else_is_refused_before_it_is_imported(stamp, problem, classifier, tmp_path):
    """The task_class stamp is data from the file: --detector imports only a LightningModule of tasks.*
    (importing any module a file names could run that module's code)."""
    checkpoint = torch.load(classifier, map_location="cpu", weights_only=True)
    checkpoint["task_class"] = stamp
    crafted = tmp_path / "stamped.ckpt"
    torch.save(checkpoint, crafted)
    with pytest.raises(CheckpointError, match=re.escape(problem)):
        photobooth_detector(str(crafted), tmp_path)
    assert "antigravity" not in sys.modules
