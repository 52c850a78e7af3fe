"""Runs and checkpoints a user must not lose or misuse (issue 14): a resumed run keeps its CSV
history; two runs of one SLURM allocation do not resume each other; eval.py needs a checkpoint;
broken or foreign checkpoints and wrong-typed config values fail in one line naming file or key."""

from __future__ import annotations

import csv
import socket
import subprocess
from pathlib import Path

import pytest
import torch

from core.checkpoint import CheckpointError
from core.config_check import ConfigValueError
from core.io import TMP_MARK
from core.training import RunMismatchError, evaluate, train
from tests.conftest import compose_config

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = [
    "data=shapes",
    "data.generator.train_per_class=6",
    "data.generator.val_per_class=2",
    "data.generator.test_per_class=2",
    "data.image_size=32",
    "data.num_workers=0",
    "data.batch_size=16",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.num_sanity_val_steps=0",
    "test=false",
]
CLASSIFIER = "tasks.classification.module.ImageClassificationTask"


def slurm_run_config(overrides: list[str], logs: Path, data: Path):
    """The config train.py composes inside a SLURM job: its run directory comes from run_id."""
    assert logs.name == "logs"  # compose_config puts paths.log_dir beside the folder it is given
    probe = compose_config("train", overrides, logs.parent / "probe", data)
    run_dir = Path(probe.hydra.run.dir)
    assert run_dir.is_relative_to(logs)
    return compose_config("train", overrides, run_dir, data), run_dir


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if v} for row in csv.DictReader(f)]


def test_two_runs_of_one_slurm_job_and_a_resumed_csv_history(tmp_path, shared_data_dir, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    for name in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_STEP_ID", "VISIONLAB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    logs = tmp_path / "logs"
    cfg, run = slurm_run_config([*SMALL, "trainer.max_epochs=1", "logger=csv"], logs, shared_data_dir)
    assert run.name == "slurm4242"
    train(cfg)
    metrics_csv = run / "csv" / "metrics.csv"
    first_attempt = csv_rows(metrics_csv)
    assert {row["epoch"] for row in first_attempt if "epoch" in row} == {"0"}
    # a row the killed part of the next epoch had logged after the last checkpoint (step 2 is
    # logged again when the epoch reruns): it must not appear twice
    last_step = max(int(row["step"]) for row in first_attempt)
    header = metrics_csv.read_text().splitlines()[0].split(",")
    killed_row = {"step": str(last_step + 1), "lr-AdamW/pg1": "0.999"}
    with open(metrics_csv, "a", newline="") as f:
        csv.DictWriter(f, fieldnames=header).writerow(killed_row)

    # the job is requeued: the same run resumes from last.ckpt; a killed save's temporary is cleaned
    stale = (
        run
        / "checkpoints"
        / f".last.ckpt{TMP_MARK}{socket.gethostname().split('.')[0].replace('-', '_')}-{dead_pid()}-0badc0de.ckpt"
    )
    stale.write_bytes(b"half a checkpoint")
    cfg, _ = slurm_run_config([*SMALL, "trainer.max_epochs=2", "logger=csv"], logs, shared_data_dir)
    train(cfg)
    assert not stale.exists()
    resumed = csv_rows(metrics_csv)
    assert {row["epoch"] for row in resumed if "epoch" in row} == {"0", "1"}
    assert all(row in resumed for row in first_attempt)  # the first attempt's history is kept
    assert killed_row not in resumed
    assert [row["step"] for row in resumed] == sorted((row["step"] for row in resumed), key=int)
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["loops"]["fit_loop"]["epoch_progress"]["total"]["processed"] == 2
    before = (run / "checkpoints" / "last.ckpt").stat().st_mtime_ns

    # another run started in the same allocation (another srun step, another learning rate)
    other, _ = slurm_run_config(
        [*SMALL, "trainer.max_epochs=3", "logger=csv", "task.optimizer.lr=0.001"], logs, shared_data_dir
    )
    with pytest.raises(RunMismatchError) as err:
        train(other)
    assert str(err.value) == (
        f"{run} holds another run (both runs have SLURM_JOB_ID=4242) whose config differs: "
        "task.optimizer.lr: 0.01 there, 0.001 here. Refusing to resume or overwrite it: give this run "
        "its own folder (run_id=<new id>)."
    )
    assert (run / "checkpoints" / "last.ckpt").stat().st_mtime_ns == before


@pytest.fixture(scope="module")
def classifier_checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("classifier")
    import torch as _torch

    threads = _torch.get_num_threads()
    _torch.set_num_threads(1)
    try:
        train(compose_config("train", [*SMALL, "trainer.max_epochs=1", "logger=none"], root / "run", root / "data"))
    finally:
        _torch.set_num_threads(threads)
    return root / "run" / "checkpoints" / "last.ckpt"


def test_eval_without_ckpt_path_is_an_error(cfg_eval):
    with pytest.raises(ValueError) as err:
        evaluate(cfg_eval(["data=shapes"]))
    assert str(err.value) == (
        "eval.py needs the checkpoint to score: pass ckpt_path=<file>.ckpt. A task that builds itself "
        "from other checkpoints (task=talnet_fusion with task.stream_checkpoints.*) takes ckpt_path=null "
        "explicitly."
    )


def test_empty_and_truncated_checkpoints_are_named(classifier_checkpoint, cfg_eval, cfg_train, tmp_path):
    empty = tmp_path / "empty.ckpt"
    empty.touch()
    with pytest.raises(CheckpointError) as err:
        evaluate(cfg_eval([*SMALL[:6], f"ckpt_path={empty}"]))
    assert str(err.value) == (
        f"{empty}: checkpoint is empty (0 bytes): the save that wrote it was interrupted; resume from "
        "another checkpoint of the run (ckpt_path=<file>) or start a new run"
    )
    truncated = tmp_path / "truncated.ckpt"
    data = classifier_checkpoint.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        evaluate(cfg_eval([*SMALL[:6], f"ckpt_path={truncated}"]))
    assert str(err.value) == (
        f"{truncated}: checkpoint is truncated or not a PyTorch checkpoint ({len(data) // 2} bytes, no zip "
        "directory at its end)"
    )
    # the same when a run would resume from it
    run = tmp_path / "resumed"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").touch()
    with pytest.raises(CheckpointError, match=rf"^{run / 'checkpoints' / 'last.ckpt'}: checkpoint is empty"):
        train(cfg_train([*SMALL, "logger=none"], run_dir=run))


def test_checkpoint_of_another_task_is_named(classifier_checkpoint, cfg_eval, tmp_path):
    overrides = ["task=talnet", "data=thumos14_features"]
    with pytest.raises(CheckpointError) as err:
        evaluate(cfg_eval([*overrides, f"ckpt_path={classifier_checkpoint}"]))
    assert str(err.value) == (
        f"{classifier_checkpoint}: checkpoint of {CLASSIFIER}, but the task is "
        "tasks.talnet.module.TALNetTask; choose the task it was trained with (task=<its config>)"
    )
    # a checkpoint without the stamp (saved before it existed): told apart by its hyper-parameters
    unstamped = tmp_path / "unstamped.ckpt"
    checkpoint = torch.load(classifier_checkpoint, weights_only=True)
    del checkpoint["task_class"]
    torch.save(checkpoint, unstamped)
    with pytest.raises(
        CheckpointError,
        match=(
            rf"^{unstamped}: its hyper-parameters do not fit tasks\.talnet\.module\.TALNetTask \(unknown "
            r"\['backbone', .*\]\): a checkpoint of another task\?"
        ),
    ):
        evaluate(cfg_eval([*overrides, f"ckpt_path={unstamped}"]))


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.batch_size=abc", "config key data.batch_size: expected int, got 'abc' (str)"),
        ("data.image_size=32.5", "config key data.image_size: expected int, got 32.5 (float)"),
        ("trainer.max_epochs=two", "config key trainer.max_epochs: expected int, got 'two' (str)"),
        ("task.label_smoothing=[0.1]", "config key task.label_smoothing: expected float, got [0.1] (list)"),
        ("data.skip_corrupt=maybe", "config key data.skip_corrupt: expected bool, got 'maybe' (str)"),
    ],
)
def test_wrong_typed_config_value_names_the_key(cfg_train, override, message):
    with pytest.raises(ConfigValueError) as err:
        train(cfg_train(["data=shapes", override]))
    assert str(err.value) == message


def test_empty_and_truncated_pretrained_weights_are_named(tmp_path):
    from core.weights import read_state_dict

    empty = tmp_path / "resnet18.pth"
    empty.touch()
    with pytest.raises(ValueError) as err:
        read_state_dict(empty)
    assert str(err.value) == f"{empty}: weights file is empty (0 bytes); an interrupted download or save?"
    truncated = tmp_path / "tinynet.pth"
    torch.save({"conv.weight": torch.zeros(64, 3, 3, 3)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(
        ValueError,
        match=rf"^{truncated}: cannot read weights, truncated or not a weights file "
        r"\(RuntimeError: PytorchStreamReader failed",
    ):
        read_state_dict(truncated)
